//! The experiments crate: the research loop on real data, one module per
//! concern, and thin binaries in `src/bin/`.
//!
//! - [`data`]: the bundled corpora, read as hostile input (errors name
//!   file and line, checksums verified);
//! - [`vocab`]: character, word and BPE vocabularies (BPE by the Hugging
//!   Face `tokenizers` crate), trained on the training split only;
//! - [`batching`]: token-budget batches bucketed by length, shuffled by
//!   seed, with masks;
//! - [`config`]: one serde config per run (presets, TOML, `--set`
//!   overrides), validated before anything starts;
//! - [`corpus`]: from a config to encoded data;
//! - [`train`]: the training loop (run folder, progress bar, validation,
//!   best checkpoint, `metrics.csv`, bit-for-bit resume, divergence);
//! - [`evaluate`]: perplexity per token / word / character, accuracy,
//!   exact match, greedy and beam BLEU and chrF, samples;
//! - [`bleu`]: corpus BLEU and chrF as sacreBLEU computes them;
//! - [`report`]: `metrics.csv`, SVG plots (plotters), markdown tables;
//! - [`summary`]: `summary.json` and a run's `report.md`;
//! - [`telemetry`]: per-layer gradient norms, attention entropy per head
//!   and rank collapse, measured at every validation;
//! - [`stats`]: mean, spread, Welch confidence intervals and verdicts;
//! - [`ablation`]: the ablation runner (variants x seeds, in parallel,
//!   resumable) and its reports; [`ablations`]: the ablations themselves;
//! - [`cli`]: the flags the binaries share.
//!
//! Binaries: `translate`, `lm`, `copy_task`, `report`, and `bench` (the
//! workloads of `experiments/bench/WORKLOADS.md`).

#![deny(missing_docs)]

pub mod ablation;
pub mod ablations;
pub mod batching;
pub mod bleu;
pub mod cli;
pub mod config;
pub mod corpus;
pub mod data;
pub mod dist;
pub mod evaluate;
pub mod report;
pub mod stats;
pub mod summary;
pub mod telemetry;
pub mod train;
pub mod vocab;
