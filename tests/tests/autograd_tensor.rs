//! `Tensor` basics: checked construction, constructors, seeded random
//! tensors, indexing, comparison, casting, and shared storage (putting a
//! tensor on the tape costs no copy); the raw product `matmul_into` /
//! `matmul_shape` against a naive loop for every transpose and batch
//! layout they accept.

use autograd::{
    Float, Param, Tape, Tensor, Transpose, broadcast_shapes, matmul_into, matmul_shape, numel,
    strides,
};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use tests::util::{assert_values, t32, with_threads};

#[test]
fn from_vec_checks_the_shape() {
    let t = Tensor::<f32>::try_from_vec(vec![1., 2., 3., 4., 5., 6.], &[2, 3]).unwrap();
    assert_eq!((t.shape(), t.ndim(), t.numel()), (&[2usize, 3][..], 2, 6));
    let err = Tensor::<f32>::try_from_vec(vec![1., 2., 3., 4., 5.], &[2, 3]).unwrap_err();
    assert_eq!(
        err,
        "Tensor::from_vec: 5 elements do not fill shape [2, 3] (6 elements)"
    );
    // The scalar shape [] holds one element.
    assert!(Tensor::<f64>::try_from_vec(vec![], &[]).is_err());
    assert_eq!(Tensor::<f64>::scalar(2.5).shape(), &[] as &[usize]);
}

#[test]
#[should_panic(expected = "Tensor::from_vec: 5 elements do not fill shape [2, 3] (6 elements)")]
fn from_vec_panics_on_a_bad_shape() {
    let _ = Tensor::<f32>::from_vec(vec![0.0; 5], &[2, 3]);
}

#[test]
fn constructors() {
    assert_values(&Tensor::<f32>::zeros(&[2, 2]), &[2, 2], &[0.0; 4], 0.0);
    assert_values(&Tensor::<f32>::ones(&[3]), &[3], &[1.0; 3], 0.0);
    assert_values(
        &Tensor::<f64>::full(&[1, 2], -1.5),
        &[1, 2],
        &[-1.5, -1.5],
        0.0,
    );
    assert_values(&Tensor::<f32>::arange(4), &[4], &[0., 1., 2., 3.], 0.0);
    assert_eq!(Tensor::<f32>::zeros(&[2, 0, 3]).numel(), 0);
    assert_values(&Tensor::<f64>::scalar(7.0), &[], &[7.0], 0.0);
    // Shape helpers.
    assert_eq!(numel(&[2, 3, 4]), 24);
    assert_eq!(numel(&[]), 1);
    assert_eq!(strides(&[2, 3, 4]), vec![12, 4, 1]);
    assert_eq!(broadcast_shapes(&[2, 1, 4], &[3, 1], "test"), vec![2, 3, 4]);
}

#[test]
fn randn_and_rand_uniform_are_seeded() {
    let a = Tensor::<f32>::randn(&[1000], 1.0, 2.0, 42);
    let b = Tensor::<f32>::randn(&[1000], 1.0, 2.0, 42);
    let c = Tensor::<f32>::randn(&[1000], 1.0, 2.0, 43);
    assert!(a.bit_eq(&b), "same seed, same tensor");
    assert!(!a.bit_eq(&c), "another seed, another tensor");
    // The f64 draw is the same sequence before rounding to f32.
    let a64 = Tensor::<f64>::randn(&[1000], 1.0, 2.0, 42);
    assert!(a64.cast::<f32>().bit_eq(&a));
    // Moments, loosely (n = 1000: standard error of the mean 0.063).
    let mean = a.data().iter().map(|&x| x as f64).sum::<f64>() / 1000.0;
    let var = a
        .data()
        .iter()
        .map(|&x| (x as f64 - mean).powi(2))
        .sum::<f64>()
        / 1000.0;
    assert!((mean - 1.0).abs() < 0.25, "mean {mean}");
    assert!((var.sqrt() - 2.0).abs() < 0.25, "std {}", var.sqrt());

    let u = Tensor::<f64>::rand_uniform(&[20, 50], -0.5, 0.25, 7);
    assert!(u.bit_eq(&Tensor::rand_uniform(&[20, 50], -0.5, 0.25, 7)));
    assert!(!u.bit_eq(&Tensor::rand_uniform(&[20, 50], -0.5, 0.25, 8)));
    assert_eq!(u.shape(), &[20, 50]);
    assert!(u.data().iter().all(|&x| (-0.5..0.25).contains(&x)));
    let lo = u.data().iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = u.data().iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    assert!(
        lo < -0.45 && hi > 0.2,
        "samples span the range: [{lo}, {hi}]"
    );
}

#[test]
fn at_item_and_dim() {
    let t = t32(&[1., 2., 3., 4., 5., 6.], &[2, 3]);
    assert_eq!(t.at(&[0, 0]), 1.0);
    assert_eq!(t.at(&[1, 0]), 4.0);
    assert_eq!(t.at(&[1, 2]), 6.0);
    assert_eq!((t.dim(0), t.dim(-1)), (2, 3));
    assert_eq!(Tensor::<f32>::scalar(3.0).item(), 3.0);
    assert_eq!(t32(&[9.0], &[1, 1]).item(), 9.0);
    assert_eq!(t.to_vec(), vec![1., 2., 3., 4., 5., 6.]);
}

#[test]
#[should_panic(expected = "Tensor::at: index [2, 0] out of bounds for shape [2, 3]")]
fn at_out_of_bounds_panics() {
    let _ = Tensor::<f32>::zeros(&[2, 3]).at(&[2, 0]);
}

#[test]
#[should_panic(expected = "Tensor::item: shape [2] has 2 elements, not 1")]
fn item_of_several_elements_panics() {
    let _ = Tensor::<f32>::zeros(&[2]).item();
}

#[test]
fn allclose_bit_eq_and_max_abs_diff() {
    let a = t32(&[1.0, 2.0, 3.0], &[3]);
    let b = t32(&[1.0, 2.001, 3.0], &[3]);
    assert!(a.allclose(&b, 0.0, 1.1e-3));
    assert!(!a.allclose(&b, 0.0, 0.9e-3));
    assert!(a.allclose(&b, 1e-3, 0.0), "relative to |other| = 2.001");
    assert!(
        !a.allclose(&a.reshape(&[1, 3]), 1.0, 1.0),
        "shapes must match"
    );
    assert!((a.max_abs_diff(&b) - 0.001).abs() < 1e-6);
    assert!(a.bit_eq(&a.clone()));
    assert!(!a.bit_eq(&b));
    assert_eq!(a, a.clone());
    assert_ne!(a, b);
    // bit_eq tells 0.0 from -0.0 and a NaN equals itself bitwise.
    assert!(!t32(&[0.0], &[1]).bit_eq(&t32(&[-0.0], &[1])));
    assert!(t32(&[f32::NAN], &[1]).bit_eq(&t32(&[f32::NAN], &[1])));
    assert!(!t32(&[f32::NAN], &[1]).all_finite());
}

#[test]
fn cast_between_f32_and_f64() {
    let a = t32(&[0.1, -2.5, 1e-8], &[3]);
    let b: Tensor<f64> = a.cast();
    assert_eq!(b.shape(), &[3]);
    assert_eq!(b.data()[1], -2.5);
    assert_eq!(b.data()[0], 0.1f32 as f64);
    assert!(b.cast::<f32>().bit_eq(&a), "f32 -> f64 -> f32 round-trips");
    let c = Tensor::<f64>::from_vec(vec![0.1], &[1]).cast::<f32>();
    assert_eq!(c.data()[0], 0.1f32);
}

#[test]
fn storage_is_shared_not_copied() {
    let t = Tensor::<f32>::randn(&[64, 64], 0.0, 1.0, 1);
    // Putting a tensor on the tape costs no copy.
    let tape = Tape::new();
    let v = tape.leaf(t.clone());
    assert!(v.value().shares_storage(&t));
    assert!(tape.constant(t.clone()).value().shares_storage(&t));
    // Nor does a Param on the tape, nor a reshape.
    let p = Param::new(t.clone());
    assert!(tape.param(&p).value().shares_storage(&t));
    assert!(t.reshape(&[4096]).shares_storage(&t));
    // data_mut copies only while the storage is shared (Arc::make_mut).
    let mut u = t.clone();
    u.data_mut()[0] = 100.0;
    assert!(!u.shares_storage(&t));
    assert_ne!(t.data()[0], 100.0, "the original is untouched");
    let ptr = u.data().as_ptr();
    u.data_mut()[1] = 5.0;
    assert_eq!(
        u.data().as_ptr(),
        ptr,
        "unshared storage is updated in place"
    );
    assert!(!Tensor::<f32>::zeros(&[2]).shares_storage(&Tensor::zeros(&[2])));
}

#[test]
fn debug_shows_type_shape_and_leading_values() {
    let s = format!("{:?}", Tensor::<f32>::arange(10));
    assert_eq!(s, "Tensor<f32>[10] [0, 1, 2, 3, 4, 5, 6, 7, ... (2 more)]");
}

// ---------------------------------------------------------------------------
// matmul_into / matmul_shape against a naive loop
// ---------------------------------------------------------------------------

/// A tensor of small random integers (-4..=4): every product below sums
/// at most a few thousand of them, exact in f32 and f64, so the kernel
/// must match the naive loop bit for bit whatever its summation order.
fn small_ints<T: Float>(shape: &[usize], seed: u64) -> Tensor<T> {
    let mut r = Xoshiro256PlusPlus::seed_from_u64(seed);
    let data = (0..numel(shape))
        .map(|_| T::from_f64(f64::from(r.random_range(-4i32..=4))))
        .collect();
    Tensor::from_vec(data, shape)
}

/// `op(A) op(B)` by the definition: for each output batch index, the
/// operands' batch indices under broadcasting (0 on an axis of size 1 or
/// absent), and `C[i][j] = sum_p op(A)[i][p] op(B)[p][j]` with op(X)[i][p]
/// read as `X[p][i]` when transposed.
fn naive_matmul(
    a: &Tensor<f64>,
    b: &Tensor<f64>,
    ta: bool,
    tb: bool,
    out_shape: &[usize],
) -> Vec<f64> {
    let (na, nb) = (a.ndim(), b.ndim());
    let (ar, ac) = (a.shape()[na - 2], a.shape()[na - 1]);
    let (br, bc) = (b.shape()[nb - 2], b.shape()[nb - 1]);
    let (m, k) = if ta { (ac, ar) } else { (ar, ac) };
    let n = if tb { br } else { bc };
    let batch = &out_shape[..out_shape.len() - 2];
    // Offset (in matrices) of the operand's matrix for output batch index `idx`.
    let matrix = |shape: &[usize], idx: &[usize]| -> usize {
        let own = &shape[..shape.len() - 2];
        let lead = batch.len() - own.len();
        own.iter().enumerate().fold(0, |off, (ax, &s)| {
            off * s + if s == 1 { 0 } else { idx[lead + ax] }
        })
    };
    let mut out = Vec::with_capacity(numel(out_shape));
    for bi in 0..numel(batch) {
        // The output batch index, axis by axis (row-major).
        let mut idx = vec![0; batch.len()];
        let mut rest = bi;
        for ax in (0..batch.len()).rev() {
            idx[ax] = rest % batch[ax];
            rest /= batch[ax];
        }
        let (oa, ob) = (
            matrix(a.shape(), &idx) * ar * ac,
            matrix(b.shape(), &idx) * br * bc,
        );
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0;
                for p in 0..k {
                    let x = if ta {
                        a.data()[oa + p * ac + i]
                    } else {
                        a.data()[oa + i * ac + p]
                    };
                    let y = if tb {
                        b.data()[ob + j * bc + p]
                    } else {
                        b.data()[ob + p * bc + j]
                    };
                    s += x * y;
                }
                out.push(s);
            }
        }
    }
    out
}

/// The stored shape of an operand whose op(X) is (rows, cols).
fn stored(batch: &[usize], rows: usize, cols: usize, transposed: bool) -> Vec<usize> {
    let mut s = batch.to_vec();
    s.extend(if transposed {
        [cols, rows]
    } else {
        [rows, cols]
    });
    s
}

/// For each transpose combination: `matmul_shape` gives the broadcast
/// batch followed by (M, N), and `matmul_into` overwrites a buffer
/// pre-filled with NaN with exactly the naive product, in f32 and f64, on
/// 1 and 3 threads (the batch loop runs in parallel above 2^21
/// multiply-adds).
fn check_matmul_into(batch_a: &[usize], batch_b: &[usize], (m, k, n): (usize, usize, usize)) {
    let mut want_shape = broadcast_shapes(batch_a, batch_b, "test");
    want_shape.extend([m, n]);
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let what = format!(
            "{batch_a:?} x {batch_b:?}, (m, k, n) = {:?}, ta {ta}, tb {tb}",
            (m, k, n)
        );
        let a = small_ints::<f64>(&stored(batch_a, m, k, ta), 1); // (..., M, K) or (..., K, M)
        let b = small_ints::<f64>(&stored(batch_b, k, n, tb), 2); // (..., K, N) or (..., N, K)
        let want = naive_matmul(&a, &b, ta, tb, &want_shape);
        let t = |x: bool| if x { Transpose::Yes } else { Transpose::No };
        let shape = matmul_shape(&a, &b, t(ta), t(tb), "test");
        assert_eq!(shape, want_shape, "{what}: shape");
        for threads in [1, 3] {
            let mut out = vec![f64::NAN; numel(&shape)];
            with_threads(threads, || {
                matmul_into(&a, &b, t(ta), t(tb), "test", &mut out)
            });
            assert!(
                out == want,
                "{what}, {threads} threads: f64 product differs from the naive loop"
            );
            let (a32, b32) = (a.cast::<f32>(), b.cast::<f32>());
            let mut out32 = vec![f32::NAN; numel(&shape)];
            with_threads(threads, || {
                matmul_into(&a32, &b32, t(ta), t(tb), "test", &mut out32)
            });
            assert!(
                out32.iter().zip(&want).all(|(&x, &y)| f64::from(x) == y),
                "{what}, {threads} threads: f32 product differs from the naive loop"
            );
        }
    }
}

#[test]
fn matmul_into_equals_the_naive_loop_for_2d_operands() {
    check_matmul_into(&[], &[], (3, 4, 5));
    check_matmul_into(&[], &[], (1, 7, 1)); // a dot product
    check_matmul_into(&[], &[], (6, 1, 2)); // an outer product
}

#[test]
fn matmul_into_equals_the_naive_loop_for_batched_operands() {
    // Same batch on both sides.
    check_matmul_into(&[2], &[2], (3, 4, 5));
    check_matmul_into(&[2, 3], &[2, 3], (2, 5, 3));
    // A stack times one matrix (untransposed A: one tall gemm).
    check_matmul_into(&[2, 3], &[], (3, 4, 5));
    // One matrix times a stack.
    check_matmul_into(&[], &[4], (3, 4, 5));
    // Batch axes that broadcast on both sides, and a missing leading axis.
    check_matmul_into(&[2, 1], &[3], (3, 4, 2));
    check_matmul_into(&[1, 3], &[2, 1], (2, 3, 4));
    check_matmul_into(&[3], &[2, 1], (2, 2, 2));
}

#[test]
fn matmul_into_of_empty_axes() {
    // K = 0: a sum of nothing, so the NaN-filled buffer must become zeros.
    check_matmul_into(&[], &[], (3, 0, 4));
    check_matmul_into(&[2], &[2], (3, 0, 4));
    // M = 0 or N = 0: nothing to write.
    check_matmul_into(&[2], &[], (0, 3, 4));
    check_matmul_into(&[], &[2], (3, 4, 0));
}

/// Above `GEMM_PAR_MIN_FLOPS` (2^21 = 2.10M): 4 x 3 products of
/// 64 x 64 x 48 (2.36M multiply-adds) run as a parallel batch loop, here
/// with A broadcast over one batch axis and B over the other (offsets
/// computed per output batch index).
#[test]
fn matmul_into_equals_the_naive_loop_above_the_parallel_threshold() {
    check_matmul_into(&[4, 1], &[3], (64, 64, 48));
}
