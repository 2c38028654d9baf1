//! A norm of your own inside the Transformer: RMSNorm (Zhang & Sennrich
//! 2019), `x / sqrt(mean(x^2) + eps) * gain`, LayerNorm without the mean
//! subtraction and the bias. One file, no edit to the crates:
//!
//! 1. a struct of named parameter fields (`gain`);
//! 2. one visitor (`Module::visit`): names, counts, the optimiser and
//!    checkpoints now know the layer;
//! 3. a forward from existing ops (the tape derives the backward), as the
//!    `NormBlock` slot's signature;
//! 4. registered under a name (`"rms"`), then chosen in the config like
//!    the built-in `"layer"`.
//!
//! `cargo run --release --example rmsnorm` trains it in a Transformer on the
//! copy task, saves and resumes a checkpoint; `cargo test` runs the tests
//! at the bottom.

use autograd::{Float, Param, Tensor, Var};
use transformer::synthetic::{CopyTrial, copy_trial_with};
use transformer::{Ctx, ModelConfig, Module, NormBlock, Registry, Visitor};

/// RMSNorm over the last axis.
pub struct RmsNorm<T: Float = f32> {
    /// (D)
    pub gain: Param<T>,
    /// Added to the mean square inside the root.
    pub eps: f64,
}

impl<T: Float> RmsNorm<T> {
    /// Width `d`, gain 1.
    pub fn new(d: usize, eps: f64) -> Self {
        RmsNorm {
            gain: Param::new(Tensor::ones(&[d])),
            eps,
        }
    }
}

impl<T: Float> Module<T> for RmsNorm<T> {
    fn visit(&mut self, v: &mut Visitor<'_, T>) {
        v.param("gain", &mut self.gain);
    }
}

impl<T: Float> NormBlock<T> for RmsNorm<T> {
    /// (B, T, D) -> (B, T, D); per token, so padding needs no care.
    fn forward<'t>(&self, ctx: &Ctx<'t, T>, x: Var<'t, T>, _: Option<&Tensor<T>>) -> Var<'t, T> {
        let ms = (x * x).mean(-1, true); // (B, T, 1)
        x / (ms + T::from_f64(self.eps)).sqrt() * ctx.param(&self.gain)
    }

    /// Each position is normalised on its own, so decoding can run one
    /// position at a time over key/value caches.
    fn position_wise(&self) -> bool {
        true
    }
}

/// Registers RMSNorm as the norm `"rms"` (for any element type, so the
/// f64 gradient checks build the same model).
pub fn register<T: Float>(registry: &mut Registry<T>) {
    registry.norm("rms", |c, _| Box::new(RmsNorm::new(c.d_model, c.norm_eps)));
}

/// A model config with the block named in its slot.
fn config(base: ModelConfig) -> ModelConfig {
    ModelConfig {
        norm: "rms".into(),
        ..base
    }
}

/// Trains, checkpoints, resumes and decodes (see `copy_trial`).
fn trial() -> Result<CopyTrial, String> {
    copy_trial_with(&Registry::builtin().with(register), config)
}

fn main() -> Result<(), String> {
    println!("RMSNorm in every Add & Norm, copy task: {}", trial()?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use autograd::Tape;
    use autograd::check::GradcheckConfig;
    use proptest::prelude::*;
    use transformer::{Mode, gradcheck_module, gradcheck_transformer};

    #[test]
    fn forward_value() {
        // x = (3, 4): mean(x^2) = 12.5, so y = x / sqrt(12.5).
        let norm = RmsNorm::<f64>::new(2, 0.0);
        let tape = Tape::new();
        let x = tape.constant(Tensor::from_vec(vec![3.0, 4.0], &[1, 1, 2]));
        let y = NormBlock::forward(&norm, &Ctx::eval(&tape), x, None).value();
        let r = 12.5f64.sqrt();
        assert_eq!(y.data(), &[3.0 / r, 4.0 / r]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn gradient(rows in 1usize..4, d in 1usize..6, seed in 0u64..1000) {
            // eps 0.1 keeps x / rms smooth for finite differences near x = 0.
            let mut norm = RmsNorm::<f64>::new(d, 0.1);
            norm.gain.value = Tensor::randn(&[d], 1.0, 0.3, seed);
            let x = Tensor::randn(&[1, rows, d], 0.0, 1.0, seed + 1);
            let report = gradcheck_module(&mut norm, &[x], Mode::Eval, &GradcheckConfig::default(),
                |m, ctx, v| NormBlock::forward(m, ctx, v[0], None));
            prop_assert!(report.passed(), "{}", report);
        }
    }

    /// Every parameter of a whole (tiny) Transformer with RMSNorm, in f64.
    #[test]
    fn gradient_of_the_whole_model() {
        let registry = Registry::<f64>::builtin().with(register);
        let cfg = config(ModelConfig::for_gradcheck(7, 7));
        let report = gradcheck_transformer(&cfg, &registry, 3, &GradcheckConfig::default());
        assert!(report.passed(), "{report}");
    }

    #[test]
    fn trains_in_the_transformer_and_resumes_from_a_checkpoint() {
        let t = trial().unwrap();
        assert!(t.resumed_identical, "{t}");
        assert!(t.last_loss < t.first_loss / 2.0, "{t}");
        assert!(t.exact_match >= 0.9, "{t}");
    }
}
