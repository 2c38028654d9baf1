//! `FeedForward`: the position-wise network of the paper (section 3.3),
//! `Linear(D, D_ff) -> activation -> dropout -> Linear(D_ff, D)`.

use autograd::{Float, Var};

use crate::{Ctx, FeedForwardBlock, Linear, Module, Rng, Visitor};

/// The activation between the two linear maps of [`FeedForward`]: the
/// registry's `relu` and `gelu` feed-forward blocks differ only in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `max(x, 0)` (the paper).
    Relu,
    /// GELU, tanh approximation (Hendrycks & Gimpel 2016; BERT, GPT).
    Gelu,
}

/// Position-wise feed-forward network with a pluggable activation.
///
/// ```
/// use autograd::{Tape, Tensor};
/// use transformer::{rng, Activation, Ctx, FeedForward};
/// let ff = FeedForward::<f32>::new(8, 32, Activation::Gelu, 0.0, &mut rng(0));
/// let tape = Tape::new();
/// let ctx = Ctx::eval(&tape);
/// let y = ff.forward(&ctx, tape.constant(Tensor::ones(&[2, 3, 8]))); // (B, T, D)
/// assert_eq!(y.shape(), vec![2, 3, 8]);
/// ```
pub struct FeedForward<T: Float = f32> {
    /// (D, D_ff)
    pub w1: Linear<T>,
    /// (D_ff, D)
    pub w2: Linear<T>,
    /// The activation after `w1`.
    pub activation: Activation,
    /// Dropout after the activation.
    pub dropout: f64,
}

impl<T: Float> FeedForward<T> {
    /// Xavier-initialised `w1` (D, D_ff) then `w2` (D_ff, D), zero biases.
    pub fn new(d: usize, d_ff: usize, activation: Activation, dropout: f64, rng: &mut Rng) -> Self {
        FeedForward {
            w1: Linear::new(d, d_ff, rng),
            w2: Linear::new(d_ff, d, rng),
            activation,
            dropout,
        }
    }

    /// (B, T, D) -> (B, T, D)
    pub fn forward<'t>(&self, ctx: &Ctx<'t, T>, x: Var<'t, T>) -> Var<'t, T> {
        let h = self.w1.forward(ctx, x); // (B, T, D_ff)
        let h = match self.activation {
            Activation::Relu => h.relu(),
            Activation::Gelu => h.gelu(),
        };
        self.w2.forward(ctx, ctx.dropout(h, self.dropout))
    }
}

impl<T: Float> Module<T> for FeedForward<T> {
    fn visit(&mut self, v: &mut Visitor<'_, T>) {
        v.module("w1", &mut self.w1);
        v.module("w2", &mut self.w2);
    }
}

impl<T: Float> FeedForwardBlock<T> for FeedForward<T> {
    fn forward<'t>(&self, ctx: &Ctx<'t, T>, x: Var<'t, T>) -> Var<'t, T> {
        FeedForward::forward(self, ctx, x)
    }
}
