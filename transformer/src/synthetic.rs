//! Synthetic sequence tasks for demos and tests (the real corpora live in
//! the experiments crate). Token ids: 0 padding, 1 start, 2 end, 3.. symbols.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::RngExt;

use crate::{
    EvalStats, ModelConfig, Registry, Rng, TokenBatch, TrainConfig, Trainer, named_tensors,
};

/// The padding id.
pub const PAD: usize = 0;
/// The start-of-sequence id (first decoder input).
pub const BOS: usize = 1;
/// The end-of-sequence id (last label).
pub const EOS: usize = 2;
/// First id of an ordinary symbol.
pub const FIRST_SYMBOL: usize = 3;

/// One batch of a sequence-to-sequence task, ready for a train step.
#[derive(Clone, Debug)]
pub struct Seq2SeqBatch {
    /// Source (B, S).
    pub src: TokenBatch,
    /// Decoder input: start token + target (B, T).
    pub tgt_in: TokenBatch,
    /// Labels: target + end token (B * T), padded with `PAD`.
    pub labels: Vec<usize>,
    /// The targets themselves, for exact-match scoring.
    pub targets: Vec<Vec<usize>>,
}

impl Seq2SeqBatch {
    /// Builds the padded tensors from (source, target) pairs.
    pub fn from_pairs(pairs: &[(Vec<usize>, Vec<usize>)]) -> Self {
        let srcs: Vec<Vec<usize>> = pairs.iter().map(|(s, _)| s.clone()).collect();
        let tgt_in: Vec<Vec<usize>> = pairs
            .iter()
            .map(|(_, t)| [&[BOS], &t[..]].concat())
            .collect();
        let labels: Vec<Vec<usize>> = pairs
            .iter()
            .map(|(_, t)| [&t[..], &[EOS]].concat())
            .collect();
        Seq2SeqBatch {
            src: TokenBatch::padded(&srcs, PAD),
            tgt_in: TokenBatch::padded(&tgt_in, PAD),
            labels: TokenBatch::padded(&labels, PAD).ids,
            targets: pairs.iter().map(|(_, t)| t.clone()).collect(),
        }
    }
}

/// A synthetic sequence-to-sequence task over random symbol strings: fast
/// sanity checks and ablations whose answer is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// The target is the source.
    Copy,
    /// The target is the source backwards: the first output token depends
    /// on the last input token, the longest-range dependency.
    Reverse,
    /// The target is the source sorted (ascending): needs the whole source
    /// to emit any token, and counting to handle repeats.
    Sort,
}

impl Task {
    /// The target of `src`.
    ///
    /// ```
    /// use transformer::synthetic::Task;
    /// assert_eq!(Task::Copy.target(&[5, 3, 4]), vec![5, 3, 4]);
    /// assert_eq!(Task::Reverse.target(&[5, 3, 4]), vec![4, 3, 5]);
    /// assert_eq!(Task::Sort.target(&[5, 3, 4, 3]), vec![3, 3, 4, 5]);
    /// ```
    pub fn target(self, src: &[usize]) -> Vec<usize> {
        let mut t = src.to_vec();
        match self {
            Task::Copy => {}
            Task::Reverse => t.reverse(),
            Task::Sort => t.sort_unstable(),
        }
        t
    }
}

/// A batch of `task`: `batch` random strings of length `min_len..=max_len`
/// over the symbols `FIRST_SYMBOL..vocab`, drawn from `rng` (the same seed
/// gives the same sources for every task).
///
/// ```
/// use transformer::synthetic::{task_batch, Task};
/// let b = task_batch(Task::Reverse, &mut transformer::rng(0), 4, 2, 5, 10);
/// let n = b.targets[0].len();
/// let mut src = b.src.row(0)[..n].to_vec();
/// src.reverse();
/// assert_eq!(b.targets[0], src);
/// ```
pub fn task_batch(
    task: Task,
    rng: &mut Rng,
    batch: usize,
    min_len: usize,
    max_len: usize,
    vocab: usize,
) -> Seq2SeqBatch {
    assert!(
        vocab > FIRST_SYMBOL && min_len <= max_len,
        "task_batch: vocab {vocab} has no symbols or lengths {min_len}..={max_len} are empty"
    );
    let pairs: Vec<(Vec<usize>, Vec<usize>)> = (0..batch)
        .map(|_| {
            let n = rng.random_range(min_len..=max_len);
            let s: Vec<usize> = (0..n)
                .map(|_| rng.random_range(FIRST_SYMBOL..vocab))
                .collect();
            let t = task.target(&s);
            (s, t)
        })
        .collect();
    Seq2SeqBatch::from_pairs(&pairs)
}

/// The copy task ([`task_batch`] with [`Task::Copy`]).
///
/// ```
/// let b = transformer::synthetic::copy_batch(&mut transformer::rng(0), 4, 2, 5, 10);
/// assert_eq!(b.src.batch, 4);
/// assert_eq!(b.targets[0], b.src.row(0)[..b.targets[0].len()].to_vec());
/// ```
pub fn copy_batch(
    rng: &mut Rng,
    batch: usize,
    min_len: usize,
    max_len: usize,
    vocab: usize,
) -> Seq2SeqBatch {
    task_batch(Task::Copy, rng, batch, min_len, max_len, vocab)
}

/// Training steps of the copy demo.
pub const COPY_STEPS: u64 = 600;

/// Vocabulary of the copy demo: pad, start, end and 10 symbols.
pub const COPY_VOCAB: usize = 13;

/// The model and training recipe of the copy demo (`examples/copy_task.rs`;
/// `tests/copy_task.rs` trains the smaller [`copy_trial_config`] model on
/// three seeds instead): a 2 + 2 layer model of width 64, and a
/// short linear warmup (100 steps) to a peak of 3e-3, then a cosine decay
/// to 1e-4 at [`COPY_STEPS`], with clipping at 1.
pub fn copy_task_configs() -> (crate::ModelConfig, crate::TrainConfig) {
    let model = crate::ModelConfig {
        d_model: 64,
        heads: 4,
        d_ff: 128,
        encoder_layers: 2,
        decoder_layers: 2,
        max_len: 64,
        ..crate::ModelConfig::base(COPY_VOCAB, COPY_VOCAB)
    };
    let train = crate::TrainConfig {
        optimizer: crate::optim::AdamConfig::paper(),
        schedule: crate::schedule::Schedule::Cosine {
            peak_lr: 3e-3,
            warmup: 100,
            total_steps: COPY_STEPS,
            final_lr: 1e-4,
        },
        smoothing: 0.1,
        clip_norm: Some(1.0),
    };
    (model, train)
}

/// Greedy-decodes the batch's sources and returns the decoded sequences
/// and the fraction that equal their targets exactly.
pub fn exact_match(model: &crate::Transformer<f32>, b: &Seq2SeqBatch) -> (Vec<Vec<usize>>, f64) {
    let out: Vec<Vec<usize>> = model
        .greedy_decode(&b.src, BOS, EOS)
        .into_iter()
        .map(|h| h.tokens)
        .collect();
    let correct = out.iter().zip(&b.targets).filter(|(h, t)| h == t).count();
    let rate = correct as f64 / b.targets.len().max(1) as f64;
    (out, rate)
}

/// What [`copy_trial`] measured.
#[derive(Clone, Debug)]
pub struct CopyTrial {
    /// Smoothed training loss of the first step.
    pub first_loss: f32,
    /// Smoothed training loss of the last step.
    pub last_loss: f32,
    /// Held-out NLL, perplexity and token accuracy (teacher-forced).
    pub eval: EvalStats,
    /// Fraction of held-out strings greedy decoding copies exactly.
    pub exact_match: f64,
    /// Whether the run resumed from the mid-point checkpoint ended with
    /// exactly (bit for bit) the tensors, optimiser state and losses of the
    /// uninterrupted run.
    pub resumed_identical: bool,
    /// The number of trainable parameters.
    pub params: usize,
}

impl std::fmt::Display for CopyTrial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} parameters; training loss (smoothed) {:.3} -> {:.3}; held out: NLL {:.3}, \
             perplexity {:.2}, token accuracy {:.1}%, exact match {:.1}%; resumed run {}",
            self.params,
            self.first_loss,
            self.last_loss,
            self.eval.nll(),
            self.eval.perplexity(),
            100.0 * self.eval.accuracy(),
            100.0 * self.exact_match,
            if self.resumed_identical {
                "bit-identical to the uninterrupted one"
            } else {
                "DIFFERS from the uninterrupted one"
            }
        )
    }
}

/// Training steps of a [`copy_trial`] (the schedule of
/// [`copy_trial_config`] decays over them).
pub const TRIAL_STEPS: u64 = 500;

/// The model and recipe of [`copy_trial`]s: width 32, 2 heads, 1 + 1
/// layers, a short warmup to 5e-3 and a cosine decay over [`TRIAL_STEPS`]
/// steps. Trains in a few seconds (the paper's blocks copy 98.5% of
/// held-out strings exactly after it); name a user's block in the
/// returned config.
pub fn copy_trial_config() -> (ModelConfig, TrainConfig) {
    let model = ModelConfig {
        d_model: 32,
        heads: 2,
        d_ff: 64,
        encoder_layers: 1,
        decoder_layers: 1,
        max_len: 32,
        ..ModelConfig::base(COPY_VOCAB, COPY_VOCAB)
    };
    let train = TrainConfig {
        schedule: crate::schedule::Schedule::Cosine {
            peak_lr: 5e-3,
            warmup: 30,
            total_steps: TRIAL_STEPS,
            final_lr: 1e-4,
        },
        clip_norm: Some(1.0),
        ..TrainConfig::paper(32)
    };
    (model, train)
}

/// [`copy_trial`] of the standard recipe ([`copy_trial_config`],
/// [`TRIAL_STEPS`] steps), the model config changed by `tweak` (to name a
/// user's block).
///
/// ```no_run
/// use transformer::{ModelConfig, Registry};
/// use transformer::synthetic::copy_trial_with;
/// let t = copy_trial_with(&Registry::builtin(), |c| ModelConfig { feed_forward: "gelu".into(), ..c })?;
/// assert!(t.resumed_identical);
/// # Ok::<(), String>(())
/// ```
pub fn copy_trial_with(
    registry: &Registry<f32>,
    tweak: impl FnOnce(ModelConfig) -> ModelConfig,
) -> Result<CopyTrial, String> {
    let (model, train) = copy_trial_config();
    copy_trial(registry, tweak(model), train, TRIAL_STEPS)
}

/// Trains a model whose blocks come from `registry` on the copy task for
/// `steps` steps (batches of 32 strings of 2 to 8 symbols), saving a
/// checkpoint half-way (in a fresh directory under the system's temporary
/// directory, removed afterwards); resumes a second trainer from that
/// checkpoint through the same registry, finishes the run again and
/// compares it bit for bit with the uninterrupted one; then evaluates and
/// greedy-decodes 200 held-out strings. The examples use it to show that a
/// user's block works through the whole stack (model, trainer,
/// checkpoints, decoding).
///
/// ```no_run
/// use transformer::Registry;
/// use transformer::synthetic::{copy_trial, copy_trial_config};
/// let (model, train) = copy_trial_config();
/// let t = copy_trial(&Registry::builtin(), model, train, 500)?;
/// println!("loss {} -> {}, exact match {}", t.first_loss, t.last_loss, t.exact_match);
/// # Ok::<(), String>(())
/// ```
pub fn copy_trial(
    registry: &Registry<f32>,
    model: ModelConfig,
    train: TrainConfig,
    steps: u64,
) -> Result<CopyTrial, String> {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "copy-trial-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let out = copy_trial_in(registry, model, train, steps, &dir);
    fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    out
}

fn copy_trial_in(
    registry: &Registry<f32>,
    model: ModelConfig,
    train: TrainConfig,
    steps: u64,
    dir: &Path,
) -> Result<CopyTrial, String> {
    let mut data = crate::rng(1);
    let batches: Vec<Seq2SeqBatch> = (0..steps)
        .map(|_| copy_batch(&mut data, 32, 2, 8, COPY_VOCAB))
        .collect();
    let half = batches.len() / 2;
    let path = dir.join("copy_trial.ckpt");
    let mut run = Trainer::with_registry(model, train, 42, registry)?;
    let mut losses = Vec::new();
    for (i, b) in batches.iter().enumerate() {
        if i == half {
            run.save(&path).map_err(|e| e.to_string())?;
        }
        losses.push(run.step(&b.src, &b.tgt_in, &b.labels).loss.to_bits());
    }
    let mut resumed = Trainer::resume_with(&path, registry).map_err(|e| e.to_string())?;
    let resumed_losses: Vec<u32> = batches[half..]
        .iter()
        .map(|b| resumed.step(&b.src, &b.tgt_in, &b.labels).loss.to_bits())
        .collect();
    let bits = |t: &mut Trainer| -> Vec<(String, Vec<u32>)> {
        named_tensors(&mut t.model)
            .into_iter()
            .map(|(n, v)| (n, v.data().iter().map(|x| x.to_bits()).collect()))
            .collect()
    };
    let resumed_identical = resumed_losses == losses[half..]
        && bits(&mut resumed) == bits(&mut run)
        && resumed.opt == run.opt;
    let test = copy_batch(&mut crate::rng(999), 200, 2, 8, COPY_VOCAB);
    let eval = run.evaluate(&test.src, &test.tgt_in, &test.labels);
    let (_, exact_match) = exact_match(&run.model, &test);
    Ok(CopyTrial {
        first_loss: losses.first().map_or(f32::NAN, |&b| f32::from_bits(b)),
        last_loss: losses.last().map_or(f32::NAN, |&b| f32::from_bits(b)),
        eval,
        exact_match,
        resumed_identical,
        params: crate::param_count(&mut run.model),
    })
}
