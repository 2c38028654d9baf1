//! The flags every training binary shares (clap), and the driver they all
//! call: config from a preset or file plus overrides, a run folder, the
//! training loop, the evaluation and the report. The binaries stay thin.

use std::path::{Path, PathBuf};

use clap::Args;
use transformer::Registry;

use crate::config::RunConfig;
use crate::summary::{Summary, finish};
use crate::train::{Outcome, Run, RunOptions};

/// Flags of a training run.
#[derive(Args, Clone, Debug, Default)]
pub struct TrainArgs {
    /// A smoke run under 60 seconds (a tiny model on a slice of the data):
    /// checks that everything works, measures nothing.
    #[arg(long)]
    pub quick: bool,
    /// Start from this named preset instead of the binary's default
    /// (presets: translate, translate-quick, lm, lm-quick, copy,
    /// copy-quick, tiny).
    #[arg(long, value_name = "NAME")]
    pub preset: Option<String>,
    /// Start from this TOML config (for instance a run's config.toml)
    /// instead of a preset.
    #[arg(long, value_name = "FILE", conflicts_with = "preset")]
    pub config: Option<PathBuf>,
    /// Override any config key: --set model.d_model=256 --set
    /// train.smoothing=0 (dotted paths into config.toml; repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Train for this many optimiser steps (replaces the preset's budget).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Train for this many minutes of wall clock (replaces the preset's
    /// budget; with --steps, whichever comes first).
    #[arg(long)]
    pub minutes: Option<f64>,
    /// Padded tokens per batch.
    #[arg(long, value_name = "N")]
    pub batch_tokens: Option<usize>,
    /// Seed of the weights, dropout and data order.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Worker threads (default: all cores). Results do not depend on it.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Folder of the run folders.
    #[arg(long, default_value = "runs", value_name = "DIR")]
    pub out: PathBuf,
    /// The run folder's name (default: the preset's name, made unique).
    #[arg(long)]
    pub name: Option<String>,
    /// Continue the interrupted run in this folder, bit for bit (its
    /// config.toml is used; --steps / --minutes replace its budget).
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// Sets the global thread pool (once per process).
pub fn set_threads(threads: Option<usize>) -> Result<(), String> {
    if let Some(n) = threads {
        if n == 0 {
            return Err("--threads must be at least 1".into());
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| format!("--threads {n}: {e}"))?;
    }
    Ok(())
}

impl TrainArgs {
    /// The config these flags describe: preset (the binary's default, its
    /// quick variant with --quick) or file, then the typed flags, then
    /// --set, validated.
    pub fn config(&self, default_preset: &str) -> Result<RunConfig, String> {
        let mut c = match (&self.config, &self.preset) {
            (Some(path), _) => RunConfig::load(path)?,
            (None, Some(p)) => RunConfig::preset(p)?,
            (None, None) if self.quick => RunConfig::preset(&format!("{default_preset}-quick"))?,
            (None, None) => RunConfig::preset(default_preset)?,
        };
        if self.steps.is_some() || self.minutes.is_some() {
            c.run.steps = self.steps;
            c.run.minutes = self.minutes;
        }
        if let Some(b) = self.batch_tokens {
            c.run.batch_tokens = b;
        }
        if let Some(s) = self.seed {
            c.run.seed = s;
        }
        c.with_overrides(&self.sets)
    }
}

/// A fresh folder under `out`: `name`, or `name-2`, `name-3`, ... if taken.
pub fn fresh_dir(out: &Path, name: &str) -> PathBuf {
    let first = out.join(name);
    if !first.exists() {
        return first;
    }
    (2..)
        .map(|i| out.join(format!("{name}-{i}")))
        .find(|p| !p.exists())
        .unwrap_or(first)
}

/// Runs (or resumes) a training run as the flags say, evaluates it and
/// writes its report: what `translate train`, `lm train` and `copy_task`
/// do. Returns the run folder and its summary (on rank 0; the other ranks
/// of an MPI job train and return `None`).
pub fn train_and_report(
    args: &TrainArgs,
    default_preset: &str,
    registry: &Registry<f32>,
) -> Result<Option<(PathBuf, Summary)>, String> {
    set_threads(args.threads)?;
    let world = crate::dist::world();
    let rank0 = world.rank() == 0;
    let started = match &args.resume {
        Some(dir) => Run::resume_with(dir, registry, true).map(|mut run| {
            if args.steps.is_some() || args.minutes.is_some() {
                run.config.run.steps = args.steps;
                run.config.run.minutes = args.minutes;
            }
            run
        }),
        None => args.config(default_preset).and_then(|config| {
            let name = args.name.clone().unwrap_or_else(|| {
                args.preset.clone().unwrap_or_else(|| {
                    if args.quick {
                        format!("{default_preset}-quick")
                    } else {
                        default_preset.to_string()
                    }
                })
            });
            // Rank 0 picks the folder; every rank uses that one.
            let dir = fresh_dir(&args.out, &name);
            let dir = crate::dist::broadcast_bytes(world, dir.to_string_lossy().as_bytes())?;
            let dir = PathBuf::from(String::from_utf8_lossy(&dir).into_owned());
            if rank0 {
                println!("run folder: {}", dir.display());
            }
            Run::start_with(&dir, config, registry, true)
        }),
    };
    // Every rank must have started the same run (same config, same
    // folder, same rank count for its micro-batches) before any trains.
    let fingerprint = started.as_ref().map_err(Clone::clone).and_then(|run| {
        if world.size() > 1 {
            transformer::train::accumulate::check_ranks(
                run.config.run.micro_batches,
                world.size(),
            )?;
        }
        let text = format!("{}\n{}", run.dir.display(), run.config.to_toml());
        Ok(transformer::train::checkpoint::fnv1a64(text.as_bytes()))
    });
    crate::dist::agree(world, fingerprint)?;
    let mut run = started?;
    let opts = RunOptions {
        progress: !args.no_progress,
        verbose: true,
        stop_after: None,
    };
    let outcome = run.train(&opts)?;
    if !rank0 {
        return Ok(None);
    }
    if let Outcome::Diverged { step, reason } = &outcome {
        println!("the run diverged at step {step}: {reason} (recorded in summary.json)");
    }
    println!("evaluating the best checkpoint ...");
    let summary = finish(&run, &outcome, true)?;
    println!(
        "report: {} (loss.svg, attention.svg, summary.json, metrics.csv)",
        run.dir.join("report.md").display()
    );
    Ok(Some((run.dir.clone(), summary)))
}
