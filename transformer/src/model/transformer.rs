//! `Transformer`: embeddings + positions, encoder, decoder and generator
//! (the output projection), built from one [`ModelConfig`] through a
//! [`Registry`].

use autograd::{Float, Tensor, Var};

use crate::{
    Ctx, Decoder, DecoderMasks, Embedding, Encoder, Linear, ModelConfig, Module, PositionalBlock,
    Registry, Rng, TokenBatch, Tying, Visitor, causal_mask, mask_union, padding_mask,
};

/// What the encoder hands the decoder: memory (B, S, D) and the source
/// padding mask (B, 1, 1, S), if any source token is padding.
pub struct Encoded<'t, T: Float> {
    /// The encoder's output (B, S, D).
    pub memory: Var<'t, T>,
    /// 1 where a source key is padding, (B, 1, 1, S).
    pub src_mask: Option<Tensor<T>>,
}

/// The encoder-decoder Transformer.
///
/// ```
/// use autograd::Tape;
/// use transformer::{Ctx, ModelConfig, TokenBatch, Transformer};
/// let cfg = ModelConfig::tiny(12, 12);
/// let model = Transformer::<f32>::new(&cfg, 0).unwrap();
/// let src = TokenBatch::padded(&[vec![3, 4, 5], vec![6, 7]], 0);
/// let tgt_in = TokenBatch::padded(&[vec![1, 3, 4], vec![1, 6]], 0);
/// let tape = Tape::new();
/// let ctx = Ctx::train(&tape, 1);
/// let logits = model.forward(&ctx, &src, &tgt_in); // (B, T, V)
/// assert_eq!(logits.shape(), vec![2, 3, 12]);
/// let labels = [3, 4, 5, 6, 7, 0];
/// let loss = model.loss(logits, &labels, 0.1);
/// assert!(loss.value().item() > 0.0);
/// ```
pub struct Transformer<T: Float = f32> {
    /// The config it was built from (checkpoints store it, block names
    /// included).
    pub config: ModelConfig,
    /// Source embedding (V_src, D).
    pub src_embed: Embedding<T>,
    /// `None` when tied to the source embedding (`Tying::All`).
    pub tgt_embed: Option<Embedding<T>>,
    /// `None` when the output projection is the target embedding.
    pub generator: Option<Linear<T>>,
    /// Source positions (the `positional` block).
    pub src_pos: Box<dyn PositionalBlock<T>>,
    /// Target positions (the `positional` block).
    pub tgt_pos: Box<dyn PositionalBlock<T>>,
    /// The encoder stack.
    pub encoder: Encoder<T>,
    /// The decoder stack.
    pub decoder: Decoder<T>,
}

impl<T: Float> Transformer<T> {
    /// Builds the model with the built-in blocks ([`Registry::builtin`])
    /// and seeded initialisation; the config is validated.
    pub fn new(config: &ModelConfig, seed: u64) -> Result<Self, String> {
        Self::with_registry(config, &Registry::builtin(), seed)
    }

    /// Builds the model with its blocks from `registry`, by the names in
    /// the config; an unregistered name is an error naming it. The same
    /// config, registry and seed give the same weights, bit for bit.
    pub fn with_registry(
        config: &ModelConfig,
        registry: &Registry<T>,
        seed: u64,
    ) -> Result<Self, String> {
        config.validate()?;
        registry.check(config)?;
        let c = config;
        let mut rng: Rng = crate::rng(seed);
        let src_embed = Embedding::new(c.src_vocab, c.d_model, &mut rng);
        let tgt_embed =
            (c.tying != Tying::All).then(|| Embedding::new(c.tgt_vocab, c.d_model, &mut rng));
        let generator =
            (c.tying == Tying::None).then(|| Linear::new(c.d_model, c.tgt_vocab, &mut rng));
        Ok(Transformer {
            config: c.clone(),
            src_embed,
            tgt_embed,
            generator,
            src_pos: registry.build_positional(c, &mut rng),
            tgt_pos: registry.build_positional(c, &mut rng),
            encoder: Encoder::new(c, registry, &mut rng),
            decoder: Decoder::new(c, registry, &mut rng),
        })
    }

    pub(crate) fn tgt_embedding(&self) -> &Embedding<T> {
        self.tgt_embed.as_ref().unwrap_or(&self.src_embed)
    }

    /// Checks ids against a vocabulary: a programming error if violated
    /// (data loaders validate outside input first). An empty batch (B = 0)
    /// is an error too; empty *sequences* are legal: an empty source gives
    /// the decoder nothing to attend to (cross-attention outputs zeros, as
    /// for a source of padding only), an empty decoder input gives (B, 0, V)
    /// logits.
    pub(crate) fn check_ids(ids: &TokenBatch, vocab: usize, what: &str) {
        assert!(
            ids.batch > 0,
            "Transformer: the {what} batch is empty ((B, T) = (0, {})): nothing to run",
            ids.len
        );
        if let Some(&bad) = ids.ids.iter().find(|&&i| i >= vocab) {
            panic!("Transformer: {what} id {bad} is outside the vocabulary of {vocab}");
        }
    }

    /// (B, T) mask of real tokens (1) vs padding (0), if any padding occurs.
    fn tokens(&self, b: &TokenBatch) -> Option<Tensor<T>> {
        let pad = self.config.pad_id?;
        b.ids.contains(&pad).then(|| {
            let data = b
                .ids
                .iter()
                .map(|&i| if i == pad { T::ZERO } else { T::ONE })
                .collect();
            Tensor::from_vec(data, &b.shape())
        })
    }

    /// Ids (B, T) -> scaled embeddings + positions, with dropout (the
    /// paper, section 5.4): (B, T, D). Shared by encoder and decoder.
    fn embed<'t>(
        &self,
        ctx: &Ctx<'t, T>,
        emb: &Embedding<T>,
        pos: &dyn PositionalBlock<T>,
        ids: &TokenBatch,
    ) -> Var<'t, T> {
        let x = emb.forward(ctx, &ids.ids, &ids.shape()); // (B, T, D)
        ctx.dropout(pos.forward(ctx, x), self.config.dropout)
    }

    /// Source ids (B, S) -> memory (B, S, D). A decoder-only model takes
    /// an empty source (B, 0) and gives an empty memory (B, 0, D).
    pub fn encode<'t>(&self, ctx: &Ctx<'t, T>, src: &TokenBatch) -> Encoded<'t, T> {
        Self::check_ids(src, self.config.src_vocab, "source");
        if self.config.decoder_only() {
            assert!(
                src.len == 0,
                "Transformer::encode: a decoder-only model (encoder_layers = 0) takes an empty \
                 source (B, 0), got (B, S) = ({}, {})",
                src.batch,
                src.len
            );
            let memory = Tensor::zeros(&[src.batch, 0, self.config.d_model]); // (B, 0, D)
            return Encoded {
                memory: ctx.tape.constant(memory),
                src_mask: None,
            };
        }
        let tokens = self.tokens(src);
        let src_mask = tokens
            .as_ref()
            .map(|_| padding_mask(&src.ids, &src.shape(), self.config.pad_id.unwrap_or(0)));
        let x = self.embed(ctx, &self.src_embed, &*self.src_pos, src); // (B, S, D)
        let memory = self
            .encoder
            .forward(ctx, x, src_mask.as_ref(), tokens.as_ref());
        Encoded { memory, src_mask }
    }

    /// Decoder input ids (B, T) and the encoding -> logits (B, T, V).
    pub fn decode<'t>(
        &self,
        ctx: &Ctx<'t, T>,
        enc: &Encoded<'t, T>,
        tgt_in: &TokenBatch,
    ) -> Var<'t, T> {
        Self::check_ids(tgt_in, self.config.tgt_vocab, "target");
        let tokens = self.tokens(tgt_in);
        let causal = causal_mask::<T>(tgt_in.len);
        let self_mask = match &tokens {
            Some(_) => mask_union(
                &causal,
                &padding_mask(
                    &tgt_in.ids,
                    &tgt_in.shape(),
                    self.config.pad_id.unwrap_or(0),
                ),
            ),
            None => causal,
        };
        let masks = DecoderMasks {
            self_mask: Some(&self_mask),
            memory_mask: enc.src_mask.as_ref(),
            tokens: tokens.as_ref(),
        };
        let emb = self.tgt_embedding();
        let y = self.embed(ctx, emb, &*self.tgt_pos, tgt_in); // (B, T, D)
        let h = self.decoder.forward(ctx, y, enc.memory, &masks); // (B, T, D)
        match &self.generator {
            Some(g) => g.forward(ctx, h),
            None => emb.project(ctx, h), // h E^T, (B, T, V)
        }
    }

    /// Source (B, S) and decoder input (B, T) -> logits (B, T, V).
    pub fn forward<'t>(
        &self,
        ctx: &Ctx<'t, T>,
        src: &TokenBatch,
        tgt_in: &TokenBatch,
    ) -> Var<'t, T> {
        let enc = self.encode(ctx, src);
        self.decode(ctx, &enc, tgt_in)
    }

    /// Label-smoothed cross-entropy of logits (B, T, V) against labels
    /// (B * T), averaged over non-padding labels (the fused op; see
    /// `Var::cross_entropy` for the exact formula).
    pub fn loss<'t>(&self, logits: Var<'t, T>, labels: &[usize], smoothing: f64) -> Var<'t, T> {
        logits.cross_entropy(labels, self.config.pad_id, smoothing)
    }
}

impl<T: Float> Module<T> for Transformer<T> {
    fn visit(&mut self, v: &mut Visitor<'_, T>) {
        v.module("src_embed", &mut self.src_embed);
        if let Some(e) = &mut self.tgt_embed {
            v.module("tgt_embed", e);
        }
        if let Some(g) = &mut self.generator {
            v.module("generator", g);
        }
        v.module("src_pos", &mut *self.src_pos);
        v.module("tgt_pos", &mut *self.tgt_pos);
        v.module("encoder", &mut self.encoder);
        v.module("decoder", &mut self.decoder);
    }
}
