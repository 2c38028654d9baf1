//! Fused multi-head scaled dot-product attention (Vaswani et al. 2017,
//! section 3.2.2): `softmax(Q K^T * scale + mask) V` per head, in one op.
//!
//! Why fused: the composed version (split heads, `matmul_t`, scale,
//! `masked_fill`, `softmax`, `matmul`, merge heads) makes six full copies of
//! the activations and keeps every head's (Tq, Tk) weights alive until
//! backward. Here each head reads its Q, K, V straight out of the (B, T, D)
//! inputs through `gemm` strides, writes its output block straight into
//! (B, T, D), and keeps only the row log-sum-exp (B, H, Tq): backward
//! recomputes one head's weights at a time (as FlashAttention does, Dao et
//! al. 2022), so attention memory is O(Tq * Tk) per running head, not per
//! layer x batch x heads. The composed version stays in the transformer
//! crate as the reference, and the tests check that both agree.

use rayon::prelude::*;

use crate::kernels::{SendPtr, gemm, gemm_raw};
use crate::{Float, Tensor, Var};

pub const OPS: &[&str] = &["attention"];

/// Where head (b, h)'s mask entries live: mask strides broadcast to
/// (B, H, Tq, Tk). A mask entry != 0 means "masked".
struct MaskView<T: Float> {
    mask: Tensor<T>,
    strides: [usize; 4],
}

impl<T: Float> MaskView<T> {
    fn new(mask: &Tensor<T>, shape: [usize; 4]) -> Self {
        let m = mask.shape();
        assert!(
            m.len() <= 4
                && m.iter()
                    .rev()
                    .zip(shape.iter().rev())
                    .all(|(&a, &b)| a == b || a == 1),
            "attention: mask {m:?} does not broadcast to the scores (B, H, Tq, Tk) = {shape:?}"
        );
        let st = crate::strides(m);
        let lead = 4 - m.len();
        let mut strides = [0; 4];
        for i in 0..4 {
            if i >= lead && m[i - lead] != 1 {
                strides[i] = st[i - lead];
            }
        }
        MaskView {
            mask: mask.clone(),
            strides,
        }
    }

    #[inline]
    fn masked(&self, b: usize, h: usize, i: usize, j: usize) -> bool {
        let s = &self.strides;
        self.mask.data()[b * s[0] + h * s[1] + i * s[2] + j * s[3]] != T::ZERO
    }
}

/// `S = Q_bh K_bh^T` (Tq, Tk) of one head: the head's rows of Q and K are
/// read in place at row stride D, starting at offsets `qo` and `ko`.
fn head_scores<T: Float>(
    q: &Tensor<T>,
    k: &Tensor<T>,
    qo: usize,
    ko: usize,
    (tq, tk, dk): (usize, usize, usize),
) -> Vec<T> {
    let d = *q.shape().last().expect("(B, T, D)");
    let mut s = vec![T::ZERO; tq * tk];
    gemm(
        tq,
        dk,
        tk,
        &q.data()[qo..],
        d,
        1,
        &k.data()[ko..],
        1,
        d,
        &mut s,
        false,
    );
    s
}

/// Scores of one head, scaled and masked, then turned into probabilities in
/// place: row-wise `P = exp(S - lse)` with `lse` given, or computed (and
/// returned) when `lse` is `None`. A fully masked row has `lse = -inf` and
/// P = 0.
#[allow(clippy::too_many_arguments)]
fn head_probs<T: Float>(
    s: &mut [T],
    tk: usize,
    scale: T,
    mask: Option<(&MaskView<T>, usize, usize)>,
    lse_in: Option<&[T]>,
    lse_out: &mut [T],
) {
    for (i, row) in s.chunks_mut(tk).enumerate() {
        for x in row.iter_mut() {
            *x *= scale;
        }
        if let Some((m, b, h)) = mask {
            for (j, x) in row.iter_mut().enumerate() {
                if m.masked(b, h, i, j) {
                    *x = T::NEG_INFINITY;
                }
            }
        }
        let lse = match lse_in {
            Some(l) => l[i],
            None => {
                let mx = row.iter().copied().fold(T::NEG_INFINITY, |a, b| a.max(b));
                if mx == T::NEG_INFINITY {
                    T::NEG_INFINITY
                } else {
                    mx + crate::ops::nn::sum_exp_shifted(row, mx).ln()
                }
            }
        };
        lse_out[i] = lse;
        if lse == T::NEG_INFINITY {
            row.fill(T::ZERO);
        } else {
            for x in row.iter_mut() {
                *x = (*x - lse).exp_fast();
            }
        }
    }
}

impl<'t, T: Float> Var<'t, T> {
    /// Multi-head attention with queries `self` (B, Tq, D), keys `k` and
    /// values `v` (B, Tk, D), `heads` heads of width `Dk = D / heads`:
    /// per head, `softmax(Q K^T / sqrt(Dk) + M) V`, heads concatenated back
    /// into (B, Tq, D). `mask` (0 attend, non-zero masked) broadcasts to
    /// (B, H, Tq, Tk); a fully masked row gives zeros.
    ///
    /// ```
    /// use autograd::{Tape, Tensor};
    /// let tape: Tape = Tape::new();
    /// let q = tape.constant(Tensor::zeros(&[1, 2, 2])); // equal scores: plain averages
    /// let v = tape.constant(Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[1, 2, 2]));
    /// let y = q.attention(q, v, 1, None);
    /// assert_eq!(y.value().data(), &[2.0, 3.0, 2.0, 3.0]);
    /// ```
    pub fn attention(
        self,
        k: Var<'t, T>,
        v: Var<'t, T>,
        heads: usize,
        mask: Option<&Tensor<T>>,
    ) -> Var<'t, T> {
        let (q, kt, vt) = (self.value(), k.value(), v.value());
        assert!(
            q.ndim() == 3
                && kt.ndim() == 3
                && kt.shape() == vt.shape()
                && q.shape()[0] == kt.shape()[0]
                && q.shape()[2] == kt.shape()[2]
                && heads > 0
                && q.shape()[2] % heads == 0,
            "attention: q {:?}, k {:?}, v {:?} are not (B, Tq, D), (B, Tk, D), (B, Tk, D) with D divisible by {heads} heads",
            q.shape(),
            kt.shape(),
            vt.shape()
        );
        let (b, tq, d) = (q.shape()[0], q.shape()[1], q.shape()[2]);
        let tk = kt.shape()[1];
        let dk = d / heads;
        let scale = T::from_f64(1.0 / (dk as f64).sqrt());
        let mask = mask.map(|m| MaskView::new(m, [b, heads, tq, tk]));
        let mut out = vec![T::ZERO; b * tq * d];
        let mut lse = vec![T::ZERO; b * heads * tq];
        let op = SendPtr(out.as_mut_ptr());
        lse.par_chunks_mut(tq.max(1))
            .enumerate()
            .for_each(|(bh, lse_h)| {
                let (bi, h) = (bh / heads, bh % heads);
                let (qo, ko) = (bi * tq * d + h * dk, bi * tk * d + h * dk);
                let mut s = head_scores(&q, &kt, qo, ko, (tq, tk, dk));
                head_probs(
                    &mut s,
                    tk,
                    scale,
                    mask.as_ref().map(|m| (m, bi, h)),
                    None,
                    lse_h,
                );
                // SAFETY: head (bi, h) owns columns h*Dk..(h+1)*Dk of batch bi's
                // rows of `out`; no other task writes there.
                unsafe {
                    gemm_raw(
                        tq,
                        tk,
                        dk,
                        &s,
                        tk,
                        1,
                        &vt.data()[ko..],
                        d,
                        1,
                        op.get().add(qo),
                        d,
                        false,
                    )
                };
            });
        let saved = (q.clone(), kt.clone(), vt.clone());
        self.tape().record(
            "attention",
            Tensor::from_vec(out, q.shape()),
            &[self, k, v],
            move |g, need| {
                let (q, kt, vt) = &saved;
                let gd = g.data();
                let mut dq = vec![T::ZERO; if need[0] { b * tq * d } else { 0 }];
                let mut dkk = vec![T::ZERO; if need[1] { b * tk * d } else { 0 }];
                let mut dv = vec![T::ZERO; if need[2] { b * tk * d } else { 0 }];
                let (pq, pk, pv) = (
                    SendPtr(dq.as_mut_ptr()),
                    SendPtr(dkk.as_mut_ptr()),
                    SendPtr(dv.as_mut_ptr()),
                );
                (0..b * heads).into_par_iter().for_each(|bh| {
                    let (bi, h) = (bh / heads, bh % heads);
                    let (qo, ko) = (bi * tq * d + h * dk, bi * tk * d + h * dk);
                    // Recompute P from Q, K and the saved log-sum-exp.
                    let mut p = head_scores(q, kt, qo, ko, (tq, tk, dk));
                    let mut unused = vec![T::ZERO; tq];
                    let lse_h = &lse[bh * tq..(bh + 1) * tq];
                    head_probs(
                        &mut p,
                        tk,
                        scale,
                        mask.as_ref().map(|m| (m, bi, h)),
                        Some(lse_h),
                        &mut unused,
                    );
                    // SAFETY (all three writes): head (bi, h) owns its
                    // column block of batch bi's rows in dQ, dK and dV.
                    if need[2] {
                        // dV = P^T dO.
                        unsafe {
                            gemm_raw(
                                tk,
                                tq,
                                dk,
                                &p,
                                1,
                                tk,
                                &gd[qo..],
                                d,
                                1,
                                pv.get().add(ko),
                                d,
                                false,
                            )
                        };
                    }
                    if need[0] || need[1] {
                        // dP = dO V^T, then dS = P * (dP - rowsum(dP * P)) * scale.
                        let mut ds = vec![T::ZERO; tq * tk];
                        gemm(
                            tq,
                            dk,
                            tk,
                            &gd[qo..],
                            d,
                            1,
                            &vt.data()[ko..],
                            1,
                            d,
                            &mut ds,
                            false,
                        );
                        for (dr, pr) in ds.chunks_mut(tk).zip(p.chunks(tk)) {
                            let dot: T = dr.iter().zip(pr).map(|(&a, &b)| a * b).sum();
                            for (x, &pv) in dr.iter_mut().zip(pr) {
                                *x = pv * (*x - dot) * scale;
                            }
                        }
                        if need[0] {
                            // dQ = dS K.
                            unsafe {
                                gemm_raw(
                                    tq,
                                    tk,
                                    dk,
                                    &ds,
                                    tk,
                                    1,
                                    &kt.data()[ko..],
                                    d,
                                    1,
                                    pq.get().add(qo),
                                    d,
                                    false,
                                )
                            };
                        }
                        if need[1] {
                            // dK = dS^T Q.
                            unsafe {
                                gemm_raw(
                                    tk,
                                    tq,
                                    dk,
                                    &ds,
                                    1,
                                    tk,
                                    &q.data()[qo..],
                                    d,
                                    1,
                                    pk.get().add(ko),
                                    d,
                                    false,
                                )
                            };
                        }
                    }
                });
                let kshape = kt.shape().to_vec();
                vec![
                    need[0].then(|| Tensor::from_vec(dq, q.shape())),
                    need[1].then(|| Tensor::from_vec(dkk, &kshape)),
                    need[2].then(|| Tensor::from_vec(dv, &kshape)),
                ]
            },
        )
    }
}
