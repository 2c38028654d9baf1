//! `Trainer`: one training step of a [`Transformer`] (forward, loss,
//! backward, optional clipping, scheduled Adam update), with everything a
//! step depends on (model, optimiser, schedule, step count, RNG) in one
//! place, so a run is reproducible from its seed and resumable from a
//! checkpoint bit for bit.

use autograd::Tape;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::optim::{Adam, AdamConfig, clip_grad_norm};
use crate::schedule::Schedule;
use crate::{Ctx, ModelConfig, Rng, TokenBatch, Transformer};

/// The training hyper-parameters besides the model's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub optimizer: AdamConfig,
    pub schedule: Schedule,
    /// Label smoothing of the loss (the paper: 0.1).
    pub smoothing: f64,
    /// Clip the global gradient norm to this (none in the paper).
    pub clip_norm: Option<f32>,
}

impl TrainConfig {
    /// The paper's recipe for a model of width `d_model`: Adam (0.9, 0.98,
    /// 1e-9), warmup 4000 then inverse square root, smoothing 0.1, no clipping.
    pub fn paper(d_model: usize) -> Self {
        TrainConfig {
            optimizer: AdamConfig::paper(),
            schedule: Schedule::paper(d_model),
            smoothing: 0.1,
            clip_norm: None,
        }
    }
}

/// What one step reports.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    pub loss: f32,
    pub lr: f64,
    /// Global gradient norm before clipping (only computed when clipping).
    pub grad_norm: Option<f32>,
}

/// Model + optimiser + schedule + step + RNG.
///
/// ```
/// use transformer::schedule::Schedule;
/// use transformer::{ModelConfig, TokenBatch, Trainer, TrainConfig};
/// let train = TrainConfig { schedule: Schedule::Constant { lr: 1e-3 }, ..TrainConfig::paper(32) };
/// let mut t = Trainer::new(ModelConfig::tiny(8, 8), train, 0).unwrap();
/// let src = TokenBatch::padded(&[vec![3, 4, 5]], 0);
/// let tgt_in = TokenBatch::padded(&[vec![1, 3, 4, 5]], 0);
/// let labels = [3, 4, 5, 2];
/// let first = t.step(&src, &tgt_in, &labels).loss;
/// for _ in 0..20 { t.step(&src, &tgt_in, &labels); }
/// assert!(t.step(&src, &tgt_in, &labels).loss < first);
/// ```
pub struct Trainer {
    pub model: Transformer<f32>,
    pub opt: Adam,
    pub config: TrainConfig,
    /// Optimiser steps taken so far (the schedule's step is `step + 1`).
    pub step: u64,
    /// Dropout generator, carried from step to step.
    pub rng: Rng,
}

impl Trainer {
    /// A fresh model (initialised from `seed`) and optimiser; dropout draws
    /// from a generator seeded from `seed` as well.
    pub fn new(model: ModelConfig, config: TrainConfig, seed: u64) -> Result<Self, String> {
        config.schedule.validate()?;
        Ok(Trainer {
            model: Transformer::new(&model, seed)?,
            opt: Adam::try_new(config.optimizer)?,
            config,
            step: 0,
            rng: crate::rng(seed ^ 0x9e37_79b9_7f4a_7c15),
        })
    }

    /// One step on a batch: `src` (B, S), decoder input `tgt_in` (B, T) and
    /// `labels` (B * T, padding = the model's pad id).
    pub fn step(&mut self, src: &TokenBatch, tgt_in: &TokenBatch, labels: &[usize]) -> StepStats {
        let tape = Tape::new();
        let rng = std::mem::replace(&mut self.rng, crate::rng(0));
        let ctx = Ctx::with_rng(&tape, true, rng);
        let logits = self.model.forward(&ctx, src, tgt_in); // (B, T, V)
        let loss = self.model.loss(logits, labels, self.config.smoothing);
        let loss_value = loss.value().item();
        let mut grads = tape.backward(loss).into_params();
        self.rng = ctx.into_rng();
        drop(tape);
        let grad_norm = self.config.clip_norm.map(|c| clip_grad_norm(&mut grads, c));
        self.step += 1;
        let lr = self.config.schedule.lr(self.step);
        self.opt.step(&mut self.model, &grads, lr);
        StepStats {
            loss: loss_value,
            lr,
            grad_norm,
        }
    }

    /// Mean loss on a batch in eval mode (no dropout, nothing recorded).
    pub fn eval_loss(&self, src: &TokenBatch, tgt_in: &TokenBatch, labels: &[usize]) -> f32 {
        autograd::no_grad(|tape| {
            let ctx = Ctx::new(tape, false, 0);
            let logits = self.model.forward(&ctx, src, tgt_in);
            self.model
                .loss(logits, labels, self.config.smoothing)
                .value()
                .item()
        })
    }

    /// Saves model, optimiser, both configs, step and RNG state, atomically
    /// (see [`crate::checkpoint`]).
    pub fn save(&mut self, path: impl AsRef<std::path::Path>) -> Result<(), CheckpointError> {
        let config = (self.model.config.clone(), self.config.clone());
        Checkpoint::new(
            &mut self.model,
            Some(&self.opt),
            &config,
            self.step,
            &self.rng,
        )
        .save(path)
    }

    /// Rebuilds a trainer from a checkpoint written by [`Trainer::save`]:
    /// continuing from it gives bit for bit the run that was saved.
    pub fn resume(path: impl AsRef<std::path::Path>) -> Result<Self, CheckpointError> {
        let ck: Checkpoint<(ModelConfig, TrainConfig)> = Checkpoint::load(path)?;
        let (model_cfg, train_cfg) = ck.config.clone();
        let mut t = Trainer::new(model_cfg, train_cfg, 0).map_err(CheckpointError::Mismatch)?;
        ck.restore(&mut t.model)?;
        t.opt = ck
            .optimizer
            .clone()
            .ok_or_else(|| CheckpointError::Mismatch("checkpoint has no optimiser state".into()))?;
        t.step = ck.step;
        t.rng = ck.rng.clone();
        Ok(t)
    }
}
