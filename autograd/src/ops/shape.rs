//! Shape ops: transpose, permute, reshape, concat, narrow, and the split and
//! merge of attention heads. Tensors are always contiguous, so a permute is a
//! copy; its backward is the inverse permute.

use crate::tensor::numel;
use crate::{Float, Tensor, Var};

/// The op names of this family (see [`crate::ops::all_ops`]).
pub const OPS: &[&str] = &[
    "transpose",
    "permute",
    "reshape",
    "concat",
    "narrow",
    "split_heads",
    "merge_heads",
];

fn inverse(perm: &[usize]) -> Vec<usize> {
    let mut inv = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    inv
}

impl<'t, T: Float> Var<'t, T> {
    fn permute_as(self, op: &'static str, perm: Vec<usize>) -> Var<'t, T> {
        let out = self.value().permute(&perm);
        let inv = inverse(&perm);
        self.tape()
            .record(op, out, &[self], move |g, _| vec![Some(g.permute(&inv))])
    }

    /// Swaps two axes (negative axes count from the end).
    pub fn transpose(self, a: isize, b: isize) -> Var<'t, T> {
        let x = self.value();
        let (a, b) = (x.axis(a, "transpose"), x.axis(b, "transpose"));
        let mut perm: Vec<usize> = (0..x.ndim()).collect();
        perm.swap(a, b);
        self.permute_as("transpose", perm)
    }

    /// Reorders axes: output axis `i` is input axis `perm[i]`.
    pub fn permute(self, perm: &[usize]) -> Var<'t, T> {
        self.permute_as("permute", perm.to_vec())
    }

    /// Same elements, new shape (no copy).
    pub fn reshape(self, shape: &[usize]) -> Var<'t, T> {
        let x = self.value();
        let in_shape = x.shape().to_vec();
        self.tape()
            .record("reshape", x.reshape(shape), &[self], move |g, _| {
                vec![Some(g.reshape(&in_shape))]
            })
    }

    /// Joins vars along `axis`; all other axes must agree.
    pub fn concat(parts: &[Var<'t, T>], axis: isize) -> Var<'t, T> {
        assert!(!parts.is_empty(), "concat: no vars given");
        let values: Vec<Tensor<T>> = parts.iter().map(|v| v.value()).collect();
        let refs: Vec<&Tensor<T>> = values.iter().collect();
        let out = Tensor::concat(&refs, axis);
        let ax = values[0].axis(axis, "concat");
        let sizes: Vec<usize> = values.iter().map(|v| v.shape()[ax]).collect();
        parts[0]
            .tape()
            .record("concat", out, parts, move |g, need| {
                let mut start = 0;
                sizes
                    .iter()
                    .zip(need)
                    .map(|(&n, &need)| {
                        let s = start;
                        start += n;
                        need.then(|| g.narrow(ax as isize, s, n))
                    })
                    .collect()
            })
    }

    /// `len` entries of `axis` from `start`.
    pub fn narrow(self, axis: isize, start: usize, len: usize) -> Var<'t, T> {
        let x = self.value();
        let out = x.narrow(axis, start, len);
        let ax = x.axis(axis, "narrow");
        let in_shape = x.shape().to_vec();
        self.tape().record("narrow", out, &[self], move |g, _| {
            // Adjoint: the gradient written back into a zero tensor.
            let (outer, n, inner) = (
                numel(&in_shape[..ax]),
                in_shape[ax],
                numel(&in_shape[ax + 1..]),
            );
            let mut dx = vec![T::ZERO; numel(&in_shape)];
            let blk = len * inner;
            for o in 0..outer {
                let s = (o * n + start) * inner;
                dx[s..s + blk].copy_from_slice(&g.data()[o * blk..(o + 1) * blk]);
            }
            vec![Some(Tensor::from_vec(dx, &in_shape))]
        })
    }

    /// (B, T, D) -> (B, H, T, D/H): the heads of multi-head attention.
    pub fn split_heads(self, heads: usize) -> Var<'t, T> {
        let s = self.shape();
        assert!(
            s.len() == 3 && heads > 0 && s[2].is_multiple_of(heads),
            "split_heads: shape {s:?} is not (B, T, D) with D divisible by {heads} heads"
        );
        let (b, t, d) = (s[0], s[1], s[2]);
        let x = self.value().reshape(&[b, t, heads, d / heads]);
        let out = x.permute(&[0, 2, 1, 3]); // (B, H, T, Dk)
        self.tape()
            .record("split_heads", out, &[self], move |g, _| {
                vec![Some(g.permute(&[0, 2, 1, 3]).reshape(&[b, t, d]))]
            })
    }

    /// (B, H, T, Dk) -> (B, T, H * Dk): the inverse of [`Var::split_heads`].
    pub fn merge_heads(self) -> Var<'t, T> {
        let s = self.shape();
        assert!(
            s.len() == 4,
            "merge_heads: shape {s:?} is not (B, H, T, Dk)"
        );
        let (b, h, t, dk) = (s[0], s[1], s[2], s[3]);
        let out = self.value().permute(&[0, 2, 1, 3]).reshape(&[b, t, h * dk]);
        self.tape()
            .record("merge_heads", out, &[self], move |g, _| {
                vec![Some(g.reshape(&[b, t, h, dk]).permute(&[0, 2, 1, 3]))]
            })
    }
}

/// The gradient property entries of this family (feature `proptest`): run
/// by the test suite through [`crate::ops::all_cases`].
#[cfg(feature = "proptest")]
#[rustfmt::skip]
pub fn cases() -> Vec<crate::check::cases::GradCase> {
    use crate::check::cases::{GradCase, CASES, MORE};
    let e = GradCase::new;
    vec![
        // Shape ops.
        e("transpose", "transpose", CASES, strategies::transpose_case()),
        e("permute", "permute", CASES, strategies::permute_case()),
        e("reshape", "reshape", CASES, strategies::reshape_case()),
        e("concat", "concat", MORE, strategies::concat_case()),
        e("narrow", "narrow", MORE, strategies::narrow_case()),
        e("split_heads", "split_heads", CASES, strategies::split_heads_case()),
        e("merge_heads", "merge_heads", CASES, strategies::merge_heads_case()),
    ]
}

/// The strategies of this family's gradient entries.
#[cfg(feature = "proptest")]
mod strategies {
    use proptest::collection::vec as pvec;
    use proptest::prelude::*;

    use crate::check::cases::{Case, UNIT, resolve};
    use crate::check::strategies::shape;
    use crate::{Tensor, Var};

    /// `transpose(a, b)` of two random (possibly equal, possibly negative) axes.
    pub(super) fn transpose_case() -> BoxedStrategy<Case> {
        shape(4, 3)
            .prop_flat_map(|s| {
                let nd = s.len() as isize;
                (UNIT.tensor(s), -nd..nd, -nd..nd)
            })
            .prop_map(|(x, a, b)| {
                Case::new(
                    "transpose",
                    format!("axes {a}, {b}"),
                    vec![x],
                    move |_, v| v[0].transpose(a, b),
                )
            })
            .boxed()
    }

    /// `permute` by a random permutation of the axes.
    pub(super) fn permute_case() -> BoxedStrategy<Case> {
        shape(4, 3)
            .prop_flat_map(|s| {
                let n = s.len();
                (
                    UNIT.tensor(s),
                    Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
                )
            })
            .prop_map(|(x, perm)| {
                Case::new("permute", format!("perm {perm:?}"), vec![x], move |_, v| {
                    v[0].permute(&perm)
                })
            })
            .boxed()
    }

    /// `reshape` to the axes shuffled, optionally with a size-1 axis inserted.
    pub(super) fn reshape_case() -> BoxedStrategy<Case> {
        shape(4, 3)
            .prop_flat_map(|s| {
                let n = s.len();
                (
                    UNIT.tensor(s.clone()),
                    Just(s).prop_shuffle(),
                    0..=n,
                    any::<bool>(),
                )
            })
            .prop_map(|(x, mut target, at, insert)| {
                if insert {
                    target.insert(at, 1);
                }
                Case::new("reshape", format!("to {target:?}"), vec![x], move |_, v| {
                    v[0].reshape(&target)
                })
            })
            .boxed()
    }

    /// `concat` of 1 to 3 parts along a random axis; parts differ in size
    /// along that axis only.
    pub(super) fn concat_case() -> BoxedStrategy<Case> {
        (shape(3, 3), 1..=3usize)
            .prop_flat_map(|(s, parts)| {
                let nd = s.len() as isize;
                (Just(s), -nd..nd, pvec(1..=3usize, parts))
            })
            .prop_flat_map(|(s, axis, sizes)| {
                let ax = resolve(axis, s.len());
                let parts: Vec<BoxedStrategy<Tensor<f64>>> = sizes
                    .iter()
                    .map(|&n| {
                        let mut p = s.clone();
                        p[ax] = n;
                        UNIT.tensor(p)
                    })
                    .collect();
                (Just(axis), parts)
            })
            .prop_map(|(axis, parts)| {
                Case::new("concat", format!("axis {axis}"), parts, move |_, v| {
                    Var::concat(v, axis)
                })
            })
            .boxed()
    }

    /// `narrow(axis, start, len)` with a random in-range window.
    pub(super) fn narrow_case() -> BoxedStrategy<Case> {
        shape(4, 4)
            .prop_flat_map(|s| {
                let nd = s.len();
                (Just(s), 0..nd, any::<bool>())
            })
            .prop_flat_map(|(s, ax, negative)| {
                let n = s[ax];
                let axis = if negative {
                    ax as isize - s.len() as isize
                } else {
                    ax as isize
                };
                (UNIT.tensor(s), Just(axis), Just(n), 0..n)
            })
            .prop_flat_map(|(x, axis, n, start)| (Just(x), Just(axis), Just(start), 1..=n - start))
            .prop_map(|(x, axis, start, len)| {
                Case::new(
                    "narrow",
                    format!("axis {axis}, start {start}, len {len}"),
                    vec![x],
                    move |_, v| v[0].narrow(axis, start, len),
                )
            })
            .boxed()
    }

    /// `split_heads(h)` of a (B, T, H * Dk) input.
    pub(super) fn split_heads_case() -> BoxedStrategy<Case> {
        (1..=2usize, 1..=3usize, 1..=3usize, 1..=3usize)
            .prop_flat_map(|(b, t, h, dk)| (UNIT.tensor(vec![b, t, h * dk]), Just(h)))
            .prop_map(|(x, h)| {
                Case::new("split_heads", format!("{h} heads"), vec![x], move |_, v| {
                    v[0].split_heads(h)
                })
            })
            .boxed()
    }

    /// `merge_heads` of a (B, H, T, Dk) input.
    pub(super) fn merge_heads_case() -> BoxedStrategy<Case> {
        (1..=2usize, 1..=3usize, 1..=3usize, 1..=3usize)
            .prop_flat_map(|(b, h, t, dk)| UNIT.tensor(vec![b, h, t, dk]))
            .prop_map(|x| Case::new("merge_heads", "", vec![x], |_, v| v[0].merge_heads()))
            .boxed()
    }
}
