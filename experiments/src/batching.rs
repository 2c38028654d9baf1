//! Token-budget batching: examples bucketed by length so that a batch
//! holds sequences of similar lengths (little padding), cut so that each
//! batch's padded size stays within a budget of tokens (`--batch-tokens
//! 2048`), the batch order shuffled by seed and epoch, and every batch
//! padded with its masks. Sequences longer than the model allows are
//! dropped or truncated first, by [`fit_lengths`], which counts them.
//!
//! An [`Example`] holds token ids without BOS/EOS; the model sees
//! `src + [EOS]` on the encoder side, `[BOS] + tgt` as decoder input and
//! `tgt + [EOS]` as labels, so both sides cost their length plus one.
//!
//! ```
//! use experiments::batching::{Example, SpecialIds, epoch_batches, make_batch};
//! let examples: Vec<Example> = (1..=6)
//!     .map(|n| Example { src: vec![7; n], tgt: vec![8; n] })
//!     .collect();
//! let ids = SpecialIds { pad: 0, bos: 1, eos: 2 };
//! let batches = epoch_batches(&examples, 16, 0, 0);
//! let mut seen: Vec<usize> = batches.concat();
//! seen.sort();
//! assert_eq!(seen, vec![0, 1, 2, 3, 4, 5]); // each example once
//! for b in &batches {
//!     assert!(make_batch(&examples, b, ids).padded_tokens() <= 16 || b.len() == 1);
//! }
//! ```

use std::fmt;

use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use transformer::TokenBatch;

/// One training example as token ids, without BOS/EOS (a decoder-only
/// language-model example has an empty `src`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    /// Source ids (empty for a decoder-only model).
    pub src: Vec<usize>,
    /// Target ids.
    pub tgt: Vec<usize>,
}

impl Example {
    /// The encoder's length: `src.len() + 1` (EOS), or 0 for an empty
    /// source (a decoder-only model has no encoder input at all).
    pub fn src_len(&self) -> usize {
        if self.src.is_empty() {
            0
        } else {
            self.src.len() + 1
        }
    }

    /// The decoder's length: `tgt.len() + 1` (BOS in front of the input,
    /// EOS after the labels).
    pub fn tgt_len(&self) -> usize {
        self.tgt.len() + 1
    }

    /// `max(src_len, tgt_len)`: the padded width this example needs, which
    /// the token budget counts once per row.
    pub fn width(&self) -> usize {
        self.src_len().max(self.tgt_len())
    }
}

/// What to do with an example longer than the model allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LongPolicy {
    /// Leave the example out.
    Drop,
    /// Cut its ids (each side separately) so that they fit. For a
    /// translation pair the two halves may no longer match; for a
    /// language-model chunk this only loses its end.
    Truncate,
}

/// What [`fit_lengths`] did: printed by the experiments, e.g. "kept 15,400
/// of 15,594 pairs; dropped 194 longer than 128 tokens".
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct LengthReport {
    /// Examples kept (truncated ones included).
    pub kept: usize,
    /// Examples dropped.
    pub dropped: usize,
    /// Kept examples that were truncated.
    pub truncated: usize,
    /// The model's maximum length the examples were fitted to.
    pub max_len: usize,
}

/// `15594` as `15,594`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl fmt::Display for LengthReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (total, max) = (self.kept + self.dropped, self.max_len);
        write!(
            f,
            "kept {} of {} pairs",
            thousands(self.kept),
            thousands(total)
        )?;
        if self.dropped > 0 {
            write!(
                f,
                "; dropped {} longer than {max} tokens",
                thousands(self.dropped)
            )?;
        }
        if self.truncated > 0 {
            write!(
                f,
                "; truncated {} to {max} tokens",
                thousands(self.truncated)
            )?;
        }
        if self.dropped == 0 && self.truncated == 0 {
            write!(f, "; none longer than {max} tokens")?;
        }
        Ok(())
    }
}

/// Fits the examples to a model of maximum length `max_len`: both
/// `src + [EOS]` and `[BOS] + tgt` (and so `tgt + [EOS]`) must have at most
/// `max_len` tokens. Longer examples are dropped or, with
/// [`LongPolicy::Truncate`], cut to `max_len - 1` ids a side. An example
/// with an empty `tgt` is kept (it teaches the model to stop: its labels
/// are `[EOS]`). The order of the kept examples is unchanged.
/// Panics if `max_len` is 0 (no room even for EOS).
///
/// ```
/// use experiments::batching::{Example, LongPolicy, fit_lengths};
/// let ex = |n: usize| Example { src: vec![5; n], tgt: vec![6; n] };
/// let (kept, report) = fit_lengths(vec![ex(3), ex(4), ex(9)], 4, LongPolicy::Drop);
/// assert_eq!(kept, vec![ex(3)]);
/// assert_eq!(report.to_string(), "kept 1 of 3 pairs; dropped 2 longer than 4 tokens");
/// ```
pub fn fit_lengths(
    examples: Vec<Example>,
    max_len: usize,
    policy: LongPolicy,
) -> (Vec<Example>, LengthReport) {
    assert!(
        max_len > 0,
        "fit_lengths: max_len 0 leaves no room for BOS/EOS"
    );
    let mut report = LengthReport {
        max_len,
        ..LengthReport::default()
    };
    let mut kept = Vec::with_capacity(examples.len());
    for mut ex in examples {
        if ex.src_len() <= max_len && ex.tgt_len() <= max_len {
            kept.push(ex);
            continue;
        }
        match policy {
            LongPolicy::Drop => report.dropped += 1,
            LongPolicy::Truncate => {
                ex.src.truncate(max_len - 1);
                ex.tgt.truncate(max_len - 1);
                report.truncated += 1;
                kept.push(ex);
            }
        }
    }
    report.kept = kept.len();
    (kept, report)
}

/// The ids [`make_batch`] adds around the examples.
#[derive(Clone, Copy, Debug)]
pub struct SpecialIds {
    /// Padding (the model's `pad_id`: ignored by attention and the loss).
    pub pad: usize,
    /// Beginning of sequence, in front of the decoder input.
    pub bos: usize,
    /// End of sequence, after the source and the labels.
    pub eos: usize,
}

/// A padded batch: the model's inputs, labels and masks.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// `src + [EOS]` padded, (B, S); (B, 0) when every source is empty
    /// (decoder-only).
    pub src: TokenBatch,
    /// `[BOS] + tgt` padded, (B, T).
    pub tgt_in: TokenBatch,
    /// `tgt + [EOS]`, pad elsewhere, (B * T).
    pub labels: Vec<usize>,
    /// Which examples, row by row.
    pub indices: Vec<usize>,
    /// Real (non-pad) length of each source row, EOS included, (B).
    pub src_lens: Vec<usize>,
    /// Real length of each decoder row, BOS (input) or EOS (labels)
    /// included, (B).
    pub tgt_lens: Vec<usize>,
    /// Real source tokens (the sum of `src_lens`).
    pub src_tokens: usize,
    /// Real label tokens (the sum of `tgt_lens`): what the loss averages
    /// over.
    pub tgt_tokens: usize,
}

/// (B * len) mask: true at the first `lens[b]` positions of row b.
fn mask(lens: &[usize], len: usize) -> Vec<bool> {
    lens.iter()
        .flat_map(|&l| (0..len).map(move |t| t < l))
        .collect()
}

impl Batch {
    /// B.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// Whether the batch has no rows (never, from [`make_batch`]).
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// `B * max(S, T)`: the size the token budget bounds.
    pub fn padded_tokens(&self) -> usize {
        self.len() * self.src.len.max(self.tgt_in.len)
    }

    /// (B * S): true where the source is real, false at padding.
    pub fn src_mask(&self) -> Vec<bool> {
        mask(&self.src_lens, self.src.len)
    }

    /// (B * T): true where the decoder input (and so the label) is real.
    pub fn tgt_mask(&self) -> Vec<bool> {
        mask(&self.tgt_lens, self.tgt_in.len)
    }
}

/// The batch of `examples[i]` for each `i` in `indices`, padded with
/// `ids.pad`. Panics if `indices` is empty or names an example that does
/// not exist.
///
/// ```
/// use experiments::batching::{Example, SpecialIds, make_batch};
/// let examples = [Example { src: vec![10, 11], tgt: vec![20] },
///                 Example { src: vec![12], tgt: vec![21, 22] }];
/// let b = make_batch(&examples, &[0, 1], SpecialIds { pad: 0, bos: 1, eos: 2 });
/// assert_eq!(b.src.ids, vec![10, 11, 2, 12, 2, 0]);    // (2, 3)
/// assert_eq!(b.tgt_in.ids, vec![1, 20, 0, 1, 21, 22]); // (2, 3)
/// assert_eq!(b.labels, vec![20, 2, 0, 21, 22, 2]);
/// assert_eq!(b.src_mask(), vec![true, true, true, true, true, false]);
/// ```
pub fn make_batch(examples: &[Example], indices: &[usize], ids: SpecialIds) -> Batch {
    assert!(!indices.is_empty(), "make_batch: no indices");
    if let Some(&i) = indices.iter().find(|&&i| i >= examples.len()) {
        panic!(
            "make_batch: index {i} out of range for {} examples",
            examples.len()
        );
    }
    let rows: Vec<&Example> = indices.iter().map(|&i| &examples[i]).collect();
    let decoder_only = rows.iter().all(|e| e.src.is_empty());
    // A decoder-only batch has no encoder input at all; an empty source
    // next to non-empty ones is still `[EOS]` (the encoder needs a key to
    // attend to).
    let src_lens: Vec<usize> = rows
        .iter()
        .map(|e| if decoder_only { 0 } else { e.src.len() + 1 })
        .collect();
    let src = if decoder_only {
        TokenBatch::new(Vec::new(), rows.len(), 0) // (B, 0)
    } else {
        let srcs: Vec<Vec<usize>> = rows
            .iter()
            .map(|e| e.src.iter().copied().chain([ids.eos]).collect())
            .collect();
        TokenBatch::padded(&srcs, ids.pad) // (B, S)
    };
    let tgt_in: Vec<Vec<usize>> = rows
        .iter()
        .map(|e| [ids.bos].into_iter().chain(e.tgt.iter().copied()).collect())
        .collect();
    let tgt_in = TokenBatch::padded(&tgt_in, ids.pad); // (B, T)
    let labels: Vec<Vec<usize>> = rows
        .iter()
        .map(|e| e.tgt.iter().copied().chain([ids.eos]).collect())
        .collect();
    let labels = TokenBatch::padded(&labels, ids.pad).ids; // (B * T)
    let tgt_lens: Vec<usize> = rows.iter().map(|e| e.tgt_len()).collect();
    Batch {
        src,
        tgt_in,
        labels,
        indices: indices.to_vec(),
        src_tokens: src_lens.iter().sum(),
        tgt_tokens: tgt_lens.iter().sum(),
        src_lens,
        tgt_lens,
    }
}

/// The padded width `max(S, T)` an example of raw lengths (src ids, tgt
/// ids) needs, as in [`Example::width`].
fn width((s, t): (usize, usize)) -> usize {
    let s = if s == 0 { 0 } else { s + 1 };
    s.max(t + 1)
}

/// How many examples alone exceed a budget of `batch_tokens`: each of them
/// forms a batch of one, over the budget (worth printing next to the
/// [`LengthReport`]).
pub fn over_budget(examples: &[Example], batch_tokens: usize) -> usize {
    examples.iter().filter(|e| e.width() > batch_tokens).count()
}

/// An example's raw lengths (src ids, tgt ids): all bucketing looks at.
fn lengths(examples: &[Example]) -> Vec<(usize, usize)> {
    examples
        .iter()
        .map(|e| (e.src.len(), e.tgt.len()))
        .collect()
}

/// Bucketing over raw lengths: sort by (tgt length, src length), ties in
/// the order given (a stable sort), then cut greedily into batches whose
/// padded size `B * max(S, T)` stays within `batch_tokens`. An example over
/// the budget on its own forms a batch alone (never dropped: dropping is
/// [`fit_lengths`]' job, and it is counted there).
fn bucket(
    function: &str,
    lens: &[(usize, usize)],
    mut order: Vec<usize>,
    batch_tokens: usize,
) -> Vec<Vec<usize>> {
    assert!(
        batch_tokens > 0,
        "{function}: batch_tokens must be positive"
    );
    order.sort_by_key(|&i| (lens[i].1, lens[i].0));
    let mut batches = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut widest = 0; // max(S, T) of `current`
    for i in order {
        let w = width(lens[i]);
        let grown = widest.max(w);
        if !current.is_empty() && (current.len() + 1) * grown > batch_tokens {
            batches.push(std::mem::take(&mut current));
            widest = w;
        } else {
            widest = grown;
        }
        current.push(i);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// The generator of one epoch: the same for the same (seed, epoch), and
/// different epochs give different streams (a fixed mixing with the
/// golden-ratio constant, so that nearby (seed, epoch) pairs do not
/// collide).
fn epoch_rng(seed: u64, epoch: u64) -> transformer::Rng {
    transformer::rng(seed ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// [`epoch_batches`] over raw lengths.
fn shuffled(
    function: &str,
    lens: &[(usize, usize)],
    batch_tokens: usize,
    seed: u64,
    epoch: u64,
) -> Vec<Vec<usize>> {
    let mut rng = epoch_rng(seed, epoch);
    let mut order: Vec<usize> = (0..lens.len()).collect();
    // Shuffling before the stable sort makes the tie-break random: equal
    // lengths land in different batches from epoch to epoch.
    order.shuffle(&mut rng);
    let mut batches = bucket(function, lens, order, batch_tokens);
    batches.shuffle(&mut rng);
    batches
}

/// The batches of one epoch, as lists of example indices. Bucketing: the
/// examples are sorted by (tgt length, src length) with a seeded random
/// tie-break, cut greedily into batches whose padded size
/// `B * max(S, T)` is at most `batch_tokens` (an example over the budget
/// forms a batch alone, never dropped), and the batch order is shuffled.
/// Seeded by (seed, epoch): the same arguments give the same batches,
/// different epochs different orders. Every example appears exactly once.
/// The number of batches depends only on the lengths, so it is the same
/// in every epoch. Panics if `batch_tokens` is 0.
pub fn epoch_batches(
    examples: &[Example],
    batch_tokens: usize,
    seed: u64,
    epoch: u64,
) -> Vec<Vec<usize>> {
    shuffled(
        "epoch_batches",
        &lengths(examples),
        batch_tokens,
        seed,
        epoch,
    )
}

/// Evaluation batches: the same bucketing as [`epoch_batches`] without any
/// shuffling (ties by index, batches from short to long), so validation
/// and test runs see the same batches every time. Panics if
/// `batch_tokens` is 0.
pub fn eval_batches(examples: &[Example], batch_tokens: usize) -> Vec<Vec<usize>> {
    bucket(
        "eval_batches",
        &lengths(examples),
        (0..examples.len()).collect(),
        batch_tokens,
    )
}

/// Where a [`BatchStream`] is: the next batch it yields is batch `batch` of
/// epoch `epoch`. Saved with a checkpoint, so that a resumed run continues
/// with exactly the next batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPosition {
    /// The epoch, from 0.
    pub epoch: u64,
    /// The batch within the epoch, from 0.
    pub batch: usize,
}

/// The training batches of epoch after epoch ([`epoch_batches`] of epochs
/// 0, 1, 2, ...), an endless iterator of `(epoch, indices)` that can be
/// positioned with [`BatchStream::seek`].
///
/// ```
/// use experiments::batching::{BatchStream, Example};
/// let examples: Vec<Example> = (0..20)
///     .map(|n| Example { src: vec![], tgt: vec![3; n] })
///     .collect();
/// let mut stream = BatchStream::new(&examples, 32, 7);
/// stream.by_ref().take(5).for_each(drop); // a first run stops here
/// let at = stream.position(); // saved with its checkpoint
/// let next: Vec<_> = stream.by_ref().take(5).collect();
/// let mut resumed = BatchStream::new(&examples, 32, 7);
/// resumed.seek(at);
/// assert_eq!(resumed.take(5).collect::<Vec<_>>(), next);
/// ```
#[derive(Clone, Debug)]
pub struct BatchStream {
    /// The examples' raw lengths: all that batching looks at.
    lens: Vec<(usize, usize)>,
    batch_tokens: usize,
    seed: u64,
    position: StreamPosition,
    /// The batches of `position.epoch`.
    batches: Vec<Vec<usize>>,
}

impl BatchStream {
    /// A stream at the start of epoch 0. Panics if there are no examples
    /// (the stream would never yield) or `batch_tokens` is 0.
    pub fn new(examples: &[Example], batch_tokens: usize, seed: u64) -> Self {
        assert!(!examples.is_empty(), "BatchStream::new: no examples");
        let lens = lengths(examples);
        let batches = shuffled("BatchStream::new", &lens, batch_tokens, seed, 0);
        BatchStream {
            lens,
            batch_tokens,
            seed,
            position: StreamPosition::default(),
            batches,
        }
    }

    /// Batches per epoch (the same in every epoch).
    pub fn epoch_len(&self) -> usize {
        self.batches.len()
    }

    /// Where the stream is: the position of the batch `next` yields.
    pub fn position(&self) -> StreamPosition {
        self.position
    }

    /// Moves to `pos` (from [`BatchStream::position`], perhaps of an
    /// earlier run with the same examples, budget and seed). Panics if
    /// `pos.batch` is past the end of the epoch.
    pub fn seek(&mut self, pos: StreamPosition) {
        // Every epoch has the same number of batches, so the check needs no
        // recomputation.
        assert!(
            pos.batch <= self.batches.len(),
            "BatchStream::seek: batch {} of an epoch of {} batches",
            pos.batch,
            self.batches.len()
        );
        if pos.epoch != self.position.epoch {
            self.batches = shuffled(
                "BatchStream::seek",
                &self.lens,
                self.batch_tokens,
                self.seed,
                pos.epoch,
            );
        }
        self.position = pos;
    }
}

impl Iterator for BatchStream {
    type Item = (u64, Vec<usize>);

    /// The next batch and its epoch; never `None`.
    fn next(&mut self) -> Option<Self::Item> {
        if self.position.batch == self.batches.len() {
            self.seek(StreamPosition {
                epoch: self.position.epoch + 1,
                batch: 0,
            });
        }
        let batch = self.batches[self.position.batch].clone();
        self.position.batch += 1;
        Some((self.position.epoch, batch))
    }
}
