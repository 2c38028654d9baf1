//! `MultiHeadAttention` (the paper, section 3.2) and the masks it takes.
//!
//! Masks are tensors of 0 (attend) and 1 (masked) that broadcast to the
//! scores (B, H, Tq, Tk); masked scores become `-inf` before the softmax,
//! and a fully masked row gives zero weights (not NaN).

use autograd::{Float, Tensor, Var};

use crate::{AttentionBlock, Ctx, KvCache, Linear, Module, Rng, Visitor};

/// Padding mask over keys, (B, 1, 1, Tk): 1 where the key is `pad`.
pub fn padding_mask<T: Float>(ids: &[usize], shape: &[usize], pad: usize) -> Tensor<T> {
    let (b, t) = (shape[0], shape[1]);
    let data = ids
        .iter()
        .map(|&i| if i == pad { T::ONE } else { T::ZERO })
        .collect();
    Tensor::from_vec(data, &[b, 1, 1, t])
}

/// Causal mask (1, 1, T, T): 1 where key j lies after query i (j > i).
pub fn causal_mask<T: Float>(t: usize) -> Tensor<T> {
    let data = (0..t * t)
        .map(|k| if k % t > k / t { T::ONE } else { T::ZERO })
        .collect();
    Tensor::from_vec(data, &[1, 1, t, t])
}

/// Union of two masks (either masked), broadcast.
pub fn mask_union<T: Float>(a: &Tensor<T>, b: &Tensor<T>) -> Tensor<T> {
    a.zip_map(b, "mask_union", |x, y| {
        if x != T::ZERO || y != T::ZERO {
            T::ONE
        } else {
            T::ZERO
        }
    })
}

/// Multi-head scaled dot-product attention:
/// `softmax(Q K^T / sqrt(d_k) + M) V` per head, heads concatenated and
/// projected by `w_o`. `d_k = d_model / heads`.
///
/// ```
/// use autograd::{Tape, Tensor};
/// use transformer::{causal_mask, rng, Ctx, MultiHeadAttention};
/// let mha = MultiHeadAttention::<f32>::new(8, 2, 0.0, &mut rng(0));
/// let tape = Tape::new();
/// let ctx = Ctx::eval(&tape);
/// let x = tape.constant(Tensor::randn(&[1, 3, 8], 0.0, 1.0, 1)); // (B, T, D)
/// let (y, w) = mha.forward_with_weights(&ctx, x, x, Some(&causal_mask(3)));
/// assert_eq!(y.shape(), vec![1, 3, 8]);
/// assert_eq!(w.shape(), vec![1, 2, 3, 3]); // (B, H, Tq, Tk)
/// assert_eq!(w.value().at(&[0, 0, 0, 1]), 0.0); // the future is masked
/// ```
pub struct MultiHeadAttention<T: Float = f32> {
    /// Query projection (D, D).
    pub w_q: Linear<T>,
    /// Key projection (D, D).
    pub w_k: Linear<T>,
    /// Value projection (D, D).
    pub w_v: Linear<T>,
    /// Output projection (D, D).
    pub w_o: Linear<T>,
    /// Number of heads H.
    pub heads: usize,
    /// Dropout on the attention weights.
    pub dropout: f64,
}

impl<T: Float> MultiHeadAttention<T> {
    /// Four Xavier-initialised (D, D) projections with zero biases;
    /// panics unless `d_model` is divisible by `heads`.
    pub fn new(d_model: usize, heads: usize, dropout: f64, rng: &mut Rng) -> Self {
        assert!(
            heads > 0 && d_model.is_multiple_of(heads),
            "MultiHeadAttention: d_model {d_model} is not divisible by {heads} heads"
        );
        MultiHeadAttention {
            w_q: Linear::new(d_model, d_model, rng),
            w_k: Linear::new(d_model, d_model, rng),
            w_v: Linear::new(d_model, d_model, rng),
            w_o: Linear::new(d_model, d_model, rng),
            heads,
            dropout,
        }
    }

    /// Queries from `q` (B, Tq, D), keys and values from `kv` (B, Tk, D) ->
    /// (B, Tq, D).
    ///
    /// Runs the fused `attention` op (no head copies, weights recomputed in
    /// backward), except when attention dropout is active, which needs the
    /// weights as a tensor: then the composed reference path of
    /// [`MultiHeadAttention::forward_with_weights`] runs. Both give the same
    /// values and gradients (tests/tests/autograd_fused.rs).
    pub fn forward<'t>(
        &self,
        ctx: &Ctx<'t, T>,
        q: Var<'t, T>,
        kv: Var<'t, T>,
        mask: Option<&Tensor<T>>,
    ) -> Var<'t, T> {
        self.forward_biased(ctx, q, kv, mask, None)
    }

    /// [`MultiHeadAttention::forward`] with an additive score bias that
    /// broadcasts to (B, H, Tq, Tk), added after the `1/sqrt(Dk)` scale and
    /// before the mask: `softmax(Q K^T / sqrt(Dk) + bias + M) V`. The bias
    /// is a `Var`, so a learned bias (a relative-position table) trains;
    /// ALiBi (Press et al. 2022) passes a constant `-slope_h * |i - j|`.
    ///
    /// ```
    /// use autograd::{Tape, Tensor};
    /// use transformer::{rng, Ctx, MultiHeadAttention};
    /// let mha = MultiHeadAttention::<f64>::new(4, 2, 0.0, &mut rng(0));
    /// let tape = Tape::new();
    /// let ctx = Ctx::eval(&tape);
    /// let x = tape.constant(Tensor::randn(&[1, 3, 4], 0.0, 1.0, 1)); // (B, T, D)
    /// // A huge negative bias on key 0 for every query: like masking it.
    /// let mut b = vec![0.0; 9];
    /// for i in 0..3 { b[3 * i] = -1e9; }
    /// let bias = tape.constant(Tensor::from_vec(b, &[1, 1, 3, 3])); // (1, 1, Tq, Tk)
    /// let mask = Tensor::from_vec(vec![1.0, 0.0, 0.0], &[1, 1, 1, 3]);
    /// let biased = mha.forward_biased(&ctx, x, x, None, Some(bias));
    /// let masked = mha.forward(&ctx, x, x, Some(&mask));
    /// assert!(biased.value().allclose(&masked.value(), 1e-12, 1e-12));
    /// ```
    pub fn forward_biased<'t>(
        &self,
        ctx: &Ctx<'t, T>,
        q: Var<'t, T>,
        kv: Var<'t, T>,
        mask: Option<&Tensor<T>>,
        bias: Option<Var<'t, T>>,
    ) -> Var<'t, T> {
        if ctx.train && self.dropout > 0.0 {
            return self.weights_and_output(ctx, q, kv, mask, bias).0;
        }
        let qp = self.w_q.forward(ctx, q); // (B, Tq, D)
        let kp = self.w_k.forward(ctx, kv); // (B, Tk, D)
        let vp = self.w_v.forward(ctx, kv); // (B, Tk, D)
        let out = qp.attention_biased(kp, vp, self.heads, mask, bias); // (B, Tq, D)
        self.w_o.forward(ctx, out)
    }

    /// Like [`MultiHeadAttention::forward`], also handing back the attention
    /// weights (B, H, Tq, Tk) (before attention dropout), for plots. This is
    /// the composed reference path: split heads, `Q K^T`, scale, mask,
    /// softmax, dropout, `P V`, merge heads.
    pub fn forward_with_weights<'t>(
        &self,
        ctx: &Ctx<'t, T>,
        q: Var<'t, T>,
        kv: Var<'t, T>,
        mask: Option<&Tensor<T>>,
    ) -> (Var<'t, T>, Var<'t, T>) {
        self.weights_and_output(ctx, q, kv, mask, None)
    }

    /// The composed reference path, with an optional additive bias (see
    /// [`MultiHeadAttention::forward_biased`]): (output, weights).
    pub fn weights_and_output<'t>(
        &self,
        ctx: &Ctx<'t, T>,
        q: Var<'t, T>,
        kv: Var<'t, T>,
        mask: Option<&Tensor<T>>,
        bias: Option<Var<'t, T>>,
    ) -> (Var<'t, T>, Var<'t, T>) {
        let h = self.heads;
        let d = q.dim(-1);
        let qh = self.w_q.forward(ctx, q).split_heads(h); // (B, H, Tq, Dk)
        let kh = self.w_k.forward(ctx, kv).split_heads(h); // (B, H, Tk, Dk)
        let vh = self.w_v.forward(ctx, kv).split_heads(h); // (B, H, Tk, Dk)
        let scale = T::from_f64(1.0 / ((d / h) as f64).sqrt());
        let mut scores = qh.matmul_t(kh) * scale; // (B, H, Tq, Tk)
        if let Some(b) = bias {
            scores = scores + b; // broadcast from (B|1, H|1, Tq, Tk)
        }
        if let Some(m) = mask {
            scores = scores.masked_fill(m, T::NEG_INFINITY);
        }
        let weights = scores.softmax(); // (B, H, Tq, Tk)
        let attn = ctx.dropout(weights, self.dropout);
        let out = attn.matmul(vh).merge_heads(); // (B, Tq, D)
        (self.w_o.forward(ctx, out), weights)
    }
}

impl<T: Float> Module<T> for MultiHeadAttention<T> {
    fn visit(&mut self, v: &mut Visitor<'_, T>) {
        v.module("w_q", &mut self.w_q);
        v.module("w_k", &mut self.w_k);
        v.module("w_v", &mut self.w_v);
        v.module("w_o", &mut self.w_o);
    }
}

impl<T: Float> AttentionBlock<T> for MultiHeadAttention<T> {
    fn forward<'t>(
        &self,
        ctx: &Ctx<'t, T>,
        q: Var<'t, T>,
        kv: Var<'t, T>,
        mask: Option<&Tensor<T>>,
    ) -> Var<'t, T> {
        MultiHeadAttention::forward(self, ctx, q, kv, mask)
    }

    fn forward_with_weights<'t>(
        &self,
        ctx: &Ctx<'t, T>,
        q: Var<'t, T>,
        kv: Var<'t, T>,
        mask: Option<&Tensor<T>>,
    ) -> (Var<'t, T>, Option<Var<'t, T>>) {
        let (y, w) = MultiHeadAttention::forward_with_weights(self, ctx, q, kv, mask);
        (y, Some(w))
    }

    fn supports_cache(&self) -> bool {
        true
    }

    fn cache_kv<'t>(&self, ctx: &Ctx<'t, T>, kv: Var<'t, T>, cache: &mut KvCache<T>) {
        let k = self.w_k.forward(ctx, kv).value(); // (R, Tn, D)
        let v = self.w_v.forward(ctx, kv).value(); // (R, Tn, D)
        cache.append(&k, &v);
    }

    fn attend_cached<'t>(
        &self,
        ctx: &Ctx<'t, T>,
        q: Var<'t, T>,
        cache: &KvCache<T>,
        mask: Option<&Tensor<T>>,
    ) -> Var<'t, T> {
        let qp = self.w_q.forward(ctx, q).value(); // (R, Tq, D)
        let out = cache.attend(&qp, self.heads, mask); // (R, Tq, D), heads merged
        self.w_o.forward(ctx, ctx.tape.constant(out))
    }
}
