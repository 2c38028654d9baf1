//! The training loop every binary uses: a run folder, a budget in steps or
//! minutes, a progress bar, periodic validation, the best checkpoint by
//! validation loss, `metrics.csv`, bit-for-bit resume, and divergence
//! recorded as an outcome instead of a crash.
//!
//! A run folder `runs/<name>/` holds:
//! - `config.toml`: the [`RunConfig`], vocabulary sizes filled in;
//! - `vocab/` (or `vocab-src/` + `vocab-tgt/`): the vocabulary, exactly
//!   what decoding the run later uses;
//! - `metrics.csv`: one row every `loop.log_every` steps and at every
//!   validation (see [`MetricsRow`]);
//! - `last.ckpt` (written at every validation: what `--resume` continues
//!   from) and `best.ckpt` (the lowest validation loss so far);
//! - after evaluation, `summary.json`, `report.md` and the SVGs.
//!
//! **Resume is bit for bit.** The data order is a function of (seed, step):
//! the batch of step N is the N-th of the seeded stream, so a resumed run
//! replays the stream to the checkpoint's step and continues with exactly
//! the batch the uninterrupted run would have used; the checkpoint holds
//! weights, Adam's moments, the step and the dropout generator. Rows of
//! `metrics.csv` after the checkpoint's step are dropped on resume and
//! written again. Only wall-clock columns differ.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use transformer::train::Divergence;
use transformer::train::accumulate::{Micro, check_ranks, micro_weights};
use transformer::{EvalStats, Registry, Trainer};

use crate::batching::{Batch, BatchStream};
use crate::config::RunConfig;
use crate::corpus::{Corpus, Vocabs, encode, read_raw, seq2seq_batch, train_vocabs};
use crate::report::{MetricsRow, MetricsWriter, read_metrics, truncate_metrics};

/// How a training run ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The budget (steps or minutes) ran out.
    Finished,
    /// The loss became non-finite or exploded at `step` (see
    /// [`Divergence`]): a result to report, not a crash.
    Diverged {
        /// The first diverging step.
        step: u64,
        /// What happened, in words.
        reason: String,
    },
    /// Stopped by [`RunOptions::stop_after`] (an interruption on purpose,
    /// for tests of resume).
    Stopped,
}

impl Outcome {
    /// `finished`, `diverged` or `stopped`: the word `summary.json` holds.
    pub fn word(&self) -> &'static str {
        match self {
            Outcome::Finished => "finished",
            Outcome::Diverged { .. } => "diverged",
            Outcome::Stopped => "stopped",
        }
    }
}

/// Options of one training session that do not change the result.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Draw the progress bar (on stderr, only if it is a terminal).
    pub progress: bool,
    /// Print what happens (data, lengths, validation) to stdout.
    pub verbose: bool,
    /// Stop this session after this many steps (the run can be resumed):
    /// simulates an interruption.
    pub stop_after: Option<u64>,
}

/// A run: its folder, config, data, vocabulary and trainer.
pub struct Run {
    /// The run folder.
    pub dir: PathBuf,
    /// The config (vocabulary sizes filled in).
    pub config: RunConfig,
    /// The vocabularies.
    pub vocabs: Vocabs,
    /// The encoded data (shared with the batch stream).
    pub corpus: Arc<Corpus>,
    /// Model, optimiser, step, dropout stream.
    pub trainer: Trainer,
    /// The blocks the model is built from (the evaluation reloads the
    /// best checkpoint with them).
    pub registry: Registry<f32>,
    /// Training seconds before this session (resumed runs).
    elapsed_before: f64,
    /// Lowest validation loss so far, and its step.
    best: Option<(f64, u64)>,
    /// This process writes the run folder (rank 0 of an MPI job, or the
    /// only process); the other ranks only train.
    writer: bool,
}

/// The telemetry file of a run folder (see [`crate::telemetry`]).
pub const TELEMETRY: &str = "telemetry.csv";

/// Validation rows (sentences or windows) in the telemetry probe batch.
const PROBE_ROWS: usize = 32;

/// The best checkpoint of a run folder.
pub fn best_checkpoint(dir: &Path) -> PathBuf {
    dir.join("best.ckpt")
}

/// The latest checkpoint of a run folder (what resume continues from).
pub fn last_checkpoint(dir: &Path) -> PathBuf {
    dir.join("last.ckpt")
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", path.display())
}

fn say(verbose: bool, text: impl FnOnce() -> String) {
    if verbose {
        println!("{}", text());
    }
}

impl Run {
    /// Starts a new run in `dir` (which must not hold a run already) with
    /// the built-in blocks.
    pub fn start(dir: &Path, config: RunConfig, verbose: bool) -> Result<Run, String> {
        Self::start_with(dir, config, &Registry::builtin(), verbose)
    }

    /// [`Run::start`] with a model whose blocks come from `registry` (a
    /// user's blocks: the loop, checkpoints and decoding work unchanged).
    pub fn start_with(
        dir: &Path,
        mut config: RunConfig,
        registry: &Registry<f32>,
        verbose: bool,
    ) -> Result<Run, String> {
        config.validate()?;
        let writer = crate::dist::world().rank() == 0;
        let verbose = verbose && writer;
        if writer && dir.join("config.toml").exists() {
            return Err(format!(
                "{} already holds a run: continue it with --resume {0}, or choose another \
                 --name / --out",
                dir.display()
            ));
        }
        if writer {
            std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        }
        let t = Instant::now();
        let raw = read_raw(&config)?;
        let vocabs = train_vocabs(&config, &raw)?;
        say(verbose, || {
            format!(
                "vocabulary: {:?}, {} source / {} target entries (trained in {:.1} s, on the \
                 training split only)",
                config.vocab,
                vocabs.src.len(),
                vocabs.tgt.len(),
                t.elapsed().as_secs_f64()
            )
        });
        if writer {
            vocabs.save(dir)?;
        }
        if config.model.src_vocab == 0 {
            config.model.src_vocab = vocabs.src.len();
        }
        if config.model.tgt_vocab == 0 {
            config.model.tgt_vocab = vocabs.tgt.len();
        }
        config.validate()?;
        let corpus = encode(&config, raw, &vocabs);
        let trainer = Trainer::with_registry(
            config.model.clone(),
            config.train.clone(),
            config.run.seed,
            registry,
        )?;
        if writer {
            write_atomic(&dir.join("config.toml"), config.to_toml().as_bytes())?;
        }
        let run = Run {
            dir: dir.to_path_buf(),
            config,
            vocabs,
            corpus: Arc::new(corpus),
            trainer,
            registry: registry.clone(),
            elapsed_before: 0.0,
            best: None,
            writer,
        };
        run.describe(verbose);
        Ok(run)
    }

    /// Continues the run in `dir` from `last.ckpt`, bit for bit, with the
    /// built-in blocks. `budget` replaces the stored budget if given
    /// (steps, minutes).
    pub fn resume(dir: &Path, verbose: bool) -> Result<Run, String> {
        Self::resume_with(dir, &Registry::builtin(), verbose)
    }

    /// [`Run::resume`] with a user's blocks.
    pub fn resume_with(dir: &Path, registry: &Registry<f32>, verbose: bool) -> Result<Run, String> {
        let verbose = verbose && crate::dist::world().rank() == 0;
        let config = RunConfig::load(&dir.join("config.toml"))?;
        let vocabs = Vocabs::load(dir)?;
        if vocabs.src.len() != config.model.src_vocab || vocabs.tgt.len() != config.model.tgt_vocab
        {
            return Err(format!(
                "{}: the saved vocabulary ({} / {}) does not match config.toml ({} / {})",
                dir.display(),
                vocabs.src.len(),
                vocabs.tgt.len(),
                config.model.src_vocab,
                config.model.tgt_vocab
            ));
        }
        let raw = read_raw(&config)?;
        let corpus = encode(&config, raw, &vocabs);
        let ckpt = last_checkpoint(dir);
        let trainer = Trainer::resume_with(&ckpt, registry).map_err(|e| e.to_string())?;
        if trainer.model.config != config.model || trainer.config != config.train {
            return Err(format!(
                "{}: the checkpoint's config differs from config.toml (was config.toml edited?)",
                ckpt.display()
            ));
        }
        let metrics = dir.join("metrics.csv");
        let writer = crate::dist::world().rank() == 0;
        let rows = if writer {
            truncate_metrics(&metrics, trainer.step).map_err(|e| e.to_string())?;
            crate::telemetry::truncate(&dir.join(TELEMETRY), trainer.step)
                .map_err(|e| e.to_string())?;
            read_metrics(&metrics).map_err(|e| e.to_string())?
        } else {
            Vec::new()
        };
        let elapsed_before = rows.last().map_or(0.0, |r| r.elapsed_s);
        let best = rows
            .iter()
            .filter_map(|r| r.valid_loss.map(|l| (l, r.step)))
            .min_by(|a, b| a.0.total_cmp(&b.0));
        say(verbose, || {
            format!("resuming {} at step {}", dir.display(), trainer.step)
        });
        let run = Run {
            dir: dir.to_path_buf(),
            config,
            vocabs,
            corpus: Arc::new(corpus),
            trainer,
            registry: registry.clone(),
            elapsed_before,
            best,
            writer,
        };
        run.describe(verbose);
        Ok(run)
    }

    fn describe(&self, verbose: bool) {
        let params = self.config.model.builtin_param_count();
        match &*self.corpus {
            Corpus::Seq2Seq(d) => say(verbose, || {
                format!(
                    "data: {} training pairs ({}), {} validation, {} test; model: {params} \
                     parameters",
                    d.train.len(),
                    d.lengths,
                    d.valid.len(),
                    d.test.len()
                )
            }),
            Corpus::Lm(d) => say(verbose, || {
                format!(
                    "data: {} training tokens, {} held-out tokens ({} characters); model: \
                     {params} parameters",
                    d.train.len(),
                    d.valid.len(),
                    d.valid_chars
                )
            }),
        }
    }

    /// Validation statistics of the current model: the unsmoothed NLL,
    /// perplexity and accuracy over every held-out token.
    pub fn validate(&self) -> EvalStats {
        crate::evaluate::validation_stats(
            &self.trainer.model,
            &self.corpus,
            self.config.run.batch_tokens,
        )
    }

    /// Trains until the budget runs out (or the loss diverges), validating
    /// and checkpointing every `loop.eval_every` steps, and at the end.
    pub fn train(&mut self, opts: &RunOptions) -> Result<Outcome, String> {
        let cfg = self.config.run.clone();
        let world = crate::dist::world();
        // Micro-batches (and any rank count): the fixed-order step of
        // `dist::step`; otherwise the ordinary one.
        let micro = cfg.micro_batches > 1 || world.size() > 1;
        if micro {
            check_ranks(cfg.micro_batches, world.size())?;
        }
        let metrics_path = self.dir.join("metrics.csv");
        let mut metrics = if self.writer {
            Some(
                MetricsWriter::open(&metrics_path, self.trainer.step > 0)
                    .map_err(|e| e.to_string())?,
            )
        } else {
            None
        };
        let start_step = self.trainer.step;
        let budget_s = cfg.minutes.map(|m| m * 60.0);
        let t0 = Instant::now();
        let elapsed = |before: f64| before + t0.elapsed().as_secs_f64();
        let bar = progress_bar(
            opts.progress && self.writer,
            cfg.steps,
            budget_s,
            start_step,
            self.elapsed_before,
        );
        // Replay the data stream to this run's step.
        let mut stream = TrainStream::new(
            Arc::clone(&self.corpus),
            self.config.run.batch_tokens,
            self.config.run.seed,
        );
        for _ in 0..start_step {
            stream.next_batch();
        }
        let probe = if cfg.telemetry {
            crate::telemetry::probe_batch(&self.corpus, PROBE_ROWS)
        } else {
            None
        };
        if start_step == 0 && self.writer {
            self.telemetry(probe.as_ref())?;
        }
        let (mut loss_sum, mut loss_n, mut tokens) = (0.0f64, 0u64, 0usize);
        let mut window_t = Instant::now();
        let mut outcome = Outcome::Finished;
        loop {
            let step = self.trainer.step;
            // Rank 0's clock decides for every rank: 0 go on, 1 the budget
            // is spent, 2 stopped on purpose.
            let code = if cfg.steps.is_some_and(|s| step >= s)
                || budget_s.is_some_and(|b| elapsed(self.elapsed_before) >= b)
            {
                1
            } else if opts.stop_after.is_some_and(|n| step - start_step >= n) {
                2
            } else {
                0
            };
            match crate::dist::decide(world, code)? {
                0 => {}
                1 => break,
                _ => {
                    outcome = Outcome::Stopped;
                    break;
                }
            }
            let st = if micro {
                let parts = stream.next_micro(cfg.micro_batches);
                tokens += parts
                    .iter()
                    .flatten()
                    .map(|b| b.src_tokens + b.tgt_tokens)
                    .sum::<usize>();
                let weights = micro_weights(
                    &parts
                        .iter()
                        .map(|b| b.as_ref().map_or(0, |b| b.tgt_tokens))
                        .collect::<Vec<_>>(),
                );
                let any = parts
                    .iter()
                    .flatten()
                    .next()
                    .expect("a batch has at least one row");
                let micros: Vec<Micro<'_>> = parts
                    .iter()
                    .zip(&weights)
                    .map(|(b, &weight)| {
                        // An empty micro-batch has weight 0 and is never
                        // computed: it points at any real one.
                        let b = b.as_ref().unwrap_or(any);
                        Micro {
                            src: &b.src,
                            tgt_in: &b.tgt_in,
                            labels: &b.labels,
                            weight,
                        }
                    })
                    .collect();
                crate::dist::step(world, &mut self.trainer, &micros)?
            } else {
                let batch = stream.next_batch();
                tokens += batch.src_tokens + batch.tgt_tokens;
                self.trainer.step(&batch.src, &batch.tgt_in, &batch.labels)
            };
            if st.loss.is_finite() {
                loss_sum += f64::from(st.loss);
                loss_n += 1;
            }
            let step = self.trainer.step;
            if let Some(d) = st.divergence {
                let reason = match d {
                    Divergence::NonFinite { loss } => format!("the loss was {loss}"),
                    Divergence::Exploding { loss, median } => format!(
                        "the loss jumped to {loss}, over {} x the recent median {median}",
                        Divergence::FACTOR
                    ),
                };
                outcome = Outcome::Diverged { step, reason };
                let row = MetricsRow {
                    step,
                    elapsed_s: elapsed(self.elapsed_before),
                    train_loss: f64::from(st.loss),
                    valid_loss: None,
                    valid_ppl: None,
                    valid_acc: None,
                    lr: st.lr,
                    grad_norm: Some(f64::from(st.grad_norm)),
                    tokens_per_s: 0.0,
                };
                if let Some(m) = &mut metrics {
                    m.write(&row).map_err(|e| e.to_string())?;
                }
                break;
            }
            // The last step of the budget is validated and checkpointed too.
            let ending = cfg.steps.is_some_and(|s| step >= s)
                || budget_s.is_some_and(|b| elapsed(self.elapsed_before) >= b);
            let validate_now = step.is_multiple_of(cfg.eval_every) || ending;
            if let Some(metrics) = metrics
                .as_mut()
                .filter(|_| step.is_multiple_of(cfg.log_every) || validate_now)
            {
                let secs = window_t.elapsed().as_secs_f64().max(1e-9);
                let train_loss = loss_sum / loss_n.max(1) as f64;
                let mut row = MetricsRow {
                    step,
                    elapsed_s: elapsed(self.elapsed_before),
                    train_loss,
                    valid_loss: None,
                    valid_ppl: None,
                    valid_acc: None,
                    lr: st.lr,
                    grad_norm: Some(f64::from(st.grad_norm)),
                    tokens_per_s: tokens as f64 / secs,
                };
                bar.set_message(format!(
                    "step {step} loss {train_loss:.3} (ppl {:.1}) lr {:.2e} {:.0} tok/s",
                    train_loss.exp(),
                    st.lr,
                    row.tokens_per_s
                ));
                if validate_now {
                    self.validation_row(&mut row, opts.verbose, &bar);
                }
                metrics.write(&row).map_err(|e| e.to_string())?;
                if validate_now {
                    self.telemetry(probe.as_ref())?;
                    self.checkpoint(row.valid_loss)?;
                }
                (loss_sum, loss_n, tokens) = (0.0, 0, 0);
                window_t = Instant::now();
            }
            match budget_s {
                Some(b) if cfg.steps.is_none() => {
                    bar.set_position(elapsed(self.elapsed_before).min(b) as u64)
                }
                _ => bar.set_position(step),
            }
        }
        bar.finish_and_clear();
        self.elapsed_before = elapsed(self.elapsed_before);
        Ok(outcome)
    }

    fn validation_row(&self, row: &mut MetricsRow, verbose: bool, bar: &ProgressBar) {
        let v = self.validate();
        row.valid_loss = Some(v.nll());
        row.valid_ppl = Some(v.perplexity());
        row.valid_acc = Some(v.accuracy());
        let line = format!(
            "step {:>6}  {:>6.0} s  train loss {:.3}  valid loss {:.3}  ppl {:.2}  acc {:.1}%",
            row.step,
            row.elapsed_s,
            row.train_loss,
            v.nll(),
            v.perplexity(),
            100.0 * v.accuracy()
        );
        if verbose {
            bar.suspend(|| println!("{line}"));
        }
    }

    /// Appends the telemetry of the current model on `probe` (if any).
    fn telemetry(&mut self, probe: Option<&Batch>) -> Result<(), String> {
        let Some(batch) = probe else {
            return Ok(());
        };
        let rows = crate::telemetry::measure(
            &mut self.trainer.model,
            batch,
            self.config.train.smoothing,
            self.trainer.step,
        );
        crate::telemetry::append(&self.dir.join(TELEMETRY), &rows).map_err(|e| e.to_string())
    }

    /// Writes `last.ckpt`, and `best.ckpt` when `valid_loss` is the lowest
    /// so far.
    fn checkpoint(&mut self, valid_loss: Option<f64>) -> Result<(), String> {
        let last = last_checkpoint(&self.dir);
        self.trainer.save(&last).map_err(|e| e.to_string())?;
        if let Some(l) = valid_loss
            && self.best.is_none_or(|(b, _)| l < b)
        {
            self.best = Some((l, self.trainer.step));
            self.trainer
                .save(best_checkpoint(&self.dir))
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Training seconds so far (this session and earlier ones).
    pub fn elapsed_s(&self) -> f64 {
        self.elapsed_before
    }

    /// The lowest validation loss and its step.
    pub fn best(&self) -> Option<(f64, u64)> {
        self.best
    }
}

/// The training batches from step 0, a function of (data, budget, seed)
/// only: the batch of step N is the N-th, which is what makes resume exact.
struct TrainStream {
    corpus: Arc<Corpus>,
    tokens: usize,
    seed: u64,
    seq: Option<BatchStream>,
    /// Language models: epoch, position in it, window starts.
    lm: (u64, usize, Vec<usize>),
}

impl TrainStream {
    fn new(corpus: Arc<Corpus>, tokens: usize, seed: u64) -> Self {
        let (seq, lm) = match &*corpus {
            Corpus::Seq2Seq(d) => (
                Some(BatchStream::new(&d.train, tokens, seed)),
                (0, 0, vec![]),
            ),
            Corpus::Lm(d) => (None, (0, 0, d.epoch_windows(seed, 0))),
        };
        TrainStream {
            corpus,
            tokens,
            seed,
            seq,
            lm,
        }
    }

    /// The rows of the next batch: example indices (seq2seq) or window
    /// starts (language model).
    fn next_rows(&mut self) -> Vec<usize> {
        match (&*self.corpus, &mut self.seq) {
            (Corpus::Seq2Seq(_), Some(stream)) => {
                stream.next().expect("a BatchStream is endless").1
            }
            (Corpus::Lm(d), _) => {
                let per_batch = (self.tokens / d.context).max(1);
                let (epoch, pos, starts) = &mut self.lm;
                if *pos >= starts.len() {
                    *epoch += 1;
                    *pos = 0;
                    *starts = d.epoch_windows(self.seed, *epoch);
                }
                let end = (*pos + per_batch).min(starts.len());
                let rows = starts[*pos..end].to_vec();
                *pos = end;
                rows
            }
            (Corpus::Seq2Seq(_), None) => unreachable!("a seq2seq stream has a BatchStream"),
        }
    }

    fn build(&self, rows: &[usize]) -> Batch {
        match &*self.corpus {
            Corpus::Seq2Seq(d) => seq2seq_batch(&d.train, rows),
            Corpus::Lm(d) => d.batch(&d.train, rows),
        }
    }

    /// Tokens of one row (source and target), what micro-batches are
    /// balanced by.
    fn row_tokens(&self, row: usize) -> usize {
        match &*self.corpus {
            Corpus::Seq2Seq(d) => d.train[row].src.len() + d.train[row].tgt.len() + 2,
            Corpus::Lm(d) => d.context,
        }
    }

    fn next_batch(&mut self) -> Batch {
        let rows = self.next_rows();
        self.build(&rows)
    }

    /// The next batch cut into `m` micro-batches (see [`split_rows`]);
    /// `None` for a micro-batch that got no row.
    fn next_micro(&mut self, m: usize) -> Vec<Option<Batch>> {
        let rows = self.next_rows();
        let tokens: Vec<usize> = rows.iter().map(|&r| self.row_tokens(r)).collect();
        split_rows(&tokens, m)
            .into_iter()
            .map(|range| (!range.is_empty()).then(|| self.build(&rows[range])))
            .collect()
    }
}

/// Cuts a batch's rows (with these token counts, in batch order) into `m`
/// contiguous groups of about equal tokens: row `i` goes to group
/// `floor(m * tokens before i / total)`. A group may be empty when a row
/// holds more than a share.
///
/// ```
/// use experiments::train::split_rows;
/// assert_eq!(split_rows(&[5, 5, 5, 5], 2), vec![0..2, 2..4]);
/// assert_eq!(split_rows(&[10, 1, 1], 2), vec![0..1, 1..3]);
/// assert_eq!(split_rows(&[10], 3), vec![0..1, 1..1, 1..1]);
/// ```
pub fn split_rows(tokens: &[usize], m: usize) -> Vec<std::ops::Range<usize>> {
    let total: usize = tokens.iter().sum::<usize>().max(1);
    let mut groups = vec![0usize; m + 1];
    let mut before = 0usize;
    for &t in tokens {
        let g = (m * before / total).min(m - 1);
        groups[g + 1] += 1;
        before += t;
    }
    let mut start = 0;
    (0..m)
        .map(|g| {
            let r = start..start + groups[g + 1];
            start = r.end;
            r
        })
        .collect()
}

fn progress_bar(
    show: bool,
    steps: Option<u64>,
    budget_s: Option<f64>,
    step: u64,
    elapsed: f64,
) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let (len, pos, unit) = match (steps, budget_s) {
        (Some(s), _) => (s, step, "steps"),
        (None, Some(b)) => (b as u64, elapsed as u64, "s"),
        (None, None) => (0, 0, ""),
    };
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    let template =
        format!("{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{msg}} ETA {{eta}}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_position(pos);
    bar
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a
/// killed process never leaves half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}
