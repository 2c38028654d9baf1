//! Matrix products: 2-D and batched N-D with broadcast batch axes, through
//! `matrixmultiply`'s strided `gemm`. Both backward products pass the
//! transposes as strides, so no operand is ever copied to transpose it.

use crate::{Float, Tensor, Var};

pub const OPS: &[&str] = &["matmul", "matmul_t"];

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
        let out = a.matmul_ex(&b, false, false, "matmul");
        self.tape()
            .record("matmul", out, &[self, other], move |g, need| {
                // dA = dC B^T, dB = A^T dC, summed over broadcast batch axes.
                let da = need[0].then(|| {
                    g.matmul_ex(&b, false, true, "matmul")
                        .sum_to_shape(a.shape())
                });
                let db = need[1].then(|| {
                    if b.ndim() == 2 {
                        // One weight for a stack of inputs: a single (K x R)(R x N) gemm.
                        let ((r, k), n) = (rows2(&a), b.shape()[1]);
                        a.reshape(&[r, k])
                            .matmul_ex(&g.reshape(&[r, n]), true, false, "matmul")
                    } else {
                        a.matmul_ex(g, true, false, "matmul")
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
        let out = a.matmul_ex(&b, false, true, "matmul_t");
        self.tape()
            .record("matmul_t", out, &[self, other], move |g, need| {
                // dA = dC B, dB = dC^T A.
                let da = need[0].then(|| {
                    g.matmul_ex(&b, false, false, "matmul_t")
                        .sum_to_shape(a.shape())
                });
                let db = need[1].then(|| {
                    if b.ndim() == 2 {
                        let ((r, k), n) = (rows2(&a), b.shape()[0]);
                        g.reshape(&[r, n])
                            .matmul_ex(&a.reshape(&[r, k]), true, false, "matmul_t")
                    } else {
                        g.matmul_ex(&a, true, false, "matmul_t")
                            .sum_to_shape(b.shape())
                    }
                });
                vec![da, db]
            })
    }
}
