//! `Embedding`: a (V, D) table looked up by token id and scaled by
//! sqrt(d_model) (the paper, section 3.4), so that embeddings and the
//! sinusoidal positions (entries in [-1, 1]) are of comparable size.

use autograd::{Float, Param, Tensor, Var};

use crate::{Ctx, Module, Rng, Visitor};

/// A token embedding table (V, D).
///
/// ```
/// use autograd::Tape;
/// use transformer::{rng, Ctx, Embedding};
/// let emb = Embedding::<f32>::new(10, 4, &mut rng(0));
/// let tape = Tape::new();
/// let ctx = Ctx::eval(&tape);
/// let x = emb.forward(&ctx, &[1, 2, 3, 1, 0, 0], &[2, 3]); // ids (B, T)
/// assert_eq!(x.shape(), vec![2, 3, 4]); // (B, T, D)
/// ```
pub struct Embedding<T: Float = f32> {
    /// (V, D)
    pub weight: Param<T>,
}

impl<T: Float> Embedding<T> {
    /// Entries drawn from N(0, 1/D): after the sqrt(D) scale a token's
    /// vector has unit-variance entries, like the positions it is added to.
    pub fn new(vocab: usize, d_model: usize, rng: &mut Rng) -> Self {
        let std = (1.0 / d_model as f64).sqrt();
        Embedding {
            weight: Param::new(Tensor::randn_with(&[vocab, d_model], 0.0, std, rng)),
        }
    }

    /// Vocabulary size V.
    pub fn vocab(&self) -> usize {
        self.weight.value.shape()[0]
    }

    /// Width D.
    pub fn d_model(&self) -> usize {
        self.weight.value.shape()[1]
    }

    /// ids (shape `ids_shape`, e.g. (B, T)) -> (B, T, D), times sqrt(D).
    pub fn forward<'t>(&self, ctx: &Ctx<'t, T>, ids: &[usize], ids_shape: &[usize]) -> Var<'t, T> {
        let scale = T::from_f64((self.d_model() as f64).sqrt());
        ctx.param(&self.weight).embedding(ids, ids_shape) * scale
    }

    /// The tied output projection: (B, T, D) -> logits (B, T, V) = h E^T,
    /// without a bias and without copying E^T.
    pub fn project<'t>(&self, ctx: &Ctx<'t, T>, h: Var<'t, T>) -> Var<'t, T> {
        h.matmul_t(ctx.param(&self.weight))
    }
}

impl<T: Float> Module<T> for Embedding<T> {
    fn visit(&mut self, v: &mut Visitor<'_, T>) {
        v.param("weight", &mut self.weight);
    }
}
