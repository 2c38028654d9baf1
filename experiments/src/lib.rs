//! Experiments (later issue).
