//! The differentiable ops, one file per family. Each op is a method on
//! [`Var`](crate::Var) whose forward and backward (VJP) sit side by side.
//!
//! Every family lists its op names in `OPS` and (feature `proptest`) owns
//! its gradient property entries in `cases()`; [`all_ops`] and
//! `all_cases` join them, and the test suite runs every entry and fails
//! when an op has none. Adding an op touches its family's file only.

pub mod attention;
pub mod elementwise;
pub mod matmul;
pub mod nn;
pub mod reduce;
pub mod shape;

/// Names of every op recorded on a tape (as in [`Var::op`](crate::Var::op)).
pub fn all_ops() -> Vec<&'static str> {
    [
        elementwise::OPS,
        reduce::OPS,
        matmul::OPS,
        shape::OPS,
        nn::OPS,
        attention::OPS,
    ]
    .concat()
}

/// Every gradient property entry of every family, in family order
/// (feature `proptest`). Each op of [`all_ops`] has at least one entry whose
/// `op` is its name (checked by the test suite).
#[cfg(feature = "proptest")]
pub fn all_cases() -> Vec<crate::check::cases::GradCase> {
    [
        elementwise::cases(),
        reduce::cases(),
        matmul::cases(),
        shape::cases(),
        nn::cases(),
        attention::cases(),
    ]
    .into_iter()
    .flatten()
    .collect()
}
