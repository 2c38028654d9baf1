//! The encoder and decoder (the paper, section 3.1): a [`Stack`] of N
//! layers, each a few blocks wrapped in [`AddNorm`] sublayers, plus a final
//! norm when the norm comes before each block (pre-norm).
//!
//! - encoder layer: self-attention, then feed-forward;
//! - decoder layer: masked self-attention, cross-attention over the
//!   encoder's memory, then feed-forward.

use autograd::{Float, Tensor, Var};

use crate::{
    AddNorm, AttentionBlock, Ctx, FeedForwardBlock, KvCache, ModelConfig, Module, NormBlock,
    Placement, Registry, Rng, Visitor, Wiring,
};

/// Attention weights a layer hands back, by block name (`"self_attn"`).
type Weights<'t, T> = Vec<(&'static str, Var<'t, T>)>;

/// Runs an attention block, asking for its weights when the context keeps
/// them (see [`Ctx::keep_attention`]).
fn attend<'t, T: Float>(
    ctx: &Ctx<'t, T>,
    block: &dyn AttentionBlock<T>,
    (q, kv): (Var<'t, T>, Var<'t, T>),
    mask: Option<&Tensor<T>>,
    name: &'static str,
    weights: &mut Weights<'t, T>,
) -> Var<'t, T> {
    if ctx.keeps_attention() {
        let (y, w) = block.forward_with_weights(ctx, q, kv, mask);
        weights.extend(w.map(|w| (name, w)));
        y
    } else {
        block.forward(ctx, q, kv, mask)
    }
}

/// The Add & Norm sublayer of a stack whose norm is named `norm`.
fn add_norm<T: Float>(r: &Registry<T>, c: &ModelConfig, norm: &str, rng: &mut Rng) -> AddNorm<T> {
    AddNorm::new(r.build_norm(norm, c, rng), Wiring::from_config(c))
}

/// One encoder layer: self-attention, then feed-forward.
pub struct EncoderLayer<T: Float = f32> {
    /// The self-attention block.
    pub self_attn: Box<dyn AttentionBlock<T>>,
    /// The feed-forward block.
    pub ffn: Box<dyn FeedForwardBlock<T>>,
    /// Add & Norm around `self_attn`.
    pub self_attn_norm: AddNorm<T>,
    /// Add & Norm around `ffn`.
    pub ffn_norm: AddNorm<T>,
}

impl<T: Float> EncoderLayer<T> {
    /// The layer the config describes, its blocks built by `registry`
    /// (every name must be registered: see [`Registry::check`]).
    pub fn new(c: &ModelConfig, registry: &Registry<T>, rng: &mut Rng) -> Self {
        let norm = c.encoder_norm();
        EncoderLayer {
            self_attn: registry.build_attention(&c.self_attention, c, rng),
            ffn: registry.build_feed_forward(c, rng),
            self_attn_norm: add_norm(registry, c, norm, rng),
            ffn_norm: add_norm(registry, c, norm, rng),
        }
    }

    /// (B, S, D) -> (B, S, D). `mask` (B, 1, 1, S) masks padded keys;
    /// `tokens` (B, S) marks real tokens (for norms that pool positions).
    pub fn forward<'t>(
        &self,
        ctx: &Ctx<'t, T>,
        x: Var<'t, T>,
        mask: Option<&Tensor<T>>,
        tokens: Option<&Tensor<T>>,
    ) -> Var<'t, T> {
        self.forward_weights(ctx, x, mask, tokens, &mut Vec::new())
    }

    fn forward_weights<'t>(
        &self,
        ctx: &Ctx<'t, T>,
        x: Var<'t, T>,
        mask: Option<&Tensor<T>>,
        tokens: Option<&Tensor<T>>,
        weights: &mut Weights<'t, T>,
    ) -> Var<'t, T> {
        let attn = &*self.self_attn;
        let x = self.self_attn_norm.forward(ctx, x, tokens, |h| {
            attend(ctx, attn, (h, h), mask, "self_attn", weights)
        });
        self.ffn_norm
            .forward(ctx, x, tokens, |h| self.ffn.forward(ctx, h))
    }
}

impl<T: Float> Module<T> for EncoderLayer<T> {
    fn visit(&mut self, v: &mut Visitor<'_, T>) {
        v.module("self_attn", &mut *self.self_attn);
        v.module("ffn", &mut *self.ffn);
        v.module("self_attn_norm", &mut self.self_attn_norm);
        v.module("ffn_norm", &mut self.ffn_norm);
    }
}

/// The masks a decoder layer needs.
pub struct DecoderMasks<'a, T: Float> {
    /// Causal (and target padding) mask for self-attention, (B|1, 1, T, T).
    pub self_mask: Option<&'a Tensor<T>>,
    /// Source padding mask for cross-attention, (B, 1, 1, S).
    pub memory_mask: Option<&'a Tensor<T>>,
    /// Real target tokens (B, T), for norms that pool positions.
    pub tokens: Option<&'a Tensor<T>>,
}

/// One decoder layer: masked self-attention, cross-attention, feed-forward.
/// In a decoder-only model ([`ModelConfig::decoder_only`]: no encoder, the
/// GPT layout of Radford et al. 2018) there is no cross-attention sublayer.
pub struct DecoderLayer<T: Float = f32> {
    /// The masked self-attention block.
    pub self_attn: Box<dyn AttentionBlock<T>>,
    /// The cross-attention block (queries from the decoder, keys and values
    /// from the encoder's memory); `None` in a decoder-only model.
    pub cross_attn: Option<Box<dyn AttentionBlock<T>>>,
    /// The feed-forward block.
    pub ffn: Box<dyn FeedForwardBlock<T>>,
    /// Add & Norm around `self_attn`.
    pub self_attn_norm: AddNorm<T>,
    /// Add & Norm around `cross_attn` (`None` with it).
    pub cross_attn_norm: Option<AddNorm<T>>,
    /// Add & Norm around `ffn`.
    pub ffn_norm: AddNorm<T>,
}

impl<T: Float> DecoderLayer<T> {
    /// The layer the config describes, its blocks built by `registry`.
    pub fn new(c: &ModelConfig, registry: &Registry<T>, rng: &mut Rng) -> Self {
        let norm = c.decoder_norm();
        let cross = !c.decoder_only();
        // Built in this order whether or not the layer has cross-attention,
        // so an encoder-decoder model draws its weights exactly as before.
        let self_attn = registry.build_attention(&c.self_attention, c, rng);
        let cross_attn = cross.then(|| registry.build_attention(&c.cross_attention, c, rng));
        let ffn = registry.build_feed_forward(c, rng);
        let self_attn_norm = add_norm(registry, c, norm, rng);
        let cross_attn_norm = cross.then(|| add_norm(registry, c, norm, rng));
        DecoderLayer {
            self_attn,
            cross_attn,
            ffn,
            self_attn_norm,
            cross_attn_norm,
            ffn_norm: add_norm(registry, c, norm, rng),
        }
    }

    /// (B, T, D) target states and (B, S, D) memory -> (B, T, D).
    pub fn forward<'t>(
        &self,
        ctx: &Ctx<'t, T>,
        x: Var<'t, T>,
        memory: Var<'t, T>,
        m: &DecoderMasks<'_, T>,
    ) -> Var<'t, T> {
        self.forward_weights(ctx, x, memory, m, &mut Vec::new())
    }

    /// One decoding step: the newest position's states (R, 1, D) ->
    /// (R, 1, D), its self-attention keys and values appended to
    /// `self_kv`, cross-attention over the cached memory keys and values
    /// `cross` (with the source padding mask (R, 1, 1, S)). `self_mask`
    /// (R, 1, 1, Len) masks fed padding tokens. Eval mode; equals the last
    /// position of [`DecoderLayer::forward`] over the whole prefix.
    pub fn forward_step<'t>(
        &self,
        ctx: &Ctx<'t, T>,
        x: Var<'t, T>,
        self_kv: &mut KvCache<T>,
        self_mask: Option<&Tensor<T>>,
        cross: Option<(&KvCache<T>, Option<&Tensor<T>>)>,
    ) -> Var<'t, T> {
        let self_attn = &*self.self_attn;
        let mut x = self.self_attn_norm.forward(ctx, x, None, |h| {
            self_attn.cache_kv(ctx, h, self_kv);
            self_attn.attend_cached(ctx, h, self_kv, self_mask)
        });
        if let (Some(cross_attn), Some(norm), Some((kv, mask))) =
            (&self.cross_attn, &self.cross_attn_norm, cross)
        {
            x = norm.forward(ctx, x, None, |h| cross_attn.attend_cached(ctx, h, kv, mask));
        }
        self.ffn_norm
            .forward(ctx, x, None, |h| self.ffn.forward(ctx, h))
    }

    fn forward_weights<'t>(
        &self,
        ctx: &Ctx<'t, T>,
        x: Var<'t, T>,
        memory: Var<'t, T>,
        m: &DecoderMasks<'_, T>,
        w: &mut Weights<'t, T>,
    ) -> Var<'t, T> {
        let self_attn = &*self.self_attn;
        let mut x = self.self_attn_norm.forward(ctx, x, m.tokens, |h| {
            attend(ctx, self_attn, (h, h), m.self_mask, "self_attn", w)
        });
        if let (Some(cross_attn), Some(norm)) = (&self.cross_attn, &self.cross_attn_norm) {
            x = norm.forward(ctx, x, m.tokens, |h| {
                attend(
                    ctx,
                    &**cross_attn,
                    (h, memory),
                    m.memory_mask,
                    "cross_attn",
                    w,
                )
            });
        }
        self.ffn_norm
            .forward(ctx, x, m.tokens, |h| self.ffn.forward(ctx, h))
    }
}

impl<T: Float> Module<T> for DecoderLayer<T> {
    fn visit(&mut self, v: &mut Visitor<'_, T>) {
        v.module("self_attn", &mut *self.self_attn);
        if let Some(a) = &mut self.cross_attn {
            v.module("cross_attn", &mut **a);
        }
        v.module("ffn", &mut *self.ffn);
        v.module("self_attn_norm", &mut self.self_attn_norm);
        if let Some(n) = &mut self.cross_attn_norm {
            v.module("cross_attn_norm", n);
        }
        v.module("ffn_norm", &mut self.ffn_norm);
    }
}

/// N layers, and a final norm when pre-norm (Xiong et al. 2020: without
/// it, the last layer's residual stream reaches the output un-normalised).
pub struct Stack<L, T: Float = f32> {
    /// `"encoder"` or `"decoder"`: names recorded attention weights.
    pub name: &'static str,
    /// The layers, applied in order.
    pub layers: Vec<L>,
    /// The final norm (pre-norm with a norm other than `none`).
    pub final_norm: Option<Box<dyn NormBlock<T>>>,
}

/// The encoder: a stack of [`EncoderLayer`]s.
pub type Encoder<T = f32> = Stack<EncoderLayer<T>, T>;
/// The decoder: a stack of [`DecoderLayer`]s.
pub type Decoder<T = f32> = Stack<DecoderLayer<T>, T>;

impl<L, T: Float> Stack<L, T> {
    /// `n` layers from `layer`, then the final norm `norm` if pre-norm.
    fn build(
        name: &'static str,
        c: &ModelConfig,
        (registry, rng): (&Registry<T>, &mut Rng),
        n: usize,
        norm: &str,
        mut layer: impl FnMut(&mut Rng) -> L,
    ) -> Self {
        let layers = (0..n).map(|_| layer(rng)).collect();
        // An empty stack (the encoder of a decoder-only model) is the
        // identity: no final norm either.
        let final_norm = (c.placement == Placement::Pre && norm != "none" && n > 0)
            .then(|| registry.build_norm(norm, c, rng));
        Stack {
            name,
            layers,
            final_norm,
        }
    }

    /// Runs every layer (`f` runs one and hands back its attention
    /// weights), records the weights and the hidden states (input and each
    /// layer's output) if the context keeps them, then the final norm.
    fn run<'t>(
        &self,
        ctx: &Ctx<'t, T>,
        mut x: Var<'t, T>,
        tokens: Option<&Tensor<T>>,
        f: impl Fn(&L, Var<'t, T>, &mut Weights<'t, T>) -> Var<'t, T>,
    ) -> Var<'t, T> {
        let mut weights = Vec::new();
        ctx.record_hidden(|| format!("{}.input", self.name), x);
        for (i, layer) in self.layers.iter().enumerate() {
            x = f(layer, x, &mut weights);
            ctx.record_hidden(|| format!("{}.layers.{i}", self.name), x);
            for (block, w) in weights.drain(..) {
                ctx.record_attention(|| format!("{}.layers.{i}.{block}", self.name), w);
            }
        }
        match &self.final_norm {
            Some(n) => n.forward(ctx, x, tokens),
            None => x,
        }
    }
}

impl<L: Module<T>, T: Float> Module<T> for Stack<L, T> {
    fn visit(&mut self, v: &mut Visitor<'_, T>) {
        for (i, l) in self.layers.iter_mut().enumerate() {
            v.module(&format!("layers.{i}"), l);
        }
        if let Some(n) = &mut self.final_norm {
            v.module("final_norm", &mut **n);
        }
    }
}

impl<T: Float> Encoder<T> {
    /// `encoder_layers` layers as the config describes.
    pub fn new(c: &ModelConfig, registry: &Registry<T>, rng: &mut Rng) -> Self {
        Self::build(
            "encoder",
            c,
            (registry, rng),
            c.encoder_layers,
            c.encoder_norm(),
            |rng| EncoderLayer::new(c, registry, rng),
        )
    }

    /// Embedded source (B, S, D) -> memory (B, S, D); `mask` (B, 1, 1, S)
    /// masks padded keys, `tokens` (B, S) marks real tokens.
    pub fn forward<'t>(
        &self,
        ctx: &Ctx<'t, T>,
        x: Var<'t, T>,
        mask: Option<&Tensor<T>>,
        tokens: Option<&Tensor<T>>,
    ) -> Var<'t, T> {
        self.run(ctx, x, tokens, |l, x, w| {
            l.forward_weights(ctx, x, mask, tokens, w)
        })
    }
}

impl<T: Float> Decoder<T> {
    /// `decoder_layers` layers as the config describes.
    pub fn new(c: &ModelConfig, registry: &Registry<T>, rng: &mut Rng) -> Self {
        Self::build(
            "decoder",
            c,
            (registry, rng),
            c.decoder_layers,
            c.decoder_norm(),
            |rng| DecoderLayer::new(c, registry, rng),
        )
    }

    /// Embedded target (B, T, D) and memory (B, S, D) -> (B, T, D).
    pub fn forward<'t>(
        &self,
        ctx: &Ctx<'t, T>,
        x: Var<'t, T>,
        memory: Var<'t, T>,
        m: &DecoderMasks<'_, T>,
    ) -> Var<'t, T> {
        self.run(ctx, x, m.tokens, |l, x, w| {
            l.forward_weights(ctx, x, memory, m, w)
        })
    }
}
