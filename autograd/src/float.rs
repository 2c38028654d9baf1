//! The element type: `f32` for training, `f64` for gradient checking.
//!
//! Every kernel and every op is generic over [`Float`], so `gradcheck` runs the
//! *very same* op code in f64 that training runs in f32 (issue 2).

use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

/// A floating-point element type: implemented for `f32` and `f64`.
///
/// ```
/// use autograd::Float;
/// assert_eq!(<f64 as Float>::from_f64(0.5).to_f64(), 0.5);
/// assert_eq!(<f32 as Float>::NAME, "f32");
/// ```
pub trait Float:
    Copy
    + Send
    + Sync
    + Debug
    + Display
    + Default
    + PartialEq
    + PartialOrd
    + Sum
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + 'static
{
    /// Zero.
    const ZERO: Self;
    /// One.
    const ONE: Self;
    /// Negative infinity (a masked score).
    const NEG_INFINITY: Self;
    /// `"f32"` or `"f64"`, for messages.
    const NAME: &'static str;

    /// Converts from f64 (rounding to nearest for f32).
    fn from_f64(x: f64) -> Self;
    /// Converts to f64 (exact).
    fn to_f64(self) -> f64;
    /// Converts a count (a dimension, a number of rows).
    fn from_usize(x: usize) -> Self {
        Self::from_f64(x as f64)
    }
    /// `e^x` (the library exp).
    fn exp(self) -> Self;
    /// `exp` for the softmax-family kernels: for `f32` a branch-free
    /// polynomial (Cephes' `expf` coefficients, relative error below 2e-7,
    /// exactly 0 below -87, so `exp(-inf) = 0`; arguments above 88 give
    /// `e^88`: the kernels only pass `x <= 0`) that the compiler can
    /// vectorise; for `f64` (gradient checks) the library `exp`. Being plain
    /// arithmetic it is as deterministic as `exp`.
    #[inline]
    fn exp_fast(self) -> Self {
        self.exp()
    }
    /// Natural logarithm.
    fn ln(self) -> Self;
    /// `ln(1 + x)`, accurate for small `|x|` (where `1 + x` would round
    /// away the digits of `x`): `softplus(x) = ln_1p(exp(x))` stays non-zero
    /// down to `x = -700` in f64.
    ///
    /// ```
    /// use autograd::Float;
    /// assert_eq!(Float::ln_1p(1e-20f64), 1e-20);
    /// assert!(Float::ln_1p(Float::exp(-50.0f32)) > 0.0); // ~1.93e-22
    /// ```
    fn ln_1p(self) -> Self;
    /// `exp(x) - 1`, accurate for small `|x|`.
    ///
    /// ```
    /// use autograd::Float;
    /// assert_eq!(Float::exp_m1(1e-20f64), 1e-20);
    /// ```
    fn exp_m1(self) -> Self;
    /// The error function `erf(x) = 2/sqrt(pi) * int_0^x exp(-t^2) dt` (from
    /// the `libm` crate: `std`'s is not stable yet). The exact GELU is
    /// `0.5 x (1 + erf(x / sqrt 2))`.
    ///
    /// ```
    /// use autograd::Float;
    /// assert!((Float::erf(1.0f64) - 0.842_700_792_949_714_9).abs() < 1e-15);
    /// ```
    fn erf(self) -> Self;
    /// The complementary error function `1 - erf(x)`, accurate where
    /// `erf(x)` is close to 1 (large `x`).
    ///
    /// ```
    /// use autograd::Float;
    /// assert!(Float::erfc(10.0f64) > 0.0); // 2.09e-45; 1 - erf(10) is 0
    /// ```
    fn erfc(self) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// Hyperbolic tangent.
    fn tanh(self) -> Self;
    /// Absolute value.
    fn abs(self) -> Self;
    /// `self^p`.
    fn powf(self, p: Self) -> Self;
    /// False for NaN and the infinities.
    fn is_finite(self) -> bool;
    /// The larger of two values (the other one if either is NaN, as `f64::max`).
    fn max(self, other: Self) -> Self;

    /// `C = alpha * A B + beta * C` on raw strided storage (matrixmultiply's
    /// `sgemm`/`dgemm`; for f32 products of at most 64 rows on AVX-512
    /// machines, an unpacked kernel with matrixmultiply's exact rounding,
    /// see `skinny.rs`). Strides are in elements, so a transposed operand is
    /// just swapped strides: no copy.
    ///
    /// # Safety
    /// The pointers and strides must describe valid `m x k`, `k x n` and
    /// `m x n` matrices, and `c` must not alias `a` or `b`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    );
}

/// See [`Float::exp_fast`]. `e^x = 2^k e^r` with `k = round(x / ln 2)`
/// and `|r| <= ln 2 / 2`; `e^r` by a degree-7 polynomial.
#[inline]
fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer
    // with plain SSE2 arithmetic (no libm `round`, so the loop vectorises).
    const ROUND: f32 = 12_582_912.0;
    let xc = x.clamp(-87.0, 88.0);
    let k = (xc * LOG2E + ROUND) - ROUND;
    let r = xc - k * LN2_HI - k * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    let scale = f32::from_bits((((k as i32) + 127) as u32) << 23);
    if x < -87.0 { 0.0 } else { y * scale }
}

macro_rules! impl_float {
    ($t:ty, $name:literal, $gemm:path, $exp_fast:path, $erf:path, $erfc:path) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            const NAME: &'static str = $name;

            #[inline]
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            #[inline]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline]
            fn exp_fast(self) -> Self {
                $exp_fast(self)
            }
            #[inline]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline]
            fn ln_1p(self) -> Self {
                <$t>::ln_1p(self)
            }
            #[inline]
            fn exp_m1(self) -> Self {
                <$t>::exp_m1(self)
            }
            #[inline]
            fn erf(self) -> Self {
                $erf(self)
            }
            #[inline]
            fn erfc(self) -> Self {
                $erfc(self)
            }
            #[inline]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline]
            fn powf(self, p: Self) -> Self {
                <$t>::powf(self, p)
            }
            #[inline]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            #[inline]
            fn max(self, other: Self) -> Self {
                <$t>::max(self, other)
            }
            unsafe fn gemm(
                m: usize,
                k: usize,
                n: usize,
                alpha: Self,
                a: *const Self,
                rsa: isize,
                csa: isize,
                b: *const Self,
                rsb: isize,
                csb: isize,
                beta: Self,
                c: *mut Self,
                rsc: isize,
                csc: isize,
            ) {
                // SAFETY: forwarded contract, see the trait method.
                unsafe { $gemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc) }
            }
        }
    };
}

impl_float!(
    f32,
    "f32",
    crate::skinny::sgemm,
    exp_f32,
    libm::erff,
    libm::erfcf
);
impl_float!(
    f64,
    "f64",
    matrixmultiply::dgemm,
    f64::exp,
    libm::erf,
    libm::erfc
);

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast f32 exp against the library exp over the range softmax uses
    /// (and a little beyond): relative error below 2e-7; exact at 0 and -inf.
    #[test]
    fn exp_fast_f32_is_accurate() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (a, b) = (exp_f32(x) as f64, (x as f64).exp());
            worst = worst.max((a - b).abs() / b);
            x += 0.001_37;
        }
        assert!(worst < 2e-7, "worst relative error {worst:e}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(-100.0), 0.0);
        assert_eq!(<f64 as Float>::exp_fast(0.5), 0.5f64.exp());
    }
}
