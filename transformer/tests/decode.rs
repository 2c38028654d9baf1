//! Decoding: greedy and beam search.
//!
//! - Beam search with k = 1 is greedy search (hand-made step functions over
//!   several sources and steps, and a small random Transformer).
//! - Beam search beats greedy on a constructed case, with the exact sequences.
//! - The length penalty `((5 + n) / 6)^alpha`, and how it ranks hypotheses.
//! - Decoding stops at the end token and at the maximum length (source
//!   length without padding + 50, capped by the model's `max_len - 1`).
//! - Batched decoding equals decoding each source alone.
//! - Beam search equals exhaustive search when the beam holds every prefix
//!   (small vocabularies and lengths).

use std::collections::HashMap;

use autograd::{Tape, Tensor};
use proptest::prelude::*;
use rand::RngExt;
use transformer::decode::StepFn;
mod common;
use transformer::{
    Ctx, Hypothesis, KvCache, ModelConfig, Placement, TokenBatch, Transformer, Tying, beam, greedy,
    length_penalty, rng,
};

const PAD: usize = 0;
const BOS: usize = 1;
const EOS: usize = 2;

// ---------------------------------------------------------------------------
// Hand-made step functions
// ---------------------------------------------------------------------------

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A fixed pseudo-random "model": the next-token log-probabilities of
/// `(source, prefix)` are a function of the seed, the source and the
/// prefix only. `sources[i]` is the real source of the step function's
/// source index `i` (to decode a subset of the sources on its own).
struct Table {
    seed: u64,
    vocab: usize,
    sources: Vec<usize>,
}

impl Table {
    fn log_probs(&self, src: usize, prefix: &[usize]) -> Vec<f32> {
        let mut h = splitmix(self.seed ^ (src as u64).wrapping_mul(0x1234_5678_9abc));
        for &t in prefix {
            h = splitmix(h ^ t as u64);
        }
        let logits: Vec<f64> = (0..self.vocab)
            .map(|j| {
                let u = splitmix(h ^ (j as u64) << 32) >> 11;
                // Uniform in [-2, 2], the end token a little favoured.
                (u as f64 / (1u64 << 53) as f64) * 4.0 - 2.0 + if j == EOS { 0.3 } else { 0.0 }
            })
            .collect();
        let lse = logits.iter().map(|x| x.exp()).sum::<f64>().ln();
        logits.iter().map(|x| (x - lse) as f32).collect()
    }

    fn step(&self, src: &[usize], rows: &[Vec<usize>]) -> Vec<Vec<f32>> {
        assert_eq!(src.len(), rows.len());
        let len = rows[0].len();
        rows.iter()
            .zip(src)
            .map(|(p, &s)| {
                assert_eq!(p[0], BOS, "prefixes start with the start token");
                assert_eq!(p.len(), len, "prefixes of one call have one length");
                assert!(
                    !p[1..].contains(&EOS),
                    "a prefix continues past the end token"
                );
                self.log_probs(self.sources[s], p)
            })
            .collect()
    }
}

fn run_greedy(t: &Table, max_len: &[usize]) -> Vec<Hypothesis> {
    greedy(
        &mut |s: &[usize], r: &[Vec<usize>]| t.step(s, r),
        max_len,
        BOS,
        EOS,
    )
}

fn run_beam(t: &Table, max_len: &[usize], k: usize, alpha: f64) -> Vec<Hypothesis> {
    beam(
        &mut |s: &[usize], r: &[Vec<usize>]| t.step(s, r),
        max_len,
        BOS,
        EOS,
        k,
        alpha,
    )
}

/// `(token, probability)` pairs.
type Dist = Vec<(usize, f64)>;

/// A step function from a table of prefixes to distributions over
/// `vocab` tokens (`(token, probability)` pairs; the rest of the mass is
/// spread evenly over the other tokens). Unlisted prefixes get `default`.
fn tree_step(
    vocab: usize,
    default: Dist,
    table: Vec<(Vec<usize>, Dist)>,
) -> impl FnMut(&[usize], &[Vec<usize>]) -> Vec<Vec<f32>> {
    let table: HashMap<Vec<usize>, Dist> = table.into_iter().collect();
    move |_src: &[usize], rows: &[Vec<usize>]| -> Vec<Vec<f32>> {
        rows.iter()
            .map(|p| {
                let listed = table.get(p).cloned().unwrap_or_else(|| default.clone());
                let mass: f64 = listed.iter().map(|(_, q)| q).sum();
                let rest = (1.0 - mass) / (vocab - listed.len()) as f64;
                assert!(rest > 0.0);
                (0..vocab)
                    .map(|j| {
                        let q = listed
                            .iter()
                            .find(|(t, _)| *t == j)
                            .map_or(rest, |(_, q)| *q);
                        q.ln() as f32
                    })
                    .collect()
            })
            .collect()
    }
}

/// Sum of the f32 log-probabilities as the searches add them (in f64).
fn lp(ps: &[f64]) -> f64 {
    ps.iter().map(|&p| p.ln() as f32 as f64).sum()
}

// ---------------------------------------------------------------------------
// Beam search with k = 1 is greedy search
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(common::pcfg(64))]

    #[test]
    fn beam_of_one_is_greedy_on_random_tables(
        seed in any::<u64>(),
        vocab in 3usize..8,
        max_len in proptest::collection::vec(1usize..10, 1..5),
        alpha in prop_oneof![Just(0.0), Just(0.6), Just(1.0)],
    ) {
        let t = Table { seed, vocab, sources: (0..max_len.len()).collect() };
        let g = run_greedy(&t, &max_len);
        let b = run_beam(&t, &max_len, 1, alpha);
        prop_assert_eq!(g.len(), max_len.len());
        for (i, (g, b)) in g.iter().zip(&b).enumerate() {
            prop_assert_eq!(&g.tokens, &b.tokens, "source {}", i);
            prop_assert_eq!(g.log_prob, b.log_prob);
            prop_assert_eq!(g.finished, b.finished);
            prop_assert_eq!(g.score, g.log_prob, "greedy's score is its log-probability");
            if alpha == 0.0 {
                prop_assert_eq!(g, b);
            }
            // Every hypothesis respects its bound and excludes the end token.
            prop_assert!(g.tokens.len() <= max_len[i]);
            prop_assert!(!g.tokens.contains(&EOS));
            prop_assert!(g.finished || g.tokens.len() == max_len[i]);
        }
    }

    /// Decoding several sources at once equals decoding each alone, for
    /// greedy and for beam search.
    #[test]
    fn batched_equals_one_by_one_on_random_tables(
        seed in any::<u64>(),
        vocab in 3usize..8,
        max_len in proptest::collection::vec(1usize..8, 2..5),
        k in 1usize..4,
    ) {
        let n = max_len.len();
        let all = Table { seed, vocab, sources: (0..n).collect() };
        let g = run_greedy(&all, &max_len);
        let b = run_beam(&all, &max_len, k, 0.6);
        for i in 0..n {
            let one = Table { seed, vocab, sources: vec![i] };
            prop_assert_eq!(&run_greedy(&one, &max_len[i..=i])[0], &g[i]);
            prop_assert_eq!(&run_beam(&one, &max_len[i..=i], k, 0.6)[0], &b[i]);
        }
    }
}

// ---------------------------------------------------------------------------
// Beam search beats greedy
// ---------------------------------------------------------------------------

/// Greedy takes A (0.5) and then must end (0.3): A EOS, probability 0.15.
/// The second-best first token B (0.4) ends with 0.9: B EOS, probability
/// 0.36. Beam search (k = 2) keeps B and finds it.
#[test]
fn beam_search_beats_greedy_on_a_constructed_case() {
    let (a, b, c) = (3, 4, 5);
    let table = || {
        tree_step(
            6,
            vec![(EOS, 0.9)],
            vec![
                (vec![BOS], vec![(a, 0.5), (b, 0.4), (c, 0.05), (EOS, 0.04)]),
                (
                    vec![BOS, a],
                    vec![(EOS, 0.3), (a, 0.25), (b, 0.25), (c, 0.19)],
                ),
                (vec![BOS, b], vec![(EOS, 0.9)]),
            ],
        )
    };
    let mut step = table();
    let g = greedy(&mut step, &[10], BOS, EOS);
    assert_eq!(g[0].tokens, vec![a]);
    assert!(g[0].finished);
    assert_eq!(g[0].log_prob, lp(&[0.5, 0.3]));

    for alpha in [0.0, 0.6] {
        let mut step = table();
        let bm = beam(&mut step, &[10], BOS, EOS, 2, alpha);
        assert_eq!(bm[0].tokens, vec![b], "alpha {alpha}");
        assert!(bm[0].finished);
        assert_eq!(bm[0].log_prob, lp(&[0.4, 0.9]));
        assert!(bm[0].log_prob > g[0].log_prob);
        assert_eq!(bm[0].score, bm[0].log_prob / length_penalty(2, alpha));
    }
    // With k = 1 beam search makes greedy's choice.
    let mut step = table();
    assert_eq!(beam(&mut step, &[10], BOS, EOS, 1, 0.6)[0].tokens, vec![a]);
}

// ---------------------------------------------------------------------------
// Length penalty
// ---------------------------------------------------------------------------

#[test]
fn length_penalty_formula() {
    for n in 0..40 {
        for alpha in [0.0, 0.6, 1.0, 2.5] {
            let want = ((5.0 + n as f64) / 6.0).powf(alpha);
            assert!(
                (length_penalty(n, alpha) - want).abs() <= 1e-15 * want,
                "lp({n}, {alpha})"
            );
        }
        assert_eq!(length_penalty(n, 0.0), 1.0);
    }
    assert_eq!(length_penalty(1, 0.6), 1.0);
    assert!((length_penalty(7, 0.6) - 2f64.powf(0.6)).abs() < 1e-15);
    assert!((length_penalty(13, 1.0) - 3.0).abs() < 1e-15);
}

/// A short hypothesis (A EOS, log-probability ln 0.3 = -1.204) against a
/// long one (B B B EOS, ln(0.3 * 0.99^3) = -1.234): without a penalty the
/// short one wins; with alpha = 0.6, -1.204 / lp(2) = -1.098 loses to
/// -1.234 / lp(4) = -0.968.
#[test]
fn length_penalty_favours_longer_hypotheses() {
    let (a, b) = (3, 4);
    let table = || {
        tree_step(
            6,
            vec![(EOS, 0.001)], // other prefixes rarely end: they cannot fill the k finished slots
            vec![
                (vec![BOS], vec![(a, 0.6), (b, 0.3), (EOS, 0.01)]),
                (vec![BOS, a], vec![(EOS, 0.5), (PAD, 0.01), (BOS, 0.01)]),
                (vec![BOS, b], vec![(b, 0.99)]),
                (vec![BOS, b, b], vec![(b, 0.99)]),
                (vec![BOS, b, b, b], vec![(EOS, 0.99)]),
            ],
        )
    };
    let short = lp(&[0.6, 0.5]);
    let long = lp(&[0.3, 0.99, 0.99, 0.99]);
    assert!(short > long && short / length_penalty(2, 0.6) < long / length_penalty(4, 0.6));

    let mut step = table();
    let h = &beam(&mut step, &[8], BOS, EOS, 3, 0.0)[0];
    assert_eq!((h.tokens.clone(), h.log_prob), (vec![a], short));

    let mut step = table();
    let h = &beam(&mut step, &[8], BOS, EOS, 3, 0.6)[0];
    assert_eq!(h.tokens, vec![b, b, b]);
    assert_eq!(h.log_prob, long);
    assert!(h.finished);
    // The score counts the end token in the length: 3 tokens + EOS.
    assert_eq!(h.score, long / length_penalty(4, 0.6));
}

// ---------------------------------------------------------------------------
// Stopping: end token and maximum length
// ---------------------------------------------------------------------------

/// Source 0 ends after two tokens; source 1 never ends and is cut at its
/// maximum length. Finished sources leave the batch.
#[test]
fn greedy_stops_at_the_end_token_and_at_the_maximum_length() {
    let mut calls: Vec<Vec<usize>> = Vec::new();
    let mut step = |src: &[usize], rows: &[Vec<usize>]| -> Vec<Vec<f32>> {
        calls.push(src.to_vec());
        rows.iter()
            .zip(src)
            .map(|(p, &s)| {
                let mut v = vec![-5.0f32; 6];
                let next = if s == 0 && p.len() == 3 {
                    EOS
                } else {
                    3 + p.len() % 3
                };
                v[next] = -0.1;
                v
            })
            .collect()
    };
    let h = greedy(&mut step, &[10, 5], BOS, EOS);
    assert_eq!(h[0].tokens, vec![4, 5]);
    assert!(h[0].finished);
    assert!((h[0].log_prob - 3.0 * -0.1f32 as f64).abs() < 1e-12);
    assert_eq!(h[1].tokens, vec![4, 5, 3, 4, 5]);
    assert!(!h[1].finished);
    assert!((h[1].log_prob - 5.0 * -0.1f32 as f64).abs() < 1e-12);
    assert_eq!(
        calls,
        vec![vec![0, 1], vec![0, 1], vec![0, 1], vec![1], vec![1]]
    );
}

#[test]
fn beam_search_stops_at_the_end_token_and_at_the_maximum_length() {
    // No end token ever: every hypothesis is cut at its maximum length.
    let mut step = |_: &[usize], rows: &[Vec<usize>]| -> Vec<Vec<f32>> {
        rows.iter()
            .map(|p| {
                (0..5)
                    .map(|j| {
                        if j == EOS {
                            -50.0
                        } else {
                            -(((j + p.len()) % 4) as f32) - 1.0
                        }
                    })
                    .collect()
            })
            .collect()
    };
    let h = beam(&mut step, &[3, 6, 1], BOS, EOS, 3, 0.6);
    for (hyp, max) in h.iter().zip([3, 6, 1]) {
        assert_eq!(hyp.tokens.len(), max);
        assert!(!hyp.finished);
        assert_eq!(hyp.score, hyp.log_prob / length_penalty(max, 0.6));
    }
    // An end token that is always the best next token: empty outputs.
    let mut step = |_: &[usize], rows: &[Vec<usize>]| -> Vec<Vec<f32>> {
        rows.iter()
            .map(|_| {
                (0..5)
                    .map(|j| if j == EOS { -0.01 } else { -6.0 })
                    .collect()
            })
            .collect()
    };
    for h in beam(&mut step, &[4, 4], BOS, EOS, 2, 0.6) {
        assert!(h.finished && h.tokens.is_empty());
        assert_eq!(h.log_prob, -0.01f32 as f64);
    }
}

/// A maximum length of 0 must give an empty output (the bound excludes the
/// end token), as `Transformer::max_output_len` yields for `max_len = 1`.
#[test]
fn a_maximum_length_of_zero_gives_an_empty_output() {
    let mut step = |_: &[usize], rows: &[Vec<usize>]| -> Vec<Vec<f32>> {
        rows.iter().map(|_| vec![-3.0, -3.0, -3.0, -0.1]).collect()
    };
    let g = greedy(&mut step, &[0], BOS, EOS);
    assert!(
        g[0].tokens.is_empty(),
        "greedy produced {:?} with max_len 0",
        g[0].tokens
    );
    let b = beam(&mut step, &[0], BOS, EOS, 2, 0.6);
    assert!(
        b[0].tokens.is_empty(),
        "beam produced {:?} with max_len 0",
        b[0].tokens
    );
}

// ---------------------------------------------------------------------------
// The Transformer
// ---------------------------------------------------------------------------

fn model(max_len: usize, seed: u64) -> Transformer<f32> {
    let cfg = ModelConfig {
        d_model: 16,
        heads: 2,
        d_ff: 32,
        encoder_layers: 1,
        decoder_layers: 1,
        max_len,
        ..ModelConfig::tiny(10, 10)
    };
    Transformer::new(&cfg, seed).unwrap()
}

fn sources() -> TokenBatch {
    TokenBatch::padded(&[vec![3, 4, 5, 6, 7], vec![8, 9], vec![5, 5, 3]], PAD)
}

#[test]
fn maximum_output_length_is_source_length_plus_50_capped_by_max_len() {
    let src = sources();
    assert_eq!(model(128, 0).max_output_len(&src), vec![55, 52, 53]);
    assert_eq!(model(54, 0).max_output_len(&src), vec![53, 52, 53]);
    assert_eq!(model(12, 0).max_output_len(&src), vec![11, 11, 11]);
    // Without a padding id every position counts.
    let mut m = model(128, 0);
    m.config.pad_id = None;
    assert_eq!(m.max_output_len(&src), vec![55, 55, 55]);
}

/// An end token the model can never produce: every output is cut at the
/// maximum length. Then the end token is one the model does produce:
/// decoding stops there, and the log-probability is that of the tokens and
/// the end token under a teacher-forced forward pass.
#[test]
fn transformer_decoding_stops_at_eos_and_max_length() {
    let m = model(12, 4);
    let src = sources();
    let never = 10; // outside the vocabulary
    let g = m.greedy_decode(&src, BOS, never);
    let b = m.beam_search(&src, BOS, never, 2, 0.6);
    for h in g.iter().chain(&b) {
        assert_eq!(h.tokens.len(), 11);
        assert!(!h.finished);
        assert!(h.tokens.iter().all(|&t| t < 10));
    }

    let eos = g[0].tokens[2];
    let cut = g[0].tokens.iter().position(|&t| t == eos).unwrap();
    let g2 = m.greedy_decode(&src, BOS, eos);
    assert_eq!(g2[0].tokens, g[0].tokens[..cut]);
    assert!(g2[0].finished);
    for h in &g2 {
        assert!(!h.tokens.contains(&eos));
        assert!(h.finished || h.tokens.len() == 11);
    }

    // Teacher forcing [BOS, tokens..., ] on source 0 alone.
    let mut tgt = vec![BOS];
    tgt.extend(&g2[0].tokens);
    let chosen: Vec<usize> = g2[0].tokens.iter().copied().chain([eos]).collect();
    let tape = Tape::no_grad();
    let ctx = Ctx::eval(&tape);
    let src0 = TokenBatch::padded(&[vec![3, 4, 5, 6, 7]], PAD);
    let lp = m
        .forward(&ctx, &src0, &TokenBatch::padded(&[tgt], PAD))
        .log_softmax()
        .value();
    let want: f64 = chosen
        .iter()
        .enumerate()
        .map(|(t, &c)| lp.at(&[0, t, c]) as f64)
        .sum();
    assert!(
        (g2[0].log_prob - want).abs() < 1e-4,
        "{} vs {want}",
        g2[0].log_prob
    );
}

#[test]
fn transformer_beam_of_one_is_greedy() {
    for seed in 0..3 {
        let m = model(16, seed);
        let src = sources();
        for eos in [EOS, 5, 10] {
            let g = m.greedy_decode(&src, BOS, eos);
            let b = m.beam_search(&src, BOS, eos, 1, 0.6);
            for (g, b) in g.iter().zip(&b) {
                assert_eq!(g.tokens, b.tokens, "seed {seed} eos {eos}");
                assert_eq!(g.log_prob, b.log_prob);
                assert_eq!(g.finished, b.finished);
            }
        }
    }
}

#[test]
fn transformer_batched_decoding_equals_one_by_one() {
    let m = model(16, 7);
    let seqs = [vec![3, 4, 5, 6, 7], vec![8, 9], vec![5, 5, 3]];
    let src = TokenBatch::padded(&seqs, PAD);
    for eos in [EOS, 6] {
        let g = m.greedy_decode(&src, BOS, eos);
        let b = m.beam_search(&src, BOS, eos, 3, 0.6);
        for (i, s) in seqs.iter().enumerate() {
            let one = TokenBatch::padded(std::slice::from_ref(s), PAD);
            let g1 = &m.greedy_decode(&one, BOS, eos)[0];
            let b1 = &m.beam_search(&one, BOS, eos, 3, 0.6)[0];
            assert_eq!(g1.tokens, g[i].tokens, "greedy, source {i}");
            assert_eq!(g1.finished, g[i].finished);
            assert!((g1.log_prob - g[i].log_prob).abs() < 1e-4);
            assert_eq!(b1.tokens, b[i].tokens, "beam, source {i}");
            assert_eq!(b1.finished, b[i].finished);
            assert!((b1.score - b[i].score).abs() < 1e-4);
        }
    }
}

/// The step function passed to the searches is an ordinary `StepFn`.
#[test]
fn step_functions_are_trait_objects() {
    let t = Table {
        seed: 1,
        vocab: 5,
        sources: vec![0, 1],
    };
    let mut f = |s: &[usize], r: &[Vec<usize>]| t.step(s, r);
    let step: &mut StepFn<'_> = &mut f;
    let g = greedy(step, &[4, 4], BOS, EOS);
    assert_eq!(g.len(), 2);
}

// ---------------------------------------------------------------------------
// Beam search against exhaustive search (issue 13)
// ---------------------------------------------------------------------------

/// Every hypothesis the searches can produce for one source of `t`, scored
/// as beam search scores them: each sequence of at most `max_len - 1`
/// non-end tokens followed by the end token (length counting it), and each
/// sequence of exactly `max_len` tokens, cut there (unfinished). Log
/// probabilities are summed in f64 in token order, as the searches do.
fn all_hypotheses(t: &Table, max_len: usize, alpha: f64) -> Vec<Hypothesis> {
    let mut out = Vec::new();
    // (prefix with the start token, log-probability so far)
    let mut frontier = vec![(vec![BOS], 0.0f64)];
    while let Some((p, logp)) = frontier.pop() {
        let lps = t.log_probs(t.sources[0], &p);
        let tokens = p[1..].to_vec();
        if tokens.len() == max_len {
            out.push(Hypothesis {
                score: logp / length_penalty(max_len, alpha),
                tokens,
                log_prob: logp,
                finished: false,
            });
            continue;
        }
        let ended = logp + f64::from(lps[EOS]);
        out.push(Hypothesis {
            score: ended / length_penalty(tokens.len() + 1, alpha),
            tokens,
            log_prob: ended,
            finished: true,
        });
        for (tok, &l) in lps.iter().enumerate() {
            if tok != EOS {
                let mut q = p.clone();
                q.push(tok);
                frontier.push((q, logp + f64::from(l)));
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(common::pcfg(48))]

    /// With a beam wider than the number of prefixes of any length
    /// (`(V - 1)^max_len <= 81` here), beam search keeps every prefix and
    /// must return exactly the best of all hypotheses (same tokens, same
    /// log-probability, same score); with a narrow beam it returns one of
    /// them, scored correctly, and never a better one than the best.
    #[test]
    fn beam_search_is_exhaustive_search_when_the_beam_holds_every_prefix(
        seed in any::<u64>(),
        vocab in 3usize..=4,
        max_len in 1usize..=4,
        alpha in prop_oneof![Just(0.0), Just(0.6), Just(1.5)],
        narrow in 2usize..=3,
    ) {
        let t = Table { seed, vocab, sources: vec![0] };
        let all = all_hypotheses(&t, max_len, alpha);
        // Finished with 0..max_len tokens, or cut at max_len: sum of (V-1)^i.
        let expected: usize = (0..max_len).map(|i| (vocab - 1).pow(i as u32)).sum::<usize>()
            + (vocab - 1).pow(max_len as u32);
        prop_assert_eq!(all.len(), expected);
        let best = all
            .iter()
            .reduce(|b, h| if h.score > b.score { h } else { b })
            .unwrap();
        // No two hypotheses tie for the best (the draws are continuous).
        prop_assume!(all.iter().filter(|h| h.score == best.score).count() == 1);
        let wide = run_beam(&t, &[max_len], 200, alpha);
        prop_assert_eq!(&wide[0], best, "beam 200 vs exhaustive, {} hypotheses", all.len());
        let small = &run_beam(&t, &[max_len], narrow, alpha)[0];
        let same = all.iter().find(|h| h.tokens == small.tokens && h.finished == small.finished);
        prop_assert_eq!(Some(small), same, "beam {} returned a hypothesis scored differently", narrow);
        prop_assert!(small.score <= best.score);
    }
}

// ---------------------------------------------------------------------------
// Key/value caches (issue 11): the cached path against the uncached one
// ---------------------------------------------------------------------------

/// A random model of the variety the cache must handle: post or pre norm,
/// each built-in norm and positional block, tied or not, decoder-only or not.
fn cache_model(
    knobs: (bool, usize, usize, usize, bool),
    heads: usize,
    seed: u64,
) -> Transformer<f64> {
    let (pre, norm, pos, tying, decoder_only) = knobs;
    let cfg = ModelConfig {
        d_model: 8,
        heads,
        d_ff: 12,
        encoder_layers: if decoder_only { 0 } else { 2 },
        decoder_layers: 2,
        max_len: 12,
        placement: if pre { Placement::Pre } else { Placement::Post },
        norm: ["layer", "batch", "none"][norm].into(),
        positional: ["sinusoidal", "learned", "none"][pos].into(),
        tying: [Tying::All, Tying::Output, Tying::None][tying],
        ..ModelConfig::tiny(10, 10)
    };
    Transformer::new(&cfg, seed).unwrap()
}

/// Feeds random tokens (pads among them) for `steps` steps with random row
/// reorders between steps, and checks every step's logits against the
/// uncached decoder over each row's whole prefix.
fn check_decode_steps(model: &Transformer<f64>, src: &TokenBatch, steps: usize, seed: u64) {
    let mut r = rng(seed);
    let n = src.batch;
    let mut state = model.start_decoding(src, model.config.max_len);
    // Per row: (source, tokens fed).
    let mut rows: Vec<(usize, Vec<usize>)> = (0..n).map(|b| (b, Vec::new())).collect();
    for step in 0..steps {
        if step > 0 {
            let m = r.random_range(1..=2 * n);
            let idx: Vec<usize> = (0..m).map(|_| r.random_range(0..rows.len())).collect();
            state.reorder(&idx);
            rows = idx.iter().map(|&i| rows[i].clone()).collect();
        }
        let tokens: Vec<usize> = (0..rows.len())
            .map(|_| {
                if step == 0 {
                    BOS
                } else {
                    r.random_range(0..10)
                }
            })
            .collect();
        for (row, &t) in rows.iter_mut().zip(&tokens) {
            row.1.push(t);
        }
        let fast = model.decode_step(&mut state, &tokens); // (R, V)
        assert_eq!(
            state.sources(),
            rows.iter().map(|x| x.0).collect::<Vec<_>>()
        );
        // The reference: the whole prefixes through the uncached decoder.
        let (rr, len) = (rows.len(), step + 1);
        let src_ids: Vec<usize> = rows.iter().flat_map(|x| src.row(x.0).to_vec()).collect();
        let tgt_ids: Vec<usize> = rows.iter().flat_map(|x| x.1.clone()).collect();
        let tape = Tape::no_grad();
        let ctx = Ctx::eval(&tape);
        let slow = model
            .forward(
                &ctx,
                &TokenBatch::new(src_ids, rr, src.len),
                &TokenBatch::new(tgt_ids, rr, len),
            )
            .narrow(1, len - 1, 1)
            .value()
            .reshape(&[rr, 10]); // (R, V)
        assert!(
            fast.allclose(&slow, 1e-10, 1e-10),
            "step {step}: cached logits differ from the uncached ones\n{fast:?}\n{slow:?}"
        );
    }
}

proptest! {
    #![proptest_config(common::pcfg(24))]

    /// Every built-in variant, with reorders (beam reselection, finished
    /// rows dropped), source padding and generated pads, in f64: the
    /// cached step equals the uncached decoder to 1e-10.
    #[test]
    fn cached_decode_steps_equal_the_uncached_decoder(
        knobs in (any::<bool>(), 0..3usize, 0..3usize, 0..3usize, any::<bool>()),
        heads in prop::sample::select(vec![1usize, 2, 4]),
        seed in 0..1000u64,
        steps in 1..8usize,
    ) {
        let model = cache_model(knobs, heads, seed);
        prop_assert!(model.supports_kv_cache());
        let src = if knobs.4 {
            TokenBatch::new(Vec::new(), 3, 0) // decoder-only: empty sources (B, 0)
        } else {
            TokenBatch::padded(&[vec![3, 4, 5, 6], vec![8, 9], vec![5]], PAD)
        };
        check_decode_steps(&model, &src, steps, seed);
    }
}

/// The cache's attention kernel against the fused `attention` op, with a
/// mask of each broadcast shape and a fully masked row.
#[test]
fn decode_cache_attention_matches_the_attention_op() {
    let (rows, tq, tk, d) = (3, 2, 5, 8);
    for heads in [1, 2, 4] {
        for mask_shape in [
            None,
            Some([rows, 1, tq, tk]),
            Some([1, 1, 1, tk]),
            Some([rows, 1, 1, tk]),
        ] {
            let q = Tensor::<f64>::randn(&[rows, tq, d], 0.0, 1.0, 1); // (R, Tq, D)
            let k = Tensor::<f64>::randn(&[rows, tk, d], 0.0, 1.0, 2); // (R, Tk, D)
            let v = Tensor::<f64>::randn(&[rows, tk, d], 0.0, 1.0, 3); // (R, Tk, D)
            let mask = mask_shape.map(|s| {
                let n: usize = s.iter().product();
                // Masks every third entry, and the whole first key row when
                // the mask has a row per query (a fully masked query).
                let data = (0..n)
                    .map(|i| f64::from(u8::from(i % 3 == 1 || (s[2] == tq && i < tk))))
                    .collect();
                Tensor::from_vec(data, &s)
            });
            let mut cache = KvCache::new(rows, 7, d);
            // In two appends, as decoding fills it.
            cache.append(&k.narrow(1, 0, 2), &v.narrow(1, 0, 2));
            cache.append(&k.narrow(1, 2, 3), &v.narrow(1, 2, 3));
            let fast = cache.attend(&q, heads, mask.as_ref());
            let tape = Tape::no_grad();
            let slow = tape
                .constant(q.clone())
                .attention(tape.constant(k), tape.constant(v), heads, mask.as_ref())
                .value();
            assert!(
                fast.allclose(&slow, 1e-12, 1e-12),
                "heads {heads}, mask {mask_shape:?}:\n{fast:?}\n{slow:?}"
            );
        }
    }
}

#[test]
fn kv_cache_reorder_then_append_keeps_each_rows_history() {
    let mut c = KvCache::<f64>::new(2, 3, 1); // 2 rows, 3 positions, width 1
    c.append(
        &Tensor::from_vec(vec![1.0, 2.0], &[2, 1, 1]),
        &Tensor::from_vec(vec![10.0, 20.0], &[2, 1, 1]),
    );
    c.reorder(&[1, 0, 1]);
    c.append(
        &Tensor::from_vec(vec![3.0, 4.0, 5.0], &[3, 1, 1]),
        &Tensor::from_vec(vec![30.0, 40.0, 50.0], &[3, 1, 1]),
    );
    assert_eq!((c.rows(), c.len()), (3, 2));
    assert_eq!(
        [c.keys(0), c.keys(1), c.keys(2)],
        [&[2.0, 3.0][..], &[1.0, 4.0], &[2.0, 5.0]]
    );
    assert_eq!(c.values(1), &[10.0, 40.0]);
    c.reorder(&[2]);
    assert_eq!(c.keys(0), &[2.0, 5.0]);
}

#[test]
fn kv_cache_grows_past_its_initial_capacity_keeping_every_row() {
    let mut c = KvCache::<f64>::new(2, 1, 1); // room for 1 position
    let col = |a: f64, b: f64| Tensor::from_vec(vec![a, b], &[2, 1, 1]); // (R, 1, D)
    c.append(&col(1.0, 2.0), &col(10.0, 20.0));
    c.reorder(&[1, 0]); // a pending reorder, applied by the growth
    c.append(&col(3.0, 4.0), &col(30.0, 40.0)); // grows to 2
    c.append(&col(5.0, 6.0), &col(50.0, 60.0)); // grows to 4
    assert_eq!((c.len(), c.capacity()), (3, 4));
    assert_eq!(
        [c.keys(0), c.keys(1)],
        [&[2.0, 3.0, 5.0][..], &[1.0, 4.0, 6.0]]
    );
    assert_eq!(c.values(0), &[20.0, 30.0, 50.0]);
}

/// Greedy and beam search give the same tokens with and without the
/// cache (scores within float rounding) on random f32 models, with the
/// paper's stopping rules (end token, maximum length).
#[test]
fn cached_greedy_and_beam_equal_the_uncached_searches_on_random_models() {
    let src = sources();
    for seed in 0..6 {
        let m = model(12, seed);
        assert!(m.supports_kv_cache());
        let pairs = [
            (
                m.greedy_decode(&src, BOS, EOS),
                m.greedy_decode_uncached(&src, BOS, EOS),
            ),
            (
                m.beam_search(&src, BOS, EOS, 3, 0.6),
                m.beam_search_uncached(&src, BOS, EOS, 3, 0.6),
            ),
            (
                m.beam_search(&src, BOS, EOS, 4, 0.0),
                m.beam_search_uncached(&src, BOS, EOS, 4, 0.0),
            ),
        ];
        for (fast, slow) in pairs {
            assert_eq!(fast.len(), slow.len());
            for (f, s) in fast.iter().zip(&slow) {
                assert_eq!(
                    (&f.tokens, f.finished),
                    (&s.tokens, s.finished),
                    "seed {seed}"
                );
                assert!(
                    (f.log_prob - s.log_prob).abs() < 1e-4,
                    "seed {seed}: {f:?} vs {s:?}"
                );
                assert!(
                    (f.score - s.score).abs() < 1e-4,
                    "seed {seed}: {f:?} vs {s:?}"
                );
            }
        }
    }
}

/// On a trained copy-task model (peaked distributions, the case decoding
/// meets in use) the cached searches reproduce the uncached ones, and copy.
#[test]
fn cached_decoding_equals_uncached_on_a_trained_copy_model() {
    use transformer::synthetic::{COPY_VOCAB, TRIAL_STEPS, copy_batch, copy_trial_config};
    let (mcfg, tcfg) = copy_trial_config();
    let mut trainer = transformer::Trainer::new(mcfg, tcfg, 42).unwrap();
    let mut data = rng(1);
    for _ in 0..TRIAL_STEPS {
        let b = copy_batch(&mut data, 32, 3, 10, COPY_VOCAB);
        trainer.step(&b.src, &b.tgt_in, &b.labels);
    }
    let m = &trainer.model;
    let test = copy_batch(&mut rng(999), 24, 3, 10, COPY_VOCAB);
    let greedy = m.greedy_decode(&test.src, BOS, EOS);
    assert_eq!(
        greedy,
        m.greedy_decode_uncached(&test.src, BOS, EOS)
            .into_iter()
            .zip(&greedy)
            .map(|(s, f)| {
                assert!((s.log_prob - f.log_prob).abs() < 1e-4);
                Hypothesis {
                    log_prob: f.log_prob,
                    score: f.score,
                    ..s
                }
            })
            .collect::<Vec<_>>()
    );
    let beam = m.beam_search(&test.src, BOS, EOS, 4, 0.6);
    let beam_ref = m.beam_search_uncached(&test.src, BOS, EOS, 4, 0.6);
    for (f, s) in beam.iter().zip(&beam_ref) {
        assert_eq!(f.tokens, s.tokens);
        assert!((f.score - s.score).abs() < 1e-4);
    }
    // And the model copies (so the comparison above is of real outputs).
    let copied = (0..test.src.batch)
        .filter(|&b| {
            let row: Vec<usize> = test
                .src
                .row(b)
                .iter()
                .copied()
                .filter(|&t| t != PAD)
                .collect();
            greedy[b].tokens == row
        })
        .count();
    assert!(copied >= 20, "only {copied} of 24 copied");
}

/// A user's attention block without cache support: the model says so,
/// and decoding falls back to the uncached path (same result).
#[test]
fn a_block_without_cache_support_falls_back_to_the_uncached_path() {
    use transformer::{AttentionBlock, Module, MultiHeadAttention, Registry, Visitor};
    struct Plain(MultiHeadAttention<f32>);
    impl Module<f32> for Plain {
        fn visit(&mut self, v: &mut Visitor<'_, f32>) {
            self.0.visit(v);
        }
    }
    impl AttentionBlock<f32> for Plain {
        fn forward<'t>(
            &self,
            ctx: &Ctx<'t, f32>,
            q: autograd::Var<'t, f32>,
            kv: autograd::Var<'t, f32>,
            mask: Option<&Tensor<f32>>,
        ) -> autograd::Var<'t, f32> {
            self.0.forward(ctx, q, kv, mask)
        }
    }
    let registry = Registry::builtin().with(|r| {
        r.attention("plain", |c, rng| {
            Box::new(Plain(MultiHeadAttention::new(c.d_model, c.heads, 0.0, rng)))
        });
    });
    let cfg = ModelConfig {
        self_attention: "plain".into(),
        ..model(12, 0).config
    };
    let m = Transformer::with_registry(&cfg, &registry, 3).unwrap();
    assert!(!m.supports_kv_cache());
    let src = sources();
    assert_eq!(
        m.greedy_decode(&src, BOS, EOS),
        m.greedy_decode_uncached(&src, BOS, EOS)
    );
}
