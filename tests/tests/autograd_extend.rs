//! A user's ops, written outside the crates as they would be in a user's
//! own file: an extension trait on `Var` built on the public
//! `Var::pointwise` (softplus), a two-input op on the public `Tape::record`
//! (hypot, with broadcasting), and an ALiBi-style attention bias through
//! `Var::attention_biased`. Each gets the coverage of the built-in ops from
//! the public harness `autograd::check::cases` (literal forward value, f64
//! gradcheck, proptest over shapes), and the user's op names show up in
//! anomaly mode and in panic messages like the built-ins'.

use autograd::check::cases::{
    CASES, Case, GradCase, LITERAL_TOL, Literal, OpCheck, UNIT, Values, check_binary, check_op,
    check_unary,
};
use autograd::check::strategies::tensor;
use autograd::{Float, Tape, Tensor, Var};
use proptest::prelude::*;

/// The user's ops, as an extension trait.
trait UserOps: Sized {
    /// softplus(x) = ln(1 + e^x), computed as `max(x, 0) + ln_1p(e^-|x|)`
    /// (no overflow for large x, no loss of e^x for very negative x).
    fn softplus(self) -> Self;
    /// sqrt(a^2 + b^2) with broadcasting.
    fn hypot(self, other: Self) -> Self;
    /// ln(x) under another name, to see it in anomaly reports.
    fn my_log(self) -> Self;
}

impl<'t, T: Float> UserOps for Var<'t, T> {
    fn softplus(self) -> Self {
        self.pointwise(
            "softplus",
            |x| x.max(T::ZERO) + (-x.abs()).exp().ln_1p(),
            |x, _| T::ONE / (T::ONE + (-x).exp()),
        )
    }

    fn hypot(self, other: Self) -> Self {
        let (a, b) = (self.value(), other.value());
        let h = a.zip_map(&b, "hypot", |x, y| (x * x + y * y).sqrt());
        let saved = h.clone();
        self.tape()
            .record("hypot", h, &[self, other], move |g, need| {
                // d/da = a / h, d/db = b / h; the adjoint of broadcasting is a sum.
                let part = |x: &Tensor<T>| {
                    g.zip_map(&saved, "hypot", |g, h| g / h)
                        .zip_map(x, "hypot", |gh, x| gh * x)
                        .sum_to_shape(x.shape())
                };
                vec![need[0].then(|| part(&a)), need[1].then(|| part(&b))]
            })
    }

    fn my_log(self) -> Self {
        self.pointwise("my_log", |x| x.ln(), |x, _| T::ONE / x)
    }
}

#[test]
fn a_pointwise_user_op_gets_the_built_in_coverage() {
    check_unary(
        "softplus",
        |x| x.softplus(),
        Values::Uniform(-5.0, 5.0),
        &[0.0, 1.0, -50.0, 40.0],
        // ln 2, ln(1 + e), e^-50 (to 16 digits), 40 + e^-40.
        &[
            std::f64::consts::LN_2,
            1.313_261_687_518_222_8,
            1.928_749_847_963_917_8e-22,
            40.0,
        ],
    );
    // In f32 too: e^-50 survives (1 + e^-50 would round to 1).
    let tape = Tape::<f32>::new();
    let y = tape
        .constant(Tensor::from_vec(vec![-50.0], &[1]))
        .softplus();
    let got = y.value().data()[0] as f64;
    assert!(
        (got - 1.928_749_847_963_917_8e-22).abs() < 1e-6 * got,
        "{got:e}"
    );
}

#[test]
fn a_two_input_user_op_gets_the_built_in_coverage() {
    // The right operand away from 0, so that h > 0 (hypot is not
    // differentiable at the origin).
    check_binary(
        "hypot",
        |a, b| a.hypot(b),
        Values::AwayFromZero(0.5, 2.0),
        &[3.0, -5.0, 0.0],
        &[4.0, 12.0, -2.0],
        &[5.0, 13.0, 2.0],
    );
}

/// ALiBi (Press et al. 2022): head h adds `-m_h * (i - j)` to the score of
/// query i and key j (j <= i), slopes `m_h = 2^(-8 (h + 1) / H)`. Here plus a
/// learned (1, H, Tq, Tk) bias, so the bias gradient is checked too.
fn alibi<'t>(
    q: Var<'t, f64>,
    k: Var<'t, f64>,
    v: Var<'t, f64>,
    learned: Var<'t, f64>,
    heads: usize,
) -> Var<'t, f64> {
    let (tq, tk) = (q.dim(1), k.dim(1));
    let mut fixed = Vec::with_capacity(heads * tq * tk);
    for h in 0..heads {
        let m = 2f64.powf(-8.0 * (h + 1) as f64 / heads as f64);
        for i in 0..tq {
            for j in 0..tk {
                fixed.push(-m * (i as f64 - j as f64).abs());
            }
        }
    }
    let fixed = q
        .tape()
        .constant(Tensor::from_vec(fixed, &[1, heads, tq, tk]));
    q.attention_biased(k, v, heads, None, Some(fixed + learned))
}

#[test]
fn a_user_attention_variant_gets_the_built_in_coverage() {
    // The user's own strategy: (B, T, D) inputs, a (1, H, T, T) learned bias.
    let strategy = (1..=2usize, 1..=3usize, 1..=2usize, 1..=2usize)
        .prop_flat_map(|(b, t, heads, dk)| {
            let d = heads * dk;
            (
                UNIT.tensor(vec![b, t, d]),
                UNIT.tensor(vec![b, t, d]),
                UNIT.tensor(vec![b, t, d]),
                tensor(vec![1, heads, t, t], -1.0, 1.0),
                Just(heads),
            )
        })
        .prop_map(|(q, k, v, bias, heads)| {
            Case::new(
                "alibi",
                format!("{heads} heads"),
                vec![q, k, v, bias],
                move |_, x| alibi(x[0], x[1], x[2], x[3], heads),
            )
        })
        .boxed();
    // Literal: all scores 0 and no learned bias, one head of slope 2^-8,
    // two keys: the first query sees biases [0, -2^-8], the second [-2^-8, 0].
    let (w0, w1) = (
        1.0 / (1.0 + (-1f64 / 256.0).exp()),
        1.0 / (1.0 + (1f64 / 256.0).exp()),
    );
    let literal = Literal {
        case: Case::new(
            "alibi",
            "literal",
            vec![
                Tensor::zeros(&[1, 2, 1]),
                Tensor::zeros(&[1, 2, 1]),
                Tensor::from_vec(vec![1.0, 0.0], &[1, 2, 1]),
                Tensor::zeros(&[1, 1, 2, 2]),
            ],
            |_, x| alibi(x[0], x[1], x[2], x[3], 1),
        ),
        expected: Tensor::from_vec(vec![w0, w1], &[1, 2, 1]),
        tol: LITERAL_TOL,
    };
    check_op(&OpCheck {
        op: "attention",
        literals: vec![literal],
        cases: vec![GradCase::new("alibi", "attention", CASES, strategy)],
    });
}

#[test]
fn anomaly_mode_names_a_user_op() {
    // Forward: ln(0) = -inf.
    let tape = Tape::<f64>::new();
    tape.set_anomaly_mode(true);
    let x = tape.leaf(Tensor::from_vec(vec![1.0, 0.0], &[2]));
    let y = x.softplus() * x.my_log();
    let a = tape.anomaly().expect("an anomaly");
    assert_eq!((a.op, a.phase), ("my_log", "forward"));
    assert_eq!(a.input_shapes, vec![vec![2]]);
    assert_eq!(y.op(), "mul");
    // Backward: hypot(0, 0) = 0 is finite, its gradient 0/0 = NaN is not.
    let tape = Tape::<f64>::new();
    tape.set_anomaly_mode(true);
    let (a, b) = (
        tape.leaf(Tensor::zeros(&[1])),
        tape.leaf(Tensor::zeros(&[1])),
    );
    let h = a.hypot(b).sum_all();
    assert_eq!(tape.anomaly(), None);
    let _ = tape.backward(h);
    let an = tape.anomaly().expect("a backward anomaly");
    assert_eq!((an.op, an.phase), ("hypot", "backward"));
}

#[test]
#[should_panic(
    expected = "backward of `user_bad` returned a gradient of shape [1] for an input of shape [2]"
)]
fn a_user_op_with_a_wrong_gradient_shape_is_named_in_the_panic() {
    let tape = Tape::<f64>::new();
    let x = tape.leaf(Tensor::zeros(&[2]));
    let y = tape.record("user_bad", x.value(), &[x], |_, _| {
        vec![Some(Tensor::zeros(&[1]))]
    });
    let _ = tape.backward(y.sum_all());
}
