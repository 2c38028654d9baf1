//! Shared helpers of the integration tests.
//!
//! - [`util`]: small tensor helpers (literal tensors, closeness assertions,
//!   inner products, running code on a rayon pool of a given size).
//!
//! The gradient case table lives with the ops themselves
//! (`autograd::ops::all_cases()`, each family's `cases()`, built from the
//! public harness `autograd::check::cases`); `tests/autograd_grad.rs` runs
//! every entry, so a new op needs no edit here.

#![deny(missing_docs)]

pub mod util {
    //! Tensor helpers shared by the test files.

    use autograd::{Float, Tensor};

    /// An f64 tensor from literal data (panics if `data` does not fill `shape`).
    pub fn t64(data: &[f64], shape: &[usize]) -> Tensor<f64> {
        Tensor::from_vec(data.to_vec(), shape)
    }

    /// An f32 tensor from literal data (panics if `data` does not fill `shape`).
    pub fn t32(data: &[f32], shape: &[usize]) -> Tensor<f32> {
        Tensor::from_vec(data.to_vec(), shape)
    }

    /// Asserts that `actual` has shape `shape` and that every element is
    /// within `tol * max(1, |expected|)` of the literal `expected` (exact
    /// equality is required for infinities).
    #[track_caller]
    pub fn assert_values<T: Float>(
        actual: &Tensor<T>,
        shape: &[usize],
        expected: &[f64],
        tol: f64,
    ) {
        assert_eq!(actual.shape(), shape, "shape of {actual:?}");
        assert_eq!(
            actual.numel(),
            expected.len(),
            "element count of {actual:?}"
        );
        for (i, (&a, &e)) in actual.data().iter().zip(expected).enumerate() {
            let a = a.to_f64();
            let ok = if e.is_infinite() {
                a == e
            } else {
                (a - e).abs() <= tol * e.abs().max(1.0)
            };
            assert!(
                ok,
                "element {i}: got {a:e}, expected {e:e} (tol {tol:e})\n  actual:   {:?}\n  expected: {expected:?}",
                actual.data()
            );
        }
    }

    /// Asserts equal shapes and every element within `tol * max(1, |b|)`.
    #[track_caller]
    pub fn assert_close<T: Float>(a: &Tensor<T>, b: &Tensor<T>, tol: f64, what: &str) {
        assert_eq!(a.shape(), b.shape(), "{what}: shapes differ");
        for (i, (&x, &y)) in a.data().iter().zip(b.data()).enumerate() {
            let (x, y) = (x.to_f64(), y.to_f64());
            assert!(
                (x - y).abs() <= tol * y.abs().max(1.0),
                "{what}: element {i} differs: {x:e} vs {y:e} (tol {tol:e}, max abs diff {:e})",
                a.max_abs_diff(b)
            );
        }
    }

    /// The Frobenius inner product `<a, b> = sum_i a_i b_i` (same shapes).
    pub fn dot(a: &Tensor<f64>, b: &Tensor<f64>) -> f64 {
        assert_eq!(a.shape(), b.shape(), "dot: shapes differ");
        a.data().iter().zip(b.data()).map(|(x, y)| x * y).sum()
    }

    /// Runs `f` inside a fresh rayon pool of exactly `threads` threads.
    pub fn with_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("building a rayon pool")
            .install(f)
    }
}
