//! Reductions: sum, mean and max over an axis, and over everything. The
//! adjoint of a sum is a broadcast; of a max, a scatter to the arg-max.

use crate::{Float, Tensor, Var};

/// The op names of this family (see [`crate::ops::all_ops`]).
pub const OPS: &[&str] = &["sum", "mean", "sum_all", "mean_all", "max"];

/// The shape with `axis` kept as size 1.
fn keep_shape(shape: &[usize], axis: usize) -> Vec<usize> {
    let mut s = shape.to_vec();
    s[axis] = 1;
    s
}

impl<'t, T: Float> Var<'t, T> {
    /// Sum over `axis` (negative counts from the end); `keepdim` keeps it as size 1.
    pub fn sum(self, axis: isize, keepdim: bool) -> Var<'t, T> {
        self.sum_scaled("sum", axis, keepdim, false)
    }

    /// Mean over `axis`.
    pub fn mean(self, axis: isize, keepdim: bool) -> Var<'t, T> {
        self.sum_scaled("mean", axis, keepdim, true)
    }

    fn sum_scaled(self, op: &'static str, axis: isize, keepdim: bool, mean: bool) -> Var<'t, T> {
        let x = self.value();
        let ax = x.axis(axis, op);
        let n = x.shape()[ax];
        let scale = if mean {
            T::ONE / T::from_usize(n)
        } else {
            T::ONE
        };
        let mut out = x.sum_axis(axis, keepdim);
        if mean {
            out = out.scale(scale);
        }
        let in_shape = x.shape().to_vec();
        let kshape = keep_shape(&in_shape, ax);
        self.tape().record(op, out, &[self], move |g, _| {
            let g = g.reshape(&kshape).broadcast_to(&in_shape);
            vec![Some(if mean { g.scale(scale) } else { g })]
        })
    }

    /// Sum of all elements, as a scalar (shape `[]`).
    pub fn sum_all(self) -> Var<'t, T> {
        let x = self.value();
        let shape = x.shape().to_vec();
        self.tape()
            .record("sum_all", x.sum_all(), &[self], move |g, _| {
                vec![Some(Tensor::full(&shape, g.item()))]
            })
    }

    /// Mean of all elements, as a scalar.
    pub fn mean_all(self) -> Var<'t, T> {
        let x = self.value();
        let shape = x.shape().to_vec();
        let inv = T::ONE / T::from_usize(x.numel().max(1));
        let out = x.sum_all().scale(inv);
        self.tape().record("mean_all", out, &[self], move |g, _| {
            vec![Some(Tensor::full(&shape, g.item() * inv))]
        })
    }

    /// Maximum over `axis`. The gradient goes to the first maximal entry
    /// (ties are broken towards the lower index, as in the forward).
    pub fn max(self, axis: isize, keepdim: bool) -> Var<'t, T> {
        let x = self.value();
        let ax = x.axis(axis, "max");
        let (out, arg) = x.max_axis(axis, keepdim);
        let in_shape = x.shape().to_vec();
        let n = in_shape[ax];
        let inner: usize = in_shape[ax + 1..].iter().product();
        self.tape().record("max", out, &[self], move |g, _| {
            let mut dx = vec![T::ZERO; in_shape.iter().product()];
            for (k, (&j, &gv)) in arg.iter().zip(g.data()).enumerate() {
                let (o, i) = (k / inner, k % inner);
                dx[(o * n + j) * inner + i] = gv;
            }
            vec![Some(Tensor::from_vec(dx, &in_shape))]
        })
    }
}

/// The gradient property entries of this family (feature `proptest`): run
/// by the test suite through [`crate::ops::all_cases`].
#[cfg(feature = "proptest")]
#[rustfmt::skip]
pub fn cases() -> Vec<crate::check::cases::GradCase> {
    use crate::check::cases::{GradCase, Values::*, over_axis, unary, UNIT, CASES, MORE};
    let e = GradCase::new;
    vec![
        // Reductions; max without ties.
        e("sum", "sum", MORE, over_axis("sum", |x, a, k| x.sum(a, k), UNIT)),
        e("mean", "mean", MORE, over_axis("mean", |x, a, k| x.mean(a, k), UNIT)),
        e("sum_all", "sum_all", CASES, unary("sum_all", |x| x.sum_all(), UNIT, 4, 3)),
        e("mean_all", "mean_all", CASES, unary("mean_all", |x| x.mean_all(), UNIT, 4, 3)),
        e("max", "max", MORE, over_axis("max", |x, a, k| x.max(a, k), Distinct(0.1))),
    ]
}
