//! The fused fast-path ops added for speed (issue 4), each against its
//! simple reference composition from primitives: `linear` (= matmul + add)
//! and `attention` (= split heads, matmul_t, scale, masked_fill, softmax,
//! matmul, merge heads). Values and gradients, in f64; plus a literal
//! forward value and a proptest gradcheck over shapes for each.

use autograd::check::{GradcheckConfig, gradcheck};
use autograd::{Tape, Tensor, Var};
use proptest::prelude::*;

/// The reference: multi-head attention from primitives.
fn attention_composed<'t>(
    q: Var<'t, f64>,
    k: Var<'t, f64>,
    v: Var<'t, f64>,
    heads: usize,
    mask: Option<&Tensor<f64>>,
) -> Var<'t, f64> {
    let dk = q.dim(-1) / heads;
    let mut s = q.split_heads(heads).matmul_t(k.split_heads(heads)) * (1.0 / (dk as f64).sqrt()); // (B, H, Tq, Tk)
    if let Some(m) = mask {
        s = s.masked_fill(m, f64::NEG_INFINITY);
    }
    s.softmax().matmul(v.split_heads(heads)).merge_heads() // (B, Tq, D)
}

/// Runs `f` on a tape with `inputs` as leaves; returns the output and the
/// gradients of `sum(out * r)` for a fixed `r`.
fn value_and_grads(
    inputs: &[Tensor<f64>],
    f: impl for<'t> Fn(&[Var<'t, f64>]) -> Var<'t, f64>,
) -> (Tensor<f64>, Vec<Tensor<f64>>) {
    let tape = Tape::new();
    let vars: Vec<Var<f64>> = inputs.iter().map(|t| tape.leaf(t.clone())).collect();
    let out = f(&vars);
    let r = Tensor::rand_uniform(&out.shape(), -1.0, 1.0, 99);
    let grads = tape.backward_with(out, r);
    let gs = vars.iter().map(|&v| grads.wrt(v).clone()).collect();
    (out.value(), gs)
}

fn assert_same(a: &(Tensor<f64>, Vec<Tensor<f64>>), b: &(Tensor<f64>, Vec<Tensor<f64>>)) {
    assert!(
        a.0.allclose(&b.0, 1e-12, 1e-12),
        "values differ by {}",
        a.0.max_abs_diff(&b.0)
    );
    for (i, (x, y)) in a.1.iter().zip(&b.1).enumerate() {
        assert!(
            x.allclose(y, 1e-10, 1e-12),
            "gradient {i} differs by {}",
            x.max_abs_diff(y)
        );
    }
}

/// A causal mask (1, 1, T, T) combined with a key padding mask (B, 1, 1, T):
/// the last key of batch element 0 is padding.
fn causal_and_padding(b: usize, t: usize) -> Tensor<f64> {
    let causal = Tensor::from_vec(
        (0..t * t)
            .map(|i| if i % t > i / t { 1.0 } else { 0.0 })
            .collect(),
        &[1, 1, t, t],
    );
    let mut pad = vec![0.0; b * t];
    pad[t - 1] = 1.0;
    let pad = Tensor::from_vec(pad, &[b, 1, 1, t]);
    causal.zip_map(&pad, "mask", |x, y| x.max(y))
}

#[test]
fn linear_forward_value() {
    // x (2, 2), W (2, 3), b (3): hand-computed x W + b.
    let tape: Tape<f64> = Tape::new();
    let x = tape.constant(Tensor::from_vec(vec![1.0, 2.0, -1.0, 0.5], &[2, 2]));
    let w = tape.constant(Tensor::from_vec(
        vec![1.0, 0.0, 2.0, -1.0, 3.0, 0.5],
        &[2, 3],
    ));
    let b = tape.constant(Tensor::from_vec(vec![0.1, 0.2, 0.3], &[3]));
    let y = x.linear(w, Some(b)).value();
    let want = [
        -1.0 + 0.1,
        6.0 + 0.2,
        3.0 + 0.3,
        -1.5 + 0.1,
        1.5 + 0.2,
        -1.75 + 0.3,
    ];
    for (a, e) in y.data().iter().zip(want) {
        assert!((a - e).abs() < 1e-15, "{:?}", y);
    }
    assert_eq!(
        x.linear(w, None).value().data(),
        &[-1.0, 6.0, 3.0, -1.5, 1.5, -1.75]
    );
}

#[test]
fn attention_forward_value() {
    // One head, D = 1, scale 1: scores q*k. q = [0, ln 3], k = [0, 1], v = [1, 5].
    // Row 0: equal scores -> (1 + 5) / 2 = 3. Row 1: weights (1, 3) / 4 -> (1 + 15) / 4 = 4.
    let tape: Tape<f64> = Tape::new();
    let q = tape.constant(Tensor::from_vec(vec![0.0, 3f64.ln()], &[1, 2, 1]));
    let k = tape.constant(Tensor::from_vec(vec![0.0, 1.0], &[1, 2, 1]));
    let v = tape.constant(Tensor::from_vec(vec![1.0, 5.0], &[1, 2, 1]));
    let y = q.attention(k, v, 1, None).value();
    assert!(
        (y.data()[0] - 3.0).abs() < 1e-14 && (y.data()[1] - 4.0).abs() < 1e-14,
        "{y:?}"
    );
    // Causal: row 0 sees only key 0 -> v0 = 1.
    let causal = Tensor::from_vec(vec![0.0, 1.0, 0.0, 0.0], &[1, 1, 2, 2]);
    let y = q.attention(k, v, 1, Some(&causal)).value();
    assert!(
        (y.data()[0] - 1.0).abs() < 1e-15 && (y.data()[1] - 4.0).abs() < 1e-14,
        "{y:?}"
    );
    // A fully masked row gives zeros, not NaN.
    let all = Tensor::ones(&[1, 1, 1, 2]);
    assert_eq!(q.attention(k, v, 1, Some(&all)).value().data(), &[0.0, 0.0]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn linear_equals_matmul_plus_bias_and_gradchecks(
        (lead, k, n) in (prop::collection::vec(1usize..4, 1..3), 1usize..5, 1usize..5),
        bias in any::<bool>(),
        seed in 0u64..10_000,
    ) {
        let mut xs = lead.clone();
        xs.push(k);
        let inputs = vec![
            Tensor::randn(&xs, 0.0, 1.0, seed),
            Tensor::randn(&[k, n], 0.0, 1.0, seed + 1),
            Tensor::randn(&[n], 0.0, 1.0, seed + 2),
        ];
        let fused = value_and_grads(&inputs, |v| v[0].linear(v[1], Some(v[2])));
        let composed = value_and_grads(&inputs, |v| v[0].matmul(v[1]) + v[2]);
        assert_same(&fused, &composed);
        let report = if bias {
            gradcheck(|_, v| v[0].linear(v[1], Some(v[2])), &inputs, &GradcheckConfig::default())
        } else {
            gradcheck(|_, v| v[0].linear(v[1], None), &inputs[..2], &GradcheckConfig::default())
        };
        prop_assert!(report.passed(), "{}", report);
    }

    #[test]
    fn attention_equals_composition_and_gradchecks(
        (b, tq, tk, heads, dk) in (1usize..3, 1usize..5, 1usize..5, 1usize..4, 1usize..4),
        masked in any::<bool>(),
        seed in 0u64..10_000,
    ) {
        let d = heads * dk;
        let inputs = vec![
            Tensor::randn(&[b, tq, d], 0.0, 1.0, seed),
            Tensor::randn(&[b, tk, d], 0.0, 1.0, seed + 1),
            Tensor::randn(&[b, tk, d], 0.0, 1.0, seed + 2),
        ];
        // Self-attention shapes get the causal + padding mask.
        let mask = (masked && tq == tk).then(|| causal_and_padding(b, tq));
        let m = mask.as_ref();
        let fused = value_and_grads(&inputs, |v| v[0].attention(v[1], v[2], heads, m));
        let composed = value_and_grads(&inputs, |v| attention_composed(v[0], v[1], v[2], heads, m));
        assert_same(&fused, &composed);
        let report = gradcheck(|_, v| v[0].attention(v[1], v[2], heads, m), &inputs, &GradcheckConfig::default());
        prop_assert!(report.passed(), "{}", report);
    }

    #[test]
    fn attention_with_broadcast_mask_shapes(
        (b, t, heads) in (1usize..3, 1usize..5, 1usize..3),
        seed in 0u64..10_000,
    ) {
        let d = 2 * heads;
        let inputs = vec![
            Tensor::randn(&[b, t, d], 0.0, 1.0, seed),
            Tensor::randn(&[b, t, d], 0.0, 1.0, seed + 1),
            Tensor::randn(&[b, t, d], 0.0, 1.0, seed + 2),
        ];
        // (T, T), (1, T) and (B, H, T, T) masks all broadcast to the scores.
        let full = Tensor::rand_uniform(&[b, heads, t, t], 0.0, 1.0, seed + 3).map(|x| if x < 0.3 { 1.0 } else { 0.0 });
        for mask in [Tensor::<f64>::zeros(&[t, t]), Tensor::zeros(&[1, t]), full] {
            let fused = value_and_grads(&inputs, |v| v[0].attention(v[1], v[2], heads, Some(&mask)));
            let composed = value_and_grads(&inputs, |v| attention_composed(v[0], v[1], v[2], heads, Some(&mask)));
            assert_same(&fused, &composed);
        }
    }
}

#[test]
#[should_panic(expected = "linear: input [2, 3] does not fit weight [4, 5]")]
fn linear_shape_error_names_op_and_shapes() {
    let tape: Tape = Tape::new();
    let x = tape.constant(Tensor::zeros(&[2, 3]));
    let w = tape.constant(Tensor::zeros(&[4, 5]));
    x.linear(w, None);
}

#[test]
#[should_panic(expected = "attention: q [1, 2, 4], k [1, 3, 6]")]
fn attention_shape_error_names_op_and_shapes() {
    let tape: Tape = Tape::new();
    let q = tape.constant(Tensor::zeros(&[1, 2, 4]));
    let k = tape.constant(Tensor::zeros(&[1, 3, 6]));
    q.attention(k, k, 2, None);
}
