//! Matrix products: 2-D and batched N-D with broadcast batch axes, through
//! `matrixmultiply`'s strided `gemm`. Both backward products pass the
//! transposes as strides, so no operand is ever copied to transpose it.

use crate::kernels::{MatRef, Transpose, gemm};
use crate::{Float, Tensor, Var};

/// The op names of this family (see [`crate::ops::all_ops`]).
pub const OPS: &[&str] = &["matmul", "matmul_t", "linear"];

/// Collapses all leading axes: (..., K) -> (R, K).
fn rows2(t: &Tensor<impl Float>) -> (usize, usize) {
    let k = *t.shape().last().expect("rank >= 2");
    (t.numel() / k.max(1), k)
}

impl<'t, T: Float> Var<'t, T> {
    /// `A B` over the last two axes: (..., M, K) x (..., K, N) -> (..., M, N),
    /// batch axes broadcast (NumPy rules).
    ///
    /// ```
    /// use autograd::{Tape, Tensor};
    /// let tape = Tape::new();
    /// let a = tape.leaf(Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2]));
    /// let b = tape.constant(Tensor::from_vec(vec![1.0, 0.0, 1.0, 1.0], &[2, 2]));
    /// assert_eq!(a.matmul(b).value().data(), &[3.0, 2.0, 7.0, 4.0]);
    /// ```
    pub fn matmul(self, other: Var<'t, T>) -> Var<'t, T> {
        let (a, b) = (self.value(), other.value());
        let out = a.matmul_ex(&b, Transpose::No, Transpose::No, "matmul");
        self.tape()
            .record("matmul", out, &[self, other], move |g, need| {
                // dA = dC B^T, dB = A^T dC, summed over broadcast batch axes.
                let da = need[0].then(|| {
                    g.matmul_ex(&b, Transpose::No, Transpose::Yes, "matmul")
                        .sum_to_shape(a.shape())
                });
                let db = need[1].then(|| {
                    if b.ndim() == 2 {
                        // One weight for a stack of inputs: a single (K x R)(R x N) gemm.
                        let ((r, k), n) = (rows2(&a), b.shape()[1]);
                        a.reshape(&[r, k]).matmul_ex(
                            &g.reshape(&[r, n]),
                            Transpose::Yes,
                            Transpose::No,
                            "matmul",
                        )
                    } else {
                        a.matmul_ex(g, Transpose::Yes, Transpose::No, "matmul")
                            .sum_to_shape(b.shape())
                    }
                });
                vec![da, db]
            })
    }

    /// `A B^T` over the last two axes: (..., M, K) x (..., N, K) -> (..., M, N).
    /// Attention scores `Q K^T` and a tied output projection `h E^T` use it, so
    /// the transposed operand is never materialised.
    pub fn matmul_t(self, other: Var<'t, T>) -> Var<'t, T> {
        let (a, b) = (self.value(), other.value());
        let out = a.matmul_ex(&b, Transpose::No, Transpose::Yes, "matmul_t");
        self.tape()
            .record("matmul_t", out, &[self, other], move |g, need| {
                // dA = dC B, dB = dC^T A.
                let da = need[0].then(|| {
                    g.matmul_ex(&b, Transpose::No, Transpose::No, "matmul_t")
                        .sum_to_shape(a.shape())
                });
                let db = need[1].then(|| {
                    if b.ndim() == 2 {
                        let ((r, k), n) = (rows2(&a), b.shape()[0]);
                        g.reshape(&[r, n]).matmul_ex(
                            &a.reshape(&[r, k]),
                            Transpose::Yes,
                            Transpose::No,
                            "matmul_t",
                        )
                    } else {
                        g.matmul_ex(&a, Transpose::Yes, Transpose::No, "matmul_t")
                            .sum_to_shape(b.shape())
                    }
                });
                vec![da, db]
            })
    }

    /// A fully connected layer in one op: `x W + b`, (..., K) x (K, N) + (N)
    /// -> (..., N). The bias is written into the output first and the
    /// product accumulated onto it by one `gemm`, so there is no separate
    /// broadcast-add pass. Equals `x.matmul(w) + b` (tested).
    ///
    /// ```
    /// use autograd::{Tape, Tensor};
    /// let tape: Tape = Tape::new();
    /// let x = tape.constant(Tensor::from_vec(vec![1.0, 2.0], &[1, 2]));
    /// let w = tape.constant(Tensor::from_vec(vec![1.0, 0.0, 0.0, 1.0], &[2, 2]));
    /// let b = tape.constant(Tensor::from_vec(vec![10.0, 20.0], &[2]));
    /// assert_eq!(x.linear(w, Some(b)).value().data(), &[11.0, 22.0]);
    /// ```
    pub fn linear(self, w: Var<'t, T>, b: Option<Var<'t, T>>) -> Var<'t, T> {
        let (x, wv) = (self.value(), w.value());
        let bv = b.map(|b| b.value());
        assert!(
            x.ndim() >= 1 && wv.ndim() == 2 && x.shape()[x.ndim() - 1] == wv.shape()[0],
            "linear: input {:?} does not fit weight {:?} (need (..., K) and (K, N))",
            x.shape(),
            wv.shape()
        );
        let (k, n) = (wv.shape()[0], wv.shape()[1]);
        if let Some(bv) = &bv {
            assert!(
                bv.shape() == [n],
                "linear: bias {:?} does not fit weight {:?} (need ({n}))",
                bv.shape(),
                wv.shape()
            );
        }
        let r = x.numel() / k.max(1);
        let mut out = match &bv {
            Some(bv) => bv.data().repeat(r),
            None => vec![T::ZERO; r * n],
        };
        gemm(
            MatRef::new(x.data(), r, k),
            MatRef::new(wv.data(), k, n),
            &mut out,
            bv.is_some(),
        );
        let mut shape = x.shape().to_vec();
        *shape.last_mut().expect("rank >= 1") = n;
        let mut inputs = vec![self, w];
        inputs.extend(b);
        self.tape().record(
            "linear",
            Tensor::from_vec(out, &shape),
            &inputs,
            move |g, need| {
                let gd = g.data();
                // dX = G W^T (W^T as strides).
                let dx = need[0].then(|| {
                    let mut dx = vec![T::ZERO; r * k];
                    gemm(
                        MatRef::new(gd, r, n),
                        MatRef::new(wv.data(), k, n).t(),
                        &mut dx,
                        false,
                    );
                    Tensor::from_vec(dx, x.shape())
                });
                // dW = X^T G (X^T as strides).
                let dw = need[1].then(|| {
                    let mut dw = vec![T::ZERO; k * n];
                    gemm(
                        MatRef::new(x.data(), r, k).t(),
                        MatRef::new(gd, r, n),
                        &mut dw,
                        false,
                    );
                    Tensor::from_vec(dw, &[k, n])
                });
                let mut grads = vec![dx, dw];
                if need.len() == 3 {
                    grads.push(need[2].then(|| crate::kernels::column_sums(gd, None, n)));
                }
                grads
            },
        )
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
        // Matrix products: 2-D, batched with broadcast batch axes, and a
        // 2-D operand against a stack (a weight against (B, T, K)).
        e("matmul_2d", "matmul", CASES, strategies::matmul_case("matmul_2d", false, strategies::Batch::None)),
        e("matmul_batched", "matmul", MORE, strategies::matmul_case("matmul_batched", false, strategies::Batch::Broadcast)),
        e("matmul_one_side_2d", "matmul", MORE, strategies::matmul_case("matmul_one_side_2d", false, strategies::Batch::OneSide)),
        e("matmul_t_2d", "matmul_t", CASES, strategies::matmul_case("matmul_t_2d", true, strategies::Batch::None)),
        e("matmul_t_batched", "matmul_t", MORE, strategies::matmul_case("matmul_t_batched", true, strategies::Batch::Broadcast)),
        e("matmul_t_one_side_2d", "matmul_t", MORE, strategies::matmul_case("matmul_t_one_side_2d", true, strategies::Batch::OneSide)),
        e("linear", "linear", MORE, strategies::linear_case()),
    ]
}

/// The strategies of this family's gradient entries.
#[cfg(feature = "proptest")]
mod strategies {
    use proptest::prelude::*;

    use crate::check::cases::{Case, UNIT};
    use crate::check::strategies::{broadcast_pair, shape};

    /// How the batch axes of a matmul case are shaped.
    #[derive(Clone, Copy, Debug)]
    pub enum Batch {
        /// (M, K) x (K, N).
        None,
        /// (..., M, K) x (..., K, N) with broadcast-compatible batch shapes
        /// (size-1 and missing leading axes on either side).
        Broadcast,
        /// One side 2-D, the other with 1 or 2 batch axes: a weight (K, N)
        /// against a (B, T, K) input, or a 2-D left operand against a stack.
        OneSide,
    }

    /// `matmul` (or `matmul_t` when `transposed`, the right operand then
    /// being (..., N, K)) with batch axes shaped by `batch`.
    pub fn matmul_case(name: &'static str, transposed: bool, batch: Batch) -> BoxedStrategy<Case> {
        let batches: BoxedStrategy<(Vec<usize>, Vec<usize>)> = match batch {
            Batch::None => Just((vec![], vec![])).boxed(),
            Batch::Broadcast => broadcast_pair(3, 3).boxed(),
            Batch::OneSide => (shape(2, 3), any::<bool>())
                .prop_map(|(s, left)| if left { (s, vec![]) } else { (vec![], s) })
                .boxed(),
        };
        let max: usize = if matches!(batch, Batch::None) { 4 } else { 3 };
        (batches, 1..=max, 1..=max, 1..=max)
            .prop_flat_map(move |((ba, bb), m, k, n)| {
                let sa = [ba, vec![m, k]].concat();
                let last = if transposed { vec![n, k] } else { vec![k, n] };
                let sb = [bb, last].concat();
                (UNIT.tensor(sa), UNIT.tensor(sb))
            })
            .prop_map(move |(a, b)| {
                Case::new(name, "", vec![a, b], move |_, v| {
                    if transposed {
                        v[0].matmul_t(v[1])
                    } else {
                        v[0].matmul(v[1])
                    }
                })
            })
            .boxed()
    }

    /// `linear(w, b)`: x (..., K) with 0 to 2 leading axes, W (K, N), and a
    /// bias (N) or none.
    pub(super) fn linear_case() -> BoxedStrategy<Case> {
        (
            prop_oneof![Just(vec![]), shape(2, 3)],
            1..=4usize,
            1..=4usize,
            any::<bool>(),
        )
            .prop_flat_map(|(lead, k, n, bias)| {
                let mut inputs = vec![
                    UNIT.tensor([lead, vec![k]].concat()),
                    UNIT.tensor(vec![k, n]),
                ];
                if bias {
                    inputs.push(UNIT.tensor(vec![n]));
                }
                inputs
            })
            .prop_map(|inputs| {
                let params = if inputs.len() == 3 {
                    "with bias"
                } else {
                    "no bias"
                };
                Case::new("linear", params, inputs, |_, v| {
                    v[0].linear(v[1], v.get(2).copied())
                })
            })
            .boxed()
    }
}
