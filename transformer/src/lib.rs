//! # transformer
//!
//! The Transformer of "Attention Is All You Need" (Vaswani et al. 2017) on
//! the `autograd` crate, with every ablation knob in its config, and every
//! block (feed-forward, norm, attention, positions) pluggable by name.
//!
//! Where things live:
//!
//! - [`layers`]: the building blocks, one file each ([`Linear`],
//!   [`Embedding`], [`MultiHeadAttention`], [`LayerNorm`], [`BatchNorm`],
//!   [`FeedForward`], [`PositionalEncoding`]). A layer of your own goes in a
//!   file like these, in your crate.
//! - [`model`]: how blocks become a Transformer: the block traits
//!   ([`FeedForwardBlock`], [`NormBlock`], [`AttentionBlock`],
//!   [`PositionalBlock`]), the [`Registry`] that builds them by name, the
//!   Add & Norm wiring, the encoder and decoder stacks, [`ModelConfig`] and
//!   [`Transformer`] itself.
//! - [`train`]: [`Trainer`], Adam, learning-rate schedules, checkpoints and
//!   evaluation metrics ([`EvalStats`]: NLL, perplexity, accuracy).
//! - [`decode`]: greedy and beam search.
//! - [`Module`], [`Ctx`] and [`gradcheck_module`]: what every layer uses.
//!
//! ```
//! use transformer::{ModelConfig, Registry, Transformer};
//! let config = ModelConfig { feed_forward: "gelu".into(), ..ModelConfig::tiny(12, 12) };
//! let model = Transformer::<f32>::with_registry(&config, &Registry::builtin(), 0).unwrap();
//! assert_eq!(model.config.feed_forward, "gelu");
//! ```

#![deny(missing_docs)]

// The README's examples run as doctests of this crate.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

mod ctx;
pub mod decode;
mod gradcheck;
pub mod layers;
pub mod model;
mod module;
pub mod synthetic;
pub mod train;

pub use ctx::{Ctx, Mode, NamedTensors, Rng, rng};
pub use decode::{DecodeState, Hypothesis, KvCache, beam, greedy, length_penalty};
pub use gradcheck::{gradcheck_module, gradcheck_transformer};
pub use layers::{
    Activation, BatchNorm, Embedding, FeedForward, LayerNorm, Linear, MultiHeadAttention, NoNorm,
    PositionalEncoding, PositionalKind, causal_mask, mask_union, padding_mask, sinusoidal_table,
    xavier_uniform,
};
pub use model::{
    AddNorm, AttentionBlock, Decoder, DecoderLayer, DecoderMasks, Encoded, Encoder, EncoderLayer,
    FeedForwardBlock, ModelConfig, NormBlock, NormScope, Placement, PositionalBlock, Registry,
    Stack, TokenBatch, Transformer, Tying, Wiring,
};
pub use module::{Entry, Module, Visitor, named_params, named_tensors, param_count};
pub use train::{
    Adam, AdamConfig, Checkpoint, CheckpointError, EvalStats, Schedule, StepStats, TrainConfig,
    Trainer, average_checkpoints, checkpoint, clip_grad_norm, optim, schedule,
};
