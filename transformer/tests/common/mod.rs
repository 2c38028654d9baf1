//! Helpers shared by the integration tests (`mod common;` in each file).

// Each test file is its own crate and uses part of this module.
#![allow(dead_code)]

use transformer::{BatchNorm, LayerNorm, Mode, NoNorm, NormBlock};

/// The built-in norms, for loops over every wiring.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NormKind {
    Layer,
    Batch,
    None,
}

impl NormKind {
    /// The registry name (`ModelConfig::norm`).
    pub fn name(self) -> String {
        match self {
            NormKind::Layer => "layer",
            NormKind::Batch => "batch",
            NormKind::None => "none",
        }
        .into()
    }

    /// The block itself, width `d`, eps 1e-5, momentum 0.1.
    pub fn build(self, d: usize) -> Box<dyn NormBlock<f64>> {
        match self {
            NormKind::Layer => Box::new(LayerNorm::new(d, 1e-5)),
            NormKind::Batch => Box::new(BatchNorm::new(d, 1e-5, 0.1)),
            NormKind::None => Box::new(NoNorm),
        }
    }
}

/// `Mode::Train` when `train`, else `Mode::Eval`.
pub fn mode(train: bool) -> Mode {
    if train { Mode::Train } else { Mode::Eval }
}
