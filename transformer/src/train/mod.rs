//! Training: the [`Trainer`] (one reproducible step, evaluation, save and
//! resume), the optimiser ([`optim`]), learning-rate schedules
//! ([`schedule`]), checkpoints ([`checkpoint`]) and the metrics a researcher
//! reads ([`EvalStats`]).

pub mod accumulate;
pub mod checkpoint;
mod metrics;
pub mod optim;
pub mod schedule;
mod trainer;

pub use checkpoint::{Checkpoint, CheckpointError, average_checkpoints};
pub use metrics::EvalStats;
pub use optim::{Adam, AdamConfig, clip_grad_norm};
pub use schedule::Schedule;
pub use trainer::{Divergence, StepStats, TrainConfig, Trainer};
