//! The ablation runner: a baseline config and named variants (each a set
//! of `--set`-style overrides) x seeds, at one budget, two trainings at a
//! time with one thread each (or `jobs` at a time), resumable, with the
//! statistics and the verdict against the published finding.
//!
//! A sweep's folder `results/<ablation>/` holds:
//! - `runs/<variant>/seed-<s>/`: an ordinary run folder (see
//!   [`crate::train`]), with `telemetry.csv`;
//! - `summary.md`: per variant mean ± std over seeds of validation
//!   perplexity (the primary metric), loss, token accuracy and BLEU, the
//!   diverged count and the wall time; per variant against the baseline
//!   the difference with its 95% Welch interval and the verdict;
//! - `runs.csv`: every run's final numbers;
//! - `curves.svg` (validation perplexity against step) and
//!   `curves_time.svg` (against training seconds): mean over seeds with a
//!   ± 1 std band;
//! - `grad_norm_init.svg`, `grad_norm.svg`, `rank_collapse.svg`,
//!   `attention_entropy.svg`: the telemetry (see [`crate::telemetry`]).
//!
//! **Determinism.** A run's numbers are a function of its config and seed
//! only: the engine is bit-identical at any thread count, each job runs in
//! its own rayon pool, and runs share nothing but read-only files. So a
//! (variant, seed) run in a sweep of two jobs equals the same run alone,
//! bit for bit (tested in `tests/ablation.rs`). Step budgets keep that
//! true of whole sweeps; a minutes budget makes the step count depend on
//! the machine's speed.
//!
//! **Resume.** Rerunning a sweep skips runs with a `summary.json`,
//! resumes runs with a `last.ckpt` bit for bit, and restarts runs that
//! were killed before their first checkpoint. A run folder made with a
//! different config (another budget, say) is an error, not silently mixed
//! in.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::config::RunConfig;
use crate::report::{LinePlot, Series, line_plot_svg, markdown_table, read_metrics};
use crate::stats::{Expect, Interval, Verdict, spread, verdict, welch};
use crate::summary::{Summary, finish};
use crate::telemetry::{self, ATTN_ENTROPY, GRAD_NORM, RANK_COLLAPSE, TelemetryRow};
use crate::train::{Outcome, Run, RunOptions, TELEMETRY, last_checkpoint, write_atomic};

/// One arm of an ablation.
#[derive(Clone, Debug)]
pub struct Variant {
    /// Short name (folder and `--only` name): `bn-post`.
    pub name: String,
    /// What it is, in words: `BatchNorm (encoder), post-norm`.
    pub label: String,
    /// Overrides of the ablation's base config (`model.norm=batch`).
    pub sets: Vec<String>,
    /// What the finding predicts for its primary metric against its
    /// reference (`None`: the baseline, or a variant shown for reference
    /// with no published prediction).
    pub expect: Option<Expect>,
    /// The variant it is compared with (`None` = the baseline): BatchNorm
    /// pre-norm is judged against LayerNorm pre-norm, not post-norm.
    pub against: Option<String>,
}

impl Variant {
    /// A variant.
    pub fn new(name: &str, label: &str, sets: &[&str], expect: Option<Expect>) -> Self {
        Variant {
            name: name.into(),
            label: label.into(),
            sets: sets.iter().map(|s| s.to_string()).collect(),
            expect,
            against: None,
        }
    }

    /// The same variant, compared with `reference` instead of the baseline.
    pub fn against(mut self, reference: &str) -> Self {
        self.against = Some(reference.into());
        self
    }
}

/// An ablation: a question, the published finding, a base config and its
/// variants (the first is the baseline), run over seeds.
#[derive(Clone, Debug)]
pub struct Ablation {
    /// Its name (`norm`): the folder under `results/`.
    pub name: String,
    /// The question it answers.
    pub question: String,
    /// The published finding and its source (../shared/EXPERIMENTS.md).
    pub finding: String,
    /// What the finding predicts at this scale.
    pub expected: String,
    /// The config every variant starts from.
    pub base: RunConfig,
    /// The variants; the first is the baseline.
    pub variants: Vec<Variant>,
    /// Seeds per variant.
    pub seeds: Vec<u64>,
    /// Extra remarks printed in the summary (protocol choices, caveats).
    pub notes: Vec<String>,
}

impl Ablation {
    /// The baseline variant.
    pub fn baseline(&self) -> &Variant {
        &self.variants[0]
    }

    /// The config of one (variant, seed) run.
    pub fn config(&self, variant: &Variant, seed: u64) -> Result<RunConfig, String> {
        let mut sets = variant.sets.clone();
        sets.push(format!("loop.seed={seed}"));
        self.base
            .with_overrides(&sets)
            .map_err(|e| format!("{} / {}: {e}", self.name, variant.name))
    }

    /// Keeps only the named variants (the baseline always stays: every
    /// verdict is against it). An unknown name is an error listing the
    /// known ones.
    pub fn only(&mut self, names: &[String]) -> Result<(), String> {
        if names.is_empty() {
            return Ok(());
        }
        for n in names {
            if !self.variants.iter().any(|v| &v.name == n) {
                return Err(format!(
                    "--only {n}: {} has no such variant (known: {})",
                    self.name,
                    self.variants
                        .iter()
                        .map(|v| v.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        let base = self.baseline().name.clone();
        // The baseline and the references of the chosen variants stay.
        let keep: Vec<String> = self
            .variants
            .iter()
            .filter(|v| names.contains(&v.name))
            .filter_map(|v| v.against.clone())
            .chain([base])
            .chain(names.iter().cloned())
            .collect();
        self.variants.retain(|v| keep.contains(&v.name));
        Ok(())
    }
}

/// How to run a sweep (none of it changes a result).
#[derive(Clone, Debug)]
pub struct SweepOptions {
    /// The sweep's folder (`results/<ablation>`).
    pub dir: PathBuf,
    /// Trainings at a time.
    pub jobs: usize,
    /// Threads per training.
    pub threads: usize,
    /// An overall progress bar (on stderr, if a terminal).
    pub progress: bool,
    /// One line per finished run on stdout.
    pub verbose: bool,
    /// Only the runs of this shard `(i, k)`: the (variant, seed) pairs whose
    /// index in (variant, seed) order is `i` modulo `k` (a Slurm array job,
    /// or one rank of `mpirun`). `None`: every run.
    pub shard: Option<(usize, usize)>,
    /// Train runs that are not finished (false: report them as an error,
    /// which is what merging finished shards wants).
    pub train_missing: bool,
}

/// The final numbers of one (variant, seed) run (a row of `runs.csv`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// Variant name.
    pub variant: String,
    /// Seed.
    pub seed: u64,
    /// `finished` or `diverged`.
    pub outcome: String,
    /// The diverging step.
    pub diverged_at: Option<u64>,
    /// Optimiser steps taken.
    pub steps: u64,
    /// The step of the best checkpoint (the numbers below are its).
    pub best_step: Option<u64>,
    /// Validation perplexity per token of the best checkpoint.
    pub valid_ppl: f64,
    /// Validation NLL (nats per token).
    pub valid_loss: f64,
    /// Validation token accuracy.
    pub valid_acc: f64,
    /// Greedy BLEU on the (first `eval.decode_limit`) test pairs.
    pub bleu: Option<f64>,
    /// Training seconds.
    pub train_seconds: f64,
    /// Seconds of the final evaluation (validation and decoding).
    #[serde(default)]
    pub eval_seconds: f64,
    /// The source tree's commit when the run finished, if known.
    #[serde(default)]
    pub commit: Option<String>,
}

impl RunResult {
    fn from_summary(variant: &str, seed: u64, s: &Summary) -> Self {
        RunResult {
            variant: variant.into(),
            seed,
            outcome: s.outcome.clone(),
            diverged_at: s.diverged_at,
            steps: s.steps,
            best_step: s.best_step,
            valid_ppl: s.eval.valid.ppl_token,
            valid_loss: s.eval.valid.loss,
            valid_acc: s.eval.valid.accuracy,
            bleu: s.eval.decode.as_ref().map(|d| d.bleu_greedy),
            train_seconds: s.train_seconds,
            eval_seconds: s.eval_seconds,
            commit: s.git_commit.clone(),
        }
    }

    /// True if the run diverged.
    pub fn diverged(&self) -> bool {
        self.outcome == "diverged"
    }
}

/// The folder of one run of a sweep.
pub fn run_dir(sweep: &Path, variant: &str, seed: u64) -> PathBuf {
    sweep
        .join("runs")
        .join(variant)
        .join(format!("seed-{seed}"))
}

/// Runs (or resumes, or skips when done) one (variant, seed) run in the
/// current rayon pool and returns its numbers.
pub fn run_one(
    ablation: &Ablation,
    variant: &Variant,
    seed: u64,
    sweep: &Path,
) -> Result<RunResult, String> {
    let dir = run_dir(sweep, &variant.name, seed);
    let config = ablation.config(variant, seed)?;
    let summary_path = dir.join("summary.json");
    if dir.join("config.toml").exists() {
        let stored = RunConfig::load(&dir.join("config.toml"))?;
        let mut wanted = config.clone();
        if wanted.model.src_vocab == 0 {
            wanted.model.src_vocab = stored.model.src_vocab;
        }
        if wanted.model.tgt_vocab == 0 {
            wanted.model.tgt_vocab = stored.model.tgt_vocab;
        }
        if stored != wanted {
            return Err(format!(
                "{} was made with another config than this sweep's (another budget or \
                 version?): remove it, or give another --out",
                dir.display()
            ));
        }
        if summary_path.exists() {
            let text = std::fs::read_to_string(&summary_path)
                .map_err(|e| format!("{}: {e}", summary_path.display()))?;
            let s: Summary = serde_json::from_str(&text)
                .map_err(|e| format!("{}: {e}", summary_path.display()))?;
            if s.outcome != "stopped" {
                return Ok(RunResult::from_summary(&variant.name, seed, &s));
            }
        }
    }
    let mut run = if last_checkpoint(&dir).exists() {
        Run::resume(&dir, false)?
    } else {
        if dir.exists() {
            // Killed before its first checkpoint: nothing to keep.
            std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        Run::start(&dir, config, false)?
    };
    let outcome = run.train(&RunOptions::default())?;
    if outcome == Outcome::Stopped {
        return Err(format!("{}: stopped before its budget", dir.display()));
    }
    let s = finish(&run, &outcome, false)?;
    Ok(RunResult::from_summary(&variant.name, seed, &s))
}

/// A finished task: (variant index, seed, its result).
type Finished = (usize, u64, Result<RunResult, String>);

/// Runs every (variant, seed) of `ablation` as `opts` says and returns the
/// results in (variant, seed) order. A failing run (an error, not a
/// divergence) stops the sweep with its error once the others finish.
pub fn sweep(ablation: &Ablation, opts: &SweepOptions) -> Result<Vec<RunResult>, String> {
    if opts.jobs == 0 || opts.threads == 0 {
        return Err("--jobs and --threads must be at least 1".into());
    }
    std::fs::create_dir_all(&opts.dir).map_err(|e| format!("{}: {e}", opts.dir.display()))?;
    // Every config is built (and validated) before anything trains.
    for v in &ablation.variants {
        for &s in &ablation.seeds {
            ablation.config(v, s)?;
        }
    }
    if let Some((i, k)) = opts.shard
        && (k == 0 || i >= k)
    {
        return Err(format!("shard {i}/{k}: give i/K with 0 <= i < K"));
    }
    let tasks: VecDeque<(usize, u64)> = (0..ablation.variants.len())
        .flat_map(|v| ablation.seeds.iter().map(move |&s| (v, s)))
        .enumerate()
        .filter(|(n, _)| opts.shard.is_none_or(|(i, k)| n % k == i))
        .map(|(_, t)| t)
        .collect();
    if !opts.train_missing {
        let missing: Vec<String> = tasks
            .iter()
            .filter(|(v, s)| {
                let dir = run_dir(&opts.dir, &ablation.variants[*v].name, *s);
                !dir.join("summary.json").exists()
            })
            .map(|(v, s)| format!("{} seed {s}", ablation.variants[*v].name))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "{}: {} run(s) not finished ({}): run the missing shards first",
                opts.dir.display(),
                missing.len(),
                missing.join(", ")
            ));
        }
    }
    let total = tasks.len();
    let queue = Mutex::new(tasks);
    let results: Mutex<Vec<Finished>> = Mutex::new(Vec::new());
    let bar = if opts.progress {
        let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} runs {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    } else {
        ProgressBar::hidden()
    };
    std::thread::scope(|scope| {
        for _ in 0..opts.jobs.min(total.max(1)) {
            scope.spawn(|| {
                let pool = match rayon::ThreadPoolBuilder::new()
                    .num_threads(opts.threads)
                    .build()
                {
                    Ok(p) => p,
                    Err(e) => {
                        results
                            .lock()
                            .expect("no job panics holding the lock")
                            .push((usize::MAX, 0, Err(format!("thread pool: {e}"))));
                        return;
                    }
                };
                loop {
                    let next = queue
                        .lock()
                        .expect("no job panics holding the lock")
                        .pop_front();
                    let Some((vi, seed)) = next else { break };
                    let v = &ablation.variants[vi];
                    let t = std::time::Instant::now();
                    // Each run as on one machine, whatever job this is.
                    // (`alone` is per thread: inside `install`, on the
                    // pool's thread that runs the training.)
                    let r = pool
                        .install(|| crate::dist::alone(|| run_one(ablation, v, seed, &opts.dir)));
                    if opts.verbose {
                        let line = match &r {
                            Ok(r) if r.diverged() => format!(
                                "{}/{} seed {seed}: diverged at step {} ({:.0} s)",
                                ablation.name,
                                v.name,
                                r.diverged_at.unwrap_or(0),
                                t.elapsed().as_secs_f64()
                            ),
                            Ok(r) => format!(
                                "{}/{} seed {seed}: valid ppl {:.2} after {} steps ({:.0} s)",
                                ablation.name,
                                v.name,
                                r.valid_ppl,
                                r.steps,
                                t.elapsed().as_secs_f64()
                            ),
                            Err(e) => {
                                format!("{}/{} seed {seed}: error: {e}", ablation.name, v.name)
                            }
                        };
                        bar.suspend(|| println!("{line}"));
                    }
                    bar.inc(1);
                    results
                        .lock()
                        .expect("no job panics holding the lock")
                        .push((vi, seed, r));
                }
            });
        }
    });
    bar.finish_and_clear();
    let mut all = results.into_inner().expect("no job panicked");
    all.sort_by_key(|(v, s, _)| (*v, *s));
    all.into_iter().map(|(_, _, r)| r).collect()
}

/// The statistics of one variant.
#[derive(Clone, Debug)]
pub struct VariantStats {
    /// The variant.
    pub variant: Variant,
    /// Its runs.
    pub runs: Vec<RunResult>,
    /// Runs that diverged.
    pub diverged: usize,
    /// The variant it is judged against.
    pub reference: String,
    /// Difference in validation perplexity to the reference (variant -
    /// reference) with its 95% Welch interval, over the runs that finished.
    pub ci: Option<Interval>,
    /// The verdict (`None` for the baseline).
    pub verdict: Option<Verdict>,
    /// Why, in words.
    pub reason: String,
}

fn finished_ppl(runs: &[RunResult]) -> Vec<f64> {
    runs.iter()
        .filter(|r| !r.diverged() && r.valid_ppl.is_finite())
        .map(|r| r.valid_ppl)
        .collect()
}

/// Groups results by variant and judges each against the baseline.
pub fn judge(ablation: &Ablation, results: &[RunResult]) -> Vec<VariantStats> {
    let runs_of = |name: &str| -> Vec<RunResult> {
        results
            .iter()
            .filter(|r| r.variant == name)
            .cloned()
            .collect()
    };
    ablation
        .variants
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let reference = v
                .against
                .clone()
                .unwrap_or_else(|| ablation.baseline().name.clone());
            let base = finished_ppl(&runs_of(&reference));
            let base_mean = spread(&base).map_or(f64::NAN, |s| s.mean);
            let runs = runs_of(&v.name);
            let diverged = runs.iter().filter(|r| r.diverged()).count();
            let ppl = finished_ppl(&runs);
            let ci = (i > 0).then(|| welch(&ppl, &base, 0.95)).flatten();
            let (verdict, reason) = match (i, v.expect) {
                (0, _) => (None, "baseline".to_string()),
                (_, None) => (
                    None,
                    "shown for reference: no published prediction".to_string(),
                ),
                (_, Some(expect)) => {
                    judge_one(expect, &runs, diverged, ci.as_ref(), base.len(), base_mean)
                }
            };
            VariantStats {
                variant: v.clone(),
                reference,
                runs,
                diverged,
                ci,
                verdict,
                reason,
            }
        })
        .collect()
}

fn judge_one(
    expect: Expect,
    runs: &[RunResult],
    diverged: usize,
    ci: Option<&Interval>,
    base_n: usize,
    base_mean: f64,
) -> (Option<Verdict>, String) {
    let n = runs.len();
    if n > 0 && diverged == n {
        // Every seed diverged: as bad a result as there is.
        return match expect {
            Expect::Higher => (
                Some(Verdict::Reproduces),
                format!("diverged in all {n} seeds"),
            ),
            _ => (
                Some(Verdict::Contradicts),
                format!("diverged in all {n} seeds"),
            ),
        };
    }
    let note = if diverged > 0 {
        format!("; {diverged} of {n} seeds diverged (left out of the interval)")
    } else {
        String::new()
    };
    match ci {
        None if base_n < 2 => (
            Some(Verdict::Inconclusive),
            format!("fewer than 2 finished baseline runs{note}"),
        ),
        None => (
            Some(Verdict::Inconclusive),
            format!("fewer than 2 finished runs{note}"),
        ),
        Some(ci) => {
            let v = verdict(expect, ci, base_mean);
            let why = match (v, expect) {
                // `Same` is inconclusive only when the CI includes 0.
                (Verdict::Inconclusive, Expect::Same { margin }) => format!(
                    "CI includes 0 but reaches beyond ±{:.0}% of the baseline",
                    100.0 * margin
                ),
                (Verdict::Inconclusive, _) => "CI includes 0".to_string(),
                (Verdict::Reproduces, Expect::Same { margin }) => {
                    format!("CI within ±{:.0}% of the baseline", 100.0 * margin)
                }
                (Verdict::Reproduces, Expect::Higher) => "CI above 0".to_string(),
                (Verdict::Reproduces, Expect::Lower) => "CI below 0".to_string(),
                (Verdict::Contradicts, Expect::Same { .. }) => "CI excludes 0".to_string(),
                (Verdict::Contradicts, _) => "CI on the other side of 0".to_string(),
            };
            (Some(v), format!("{why}{note}"))
        }
    }
}

fn expect_words(e: Option<Expect>) -> String {
    match e {
        None => "-".into(),
        Some(Expect::Higher) => "higher perplexity".into(),
        Some(Expect::Lower) => "lower perplexity".into(),
        Some(Expect::Same { margin }) => format!("the same (within ±{:.0}%)", 100.0 * margin),
    }
}

fn mean_std(xs: &[f64], digits: usize) -> String {
    match spread(xs) {
        None => "-".into(),
        Some(s) if s.n == 1 => format!("{:.*}", digits, s.mean),
        Some(s) => format!("{:.*} ± {:.*}", digits, s.mean, digits, s.std),
    }
}

/// Writes `summary.md`, `runs.csv` and the plots of a finished sweep and
/// returns the summary's text. `command` is the command line to rerun it.
pub fn report(
    ablation: &Ablation,
    results: &[RunResult],
    dir: &Path,
    command: &str,
) -> Result<String, String> {
    let stats = judge(ablation, results);
    // runs.csv
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in results {
        w.serialize(r).map_err(|e| format!("runs.csv: {e}"))?;
    }
    let bytes = w.into_inner().map_err(|e| format!("runs.csv: {e}"))?;
    write_atomic(&dir.join("runs.csv"), &bytes)?;

    let mut md = String::new();
    let _ = writeln!(md, "# Ablation: {}\n", ablation.name);
    let _ = writeln!(md, "**Question.** {}\n", ablation.question);
    let _ = writeln!(md, "**Published finding.** {}\n", ablation.finding);
    let _ = writeln!(md, "**Expected at this scale.** {}\n", ablation.expected);
    let base = &ablation.base;
    let budget = match (base.run.steps, base.run.minutes) {
        (Some(s), _) => format!("{s} steps"),
        (None, Some(m)) => format!("{m} minutes"),
        (None, None) => "?".into(),
    };
    let _ = writeln!(
        md,
        "**Protocol.** {} seeds ({}) per variant, {budget} of {}-token batches each; the \
         numbers are the best checkpoint's (lowest validation loss); primary metric: \
         validation perplexity per token (lower is better). The interval is Welch's 95% \
         t interval of the difference of means (variant - baseline) over the seeds that \
         finished.\n",
        ablation.seeds.len(),
        ablation
            .seeds
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        base.run.batch_tokens
    );
    for n in &ablation.notes {
        let _ = writeln!(md, "- {n}");
    }
    if !ablation.notes.is_empty() {
        md.push('\n');
    }
    let _ = writeln!(md, "Command: `{command}`\n");
    let has_bleu = results.iter().any(|r| r.bleu.is_some());
    let mut headers = vec!["variant", "what", "valid ppl", "valid loss", "accuracy %"];
    if has_bleu {
        headers.push("BLEU (greedy)");
    }
    headers.extend(["diverged", "train s / run"]);
    let rows: Vec<Vec<String>> = stats
        .iter()
        .map(|s| {
            let fin: Vec<&RunResult> = s.runs.iter().filter(|r| !r.diverged()).collect();
            let col = |f: &dyn Fn(&RunResult) -> f64| -> Vec<f64> {
                fin.iter().map(|r| f(r)).filter(|x| x.is_finite()).collect()
            };
            let mut row = vec![
                s.variant.name.clone(),
                s.variant.label.clone(),
                mean_std(&col(&|r| r.valid_ppl), 2),
                mean_std(&col(&|r| r.valid_loss), 3),
                mean_std(&col(&|r| 100.0 * r.valid_acc), 1),
            ];
            if has_bleu {
                row.push(mean_std(&col(&|r| r.bleu.unwrap_or(f64::NAN)), 2));
            }
            row.push(format!("{}/{}", s.diverged, s.runs.len()));
            let secs: Vec<f64> = s.runs.iter().map(|r| r.train_seconds).collect();
            row.push(mean_std(&secs, 1));
            row
        })
        .collect();
    let _ = writeln!(md, "## Results (mean ± std over seeds)\n");
    md.push_str(&markdown_table(&headers, &rows));
    let _ = writeln!(
        md,
        "\n## Verdicts (against the baseline `{}` unless named)\n",
        ablation.baseline().name
    );
    let vrows: Vec<Vec<String>> = stats
        .iter()
        .skip(1)
        .map(|s| {
            vec![
                s.variant.name.clone(),
                s.reference.clone(),
                expect_words(s.variant.expect),
                s.ci.map_or("-".into(), |c| format!("{:+.2}", c.diff)),
                s.ci.map_or("-".into(), |c| format!("[{:+.2}, {:+.2}]", c.low, c.high)),
                s.verdict.map_or("-".into(), |v| v.word().to_string()),
                s.reason.clone(),
            ]
        })
        .collect();
    md.push_str(&markdown_table(
        &[
            "variant",
            "against",
            "finding predicts",
            "Δ valid ppl",
            "95% CI",
            "verdict",
            "why",
        ],
        &vrows,
    ));
    // Every run's telemetry, read once: [variant][seed] -> rows.
    let tele: Vec<Vec<Vec<TelemetryRow>>> = ablation
        .variants
        .iter()
        .map(|v| variant_telemetry(dir, &v.name, &ablation.seeds))
        .collect::<Result<_, _>>()?;
    let tele_md = telemetry_table(ablation, &tele);
    if !tele_md.is_empty() {
        let _ = writeln!(
            md,
            "\n## Telemetry (mean over seeds; see the SVGs)\n\n\
             grad norm: the gradient norm of the first encoder layer's and the last decoder \
             layer's parameters at initialisation (step 0); rank collapse: `||X - 1 x̄ᵀ|| / ||X||` of the last encoder layer's \
             output at the end (0 = every token the same); entropy: the mean attention \
             entropy over every head at the end (nats).\n"
        );
        md.push_str(&tele_md);
    }
    let _ = writeln!(
        md,
        "\nFigures: `curves.svg`, `curves_time.svg`, `grad_norm_init.svg`, `grad_norm.svg`, \
         `rank_collapse.svg`, `attention_entropy.svg`; every run: `runs.csv`, `runs/`."
    );
    write_atomic(&dir.join("summary.md"), md.as_bytes())?;
    curves(ablation, dir)?;
    telemetry_plots(ablation, &tele, dir)?;
    Ok(md)
}

/// Mean over seeds of (x, y) curves sampled at the same x keys; the band is
/// ± 1 std. `points` are per seed.
fn mean_band(per_seed: &[Vec<(f64, f64)>]) -> Series {
    let mut keys: Vec<f64> = per_seed.iter().flatten().map(|p| p.0).collect();
    keys.sort_by(f64::total_cmp);
    keys.dedup();
    let mut points = Vec::new();
    let mut band = Vec::new();
    for k in keys {
        let ys: Vec<f64> = per_seed
            .iter()
            .filter_map(|c| c.iter().find(|p| p.0 == k).map(|p| p.1))
            .filter(|y| y.is_finite())
            .collect();
        if let Some(s) = spread(&ys) {
            points.push((k, s.mean));
            band.push((k, s.mean - s.std, s.mean + s.std));
        }
    }
    Series {
        name: String::new(),
        points,
        band: Some(band),
    }
}

fn curves(ablation: &Ablation, dir: &Path) -> Result<(), String> {
    let (mut by_step, mut by_time) = (Vec::new(), Vec::new());
    for v in &ablation.variants {
        let (mut steps, mut times) = (Vec::new(), Vec::new());
        for &seed in &ablation.seeds {
            let path = run_dir(dir, &v.name, seed).join("metrics.csv");
            if !path.exists() {
                continue;
            }
            let rows = read_metrics(&path).map_err(|e| e.to_string())?;
            let valid: Vec<_> = rows
                .iter()
                .filter_map(|r| r.valid_ppl.map(|p| (r.step as f64, r.elapsed_s, p)))
                .collect();
            steps.push(valid.iter().map(|&(s, _, p)| (s, p)).collect::<Vec<_>>());
            times.push(valid.iter().map(|&(s, t, _)| (s, t)).collect::<Vec<_>>());
        }
        let mut s = mean_band(&steps);
        s.name = format!("{} ({} seeds)", v.name, steps.len());
        // Against time: the mean time of each step over seeds.
        let time_of = mean_band(&times).points;
        let mut st = Series {
            name: s.name.clone(),
            points: Vec::new(),
            band: Some(Vec::new()),
        };
        for (&(step, y), &(_, lo, hi)) in s.points.iter().zip(s.band.as_ref().into_iter().flatten())
        {
            if let Some(&(_, secs)) = time_of.iter().find(|p| p.0 == step) {
                st.points.push((secs, y));
                if let Some(b) = st.band.as_mut() {
                    b.push((secs, lo, hi));
                }
            }
        }
        by_step.push(s);
        by_time.push(st);
    }
    let title = format!(
        "{}: validation perplexity (mean ± std over seeds)",
        ablation.name
    );
    line_plot_svg(
        &LinePlot {
            title: &title,
            x_label: "step",
            y_label: "validation perplexity",
            log_y: true,
            series: &by_step,
        },
        &dir.join("curves.svg"),
    )
    .map_err(|e| e.to_string())?;
    line_plot_svg(
        &LinePlot {
            title: &title,
            x_label: "training seconds (mean over seeds)",
            y_label: "validation perplexity",
            log_y: true,
            series: &by_time,
        },
        &dir.join("curves_time.svg"),
    )
    .map_err(|e| e.to_string())
}

/// Every seed's telemetry of a variant.
fn variant_telemetry(
    dir: &Path,
    variant: &str,
    seeds: &[u64],
) -> Result<Vec<Vec<TelemetryRow>>, String> {
    seeds
        .iter()
        .map(|&s| {
            telemetry::read(&run_dir(dir, variant, s).join(TELEMETRY)).map_err(|e| e.to_string())
        })
        .collect()
}

/// Per module (in first-seen order) the value of `metric` at `step`
/// (`None` = each seed's last step), averaged over heads.
fn profile(
    rows: &[TelemetryRow],
    metric: &str,
    step: Option<u64>,
    filter: &dyn Fn(&str) -> bool,
) -> Vec<(String, f64)> {
    let step = match step {
        Some(s) => s,
        None => match rows
            .iter()
            .filter(|r| r.metric == metric)
            .map(|r| r.step)
            .max()
        {
            Some(s) => s,
            None => return Vec::new(),
        },
    };
    let mut out: Vec<(String, f64, usize)> = Vec::new();
    for r in rows
        .iter()
        .filter(|r| r.metric == metric && r.step == step && filter(&r.module))
    {
        match out.iter_mut().find(|(m, _, _)| *m == r.module) {
            Some((_, s, n)) => {
                *s += r.value;
                *n += 1;
            }
            None => out.push((r.module.clone(), r.value, 1)),
        }
    }
    out.into_iter().map(|(m, s, n)| (m, s / n as f64)).collect()
}

/// The encoder's modules if it has layers, else the decoder's.
fn main_stack(rows: &[TelemetryRow]) -> &'static str {
    if rows.iter().any(|r| r.module.starts_with("encoder.layers")) {
        "encoder"
    } else {
        "decoder"
    }
}

fn telemetry_plots(
    ablation: &Ablation,
    tele: &[Vec<Vec<TelemetryRow>>],
    dir: &Path,
) -> Result<(), String> {
    type Pick = (
        &'static str,
        &'static str,
        Option<u64>,
        &'static str,
        &'static str,
        bool,
    );
    let plots: [Pick; 4] = [
        (
            "grad_norm_init.svg",
            GRAD_NORM,
            Some(0),
            "gradient norm per layer at initialisation (step 0)",
            "layer (encoder layers, then decoder layers)",
            true,
        ),
        (
            "grad_norm.svg",
            GRAD_NORM,
            None,
            "gradient norm per layer at the end",
            "layer (encoder layers, then decoder layers)",
            true,
        ),
        (
            "rank_collapse.svg",
            RANK_COLLAPSE,
            None,
            "rank collapse ||X - 1x̄ᵀ|| / ||X|| of each layer's output at the end",
            "depth (0 = the stack's input)",
            false,
        ),
        (
            "attention_entropy.svg",
            ATTN_ENTROPY,
            None,
            "attention entropy (nats, mean over heads) at the end",
            "attention layer (model order)",
            false,
        ),
    ];
    for (file, metric, step, what, x_label, log_y) in plots {
        let mut series = Vec::new();
        for (v, per_seed) in ablation.variants.iter().zip(tele) {
            let curves: Vec<Vec<(f64, f64)>> = per_seed
                .iter()
                .filter(|rows| !rows.is_empty())
                .map(|rows| {
                    let stack = main_stack(rows);
                    // Only the encoder and decoder layers, so that the x
                    // positions mean the same in every variant (a pre-norm
                    // model has two more modules, its final norms; the
                    // embeddings and final norms stay in telemetry.csv).
                    let keep = |m: &str| match metric {
                        RANK_COLLAPSE => m.starts_with(stack),
                        GRAD_NORM => m.contains(".layers."),
                        _ => true,
                    };
                    profile(rows, metric, step, &keep)
                        .into_iter()
                        .enumerate()
                        .map(|(i, (_, y))| (i as f64, y))
                        .collect()
                })
                .collect();
            if curves.is_empty() {
                continue;
            }
            let mut s = mean_band(&curves);
            s.name = v.name.clone();
            series.push(s);
        }
        if series.is_empty() {
            continue;
        }
        let title = format!("{}: {what}", ablation.name);
        line_plot_svg(
            &LinePlot {
                title: &title,
                x_label,
                y_label: metric,
                log_y,
                series: &series,
            },
            &dir.join(file),
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn telemetry_table(ablation: &Ablation, tele: &[Vec<Vec<TelemetryRow>>]) -> String {
    let mut rows = Vec::new();
    for (v, per_seed) in ablation.variants.iter().zip(tele) {
        let per_seed: Vec<&Vec<TelemetryRow>> = per_seed.iter().filter(|r| !r.is_empty()).collect();
        if per_seed.is_empty() {
            continue;
        }
        let all = |_: &str| true;
        let mut first = Vec::new();
        let mut last = Vec::new();
        let mut rank = Vec::new();
        let mut ent = Vec::new();
        for rows in &per_seed {
            let g = profile(rows, GRAD_NORM, Some(0), &all);
            // The first and last *layers* (not embeddings or generator).
            let layers: Vec<&(String, f64)> =
                g.iter().filter(|(m, _)| m.contains(".layers.")).collect();
            if let (Some(f), Some(l)) = (layers.first(), layers.last()) {
                first.push(f.1);
                last.push(l.1);
            }
            let stack = main_stack(rows);
            let r = profile(rows, RANK_COLLAPSE, None, &|m: &str| m.starts_with(stack));
            if let Some(x) = r.last() {
                rank.push(x.1);
            }
            let e = profile(rows, ATTN_ENTROPY, None, &all);
            if !e.is_empty() {
                ent.push(e.iter().map(|x| x.1).sum::<f64>() / e.len() as f64);
            }
        }
        rows.push(vec![
            v.name.clone(),
            mean_std(&first, 3),
            mean_std(&last, 3),
            mean_std(&rank, 3),
            mean_std(&ent, 2),
        ]);
    }
    if rows.is_empty() {
        return String::new();
    }
    markdown_table(
        &[
            "variant",
            "grad norm, first layer (init)",
            "grad norm, last layer (init)",
            "rank collapse, last layer",
            "attention entropy",
        ],
        &rows,
    )
}
