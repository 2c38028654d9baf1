//! How blocks become a Transformer.
//!
//! - the four pluggable slots as traits ([`FeedForwardBlock`],
//!   [`NormBlock`], [`AttentionBlock`], [`PositionalBlock`]) and the Add &
//!   Norm wiring around them ([`AddNorm`], [`Wiring`]);
//! - [`Registry`]: builds each slot's block by the name the config gives;
//! - [`Stack`]: the encoder and decoder stacks and their layers;
//! - [`ModelConfig`] and [`Transformer`].

mod batch;
mod blocks;
mod config;
mod registry;
mod stack;
mod transformer;

pub use batch::TokenBatch;
pub use blocks::{AddNorm, AttentionBlock, FeedForwardBlock, NormBlock, PositionalBlock, Wiring};
pub use config::{ModelConfig, NormScope, Placement, Tying, limits};
pub use registry::{
    AttentionBuilder, FeedForwardBuilder, NormBuilder, PositionalBuilder, Registry,
};
pub use stack::{Decoder, DecoderLayer, DecoderMasks, Encoder, EncoderLayer, Stack};
pub use transformer::{Encoded, Transformer};
