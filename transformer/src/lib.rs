//! The Transformer (issue 3).
