//! Running a loop with the CPU's wider vector instructions, chosen at run
//! time (issue 11).
//!
//! The crates are built for the baseline x86-64 target (SSE2), so that one
//! binary runs on every x86-64 machine. A hot loop the compiler can
//! vectorise then uses 4-lane SSE registers even where the CPU has 8-lane
//! AVX2 ones. [`wide`] runs a closure inside a function compiled with
//! AVX2 and FMA enabled when the CPU has them, and the compiler vectorises
//! the closure's loops twice as wide once it is inlined there. Mark the
//! closure `#[inline(always)]` (and what it calls `#[inline]`): `wide`
//! calls it from two places, so the compiler may otherwise keep it a
//! separate, baseline-compiled function (the cached attention's closure
//! was, until marked; `perf annotate` showed SSE code).
//!
//! **The result does not change.** Enabling instructions does not license
//! the compiler to reorder or fuse float operations: Rust never contracts
//! `a * b + c` into an FMA and never reassociates a sum, so the wide code
//! performs the same IEEE operations in the same order, bit for bit
//! (`wide_gives_the_same_bits` below; the cached attention of `transformer`
//! is checked the same way).

/// `f()`, compiled for AVX2 + FMA when the CPU has them (else as is);
/// mark `f` `#[inline(always)]` (see the module notes).
///
/// ```
/// let x: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5).collect();
/// let plain: Vec<f32> = x.iter().map(|v| v * 3.0 + 1.0).collect();
/// let wide: Vec<f32> = autograd::wide(
///     #[inline(always)]
///     || x.iter().map(|v| v * 3.0 + 1.0).collect(),
/// );
/// assert_eq!(plain, wide);
/// ```
#[inline]
pub fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the features were detected on this CPU.
        return unsafe { avx2(f) };
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(test)]
mod tests {
    use super::wide;

    #[test]
    fn wide_gives_the_same_bits() {
        // A dot product in eight partial sums, an exp and a running sum:
        // the shapes of the loops `wide` is used on.
        let a: Vec<f32> = (0..517)
            .map(|i| ((i * 37) % 101) as f32 / 7.0 - 5.0)
            .collect();
        let run = || {
            let mut acc = [0.0f32; 8];
            for (c, x) in a.chunks_exact(8).zip(a.chunks_exact(8).skip(1)) {
                for l in 0..8 {
                    acc[l] += c[l] * x[l];
                }
            }
            let e: Vec<f32> = a.iter().map(|v| (v * 0.1).exp() * 2.0 + 1.0).collect();
            let s: f32 = e.iter().sum();
            (
                acc.map(f32::to_bits),
                e.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                s.to_bits(),
            )
        };
        assert_eq!(wide(run), run());
    }
}
