//! Every fused op equals its composition from primitives, in value AND in
//! gradient (f64, relative tolerance 1e-10), over proptest-generated shapes:
//! softmax, log_softmax, layer_norm, cross_entropy (label smoothing and an
//! ignored padding id), linear and multi-head attention (with masks and
//! with an additive bias). Plus the stability of softmax / log_softmax /
//! cross_entropy for logits around +-1e4, in f32 and f64.

use autograd::check::strategies::{any_tensor, shape, tensor};
use autograd::{Float, Tape, Tensor, Var, numel};
use proptest::collection::vec as pvec;
use proptest::prelude::*;
use tests::util::{assert_close, assert_values, t32, t64};

/// Relative tolerance between a fused op and its composition.
const TOL: f64 = 1e-10;

/// The gradcheck-style signature: builds a computation from input leaves.
type Build = dyn for<'t> Fn(&'t Tape<f64>, &[Var<'t, f64>]) -> Var<'t, f64>;

/// The output value and the gradient of every input, for the output
/// gradient `seed` (a fixed random tensor of the output's shape).
fn value_and_grads(
    f: &Build,
    inputs: &[Tensor<f64>],
    seed: u64,
) -> (Tensor<f64>, Vec<Tensor<f64>>) {
    let tape = Tape::new();
    let vars: Vec<Var<f64>> = inputs.iter().map(|t| tape.leaf(t.clone())).collect();
    let out = f(&tape, &vars);
    let g = Tensor::rand_uniform(&out.shape(), -1.0, 1.0, seed);
    let grads = tape.backward_with(out, g);
    let gs = vars
        .iter()
        .zip(inputs)
        .map(|(&v, t)| {
            grads
                .get(v)
                .cloned()
                .unwrap_or_else(|| Tensor::zeros(t.shape()))
        })
        .collect();
    (out.value(), gs)
}

/// Asserts that `fused` and `composed` agree in value and in every input's
/// gradient, and that `fused` records the single op `op`.
fn assert_same(op: &str, inputs: &[Tensor<f64>], fused: &Build, composed: &Build) {
    let tape = Tape::new();
    let vars: Vec<Var<f64>> = inputs.iter().map(|t| tape.leaf(t.clone())).collect();
    assert_eq!(
        fused(&tape, &vars).op(),
        op,
        "the fused op records one `{op}` node"
    );
    let (vf, gf) = value_and_grads(fused, inputs, 17);
    let (vc, gc) = value_and_grads(composed, inputs, 17);
    assert_close(&vf, &vc, TOL, &format!("{op}: value"));
    for (i, (a, b)) in gf.iter().zip(&gc).enumerate() {
        assert_close(a, b, TOL, &format!("{op}: gradient of input {i}"));
    }
}

/// softmax over the last axis from primitives: `exp(x - max) / sum(exp(x - max))`.
fn softmax_composed<'t>(x: Var<'t, f64>) -> Var<'t, f64> {
    let e = (x - x.max(-1, true)).exp();
    e / e.sum(-1, true)
}

/// log_softmax from primitives: `(x - max) - log(sum(exp(x - max)))`.
fn log_softmax_composed<'t>(x: Var<'t, f64>) -> Var<'t, f64> {
    let s = x - x.max(-1, true);
    s - s.exp().sum(-1, true).log()
}

/// layer_norm from primitives: `(x - mean) / sqrt(var + eps) * gain + bias`
/// with the biased variance `mean((x - mean)^2)`.
fn layer_norm_composed<'t>(
    x: Var<'t, f64>,
    gain: Var<'t, f64>,
    bias: Var<'t, f64>,
    eps: f64,
) -> Var<'t, f64> {
    let xc = x - x.mean(-1, true);
    let var = (xc * xc).mean(-1, true);
    xc / (var + eps).sqrt() * gain + bias
}

/// The target distribution of cross-entropy as a constant (N, V) tensor:
/// `q = (1 - eps) onehot(y) + eps / V` for kept rows, zero rows for padding.
fn target_distribution(
    targets: &[usize],
    v: usize,
    ignore: Option<usize>,
    eps: f64,
) -> Tensor<f64> {
    let mut q = vec![0.0; targets.len() * v];
    for (row, &t) in targets.iter().enumerate() {
        if Some(t) == ignore {
            continue;
        }
        for (j, qj) in q[row * v..(row + 1) * v].iter_mut().enumerate() {
            *qj = eps / v as f64 + if j == t { 1.0 - eps } else { 0.0 };
        }
    }
    Tensor::from_vec(q, &[targets.len(), v])
}

/// cross_entropy without log_softmax or cross_entropy:
/// `-sum(q * log p) / n` with `log p = (x - max) - log(sum(exp(x - max)))`
/// from exp/log/sum, `q` the constant target distribution (padded rows
/// zero) and `n` the number of kept rows (the loss is 0 when there are none).
fn cross_entropy_composed<'t>(
    logits: Var<'t, f64>,
    targets: &[usize],
    ignore: Option<usize>,
    eps: f64,
) -> Var<'t, f64> {
    let v = logits.dim(-1);
    let x = logits.reshape(&[targets.len(), v]); // (N, V)
    let s = x - x.max(-1, true);
    let logp = s - s.exp().sum(-1, true).log();
    let q = logits
        .tape()
        .constant(target_distribution(targets, v, ignore, eps));
    let n = targets.iter().filter(|&&t| Some(t) != ignore).count();
    let inv_n = if n > 0 { 1.0 / n as f64 } else { 0.0 };
    -(logp * q).sum_all() * inv_n
}

/// linear from primitives: `x W (+ b)` with matmul and a broadcast add.
fn linear_composed<'t>(x: Var<'t, f64>, w: Var<'t, f64>, b: Option<Var<'t, f64>>) -> Var<'t, f64> {
    let y = x.matmul(w);
    match b {
        Some(b) => y + b,
        None => y,
    }
}

/// Multi-head attention from primitives: split heads, `Q K^T / sqrt(Dk)`,
/// mask to -inf, softmax, times V, merge heads.
fn attention_composed<'t>(
    q: Var<'t, f64>,
    k: Var<'t, f64>,
    v: Var<'t, f64>,
    heads: usize,
    mask: Option<&Tensor<f64>>,
) -> Var<'t, f64> {
    let dk = q.dim(-1) / heads;
    let scores = q.split_heads(heads).matmul_t(k.split_heads(heads)) * (1.0 / (dk as f64).sqrt()); // (B, H, Tq, Tk)
    let scores = match mask {
        Some(m) => scores.masked_fill(m, f64::NEG_INFINITY),
        None => scores,
    };
    scores.softmax().matmul(v.split_heads(heads)).merge_heads()
}

/// Biased multi-head attention from primitives: split heads,
/// `Q K^T / sqrt(Dk)`, `+ bias` (broadcast add), mask to -inf, softmax,
/// times V, merge heads.
fn attention_biased_composed<'t>(
    q: Var<'t, f64>,
    k: Var<'t, f64>,
    v: Var<'t, f64>,
    heads: usize,
    mask: Option<&Tensor<f64>>,
    bias: Var<'t, f64>,
) -> Var<'t, f64> {
    let dk = q.dim(-1) / heads;
    let scores = q.split_heads(heads).matmul_t(k.split_heads(heads)) * (1.0 / (dk as f64).sqrt()); // (B, H, Tq, Tk)
    let scores = scores + bias;
    let scores = match mask {
        Some(m) => scores.masked_fill(m, f64::NEG_INFINITY),
        None => scores,
    };
    scores.softmax().matmul(v.split_heads(heads)).merge_heads()
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::with_cases(128) })]

    #[test]
    fn softmax_equals_its_composition(x in any_tensor(3, 5, -4.0, 4.0)) {
        assert_same("softmax", &[x], &|_, v| v[0].softmax(), &|_, v| softmax_composed(v[0]));
    }

    #[test]
    fn log_softmax_equals_its_composition(x in any_tensor(3, 5, -4.0, 4.0)) {
        assert_same("log_softmax", &[x], &|_, v| v[0].log_softmax(), &|_, v| log_softmax_composed(v[0]));
    }

    #[test]
    fn layer_norm_equals_its_composition(
        (x, gain, bias) in shape(3, 5).prop_flat_map(|s| {
            let d = s[s.len() - 1];
            (tensor(s, -3.0, 3.0), tensor(vec![d], -2.0, 2.0), tensor(vec![d], -2.0, 2.0))
        }),
        eps in prop_oneof![Just(1e-5), Just(1e-3), Just(0.5)],
    ) {
        assert_same(
            "layer_norm",
            &[x, gain, bias],
            &move |_, v| v[0].layer_norm(v[1], v[2], eps),
            &move |_, v| layer_norm_composed(v[0], v[1], v[2], eps),
        );
    }

    /// Logits (B, T, V) with targets in 0..V, the padding id 0 forced into
    /// the targets (and, with `all_pad`, every target padding).
    #[test]
    fn cross_entropy_equals_its_composition(
        (logits, mut targets, pad_at) in (1..=3usize, 1..=4usize, 1..=5usize).prop_flat_map(|(b, t, v)| {
            (tensor(vec![b, t, v], -4.0, 4.0), pvec(0..v, b * t), 0..b * t)
        }),
        eps in prop_oneof![Just(0.0), 0.0..0.5f64],
        ignore in prop_oneof![Just(None), Just(Some(0usize))],
        all_pad in proptest::bool::weighted(0.05),
    ) {
        targets[pad_at] = 0;
        if all_pad {
            targets.iter_mut().for_each(|t| *t = 0);
        }
        let (t1, t2) = (targets.clone(), targets);
        assert_same(
            "cross_entropy",
            &[logits],
            &move |_, v| v[0].cross_entropy(&t1, ignore, eps),
            &move |_, v| cross_entropy_composed(v[0], &t2, ignore, eps),
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::with_cases(128) })]

    #[test]
    fn linear_equals_its_composition(
        inputs in (shape(2, 4), 1..=5usize, 1..=5usize, any::<bool>()).prop_flat_map(|(lead, k, n, bias)| {
            let mut t = vec![tensor([lead, vec![k]].concat(), -2.0, 2.0), tensor(vec![k, n], -2.0, 2.0)];
            if bias {
                t.push(tensor(vec![n], -2.0, 2.0));
            }
            t
        }),
    ) {
        assert_same(
            "linear",
            &inputs,
            &|_, v| v[0].linear(v[1], v.get(2).copied()),
            &|_, v| linear_composed(v[0], v[1], v.get(2).copied()),
        );
    }

    /// q (B, Tq, D), k and v (B, Tk, D), D = H * Dk, an optional 0/1 mask
    /// of shape (Tq, Tk), (B, 1, 1, Tk) or (B, H, Tq, Tk).
    #[test]
    fn attention_equals_its_composition(
        (inputs, heads, mask) in (1..=2usize, 1..=4usize, 1..=4usize, 1..=3usize, 1..=3usize, 0..4usize)
            .prop_flat_map(|(b, tq, tk, h, dk, kind)| {
                let ms = match kind {
                    0 => vec![tq, tk],
                    1 => vec![b, 1, 1, tk],
                    _ => vec![b, h, tq, tk],
                };
                let n = if kind == 3 { 0 } else { numel(&ms) };
                let mask = pvec(proptest::bool::weighted(0.3), n).prop_map(move |bits| {
                    (!bits.is_empty()).then(|| {
                        Tensor::from_vec(bits.iter().map(|&m| if m { 1.0 } else { 0.0 }).collect(), &ms)
                    })
                });
                let d = h * dk;
                (
                    vec![tensor(vec![b, tq, d], -2.0, 2.0), tensor(vec![b, tk, d], -2.0, 2.0), tensor(vec![b, tk, d], -2.0, 2.0)],
                    Just(h),
                    mask,
                )
            }),
    ) {
        let (m1, m2) = (mask.clone(), mask);
        assert_same(
            "attention",
            &inputs,
            &move |_, v| v[0].attention(v[1], v[2], heads, m1.as_ref()),
            &move |_, v| attention_composed(v[0], v[1], v[2], heads, m2.as_ref()),
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::with_cases(128) })]

    /// As above with a bias (the fourth input) of shape (B, H, Tq, Tk),
    /// (1, H, Tq, Tk), (1, 1, Tq, Tk) or (Tq, Tk): values and the gradients
    /// of q, k, v and the bias agree.
    #[test]
    fn attention_biased_equals_its_composition(
        (inputs, heads, mask) in (1..=2usize, 1..=4usize, 1..=4usize, 1..=3usize, 1..=3usize, 0..4usize, 0..4usize)
            .prop_flat_map(|(b, tq, tk, h, dk, kind, bias_kind)| {
                let ms = match kind {
                    0 => vec![tq, tk],
                    1 => vec![b, 1, 1, tk],
                    _ => vec![b, h, tq, tk],
                };
                let bs = match bias_kind {
                    0 => vec![b, h, tq, tk],
                    1 => vec![1, h, tq, tk],
                    2 => vec![1, 1, tq, tk],
                    _ => vec![tq, tk],
                };
                let n = if kind == 3 { 0 } else { numel(&ms) };
                let mask = pvec(proptest::bool::weighted(0.3), n).prop_map(move |bits| {
                    (!bits.is_empty()).then(|| {
                        Tensor::from_vec(bits.iter().map(|&m| if m { 1.0 } else { 0.0 }).collect(), &ms)
                    })
                });
                let d = h * dk;
                (
                    vec![
                        tensor(vec![b, tq, d], -2.0, 2.0),
                        tensor(vec![b, tk, d], -2.0, 2.0),
                        tensor(vec![b, tk, d], -2.0, 2.0),
                        tensor(bs, -2.0, 2.0),
                    ],
                    Just(h),
                    mask,
                )
            }),
    ) {
        let (m1, m2) = (mask.clone(), mask);
        assert_same(
            "attention",
            &inputs,
            &move |_, v| v[0].attention_biased(v[1], v[2], heads, m1.as_ref(), Some(v[3])),
            &move |_, v| attention_biased_composed(v[0], v[1], v[2], heads, m2.as_ref(), v[3]),
        );
    }
}

/// A fixed cross-entropy case with smoothing and padding, so the comparison
/// does not depend on proptest drawing one.
#[test]
fn cross_entropy_with_smoothing_and_padding_equals_its_composition() {
    // (2, 3, 4) logits; targets with the padding id 0 twice.
    let logits = Tensor::<f64>::randn(&[2, 3, 4], 0.0, 2.0, 3);
    let targets = [3, 0, 1, 2, 0, 3];
    assert_same(
        "cross_entropy",
        &[logits],
        &move |_, v| v[0].cross_entropy(&targets, Some(0), 0.1),
        &move |_, v| cross_entropy_composed(v[0], &targets, Some(0), 0.1),
    );
}

// ---------------------------------------------------------------- stability

/// softmax of [1e4, 1e4 - 1, -1e4]: naive exp overflows; the stable one is
/// [1 / (1 + e^-1), e^-1 / (1 + e^-1), 0].
fn check_softmax_stable<T: Float>(x: Tensor<T>) {
    let tape = Tape::<T>::new();
    let v = tape.leaf(x);
    let y = v.softmax();
    assert_values(
        &y.value(),
        &[2, 3],
        &[
            0.731_058_578_630_004_9,
            0.268_941_421_369_995_1,
            0.0,
            0.0,
            0.268_941_421_369_995_1,
            0.731_058_578_630_004_9,
        ],
        1e-6,
    );
    let lp = v.log_softmax();
    let l = 0.313_261_687_518_222_86; // ln(1 + e^-1)
    assert_values(
        &lp.value(),
        &[2, 3],
        &[-l, -1.0 - l, -2e4 - l, -2e4 - l, -1.0 - l, -l],
        1e-6,
    );
    let loss = lp.sum_all() + y.sum_all() + v.cross_entropy(&[0, 2], None, 0.1);
    let g = tape.backward(loss);
    assert!(
        loss.value().all_finite() && g.wrt(v).all_finite(),
        "{:?}",
        g.wrt(v)
    );
}

#[test]
fn softmax_and_log_softmax_are_stable_around_1e4() {
    // Rows [1e4, 1e4 - 1, -1e4] and [-1e4, -1e4 + 1... mirrored: [-1e4, 1e4 - 1, 1e4].
    check_softmax_stable(t32(&[1e4, 1e4 - 1.0, -1e4, -1e4, 1e4 - 1.0, 1e4], &[2, 3]));
    check_softmax_stable(t64(&[1e4, 1e4 - 1.0, -1e4, -1e4, 1e4 - 1.0, 1e4], &[2, 3]));
    // All around -1e4 (no entry near 0): still the softmax of [0, -1, -2].
    let tape = Tape::<f32>::new();
    let x = tape.leaf(t32(&[-1e4, -1e4 - 1.0, -1e4 - 2.0], &[1, 3]));
    let e = [
        0.665_240_955_774_821_2,
        0.244_728_471_054_797_6,
        0.090_030_573_170_380_46,
    ];
    assert_values(&x.softmax().value(), &[1, 3], &e, 1e-6);
}

#[test]
fn cross_entropy_is_stable_around_1e4() {
    // Target logit 1e4 above the rest: the loss is 0 (+ smoothing terms).
    let tape = Tape::<f32>::new();
    let x = tape.leaf(t32(&[1e4, -1e4, 0.0, 5e3], &[2, 2]));
    let loss = x.cross_entropy(&[0, 1], None, 0.0);
    // Row 0: -log p_0 = 0; row 1: lse([0, 5e3]) - 5e3 = 0 (to f32 precision).
    assert_values(&loss.value(), &[], &[0.0], 1e-6);
    // With smoothing 0.2 the wrong classes count: row 0 mean(-log p) = (0 + 2e4) / 2,
    // row 1 = (5e3 + 0) / 2; loss = 0.2 * (1e4 + 2.5e3) / 2 = 1250.
    let smooth = x.cross_entropy(&[0, 1], None, 0.2);
    assert_values(&smooth.value(), &[], &[1250.0], 1e-6);
    let g = tape.backward(smooth);
    assert!(g.wrt(x).all_finite());
    // Logits [1e4, 1e4 - 1], target 0: -log p_0 = ln(1 + e^-1), to f32
    // precision (not to the precision of 1e4); with smoothing 0.2 the mean
    // term adds 0.2 * (0.5 + ln(1 + e^-1)) - 0.2 ln(1 + e^-1) = 0.1.
    let tape = Tape::<f32>::new();
    let y = tape.leaf(t32(&[1e4, 1e4 - 1.0], &[1, 2]));
    let l = 0.313_261_687_518_222_86;
    assert_values(&y.cross_entropy(&[0], None, 0.0).value(), &[], &[l], 1e-6);
    assert_values(
        &y.cross_entropy(&[0], None, 0.2).value(),
        &[],
        &[l + 0.1],
        1e-6,
    );
}
