//! # transformer
//!
//! The Transformer of "Attention Is All You Need" (Vaswani et al. 2017) on
//! the `autograd` crate, with every ablation knob in its config.

pub mod checkpoint;
mod ctx;
mod linear;
mod module;
pub mod optim;
pub mod schedule;

pub use ctx::{Ctx, Rng, rng};
pub use linear::{Linear, xavier_uniform};
pub use module::{Entry, Module, Visitor, named_params, named_tensors, param_count};

// --- re-exports of optim / schedule / checkpoint (helper-owned block) ---
// --- end of helper-owned block ---
