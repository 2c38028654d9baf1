//! The gradient property harness (feature `proptest`): the case types and
//! strategies the built-in ops are tested with, and [`check_op`] /
//! [`check_unary`] / [`check_binary`], which give a user's op the same
//! coverage in a few lines.
//!
//! Every op family file (`ops/*.rs`) owns its entries (`cases()`), joined by
//! [`crate::ops::all_cases`]; the test suite runs each entry with
//! [`run_grad_case`] and checks that every op has one.
//!
//! Sizes are kept small: `gradcheck` runs two forward passes per input
//! element. Values are kept moderate too: the finite difference divides
//! the rounding error of the projected loss `sum(y * r)` by the step
//! (`1e-5`), so a huge constant term in the loss (e.g. a `-1e9` fill)
//! would drown the derivative.

use std::fmt;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use super::strategies::{broadcast_pair, shape, tensor, tensor_away_from_zero, tensor_distinct};
use super::{GradcheckConfig, GradcheckReport, gradcheck};
use crate::{Tape, Tensor, Var};

/// The closure under test: builds the computation on the given tape from
/// the inputs (as leaves) and returns the output var.
pub type CaseFn = Arc<dyn for<'t> Fn(&'t Tape<f64>, &[Var<'t, f64>]) -> Var<'t, f64>>;

/// A binary op under test, e.g. `|a, b| a + b`.
pub type BinaryFn = for<'t> fn(Var<'t, f64>, Var<'t, f64>) -> Var<'t, f64>;
/// A unary op under test, e.g. `|x| x.exp()`.
pub type UnaryFn = for<'t> fn(Var<'t, f64>) -> Var<'t, f64>;
/// A unary op with a scalar argument, e.g. `|x, c| x.pow_scalar(c)`.
pub type ScalarFn = for<'t> fn(Var<'t, f64>, f64) -> Var<'t, f64>;
/// A reduction over an axis, e.g. `|x, axis, keepdim| x.sum(axis, keepdim)`.
pub type AxisFn = for<'t> fn(Var<'t, f64>, isize, bool) -> Var<'t, f64>;

/// One concrete gradient check: inputs and the closure applied to them.
#[derive(Clone)]
pub struct Case {
    /// Name of the table entry that produced it.
    pub name: &'static str,
    /// Non-tensor arguments (axis, seed, ids...), for failure messages.
    pub params: String,
    /// The input tensors (leaves of the check).
    pub inputs: Vec<Tensor<f64>>,
    /// The computation under test.
    pub f: CaseFn,
}

impl Case {
    /// Wraps `f` (any closure with the `gradcheck` signature).
    pub fn new<F>(
        name: &'static str,
        params: impl Into<String>,
        inputs: Vec<Tensor<f64>>,
        f: F,
    ) -> Case
    where
        F: for<'t> Fn(&'t Tape<f64>, &[Var<'t, f64>]) -> Var<'t, f64> + 'static,
    {
        Case {
            name,
            params: params.into(),
            inputs,
            f: Arc::new(f),
        }
    }

    /// Runs [`gradcheck`] on this case.
    pub fn gradcheck(&self, cfg: &GradcheckConfig) -> GradcheckReport {
        gradcheck(|tape, v| (self.f)(tape, v), &self.inputs, cfg)
    }
}

impl fmt::Debug for Case {
    /// Prints everything needed to reproduce a failure: the parameters and
    /// every input in full (shape and data).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Case `{}` ({})", self.name, self.params)?;
        for (i, t) in self.inputs.iter().enumerate() {
            write!(
                f,
                "\n  input {i}: shape {:?} data {:?}",
                t.shape(),
                t.data()
            )?;
        }
        Ok(())
    }
}

/// One row of the table.
pub struct GradCase {
    /// Name of the entry (unique in [`crate::ops::all_cases`]).
    pub name: &'static str,
    /// The op under test: must appear in every report's `ops`.
    pub op: &'static str,
    /// Number of proptest cases of the property test.
    pub cases: u32,
    /// Draws the cases: shapes (size-1 and broadcast axes included), values
    /// and any non-tensor arguments.
    pub strategy: BoxedStrategy<Case>,
}

impl GradCase {
    /// An entry named `name` testing the op `op` over `cases` draws of
    /// `strategy`.
    pub fn new(
        name: &'static str,
        op: &'static str,
        cases: u32,
        strategy: BoxedStrategy<Case>,
    ) -> GradCase {
        GradCase {
            name,
            op,
            cases,
            strategy,
        }
    }
}

/// How the values of an input tensor are drawn.
#[derive(Clone, Copy, Debug)]
pub enum Values {
    /// Uniform in `[lo, hi]`.
    Uniform(f64, f64),
    /// `gap <= |x| <= hi`, either sign (relu's kink, 1/x's pole).
    AwayFromZero(f64, f64),
    /// Pairwise at least about `gap` apart (no ties for max).
    Distinct(f64),
}

impl Values {
    /// A tensor of `shape` with values drawn this way.
    pub fn tensor(self, shape: Vec<usize>) -> BoxedStrategy<Tensor<f64>> {
        match self {
            Values::Uniform(lo, hi) => tensor(shape, lo, hi).boxed(),
            Values::AwayFromZero(gap, hi) => tensor_away_from_zero(shape, gap, hi).boxed(),
            Values::Distinct(gap) => tensor_distinct(shape, gap).boxed(),
        }
    }
}

/// Default values of most inputs: uniform in [-2, 2].
pub const UNIT: Values = Values::Uniform(-2.0, 2.0);

/// Resolves a possibly negative axis of a rank-`nd` tensor.
pub(crate) fn resolve(axis: isize, nd: usize) -> usize {
    if axis < 0 {
        (axis + nd as isize) as usize
    } else {
        axis as usize
    }
}

/// A binary elementwise op on a broadcast-compatible pair of shapes
/// (rank <= 4, axes <= 3); the right operand's values come from `rhs`.
pub fn binary(name: &'static str, f: BinaryFn, rhs: Values) -> BoxedStrategy<Case> {
    broadcast_pair(4, 3)
        .prop_flat_map(move |(sa, sb)| (UNIT.tensor(sa), rhs.tensor(sb)))
        .prop_map(move |(a, b)| Case::new(name, "", vec![a, b], move |_, v| f(v[0], v[1])))
        .boxed()
}

/// A unary op on a random shape (rank <= `max_rank`, axes <= `max_dim`).
pub fn unary(
    name: &'static str,
    f: UnaryFn,
    values: Values,
    max_rank: usize,
    max_dim: usize,
) -> BoxedStrategy<Case> {
    shape(max_rank, max_dim)
        .prop_flat_map(move |s| values.tensor(s))
        .prop_map(move |x| Case::new(name, "", vec![x], move |_, v| f(v[0])))
        .boxed()
}

/// A unary op with a scalar argument drawn from `c`.
pub fn with_scalar(
    name: &'static str,
    f: ScalarFn,
    values: Values,
    c: std::ops::RangeInclusive<f64>,
) -> BoxedStrategy<Case> {
    (shape(4, 3).prop_flat_map(move |s| values.tensor(s)), c)
        .prop_map(move |(x, c)| {
            Case::new(name, format!("scalar {c}"), vec![x], move |_, v| f(v[0], c))
        })
        .boxed()
}

/// A reduction over a random axis (negative axes included), with or
/// without `keepdim`.
pub fn over_axis(name: &'static str, f: AxisFn, values: Values) -> BoxedStrategy<Case> {
    shape(4, 3)
        .prop_flat_map(move |s| {
            let nd = s.len() as isize;
            (values.tensor(s), -nd..nd, any::<bool>())
        })
        .prop_map(move |(x, axis, keepdim)| {
            Case::new(
                name,
                format!("axis {axis}, keepdim {keepdim}"),
                vec![x],
                move |_, v| f(v[0], axis, keepdim),
            )
        })
        .boxed()
}

/// Proptest cases of a plain entry.
pub const CASES: u32 = 128;
/// Proptest cases of an entry with more structure to explore (broadcast
/// shapes, axes, ids, padding).
pub const MORE: u32 = 256;

/// The number of proptest cases to run for an entry: `PROPTEST_CASES=n`
/// in the environment overrides every entry's own count (to soak the suite:
/// `PROPTEST_CASES=2000 cargo test -p tests --test autograd_grad`).
fn cases_to_run(entry: &GradCase) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(entry.cases)
}

/// Runs the property test of one entry: for every generated case,
/// [`gradcheck`] (default tolerances) passes and the op `entry.op` was
/// recorded. On failure, the error holds the shrunk failing case with every
/// input in full (shape and data), so it can be replayed by hand.
pub fn run_grad_case(entry: &GradCase) -> Result<(), String> {
    let mut config = Config::with_cases(cases_to_run(entry));
    config.failure_persistence = None;
    let mut runner = TestRunner::new(config);
    let cfg = GradcheckConfig::default();
    runner
        .run(&entry.strategy, |case| {
            let report = case.gradcheck(&cfg);
            prop_assert!(report.passed(), "{report}");
            prop_assert!(
                report.ops.contains(&entry.op),
                "op `{}` was not recorded: {:?}",
                entry.op,
                report.ops
            );
            Ok(())
        })
        .map_err(|e| {
            format!(
                "gradient property `{}` (op `{}`): {e}",
                entry.name, entry.op
            )
        })
}

/// A literal forward check: the op applied to fixed inputs must give
/// `expected` (shape and values, relative tolerance `tol`; infinities and
/// zeros exactly).
#[derive(Clone)]
pub struct Literal {
    /// The fixed inputs and the computation (see [`Case::new`]).
    pub case: Case,
    /// The expected output.
    pub expected: Tensor<f64>,
    /// Relative tolerance: `|got - expected| <= tol * |expected|`.
    pub tol: f64,
}

/// Default relative tolerance of a [`Literal`] (expected values written
/// with about 16 significant digits).
pub const LITERAL_TOL: f64 = 1e-12;

/// Everything [`check_op`] checks for one op.
pub struct OpCheck {
    /// The op name the computation records on the tape (as given to
    /// [`Var::pointwise`] or [`Tape::record`]).
    pub op: &'static str,
    /// Literal forward values; each is also gradient-checked at its inputs.
    pub literals: Vec<Literal>,
    /// Property entries over random shapes and values.
    pub cases: Vec<GradCase>,
}

/// Gives an op the coverage the built-in ops get, and panics with a
/// reproducible report (every input in full) on the first failure:
///
/// 1. every literal: the forward value matches, the op is recorded, and
///    [`gradcheck`] (f64 central differences) passes at those inputs;
/// 2. every property entry: [`run_grad_case`] (gradcheck over proptest
///    shapes and values, size-1 and broadcast axes included).
///
/// [`check_unary`] and [`check_binary`] build the `OpCheck` of an
/// elementwise op in one line; write an `OpCheck` by hand for anything
/// else (your own strategy in a [`GradCase`]).
pub fn check_op(check: &OpCheck) {
    let cfg = GradcheckConfig::default();
    for (i, lit) in check.literals.iter().enumerate() {
        let case = &lit.case;
        let tape = Tape::new();
        let vars: Vec<Var<'_, f64>> = case.inputs.iter().map(|t| tape.leaf(t.clone())).collect();
        let got = (case.f)(&tape, &vars).value();
        let ops = tape.ops();
        assert!(
            ops.contains(&check.op),
            "check_op `{}`: literal {i} did not record the op (recorded {ops:?})\n{case:?}",
            check.op
        );
        let e = &lit.expected;
        let close =
            got.shape() == e.shape()
                && got.data().iter().zip(e.data()).all(|(&a, &b)| {
                    a == b || (b.is_finite() && (a - b).abs() <= lit.tol * b.abs())
                });
        assert!(
            close,
            "check_op `{}`: literal {i} forward value\n  got      shape {:?} data {:?}\n  expected shape {:?} data {:?} (relative tol {:e})\n{case:?}",
            check.op,
            got.shape(),
            got.data(),
            e.shape(),
            e.data(),
            lit.tol
        );
        let report = case.gradcheck(&cfg);
        assert!(
            report.passed(),
            "check_op `{}`: literal {i} gradient\n{report}\n{case:?}",
            check.op
        );
    }
    for entry in &check.cases {
        assert!(
            entry.op == check.op,
            "check_op `{}`: entry `{}` tests op `{}`",
            check.op,
            entry.name,
            entry.op
        );
        if let Err(e) = run_grad_case(entry) {
            panic!("check_op `{}`: {e}", check.op);
        }
    }
}

/// [`check_op`] for a unary elementwise (or row-wise) op: one literal
/// (`input` and `expected` as 1-D tensors), and [`CASES`] random shapes of
/// rank <= 4 with axes <= 3 (size 1 included), values drawn by `values`.
///
/// ```
/// use autograd::check::cases::{Values, check_unary};
/// use autograd::{Float, Var};
///
/// /// softplus(x) = ln(1 + e^x), derivative sigmoid(x).
/// trait Softplus {
///     fn softplus(self) -> Self;
/// }
/// impl<'t, T: Float> Softplus for Var<'t, T> {
///     fn softplus(self) -> Self {
///         self.pointwise(
///             "softplus",
///             |x| x.max(T::ZERO) + (-x.abs()).exp().ln_1p(),
///             |x, _| T::ONE / (T::ONE + (-x).exp()),
///         )
///     }
/// }
///
/// check_unary(
///     "softplus",
///     |x| x.softplus(),
///     Values::Uniform(-5.0, 5.0),
///     &[0.0, 1.0, -50.0],
///     &[std::f64::consts::LN_2, 1.313_261_687_518_222_9, 1.928_749_847_963_917_8e-22],
/// );
/// ```
pub fn check_unary(op: &'static str, f: UnaryFn, values: Values, input: &[f64], expected: &[f64]) {
    check_op(&OpCheck {
        op,
        literals: vec![Literal {
            case: Case::new(op, "literal", vec![tensor_1d(input)], move |_, v| f(v[0])),
            expected: tensor_1d(expected),
            tol: LITERAL_TOL,
        }],
        cases: vec![GradCase::new(op, op, CASES, unary(op, f, values, 4, 3))],
    });
}

/// [`check_op`] for a binary elementwise op with broadcasting: one literal
/// (`a`, `b` and `expected` as 1-D tensors of one length), and [`MORE`]
/// broadcast-compatible pairs of shapes (rank <= 4, axes <= 3, size-1 and
/// missing axes on either side), the left values in [-2, 2], the right
/// drawn by `rhs`.
///
/// ```
/// use autograd::check::cases::{Values, check_binary};
/// use autograd::Var;
///
/// // a * b + a, composed from primitives: its op name is that of the last one.
/// check_binary("add", |a, b| a * b + a, Values::Uniform(-2.0, 2.0), &[1.0, 2.0], &[3.0, -1.0], &[4.0, 0.0]);
/// ```
pub fn check_binary(
    op: &'static str,
    f: BinaryFn,
    rhs: Values,
    a: &[f64],
    b: &[f64],
    expected: &[f64],
) {
    check_op(&OpCheck {
        op,
        literals: vec![Literal {
            case: Case::new(
                op,
                "literal",
                vec![tensor_1d(a), tensor_1d(b)],
                move |_, v| f(v[0], v[1]),
            ),
            expected: tensor_1d(expected),
            tol: LITERAL_TOL,
        }],
        cases: vec![GradCase::new(op, op, MORE, binary(op, f, rhs))],
    });
}

fn tensor_1d(x: &[f64]) -> Tensor<f64> {
    Tensor::from_vec(x.to_vec(), &[x.len()])
}
