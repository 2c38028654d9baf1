//! A feed-forward block of your own inside the Transformer: SwiGLU
//! (Shazeer 2020, "GLU Variants Improve Transformer"),
//! `W2 (silu(W1 x) * (W3 x))` with `silu(z) = z sigmoid(z)`: a gated
//! feed-forward, as in PaLM and LLaMA. Three matrices instead of two, so
//! Shazeer shrinks the hidden width to 2/3 of d_ff to keep the parameter
//! count; the width is a config knob (`extra["swiglu.hidden"]`), so an
//! ablation can vary it like any other field.
//!
//! `cargo run --release --example swiglu` trains it in a Transformer on the
//! copy task, saves and resumes a checkpoint; `cargo test` runs the tests.

use autograd::{Float, Var};
use transformer::synthetic::{CopyTrial, copy_trial_with};
use transformer::{Ctx, FeedForwardBlock, Linear, ModelConfig, Module, Registry, Rng, Visitor};

/// The gated feed-forward block.
pub struct SwiGlu<T: Float = f32> {
    /// Gate projection (D, H).
    pub w1: Linear<T>,
    /// Value projection (D, H).
    pub w3: Linear<T>,
    /// Output projection (H, D).
    pub w2: Linear<T>,
}

impl<T: Float> SwiGlu<T> {
    /// Width `d`, hidden width `hidden`; no biases (as in PaLM).
    pub fn new(d: usize, hidden: usize, rng: &mut Rng) -> Self {
        SwiGlu {
            w1: Linear::without_bias(d, hidden, rng),
            w3: Linear::without_bias(d, hidden, rng),
            w2: Linear::without_bias(hidden, d, rng),
        }
    }

    /// The hidden width the config asks for: `extra["swiglu.hidden"]`, or
    /// 2/3 of `d_ff` (equal parameters to the paper's block, less biases).
    pub fn hidden(c: &ModelConfig) -> usize {
        c.extra_or("swiglu.hidden", (2 * c.d_ff / 3) as f64) as usize
    }
}

impl<T: Float> Module<T> for SwiGlu<T> {
    fn visit(&mut self, v: &mut Visitor<'_, T>) {
        v.module("w1", &mut self.w1);
        v.module("w3", &mut self.w3);
        v.module("w2", &mut self.w2);
    }
}

impl<T: Float> FeedForwardBlock<T> for SwiGlu<T> {
    /// (B, T, D) -> (B, T, D)
    fn forward<'t>(&self, ctx: &Ctx<'t, T>, x: Var<'t, T>) -> Var<'t, T> {
        let gate = self.w1.forward(ctx, x); // (B, T, H)
        let value = self.w3.forward(ctx, x); // (B, T, H)
        self.w2.forward(ctx, gate * gate.sigmoid() * value)
    }
}

/// Registers SwiGLU as the feed-forward block `"swiglu"`.
pub fn register<T: Float>(registry: &mut Registry<T>) {
    registry.feed_forward("swiglu", |c, rng| {
        Box::new(SwiGlu::new(c.d_model, SwiGlu::<T>::hidden(c), rng))
    });
}

/// A model config with the block named in its slot.
fn config(base: ModelConfig) -> ModelConfig {
    ModelConfig {
        feed_forward: "swiglu".into(),
        ..base
    }
}

/// Trains, checkpoints, resumes and decodes (see `copy_trial`).
fn trial() -> Result<CopyTrial, String> {
    copy_trial_with(&Registry::builtin().with(register), config)
}

fn main() -> Result<(), String> {
    println!("SwiGLU feed-forward, copy task: {}", trial()?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use autograd::check::GradcheckConfig;
    use autograd::{Tape, Tensor};
    use transformer::{gradcheck_transformer, param_count, rng};

    #[test]
    fn forward_value() {
        // D = H = 1, every weight 1: y = silu(x) * x.
        let mut ff = SwiGlu::<f64>::new(1, 1, &mut rng(0));
        for w in [&mut ff.w1, &mut ff.w2, &mut ff.w3] {
            w.weight.value = Tensor::ones(&[1, 1]);
        }
        let tape = Tape::new();
        let x = tape.constant(Tensor::from_vec(vec![2.0], &[1, 1, 1]));
        let y = FeedForwardBlock::forward(&ff, &Ctx::eval(&tape), x).value();
        let silu2 = 2.0 / (1.0 + (-2.0f64).exp());
        assert!((y.data()[0] - silu2 * 2.0).abs() < 1e-12, "{y:?}");
    }

    #[test]
    fn hidden_width_comes_from_the_config() {
        let mut c = ModelConfig::tiny(8, 8); // d_ff 64
        assert_eq!(SwiGlu::<f32>::hidden(&c), 42);
        c.extra.insert("swiglu.hidden".into(), 10.0);
        let mut ff = SwiGlu::<f32>::new(c.d_model, SwiGlu::<f32>::hidden(&c), &mut rng(0));
        assert_eq!(param_count(&mut ff), 3 * 32 * 10);
    }

    /// Every parameter of a whole (tiny) Transformer with SwiGLU, in f64.
    #[test]
    fn gradient_of_the_whole_model() {
        let registry = Registry::<f64>::builtin().with(register);
        let cfg = config(ModelConfig::for_gradcheck(7, 7));
        let report = gradcheck_transformer(&cfg, &registry, 5, &GradcheckConfig::default());
        assert!(report.passed(), "{report}");
        assert!(report.ops.contains(&"sigmoid"), "{:?}", report.ops);
    }

    #[test]
    fn trains_in_the_transformer_and_resumes_from_a_checkpoint() {
        let t = trial().unwrap();
        assert!(t.resumed_identical, "{t}");
        assert!(t.last_loss < t.first_loss / 2.0, "{t}");
        assert!(t.exact_match >= 0.9, "{t}");
    }
}
