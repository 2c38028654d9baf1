//! The f32 path against the f64 one (issue 13): training runs in f32, but
//! every gradient check runs in f64, where `exp_fast` is the library `exp`,
//! so the f32 forward and backward of the fused ops (the polynomial `exp`,
//! the f32 sums) were never value-checked. Here each fused op runs in both
//! precisions on the same inputs (drawn in f64, rounded to f32, so both
//! runs see exactly the same numbers) with the same output gradient, and
//! the f32 value and every f32 gradient must match the f64 ones.
//!
//! The tolerance is relative to the scale of each row (its largest
//! reference entry, floored at the op's natural magnitude: see `compare`)
//! and scaled by the op's condition: an f32 result carries rounding errors of a few units of
//! 2^-24 times the magnitudes it cancels, `|x - max|` in a softmax row (up
//! to the row's spread, not `|x|`: nearby values subtract exactly),
//! `|mean| / std` in a layer norm, the score spread in attention. So
//! `tol = BASE * (1 + condition)`. Inputs include offsets of 1e2 and 1e4,
//! where the f32 log-softmax once lost three digits (see `logsumexp_parts`).

use autograd::check::strategies::{shape, tensor};
use autograd::{Tape, Tensor, Var};
use proptest::prelude::*;

/// Relative tolerance per unit of condition: about 160 units of f32
/// rounding (2^-24 = 6e-8), room for the few roundings of each step of a
/// fused op and the polynomial `exp_fast`.
const BASE: f64 = 1e-5;

/// A fixed seed, so the test command checks the same draws every run; a
/// soak (`PROPTEST_CASES=n`) draws fresh ones, `PROPTEST_RNG_SEED=s`
/// replays one.
fn cfg(cases: u32) -> ProptestConfig {
    let soak = std::env::var("PROPTEST_CASES").is_ok();
    ProptestConfig {
        cases,
        failure_persistence: None,
        rng_seed: if soak {
            proptest::test_runner::RngSeed::Random
        } else {
            proptest::test_runner::RngSeed::Fixed(0x0f32)
        },
        ..ProptestConfig::default()
    }
}

/// Values rounded to f32 (and back): the inputs both precisions share.
fn f32_exact(t: &Tensor<f64>) -> Tensor<f64> {
    t.cast::<f32>().cast::<f64>()
}

/// The value and the gradients of every input of `$f` in precision `$t`,
/// seeded with `$r`, all as f64 tensors.
macro_rules! value_and_grads {
    ($t:ty, $inputs:expr, $r:expr, |$v:ident| $body:expr) => {{
        let tape = Tape::<$t>::new();
        let vars: Vec<Var<$t>> = $inputs.iter().map(|x| tape.leaf(x.cast::<$t>())).collect();
        let out = {
            let $v = &vars[..];
            $body
        };
        let grads = tape.backward_with(out, $r.cast::<$t>());
        std::iter::once(out.value().cast::<f64>())
            .chain(vars.iter().map(|&v| grads.wrt(v).cast::<f64>()))
            .collect::<Vec<Tensor<f64>>>()
    }};
}

/// Runs `$f` in f32 and in f64 on `$inputs` (rounded to f32) with the
/// output gradient `$r`, and compares every result (see the module docs).
macro_rules! assert_f32_matches_f64 {
    ($what:expr, $inputs:expr, $r:expr, $cond:expr, $unit:expr, |$v:ident| $body:expr) => {{
        let inputs: Vec<Tensor<f64>> = $inputs.iter().map(f32_exact).collect();
        let r = f32_exact(&$r);
        let lo = value_and_grads!(f32, inputs, r, |$v| $body);
        let hi = value_and_grads!(f64, inputs, r, |$v| $body);
        for (i, (a, b)) in lo.iter().zip(&hi).enumerate() {
            let what = if i == 0 {
                "value".to_string()
            } else {
                format!("gradient of input {}", i - 1)
            };
            compare(
                &format!("{}: {what}", $what),
                a,
                b,
                BASE * (1.0 + $cond),
                $unit,
            )?;
        }
    }};
}

/// Row-wise comparison of an f32 result `lo` with the f64 one `hi`: the
/// error relative to the larger of the row's largest entry and `unit`, the
/// op's natural magnitude (probabilities, output gradients in [-1, 1]). A
/// result far below `unit` comes from cancelling terms of that size (a
/// gradient `p (r - <r, p>)` with `p` near 1, a loss `-log p` with `p` near
/// 1), and f32 cannot hold it to better than 2^-24 of them.
fn compare(
    what: &str,
    lo: &Tensor<f64>,
    hi: &Tensor<f64>,
    tol: f64,
    unit: f64,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(lo.shape(), hi.shape());
    let d = hi.shape().last().copied().unwrap_or(1).max(1);
    for (row, (l, h)) in lo.data().chunks(d).zip(hi.data().chunks(d)).enumerate() {
        let scale = h.iter().fold(unit, |m: f64, x| m.max(x.abs()));
        for (j, (&a, &b)) in l.iter().zip(h).enumerate() {
            let err = (a - b).abs() / scale;
            prop_assert!(
                err <= tol,
                "{}: row {}, entry {}: f32 {:e}, f64 {:e} (error {:.2e} of the row's scale {:.2e}, tolerance {:.2e})",
                what,
                row,
                j,
                a,
                b,
                err,
                scale,
                tol
            );
        }
    }
    Ok(())
}

/// The largest spread (max - min) of a row of the last axis.
fn spread(x: &Tensor<f64>) -> f64 {
    let d = x.shape().last().copied().unwrap_or(1).max(1);
    x.data()
        .chunks(d)
        .map(|r| {
            let (lo, hi) = r
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                    (a.min(v), b.max(v))
                });
            hi - lo
        })
        .fold(0.0, f64::max)
}

/// Logits: a shape of rank 1-3 with axes up to 9, entries in [-8, 8]
/// shifted by 0, 1e2 or 1e4 (all rows alike).
fn logits() -> impl Strategy<Value = Tensor<f64>> {
    (shape(3, 9), prop_oneof![Just(0.0), Just(1e2), Just(1e4)])
        .prop_flat_map(|(s, offset)| tensor(s, -8.0, 8.0).prop_map(move |t| t.map(|v| v + offset)))
}

/// An output gradient of the shape of `x`, entries in [-1, 1].
fn seed_for(x: &Tensor<f64>, seed: u64) -> Tensor<f64> {
    Tensor::rand_uniform(x.shape(), -1.0, 1.0, seed)
}

proptest! {
    #![proptest_config(cfg(64))]

    #[test]
    fn softmax_f32_matches_f64(x in logits(), seed in any::<u64>()) {
        let r = seed_for(&x, seed);
        assert_f32_matches_f64!("softmax", [x.clone()], r, spread(&x), 1.0, |v| v[0].softmax());
    }

    #[test]
    fn log_softmax_f32_matches_f64(x in logits(), seed in any::<u64>()) {
        let r = seed_for(&x, seed);
        assert_f32_matches_f64!("log_softmax", [x.clone()], r, spread(&x), 1.0, |v| v[0].log_softmax());
    }

    /// Label smoothing 0 or 0.1, every third target the ignored padding id.
    #[test]
    fn cross_entropy_f32_matches_f64(
        x in logits(),
        smoothing in prop_oneof![Just(0.0), Just(0.1)],
        seed in any::<u64>(),
    ) {
        let v = x.shape().last().copied().unwrap();
        let rows = x.numel() / v;
        let targets: Vec<usize> = (0..rows)
            .map(|i| if i % 3 == 2 { 0 } else { (seed as usize >> (i % 32)) % v })
            .collect();
        let r = Tensor::scalar(0.75);
        // Gradients are (p - q) / n over the n counted rows.
        let n = targets.iter().filter(|&&t| t != 0).count().max(1) as f64;
        assert_f32_matches_f64!("cross_entropy", [x.clone()], r, spread(&x), 1.0 / n, |vs| {
            vs[0].cross_entropy(&targets, Some(0), smoothing)
        });
    }

    /// Rows of 2-9 features with mean up to 3 standard deviations away from
    /// zero; gain and bias random.
    #[test]
    fn layer_norm_f32_matches_f64(
        (rows, d) in (1usize..=6, 2usize..=9),
        offset in -3.0f64..3.0,
        seed in any::<u64>(),
    ) {
        let x = Tensor::randn(&[rows, d], offset, 1.0, seed); // (N, D)
        let gain = Tensor::rand_uniform(&[d], 0.5, 1.5, seed ^ 1);
        let bias = Tensor::randn(&[d], 0.0, 0.5, seed ^ 2);
        // Condition: |mean| / std of the worst row (the cancellation in
        // x - mean), and 1 / std itself (the gradient's scale).
        let cond = x
            .data()
            .chunks(d)
            .map(|r| {
                let m = r.iter().sum::<f64>() / d as f64;
                let sd = (r.iter().map(|v| (v - m).powi(2)).sum::<f64>() / d as f64).sqrt();
                (m.abs() + 1.0) / sd.max(1e-3)
            })
            .fold(0.0, f64::max);
        prop_assume!(cond < 100.0);
        let r = seed_for(&x, seed ^ 3);
        assert_f32_matches_f64!("layer_norm", [x, gain, bias], r, cond, 1.0, |v| {
            v[0].layer_norm(v[1], v[2], 1e-5)
        });
    }

    /// Multi-head attention, causal or not, with an additive bias.
    #[test]
    fn attention_f32_matches_f64(
        (b, t, heads, dk) in (1usize..=2, 1usize..=6, 1usize..=3, 1usize..=4),
        causal in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let d = heads * dk;
        let q = Tensor::randn(&[b, t, d], 0.0, 1.0, seed); // (B, T, D)
        let k = Tensor::randn(&[b, t, d], 0.0, 1.0, seed ^ 1);
        let v = Tensor::randn(&[b, t, d], 0.0, 1.0, seed ^ 2);
        let bias = Tensor::randn(&[heads, t, t], 0.0, 1.0, seed ^ 3); // (H, T, T)
        let mask = Tensor::from_vec(
            (0..t * t).map(|i| if causal && i % t > i / t { 1.0 } else { 0.0 }).collect(),
            &[t, t],
        );
        let mask32 = mask.cast::<f32>();
        // Condition: the spread of the scores, bounded by |q| |k| sqrt(Dk) + the bias.
        let max = |x: &Tensor<f64>| x.data().iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let cond = 2.0 * (max(&q) * max(&k) * (dk as f64).sqrt() + max(&bias));
        let r = seed_for(&q, seed ^ 4);
        let (m32, m64) = (&mask32, &mask);
        let inputs = [q, k, v, bias];
        let inputs: Vec<Tensor<f64>> = inputs.iter().map(f32_exact).collect();
        let rr = f32_exact(&r);
        let lo = value_and_grads!(f32, inputs, rr, |x| {
            x[0].attention_biased(x[1], x[2], heads, Some(m32), Some(x[3]))
        });
        let hi = value_and_grads!(f64, inputs, rr, |x| {
            x[0].attention_biased(x[1], x[2], heads, Some(m64), Some(x[3]))
        });
        for (i, (a, b)) in lo.iter().zip(&hi).enumerate() {
            compare(&format!("attention: result {i}"), a, b, BASE * (1.0 + cond), 1.0)?;
        }
    }
}
