//! The experiments crate. Today it holds [`data`] (the bundled corpora,
//! read with errors that name file and line), [`bleu`] (corpus BLEU as
//! sacreBLEU computes it), [`report`] (each run's `metrics.csv`, SVG plots
//! and markdown tables) and the `bench` binary
//! (`src/bin/bench.rs`: the workloads of `experiments/bench/WORKLOADS.md`) and, in
//! `bench/`, the PyTorch reference and the side-by-side comparison script.
//! The ablation experiments on the bundled real data are the next issue;
//! they will live here as a small library plus one binary per experiment.

#![deny(missing_docs)]

pub mod bleu;
pub mod data;
pub mod report;
