//! The differentiable ops, one file per family. Each op is a method on
//! [`Var`](crate::Var) whose forward and backward (VJP) sit side by side.
//!
//! Every family lists its op names in `OPS`; [`all_ops`] joins them so the
//! test suite can fail when an op has no gradient property test.

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
