//! Normalisation layers: `LayerNorm`, `BatchNorm` for padded sequences, and
//! `NoNorm` (the identity, for the no-norm ablation). Each implements
//! [`NormBlock`], the slot of an Add & Norm sublayer.

use std::cell::RefCell;

use autograd::{Float, Param, Tensor, Var};

use crate::{Ctx, Module, NormBlock, Visitor};

/// Layer normalisation over the last axis (Ba et al. 2016):
/// `(x - mean) / sqrt(var + eps) * gain + bias`, biased variance, gain 1 and
/// bias 0 at init. One fused op with a hand-written backward.
///
/// ```
/// use autograd::{Tape, Tensor};
/// use transformer::{Ctx, LayerNorm};
/// let ln = LayerNorm::<f64>::new(2, 0.0);
/// let tape = Tape::new();
/// let ctx = Ctx::eval(&tape);
/// let y = ln.forward(&ctx, tape.constant(Tensor::from_vec(vec![1.0, 3.0], &[1, 2])));
/// assert_eq!(y.value().data(), &[-1.0, 1.0]);
/// ```
pub struct LayerNorm<T: Float = f32> {
    /// (D)
    pub gain: Param<T>,
    /// (D)
    pub bias: Param<T>,
    /// Added to the variance inside the square root.
    pub eps: f64,
}

impl<T: Float> LayerNorm<T> {
    /// Width `d`, gain 1, bias 0.
    pub fn new(d: usize, eps: f64) -> Self {
        LayerNorm {
            gain: Param::new(Tensor::ones(&[d])),
            bias: Param::new(Tensor::zeros(&[d])),
            eps,
        }
    }

    /// (..., D) -> (..., D)
    pub fn forward<'t>(&self, ctx: &Ctx<'t, T>, x: Var<'t, T>) -> Var<'t, T> {
        x.layer_norm(ctx.param(&self.gain), ctx.param(&self.bias), self.eps)
    }
}

impl<T: Float> Module<T> for LayerNorm<T> {
    fn visit(&mut self, v: &mut Visitor<'_, T>) {
        v.param("gain", &mut self.gain);
        v.param("bias", &mut self.bias);
    }
}

/// Batch normalisation (Ioffe & Szegedy 2015) for (B, T, D) sequences, as
/// Shen et al. (2020) apply it to Transformers: in training, each feature is
/// normalised with the mean and biased variance over the *non-padding tokens
/// of the batch*; in evaluation, with running statistics updated in training
/// as `running = (1 - momentum) * running + momentum * batch` (the running
/// variance uses the unbiased batch variance, as PyTorch does). The running
/// statistics are buffers: checkpoints save them.
///
/// Built from primitives (no hand-written backward): gradients flow through
/// the batch statistics.
///
/// **Pitfall in a causal decoder.** In training, the statistics of position
/// t include tokens after t (of this and other sequences), so information
/// leaks from the future into the past, and the model can learn to rely on
/// it; at inference, running statistics remove the leak and the model sees a
/// different function. This is why `NormScope::EncoderOnly` exists.
///
/// ```
/// use autograd::{Tape, Tensor};
/// use transformer::{BatchNorm, Ctx};
/// let bn = BatchNorm::<f64>::new(1, 0.0, 0.5);
/// let tape = Tape::new();
/// let ctx = Ctx::train(&tape, 0);
/// let x = tape.constant(Tensor::from_vec(vec![1.0, 3.0, 100.0], &[1, 3, 1])); // (B, T, D)
/// let tokens = Tensor::from_vec(vec![1.0, 1.0, 0.0], &[1, 3]); // the third is padding
/// let y = bn.forward(&ctx, x, Some(&tokens));
/// assert_eq!(&y.value().data()[..2], &[-1.0, 1.0]); // mean 2, variance 1
/// assert_eq!(bn.running_mean().data(), &[1.0]); // 0.5 * 0 + 0.5 * 2
/// ```
pub struct BatchNorm<T: Float = f32> {
    /// (D)
    pub gain: Param<T>,
    /// (D)
    pub bias: Param<T>,
    /// Added to the variance inside the square root.
    pub eps: f64,
    /// Running-statistics momentum (PyTorch convention).
    pub momentum: f64,
    running_mean: RefCell<Tensor<T>>,
    running_var: RefCell<Tensor<T>>,
}

impl<T: Float> BatchNorm<T> {
    /// Width `d`, gain 1, bias 0, running mean 0 and variance 1.
    pub fn new(d: usize, eps: f64, momentum: f64) -> Self {
        BatchNorm {
            gain: Param::new(Tensor::ones(&[d])),
            bias: Param::new(Tensor::zeros(&[d])),
            eps,
            momentum,
            running_mean: RefCell::new(Tensor::zeros(&[d])),
            running_var: RefCell::new(Tensor::ones(&[d])),
        }
    }

    /// The running mean (D).
    pub fn running_mean(&self) -> Tensor<T> {
        self.running_mean.borrow().clone()
    }

    /// The running variance (D).
    pub fn running_var(&self) -> Tensor<T> {
        self.running_var.borrow().clone()
    }

    /// (B, T, D) -> (B, T, D). `tokens` (B, T) is 1 for real tokens and 0
    /// for padding (`None`: every position is a token). Outputs at padding
    /// positions are computed but meaningless.
    pub fn forward<'t>(
        &self,
        ctx: &Ctx<'t, T>,
        x: Var<'t, T>,
        tokens: Option<&Tensor<T>>,
    ) -> Var<'t, T> {
        let shape = x.shape();
        let d = *shape.last().expect("BatchNorm: input has no axes");
        let rows = shape.iter().product::<usize>() / d.max(1);
        let xr = x.reshape(&[rows, d]); // (N, D), N = B * T
        let w = tokens.map(|t| {
            assert!(
                t.numel() == rows,
                "BatchNorm: token mask {:?} does not match input {:?}",
                t.shape(),
                shape
            );
            t.reshape(&[rows, 1])
        });
        let n = w
            .as_ref()
            .map_or(rows, |w| w.data().iter().filter(|&&v| v != T::ZERO).count());
        let (gain, bias) = (ctx.param(&self.gain), ctx.param(&self.bias));
        let eps = T::from_f64(self.eps);
        if !ctx.train || n == 0 {
            let mean = ctx.tape.constant(self.running_mean());
            let var = ctx.tape.constant(self.running_var());
            let y = (xr - mean) / (var + eps).sqrt() * gain + bias;
            return y.reshape(&shape);
        }
        let inv_n = T::ONE / T::from_usize(n);
        let weigh = |v: Var<'t, T>| match &w {
            Some(w) => v * ctx.tape.constant(w.clone()),
            None => v,
        };
        let mean = weigh(xr).sum(0, true) * inv_n; // (1, D)
        let xc = xr - mean; // (N, D)
        let var = weigh(xc * xc).sum(0, true) * inv_n; // (1, D), biased
        let y = xc / (var + eps).sqrt() * gain + bias;
        self.update_running(&mean.value(), &var.value(), n);
        y.reshape(&shape)
    }

    fn update_running(&self, mean: &Tensor<T>, var: &Tensor<T>, n: usize) {
        let m = T::from_f64(self.momentum);
        let unbias = if n > 1 {
            T::from_usize(n) / T::from_usize(n - 1)
        } else {
            T::ONE
        };
        let mut rm = self.running_mean.borrow_mut();
        for (r, &b) in rm.data_mut().iter_mut().zip(mean.data()) {
            *r = (T::ONE - m) * *r + m * b;
        }
        let mut rv = self.running_var.borrow_mut();
        for (r, &b) in rv.data_mut().iter_mut().zip(var.data()) {
            *r = (T::ONE - m) * *r + m * b * unbias;
        }
    }
}

impl<T: Float> Module<T> for BatchNorm<T> {
    fn visit(&mut self, v: &mut Visitor<'_, T>) {
        v.param("gain", &mut self.gain);
        v.param("bias", &mut self.bias);
        v.buffer("running_mean", self.running_mean.get_mut());
        v.buffer("running_var", self.running_var.get_mut());
    }
}

impl<T: Float> NormBlock<T> for LayerNorm<T> {
    fn forward<'t>(&self, ctx: &Ctx<'t, T>, x: Var<'t, T>, _: Option<&Tensor<T>>) -> Var<'t, T> {
        LayerNorm::forward(self, ctx, x)
    }

    fn position_wise(&self) -> bool {
        true
    }
}

impl<T: Float> NormBlock<T> for BatchNorm<T> {
    fn forward<'t>(
        &self,
        ctx: &Ctx<'t, T>,
        x: Var<'t, T>,
        tokens: Option<&Tensor<T>>,
    ) -> Var<'t, T> {
        BatchNorm::forward(self, ctx, x, tokens)
    }

    /// In eval mode BatchNorm applies its running statistics to each
    /// position on its own.
    fn position_wise(&self) -> bool {
        true
    }
}

/// No normalisation: the identity, for the no-norm ablation. A pre-norm
/// stack with `NoNorm` gets no final norm either.
pub struct NoNorm;

impl<T: Float> Module<T> for NoNorm {
    fn visit(&mut self, _: &mut Visitor<'_, T>) {}
}

impl<T: Float> NormBlock<T> for NoNorm {
    fn forward<'t>(&self, _: &Ctx<'t, T>, x: Var<'t, T>, _: Option<&Tensor<T>>) -> Var<'t, T> {
        x
    }

    fn position_wise(&self) -> bool {
        true
    }
}
