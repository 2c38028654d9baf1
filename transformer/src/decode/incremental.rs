//! Incremental decoding: the decoder run one position at a time over
//! key/value caches (issue 11). Eval mode only, on a no-grad tape.
//!
//! The reference is the uncached path ([`Transformer::decode`] over the
//! whole prefix): every model that [`Transformer::supports_kv_cache`] gives
//! the same next-token logits both ways, within float rounding
//! (transformer/tests/decode.rs).

use autograd::{Float, Tape, Tensor};

use crate::{Ctx, KvCache, TokenBatch, Transformer};

/// The state of decoding R rows (sentences, or beam hypotheses) after
/// `pos` positions: per decoder layer a self-attention cache and, in an
/// encoder-decoder model, a cross-attention cache over the encoder's
/// memory; the source padding mask; the tokens fed so far.
///
/// ```
/// use transformer::{ModelConfig, TokenBatch, Transformer};
/// let model = Transformer::<f64>::new(&ModelConfig::tiny(10, 10), 0).unwrap();
/// let src = TokenBatch::padded(&[vec![3, 4, 5], vec![6, 7]], 0);
/// let mut state = model.start_decoding(&src, 8);
/// let logits = model.decode_step(&mut state, &[1, 1]); // both rows start with BOS = 1
/// assert_eq!(logits.shape(), &[2, 10]); // (R, V)
/// state.reorder(&[1, 1, 0]); // three hypotheses: two from source 1, one from source 0
/// let logits = model.decode_step(&mut state, &[4, 5, 6]);
/// assert_eq!((logits.shape(), state.position()), (&[3, 10][..], 2));
/// ```
#[derive(Clone, Debug)]
pub struct DecodeState<T: Float = f32> {
    /// Per decoder layer: the self-attention cache (R rows).
    self_kv: Vec<KvCache<T>>,
    /// Per decoder layer: the cross-attention cache (`None` in a
    /// decoder-only model).
    cross_kv: Vec<Option<KvCache<T>>>,
    /// Source padding mask of the sources (N, 1, 1, S), if any is padded.
    src_mask: Option<Tensor<T>>,
    /// Row -> source index.
    src_rows: Vec<usize>,
    /// Row -> the tokens fed so far (for the target padding mask).
    fed: Vec<Vec<usize>>,
    /// A tied output projection's E^T (D, V), laid out once per search
    /// (`None` with a separate generator). Through the strided view, the
    /// product copied E^T row-major at every step (1 MB for W5's
    /// vocabulary); the logits are the same either way (every element is
    /// the same multiply-add chain).
    tied_t: Option<Tensor<T>>,
}

impl<T: Float> DecodeState<T> {
    /// Rows being decoded.
    pub fn rows(&self) -> usize {
        self.src_rows.len()
    }

    /// Positions fed so far (the next token goes at this position).
    pub fn position(&self) -> usize {
        self.fed.first().map_or(0, Vec::len)
    }

    /// The source each row decodes.
    pub fn sources(&self) -> &[usize] {
        &self.src_rows
    }

    /// Makes the rows `idx` (indices of the current rows, repeats allowed)
    /// the new rows: beam search reselecting hypotheses, greedy search
    /// dropping finished sources.
    pub fn reorder(&mut self, idx: &[usize]) {
        for c in &mut self.self_kv {
            c.reorder(idx);
        }
        for c in self.cross_kv.iter_mut().flatten() {
            c.reorder(idx);
        }
        self.src_rows = idx.iter().map(|&i| self.src_rows[i]).collect();
        self.fed = idx.iter().map(|&i| self.fed[i].clone()).collect();
    }

    /// (R, 1, 1, Len) mask of fed padding tokens (what the uncached path's
    /// target padding mask does with a generated pad), if any.
    fn target_mask(&self, pad: Option<usize>) -> Option<Tensor<T>> {
        let pad = pad?;
        let any = self.fed.iter().flatten().any(|&t| t == pad);
        any.then(|| {
            let len = self.position();
            let data = self
                .fed
                .iter()
                .flatten()
                .map(|&t| if t == pad { T::ONE } else { T::ZERO })
                .collect();
            Tensor::from_vec(data, &[self.rows(), 1, 1, len])
        })
    }

    /// The source mask's rows for the current rows, (R, 1, 1, S).
    fn memory_mask(&self) -> Option<Tensor<T>> {
        self.src_mask.as_ref().map(|m| {
            let s = m.shape()[3];
            let mut data = Vec::with_capacity(self.rows() * s);
            for &b in &self.src_rows {
                data.extend_from_slice(&m.data()[b * s..(b + 1) * s]);
            }
            Tensor::from_vec(data, &[self.rows(), 1, 1, s])
        })
    }
}

impl<T: Float> Transformer<T> {
    /// True if every block decoding touches can run incrementally: the
    /// decoder's attention blocks support a cache
    /// ([`AttentionBlock::supports_cache`](crate::AttentionBlock::supports_cache)),
    /// its norms are position-wise in eval mode
    /// ([`NormBlock::position_wise`](crate::NormBlock::position_wise)) and
    /// the target positional block takes an offset
    /// ([`PositionalBlock::forward_at`](crate::PositionalBlock::forward_at)).
    /// Every built-in block does; a user's block that does not say so makes
    /// [`Transformer::greedy_decode`] and [`Transformer::beam_search`] use
    /// the uncached path. (Feed-forward blocks are position-wise by the
    /// slot's definition.)
    pub fn supports_kv_cache(&self) -> bool {
        let layers_ok = self.decoder.layers.iter().all(|l| {
            l.self_attn.supports_cache()
                && l.cross_attn.as_ref().is_none_or(|a| a.supports_cache())
                && l.self_attn_norm.norm.position_wise()
                && l.cross_attn_norm
                    .as_ref()
                    .is_none_or(|n| n.norm.position_wise())
                && l.ffn_norm.norm.position_wise()
        });
        let final_ok = self
            .decoder
            .final_norm
            .as_ref()
            .is_none_or(|n| n.position_wise());
        // The positional block says by answering (a probe on one zero row).
        let tape = Tape::no_grad();
        let ctx = Ctx::eval(&tape);
        let probe = tape.constant(Tensor::zeros(&[1, 1, self.config.d_model]));
        let pos_ok = self.tgt_pos.forward_at(&ctx, probe, 0).is_some();
        layers_ok && final_ok && pos_ok
    }

    /// Encodes `src` (N, S) and fills the cross-attention caches, ready to
    /// decode one row per source, with room for `capacity` positions
    /// (start token included) before the caches grow. Panics unless
    /// [`Transformer::supports_kv_cache`].
    pub fn start_decoding(&self, src: &TokenBatch, capacity: usize) -> DecodeState<T> {
        assert!(
            self.supports_kv_cache(),
            "Transformer::start_decoding: a block of this model does not support a key/value \
             cache (see Transformer::supports_kv_cache); decode with the uncached path"
        );
        let tape = Tape::no_grad();
        let ctx = Ctx::eval(&tape);
        let enc = self.encode(&ctx, src);
        let (n, s, d) = (src.batch, src.len, self.config.d_model);
        let cross_kv = self
            .decoder
            .layers
            .iter()
            .map(|l| {
                l.cross_attn.as_ref().map(|a| {
                    let mut c = KvCache::new(n, s, d);
                    a.cache_kv(&ctx, enc.memory, &mut c);
                    c
                })
            })
            .collect();
        DecodeState {
            self_kv: (0..self.decoder.layers.len())
                .map(|_| KvCache::new(n, capacity, d))
                .collect(),
            cross_kv,
            src_mask: enc.src_mask,
            src_rows: (0..n).collect(),
            fed: vec![Vec::new(); n],
            tied_t: self
                .generator
                .is_none()
                .then(|| self.tgt_embedding().weight.value.permute(&[1, 0])), // (D, V)
        }
    }

    /// Feeds one token per row (`tokens`, R) at position
    /// [`DecodeState::position`] and returns the next-token logits (R, V).
    /// Equals the last position of [`Transformer::decode`] over each row's
    /// whole prefix, within float rounding.
    pub fn decode_step(&self, state: &mut DecodeState<T>, tokens: &[usize]) -> Tensor<T> {
        let r = state.rows();
        assert_eq!(
            tokens.len(),
            r,
            "Transformer::decode_step: {} tokens for {r} rows",
            tokens.len()
        );
        let ids = TokenBatch::new(tokens.to_vec(), r, 1); // (R, 1)
        Self::check_ids(&ids, self.config.tgt_vocab, "target");
        let pos = state.position();
        for (f, &t) in state.fed.iter_mut().zip(tokens) {
            f.push(t);
        }
        let self_mask = state.target_mask(self.config.pad_id);
        let memory_mask = state.memory_mask();
        let tape = Tape::no_grad();
        let ctx = Ctx::eval(&tape);
        let emb = self.tgt_embedding();
        let x = emb.forward(&ctx, &ids.ids, &ids.shape()); // (R, 1, D)
        let mut x = self
            .tgt_pos
            .forward_at(&ctx, x, pos)
            .expect("Transformer::decode_step: the positional block takes no offset");
        for (i, layer) in self.decoder.layers.iter().enumerate() {
            let cross = state.cross_kv[i]
                .as_ref()
                .map(|c| (c, memory_mask.as_ref()));
            x = layer.forward_step(&ctx, x, &mut state.self_kv[i], self_mask.as_ref(), cross);
        }
        if let Some(n) = &self.decoder.final_norm {
            x = n.forward(&ctx, x, None);
        }
        let logits = match (&self.generator, &state.tied_t) {
            (Some(g), _) => g.forward(&ctx, x),
            (None, Some(et)) => x.linear(tape.constant(et.clone()), None), // x E^T
            (None, None) => unreachable!("start_decoding lays E^T out for a tied projection"),
        }; // (R, 1, V)
        logits.value().reshape(&[r, self.config.tgt_vocab])
    }
}
