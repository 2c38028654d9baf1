//! `Linear`: `y = x W + b`, with W stored (D_in, D_out) so the forward is a
//! plain product over a stack of rows (no transpose, one tall gemm).

use autograd::{Float, Param, Tensor, Var};

use crate::{Ctx, Module, Rng, Visitor};

/// Xavier/Glorot uniform (Glorot & Bengio 2010): `U(-a, a)` with
/// `a = sqrt(6 / (fan_in + fan_out))`, keeping activation variance about
/// constant through a stack of linear maps. The paper does not state its
/// init; this is what its tensor2tensor code used.
pub fn xavier_uniform<T: Float>(fan_in: usize, fan_out: usize, rng: &mut Rng) -> Tensor<T> {
    let a = (6.0 / (fan_in + fan_out) as f64).sqrt();
    Tensor::rand_uniform_with(&[fan_in, fan_out], -a, a, rng)
}

/// A fully connected layer.
///
/// ```
/// use autograd::{Tape, Tensor};
/// use transformer::{rng, Ctx, Linear};
/// let lin = Linear::<f32>::new(4, 3, &mut rng(0));
/// let tape = Tape::new();
/// let ctx = Ctx::eval(&tape);
/// let y = lin.forward(&ctx, tape.constant(Tensor::ones(&[2, 5, 4]))); // (B, T, D_in)
/// assert_eq!(y.shape(), vec![2, 5, 3]); // (B, T, D_out)
/// ```
pub struct Linear<T: Float = f32> {
    /// (D_in, D_out)
    pub weight: Param<T>,
    /// (D_out), or none.
    pub bias: Option<Param<T>>,
}

impl<T: Float> Linear<T> {
    /// Xavier-uniform weight (D_in, D_out) and a zero bias (D_out).
    pub fn new(d_in: usize, d_out: usize, rng: &mut Rng) -> Self {
        Linear {
            bias: Some(Param::new(Tensor::zeros(&[d_out]))),
            ..Self::without_bias(d_in, d_out, rng)
        }
    }

    /// Xavier-uniform weight (D_in, D_out), no bias: `y = x W`.
    pub fn without_bias(d_in: usize, d_out: usize, rng: &mut Rng) -> Self {
        Linear {
            weight: Param::new(xavier_uniform(d_in, d_out, rng)),
            bias: None,
        }
    }

    /// (..., D_in) -> (..., D_out)
    pub fn forward<'t>(&self, ctx: &Ctx<'t, T>, x: Var<'t, T>) -> Var<'t, T> {
        // One fused op (gemm accumulating onto the bias): same values as
        // `x.matmul(w) + b`, one pass less (tests/tests/autograd_fused.rs).
        x.linear(
            ctx.param(&self.weight),
            self.bias.as_ref().map(|b| ctx.param(b)),
        )
    }
}

impl<T: Float> Module<T> for Linear<T> {
    fn visit(&mut self, v: &mut Visitor<'_, T>) {
        v.param("weight", &mut self.weight);
        if let Some(b) = &mut self.bias {
            v.param("bias", b);
        }
    }
}
