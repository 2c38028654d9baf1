//! Adding a layer of your own: RMSNorm (Zhang & Sennrich 2019) in one file.
//!
//! 1. A struct of named parameter fields.
//! 2. One visitor (`Module::visit`): names, parameter counts, the optimiser
//!    and checkpoints now work for it.
//! 3. A forward pass from existing ops: the tape derives the backward.
//! 4. A gradient property test with the public `gradcheck`.
//!
//! `cargo run --release --example custom_layer` trains a tiny model that
//! uses it; `cargo test` runs the tests at the bottom (this example is built
//! with `test = true`).

use autograd::{Float, Param, Tape, Tensor, Var};
use transformer::optim::Adam;
use transformer::{Ctx, Linear, Module, Visitor, named_params, rng};

/// RMSNorm: `x / sqrt(mean(x^2) + eps) * gain` over the last axis: LayerNorm
/// without the mean subtraction and the bias.
pub struct RmsNorm<T: Float = f32> {
    /// (D)
    pub gain: Param<T>,
    pub eps: f64,
}

impl<T: Float> RmsNorm<T> {
    pub fn new(d: usize, eps: f64) -> Self {
        RmsNorm {
            gain: Param::new(Tensor::ones(&[d])),
            eps,
        }
    }

    /// (..., D) -> (..., D)
    pub fn forward<'t>(&self, ctx: &Ctx<'t, T>, x: Var<'t, T>) -> Var<'t, T> {
        let ms = (x * x).mean(-1, true); // (..., 1)
        let rms = (ms + T::from_f64(self.eps)).sqrt();
        x / rms * ctx.param(&self.gain)
    }
}

impl<T: Float> Module<T> for RmsNorm<T> {
    fn visit(&mut self, v: &mut Visitor<'_, T>) {
        v.param("gain", &mut self.gain);
    }
}

/// A model using it: Linear -> RMSNorm -> ReLU -> Linear.
pub struct Mlp<T: Float = f32> {
    pub inp: Linear<T>,
    pub norm: RmsNorm<T>,
    pub out: Linear<T>,
}

impl<T: Float> Mlp<T> {
    pub fn new(d_in: usize, d_hidden: usize, seed: u64) -> Self {
        let mut r = rng(seed);
        Mlp {
            inp: Linear::new(d_in, d_hidden, true, &mut r),
            norm: RmsNorm::new(d_hidden, 1e-6),
            out: Linear::new(d_hidden, 1, true, &mut r),
        }
    }

    /// (N, D_in) -> (N, 1)
    pub fn forward<'t>(&self, ctx: &Ctx<'t, T>, x: Var<'t, T>) -> Var<'t, T> {
        let h = self.norm.forward(ctx, self.inp.forward(ctx, x)).relu();
        self.out.forward(ctx, h)
    }
}

impl<T: Float> Module<T> for Mlp<T> {
    fn visit(&mut self, v: &mut Visitor<'_, T>) {
        v.module("inp", &mut self.inp);
        v.module("norm", &mut self.norm);
        v.module("out", &mut self.out);
    }
}

/// Fits y = sum(x) with the MLP; returns the losses of the first and last step.
fn train(steps: usize) -> (f32, f32) {
    let mut model = Mlp::<f32>::new(4, 16, 0);
    let mut opt = Adam::paper();
    let x = Tensor::<f32>::randn(&[64, 4], 0.0, 1.0, 1);
    let y = x.sum_axis(-1, true); // (64, 1)
    let mut losses = Vec::new();
    for _ in 0..steps {
        let tape = Tape::new();
        let ctx = Ctx::new(&tape, true, 0);
        let err = model.forward(&ctx, tape.constant(x.clone())) - tape.constant(y.clone());
        let loss = (err * err).mean_all();
        losses.push(loss.value().item());
        let grads = tape.backward(loss).into_params();
        drop(tape);
        opt.step(&mut model, &grads, 1e-2);
    }
    (losses[0], losses[steps - 1])
}

fn main() {
    let mut model = Mlp::<f32>::new(4, 16, 0);
    for (name, p) in named_params(&mut model) {
        println!("{name:16} {:?}", p.value.shape());
    }
    let (first, last) = train(300);
    println!("mse: first step {first:.4}, after 300 steps {last:.4}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use autograd::check::GradcheckConfig;
    use autograd::check::strategies::tensor;
    use proptest::prelude::*;
    use transformer::gradcheck_module;

    #[test]
    fn rms_norm_forward_value() {
        // x = (3, 4): mean(x^2) = 12.5, rms = sqrt(12.5).
        let norm = RmsNorm::<f64>::new(2, 0.0);
        let tape = Tape::new();
        let ctx = Ctx::new(&tape, false, 0);
        let y = norm.forward(
            &ctx,
            tape.constant(Tensor::from_vec(vec![3.0, 4.0], &[1, 2])),
        );
        let r = 12.5f64.sqrt();
        assert!(y.value().allclose(
            &Tensor::from_vec(vec![3.0 / r, 4.0 / r], &[1, 2]),
            1e-15,
            0.0
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn rms_norm_gradient(rows in 1usize..4, d in 1usize..6, seed in 0u64..1000) {
            // eps 0.1 keeps x / rms smooth enough for finite differences
            // even when a row is near zero (the formula is the same for any eps).
            let mut norm = RmsNorm::<f64>::new(d, 0.1);
            norm.gain.value = Tensor::randn(&[d], 1.0, 0.3, seed);
            let x = Tensor::randn(&[rows, d], 0.0, 1.0, seed + 1);
            let report = gradcheck_module(&mut norm, &[x], true, &GradcheckConfig::default(),
                |m, ctx, v| m.forward(ctx, v[0]));
            prop_assert!(report.passed(), "{}", report);
        }

        #[test]
        fn mlp_gradient(x in tensor(vec![3, 4], -2.0, 2.0)) {
            let mut mlp = Mlp::<f64>::new(4, 5, 3);
            // Finite differences are wrong across ReLU's kink: skip samples
            // whose pre-activations come within 1e-3 of it.
            let pre = autograd::no_grad(|tape| {
                let ctx = Ctx::new(tape, true, 0);
                mlp.norm.forward(&ctx, mlp.inp.forward(&ctx, tape.constant(x.clone()))).value()
            });
            prop_assume!(pre.data().iter().all(|h| h.abs() > 1e-3));
            let report = gradcheck_module(&mut mlp, &[x], true, &GradcheckConfig::default(),
                |m, ctx, v| m.forward(ctx, v[0]));
            prop_assert!(report.passed(), "{}", report);
        }
    }

    #[test]
    fn mlp_with_rms_norm_trains() {
        let (first, last) = train(300);
        assert!(last < first / 10.0, "loss {first} -> {last}");
    }
}
