//! Decoding without a tape: greedy and beam search (the paper, section 6.1:
//! beam size 4, length penalty alpha = 0.6, maximum output length = input
//! length + 50, stopping early at end-of-sequence).
//!
//! Both searches are written against a *step function* (prefixes in,
//! next-token log-probabilities out), so they can be tested on hand-made
//! distributions; [`Transformer::greedy_decode`] and
//! [`Transformer::beam_search`] plug the model in.

use std::collections::HashMap;

use autograd::{Tape, Tensor};

use crate::{Ctx, Encoded, TokenBatch, Transformer};

mod cache;
mod incremental;

pub use cache::KvCache;
pub use incremental::DecodeState;

/// One decoded sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct Hypothesis {
    /// Output tokens, without the start token and without the end token.
    pub tokens: Vec<usize>,
    /// Sum of the log-probabilities of the chosen tokens (the end token included).
    pub log_prob: f64,
    /// `log_prob / lp(len)`, what beam search ranks by (equal to
    /// `log_prob` for greedy).
    pub score: f64,
    /// Whether the end token was produced (false: cut at the maximum length).
    pub finished: bool,
}

/// The step function: for rows `(source index, prefix)` (all prefixes of one
/// length, each starting with the start token) return, per row, the
/// log-probabilities of the next token over the vocabulary.
pub type StepFn<'a> = dyn FnMut(&[usize], &[Vec<usize>]) -> Vec<Vec<f32>> + 'a;

/// GNMT's length penalty (Wu et al. 2016), used by the paper:
/// `lp(n) = ((5 + n) / 6)^alpha`.
pub fn length_penalty(len: usize, alpha: f64) -> f64 {
    ((5.0 + len as f64) / 6.0).powf(alpha)
}

/// The empty output (zero log-probability).
fn empty_hypothesis(finished: bool) -> Hypothesis {
    Hypothesis {
        tokens: Vec::new(),
        log_prob: 0.0,
        score: 0.0,
        finished,
    }
}

/// Index of the largest entry (the first one on ties).
pub(crate) fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Greedy search for `n` sources: `max_len[b]` bounds the output length of
/// source `b` (end token excluded).
pub fn greedy(step: &mut StepFn<'_>, max_len: &[usize], bos: usize, eos: usize) -> Vec<Hypothesis> {
    let n = max_len.len();
    let mut prefixes: Vec<Vec<usize>> = vec![vec![bos]; n];
    // A source allowed no output at all is done before the first step.
    let mut out: Vec<Option<Hypothesis>> = max_len
        .iter()
        .map(|&m| (m == 0).then(|| empty_hypothesis(false)))
        .collect();
    let mut logp = vec![0.0f64; n];
    loop {
        let live: Vec<usize> = (0..n).filter(|&b| out[b].is_none()).collect();
        if live.is_empty() {
            break;
        }
        let rows: Vec<Vec<usize>> = live.iter().map(|&b| prefixes[b].clone()).collect();
        let lp = step(&live, &rows);
        for (r, &b) in live.iter().enumerate() {
            let t = argmax(&lp[r]);
            logp[b] += lp[r][t] as f64;
            let done = t == eos;
            if !done {
                prefixes[b].push(t);
            }
            if done || prefixes[b].len() > max_len[b] {
                out[b] = Some(Hypothesis {
                    tokens: prefixes[b][1..].to_vec(),
                    log_prob: logp[b],
                    score: logp[b],
                    finished: done,
                });
            }
        }
    }
    out.into_iter()
        .map(|h| h.expect("every source finished"))
        .collect()
}

/// Beam search with beam size `k` and length penalty `alpha`. Each step
/// scans the candidates of a source best-first: a candidate ending in `eos`
/// becomes a finished hypothesis (scored `log_prob / lp(len)`, `len`
/// counting the end token), others stay live until `k` live beams are
/// kept. A source stops once it has `k` finished hypotheses, or at its
/// maximum length (live beams are then finished as they are). With `k = 1`
/// this is exactly greedy search.
pub fn beam(
    step: &mut StepFn<'_>,
    max_len: &[usize],
    bos: usize,
    eos: usize,
    k: usize,
    alpha: f64,
) -> Vec<Hypothesis> {
    assert!(k > 0, "beam: beam size must be at least 1");
    // A NaN alpha would silently make every score NaN (issue 10).
    assert!(
        alpha.is_finite(),
        "beam: length-penalty alpha = {alpha} must be finite (the paper uses 0.6)"
    );
    let n = max_len.len();
    // Live beams per source: (prefix, log_prob).
    // A source allowed no output at all starts (and ends) with the empty one.
    let mut live: Vec<Vec<(Vec<usize>, f64)>> = max_len
        .iter()
        .map(|&m| {
            if m == 0 {
                Vec::new()
            } else {
                vec![(vec![bos], 0.0)]
            }
        })
        .collect();
    let mut finished: Vec<Vec<Hypothesis>> = max_len
        .iter()
        .map(|&m| {
            if m == 0 {
                vec![empty_hypothesis(false)]
            } else {
                Vec::new()
            }
        })
        .collect();
    let finish = |prefix: &[usize], log_prob: f64, done: bool| {
        let len = prefix.len() - 1 + usize::from(done);
        Hypothesis {
            tokens: prefix[1..].to_vec(),
            log_prob,
            score: log_prob / length_penalty(len, alpha),
            finished: done,
        }
    };
    loop {
        let mut src = Vec::new();
        let mut rows = Vec::new();
        for (b, beams) in live.iter().enumerate() {
            for (p, _) in beams {
                src.push(b);
                rows.push(p.clone());
            }
        }
        if rows.is_empty() {
            break;
        }
        let lp = step(&src, &rows);
        let mut r0 = 0;
        for b in 0..n {
            let beams = std::mem::take(&mut live[b]);
            if beams.is_empty() {
                continue;
            }
            // Candidates (score, beam, token), best first; ties go to the
            // lower beam, then the lower token (as greedy's argmax).
            let mut cand: Vec<Cand> = Vec::with_capacity(beams.len() * lp[r0].len());
            for (i, (_, s)) in beams.iter().enumerate() {
                for (t, &l) in lp[r0 + i].iter().enumerate() {
                    cand.push((s + l as f64, i, t));
                }
            }
            r0 += beams.len();
            let order =
                |a: &Cand, b: &Cand| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2));
            // Each candidate taken below adds a live beam or a finished
            // hypothesis, and the scan stops at k of either: at most 2k - 1
            // are taken. So only the best 2k need sorting, not all k V
            // (a total order, so the same 2k whatever the algorithm).
            if cand.len() > 2 * k {
                cand.select_nth_unstable_by(2 * k - 1, order);
                cand.truncate(2 * k);
            }
            cand.sort_by(order);
            let mut next = Vec::new();
            for (s, i, t) in cand {
                if next.len() == k || finished[b].len() >= k {
                    break;
                }
                let mut p = beams[i].0.clone();
                if t == eos {
                    finished[b].push(finish(&p, s, true));
                } else {
                    p.push(t);
                    next.push((p, s));
                }
            }
            if finished[b].len() >= k {
                continue;
            }
            if next.first().is_some_and(|(p, _)| p.len() > max_len[b]) {
                finished[b].extend(next.iter().map(|(p, s)| finish(p, *s, false)));
                continue;
            }
            live[b] = next;
        }
    }
    finished
        .into_iter()
        .map(|hs| {
            hs.into_iter()
                .reduce(|best, h| if h.score > best.score { h } else { best })
                .expect("every source has a hypothesis")
        })
        .collect()
}

/// A beam-search candidate: (score, beam, token).
type Cand = (f64, usize, usize);

/// Rows of `t` (axis 0) picked by `idx`.
fn gather_rows(t: &Tensor<f32>, idx: &[usize]) -> Tensor<f32> {
    let row = t.numel() / t.shape()[0].max(1);
    let mut data = Vec::with_capacity(idx.len() * row);
    for &i in idx {
        data.extend_from_slice(&t.data()[i * row..(i + 1) * row]);
    }
    let mut shape = t.shape().to_vec();
    shape[0] = idx.len();
    Tensor::from_vec(data, &shape)
}

/// Log-probabilities of each row of logits (R, V): the `log_softmax` op of
/// the uncached path, on a no-grad tape.
fn log_softmax_rows(logits: Tensor<f32>) -> Vec<Vec<f32>> {
    let v = logits.shape()[1];
    let tape = Tape::no_grad();
    let lp = tape.constant(logits).log_softmax().value();
    lp.data().chunks(v).map(<[f32]>::to_vec).collect()
}

impl Transformer<f32> {
    /// The paper's maximum output length per source: its length without
    /// padding + 50, capped so that start token + output fit `max_len`.
    pub fn max_output_len(&self, src: &TokenBatch) -> Vec<usize> {
        let pad = self.config.pad_id;
        (0..src.batch)
            .map(|b| {
                let n = src.row(b).iter().filter(|&&t| Some(t) != pad).count();
                (n + 50).min(self.config.max_len - 1)
            })
            .collect()
    }

    /// Runs `search` (for instance [`greedy`] or [`beam`] with their
    /// arguments) with the model as its step function: over key/value
    /// caches if `cached` (and the model
    /// [`supports_kv_cache`](Transformer::supports_kv_cache)), else by
    /// re-running the decoder over every prefix (the uncached reference).
    /// What [`Transformer::greedy_decode`] and
    /// [`Transformer::beam_search`] use; the bench's W5 workload calls it
    /// with its own lengths.
    ///
    /// ```
    /// use transformer::{greedy, ModelConfig, TokenBatch, Transformer};
    /// let model = Transformer::<f32>::new(&ModelConfig::tiny(10, 10), 0).unwrap();
    /// let src = TokenBatch::padded(&[vec![3, 4, 5]], 0);
    /// // Exactly 6 tokens: an end id outside the vocabulary never stops it.
    /// let run = |cached| model.search_with(&src, cached, |step| greedy(step, &[6], 1, usize::MAX));
    /// let (fast, slow) = (run(true), run(false));
    /// assert_eq!(fast[0].tokens.len(), 6);
    /// assert_eq!(fast[0].tokens, slow[0].tokens);
    /// assert!((fast[0].log_prob - slow[0].log_prob).abs() < 1e-4);
    /// ```
    pub fn search_with<R>(
        &self,
        src: &TokenBatch,
        cached: bool,
        search: impl FnOnce(&mut StepFn<'_>) -> R,
    ) -> R {
        if cached && self.supports_kv_cache() {
            self.search_cached(src, search)
        } else {
            self.search_uncached(src, search)
        }
    }

    /// The uncached reference: encodes once, then runs `search` with a
    /// step function that re-runs the decoder on the whole prefixes, on a
    /// fresh no-grad tape per step (so memory stays bounded and nothing is
    /// recorded). O(T^2) decoder work per sentence.
    fn search_uncached<R>(&self, src: &TokenBatch, search: impl FnOnce(&mut StepFn<'_>) -> R) -> R {
        let (memory, src_mask) = {
            let tape = Tape::no_grad();
            let ctx = Ctx::eval(&tape);
            let enc = self.encode(&ctx, src);
            (enc.memory.value(), enc.src_mask)
        };
        let mut step = |rows_src: &[usize], prefixes: &[Vec<usize>]| -> Vec<Vec<f32>> {
            let tape = Tape::no_grad();
            let ctx = Ctx::eval(&tape);
            let enc = Encoded {
                memory: tape.constant(gather_rows(&memory, rows_src)),
                src_mask: src_mask.as_ref().map(|m| gather_rows(m, rows_src)),
            };
            let len = prefixes[0].len();
            let tgt = TokenBatch::new(prefixes.concat(), prefixes.len(), len);
            // Last position's log-probabilities: (R, 1, V).
            let lp = self
                .decode(&ctx, &enc, &tgt)
                .narrow(1, len - 1, 1)
                .log_softmax()
                .value();
            let v = lp.shape()[2];
            lp.data().chunks(v).map(<[f32]>::to_vec).collect()
        };
        search(&mut step)
    }

    /// Decoding over key/value caches (issue 11): each step feeds only
    /// the newest token of every row. The step function is told the rows
    /// as (source, prefix); each row extends a row of the previous step
    /// by one token, found by its prefix, and the caches are reordered to
    /// match (beam search reselecting hypotheses, greedy dropping
    /// finished sources).
    fn search_cached<R>(&self, src: &TokenBatch, search: impl FnOnce(&mut StepFn<'_>) -> R) -> R {
        // Room for 32 positions to start with; the caches grow (doubling)
        // if the search goes longer. Sized by max_len instead, a base model
        // (max_len 512) would reserve its whole length for every row.
        let start = self.start_decoding(src, self.config.max_len.min(32));
        let mut state = start.clone();
        // The previous step's rows: (source, prefix) -> row.
        let mut prev: HashMap<(usize, Vec<usize>), usize> = HashMap::new();
        let mut step = |rows_src: &[usize], prefixes: &[Vec<usize>]| -> Vec<Vec<f32>> {
            let len = prefixes[0].len();
            let idx: Vec<usize> = if len == 1 {
                state = start.clone();
                rows_src.to_vec()
            } else {
                assert_eq!(
                    state.position(),
                    len - 1,
                    "search: cached decoding needs prefixes one token longer per step"
                );
                rows_src
                    .iter()
                    .zip(prefixes)
                    .map(|(&b, p)| {
                        *prev.get(&(b, p[..len - 1].to_vec())).unwrap_or_else(|| {
                            panic!("search: row (source {b}, prefix {p:?}) extends no row of the previous step")
                        })
                    })
                    .collect()
            };
            state.reorder(&idx);
            let last: Vec<usize> = prefixes.iter().map(|p| p[len - 1]).collect();
            let logits = self.decode_step(&mut state, &last); // (R, V)
            prev = rows_src
                .iter()
                .zip(prefixes)
                .enumerate()
                .map(|(r, (&b, p))| ((b, p.clone()), r))
                .collect();
            log_softmax_rows(logits)
        };
        search(&mut step)
    }

    /// Greedy decoding of a batch of sources (eval mode, no tape), over
    /// key/value caches when the model supports them.
    pub fn greedy_decode(&self, src: &TokenBatch, bos: usize, eos: usize) -> Vec<Hypothesis> {
        self.greedy_with(src, bos, eos, true)
    }

    /// Beam search over a batch of sources (eval mode, no tape), over
    /// key/value caches when the model supports them.
    pub fn beam_search(
        &self,
        src: &TokenBatch,
        bos: usize,
        eos: usize,
        k: usize,
        alpha: f64,
    ) -> Vec<Hypothesis> {
        self.beam_with(src, (bos, eos), k, alpha, true)
    }

    /// [`Transformer::greedy_decode`] by the uncached path: the reference
    /// the cached one is tested against.
    pub fn greedy_decode_uncached(
        &self,
        src: &TokenBatch,
        bos: usize,
        eos: usize,
    ) -> Vec<Hypothesis> {
        self.greedy_with(src, bos, eos, false)
    }

    /// [`Transformer::beam_search`] by the uncached path: the reference.
    pub fn beam_search_uncached(
        &self,
        src: &TokenBatch,
        bos: usize,
        eos: usize,
        k: usize,
        alpha: f64,
    ) -> Vec<Hypothesis> {
        self.beam_with(src, (bos, eos), k, alpha, false)
    }

    /// Greedy search at the paper's maximum output lengths.
    fn greedy_with(
        &self,
        src: &TokenBatch,
        bos: usize,
        eos: usize,
        cached: bool,
    ) -> Vec<Hypothesis> {
        let max_len = self.max_output_len(src);
        self.search_with(src, cached, |step| greedy(step, &max_len, bos, eos))
    }

    /// Beam search at the paper's maximum output lengths.
    fn beam_with(
        &self,
        src: &TokenBatch,
        (bos, eos): (usize, usize),
        k: usize,
        alpha: f64,
        cached: bool,
    ) -> Vec<Hypothesis> {
        let max_len = self.max_output_len(src);
        self.search_with(src, cached, |step| beam(step, &max_len, bos, eos, k, alpha))
    }
}
