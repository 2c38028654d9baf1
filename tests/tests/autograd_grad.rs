//! Gradient property tests: every entry of the case table
//! (`tests::autograd_cases::grad_cases`) is checked with the public
//! `autograd::check::gradcheck` (f64 central differences, default tolerances:
//! 1e-6 relative with a 1e-3 absolute floor) over proptest-generated shapes
//! and values, as the test `grad::<entry name>`.
//!
//! The coverage test `every_op_has_a_gradient_property_test` fails when an op
//! of `autograd::ops::all_ops()` has no entry, or an entry has no property
//! test here.
//!
//! `PROPTEST_CASES=n` overrides every entry's number of cases (to soak the
//! suite: `PROPTEST_CASES=2000 cargo test -p tests --test autograd_grad`).

use std::collections::BTreeSet;

use autograd::check::GradcheckConfig;
use autograd::ops::all_ops;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use tests::autograd_cases::{GradCase, grad_cases};

/// The table entry called `name` (panics if there is none).
fn entry(name: &str) -> GradCase {
    grad_cases()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no gradient case named `{name}` in tests::autograd_cases"))
}

/// Runs the property test of the entry `name`: for every generated case,
/// `gradcheck` passes and the op under test was recorded.
fn run_property(name: &str) {
    let entry = entry(name);
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(entry.cases);
    let mut config = ProptestConfig::with_cases(cases);
    config.failure_persistence = None;
    let mut runner = TestRunner::new(config);
    let cfg = GradcheckConfig::default();
    let result = runner.run(&entry.strategy, |case| {
        let report = case.gradcheck(&cfg);
        prop_assert!(report.passed(), "{report}");
        prop_assert!(
            report.ops.contains(&entry.op),
            "op `{}` was not recorded: {:?}",
            entry.op,
            report.ops
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("gradient property `{name}`: {e}");
    }
}

/// Declares one `#[test] fn grad::<name>` per table entry, and the list of
/// their names for the coverage test.
macro_rules! grad_properties {
    ($($name:ident),* $(,)?) => {
        mod grad {
            $(
                #[test]
                fn $name() {
                    super::run_property(stringify!($name));
                }
            )*
        }
        /// Names of the property tests declared above.
        const PROPERTY_TESTS: &[&str] = &[$(stringify!($name)),*];
    };
}

grad_properties! {
    // elementwise
    add, sub, mul, div, neg, add_scalar, mul_scalar, pow_scalar,
    exp, log, sqrt, relu, gelu, tanh, sigmoid,
    // reductions
    sum, mean, sum_all, mean_all, max,
    // matrix products
    matmul_2d, matmul_batched, matmul_one_side_2d,
    matmul_t_2d, matmul_t_batched, matmul_t_one_side_2d,
    linear,
    // shape ops
    transpose, permute, reshape, concat, narrow, split_heads, merge_heads,
    // nn ops
    softmax, log_softmax, layer_norm, embedding, masked_fill, dropout,
    cross_entropy, cross_entropy_no_ignore,
    // fused attention
    attention, attention_masked,
}

/// Runs one fixed draw (deterministic runner) of every table entry, and
/// checks that together they exercise every op, that every op has an entry
/// of its own, and that every entry has a property test above.
#[test]
fn every_op_has_a_gradient_property_test() {
    let cfg = GradcheckConfig::default();
    let mut runner = TestRunner::deterministic();
    let table = grad_cases();
    let mut recorded = BTreeSet::new();
    for entry in &table {
        let case = entry
            .strategy
            .new_tree(&mut runner)
            .expect("drawing a case")
            .current();
        let report = case.gradcheck(&cfg);
        assert!(report.passed(), "{case:?}\n{report}");
        assert!(
            report.ops.contains(&entry.op),
            "entry `{}` did not record its op `{}`: {:?}",
            entry.name,
            entry.op,
            report.ops
        );
        recorded.extend(report.ops);
    }

    let ops = all_ops();
    let not_recorded: Vec<&str> = ops
        .iter()
        .copied()
        .filter(|op| !recorded.contains(op))
        .collect();
    assert!(
        not_recorded.is_empty(),
        "ops never recorded by any gradient case: {not_recorded:?}"
    );
    let with_entry: BTreeSet<&str> = table.iter().map(|e| e.op).collect();
    let without_entry: Vec<&str> = ops
        .iter()
        .copied()
        .filter(|op| !with_entry.contains(op))
        .collect();
    assert!(
        without_entry.is_empty(),
        "ops without a gradient case of their own in tests::autograd_cases: {without_entry:?}"
    );
    let unknown: Vec<&str> = with_entry
        .iter()
        .copied()
        .filter(|op| !ops.contains(op))
        .collect();
    assert!(
        unknown.is_empty(),
        "gradient cases name ops missing from all_ops(): {unknown:?}"
    );
    let untested: Vec<&str> = table
        .iter()
        .map(|e| e.name)
        .filter(|name| !PROPERTY_TESTS.contains(name))
        .collect();
    assert!(
        untested.is_empty(),
        "gradient cases without a property test in autograd_grad.rs: {untested:?}"
    );
    let names: BTreeSet<&str> = table.iter().map(|e| e.name).collect();
    assert_eq!(names.len(), table.len(), "duplicate case names");
}
