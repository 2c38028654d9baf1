//! Synthetic sequence tasks for demos and tests (the real corpora live in
//! the experiments crate). Token ids: 0 padding, 1 start, 2 end, 3.. symbols.

use rand::RngExt;

use crate::{Rng, TokenBatch};

pub const PAD: usize = 0;
pub const BOS: usize = 1;
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

/// The copy task: random symbol strings of length `min_len..=max_len` over
/// `vocab - FIRST_SYMBOL` symbols; the target is the source.
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
    assert!(
        vocab > FIRST_SYMBOL && min_len <= max_len,
        "copy_batch: bad vocab or lengths"
    );
    let pairs: Vec<(Vec<usize>, Vec<usize>)> = (0..batch)
        .map(|_| {
            let n = rng.random_range(min_len..=max_len);
            let s: Vec<usize> = (0..n)
                .map(|_| rng.random_range(FIRST_SYMBOL..vocab))
                .collect();
            (s.clone(), s)
        })
        .collect();
    Seq2SeqBatch::from_pairs(&pairs)
}

/// Training steps of the copy demo.
pub const COPY_STEPS: u64 = 600;

/// Vocabulary of the copy demo: pad, start, end and 10 symbols.
pub const COPY_VOCAB: usize = 13;

/// The model and training recipe of the copy demo (`examples/copy_task.rs`)
/// and of the test that it learns: a 2 + 2 layer model of width 64, and a
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
