//! # transformer
//!
//! The Transformer of "Attention Is All You Need" (Vaswani et al. 2017) on
//! the `autograd` crate, with every ablation knob in its config.

// The README's examples run as doctests of this crate.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

mod attention;
pub mod checkpoint;
mod config;
mod ctx;
pub mod decode;
mod decoder;
mod embedding;
mod encoder;
mod feedforward;
mod gradcheck;
mod linear;
mod model;
mod module;
mod norm;
pub mod optim;
mod positional;
pub mod schedule;
mod sublayer;
pub mod synthetic;
mod trainer;

pub use attention::{MultiHeadAttention, causal_mask, mask_union, padding_mask};
pub use config::{Activation, ModelConfig, NormKind, NormScope, Placement, PositionalKind, Tying};
pub use ctx::{Ctx, Rng, rng};
pub use decode::{Hypothesis, beam, greedy, length_penalty};
pub use decoder::{Decoder, DecoderLayer, DecoderMasks};
pub use embedding::Embedding;
pub use encoder::{Encoder, EncoderLayer};
pub use feedforward::FeedForward;
pub use gradcheck::gradcheck_module;
pub use linear::{Linear, xavier_uniform};
pub use model::{Encoded, TokenBatch, Transformer};
pub use module::{Entry, Module, Visitor, named_params, named_tensors, param_count};
pub use norm::{BatchNorm, LayerNorm, Norm};
pub use positional::{PositionalEncoding, sinusoidal_table};
pub use sublayer::Sublayer;
pub use trainer::{StepStats, TrainConfig, Trainer};

// --- re-exports of optim / schedule / checkpoint (helper-owned block) ---
pub use checkpoint::{Checkpoint, CheckpointError, average_checkpoints};
pub use optim::{Adam, AdamConfig, clip_grad_norm};
pub use schedule::Schedule;
// --- end of helper-owned block ---
