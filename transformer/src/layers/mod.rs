//! The building blocks, one file each. Each is a struct of named parameter
//! fields plus one visitor ([`Module`](crate::Module)), with a forward that
//! takes a [`Ctx`](crate::Ctx) and `Var`s; none writes a backward.
//!
//! The built-in blocks the [`Registry`](crate::Registry) knows by name are
//! built from these: `relu`/`gelu` ([`FeedForward`]), `layer`
//! ([`LayerNorm`]), `batch` ([`BatchNorm`]), `none` ([`NoNorm`]), `mha`
//! ([`MultiHeadAttention`]) and `sinusoidal`/`learned`/`none`
//! ([`PositionalEncoding`]).

mod attention;
mod embedding;
mod feedforward;
mod linear;
mod norm;
mod positional;

pub use attention::{MultiHeadAttention, causal_mask, mask_union, padding_mask};
pub use embedding::Embedding;
pub use feedforward::{Activation, FeedForward};
pub use linear::{Linear, xavier_uniform};
pub use norm::{BatchNorm, LayerNorm, NoNorm};
pub use positional::{PositionalEncoding, PositionalKind, sinusoidal_table};
