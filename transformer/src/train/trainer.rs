//! `Trainer`: one training step of a [`Transformer`] (forward, loss,
//! backward, optional clipping, scheduled Adam update), with everything a
//! step depends on (model, optimiser, schedule, step count, RNG) in one
//! place, so a run is reproducible from its seed and resumable from a
//! checkpoint bit for bit.

use autograd::Tape;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, CheckpointError, TensorKind};
use crate::optim::{Adam, AdamConfig, clip_grad_norm, grad_norm};
use crate::schedule::Schedule;
use crate::{Ctx, EvalStats, Mode, ModelConfig, Registry, Rng, TokenBatch, Transformer};

/// The training hyper-parameters besides the model's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Adam's hyper-parameters.
    pub optimizer: AdamConfig,
    /// The learning rate per step.
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

    /// Checks every field, naming the one to change: the optimiser's and
    /// the schedule's settings, `smoothing` in [0, 1), `clip_norm`
    /// positive and finite. [`Trainer::new`] calls it, so a bad setting
    /// fails before the first step instead of panicking in it.
    ///
    /// ```
    /// use transformer::TrainConfig;
    /// let bad = TrainConfig { smoothing: f64::NAN, ..TrainConfig::paper(32) };
    /// assert!(bad.validate().unwrap_err().contains("smoothing"));
    /// ```
    pub fn validate(&self) -> Result<(), String> {
        // Written so that NaN fails each test.
        if !(self.smoothing >= 0.0 && self.smoothing < 1.0) {
            return Err(format!(
                "train config: smoothing = {} must be in [0, 1) (the paper uses 0.1)",
                self.smoothing
            ));
        }
        if let Some(c) = self.clip_norm
            && !(c.is_finite() && c > 0.0)
        {
            return Err(format!(
                "train config: clip_norm = {c} must be positive and finite (or none)"
            ));
        }
        self.optimizer
            .validate()
            .map_err(|e| format!("train config: optimizer: {e}"))?;
        self.schedule
            .validate()
            .map_err(|e| format!("train config: {e}"))
    }
}

/// What one step reports.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// The label-smoothed training loss of the batch (not an NLL: see
    /// [`EvalStats`]).
    pub loss: f32,
    /// The learning rate this step used.
    pub lr: f64,
    /// Global gradient norm before clipping (computed every step: a run
    /// logs it, and a spike in it is the first sign of trouble).
    pub grad_norm: f32,
    /// Set when this step's loss says the run is diverging.
    pub divergence: Option<Divergence>,
}

/// A training loss that says the run diverged (issue 10): a diverging run
/// is a result to report, not something to notice by eye in a log.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Divergence {
    /// The loss is NaN or infinite.
    NonFinite {
        /// The loss.
        loss: f32,
    },
    /// The loss is more than [`Divergence::FACTOR`] times the median of the
    /// last [`Divergence::WINDOW`] finite losses.
    Exploding {
        /// The loss.
        loss: f32,
        /// The median it is compared with.
        median: f32,
    },
}

impl Divergence {
    /// How many times the recent median a loss may reach.
    pub const FACTOR: f32 = 1e3;
    /// How many recent finite losses the median is taken over.
    pub const WINDOW: usize = 100;
    /// Losses needed before the ratio test starts: one, since a 1000-fold
    /// jump is never noise, and an exploding run (a learning rate of 1e6)
    /// jumps at its second step. The first step of a run, or of a resumed
    /// run, is compared with nothing.
    pub const MIN_HISTORY: usize = 1;

    /// Judges `loss` against the recent finite losses.
    ///
    /// ```
    /// use transformer::train::Divergence;
    /// let calm = vec![2.0f32; 20];
    /// assert_eq!(Divergence::check(2.5, &calm), None);
    /// assert!(matches!(Divergence::check(f32::NAN, &calm), Some(Divergence::NonFinite { .. })));
    /// assert!(matches!(Divergence::check(1e4, &calm), Some(Divergence::Exploding { .. })));
    /// assert_eq!(Divergence::check(1e4, &[]), None); // nothing to compare with
    /// ```
    pub fn check(loss: f32, recent: &[f32]) -> Option<Divergence> {
        if !loss.is_finite() {
            return Some(Divergence::NonFinite { loss });
        }
        if recent.len() < Self::MIN_HISTORY {
            return None;
        }
        let mut sorted = recent.to_vec();
        sorted.sort_by(f32::total_cmp);
        let median = sorted[sorted.len() / 2];
        (loss > Self::FACTOR * median.abs()).then_some(Divergence::Exploding { loss, median })
    }
}

/// Model + optimiser + schedule + step + RNG.
///
/// Works with any blocks: build it [`Trainer::with_registry`] and resume it
/// [`Trainer::resume_with`] the same registry.
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
    /// The model being trained.
    pub model: Transformer<f32>,
    /// Adam and its moments.
    pub opt: Adam,
    /// The training hyper-parameters.
    pub config: TrainConfig,
    /// Optimiser steps taken so far (the schedule's step is `step + 1`).
    pub step: u64,
    /// Dropout generator, carried from step to step.
    pub rng: Rng,
    /// The first step whose loss signalled divergence, and how.
    pub diverged: Option<(u64, Divergence)>,
    /// The last finite losses (at most [`Divergence::WINDOW`]), for the
    /// divergence check. Not checkpointed: after a resume the check
    /// starts afresh (it never affects the training itself).
    recent_losses: std::collections::VecDeque<f32>,
}

impl Trainer {
    /// A fresh model of the built-in blocks (initialised from `seed`) and
    /// optimiser; dropout draws from a generator seeded from `seed` as well.
    pub fn new(
        model_config: ModelConfig,
        train_config: TrainConfig,
        seed: u64,
    ) -> Result<Self, String> {
        Self::with_registry(model_config, train_config, seed, &Registry::builtin())
    }

    /// [`Trainer::new`] with the model's blocks built by `registry` (a
    /// user's blocks included).
    pub fn with_registry(
        model_config: ModelConfig,
        train_config: TrainConfig,
        seed: u64,
        registry: &Registry<f32>,
    ) -> Result<Self, String> {
        train_config.validate()?;
        Ok(Trainer {
            model: Transformer::with_registry(&model_config, registry, seed)?,
            opt: Adam::try_new(train_config.optimizer)?,
            config: train_config,
            step: 0,
            rng: crate::rng(seed ^ 0x9e37_79b9_7f4a_7c15),
            diverged: None,
            recent_losses: Default::default(),
        })
    }

    /// One step on a batch: `src` (B, S), decoder input `tgt_in` (B, T) and
    /// `labels` (B * T, padding = the model's pad id).
    pub fn step(&mut self, src: &TokenBatch, tgt_in: &TokenBatch, labels: &[usize]) -> StepStats {
        let tape = Tape::new();
        let rng = std::mem::replace(&mut self.rng, crate::rng(0));
        let ctx = Ctx::with_rng(&tape, Mode::Train, rng);
        let logits = self.model.forward(&ctx, src, tgt_in); // (B, T, V)
        let loss = self.model.loss(logits, labels, self.config.smoothing);
        let loss_value = loss.value().item();
        let grads = tape.backward(loss).into_params();
        self.rng = ctx.into_rng();
        drop(tape);
        self.apply(grads, loss_value)
    }

    /// The end of every step: clipping, the scheduled update, the
    /// divergence check.
    pub(crate) fn apply(
        &mut self,
        mut grads: autograd::ParamGrads<f32>,
        loss_value: f32,
    ) -> StepStats {
        let grad_norm = match self.config.clip_norm {
            Some(c) => clip_grad_norm(&mut grads, c),
            None => grad_norm(&grads) as f32,
        };
        self.step += 1;
        let lr = self.config.schedule.lr(self.step);
        self.opt.step(&mut self.model, &grads, lr);
        let divergence = Divergence::check(loss_value, self.recent_losses.make_contiguous());
        if let Some(d) = divergence {
            self.diverged.get_or_insert((self.step, d));
        }
        if loss_value.is_finite() {
            if self.recent_losses.len() == Divergence::WINDOW {
                self.recent_losses.pop_front();
            }
            self.recent_losses.push_back(loss_value);
        }
        StepStats {
            loss: loss_value,
            lr,
            grad_norm,
            divergence,
        }
    }

    /// Evaluates a batch in eval mode (no dropout, nothing recorded): the
    /// unsmoothed NLL, perplexity and token accuracy a researcher reads,
    /// and the smoothed loss training minimises. Merge the stats of several
    /// batches with [`EvalStats::merge`].
    ///
    /// ```
    /// use transformer::schedule::Schedule;
    /// use transformer::{ModelConfig, TokenBatch, Trainer, TrainConfig};
    /// let train = TrainConfig { schedule: Schedule::Constant { lr: 1e-3 }, ..TrainConfig::paper(32) };
    /// let mut t = Trainer::new(ModelConfig::tiny(8, 8), train, 0).unwrap();
    /// let src = TokenBatch::padded(&[vec![3, 4, 5]], 0);
    /// let tgt_in = TokenBatch::padded(&[vec![1, 3, 4, 5]], 0);
    /// let labels = [3, 4, 5, 2];
    /// let before = t.evaluate(&src, &tgt_in, &labels);
    /// for _ in 0..30 { t.step(&src, &tgt_in, &labels); }
    /// let after = t.evaluate(&src, &tgt_in, &labels);
    /// assert_eq!(after.tokens, 4);
    /// assert!(after.perplexity() < before.perplexity());
    /// assert_eq!(after.accuracy(), 1.0); // memorised
    /// // Smoothing keeps the training objective above the NLL it tracks.
    /// assert!(after.smoothed_loss() > after.nll());
    /// ```
    pub fn evaluate(&self, src: &TokenBatch, tgt_in: &TokenBatch, labels: &[usize]) -> EvalStats {
        autograd::no_grad(|tape| {
            let ctx = Ctx::eval(tape);
            let logits = self.model.forward(&ctx, src, tgt_in); // (B, T, V)
            let mut stats =
                EvalStats::from_logits(&logits.value(), labels, self.model.config.pad_id);
            let smoothed = self.model.loss(logits, labels, self.config.smoothing);
            stats.smoothed_loss_sum = f64::from(smoothed.value().item()) * stats.tokens as f64;
            stats
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

    /// Rebuilds a trainer of built-in blocks from a checkpoint written by
    /// [`Trainer::save`]: continuing from it gives bit for bit the run
    /// that was saved.
    pub fn resume(path: impl AsRef<std::path::Path>) -> Result<Self, CheckpointError> {
        Self::resume_with(path, &Registry::builtin())
    }

    /// [`Trainer::resume`] for a model with blocks from `registry`: the
    /// checkpoint's config names its blocks, and a name the registry does
    /// not have is an error naming it.
    pub fn resume_with(
        path: impl AsRef<std::path::Path>,
        registry: &Registry<f32>,
    ) -> Result<Self, CheckpointError> {
        let path = path.as_ref();
        let ck: Checkpoint<(ModelConfig, TrainConfig)> = Checkpoint::load(path)?;
        let (model_cfg, train_cfg) = ck.config.clone();
        // Before building anything: the model the stored config describes
        // must fit in the tensors the file actually holds, so a small
        // hostile file cannot make us allocate a huge model (issue 10).
        // `builtin_param_count` is a lower bound (a user's blocks count 0).
        model_cfg
            .validate()
            .map_err(|e| CheckpointError::Mismatch(e).in_file(path))?;
        let stored: u128 = ck
            .tensors
            .iter()
            .filter(|t| t.kind == TensorKind::Param)
            .map(|t| t.data.len() as u128)
            .sum();
        let needed = model_cfg.builtin_param_count();
        if needed > stored {
            return Err(CheckpointError::Corrupt(format!(
                "its config describes a model of at least {needed} parameters, but it stores \
                 only {stored}"
            ))
            .in_file(path));
        }
        let mut t = Trainer::with_registry(model_cfg, train_cfg, 0, registry)
            .map_err(|e| CheckpointError::Mismatch(e).in_file(path))?;
        ck.restore(&mut t.model).map_err(|e| e.in_file(path))?;
        t.opt = ck.optimizer.clone().ok_or_else(|| {
            CheckpointError::Mismatch("checkpoint has no optimiser state".into()).in_file(path)
        })?;
        t.step = ck.step;
        t.rng = ck.rng.clone();
        Ok(t)
    }
}
