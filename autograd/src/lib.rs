//! # autograd
//!
//! A reverse-mode tape autograd over `matrixmultiply`-backed tensors.
//!
//! - [`Tensor`]: n-dimensional, row-major, contiguous, shared storage, generic
//!   over [`Float`] (`f32` to train, `f64` to check gradients).
//! - [`Tape`] records a forward pass; [`Var`] is a `Copy` handle with the ops
//!   as methods (see [`ops`]); [`Tape::backward`] returns [`Grads`].
//! - [`Param`] is a tensor that outlives tapes (a layer's weight);
//!   [`ParamGrads`] accumulates over micro-batches.
//! - [`check`]: the public gradient checker, and proptest strategies behind
//!   the `proptest` feature.
//!
//! ```
//! use autograd::{Tape, Tensor};
//! let tape = Tape::new();
//! let x = tape.leaf(Tensor::from_vec(vec![1.0, -2.0, 3.0], &[1, 3]));
//! let w = tape.leaf(Tensor::from_vec(vec![0.5, 1.0, -1.0], &[3, 1]));
//! let y = x.matmul(w).relu().sum_all(); // relu(0.5 - 2 - 3) = 0
//! let g = tape.backward(y);
//! assert_eq!(y.value().item(), 0.0);
//! assert_eq!(g.wrt(w).data(), &[0.0, 0.0, 0.0]);
//! ```

#![deny(missing_docs)]

pub mod check;
mod float;
mod kernels;
pub mod ops;
mod simd;
mod skinny;
mod tape;
mod tensor;

pub use float::Float;
pub use kernels::{MatRef, Transpose, broadcast_shapes, gemm, matmul_into, matmul_shape};
pub use simd::wide;
pub use tape::{
    Anomaly, BackwardFn, Grads, Param, ParamGrads, ParamId, Tape, Var, no_grad, retain_freed_memory,
};
pub use tensor::{Tensor, checked_numel, numel, strides};
