//! `Decoder`: N layers of masked self-attention, cross-attention over the
//! encoder's memory, and feed-forward (the paper, section 3.1).

use autograd::{Float, Tensor, Var};

use crate::encoder::{attend, final_norm, sublayer};
use crate::{
    Ctx, FeedForward, ModelConfig, Module, MultiHeadAttention, Norm, Rng, Sublayer, Visitor,
};

/// One decoder layer.
pub struct DecoderLayer<T: Float = f32> {
    pub self_attn: MultiHeadAttention<T>,
    pub cross_attn: MultiHeadAttention<T>,
    pub ffn: FeedForward<T>,
    pub norm1: Sublayer<T>,
    pub norm2: Sublayer<T>,
    pub norm3: Sublayer<T>,
}

/// The masks a decoder layer needs.
pub struct DecoderMasks<'a, T: Float> {
    /// Causal (and target padding) mask for self-attention, (B|1, 1, T, T).
    pub self_mask: Option<&'a Tensor<T>>,
    /// Source padding mask for cross-attention, (B, 1, 1, S).
    pub memory_mask: Option<&'a Tensor<T>>,
    /// Real target tokens (B, T), for BatchNorm.
    pub tokens: Option<&'a Tensor<T>>,
}

impl<T: Float> DecoderLayer<T> {
    pub fn new(c: &ModelConfig, rng: &mut Rng) -> Self {
        let kind = c.decoder_norm();
        DecoderLayer {
            self_attn: MultiHeadAttention::new(c.d_model, c.heads, c.attention_dropout, rng),
            cross_attn: MultiHeadAttention::new(c.d_model, c.heads, c.attention_dropout, rng),
            ffn: FeedForward::new(c.d_model, c.d_ff, c.activation, c.ffn_dropout, rng),
            norm1: sublayer(c, kind),
            norm2: sublayer(c, kind),
            norm3: sublayer(c, kind),
        }
    }

    /// (B, T, D) target states and (B, S, D) memory -> (B, T, D), with the
    /// self- and cross-attention weights when the context keeps them.
    pub fn forward<'t>(
        &self,
        ctx: &Ctx<'t, T>,
        x: Var<'t, T>,
        memory: Var<'t, T>,
        m: &DecoderMasks<'_, T>,
    ) -> (Var<'t, T>, Option<Var<'t, T>>, Option<Var<'t, T>>) {
        let (mut w_self, mut w_cross) = (None, None);
        let x = self.norm1.forward(ctx, x, m.tokens, |h| {
            attend(ctx, &self.self_attn, h, h, m.self_mask, &mut w_self)
        });
        let x = self.norm2.forward(ctx, x, m.tokens, |h| {
            attend(
                ctx,
                &self.cross_attn,
                h,
                memory,
                m.memory_mask,
                &mut w_cross,
            )
        });
        let x = self
            .norm3
            .forward(ctx, x, m.tokens, |h| self.ffn.forward(ctx, h));
        (x, w_self, w_cross)
    }
}

impl<T: Float> Module<T> for DecoderLayer<T> {
    fn visit(&mut self, v: &mut Visitor<'_, T>) {
        v.module("self_attn", &mut self.self_attn);
        v.module("cross_attn", &mut self.cross_attn);
        v.module("ffn", &mut self.ffn);
        v.module("norm1", &mut self.norm1);
        v.module("norm2", &mut self.norm2);
        v.module("norm3", &mut self.norm3);
    }
}

/// A stack of decoder layers (plus a final norm when pre-norm).
pub struct Decoder<T: Float = f32> {
    pub layers: Vec<DecoderLayer<T>>,
    pub final_norm: Option<Norm<T>>,
}

impl<T: Float> Decoder<T> {
    pub fn new(c: &ModelConfig, rng: &mut Rng) -> Self {
        Decoder {
            layers: (0..c.decoder_layers)
                .map(|_| DecoderLayer::new(c, rng))
                .collect(),
            final_norm: final_norm(c, c.decoder_norm()),
        }
    }

    /// Embedded target (B, T, D) and memory (B, S, D) -> (B, T, D).
    pub fn forward<'t>(
        &self,
        ctx: &Ctx<'t, T>,
        mut x: Var<'t, T>,
        memory: Var<'t, T>,
        m: &DecoderMasks<'_, T>,
    ) -> Var<'t, T> {
        for (i, layer) in self.layers.iter().enumerate() {
            let (y, ws, wc) = layer.forward(ctx, x, memory, m);
            if let (Some(ws), Some(wc)) = (ws, wc) {
                ctx.record_attention(|| format!("decoder.layers.{i}.self_attn"), ws);
                ctx.record_attention(|| format!("decoder.layers.{i}.cross_attn"), wc);
            }
            x = y;
        }
        match &self.final_norm {
            Some(n) => n.forward(ctx, x, m.tokens),
            None => x,
        }
    }
}

impl<T: Float> Module<T> for Decoder<T> {
    fn visit(&mut self, v: &mut Visitor<'_, T>) {
        for (i, l) in self.layers.iter_mut().enumerate() {
            v.module(&format!("layers.{i}"), l);
        }
        if let Some(n) = &mut self.final_norm {
            v.module("final_norm", n);
        }
    }
}
