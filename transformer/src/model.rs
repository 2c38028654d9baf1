//! `Transformer`: embeddings + positions, encoder, decoder and generator
//! (the output projection), built from one [`ModelConfig`].

use autograd::{Float, Tensor, Var};

use crate::attention::{causal_mask, mask_union, padding_mask};
use crate::decoder::DecoderMasks;
use crate::{
    Ctx, Decoder, Embedding, Encoder, Linear, ModelConfig, Module, PositionalEncoding, Rng, Tying,
    Visitor,
};

/// A batch of token sequences, padded to one length: ids (B, T) row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenBatch {
    pub ids: Vec<usize>,
    pub batch: usize,
    pub len: usize,
}

impl TokenBatch {
    /// Pads every sequence with `pad` to the longest one.
    ///
    /// ```
    /// let b = transformer::TokenBatch::padded(&[vec![5, 6, 7], vec![8]], 0);
    /// assert_eq!((b.batch, b.len), (2, 3));
    /// assert_eq!(b.ids, vec![5, 6, 7, 8, 0, 0]);
    /// ```
    pub fn padded(seqs: &[Vec<usize>], pad: usize) -> Self {
        let len = seqs.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(seqs.len() * len);
        for s in seqs {
            ids.extend_from_slice(s);
            ids.extend(std::iter::repeat_n(pad, len - s.len()));
        }
        TokenBatch {
            ids,
            batch: seqs.len(),
            len,
        }
    }

    /// Wraps ids (B, T); panics if the count does not match.
    pub fn new(ids: Vec<usize>, batch: usize, len: usize) -> Self {
        assert!(
            ids.len() == batch * len,
            "TokenBatch: {} ids do not fill (B, T) = ({batch}, {len})",
            ids.len()
        );
        TokenBatch { ids, batch, len }
    }

    pub fn shape(&self) -> [usize; 2] {
        [self.batch, self.len]
    }

    /// Row `b` as a slice.
    pub fn row(&self, b: usize) -> &[usize] {
        &self.ids[b * self.len..(b + 1) * self.len]
    }
}

/// What the encoder hands the decoder: memory (B, S, D) and the source
/// padding mask (B, 1, 1, S), if any source token is padding.
pub struct Encoded<'t, T: Float> {
    pub memory: Var<'t, T>,
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
/// let ctx = Ctx::new(&tape, true, 1);
/// let logits = model.forward(&ctx, &src, &tgt_in); // (B, T, V)
/// assert_eq!(logits.shape(), vec![2, 3, 12]);
/// let labels = [3, 4, 5, 6, 7, 0];
/// let loss = model.loss(logits, &labels, 0.1);
/// assert!(loss.value().item() > 0.0);
/// ```
pub struct Transformer<T: Float = f32> {
    pub config: ModelConfig,
    pub src_embed: Embedding<T>,
    /// `None` when tied to the source embedding (`Tying::All`).
    pub tgt_embed: Option<Embedding<T>>,
    /// `None` when the output projection is the target embedding.
    pub generator: Option<Linear<T>>,
    pub src_pos: PositionalEncoding<T>,
    pub tgt_pos: PositionalEncoding<T>,
    pub encoder: Encoder<T>,
    pub decoder: Decoder<T>,
}

impl<T: Float> Transformer<T> {
    /// Builds the model with seeded initialisation; the config is validated.
    pub fn new(config: &ModelConfig, seed: u64) -> Result<Self, String> {
        config.validate()?;
        let c = config;
        let mut rng: Rng = crate::rng(seed);
        let src_embed = Embedding::new(c.src_vocab, c.d_model, &mut rng);
        let tgt_embed =
            (c.tying != Tying::All).then(|| Embedding::new(c.tgt_vocab, c.d_model, &mut rng));
        let generator =
            (c.tying == Tying::None).then(|| Linear::new(c.d_model, c.tgt_vocab, true, &mut rng));
        Ok(Transformer {
            config: c.clone(),
            src_embed,
            tgt_embed,
            generator,
            src_pos: PositionalEncoding::new(c.positional, c.max_len, c.d_model, &mut rng),
            tgt_pos: PositionalEncoding::new(c.positional, c.max_len, c.d_model, &mut rng),
            encoder: Encoder::new(c, &mut rng),
            decoder: Decoder::new(c, &mut rng),
        })
    }

    fn tgt_embedding(&self) -> &Embedding<T> {
        self.tgt_embed.as_ref().unwrap_or(&self.src_embed)
    }

    /// Checks ids against a vocabulary: a programming error if violated
    /// (data loaders validate outside input first).
    fn check_ids(ids: &TokenBatch, vocab: usize, what: &str) {
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

    /// Source ids (B, S) -> memory (B, S, D).
    pub fn encode<'t>(&self, ctx: &Ctx<'t, T>, src: &TokenBatch) -> Encoded<'t, T> {
        Self::check_ids(src, self.config.src_vocab, "source");
        let tokens = self.tokens(src);
        let src_mask = tokens
            .as_ref()
            .map(|_| padding_mask(&src.ids, &src.shape(), self.config.pad_id.unwrap_or(0)));
        let x = self.src_embed.forward(ctx, &src.ids, &src.shape()); // (B, S, D)
        let x = ctx.dropout(self.src_pos.forward(ctx, x), self.config.dropout);
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
        let y = emb.forward(ctx, &tgt_in.ids, &tgt_in.shape()); // (B, T, D)
        let y = ctx.dropout(self.tgt_pos.forward(ctx, y), self.config.dropout);
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
        v.module("src_pos", &mut self.src_pos);
        v.module("tgt_pos", &mut self.tgt_pos);
        v.module("encoder", &mut self.encoder);
        v.module("decoder", &mut self.decoder);
    }
}
