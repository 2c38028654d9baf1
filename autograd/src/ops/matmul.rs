//! Matrix products: 2-D and batched N-D with broadcast batch axes, through
//! `matrixmultiply`'s strided `gemm`. Both backward products pass the
//! transposes as strides, so no operand is ever copied to transpose it.

use crate::kernels::{MatRef, Transpose, gemm};
use crate::{Float, Tensor, Var};

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
