//! Neural-network ops, fused with hand-written backward passes: softmax,
//! log_softmax, layer_norm, embedding, masked_fill, dropout and
//! cross-entropy with label smoothing. Each is checked against its
//! composition from primitives in the test suite.

use rand::RngExt;
use rayon::prelude::*;

use crate::tensor::numel;
use crate::{Float, Tensor, Var};

/// The op names of this family (see [`crate::ops::all_ops`]).
pub const OPS: &[&str] = &[
    "softmax",
    "log_softmax",
    "layer_norm",
    "embedding",
    "masked_fill",
    "dropout",
    "cross_entropy",
];

use crate::kernels::ROWS_PER_TASK;

/// Row max, or `None` when the row is empty or entirely `-inf` (fully masked).
fn row_max<T: Float>(x: &[T]) -> Option<T> {
    let m = x.iter().copied().fold(T::NEG_INFINITY, |a, b| a.max(b));
    (m > T::NEG_INFINITY).then_some(m)
}

/// Stable softmax of one row into `out`. A fully masked row (all `-inf`)
/// gives zeros rather than NaN, so a padded query cannot poison a batch.
pub(crate) fn softmax_row<T: Float>(x: &[T], out: &mut [T]) {
    let Some(m) = row_max(x) else {
        out.fill(T::ZERO);
        return;
    };
    // Exponentials first (a loop the compiler vectorises), then the sum in
    // index order.
    for (o, &v) in out.iter_mut().zip(x) {
        *o = (v - m).exp_fast();
    }
    let s: T = out.iter().copied().sum();
    let inv = T::ONE / s;
    for o in out.iter_mut() {
        *o *= inv;
    }
}

/// `sum(exp(x - m))` in index order; the exponentials are computed in
/// blocks of 64 on the stack so that their loop vectorises.
#[inline]
pub(crate) fn sum_exp_shifted<T: Float>(x: &[T], m: T) -> T {
    let mut buf = [T::ZERO; 64];
    let mut s = T::ZERO;
    for chunk in x.chunks(64) {
        for (b, &v) in buf.iter_mut().zip(chunk) {
            *b = (v - m).exp_fast();
        }
        for &b in &buf[..chunk.len()] {
            s += b;
        }
    }
    s
}

/// `log(sum(exp(x)))` of one row, stably, split as `(m, l)` with `m` the row
/// max and `l = log(sum(exp(x - m)))`; `None` for a fully masked row.
///
/// Fix (found by the test suite): callers compute `(x - m) - l`, never
/// `x - (m + l)`. Adding `l` to `m` first rounds it to the precision of `m`:
/// at |x| ~ 1e4 in f32 (ulp 1e-3) log_softmax([1e4, 1e4 - 1]) came out as
/// -0.31348 instead of -0.31326, and cross-entropy carried the same error.
fn logsumexp_parts<T: Float>(x: &[T]) -> Option<(T, T)> {
    let m = row_max(x)?;
    Some((m, sum_exp_shifted(x, m).ln()))
}

impl<'t, T: Float> Var<'t, T> {
    /// Softmax over the last axis: `exp(x - max) / sum(exp(x - max))`.
    /// Backward: `dx = y * (g - sum(g * y))` per row.
    pub fn softmax(self) -> Var<'t, T> {
        let y = self.value().map_rows(softmax_row);
        let saved = y.clone();
        self.tape().record("softmax", y, &[self], move |g, _| {
            vec![Some(g.zip_rows(&saved, "softmax", |g, y, dx| {
                let dot: T = g.iter().zip(y).map(|(&a, &b)| a * b).sum();
                for ((d, &gv), &yv) in dx.iter_mut().zip(g).zip(y) {
                    *d = yv * (gv - dot);
                }
            }))]
        })
    }

    /// Log-softmax over the last axis: `x - logsumexp(x)`.
    /// Backward: `dx = g - softmax(x) * sum(g)` per row.
    pub fn log_softmax(self) -> Var<'t, T> {
        let y = self.value().map_rows(|x, out| match logsumexp_parts(x) {
            None => out.fill(T::NEG_INFINITY),
            Some((m, l)) => {
                for (o, &v) in out.iter_mut().zip(x) {
                    *o = (v - m) - l;
                }
            }
        });
        let saved = y.clone();
        self.tape().record("log_softmax", y, &[self], move |g, _| {
            vec![Some(g.zip_rows(&saved, "log_softmax", |g, y, dx| {
                let s: T = g.iter().copied().sum();
                for ((d, &gv), &yv) in dx.iter_mut().zip(g).zip(y) {
                    *d = gv - yv.exp_fast() * s;
                }
            }))]
        })
    }

    /// Layer normalisation over the last axis (Ba et al. 2016):
    /// `(x - mean) / sqrt(var + eps) * gain + bias`, biased variance.
    /// `gain` and `bias` have shape (D).
    ///
    /// Backward (per row, `xh` the normalised input, `r = 1/sqrt(var+eps)`):
    /// `dxh = g * gain`, `dx = r * (dxh - mean(dxh) - xh * mean(dxh * xh))`,
    /// `dgain = sum_rows(g * xh)`, `dbias = sum_rows(g)`.
    pub fn layer_norm(self, gain: Var<'t, T>, bias: Var<'t, T>, eps: f64) -> Var<'t, T> {
        let x = self.value();
        let d = *x.shape().last().unwrap_or(&0);
        let (gv, bv) = (gain.value(), bias.value());
        assert!(
            gv.shape() == [d] && bv.shape() == [d],
            "layer_norm: input {:?} needs gain and bias of shape [{d}], got {:?} and {:?}",
            x.shape(),
            gv.shape(),
            bv.shape()
        );
        let eps = T::from_f64(eps);
        let inv_d = T::ONE / T::from_usize(d.max(1));
        let rows = x.numel() / d.max(1);
        let mut rstd = vec![T::ZERO; rows];
        let mut xhat = vec![T::ZERO; x.numel()];
        let mut out = vec![T::ZERO; x.numel()];
        let (gd, bd) = (gv.data(), bv.data());
        // Rows are independent: in parallel, each row summed in order.
        type RowRefs<'a, T> = ((&'a [T], &'a mut [T]), (&'a mut [T], &'a mut T));
        let row = |((xr, hr), (yr, rs)): RowRefs<'_, T>| {
            let mean: T = xr.iter().copied().sum::<T>() * inv_d;
            let var: T = xr.iter().map(|&v| (v - mean) * (v - mean)).sum::<T>() * inv_d;
            *rs = T::ONE / (var + eps).sqrt();
            for j in 0..xr.len() {
                hr[j] = (xr[j] - mean) * *rs;
                yr[j] = hr[j] * gd[j] + bd[j];
            }
        };
        if d > 0 {
            x.data()
                .par_chunks(d)
                .zip(xhat.par_chunks_mut(d))
                .zip(out.par_chunks_mut(d).zip(rstd.par_iter_mut()))
                .with_min_len(ROWS_PER_TASK)
                .for_each(row);
        }
        let xhat = Tensor::from_vec(xhat, x.shape());
        self.tape().record(
            "layer_norm",
            Tensor::from_vec(out, x.shape()),
            &[self, gain, bias],
            move |g, need| {
                let gain = gv.data();
                let dx = need[0].then(|| {
                    let mut dx = vec![T::ZERO; g.numel()];
                    if d > 0 {
                        g.data()
                            .par_chunks(d)
                            .zip(xhat.data().par_chunks(d))
                            .zip(dx.par_chunks_mut(d).zip(rstd.par_iter()))
                            .with_min_len(ROWS_PER_TASK)
                            .for_each(|((gr, hr), (dr, &rs))| {
                                let (mut m1, mut m2) = (T::ZERO, T::ZERO);
                                for j in 0..d {
                                    let dxh = gr[j] * gain[j];
                                    m1 += dxh;
                                    m2 += dxh * hr[j];
                                }
                                let (m1, m2) = (m1 * inv_d, m2 * inv_d);
                                for j in 0..d {
                                    dr[j] = rs * (gr[j] * gain[j] - m1 - hr[j] * m2);
                                }
                            });
                    }
                    Tensor::from_vec(dx, g.shape())
                });
                let dgain =
                    need[1].then(|| crate::kernels::column_sums(g.data(), Some(xhat.data()), d));
                let dbias = need[2].then(|| crate::kernels::column_sums(g.data(), None, d));
                vec![dx, dgain, dbias]
            },
        )
    }

    /// Embedding lookup: `self` is the table (V, D); `ids` (with shape
    /// `ids_shape`) pick rows, giving (ids_shape..., D). Backward scatters
    /// gradient rows back with `+=`, so a repeated id sums its gradients.
    /// Panics if an id is not below V.
    pub fn embedding(self, ids: &[usize], ids_shape: &[usize]) -> Var<'t, T> {
        let w = self.value();
        assert!(
            w.ndim() == 2,
            "embedding: table must be (V, D), got shape {:?}",
            w.shape()
        );
        assert!(
            ids.len() == numel(ids_shape),
            "embedding: {} ids do not fill shape {ids_shape:?}",
            ids.len()
        );
        let (v, d) = (w.shape()[0], w.shape()[1]);
        if let Some(&bad) = ids.iter().find(|&&i| i >= v) {
            panic!(
                "embedding: id {bad} out of range for table of shape {:?}",
                w.shape()
            );
        }
        let mut out = Vec::with_capacity(ids.len() * d);
        for &i in ids {
            out.extend_from_slice(&w.data()[i * d..(i + 1) * d]);
        }
        let mut shape = ids_shape.to_vec();
        shape.push(d);
        let ids = ids.to_vec();
        self.tape().record(
            "embedding",
            Tensor::from_vec(out, &shape),
            &[self],
            move |g, _| {
                let mut dw = vec![T::ZERO; v * d];
                for (k, &i) in ids.iter().enumerate() {
                    for (a, &b) in dw[i * d..(i + 1) * d]
                        .iter_mut()
                        .zip(&g.data()[k * d..(k + 1) * d])
                    {
                        *a += b;
                    }
                }
                vec![Some(Tensor::from_vec(dw, &[v, d]))]
            },
        )
    }

    /// Replaces entries where `mask` is non-zero by `value` (attention masks
    /// use `-inf` or a large negative number). `mask` broadcasts to the
    /// input's shape; no gradient flows to filled entries.
    pub fn masked_fill(self, mask: &Tensor<T>, value: T) -> Var<'t, T> {
        let x = self.value();
        let out = x.zip_map(
            mask,
            "masked_fill",
            move |v, m| if m != T::ZERO { value } else { v },
        );
        assert!(
            out.shape() == x.shape(),
            "masked_fill: mask {:?} must broadcast to input {:?}",
            mask.shape(),
            x.shape()
        );
        let mask = mask.clone();
        self.tape()
            .record("masked_fill", out, &[self], move |g, _| {
                vec![Some(g.zip_map(&mask, "masked_fill", |g, m| {
                    if m != T::ZERO { T::ZERO } else { g }
                }))]
            })
    }

    /// Inverted dropout: in training each entry is zeroed with probability
    /// `p` and the survivors scaled by `1/(1-p)`, so evaluation is the
    /// identity. The mask is drawn from `rng`, in row-major order: the same
    /// seed gives the same mask.
    pub fn dropout<R: rand::Rng + ?Sized>(self, p: f64, train: bool, rng: &mut R) -> Var<'t, T> {
        assert!((0.0..1.0).contains(&p), "dropout: p = {p} is not in [0, 1)");
        if !train || p == 0.0 {
            return self;
        }
        let x = self.value();
        let scale = T::from_f64(1.0 / (1.0 - p));
        let mask = Tensor::from_vec(
            (0..x.numel())
                .map(|_| {
                    if rng.random::<f64>() < p {
                        T::ZERO
                    } else {
                        scale
                    }
                })
                .collect(),
            x.shape(),
        );
        let out = x.zip_map(&mask, "dropout", |a, m| a * m);
        self.tape().record("dropout", out, &[self], move |g, _| {
            vec![Some(g.zip_map(&mask, "dropout", |g, m| g * m))]
        })
    }

    /// Cross-entropy from logits (..., V) against integer `targets` (one per
    /// row), with label smoothing `eps` and an optional ignored padding id.
    ///
    /// The target distribution is `q = (1 - eps) * onehot(y) + eps / V`
    /// (uniform over all V classes, the target included: PyTorch's
    /// convention), so per row
    /// `loss = (1 - eps) * (-log p_y) + eps * mean_v(-log p_v)`,
    /// and the result is the mean over rows whose target is not `ignore`
    /// (0 if there are none). Fused: backward is `(softmax - q) / n` per row.
    pub fn cross_entropy(self, targets: &[usize], ignore: Option<usize>, eps: f64) -> Var<'t, T> {
        let x = self.value();
        let v = *x.shape().last().unwrap_or(&0);
        let rows = x.numel() / v.max(1);
        assert!(
            targets.len() == rows && x.ndim() >= 1,
            "cross_entropy: logits {:?} have {rows} rows but {} targets were given",
            x.shape(),
            targets.len()
        );
        assert!(
            (0.0..=1.0).contains(&eps),
            "cross_entropy: smoothing {eps} not in [0, 1]"
        );
        let valid = move |t: usize| Some(t) != ignore;
        if let Some(&bad) = targets.iter().find(|&&t| valid(t) && t >= v) {
            panic!(
                "cross_entropy: target {bad} out of range for logits {:?}",
                x.shape()
            );
        }
        let n = targets.iter().filter(|&&t| valid(t)).count();
        let (e, one_m) = (T::from_f64(eps), T::from_f64(1.0 - eps));
        let inv_v = T::ONE / T::from_usize(v);
        // Per-row losses in parallel, then summed in row order.
        let row_loss: Vec<T> = x
            .data()
            .par_chunks(v.max(1))
            .zip(targets.par_iter())
            .with_min_len(ROWS_PER_TASK)
            .map(|(xr, &t)| {
                if !valid(t) {
                    return T::ZERO;
                }
                // -log p_v = l - (x_v - m), kept in that order (see logsumexp_parts).
                let Some((m, l)) = logsumexp_parts(xr) else {
                    return -T::NEG_INFINITY; // every logit -inf: infinite loss
                };
                let mean_shifted: T = xr.iter().map(|&x| x - m).sum::<T>() * inv_v;
                one_m * (l - (xr[t] - m)) + e * (l - mean_shifted)
            })
            .collect();
        let total: T = row_loss.into_iter().sum();
        let inv_n = if n > 0 {
            T::ONE / T::from_usize(n)
        } else {
            T::ZERO
        };
        let targets = targets.to_vec();
        self.tape().record(
            "cross_entropy",
            Tensor::scalar(total * inv_n),
            &[self],
            move |g, _| {
                let scale = g.item() * inv_n;
                let mut dx = vec![T::ZERO; x.numel()];
                x.data()
                    .par_chunks(v)
                    .zip(dx.par_chunks_mut(v).zip(targets.par_iter()))
                    .with_min_len(ROWS_PER_TASK)
                    .for_each(|(xr, (dr, &t))| {
                        if !valid(t) {
                            return;
                        }
                        softmax_row(xr, dr);
                        for (j, d) in dr.iter_mut().enumerate() {
                            let q = e * inv_v + if j == t { one_m } else { T::ZERO };
                            *d = (*d - q) * scale;
                        }
                    });
                vec![Some(Tensor::from_vec(dx, x.shape()))]
            },
        )
    }
}

/// The gradient property entries of this family (feature `proptest`): run
/// by the test suite through [`crate::ops::all_cases`].
#[cfg(feature = "proptest")]
#[rustfmt::skip]
pub fn cases() -> Vec<crate::check::cases::GradCase> {
    use crate::check::cases::{GradCase, Values::*, unary, CASES, MORE};
    let e = GradCase::new;
    let wide = Uniform(-3.0, 3.0);
    vec![
        // Neural-network ops.
        e("softmax", "softmax", MORE, unary("softmax", |x| x.softmax(), wide, 3, 4)),
        e("log_softmax", "log_softmax", MORE, unary("log_softmax", |x| x.log_softmax(), wide, 3, 4)),
        e("layer_norm", "layer_norm", MORE, strategies::layer_norm_case()),
        e("embedding", "embedding", MORE, strategies::embedding_case()),
        e("masked_fill", "masked_fill", MORE, strategies::masked_fill_case()),
        e("dropout", "dropout", CASES, strategies::dropout_case()),
        e("cross_entropy", "cross_entropy", MORE, strategies::cross_entropy_case("cross_entropy", true)),
        e("cross_entropy_no_ignore", "cross_entropy", CASES, strategies::cross_entropy_case("cross_entropy_no_ignore", false)),
    ]
}

/// The strategies of this family's gradient entries.
#[cfg(feature = "proptest")]
mod strategies {
    use proptest::collection::vec as pvec;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::Xoshiro256PlusPlus;

    use crate::Tensor;
    use crate::check::cases::{Case, UNIT, Values};
    use crate::check::strategies::shape;
    use crate::tensor::numel;

    /// The padding id of the cross-entropy cases: class 0, as in most
    /// vocabularies (so the pad id is also a real column of the logits).
    pub(super) const PAD: usize = 0;

    /// `layer_norm` over the last axis (D <= 4, D = 1 included) with random
    /// gain and bias. Row values are pairwise distinct, so the variance is
    /// bounded away from 0 (except D = 1, where the output is the bias) and
    /// the normalisation is not ill-conditioned.
    pub(super) fn layer_norm_case() -> BoxedStrategy<Case> {
        shape(3, 4)
            .prop_flat_map(|s| {
                let d = s[s.len() - 1];
                (
                    Values::Distinct(0.25).tensor(s),
                    UNIT.tensor(vec![d]),
                    UNIT.tensor(vec![d]),
                )
            })
            .prop_map(|(x, gain, bias)| {
                Case::new("layer_norm", "eps 1e-5", vec![x, gain, bias], |_, v| {
                    v[0].layer_norm(v[1], v[2], 1e-5)
                })
            })
            .boxed()
    }

    /// `embedding` of a (V, D) table with ids of shape (R, C) or (R * C);
    /// at least one id is repeated, so the scatter-add must sum.
    pub(super) fn embedding_case() -> BoxedStrategy<Case> {
        (1..=3usize, 1..=3usize, 1..=2usize, 2..=3usize)
            .prop_flat_map(|(vocab, d, rows, cols)| {
                (
                    UNIT.tensor(vec![vocab, d]),
                    pvec(0..vocab, rows * cols),
                    Just(vec![rows, cols]),
                    any::<bool>(),
                )
            })
            .prop_map(|(table, mut ids, ids_shape, flat)| {
                let n = ids.len();
                if (1..n).all(|i| !ids[..i].contains(&ids[i])) {
                    ids[n - 1] = ids[0]; // force a repeated id
                }
                let ids_shape = if flat { vec![n] } else { ids_shape };
                Case::new(
                    "embedding",
                    format!("ids {ids:?} shape {ids_shape:?}"),
                    vec![table],
                    move |_, v| v[0].embedding(&ids, &ids_shape),
                )
            })
            .boxed()
    }

    /// `masked_fill` with a random 0/1 mask whose shape broadcasts to the
    /// input's (leading axes dropped, some axes size 1). Fill values are
    /// moderate: see the module docs.
    pub(super) fn masked_fill_case() -> BoxedStrategy<Case> {
        shape(3, 3)
            .prop_flat_map(|s| {
                let n = s.len();
                (
                    UNIT.tensor(s.clone()),
                    Just(s),
                    0..n,
                    pvec(any::<bool>(), n),
                    prop_oneof![Just(-5.0), Just(0.0), Just(2.5)],
                )
            })
            .prop_flat_map(|(x, s, drop, ones, value)| {
                let ms: Vec<usize> = s
                    .iter()
                    .zip(&ones)
                    .skip(drop)
                    .map(|(&d, &one)| if one { 1 } else { d })
                    .collect();
                let mask = pvec(any::<bool>(), numel(&ms)).prop_map(move |bits| {
                    let data = bits
                        .into_iter()
                        .map(|b| if b { 1.0 } else { 0.0 })
                        .collect();
                    Tensor::from_vec(data, &ms)
                });
                (Just(x), mask, Just(value))
            })
            .prop_map(|(x, mask, value)| {
                Case::new(
                    "masked_fill",
                    format!("mask {mask:?} ({:?}), value {value}", mask.data()),
                    vec![x],
                    move |_, v| v[0].masked_fill(&mask, value),
                )
            })
            .boxed()
    }

    /// Training-mode `dropout`. The rng is seeded *inside* the closure, so
    /// every evaluation of `gradcheck` draws the same mask.
    pub(super) fn dropout_case() -> BoxedStrategy<Case> {
        (
            shape(3, 4).prop_flat_map(|s| UNIT.tensor(s)),
            0.1..=0.7f64,
            any::<u64>(),
        )
            .prop_map(|(x, p, seed)| {
                Case::new(
                    "dropout",
                    format!("p {p}, seed {seed}"),
                    vec![x],
                    move |_, v| {
                        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
                        v[0].dropout(p, true, &mut rng)
                    },
                )
            })
            .boxed()
    }

    /// `cross_entropy` of logits (R, V) or (B, T, V), V in 2..=5, with label
    /// smoothing in [0, 0.3]. With `ignore`, at least one target is the
    /// padding id [`PAD`] and at least one is not.
    pub(super) fn cross_entropy_case(name: &'static str, ignore: bool) -> BoxedStrategy<Case> {
        (
            1..=2usize,
            2..=3usize,
            2..=5usize,
            any::<bool>(),
            0.0..=0.3f64,
        )
            .prop_flat_map(|(b, t, v, flat, eps)| {
                let rows = b * t;
                let lead = if flat { vec![rows] } else { vec![b, t] };
                (
                    Values::Uniform(-3.0, 3.0).tensor([lead, vec![v]].concat()),
                    pvec(0..v, rows),
                    0..rows,
                    1..rows,
                    1..v,
                    Just(eps),
                )
            })
            .prop_map(move |(logits, mut targets, pad_at, offset, class, eps)| {
                let ignore = ignore.then_some(PAD);
                if ignore.is_some() {
                    let rows = targets.len();
                    targets[pad_at] = PAD;
                    targets[(pad_at + offset) % rows] = class; // class >= 1: not padding
                }
                Case::new(
                    name,
                    format!("targets {targets:?}, ignore {ignore:?}, eps {eps}"),
                    vec![logits],
                    move |_, v| v[0].cross_entropy(&targets, ignore, eps),
                )
            })
            .boxed()
    }
}
