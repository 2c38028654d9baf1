//! An op of your own inside the Transformer: softplus,
//! `ln(1 + e^x)`, a smooth ReLU (Dugas et al. 2001), defined outside the
//! autograd crate from its value and its derivative, given the coverage the
//! built-in ops get in one call, and used as the activation of a
//! feed-forward block registered as `"softplus"`.
//!
//! The naive `(1 + x.exp()).ln()` returns exactly 0 below x = -37 in f64
//! (and -17 in f32): `1 + e^x` rounds to 1. Written as
//! `max(x, 0) + ln_1p(e^-|x|)` it keeps every digit: softplus(-50) is
//! 1.93e-22, and it never overflows for large x either.
//!
//! `cargo run --release --example softplus` trains the block in a
//! Transformer on the copy task, saves and resumes a checkpoint; `cargo
//! test` runs the tests.

use autograd::{Float, Var};
use transformer::synthetic::{CopyTrial, copy_trial_with};
use transformer::{Ctx, FeedForwardBlock, Linear, ModelConfig, Module, Registry, Rng, Visitor};

/// The op, as an extension trait on `Var` (any element type).
pub trait Softplus {
    /// `ln(1 + e^x)`, elementwise; derivative `sigmoid(x)`.
    fn softplus(self) -> Self;
}

impl<'t, T: Float> Softplus for Var<'t, T> {
    fn softplus(self) -> Self {
        self.pointwise(
            "softplus",
            // e^-|x| <= 1 never overflows, and ln_1p keeps its digits when tiny.
            |x| x.max(T::ZERO) + (-x.abs()).exp().ln_1p(),
            // d/dx = sigmoid(x) = 1 - e^-softplus(x): from the saved output y,
            // written with exp_m1 so it stays accurate where sigmoid is tiny.
            |_, y| -(-y).exp_m1(),
        )
    }
}

/// A feed-forward block with softplus between its two linear maps.
pub struct SoftplusFfn<T: Float = f32> {
    /// (D, D_ff)
    pub w1: Linear<T>,
    /// (D_ff, D)
    pub w2: Linear<T>,
}

impl<T: Float> Module<T> for SoftplusFfn<T> {
    fn visit(&mut self, v: &mut Visitor<'_, T>) {
        v.module("w1", &mut self.w1);
        v.module("w2", &mut self.w2);
    }
}

impl<T: Float> FeedForwardBlock<T> for SoftplusFfn<T> {
    /// (B, T, D) -> (B, T, D)
    fn forward<'t>(&self, ctx: &Ctx<'t, T>, x: Var<'t, T>) -> Var<'t, T> {
        self.w2.forward(ctx, self.w1.forward(ctx, x).softplus())
    }
}

/// Registers the block as the feed-forward `"softplus"`.
pub fn register<T: Float>(registry: &mut Registry<T>) {
    registry.feed_forward("softplus", |c, rng: &mut Rng| {
        Box::new(SoftplusFfn {
            w1: Linear::new(c.d_model, c.d_ff, rng),
            w2: Linear::new(c.d_ff, c.d_model, rng),
        })
    });
}

/// A model config with the block named in its slot.
fn config(base: ModelConfig) -> ModelConfig {
    ModelConfig {
        feed_forward: "softplus".into(),
        ..base
    }
}

/// Trains, checkpoints, resumes and decodes (see `copy_trial`).
fn trial() -> Result<CopyTrial, String> {
    copy_trial_with(&Registry::builtin().with(register), config)
}

fn main() -> Result<(), String> {
    println!("softplus feed-forward, copy task: {}", trial()?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use autograd::check::GradcheckConfig;
    use autograd::check::cases::{Values, check_unary};
    use autograd::{Tape, Tensor};
    use transformer::gradcheck_transformer;

    /// The op gets what every built-in op gets: a literal forward value, an
    /// f64 gradient check at it, and a proptest run over random shapes.
    #[test]
    fn op_coverage() {
        check_unary(
            "softplus",
            |x| x.softplus(),
            Values::Uniform(-6.0, 6.0),
            &[0.0, 1.0, -50.0, 40.0],
            // ln 2; ln(1 + e); e^-50 (1 - e^-50 / 2 ...); 40 + e^-40.
            &[
                std::f64::consts::LN_2,
                1.313_261_687_518_222_9,
                1.928_749_847_963_917_8e-22,
                40.0,
            ],
        );
    }

    /// Where the naive formula gives exactly 0, this one does not, in f32.
    #[test]
    fn keeps_digits_where_the_naive_formula_underflows() {
        let tape = Tape::<f32>::new();
        let x = tape.leaf(Tensor::from_vec(vec![-50.0], &[1]));
        let naive = (x.exp() + 1.0).log().value().item();
        let y = x.softplus();
        assert_eq!(naive, 0.0);
        let v = y.value().item();
        assert!((v / 1.928_749_8e-22 - 1.0).abs() < 1e-6, "{v:e}");
        let g = tape.backward(y.sum_all());
        assert!((g.wrt(x).item() / 1.928_749_8e-22 - 1.0).abs() < 1e-5);
    }

    /// Every parameter of a whole (tiny) Transformer with the block, in f64.
    #[test]
    fn gradient_of_the_whole_model() {
        let registry = Registry::<f64>::builtin().with(register);
        let cfg = config(ModelConfig::for_gradcheck(7, 7));
        let report = gradcheck_transformer(&cfg, &registry, 11, &GradcheckConfig::default());
        assert!(report.passed(), "{report}");
        assert!(report.ops.contains(&"softplus"), "{:?}", report.ops);
    }

    #[test]
    fn trains_in_the_transformer_and_resumes_from_a_checkpoint() {
        let t = trial().unwrap();
        assert!(t.resumed_identical, "{t}");
        assert!(t.last_loss < t.first_loss / 2.0, "{t}");
        assert!(t.exact_match >= 0.9, "{t}");
    }
}
