//! `sgemm` for products with few rows, without packing (issue 11).
//!
//! Incremental decoding multiplies one new position per hypothesis by every
//! weight matrix: C (R, N) = A (R, K) B (K, N) with R = 32 rows or fewer.
//! matrixmultiply packs B into its kernel's layout on every call, and with
//! so few rows each packed element of B is used only R times: packing took
//! 27% of W5's cached decoding (`perf`, 1 thread), as much as half the
//! multiply itself. Here B is read in place, row by row (it must have unit
//! column stride, which a weight in its (K, N) layout has), one tile of C
//! (up to 8 rows x 32 columns, in 16 AVX-512 registers) at a time.
//!
//! **The same result as matrixmultiply, bit for bit.** Every element of C
//! is computed exactly as matrixmultiply's FMA kernels compute it: one
//! fused multiply-add chain over k from zero, restarted every
//! [`KC`] = 256 values of k (its `S_KC` blocking), each block's sum added to
//! C with one rounding. So a model gives the same numbers whichever path a
//! product takes (decoding with the cache feeds R rows, without it R x T),
//! and the thread count still changes nothing (a tile's arithmetic does not
//! depend on where the tile is). The reference it must equal is
//! matrixmultiply itself (`skinny_gemm_is_bit_identical_to_matrixmultiply`
//! below), and both agree with a naive loop (`gemm_matches_the_naive_loop`).
//!
//! Taken only when matrixmultiply would use an FMA kernel too (AVX-512
//! detected at run time: matrixmultiply then runs its `avx512` kernel), for
//! `alpha = 1`, `beta` 0 or 1 (all the engine uses), a unit column stride
//! of C, and at most [`MAX_ROWS`] rows; everything else goes to
//! matrixmultiply unchanged. A B whose rows are not contiguous (a
//! transposed operand) is first copied row-major, B only: A is read in
//! place whatever its strides.

/// Products with at most this many rows take the unpacked path: above it,
/// packing B is shared by enough rows that matrixmultiply's blocked kernel
/// wins (measured with `cargo bench -p autograd --bench kernels`, "skinny").
pub(crate) const MAX_ROWS: usize = 64;

/// matrixmultiply 0.3's `S_KC`: the k-block after which its kernels add
/// the partial sum into C. Reproduced so that the rounding is the same.
pub(crate) const KC: usize = 256;

/// `C = alpha A B + beta C` for f32, as `matrixmultiply::sgemm` (same
/// arguments, same contract), through the unpacked path when it applies.
///
/// # Safety
/// As `matrixmultiply::sgemm`: the pointers and strides describe valid
/// `m x k`, `k x n` and `m x n` matrices, and C aliases neither A nor B.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    beta: f32,
    c: *mut f32,
    rsc: isize,
    csc: isize,
) {
    #[cfg(target_arch = "x86_64")]
    if m <= MAX_ROWS
        && k > 0
        && n > 0
        && alpha == 1.0
        && (beta == 0.0 || beta == 1.0)
        && csc == 1
        && avx512()
    {
        let mats = x86::Mats {
            a,
            rsa,
            csa,
            b,
            rsb,
            c,
            rsc,
        };
        // SAFETY: AVX-512F is present; the rest is the caller's contract.
        unsafe {
            if csb == 1 {
                x86::sgemm(m, k, n, mats, beta == 0.0)
            } else {
                x86::sgemm_copying_b(m, k, n, mats, csb, beta == 0.0)
            }
        };
        return;
    }
    // SAFETY: forwarded contract.
    unsafe { matrixmultiply::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc) }
}

/// True where the unpacked path runs (AVX-512F at run time; std caches the
/// detection, so this is one relaxed load).
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// True where the unpacked path runs (never off x86-64; the tests ask).
#[cfg(not(target_arch = "x86_64"))]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn avx512() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::KC;
    use std::arch::x86_64::*;

    /// Tile width: two 16-lane registers per row.
    const NT: usize = 32;
    /// Tile height: 8 rows x 2 registers = 16 accumulators, half the
    /// AVX-512 register file, leaving room for B's two loads.
    const MT: usize = 8;
    /// Prefetch distance, in rows of B.
    const PF: isize = 16;

    /// A (strides `rsa`, `csa`), B (row stride `rsb`, column stride 1) and
    /// C (row stride `rsc`, column stride 1) of a product, or of one tile.
    #[derive(Clone, Copy)]
    pub(super) struct Mats {
        pub(super) a: *const f32,
        pub(super) rsa: isize,
        pub(super) csa: isize,
        pub(super) b: *const f32,
        pub(super) rsb: isize,
        pub(super) c: *mut f32,
        pub(super) rsc: isize,
    }

    /// C (m, n) = A B (`overwrite`) or C += A B.
    ///
    /// # Safety
    /// AVX-512F must be available, and the matrices valid as for `sgemm`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn sgemm(m: usize, k: usize, n: usize, x: Mats, overwrite: bool) {
        // Columns outer, rows inner: one (K, 32) panel of B is read by
        // every row tile while it is still in cache.
        let mut j0 = 0;
        while j0 < n {
            let w = (n - j0).min(NT);
            let (m0, m1) = (lanes(w.min(16)), lanes(w.saturating_sub(16)));
            let mut i0 = 0;
            while i0 < m {
                let rows = (m - i0).min(MT);
                // SAFETY: the tile is rows i0..i0 + rows, columns j0..j0 + w
                // of the caller's matrices (masked lanes are not touched).
                unsafe {
                    let t = Tile {
                        x: Mats {
                            a: x.a.offset(i0 as isize * x.rsa),
                            b: x.b.add(j0),
                            c: x.c.offset(i0 as isize * x.rsc).add(j0),
                            ..x
                        },
                        m0,
                        m1,
                        prefetch_panels: if j0 == 0 { [1, 2] } else { [2, 0] },
                        prefetches: match (i0 == 0, j0 == 0) {
                            (false, _) => 0,
                            (true, true) => (n.div_ceil(NT) - 1).min(2),
                            (true, false) => usize::from(j0 + 2 * NT < n),
                        },
                    };
                    match rows {
                        8 => t.run::<8>(k, overwrite),
                        7 => t.run::<7>(k, overwrite),
                        6 => t.run::<6>(k, overwrite),
                        5 => t.run::<5>(k, overwrite),
                        4 => t.run::<4>(k, overwrite),
                        3 => t.run::<3>(k, overwrite),
                        2 => t.run::<2>(k, overwrite),
                        _ => t.run::<1>(k, overwrite),
                    }
                }
                i0 += rows;
            }
            j0 += w;
        }
    }

    thread_local! {
        /// The row-major copy of a B without unit column stride (per thread:
        /// the blocks of one product run on different rayon threads).
        static PACKED_B: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// Copies the (k, n) matrix at `b` (strides `rsb`, `csb`) into `buf`,
    /// row-major. Sixteen columns at a time, so that the writes are
    /// contiguous and the reads run along sixteen streams.
    ///
    /// # Safety
    /// `b` and its strides must describe a valid k x n matrix.
    unsafe fn pack_rows(
        k: usize,
        n: usize,
        b: *const f32,
        rsb: isize,
        csb: isize,
        buf: &mut Vec<f32>,
    ) {
        // Every element is written below: grow without re-zeroing what is
        // there (a tied vocabulary projection's B is 1 MB, every step).
        if buf.len() < k * n {
            buf.resize(k * n, 0.0);
        }
        for j0 in (0..n).step_by(16) {
            let j1 = (j0 + 16).min(n);
            for p in 0..k {
                let row = &mut buf[p * n + j0..p * n + j1];
                for (j, x) in (j0..j1).zip(row) {
                    // SAFETY: (p, j) is inside the k x n matrix.
                    *x = unsafe { *b.offset(p as isize * rsb + j as isize * csb) };
                }
            }
        }
    }

    /// [`sgemm`] for a B whose rows are not contiguous (a transposed
    /// operand: attention's `Q K^T`): B is copied row-major first, as
    /// matrixmultiply's packing would, but only B.
    ///
    /// # Safety
    /// As [`sgemm`], with B's column stride `csb`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn sgemm_copying_b(
        m: usize,
        k: usize,
        n: usize,
        x: Mats,
        csb: isize,
        overwrite: bool,
    ) {
        PACKED_B.with_borrow_mut(|buf| {
            // SAFETY: B is a valid k x n matrix (the caller's contract);
            // then the product reads the contiguous copy instead.
            unsafe {
                pack_rows(k, n, x.b, x.rsb, csb, buf);
                let copy = Mats {
                    b: buf.as_ptr(),
                    rsb: n as isize,
                    ..x
                };
                sgemm(m, k, n, copy, overwrite)
            }
        })
    }

    /// The first `w` of 16 lanes.
    fn lanes(w: usize) -> __mmask16 {
        ((1u32 << w) - 1) as __mmask16
    }

    /// One tile of C: up to 8 rows, two masked 16-lane column halves.
    struct Tile {
        /// The tile's corner in A, B and C.
        x: Mats,
        m0: __mmask16,
        m1: __mmask16,
        /// Panels of B ahead of this one (in panels) to fetch into L2 while
        /// this tile runs: the first row tile of each panel fetches the one
        /// two ahead (and panel 0's also panel 1). One ahead was too late:
        /// a weight comes from L3 (a decoder reads each once per step), and
        /// 32 x 256 x 1024 took 201 us with one ahead, 182 us with two, 184
        /// with three (L2-warm: 160 us; criterion "skinny").
        prefetch_panels: [usize; 2],
        prefetches: usize,
    }

    impl Tile {
        /// R rows of the tile over all of k, in blocks of [`KC`].
        ///
        /// # Safety
        /// AVX-512F, and the tile inside the caller's matrices.
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn run<const R: usize>(&self, k: usize, overwrite: bool) {
            let mut k0 = 0;
            while k0 < k {
                let k1 = (k0 + KC).min(k);
                let mut acc0 = [_mm512_setzero_ps(); R];
                let mut acc1 = [_mm512_setzero_ps(); R];
                for p in k0..k1 {
                    // SAFETY: row p of B, masked to the tile's columns; A's
                    // element (r, p) of the tile.
                    unsafe {
                        let bp = self.x.b.offset(p as isize * self.x.rsb);
                        // B's rows are a stride apart (4 KiB for N = 1024):
                        // ask for row p + PF's two lines now, or the loads
                        // wait on L3 (a weight is read once per step).
                        let ahead = bp.wrapping_offset(PF * self.x.rsb);
                        _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(16).cast());
                        for &panel in &self.prefetch_panels[..self.prefetches] {
                            let next = bp.wrapping_add(panel * NT);
                            _mm_prefetch::<_MM_HINT_T1>(next.cast());
                            _mm_prefetch::<_MM_HINT_T1>(next.wrapping_add(16).cast());
                        }
                        let b0 = _mm512_maskz_loadu_ps(self.m0, bp);
                        let b1 = _mm512_maskz_loadu_ps(self.m1, bp.add(16));
                        let ap = self.x.a.offset(p as isize * self.x.csa);
                        for r in 0..R {
                            let av = _mm512_set1_ps(*ap.offset(r as isize * self.x.rsa));
                            acc0[r] = _mm512_fmadd_ps(av, b0, acc0[r]);
                            acc1[r] = _mm512_fmadd_ps(av, b1, acc1[r]);
                        }
                    }
                }
                // matrixmultiply's epilogue with alpha = 1: C = AB on the
                // first block when beta = 0, else C = AB + C (one rounding).
                for r in 0..R {
                    // SAFETY: row r of the tile, masked to its columns.
                    unsafe {
                        let cp = self.x.c.offset(r as isize * self.x.rsc);
                        let (mut c0, mut c1) = (acc0[r], acc1[r]);
                        if !(overwrite && k0 == 0) {
                            c0 = _mm512_add_ps(_mm512_maskz_loadu_ps(self.m0, cp), c0);
                            c1 = _mm512_add_ps(_mm512_maskz_loadu_ps(self.m1, cp.add(16)), c1);
                        }
                        _mm512_mask_storeu_ps(cp, self.m0, c0);
                        _mm512_mask_storeu_ps(cp.add(16), self.m1, c1);
                    }
                }
                k0 = k1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::Xoshiro256PlusPlus;
    use rand::{RngExt, SeedableRng};

    /// `sgemm`'s signature: ours and matrixmultiply's are the same.
    type Sgemm = unsafe fn(
        usize,
        usize,
        usize,
        f32,
        *const f32,
        isize,
        isize,
        *const f32,
        isize,
        isize,
        f32,
        *mut f32,
        isize,
        isize,
    );

    /// C = A B + beta C through `f` for (m, k) A with strides `sa`,
    /// row-major (k, n) B and C starting as `c0`; C's bits.
    fn product(
        f: Sgemm,
        (m, k, n): (usize, usize, usize),
        a: &[f32],
        sa: (isize, isize),
        b: &[f32],
        beta: f32,
        c0: &[f32],
    ) -> Vec<u32> {
        let mut c = c0.to_vec();
        let (ni, c_ptr) = (n as isize, c.as_mut_ptr());
        // SAFETY: the buffers hold (m, k), (k, n) and (m, n) elements.
        unsafe {
            f(
                m,
                k,
                n,
                1.0,
                a.as_ptr(),
                sa.0,
                sa.1,
                b.as_ptr(),
                ni,
                1,
                beta,
                c_ptr,
                ni,
                1,
            )
        };
        c.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn skinny_gemm_is_bit_identical_to_matrixmultiply() {
        if !avx512() {
            eprintln!("no AVX-512 here: the unpacked path never runs, nothing to compare");
            return;
        }
        let (ours, theirs): (Sgemm, Sgemm) = (sgemm, matrixmultiply::sgemm);
        // Also with B stored transposed (column-major: the packed path).
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(12);
        for (m, k, n) in [(1, 1, 1), (32, 64, 32), (7, 300, 45), (64, 256, 1000)] {
            let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
            let bt: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
            let c0: Vec<f32> = (0..m * n).map(|_| rng.random_range(-1.0..1.0)).collect();
            let run = |f: Sgemm| {
                let mut c = c0.clone();
                let (ki, ni) = (k as isize, n as isize);
                let (ap, bp, cp) = (a.as_ptr(), bt.as_ptr(), c.as_mut_ptr());
                // SAFETY: (m, k) A, B^T stored (n, k), (m, n) C.
                unsafe { f(m, k, n, 1.0, ap, ki, 1, bp, 1, ki, 1.0, cp, ni, 1) };
                c.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            };
            assert_eq!(run(ours), run(theirs), "B transposed: m {m}, k {k}, n {n}");
        }
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
        let mut checked = 0;
        for m in [1, 2, 7, 8, 9, 17, 32, 33, MAX_ROWS] {
            for k in [1, 5, KC - 1, KC, KC + 1, 3 * KC + 7] {
                for n in [1, 15, 16, 17, 31, 32, 33, 100] {
                    let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
                    let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
                    let c0: Vec<f32> = (0..m * n).map(|_| rng.random_range(-1.0..1.0)).collect();
                    // A row-major and A transposed in storage (column-major).
                    for (rsa, csa) in [(k as isize, 1), (1, m as isize)] {
                        for beta in [0.0, 1.0] {
                            let shape = (m, k, n);
                            assert_eq!(
                                product(ours, shape, &a, (rsa, csa), &b, beta, &c0),
                                product(theirs, shape, &a, (rsa, csa), &b, beta, &c0),
                                "skinny sgemm differs from matrixmultiply: m {m}, k {k}, n {n}, \
                                 A strides ({rsa}, {csa}), beta {beta}"
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 9 * 6 * 8 * 4);
    }
}
