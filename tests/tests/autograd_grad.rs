//! Gradient property tests: every entry of `autograd::ops::all_cases()` (each
//! op family's `cases()`, next to the ops) is checked with the public
//! `autograd::check::cases::run_grad_case`: `gradcheck` (f64 central
//! differences, default tolerances: 1e-6 relative with a 1e-3 absolute floor)
//! over proptest-generated shapes and values, the entry's own number of cases.
//!
//! This file never needs editing for a new op: it iterates the table.
//! The coverage test `every_op_has_a_gradient_property_test` fails when an op
//! of `autograd::ops::all_ops()` has no entry, or an entry names an op that is
//! not in `all_ops()`.
//!
//! `PROPTEST_CASES=n` overrides every entry's number of cases (to soak the
//! suite: `PROPTEST_CASES=2000 cargo test -p tests --test autograd_grad`);
//! `GRAD_CASE=name` runs only the entries whose name contains `name`.

use std::collections::BTreeSet;

use autograd::check::GradcheckConfig;
use autograd::check::cases::run_grad_case;
use autograd::ops::{all_cases, all_ops};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use rayon::prelude::*;

/// Runs the property test of every entry, in parallel over entries, and
/// reports every failing entry (not just the first).
#[test]
fn every_gradient_case_passes() {
    let filter = std::env::var("GRAD_CASE").unwrap_or_default();
    let names: Vec<&'static str> = all_cases()
        .iter()
        .map(|e| e.name)
        .filter(|n| n.contains(filter.as_str()))
        .collect();
    assert!(
        !names.is_empty(),
        "no gradient case matches GRAD_CASE={filter:?}"
    );
    // A `GradCase` holds a boxed strategy (not `Send`): each task builds the
    // table afresh and runs its own entry.
    let failures: Vec<String> = names
        .par_iter()
        .filter_map(|&name| {
            let entry = all_cases()
                .into_iter()
                .find(|e| e.name == name)
                .expect("entry present");
            run_grad_case(&entry).err()
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} gradient properties failed:\n\n{}",
        failures.len(),
        names.len(),
        failures.join("\n\n")
    );
}

/// Runs one fixed draw (deterministic runner) of every table entry, and
/// checks that together they exercise every op, that every op has an entry
/// of its own, that every entry names a real op, and that names are unique.
#[test]
fn every_op_has_a_gradient_property_test() {
    let cfg = GradcheckConfig::default();
    let mut runner = TestRunner::deterministic();
    let table = all_cases();
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
        "ops without a gradient case of their own (add one to the family's `cases()`): {without_entry:?}"
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
    let names: BTreeSet<&str> = table.iter().map(|e| e.name).collect();
    assert_eq!(names.len(), table.len(), "duplicate case names");
}

/// The table keeps every entry it had when it lived in the tests crate (44:
/// 22 of 128 proptest cases, 22 of 256) plus the two biased-attention
/// entries (256 each): a guard against entries being dropped by accident.
/// Lower bounds, so that adding an op (and its entries) still touches only
/// its own file.
#[test]
fn the_table_keeps_its_entries() {
    let table = all_cases();
    let count = |n: u32| table.iter().filter(|e| e.cases == n).count();
    let names: Vec<&str> = table.iter().map(|e| e.name).collect();
    assert!(table.len() >= 46, "{} entries: {names:?}", table.len());
    assert!(count(128) >= 22 && count(256) >= 24, "{names:?}");
}
