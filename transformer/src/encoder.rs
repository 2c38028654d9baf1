//! `Encoder`: N layers of self-attention and feed-forward (the paper,
//! section 3.1), each wrapped in a [`Sublayer`].

use autograd::{Float, Tensor, Var};

use crate::{
    Ctx, FeedForward, ModelConfig, Module, MultiHeadAttention, Norm, NormKind, Placement, Rng,
    Sublayer, Visitor,
};

/// Builds a sublayer from the config with the given norm kind.
pub(crate) fn sublayer<T: Float>(c: &ModelConfig, kind: NormKind) -> Sublayer<T> {
    Sublayer::new(
        kind,
        c.d_model,
        c.norm_eps,
        c.bn_momentum,
        c.placement,
        c.residual,
        c.dropout,
    )
}

/// The final norm a pre-norm stack ends with (none for post-norm).
pub(crate) fn final_norm<T: Float>(c: &ModelConfig, kind: NormKind) -> Option<Norm<T>> {
    (c.placement == Placement::Pre && kind != NormKind::None)
        .then(|| Norm::new(kind, c.d_model, c.norm_eps, c.bn_momentum))
}

/// Multi-head attention through the fast path, or through the reference
/// path that also returns the weights when the context keeps them.
pub(crate) fn attend<'t, T: Float>(
    ctx: &Ctx<'t, T>,
    mha: &MultiHeadAttention<T>,
    q: Var<'t, T>,
    kv: Var<'t, T>,
    mask: Option<&Tensor<T>>,
    weights: &mut Option<Var<'t, T>>,
) -> Var<'t, T> {
    if ctx.keeps_attention() {
        let (y, w) = mha.forward_with_weights(ctx, q, kv, mask);
        *weights = Some(w);
        y
    } else {
        mha.forward(ctx, q, kv, mask)
    }
}

/// One encoder layer: self-attention, then feed-forward.
pub struct EncoderLayer<T: Float = f32> {
    pub self_attn: MultiHeadAttention<T>,
    pub ffn: FeedForward<T>,
    pub norm1: Sublayer<T>,
    pub norm2: Sublayer<T>,
}

impl<T: Float> EncoderLayer<T> {
    pub fn new(c: &ModelConfig, rng: &mut Rng) -> Self {
        EncoderLayer {
            self_attn: MultiHeadAttention::new(c.d_model, c.heads, c.attention_dropout, rng),
            ffn: FeedForward::new(c.d_model, c.d_ff, c.activation, c.ffn_dropout, rng),
            norm1: sublayer(c, c.norm),
            norm2: sublayer(c, c.norm),
        }
    }

    /// (B, S, D) -> (B, S, D), and the attention weights (B, H, S, S) when
    /// the context keeps them (see [`Ctx::keep_attention`]).
    /// `mask` (B, 1, 1, S) masks padded keys; `tokens` (B, S) marks real tokens.
    pub fn forward<'t>(
        &self,
        ctx: &Ctx<'t, T>,
        x: Var<'t, T>,
        mask: Option<&Tensor<T>>,
        tokens: Option<&Tensor<T>>,
    ) -> (Var<'t, T>, Option<Var<'t, T>>) {
        let mut weights = None;
        let x = self.norm1.forward(ctx, x, tokens, |h| {
            attend(ctx, &self.self_attn, h, h, mask, &mut weights)
        });
        let x = self
            .norm2
            .forward(ctx, x, tokens, |h| self.ffn.forward(ctx, h));
        (x, weights)
    }
}

impl<T: Float> Module<T> for EncoderLayer<T> {
    fn visit(&mut self, v: &mut Visitor<'_, T>) {
        v.module("self_attn", &mut self.self_attn);
        v.module("ffn", &mut self.ffn);
        v.module("norm1", &mut self.norm1);
        v.module("norm2", &mut self.norm2);
    }
}

/// A stack of encoder layers (plus a final norm when pre-norm).
pub struct Encoder<T: Float = f32> {
    pub layers: Vec<EncoderLayer<T>>,
    pub final_norm: Option<Norm<T>>,
}

impl<T: Float> Encoder<T> {
    pub fn new(c: &ModelConfig, rng: &mut Rng) -> Self {
        Encoder {
            layers: (0..c.encoder_layers)
                .map(|_| EncoderLayer::new(c, rng))
                .collect(),
            final_norm: final_norm(c, c.norm),
        }
    }

    /// Embedded source (B, S, D) -> memory (B, S, D).
    pub fn forward<'t>(
        &self,
        ctx: &Ctx<'t, T>,
        mut x: Var<'t, T>,
        mask: Option<&Tensor<T>>,
        tokens: Option<&Tensor<T>>,
    ) -> Var<'t, T> {
        for (i, layer) in self.layers.iter().enumerate() {
            let (y, w) = layer.forward(ctx, x, mask, tokens);
            if let Some(w) = w {
                ctx.record_attention(|| format!("encoder.layers.{i}.self_attn"), w);
            }
            x = y;
        }
        match &self.final_norm {
            Some(n) => n.forward(ctx, x, tokens),
            None => x,
        }
    }
}

impl<T: Float> Module<T> for Encoder<T> {
    fn visit(&mut self, v: &mut Visitor<'_, T>) {
        for (i, l) in self.layers.iter_mut().enumerate() {
            v.module(&format!("layers.{i}"), l);
        }
        if let Some(n) = &mut self.final_norm {
            v.module("final_norm", n);
        }
    }
}
