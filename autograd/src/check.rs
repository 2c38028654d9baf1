//! Gradient checking, as a public feature: the project's own tests use
//! exactly this.
//!
//! [`gradcheck`] compares the analytic gradient (one reverse pass) with
//! central finite differences, in f64, for every element of every input. A
//! non-scalar output `y` is reduced to the scalar `L = sum(y * r)` with a
//! fixed random `r`, so every output entry is checked at once.
//!
//! The error of one element is `|analytic - numeric| / max(|analytic|,
//! |numeric|, floor)`: relative, except that gradients smaller than `floor`
//! (default `1e-3`) are compared absolutely against `floor`, because central
//! differences carry an absolute rounding error of about `1e-16 |L| / step`
//! that no relative test can pass near zero.

use std::fmt;

use crate::{Tape, Tensor, Var};

/// Tolerances of [`gradcheck`].
#[derive(Clone, Debug)]
pub struct GradcheckConfig {
    /// Finite-difference step `h` (central: `(L(x+h) - L(x-h)) / 2h`).
    pub step: f64,
    /// Largest accepted error (see the module docs for its definition).
    pub tol: f64,
    /// Absolute floor of the error's denominator.
    pub floor: f64,
    /// Seed of the projection `r` for non-scalar outputs.
    pub seed: u64,
}

impl Default for GradcheckConfig {
    fn default() -> Self {
        GradcheckConfig {
            // 1e-5, not 1e-6 (fix found by the test suite): the total error of
            // a central difference is rounding `~1e-16 |L| / h` plus
            // truncation `~h^2 |L'''| / 6`, smallest near h ~ 1e-5. With
            // h = 1e-6 the rounding term alone (`~1e-10 |L|`) exceeded
            // `tol * floor = 1e-9` for correct ops with |L| of a few units
            // (matmul, exp, layer_norm failed about once in 1000 random
            // cases); with 1e-5 the worst error over 2000 cases of every op
            // in the suite is below 2e-7.
            step: 1e-5,
            tol: 1e-6,
            floor: 1e-3,
            seed: 0x5eed,
        }
    }
}

/// What [`gradcheck`] found: the worst element, not just a bool.
#[derive(Clone, Debug)]
pub struct GradcheckReport {
    /// Worst error over all checked elements.
    pub max_error: f64,
    /// Which input held the worst error.
    pub input: usize,
    /// Multi-index of the worst element inside that input.
    pub index: Vec<usize>,
    /// The analytic gradient (reverse pass) at the worst element.
    pub analytic: f64,
    /// The numeric gradient (central difference) at the worst element.
    pub numeric: f64,
    /// Number of elements checked.
    pub checked: usize,
    /// The ops recorded by one forward pass (for coverage checks).
    pub ops: Vec<&'static str>,
    /// The tolerance the check was run with.
    pub tol: f64,
}

impl GradcheckReport {
    /// True when the worst error is within the tolerance.
    pub fn passed(&self) -> bool {
        self.max_error <= self.tol
    }
}

impl fmt::Display for GradcheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gradcheck {}: worst error {:.3e} (tol {:.1e}) at input {} index {:?}: analytic {:.9e}, numeric {:.9e}; {} elements; ops {:?}",
            if self.passed() { "passed" } else { "FAILED" },
            self.max_error,
            self.tol,
            self.input,
            self.index,
            self.analytic,
            self.numeric,
            self.checked,
            self.ops
        )
    }
}

fn multi_index(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for ax in (0..shape.len()).rev() {
        idx[ax] = flat % shape[ax];
        flat /= shape[ax];
    }
    idx
}

/// Checks the gradient of `f` with respect to every element of every input.
///
/// `f` builds the computation on the tape it is given, from the inputs as
/// leaves, and returns the output var (any shape).
///
/// ```
/// use autograd::check::{gradcheck, GradcheckConfig};
/// use autograd::Tensor;
/// let x = Tensor::<f64>::from_vec(vec![0.3, -1.2, 2.0], &[3]);
/// let report = gradcheck(|_, v| (v[0] * v[0]).tanh(), &[x], &GradcheckConfig::default());
/// assert!(report.passed(), "{report}");
/// ```
pub fn gradcheck<F>(f: F, inputs: &[Tensor<f64>], cfg: &GradcheckConfig) -> GradcheckReport
where
    F: for<'t> Fn(&'t Tape<f64>, &[Var<'t, f64>]) -> Var<'t, f64>,
{
    // Analytic: one backward pass seeded with r.
    let tape = Tape::new();
    let vars: Vec<Var<f64>> = inputs.iter().map(|t| tape.leaf(t.clone())).collect();
    let out = f(&tape, &vars);
    let r = Tensor::<f64>::rand_uniform(&out.shape(), -1.0, 1.0, cfg.seed);
    let ops = tape.ops();
    let grads = tape.backward_with(out, r.clone());
    let analytic: Vec<Tensor<f64>> = vars
        .iter()
        .zip(inputs)
        .map(|(&v, t)| {
            grads
                .get(v)
                .cloned()
                .unwrap_or_else(|| Tensor::zeros(t.shape()))
        })
        .collect();

    // Numeric: L(x +- h e_j) on fresh no-grad tapes.
    let loss = |xs: &[Tensor<f64>]| -> f64 {
        let tape = Tape::no_grad();
        let vars: Vec<Var<f64>> = xs.iter().map(|t| tape.constant(t.clone())).collect();
        let y = f(&tape, &vars).value();
        y.data().iter().zip(r.data()).map(|(a, b)| a * b).sum()
    };
    let mut report = GradcheckReport {
        max_error: 0.0,
        input: 0,
        index: Vec::new(),
        analytic: 0.0,
        numeric: 0.0,
        checked: 0,
        ops,
        tol: cfg.tol,
    };
    let mut xs: Vec<Tensor<f64>> = inputs.to_vec();
    for i in 0..inputs.len() {
        for j in 0..inputs[i].numel() {
            let x0 = inputs[i].data()[j];
            xs[i].data_mut()[j] = x0 + cfg.step;
            let plus = loss(&xs);
            xs[i].data_mut()[j] = x0 - cfg.step;
            let minus = loss(&xs);
            xs[i].data_mut()[j] = x0;
            let numeric = (plus - minus) / (2.0 * cfg.step);
            let a = analytic[i].data()[j];
            let err = (a - numeric).abs() / a.abs().max(numeric.abs()).max(cfg.floor);
            report.checked += 1;
            // A NaN error counts as the worst (clippy: no `!(a <= b)`).
            if err.is_nan() || err > report.max_error {
                report.max_error = if err.is_nan() { f64::INFINITY } else { err };
                report.input = i;
                report.index = multi_index(j, inputs[i].shape());
                report.analytic = a;
                report.numeric = numeric;
            }
        }
    }
    report
}

#[cfg(feature = "proptest")]
pub mod cases;

/// proptest strategies for shapes and tensors (feature `proptest`).
#[cfg(feature = "proptest")]
pub mod strategies {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use crate::Tensor;
    use crate::tensor::numel;

    /// A shape of rank `1..=max_rank` with axes in `1..=max_dim` (size-1
    /// axes included).
    pub fn shape(max_rank: usize, max_dim: usize) -> impl Strategy<Value = Vec<usize>> {
        vec(1..=max_dim, 1..=max_rank)
    }

    /// Two shapes that broadcast together: a common shape, from which each
    /// side independently drops some leading axes and sets some axes to 1.
    pub fn broadcast_pair(
        max_rank: usize,
        max_dim: usize,
    ) -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
        shape(max_rank, max_dim).prop_flat_map(|s| {
            let n = s.len();
            let side = move |s: Vec<usize>| {
                (0..=n - 1, vec(any::<bool>(), n)).prop_map(move |(drop, ones)| {
                    s.iter()
                        .zip(&ones)
                        .skip(drop)
                        .map(|(&d, &one)| if one { 1 } else { d })
                        .collect::<Vec<usize>>()
                })
            };
            (side(s.clone()), side(s))
        })
    }

    /// A tensor of the given shape with entries uniform in `[lo, hi]`.
    pub fn tensor(shape: Vec<usize>, lo: f64, hi: f64) -> impl Strategy<Value = Tensor<f64>> {
        let n = numel(&shape);
        vec(lo..=hi, n).prop_map(move |d| Tensor::from_vec(d, &shape))
    }

    /// Entries with `gap <= |x| <= hi`: away from the kink of relu (and
    /// from the pole of 1/x).
    pub fn tensor_away_from_zero(
        shape: Vec<usize>,
        gap: f64,
        hi: f64,
    ) -> impl Strategy<Value = Tensor<f64>> {
        let n = numel(&shape);
        vec((gap..=hi, any::<bool>()), n).prop_map(move |d| {
            Tensor::from_vec(
                d.into_iter()
                    .map(|(x, neg)| if neg { -x } else { x })
                    .collect(),
                &shape,
            )
        })
    }

    /// Entries pairwise at least `gap` apart (a shuffled grid plus a little
    /// jitter): no ties, so `max` is differentiable at every sample.
    pub fn tensor_distinct(shape: Vec<usize>, gap: f64) -> impl Strategy<Value = Tensor<f64>> {
        let n = numel(&shape);
        (
            Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
            vec(0.0..0.25f64, n),
        )
            .prop_map(move |(perm, jitter)| {
                let d = perm
                    .iter()
                    .zip(&jitter)
                    .map(|(&p, &j)| (p as f64 + j - n as f64 / 2.0) * gap)
                    .collect();
                Tensor::from_vec(d, &shape)
            })
    }

    /// A random shape and a tensor of that shape with entries in `[lo, hi]`.
    pub fn any_tensor(
        max_rank: usize,
        max_dim: usize,
        lo: f64,
        hi: f64,
    ) -> impl Strategy<Value = Tensor<f64>> {
        shape(max_rank, max_dim).prop_flat_map(move |s| tensor(s, lo, hi))
    }
}
