//! Fused multi-head scaled dot-product attention (Vaswani et al. 2017,
//! section 3.2.2): `softmax(Q K^T * scale + bias + mask) V` per head, in one
//! op. The optional additive `bias` (ALiBi, relative-position or learned
//! biases) is differentiable; the mask is a constant.
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

use crate::kernels::{MatPtr, MatRef, SendPtr, gemm, gemm_raw};
use crate::{Float, Tensor, Var};

/// The op names of this family (see [`crate::ops::all_ops`]).
pub const OPS: &[&str] = &["attention"];

/// A tensor read as if broadcast to the scores (B, H, Tq, Tk): the mask
/// (an entry != 0 means "masked") and the additive bias.
struct ScoresView<T: Float> {
    t: Tensor<T>,
    strides: [usize; 4],
}

impl<T: Float> ScoresView<T> {
    /// Panics naming `what` (mask or bias) when `t` does not broadcast.
    fn new(t: &Tensor<T>, shape: [usize; 4], what: &str) -> Self {
        let m = t.shape();
        assert!(
            m.len() <= 4
                && m.iter()
                    .rev()
                    .zip(shape.iter().rev())
                    .all(|(&a, &b)| a == b || a == 1),
            "attention: {what} {m:?} does not broadcast to the scores (B, H, Tq, Tk) = {shape:?}"
        );
        let st = crate::strides(m);
        let lead = 4 - m.len();
        let mut strides = [0; 4];
        for i in 0..4 {
            if i >= lead && m[i - lead] != 1 {
                strides[i] = st[i - lead];
            }
        }
        ScoresView {
            t: t.clone(),
            strides,
        }
    }

    /// Offset of entry (b, h, i, 0).
    #[inline]
    fn row(&self, b: usize, h: usize, i: usize) -> usize {
        let s = &self.strides;
        b * s[0] + h * s[1] + i * s[2]
    }

    #[inline]
    fn masked(&self, b: usize, h: usize, i: usize, j: usize) -> bool {
        self.t.data()[self.row(b, h, i) + j * self.strides[3]] != T::ZERO
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
        MatRef::strided(&q.data()[qo..], tq, dk, d, 1),
        MatRef::strided(&k.data()[ko..], tk, dk, d, 1).t(),
        &mut s,
        false,
    );
    s
}

/// Which head a per-head helper works on, and what it reads: batch `b`,
/// head `h`, and the optional bias and mask views.
#[derive(Clone, Copy)]
struct Head<'a, T: Float> {
    b: usize,
    h: usize,
    bias: Option<&'a ScoresView<T>>,
    mask: Option<&'a ScoresView<T>>,
}

/// Scores of one head, scaled, biased and masked, then turned into
/// probabilities in place: row-wise `P = exp(S - lse)` with `lse` given, or
/// computed (and written to `lse_out`) when `lse_in` is `None`. A fully
/// masked row has `lse = -inf` and P = 0.
///
/// Inlined into its callers, which run it under [`crate::wide`]: with AVX2
/// when the CPU has it, the scaling and exp loops run twice as wide, with
/// the same operations in the same order.
#[inline(always)]
fn head_probs<T: Float>(
    s: &mut [T],
    tk: usize,
    scale: T,
    head: Head<'_, T>,
    lse_in: Option<&[T]>,
    lse_out: &mut [T],
) {
    for (i, row) in s.chunks_mut(tk).enumerate() {
        match head.bias {
            // The no-bias path stays a plain scaling loop: no per-element
            // cost for models without a bias.
            None => {
                for x in row.iter_mut() {
                    *x *= scale;
                }
            }
            // `x * scale + bias`, in the order of the composed
            // `scores * scale + bias`.
            Some(bv) => {
                let (o, sj) = (bv.row(head.b, head.h, i), bv.strides[3]);
                let bd = bv.t.data();
                for (j, x) in row.iter_mut().enumerate() {
                    *x = *x * scale + bd[o + j * sj];
                }
            }
        }
        if let Some(m) = head.mask {
            for (j, x) in row.iter_mut().enumerate() {
                if m.masked(head.b, head.h, i, j) {
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
    /// Shorthand for [`Var::attention_biased`] without a bias.
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
        self.attention_biased(k, v, heads, mask, None)
    }

    /// Multi-head attention with an additive, differentiable score bias:
    /// per head `softmax(Q K^T / sqrt(Dk) + bias + M) V`. The bias is added
    /// after the scaling and before the mask, and broadcasts to the scores
    /// (B, H, Tq, Tk) (e.g. (1, H, Tq, Tk) for ALiBi or relative positions
    /// shared by the batch, (Tq, Tk) for one bias for all heads). Recorded
    /// as one `attention` op with the bias as its fourth input.
    ///
    /// Backward: `d(bias) = P * (dP - rowsum(dP * P))` (the score gradient
    /// before the 1/sqrt(Dk) scaling), summed over the broadcast axes in a
    /// fixed order ([`Tensor::sum_to_shape`]), so bit-identical for any
    /// thread count. When the bias needs a gradient, backward holds the full
    /// (B, H, Tq, Tk) score gradient once, as the composed version would.
    ///
    /// ```
    /// use autograd::{Tape, Tensor};
    /// let tape: Tape<f64> = Tape::new();
    /// let q = tape.constant(Tensor::zeros(&[1, 1, 2])); // scores 0: the bias decides
    /// let k = tape.constant(Tensor::zeros(&[1, 2, 2]));
    /// let v = tape.constant(Tensor::from_vec(vec![1.0, 0.0, 0.0, 1.0], &[1, 2, 2]));
    /// let bias = tape.leaf(Tensor::from_vec(vec![0.0, 2f64.ln()], &[1, 2])); // (Tq, Tk)
    /// let y = q.attention_biased(k, v, 1, None, Some(bias)); // weights [1/3, 2/3]
    /// let want = [1.0 / 3.0, 2.0 / 3.0];
    /// assert!(y.value().data().iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-12));
    /// ```
    pub fn attention_biased(
        self,
        k: Var<'t, T>,
        v: Var<'t, T>,
        heads: usize,
        mask: Option<&Tensor<T>>,
        bias: Option<Var<'t, T>>,
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
        let scores = [b, heads, tq, tk];
        let mask = mask.map(|m| ScoresView::new(m, scores, "mask"));
        let bias_view = bias.map(|bv| ScoresView::new(&bv.value(), scores, "bias"));
        let mut out = vec![T::ZERO; b * tq * d];
        let mut lse = vec![T::ZERO; b * heads * tq];
        let op = SendPtr(out.as_mut_ptr());
        // No queries or no keys (an empty source or target, issue 10): no
        // scores at all. A query with no key to attend to gets zeros, as a
        // fully masked row does, and every gradient is zero.
        let heads_with_scores = if tq == 0 || tk == 0 { 0 } else { b * heads };
        lse[..heads_with_scores * tq]
            .par_chunks_mut(tq.max(1))
            .enumerate()
            .for_each(|(bh, lse_h)| {
                let (bi, h) = (bh / heads, bh % heads);
                let (qo, ko) = (bi * tq * d + h * dk, bi * tk * d + h * dk);
                let mut s = head_scores(&q, &kt, qo, ko, (tq, tk, dk));
                let head = Head {
                    b: bi,
                    h,
                    bias: bias_view.as_ref(),
                    mask: mask.as_ref(),
                };
                crate::wide(
                    #[inline(always)]
                    || head_probs(&mut s, tk, scale, head, None, lse_h),
                );
                // SAFETY: head (bi, h) owns columns h*Dk..(h+1)*Dk of batch bi's
                // rows of `out`; no other task writes there.
                unsafe {
                    gemm_raw(
                        MatRef::new(&s, tq, tk),
                        MatRef::strided(&vt.data()[ko..], tk, dk, d, 1),
                        MatPtr::new(op.get().add(qo), d),
                        false,
                    )
                };
            });
        let saved = (q.clone(), kt.clone(), vt.clone());
        let mut inputs = vec![self, k, v];
        inputs.extend(bias);
        self.tape().record(
            "attention",
            Tensor::from_vec(out, q.shape()),
            &inputs,
            move |g, need| {
                let (q, kt, vt) = &saved;
                let gd = g.data();
                let need_bias = need.get(3) == Some(&true);
                let mut dq = vec![T::ZERO; if need[0] { b * tq * d } else { 0 }];
                let mut dkk = vec![T::ZERO; if need[1] { b * tk * d } else { 0 }];
                let mut dv = vec![T::ZERO; if need[2] { b * tk * d } else { 0 }];
                // The unscaled score gradient of every head, (B, H, Tq, Tk),
                // summed down to the bias's shape after the parallel loop.
                let mut dbias = vec![T::ZERO; if need_bias { b * heads * tq * tk } else { 0 }];
                let (pq, pk, pv, pb) = (
                    SendPtr(dq.as_mut_ptr()),
                    SendPtr(dkk.as_mut_ptr()),
                    SendPtr(dv.as_mut_ptr()),
                    SendPtr(dbias.as_mut_ptr()),
                );
                (0..heads_with_scores).into_par_iter().for_each(|bh| {
                    let (bi, h) = (bh / heads, bh % heads);
                    let (qo, ko) = (bi * tq * d + h * dk, bi * tk * d + h * dk);
                    // Recompute P from Q, K and the saved log-sum-exp.
                    let mut p = head_scores(q, kt, qo, ko, (tq, tk, dk));
                    let mut unused = vec![T::ZERO; tq];
                    let lse_h = &lse[bh * tq..(bh + 1) * tq];
                    let head = Head {
                        b: bi,
                        h,
                        bias: bias_view.as_ref(),
                        mask: mask.as_ref(),
                    };
                    crate::wide(
                        #[inline(always)]
                        || head_probs(&mut p, tk, scale, head, Some(lse_h), &mut unused),
                    );
                    // SAFETY (all writes below): head (bi, h) owns its
                    // column block of batch bi's rows in dQ, dK and dV, and
                    // its (Tq, Tk) block of the bias gradient.
                    if need[2] {
                        // dV = P^T dO.
                        unsafe {
                            gemm_raw(
                                MatRef::new(&p, tq, tk).t(),
                                MatRef::strided(&gd[qo..], tq, dk, d, 1),
                                MatPtr::new(pv.get().add(ko), d),
                                false,
                            )
                        };
                    }
                    if need[0] || need[1] || need_bias {
                        // dP = dO V^T, then dS = P * (dP - rowsum(dP * P)) * scale.
                        let mut ds = vec![T::ZERO; tq * tk];
                        gemm(
                            MatRef::strided(&gd[qo..], tq, dk, d, 1),
                            MatRef::strided(&vt.data()[ko..], tk, dk, d, 1).t(),
                            &mut ds,
                            false,
                        );
                        if need_bias {
                            let db = unsafe {
                                std::slice::from_raw_parts_mut(pb.get().add(bh * tq * tk), tq * tk)
                            };
                            for ((dr, pr), br) in
                                ds.chunks_mut(tk).zip(p.chunks(tk)).zip(db.chunks_mut(tk))
                            {
                                let dot: T = dr.iter().zip(pr).map(|(&a, &b)| a * b).sum();
                                for ((x, &pv), bx) in dr.iter_mut().zip(pr).zip(br) {
                                    let u = pv * (*x - dot);
                                    *bx = u;
                                    *x = u * scale;
                                }
                            }
                        } else {
                            for (dr, pr) in ds.chunks_mut(tk).zip(p.chunks(tk)) {
                                let dot: T = dr.iter().zip(pr).map(|(&a, &b)| a * b).sum();
                                for (x, &pv) in dr.iter_mut().zip(pr) {
                                    *x = pv * (*x - dot) * scale;
                                }
                            }
                        }
                        if need[0] {
                            // dQ = dS K.
                            unsafe {
                                gemm_raw(
                                    MatRef::new(&ds, tq, tk),
                                    MatRef::strided(&kt.data()[ko..], tk, dk, d, 1),
                                    MatPtr::new(pq.get().add(qo), d),
                                    false,
                                )
                            };
                        }
                        if need[1] {
                            // dK = dS^T Q.
                            unsafe {
                                gemm_raw(
                                    MatRef::new(&ds, tq, tk).t(),
                                    MatRef::strided(&q.data()[qo..], tq, dk, d, 1),
                                    MatPtr::new(pk.get().add(ko), d),
                                    false,
                                )
                            };
                        }
                    }
                });
                let kshape = kt.shape().to_vec();
                let mut grads = vec![
                    need[0].then(|| Tensor::from_vec(dq, q.shape())),
                    need[1].then(|| Tensor::from_vec(dkk, &kshape)),
                    need[2].then(|| Tensor::from_vec(dv, &kshape)),
                ];
                if let Some(bv) = &bias_view {
                    // Summed over the broadcast axes in index order: fixed,
                    // whatever the thread count.
                    grads.push(
                        need_bias
                            .then(|| Tensor::from_vec(dbias, &scores).sum_to_shape(bv.t.shape())),
                    );
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
    use crate::check::cases::{GradCase, MORE};
    let e = GradCase::new;
    vec![
        // Fused attention.
        e("attention", "attention", MORE, strategies::attention_case("attention", false)),
        e("attention_masked", "attention", MORE, strategies::attention_case("attention_masked", true)),
        e("attention_biased", "attention", MORE, strategies::attention_biased_case("attention_biased", false)),
        e("attention_biased_masked", "attention", MORE, strategies::attention_biased_case("attention_biased_masked", true)),
    ]
}

/// The strategies of this family's gradient entries.
#[cfg(feature = "proptest")]
mod strategies {
    use proptest::collection::vec as pvec;
    use proptest::prelude::*;

    use crate::Tensor;
    use crate::check::cases::{Case, UNIT};
    use crate::tensor::numel;

    /// Fused multi-head `attention` of q (B, Tq, D), k and v (B, Tk, D),
    /// D = heads * Dk. With `masked`, a random 0/1 mask of shape (Tq, Tk)
    /// (causal-like), (B, 1, 1, Tk) (padding-like) or (B, H, Tq, Tk); fully
    /// masked rows (output 0) included.
    pub(super) fn attention_case(name: &'static str, masked: bool) -> BoxedStrategy<Case> {
        (
            1..=2usize,
            1..=3usize,
            1..=3usize,
            1..=2usize,
            1..=2usize,
            0..3usize,
        )
            .prop_flat_map(move |(b, tq, tk, heads, dk, kind)| {
                let d = heads * dk;
                let ms = match kind {
                    0 => vec![tq, tk],
                    1 => vec![b, 1, 1, tk],
                    _ => vec![b, heads, tq, tk],
                };
                let n = if masked { numel(&ms) } else { 0 };
                let mask = pvec(any::<bool>(), n).prop_map(move |bits| {
                    masked.then(|| {
                        let data = bits.iter().map(|&m| if m { 1.0 } else { 0.0 }).collect();
                        Tensor::from_vec(data, &ms)
                    })
                });
                (
                    UNIT.tensor(vec![b, tq, d]),
                    UNIT.tensor(vec![b, tk, d]),
                    UNIT.tensor(vec![b, tk, d]),
                    Just(heads),
                    mask,
                )
            })
            .prop_map(move |(q, k, v, heads, mask)| {
                let params = match &mask {
                    Some(m) => format!("{heads} heads, mask {:?} {:?}", m.shape(), m.data()),
                    None => format!("{heads} heads, no mask"),
                };
                Case::new(name, params, vec![q, k, v], move |_, x| {
                    x[0].attention(x[1], x[2], heads, mask.as_ref())
                })
            })
            .boxed()
    }

    /// [`attention_case`] with a differentiable bias (the fourth input) of
    /// shape (B, H, Tq, Tk), (1, H, Tq, Tk), (1, 1, Tq, Tk) or (Tq, Tk), all
    /// of them broadcasting, and with `masked` a random mask as there.
    pub(super) fn attention_biased_case(name: &'static str, masked: bool) -> BoxedStrategy<Case> {
        (
            (1..=2usize, 1..=3usize, 1..=3usize),
            (1..=2usize, 1..=2usize),
            0..3usize,
            0..4usize,
        )
            .prop_flat_map(move |((b, tq, tk), (heads, dk), mask_kind, bias_kind)| {
                let d = heads * dk;
                let ms = match mask_kind {
                    0 => vec![tq, tk],
                    1 => vec![b, 1, 1, tk],
                    _ => vec![b, heads, tq, tk],
                };
                let bs = match bias_kind {
                    0 => vec![b, heads, tq, tk],
                    1 => vec![1, heads, tq, tk],
                    2 => vec![1, 1, tq, tk],
                    _ => vec![tq, tk],
                };
                let n = if masked { numel(&ms) } else { 0 };
                let mask = pvec(any::<bool>(), n).prop_map(move |bits| {
                    masked.then(|| {
                        let data = bits.iter().map(|&m| if m { 1.0 } else { 0.0 }).collect();
                        Tensor::from_vec(data, &ms)
                    })
                });
                (
                    UNIT.tensor(vec![b, tq, d]),
                    UNIT.tensor(vec![b, tk, d]),
                    UNIT.tensor(vec![b, tk, d]),
                    UNIT.tensor(bs),
                    Just(heads),
                    mask,
                )
            })
            .prop_map(move |(q, k, v, bias, heads, mask)| {
                let params = match &mask {
                    Some(m) => format!("{heads} heads, mask {:?} {:?}", m.shape(), m.data()),
                    None => format!("{heads} heads, no mask"),
                };
                Case::new(name, params, vec![q, k, v, bias], move |_, x| {
                    x[0].attention_biased(x[1], x[2], heads, mask.as_ref(), Some(x[3]))
                })
            })
            .boxed()
    }
}
