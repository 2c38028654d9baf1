//! The four pluggable slots of the Transformer as traits, and the Add & Norm
//! wiring around the attention and feed-forward blocks.
//!
//! A block is a [`Module`] (its parameters, by name, through one visitor)
//! with a forward of the slot's signature. The model holds each slot as a
//! `Box<dyn ...Block>`: one dynamic call per layer and slot, never per
//! element, so a user's block costs what a built-in one costs.
//!
//! Every block is `Send`, so a model (and a `Trainer`) can move to another
//! thread: the ablation runner trains several models at once.

use autograd::{Float, Tensor, Var};

use crate::{Ctx, KvCache, Module, Placement, Visitor};

/// The position-wise feed-forward slot: (B, T, D) -> (B, T, D). Built-ins:
/// `relu`, `gelu` ([`FeedForward`](crate::FeedForward)).
///
/// ```
/// use autograd::{Float, Tape, Tensor, Var};
/// use transformer::{Ctx, FeedForwardBlock, Module, Visitor};
/// /// A parameter-free block: `x * sigmoid(x)` (SiLU).
/// struct Silu;
/// impl<T: Float> Module<T> for Silu {
///     fn visit(&mut self, _: &mut Visitor<'_, T>) {}
/// }
/// impl<T: Float> FeedForwardBlock<T> for Silu {
///     fn forward<'t>(&self, _: &Ctx<'t, T>, x: Var<'t, T>) -> Var<'t, T> {
///         x * x.sigmoid()
///     }
/// }
/// let tape = Tape::new();
/// let ctx = Ctx::eval(&tape);
/// let y = FeedForwardBlock::<f64>::forward(&Silu, &ctx, tape.constant(Tensor::zeros(&[1, 2, 4])));
/// assert_eq!(y.shape(), vec![1, 2, 4]);
/// ```
pub trait FeedForwardBlock<T: Float = f32>: Module<T> + Send {
    /// (B, T, D) -> (B, T, D)
    fn forward<'t>(&self, ctx: &Ctx<'t, T>, x: Var<'t, T>) -> Var<'t, T>;
}

/// The norm slot of every Add & Norm (and of a pre-norm stack's final
/// norm): (B, T, D) -> (B, T, D). Built-ins: `layer`
/// ([`LayerNorm`](crate::LayerNorm)), `batch`
/// ([`BatchNorm`](crate::BatchNorm)), `none` ([`NoNorm`](crate::NoNorm)).
///
/// `tokens` (B, T) is 1 for real tokens and 0 for padding (`None`: no
/// padding in this batch); a norm that pools over positions (BatchNorm)
/// must ignore padding, a per-token norm ignores `tokens`.
pub trait NormBlock<T: Float = f32>: Module<T> + Send {
    /// (B, T, D) -> (B, T, D)
    fn forward<'t>(
        &self,
        ctx: &Ctx<'t, T>,
        x: Var<'t, T>,
        tokens: Option<&Tensor<T>>,
    ) -> Var<'t, T>;

    /// True if, in eval mode, each position is normalised on its own (its
    /// output depends on no other position): what incremental decoding
    /// with a key/value cache needs, since it runs the decoder on one
    /// position at a time. The default is false, the safe answer: a norm
    /// that does not say so makes decoding fall back to the uncached path.
    /// LayerNorm, NoNorm and BatchNorm (running statistics in eval mode)
    /// say true.
    fn position_wise(&self) -> bool {
        false
    }
}

/// The attention slot (self-attention of both stacks, and the decoder's
/// cross-attention): queries from `q` (B, Tq, D), keys and values from `kv`
/// (B, Tk, D), -> (B, Tq, D). Built-in: `mha`
/// ([`MultiHeadAttention`](crate::MultiHeadAttention)).
///
/// `mask` (0 attend, non-zero masked) broadcasts to (B, H, Tq, Tk): the
/// decoder's self-attention gets the causal mask (with padded keys), the
/// others the source padding mask. A block that adds a position bias
/// (ALiBi, relative positions) computes it from `Tq` and `Tk` and calls
/// [`MultiHeadAttention::forward_biased`](crate::MultiHeadAttention::forward_biased)
/// or the `attention_biased` op.
pub trait AttentionBlock<T: Float = f32>: Module<T> + Send {
    /// (B, Tq, D) queries, (B, Tk, D) keys/values -> (B, Tq, D)
    fn forward<'t>(
        &self,
        ctx: &Ctx<'t, T>,
        q: Var<'t, T>,
        kv: Var<'t, T>,
        mask: Option<&Tensor<T>>,
    ) -> Var<'t, T>;

    /// The output and, if the block can give them, its attention weights
    /// (B, H, Tq, Tk), for plots (asked for through
    /// [`Ctx::keep_attention`]). The default gives none.
    fn forward_with_weights<'t>(
        &self,
        ctx: &Ctx<'t, T>,
        q: Var<'t, T>,
        kv: Var<'t, T>,
        mask: Option<&Tensor<T>>,
    ) -> (Var<'t, T>, Option<Var<'t, T>>) {
        (self.forward(ctx, q, kv, mask), None)
    }

    /// True if the block implements [`AttentionBlock::cache_kv`] and
    /// [`AttentionBlock::attend_cached`], so that decoding can keep its
    /// keys and values instead of re-running the decoder over the whole
    /// prefix at every step (issue 11). The default is false: decoding
    /// then falls back to the uncached path, correct for any block.
    fn supports_cache(&self) -> bool {
        false
    }

    /// Projects keys and values from `kv` (R, Tn, D) and appends them to
    /// `cache` (the decoder's self-attention: one new position per step;
    /// cross-attention: the whole memory, once per sentence). Eval mode.
    fn cache_kv<'t>(&self, ctx: &Ctx<'t, T>, kv: Var<'t, T>, cache: &mut KvCache<T>) {
        let _ = (ctx, kv, cache);
        panic!("AttentionBlock::cache_kv: this block does not support a key/value cache");
    }

    /// Queries `q` (R, Tq, D) against every key and value in `cache` ->
    /// (R, Tq, D), with `mask` (R|1, 1, 1, Tk) as in
    /// [`AttentionBlock::forward`] (0 attend, non-zero masked). With a
    /// cache filled by [`AttentionBlock::cache_kv`] from the same `kv`,
    /// this equals [`AttentionBlock::forward`] (within float rounding).
    fn attend_cached<'t>(
        &self,
        ctx: &Ctx<'t, T>,
        q: Var<'t, T>,
        cache: &KvCache<T>,
        mask: Option<&Tensor<T>>,
    ) -> Var<'t, T> {
        let _ = (ctx, q, cache, mask);
        panic!("AttentionBlock::attend_cached: this block does not support a key/value cache");
    }
}

/// The positional slot: adds position information to the scaled
/// embeddings, (B, T, D) -> (B, T, D). Built-ins: `sinusoidal`, `learned`,
/// `none` ([`PositionalEncoding`](crate::PositionalEncoding)). A model with
/// positions inside attention (ALiBi) uses `none` here.
pub trait PositionalBlock<T: Float = f32>: Module<T> + Send {
    /// (B, T, D) -> (B, T, D)
    fn forward<'t>(&self, ctx: &Ctx<'t, T>, x: Var<'t, T>) -> Var<'t, T>;

    /// `x` (B, T, D) holding positions `start..start + T` (not `0..T`):
    /// what incremental decoding calls with one new position per step.
    /// `None` (the default): not supported, and decoding falls back to
    /// the uncached path. A block that overrides it must agree with
    /// [`PositionalBlock::forward`] on those positions.
    fn forward_at<'t>(&self, ctx: &Ctx<'t, T>, x: Var<'t, T>, start: usize) -> Option<Var<'t, T>> {
        let _ = (ctx, x, start);
        None
    }
}

/// How an [`AddNorm`] connects its block: the ablation knobs of the
/// sublayer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Wiring {
    /// Norm after the residual add (the paper) or before the block.
    pub placement: Placement,
    /// The residual connection `x +` (off: an ablation).
    pub residual: bool,
    /// Dropout on the block's output (the paper's P_drop = 0.1).
    pub dropout: f64,
}

impl Wiring {
    /// The wiring the config asks for.
    pub fn from_config(c: &crate::ModelConfig) -> Self {
        Wiring {
            placement: c.placement,
            residual: c.residual,
            dropout: c.dropout,
        }
    }
}

/// "Add & Norm" around one block (the paper, section 3.1): its norm plus
/// the wiring.
///
/// - post (the paper): `y = Norm(x + Dropout(F(x)))`
/// - pre: `y = x + Dropout(F(Norm(x)))`
///
/// Without the residual the `x +` term is dropped. Its parameters are the
/// norm's, named directly under the sublayer (`...ffn_norm.gain`).
///
/// ```
/// use autograd::{Tape, Tensor};
/// use transformer::{AddNorm, Ctx, LayerNorm, Placement, Wiring};
/// let wiring = Wiring { placement: Placement::Pre, residual: true, dropout: 0.0 };
/// let sub = AddNorm::<f64>::new(Box::new(LayerNorm::new(4, 1e-5)), wiring);
/// let tape = Tape::new();
/// let ctx = Ctx::eval(&tape);
/// let x = tape.constant(Tensor::randn(&[1, 2, 4], 0.0, 1.0, 3)); // (B, T, D)
/// let y = sub.forward(&ctx, x, None, |h| h * 0.0); // a block that outputs 0
/// assert_eq!(y.value(), x.value()); // pre-norm: x + 0
/// ```
pub struct AddNorm<T: Float = f32> {
    /// The norm (LayerNorm in the paper).
    pub norm: Box<dyn NormBlock<T>>,
    /// Placement, residual and dropout.
    pub wiring: Wiring,
}

impl<T: Float> AddNorm<T> {
    /// The sublayer with `norm` and `wiring`.
    pub fn new(norm: Box<dyn NormBlock<T>>, wiring: Wiring) -> Self {
        AddNorm { norm, wiring }
    }

    /// Applies the block `f` to (B, T, D) `x` with this sublayer's wiring;
    /// `tokens` (B, T) marks real tokens for the norm.
    pub fn forward<'t>(
        &self,
        ctx: &Ctx<'t, T>,
        x: Var<'t, T>,
        tokens: Option<&Tensor<T>>,
        f: impl FnOnce(Var<'t, T>) -> Var<'t, T>,
    ) -> Var<'t, T> {
        let w = self.wiring;
        let add = |y: Var<'t, T>| if w.residual { x + y } else { y };
        match w.placement {
            Placement::Post => {
                let y = ctx.dropout(f(x), w.dropout);
                self.norm.forward(ctx, add(y), tokens)
            }
            Placement::Pre => {
                let y = f(self.norm.forward(ctx, x, tokens));
                add(ctx.dropout(y, w.dropout))
            }
        }
    }
}

impl<T: Float> Module<T> for AddNorm<T> {
    fn visit(&mut self, v: &mut Visitor<'_, T>) {
        self.norm.visit(v);
    }
}
