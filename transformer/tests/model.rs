//! The whole encoder-decoder.
//!
//! - Gradient checks (f64, `gradcheck_module`, default tolerances) of a tiny
//!   model through the label-smoothed loss, for every norm kind x placement
//!   x residual (12 combinations), for every tying and positional kind, with
//!   dropout in train mode, and a proptest over random batches and seeds.
//! - The causal property: logits at position t do not depend on target
//!   tokens after t (LayerNorm; and BatchNorm in eval mode), and the
//!   documented leak of BatchNorm statistics in train mode.
//! - The padding property: outputs do not depend on how much padding a
//!   source has, on what the padded positions hold, or on the other
//!   sequences of the batch.
//! - Recorded attention (`Ctx::keep_attention`): one distribution
//!   (B, H, Tq, Tk) per attention block, named and masked as it should be,
//!   and the same logits as without recording.
//! - Determinism: same seeds, same bits.

use std::cell::Cell;
use std::sync::{Arc, Mutex};

use autograd::check::{GradcheckConfig, GradcheckReport};
use autograd::{Float, Tape, Tensor, Var};
use proptest::prelude::*;
mod common;
use common::{NormKind, accept, mode, note_skipped, pcfg, tallied};
use transformer::{
    BatchNorm, Ctx, Mode, ModelConfig, Module, NormBlock, NormScope, Placement, Registry,
    TokenBatch, Transformer, Tying, Visitor, gradcheck_module, named_params, padding_mask,
    param_count,
};

const PAD: usize = 0;
const BOS: usize = 1;

/// The tiny model of the gradient checks: d_model 4, 2 heads, d_ff 8, 1 + 1
/// layers, vocabulary 6 (one shared matrix), max_len 8, no dropout.
fn tiny(norm: NormKind, placement: Placement, residual: bool) -> ModelConfig {
    ModelConfig {
        d_model: 4,
        heads: 2,
        d_ff: 8,
        encoder_layers: 1,
        decoder_layers: 1,
        dropout: 0.0,
        attention_dropout: 0.0,
        ffn_dropout: 0.0,
        norm: norm.name(),
        placement,
        residual,
        max_len: 8,
        ..ModelConfig::tiny(6, 6)
    }
}

/// Batch of 2 with padding on both sides: source (2, 4), decoder input
/// (2, 4) and labels (padding labels are ignored by the loss).
fn batch() -> (TokenBatch, TokenBatch, Vec<usize>) {
    let src = TokenBatch::padded(&[vec![3, 4, 5, 2], vec![2, 5]], PAD);
    let tgt_in = TokenBatch::padded(&[vec![BOS, 3, 4, 5], vec![BOS, 5, 3]], PAD);
    let labels = vec![3, 4, 5, 2, 5, 3, 2, PAD];
    (src, tgt_in, labels)
}

/// Gradient check of the loss with respect to every parameter.
fn grad_model(
    cfg: &ModelConfig,
    seed: u64,
    train: bool,
    data: &(TokenBatch, TokenBatch, Vec<usize>),
    check: &GradcheckConfig,
) -> (GradcheckReport, usize) {
    let mut m = Transformer::<f64>::new(cfg, seed).unwrap();
    let n = param_count(&mut m);
    let (src, tgt_in, labels) = data;
    let report = gradcheck_module(&mut m, &[], mode(train), check, |m, ctx, _| {
        let logits = m.forward(ctx, src, tgt_in);
        m.loss(logits, labels, 0.1)
    });
    (report, n)
}

fn assert_grad_model(cfg: &ModelConfig, train: bool, ops: &[&str]) {
    let (report, n) = grad_model(cfg, 7, train, &batch(), &GradcheckConfig::default());
    assert!(report.passed(), "{cfg:?} (train {train}): {report}");
    assert_eq!(report.checked, n, "every parameter element is checked");
    for op in ["embedding", "cross_entropy"].iter().chain(ops) {
        assert!(
            report.ops.contains(op),
            "op `{op}` not recorded for {cfg:?}: {:?}",
            report.ops
        );
    }
}

// ---------------------------------------------------------------------------
// Gradient checks
// ---------------------------------------------------------------------------

/// Norm kind x placement x residual: all 12 combinations, ReLU, tied
/// embeddings, sinusoidal positions, padding on both sides, no dropout.
#[test]
fn gradcheck_every_norm_placement_residual_combination() {
    for norm in [NormKind::Layer, NormKind::Batch, NormKind::None] {
        for placement in [Placement::Post, Placement::Pre] {
            for residual in [true, false] {
                // BatchNorm is checked in train mode (batch statistics).
                let train = norm == NormKind::Batch;
                assert_grad_model(&tiny(norm, placement, residual), train, &["relu"]);
            }
        }
    }
}

#[test]
fn gradcheck_every_tying_and_positional_kind() {
    let base = tiny(NormKind::Layer, Placement::Post, true);
    for tying in [Tying::None, Tying::Output, Tying::All] {
        for positional in ["sinusoidal", "learned", "none"] {
            let cfg = ModelConfig {
                tying,
                positional: positional.into(),
                ..base.clone()
            };
            assert_grad_model(&cfg, false, &[]);
        }
    }
}

/// Dropout 0.1 everywhere (sublayers, embeddings, attention weights,
/// feed-forward) in train mode: `gradcheck_module` reuses one seed.
#[test]
fn gradcheck_with_dropout_in_train_mode() {
    for norm in [NormKind::Layer, NormKind::Batch] {
        let cfg = ModelConfig {
            dropout: 0.1,
            attention_dropout: 0.1,
            ffn_dropout: 0.1,
            ..tiny(norm, Placement::Pre, true)
        };
        assert_grad_model(&cfg, true, &["dropout"]);
    }
}

/// Other knobs: GELU, BatchNorm in the encoder only, two layers per stack,
/// separate vocabularies, no padding id, BatchNorm in eval mode.
#[test]
fn gradcheck_other_knobs() {
    let base = tiny(NormKind::Layer, Placement::Post, true);
    assert_grad_model(
        &ModelConfig {
            feed_forward: "gelu".into(),
            ..base.clone()
        },
        false,
        &["gelu"],
    );
    let enc_only = ModelConfig {
        norm: "batch".into(),
        norm_scope: NormScope::EncoderOnly,
        ..base.clone()
    };
    assert_grad_model(&enc_only, true, &[]);
    let deep = ModelConfig {
        encoder_layers: 2,
        decoder_layers: 2,
        placement: Placement::Pre,
        ..base.clone()
    };
    assert_grad_model(&deep, false, &[]);
    let two_vocabs = ModelConfig {
        src_vocab: 7,
        tying: Tying::Output,
        ..base.clone()
    };
    assert_grad_model(&two_vocabs, false, &[]);

    // BatchNorm in eval mode, after a few training forwards moved the
    // running statistics.
    let cfg = tiny(NormKind::Batch, Placement::Post, true);
    let mut m = Transformer::<f64>::new(&cfg, 3).unwrap();
    let (src, tgt_in, labels) = batch();
    for step in 0..3 {
        let tape = Tape::no_grad();
        let ctx = Ctx::train(&tape, step);
        m.forward(&ctx, &src, &tgt_in);
    }
    let report = gradcheck_module(
        &mut m,
        &[],
        Mode::Eval,
        &GradcheckConfig::default(),
        |m, ctx, _| m.loss(m.forward(ctx, &src, &tgt_in), &labels, 0.1),
    );
    assert!(report.passed(), "{report}");
}

/// A random batch: 2 sequences per side, lengths 1..=5 (so usually some
/// padding), real ids in 2..6, the decoder input starting with BOS.
fn random_batch() -> impl Strategy<Value = (TokenBatch, TokenBatch, Vec<usize>)> {
    let seq = |first: Option<usize>| {
        proptest::collection::vec(2usize..6, 1..=5).prop_map(move |mut s| {
            if let Some(f) = first {
                s[0] = f;
            }
            s
        })
    };
    (
        seq(None),
        seq(None),
        seq(Some(BOS)),
        seq(Some(BOS)),
        any::<u64>(),
    )
        .prop_map(|(s0, s1, t0, t1, r)| {
            let src = TokenBatch::padded(&[s0, s1], PAD);
            let tgt_in = TokenBatch::padded(&[t0, t1], PAD);
            // Labels: a real label where the decoder input is real, else padding.
            let labels = tgt_in
                .ids
                .iter()
                .enumerate()
                .map(|(k, &i)| {
                    if i == PAD {
                        PAD
                    } else {
                        2 + (r as usize >> (k % 32)) % 4
                    }
                })
                .collect();
            (src, tgt_in, labels)
        })
}

/// Random batches and initialisations, every norm kind x placement with the
/// residual (GELU, which has no kink for a random case to land on).
///
/// A norm over nearly equal values (BatchNorm over tokens, LayerNorm over
/// the 4 features of a token) is steep, and the truncation error of a
/// central difference (`h^2 f''' / 6`) can exceed the tolerance at the default
/// step 1e-5: soak runs failed about once in a hundred draws (errors 1.2e-6
/// to 1.5e-5) with correct gradients, the error falling a hundredfold at
/// step 1e-6. So a failing draw is re-checked at step 1e-6, and passes only
/// if the error fell as truncation error does (`common::accept`); more than
/// about 5% of checks needing it fails the test (`common::tallied`).
/// Without the residual, attention averages tokens together and such draws
/// are common (one failed at both steps): those six wirings are checked on
/// the fixed batch and seed above, and every wiring of a single sublayer,
/// with conditioning guards, in tests/layers.rs.
///
/// Draws where some BatchNorm sees a batch variance below
/// `MIN_BN_VARIANCE` (computed from the data each BatchNorm is fed, not
/// from its running statistics, which a bug could break) are skipped; the
/// BatchNorm wirings must still be checked in at least two draws of three.
#[test]
fn gradcheck_random_batches() {
    // (PROPTEST_CASES may change the count.)
    let cases = proptest::test_runner::contextualize_config(pcfg(6)).cases as usize;
    let checked = [Cell::new(0usize), Cell::new(0), Cell::new(0)];
    let tally = tallied("gradcheck_random_batches", || {
        proptest!(pcfg(6), |(data in random_batch(), seed in any::<u64>())| {
            for (k, norm) in [NormKind::Layer, NormKind::Batch, NormKind::None].into_iter().enumerate() {
                for placement in [Placement::Post, Placement::Pre] {
                    let cfg = ModelConfig {
                        feed_forward: "gelu".into(),
                        ..tiny(norm, placement, true)
                    };
                    let train = norm == NormKind::Batch;
                    let min_var = min_batch_norm_variance(&cfg, seed, &data);
                    if min_var < MIN_BN_VARIANCE {
                        note_skipped();
                        continue;
                    }
                    let (report, n) = grad_model(&cfg, seed, train, &data, &GradcheckConfig::default());
                    prop_assert_eq!(report.checked, n);
                    accept(&report, |fine| grad_model(&cfg, seed, train, &data, fine).0).map_err(|e| {
                        TestCaseError::fail(format!(
                            "{norm:?} {placement:?} (smallest BatchNorm variance {min_var:e}): {e}"
                        ))
                    })?;
                    checked[k].set(checked[k].get() + 1);
                }
            }
        });
    });
    let [layer, batch, none] = checked.map(Cell::into_inner);
    eprintln!(
        "gradcheck_random_batches: {cases} draws x 2 placements; checked LayerNorm {layer}, \
         BatchNorm {batch}, none {none}; {tally:?}"
    );
    // Only BatchNorm wirings are ever skipped, and few of them.
    assert_eq!((layer, none), (2 * cases, 2 * cases), "{tally:?}");
    assert!(
        3 * batch >= 2 * (2 * cases),
        "BatchNorm was checked in only {batch} of {} wirings ({tally:?})",
        2 * cases
    );
}

const MIN_BN_VARIANCE: f64 = 1e-2;

/// The smallest per-feature variance (biased, over the real tokens) of the
/// input of any BatchNorm of the model in a train-mode forward pass on
/// `data` (infinite without BatchNorm). Computed from the data each
/// BatchNorm is fed, through a registry whose `batch` norm is a probe
/// around the real one: the module's own running variance would hide a
/// broken running-variance update (skipping every draw in silence).
fn min_batch_norm_variance(
    cfg: &ModelConfig,
    seed: u64,
    (src, tgt_in, _): &(TokenBatch, TokenBatch, Vec<usize>),
) -> f64 {
    let smallest = Arc::new(Mutex::new(f64::INFINITY));
    let seen = smallest.clone();
    let registry = Registry::builtin().with(|r| {
        r.norm("batch", move |c, _| {
            Box::new(Probe {
                bn: BatchNorm::new(c.d_model, c.norm_eps, c.bn_momentum),
                smallest: seen.clone(),
            })
        });
    });
    let m = Transformer::<f64>::with_registry(cfg, &registry, seed).unwrap();
    logits(&m, src, tgt_in, true, 0);
    *smallest.lock().unwrap()
}

/// A BatchNorm that notes the smallest per-feature variance of its input.
struct Probe {
    bn: BatchNorm<f64>,
    smallest: Arc<Mutex<f64>>,
}

impl Module<f64> for Probe {
    fn visit(&mut self, v: &mut Visitor<'_, f64>) {
        self.bn.visit(v);
    }
}

impl NormBlock<f64> for Probe {
    fn forward<'t>(
        &self,
        ctx: &Ctx<'t, f64>,
        x: Var<'t, f64>,
        tokens: Option<&Tensor<f64>>,
    ) -> Var<'t, f64> {
        let xv = x.value(); // (B, T, D)
        let d = xv.dim(-1);
        let real: Vec<&[f64]> = xv
            .data()
            .chunks(d)
            .enumerate()
            .filter(|&(i, _)| tokens.is_none_or(|t| t.data()[i] != 0.0))
            .map(|(_, row)| row)
            .collect();
        let n = real.len() as f64;
        for j in 0..d {
            let mean = real.iter().map(|r| r[j]).sum::<f64>() / n;
            let var = real.iter().map(|r| (r[j] - mean).powi(2)).sum::<f64>() / n;
            let mut s = self.smallest.lock().unwrap();
            *s = s.min(var);
        }
        self.bn.forward(ctx, x, tokens)
    }
}

// ---------------------------------------------------------------------------
// Helpers for the properties
// ---------------------------------------------------------------------------

/// Logits (B, T, V) of a forward pass on a no-grad tape.
fn logits<T: Float>(
    m: &Transformer<T>,
    src: &TokenBatch,
    tgt_in: &TokenBatch,
    train: bool,
    seed: u64,
) -> Tensor<T> {
    let tape = Tape::no_grad();
    let ctx = Ctx::new(&tape, mode(train), seed);
    m.forward(&ctx, src, tgt_in).value()
}

/// Largest difference between `a[b, t, :]` and `c[b2, t, :]`.
fn row_diff<T: Float>(a: &Tensor<T>, b: usize, c: &Tensor<T>, b2: usize, t: usize) -> f64 {
    let v = a.dim(-1);
    (0..v)
        .map(|j| (a.at(&[b, t, j]).to_f64() - c.at(&[b2, t, j]).to_f64()).abs())
        .fold(0.0, f64::max)
}

fn small(norm: NormKind, placement: Placement) -> ModelConfig {
    ModelConfig {
        d_model: 16,
        heads: 2,
        d_ff: 32,
        encoder_layers: 2,
        decoder_layers: 2,
        norm: norm.name(),
        placement,
        max_len: 16,
        ..ModelConfig::tiny(10, 10)
    }
}

// ---------------------------------------------------------------------------
// Causal property
// ---------------------------------------------------------------------------

/// For every t: replacing the decoder input after t changes no logit at
/// positions <= t (and does change some later one).
fn check_causal<T: Float>(m: &Transformer<T>, train: bool, tol: f64) {
    let src = TokenBatch::padded(&[vec![3, 4, 5, 6, 7], vec![8, 9, 3]], PAD);
    let tgt = TokenBatch::padded(&[vec![BOS, 4, 5, 6, 7, 8], vec![BOS, 9, 8, 7]], PAD);
    let base = logits(m, &src, &tgt, train, 0);
    let t_len = tgt.len;
    for t in 0..t_len - 1 {
        let mut ids = tgt.ids.clone();
        for b in 0..2 {
            for j in t + 1..t_len {
                let k = b * t_len + j;
                ids[k] = if ids[k] == PAD {
                    PAD
                } else {
                    2 + (ids[k] + 3 + j) % 8
                };
            }
        }
        let changed = TokenBatch::new(ids, 2, t_len);
        let out = logits(m, &src, &changed, train, 0);
        for b in 0..2 {
            for j in 0..=t {
                let d = row_diff(&base, b, &out, b, j);
                assert!(
                    d <= tol,
                    "position {j} moved by {d:e} when tokens after {t} changed"
                );
            }
        }
        let later = (t + 1..t_len)
            .map(|j| row_diff(&base, 0, &out, 0, j))
            .fold(0.0, f64::max);
        assert!(
            later > 1e-4,
            "changing tokens after {t} changed nothing after it"
        );
    }
}

#[test]
fn causal_layer_norm_model_f64() {
    for placement in [Placement::Post, Placement::Pre] {
        let m = Transformer::<f64>::new(&small(NormKind::Layer, placement), 11).unwrap();
        check_causal(&m, false, 1e-12);
    }
}

#[test]
fn causal_layer_norm_model_f32() {
    let m = Transformer::<f32>::new(&small(NormKind::Layer, Placement::Post), 12).unwrap();
    check_causal(&m, false, 1e-6);
    // Train mode too (dropout 0.1, same seed in both runs: same masks).
    check_causal(&m, true, 1e-6);
}

/// In eval mode BatchNorm uses running statistics: no leak.
#[test]
fn causal_batch_norm_model_in_eval_mode() {
    let cfg = small(NormKind::Batch, Placement::Post);
    let m = Transformer::<f64>::new(&cfg, 13).unwrap();
    let src = TokenBatch::padded(&[vec![3, 4, 5]], PAD);
    let tgt = TokenBatch::padded(&[vec![BOS, 4, 5]], PAD);
    logits(&m, &src, &tgt, true, 0); // move the running statistics
    check_causal(&m, false, 1e-12);
}

/// The pitfall the BatchNorm docs describe: in train mode, batch statistics
/// let future target tokens change past logits.
#[test]
fn batch_norm_decoder_leaks_the_future_in_train_mode() {
    let cfg = ModelConfig {
        dropout: 0.0,
        ..small(NormKind::Batch, Placement::Post)
    };
    let m = Transformer::<f64>::new(&cfg, 14).unwrap();
    let src = TokenBatch::padded(&[vec![3, 4, 5, 6]], PAD);
    let tgt = TokenBatch::padded(&[vec![BOS, 4, 5, 6]], PAD);
    let changed = TokenBatch::padded(&[vec![BOS, 4, 5, 9]], PAD);
    let (a, b) = (
        logits(&m, &src, &tgt, true, 0),
        logits(&m, &src, &changed, true, 0),
    );
    assert!(
        row_diff(&a, 0, &b, 0, 0) > 1e-6,
        "no leak: BatchNorm statistics ignore the future?"
    );
    // Encoder-only BatchNorm keeps the decoder causal in train mode.
    let cfg = ModelConfig {
        norm_scope: NormScope::EncoderOnly,
        ..cfg
    };
    let m = Transformer::<f64>::new(&cfg, 14).unwrap();
    let (a, b) = (
        logits(&m, &src, &tgt, true, 0),
        logits(&m, &src, &changed, true, 0),
    );
    for t in 0..3 {
        assert!(row_diff(&a, 0, &b, 0, t) <= 1e-12);
    }
}

// ---------------------------------------------------------------------------
// Padding property
// ---------------------------------------------------------------------------

/// `seqs` each padded to `len` (at least the longest).
fn padded_to(seqs: &[Vec<usize>], len: usize) -> TokenBatch {
    let mut ids = Vec::new();
    for s in seqs {
        ids.extend_from_slice(s);
        ids.extend(std::iter::repeat_n(PAD, len - s.len()));
    }
    TokenBatch::new(ids, seqs.len(), len)
}

fn padding_sources() -> (Vec<Vec<usize>>, TokenBatch) {
    let src = vec![vec![3, 4, 5, 6, 7], vec![8, 9, 3]];
    let tgt = TokenBatch::padded(&[vec![BOS, 4, 5, 6], vec![BOS, 9, 8]], PAD);
    (src, tgt)
}

/// Padding a source to 5 or to 7 changes no logit, for LayerNorm (eval and
/// train) and for BatchNorm (train: the statistics skip padding; eval).
#[test]
fn the_amount_of_source_padding_changes_nothing() {
    let (src, tgt) = padding_sources();
    let (short, long) = (padded_to(&src, 5), padded_to(&src, 7));
    for norm in [NormKind::Layer, NormKind::Batch] {
        for placement in [Placement::Post, Placement::Pre] {
            let cfg = ModelConfig {
                dropout: 0.0,
                ..small(norm, placement)
            };
            let m = Transformer::<f32>::new(&cfg, 21).unwrap();
            for train in [false, true] {
                let a = logits(&m, &short, &tgt, train, 5);
                let b = logits(&m, &long, &tgt, train, 5);
                for bi in 0..2 {
                    for t in 0..tgt.len {
                        let d = row_diff(&a, bi, &b, bi, t);
                        assert!(
                            d <= 1e-5,
                            "{norm:?} {placement:?} train={train}: [{bi}, {t}] moved by {d:e}"
                        );
                    }
                }
            }
        }
    }
}

/// What the padded positions hold cannot matter: changing the padding
/// token's embedding row (the only thing a padded source position carries
/// besides its position) changes no logit.
#[test]
fn values_at_padded_source_positions_change_nothing() {
    let (src, tgt) = padding_sources();
    let src = padded_to(&src, 6);
    for norm in [NormKind::Layer, NormKind::Batch] {
        let cfg = ModelConfig {
            dropout: 0.0,
            tying: Tying::None,
            ..small(norm, Placement::Post)
        };
        let mut m = Transformer::<f32>::new(&cfg, 22).unwrap();
        for train in [false, true] {
            let a = logits(&m, &src, &tgt, train, 5);
            let w = &mut m.src_embed.weight.value;
            for j in 0..w.dim(1) {
                w.data_mut()[PAD * 16 + j] += 3.0 + j as f32;
            }
            let b = logits(&m, &src, &tgt, train, 5);
            for bi in 0..2 {
                for t in 0..tgt.len {
                    let d = row_diff(&a, bi, &b, bi, t);
                    assert!(
                        d <= 1e-6,
                        "{norm:?} train={train}: [{bi}, {t}] moved by {d:e}"
                    );
                }
            }
        }
    }
}

/// With LayerNorm, a sequence's logits do not depend on its batch mates
/// (decoded alone, without padding, or beside a longer sequence).
#[test]
fn batch_mates_change_nothing_with_layer_norm() {
    let (src, _) = padding_sources();
    let tgt_b = vec![BOS, 9, 8];
    let alone = logits(
        &Transformer::<f32>::new(&small(NormKind::Layer, Placement::Post), 23).unwrap(),
        &padded_to(&src[1..], 3),
        &TokenBatch::padded(std::slice::from_ref(&tgt_b), PAD),
        false,
        0,
    );
    let m = Transformer::<f32>::new(&small(NormKind::Layer, Placement::Post), 23).unwrap();
    for other_tgt in [vec![BOS, 4, 5, 6, 7], vec![BOS, 4]] {
        let tgt = TokenBatch::padded(&[other_tgt, tgt_b.clone()], PAD);
        let both = logits(&m, &padded_to(&src, 5), &tgt, false, 0);
        for t in 0..tgt_b.len() {
            let d = row_diff(&alone, 0, &both, 1, t);
            assert!(
                d <= 1e-5,
                "position {t} moved by {d:e} beside another sequence"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Determinism
// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// Recorded attention (Ctx::keep_attention)
// ---------------------------------------------------------------------------

/// A 2 + 2 layer post-LN model without dropout: two layers per stack, so
/// the names must carry the layer index, and post-LN, so each encoder
/// layer's self-attention reads that layer's input (recorded as a hidden
/// state) as it is.
fn two_layer(d_model: usize) -> ModelConfig {
    ModelConfig {
        d_model,
        heads: 2,
        d_ff: 2 * d_model,
        encoder_layers: 2,
        decoder_layers: 2,
        dropout: 0.0,
        attention_dropout: 0.0,
        ffn_dropout: 0.0,
        placement: Placement::Post,
        max_len: 16,
        ..ModelConfig::tiny(8, 8)
    }
}

/// Logits of one eval-mode forward, with the context recording attention
/// weights and hidden states or not; the recorded tensors come back too.
#[allow(clippy::type_complexity)]
fn forward_recording<T: Float>(
    m: &Transformer<T>,
    src: &TokenBatch,
    tgt: &TokenBatch,
    record: bool,
) -> (
    Tensor<T>,
    Vec<(String, Tensor<T>)>,
    Vec<(String, Tensor<T>)>,
) {
    let tape = Tape::no_grad();
    let ctx = Ctx::eval(&tape);
    if record {
        ctx.keep_attention();
        ctx.keep_hidden();
    }
    assert_eq!(ctx.keeps_attention(), record);
    let logits = m.forward(&ctx, src, tgt).value(); // (B, T, V)
    let (attn, hidden) = (ctx.take_attention(), ctx.take_hidden());
    // Taking empties the record.
    assert!(ctx.take_attention().is_empty());
    (logits, attn, hidden)
}

/// `Ctx::keep_attention` on a whole model: one (B, H, Tq, Tk) tensor per
/// attention block, named by stack, layer and block, in forward order;
/// every row a distribution (sums to 1) with exact zeros on padded source
/// keys (encoder self- and cross-attention), on future and padded target
/// keys (decoder self-attention) and positive weight elsewhere; the
/// encoder's weights are those its blocks compute from the recorded layer
/// inputs; and the recording path (composed attention) gives the logits of
/// the plain one (fused attention): 1e-12 in f64, 1e-5 in f32. Without
/// `keep_attention` nothing is recorded.
#[test]
fn recorded_attention_is_one_distribution_per_block_and_changes_nothing() {
    let cfg = two_layer(8);
    let m = Transformer::<f64>::new(&cfg, 4).unwrap();
    let src = TokenBatch::padded(&[vec![3, 4, 5, 6, 2], vec![5, 3]], PAD); // (B, S) = (2, 5)
    let tgt = TokenBatch::padded(&[vec![BOS, 3, 4, 5], vec![BOS, 5]], PAD); // (B, T) = (2, 4)
    let (b, s, t, h) = (2, 5, 4, 2);
    let (plain, none, _) = forward_recording(&m, &src, &tgt, false);
    assert!(none.is_empty(), "recorded without keep_attention");
    let (logits, attn, hidden) = forward_recording(&m, &src, &tgt, true);
    assert!(
        logits.max_abs_diff(&plain) <= 1e-12,
        "recording attention changed the logits by {}",
        logits.max_abs_diff(&plain)
    );

    let names: Vec<&str> = attn.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "encoder.layers.0.self_attn",
            "encoder.layers.1.self_attn",
            "decoder.layers.0.self_attn",
            "decoder.layers.0.cross_attn",
            "decoder.layers.1.self_attn",
            "decoder.layers.1.cross_attn",
        ]
    );
    let src_pad = |bi: usize, j: usize| src.row(bi)[j] == PAD;
    let tgt_pad = |bi: usize, j: usize| tgt.row(bi)[j] == PAD;
    for (name, w) in &attn {
        // (Tq, Tk) and which keys are masked for query i of sequence bi.
        let (tq, tk, masked): (usize, usize, &dyn Fn(usize, usize, usize) -> bool) =
            if name.starts_with("encoder") {
                (s, s, &|bi, _, j| src_pad(bi, j))
            } else if name.ends_with("cross_attn") {
                (t, s, &|bi, _, j| src_pad(bi, j))
            } else {
                (t, t, &|bi, i, j| j > i || tgt_pad(bi, j))
            };
        assert_eq!(w.shape(), &[b, h, tq, tk], "{name}: (B, H, Tq, Tk)");
        for bi in 0..b {
            for hi in 0..h {
                for i in 0..tq {
                    let mut sum = 0.0;
                    for j in 0..tk {
                        let wij = w.at(&[bi, hi, i, j]);
                        if masked(bi, i, j) {
                            assert_eq!(wij, 0.0, "{name}: masked key {j} of query {i}, seq {bi}");
                        } else {
                            assert!(wij > 0.0, "{name}: key {j} of query {i}, seq {bi}: {wij}");
                        }
                        sum += wij;
                    }
                    assert!(
                        (sum - 1.0).abs() <= 1e-12,
                        "{name}: row {i} of head {hi}, seq {bi} sums to {sum}"
                    );
                }
            }
        }
    }

    // Each encoder record is its own layer's weights: recompute them from
    // the layer's input (post-LN: the block reads it as it is).
    let mask = padding_mask::<f64>(&src.ids, &src.shape(), PAD); // (B, 1, 1, S)
    let input = |name: &str| &hidden.iter().find(|(n, _)| n == name).unwrap().1;
    for (i, x) in [input("encoder.input"), input("encoder.layers.0")]
        .into_iter()
        .enumerate()
    {
        let tape = Tape::no_grad();
        let ctx = Ctx::eval(&tape);
        let x = tape.constant(x.clone()); // (B, S, D)
        let (_, w) = m.encoder.layers[i]
            .self_attn
            .forward_with_weights(&ctx, x, x, Some(&mask));
        let w = w.unwrap().value(); // (B, H, S, S)
        let recorded = &attn[i].1;
        assert!(
            w.max_abs_diff(recorded) <= 1e-12,
            "{}: differs from layer {i}'s own weights by {}",
            attn[i].0,
            w.max_abs_diff(recorded)
        );
    }

    // f32: the composed path agrees with the fused one to f32 precision.
    let m32 = Transformer::<f32>::new(&two_layer(32), 4).unwrap();
    let (plain, _, _) = forward_recording(&m32, &src, &tgt, false);
    let (logits, attn, _) = forward_recording(&m32, &src, &tgt, true);
    assert_eq!(attn.len(), 6);
    let scale = plain.data().iter().fold(1.0f32, |a, v| a.max(v.abs()));
    assert!(
        logits.max_abs_diff(&plain) <= 1e-5 * f64::from(scale),
        "f32: recording attention changed the logits by {} (largest logit {scale})",
        logits.max_abs_diff(&plain)
    );
}

#[test]
fn same_seed_same_bits_different_seed_different_model() {
    let cfg = small(NormKind::Layer, Placement::Post);
    let (src, tgt) = padding_sources();
    let src = padded_to(&src, 5);
    let a = Transformer::<f32>::new(&cfg, 1).unwrap();
    let b = Transformer::<f32>::new(&cfg, 1).unwrap();
    let c = Transformer::<f32>::new(&cfg, 2).unwrap();
    for train in [false, true] {
        let la = logits(&a, &src, &tgt, train, 9);
        assert!(la.all_finite());
        assert!(
            la.bit_eq(&logits(&a, &src, &tgt, train, 9)),
            "twice on one model"
        );
        assert!(
            la.bit_eq(&logits(&b, &src, &tgt, train, 9)),
            "two models of one seed"
        );
        assert!(
            la.max_abs_diff(&logits(&c, &src, &tgt, train, 9)) > 1e-3,
            "seeds 1 and 2 agree"
        );
    }
    let mut pa = Transformer::<f32>::new(&cfg, 1).unwrap();
    let mut pb = Transformer::<f32>::new(&cfg, 1).unwrap();
    for ((na, a), (nb, b)) in named_params(&mut pa).iter().zip(&named_params(&mut pb)) {
        assert_eq!(na, nb);
        assert!(a.value.bit_eq(&b.value), "{na}");
    }
}

#[test]
fn train_mode_dropout_is_fixed_by_the_ctx_seed() {
    let cfg = small(NormKind::Layer, Placement::Post);
    assert!(cfg.dropout > 0.0);
    let m = Transformer::<f32>::new(&cfg, 3).unwrap();
    let (src, tgt) = padding_sources();
    let src = padded_to(&src, 5);
    let a = logits(&m, &src, &tgt, true, 100);
    assert!(
        a.bit_eq(&logits(&m, &src, &tgt, true, 100)),
        "same ctx seed, different dropout"
    );
    assert!(
        a.max_abs_diff(&logits(&m, &src, &tgt, true, 101)) > 1e-4,
        "ctx seed ignored"
    );
    let eval = logits(&m, &src, &tgt, false, 100);
    assert!(a.max_abs_diff(&eval) > 1e-4, "train mode without dropout");
    assert!(
        eval.bit_eq(&logits(&m, &src, &tgt, false, 7)),
        "eval mode depends on the seed"
    );

    // Gradients are reproducible too.
    let mut m = m;
    let params = named_params(&mut m);
    let labels: Vec<usize> = tgt
        .ids
        .iter()
        .map(|&i| if i == PAD { PAD } else { (i + 1) % 10 })
        .collect();
    let grads = |seed: u64| {
        let tape = Tape::new();
        let ctx = Ctx::train(&tape, seed);
        let loss = m.loss(m.forward(&ctx, &src, &tgt), &labels, 0.1);
        let g = tape.backward(loss);
        params
            .iter()
            .map(|(_, p)| g.param(p).cloned())
            .collect::<Vec<_>>()
    };
    let (g1, g2) = (grads(5), grads(5));
    assert!(!g1.is_empty());
    for (a, b) in g1.iter().zip(&g2) {
        let (a, b) = (
            a.as_ref().expect("every parameter has a gradient"),
            b.as_ref().unwrap(),
        );
        assert!(a.bit_eq(b));
    }
}

/// A decoder-only model (encoder_layers = 0, GPT-style): no cross-attention
/// parameters, the built-in count is exact, it is causal (a later token
/// never changes an earlier position's logits), it trains through the
/// `Trainer` on (B, 0) sources, and greedy decoding and checkpoints work.
#[test]
fn a_decoder_only_model_is_causal_trains_decodes_and_checkpoints() {
    use transformer::schedule::Schedule;
    use transformer::{Module, TrainConfig, Trainer};
    let cfg = ModelConfig {
        encoder_layers: 0,
        dropout: 0.0,
        ..ModelConfig::tiny(12, 12)
    };
    let mut model = Transformer::<f64>::new(&cfg, 3).unwrap();
    let mut names = Vec::new();
    model.visit(&mut transformer::Visitor::new(&mut |n, _| {
        names.push(n.to_string())
    }));
    assert!(names.iter().all(|n| !n.contains("cross_attn")), "{names:?}");
    assert_eq!(
        cfg.builtin_param_count(),
        transformer::param_count(&mut model) as u128
    );
    // Causality: positions 0..2 do not see token 3.
    let logits = |ids: Vec<usize>| {
        let tape = Tape::new();
        let ctx = Ctx::eval(&tape);
        let none = TokenBatch::new(vec![], 1, 0);
        model
            .forward(&ctx, &none, &TokenBatch::new(ids, 1, 4))
            .value()
            .data()
            .to_vec()
    };
    let (a, b) = (logits(vec![1, 5, 6, 7]), logits(vec![1, 5, 6, 9]));
    assert_eq!(a[..3 * 12], b[..3 * 12]);
    assert_ne!(a[3 * 12..], b[3 * 12..]);

    let train = TrainConfig {
        schedule: Schedule::Constant { lr: 3e-3 },
        ..TrainConfig::paper(32)
    };
    let mut t = Trainer::new(cfg, train, 0).unwrap();
    let none = TokenBatch::new(vec![], 2, 0);
    let tgt_in = TokenBatch::padded(&[vec![1, 4, 5, 6], vec![1, 7, 8, 9]], 0);
    let labels = [4, 5, 6, 2, 7, 8, 9, 2];
    let first = t.step(&none, &tgt_in, &labels).loss;
    for _ in 0..60 {
        t.step(&none, &tgt_in, &labels);
    }
    assert!(t.step(&none, &tgt_in, &labels).loss < first / 2.0);
    let out = t.model.greedy_decode(&TokenBatch::new(vec![], 1, 0), 1, 2);
    assert!(out[0].tokens.len() <= t.model.config.max_len);
    let dir = std::env::temp_dir().join(format!("decoder-only-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("lm.ckpt");
    t.save(&path).unwrap();
    let mut back = Trainer::resume(&path).unwrap();
    assert_eq!(
        back.step(&none, &tgt_in, &labels),
        t.step(&none, &tgt_in, &labels)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
