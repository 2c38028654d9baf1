//! Values and gradients above the parallel thresholds (issue 13).
//!
//! Every other value test uses axes of 3-5 elements, below `PAR_MIN` (2^15
//! elements: row-parallel maps, `sum_all`, `sum_axis`) and
//! `GEMM_PAR_MIN_FLOPS` (2^21 multiply-adds: the per-thread split of one
//! product, the batch-parallel matmul), and `autograd_determinism.rs` only
//! shows that the parallel branches give the same bits on any thread
//! count, which an indexing bug whose partition does not depend on the
//! thread count passes. Here each op with a parallel or tiled branch runs
//! in f64 at a size just above its threshold, on 1, 2 and 3 threads, and
//! its value and gradient (the vector-Jacobian product with a random `r`)
//! are compared with a naive loop written out in this file.
//!
//! Sizes are just above the thresholds, to keep the file cheap: 300 x 131
//! = 39,300 elements (>= 2^15 = 32,768), and matmuls of 2.1-2.5M
//! multiply-adds (>= 2^21 = 2,097,152).

use autograd::{Tape, Tensor, Var};
use tests::util::with_threads;

/// 300 rows of 131: above `PAR_MIN`, more than 64 rows (several row tasks,
/// and `column_sums` in more than one block), and an odd width.
const ROWS: usize = 300;
const COLS: usize = 131;

/// Runs `f` on 1, 2 and 3 threads and compares each result with the naive
/// reference `want`, elementwise within `tol * max(1, |want|)`.
#[track_caller]
fn check_on_threads(
    what: &str,
    want: &[Vec<f64>],
    tol: f64,
    f: impl Fn() -> Vec<Tensor<f64>> + Sync,
) {
    for threads in [1, 2, 3] {
        let got = with_threads(threads, &f);
        assert_eq!(got.len(), want.len(), "{what}: number of results");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert_eq!(g.numel(), w.len(), "{what}: size of result {i}");
            let worst = g
                .data()
                .iter()
                .zip(w)
                .enumerate()
                .map(|(j, (&a, &b))| (j, (a - b).abs() / b.abs().max(1.0)))
                .fold(
                    (0, 0.0),
                    |m, x| if x.1 > m.1 || x.1.is_nan() { x } else { m },
                );
            assert!(
                worst.1 <= tol,
                "{what}: result {i} on {threads} threads differs from the naive loop: element {} \
                 is {:e}, expected {:e} (relative error {:e})",
                worst.0,
                g.data()[worst.0],
                w[worst.0],
                worst.1
            );
        }
    }
}

fn randn(shape: &[usize], seed: u64) -> Tensor<f64> {
    Tensor::randn(shape, 0.0, 1.0, seed)
}

fn vecs(ts: &[Tensor<f64>]) -> Vec<Tensor<f64>> {
    ts.to_vec()
}

// ---------------------------------------------------------------------------
// Elementwise maps, broadcasting, permutes and reductions
// ---------------------------------------------------------------------------

/// `tanh(x * b + c)` with `b` (D) and `c` (N, 1) broadcast against `x`
/// (N, D): the same-shape and broadcast `zip_map` rows, `map`, and in
/// backward `map3` (tanh's backward, like every `pointwise` op's) and
/// `sum_to_shape` (its `column_sums` fast path for `b`, the general path
/// for `c`).
#[test]
fn elementwise_and_broadcast_above_par_min() {
    let x = randn(&[ROWS, COLS], 1); // (N, D)
    let b = randn(&[COLS], 2); // (D)
    let c = randn(&[ROWS, 1], 3); // (N, 1)
    let r = randn(&[ROWS, COLS], 4); // (N, D)
    let (xd, bd, cd, rd) = (x.data(), b.data(), c.data(), r.data());
    let mut y = vec![0.0; ROWS * COLS];
    let (mut dx, mut db, mut dc) = (vec![0.0; ROWS * COLS], vec![0.0; COLS], vec![0.0; ROWS]);
    for i in 0..ROWS {
        for j in 0..COLS {
            let k = i * COLS + j;
            y[k] = (xd[k] * bd[j] + cd[i]).tanh();
            let dz = rd[k] * (1.0 - y[k] * y[k]);
            dx[k] = dz * bd[j];
            db[j] += dz * xd[k];
            dc[i] += dz;
        }
    }
    check_on_threads("tanh(x * b + c)", &[y, dx, db, dc], 1e-12, || {
        let tape = Tape::new();
        let (vx, vb, vc) = (
            tape.leaf(x.clone()),
            tape.leaf(b.clone()),
            tape.leaf(c.clone()),
        );
        let out = (vx * vb + vc).tanh();
        let g = tape.backward_with(out, r.clone());
        vecs(&[
            out.value(),
            g.wrt(vx).clone(),
            g.wrt(vb).clone(),
            g.wrt(vc).clone(),
        ])
    });
}

/// A transpose (`permute` rows in parallel) and back, with its gradient.
#[test]
fn transpose_above_par_min() {
    let x = randn(&[ROWS, COLS], 5); // (N, D)
    let r = randn(&[COLS, ROWS], 6); // (D, N)
    let (xd, rd) = (x.data(), r.data());
    let mut y = vec![0.0; ROWS * COLS];
    let mut dx = vec![0.0; ROWS * COLS];
    for i in 0..ROWS {
        for j in 0..COLS {
            y[j * ROWS + i] = xd[i * COLS + j];
            dx[i * COLS + j] = rd[j * ROWS + i];
        }
    }
    check_on_threads("transpose", &[y, dx], 0.0, || {
        let tape = Tape::new();
        let v = tape.leaf(x.clone());
        let out = v.transpose(0, 1); // (D, N)
        let g = tape.backward_with(out, r.clone());
        vecs(&[out.value(), g.wrt(v).clone()])
    });
}

/// `sum_all` (blocks of 2^14 summed in parallel), `sum` over each axis
/// (rows of the output in parallel) and `mean`, with their gradients
/// (broadcasts of the seed).
#[test]
fn reductions_above_par_min() {
    let x = randn(&[ROWS, COLS], 7); // (N, D)
    let r0 = randn(&[COLS], 8); // seed of sum over axis 0: (D)
    let r1 = randn(&[ROWS], 9); // seed of mean over axis 1: (N)
    let xd = x.data();
    let total: f64 = xd.iter().sum();
    let mut s0 = vec![0.0; COLS];
    let mut m1 = vec![0.0; ROWS];
    let mut dx = vec![0.0; ROWS * COLS];
    for i in 0..ROWS {
        for j in 0..COLS {
            s0[j] += xd[i * COLS + j];
            m1[i] += xd[i * COLS + j] / COLS as f64;
            // d/dx of 2 * sum_all + <r0, sum_0> + <r1, mean_1>
            dx[i * COLS + j] = 2.0 + r0.data()[j] + r1.data()[i] / COLS as f64;
        }
    }
    let loss = 2.0 * total
        + s0.iter().zip(r0.data()).map(|(a, b)| a * b).sum::<f64>()
        + m1.iter().zip(r1.data()).map(|(a, b)| a * b).sum::<f64>();
    check_on_threads(
        "reductions",
        &[vec![total], s0, m1, vec![loss], dx],
        1e-12,
        || {
            let tape = Tape::new();
            let v = tape.leaf(x.clone());
            let (all, s0, m1) = (v.sum_all(), v.sum(0, false), v.mean(1, false));
            let rv0 = tape.constant(r0.clone());
            let rv1 = tape.constant(r1.clone());
            let l = all * 2.0 + (s0 * rv0).sum_all() + (m1 * rv1).sum_all();
            let g = tape.backward(l);
            vecs(&[
                all.value(),
                s0.value(),
                m1.value(),
                l.value(),
                g.wrt(v).clone(),
            ])
        },
    );
}

/// `sum` over the middle axis of a (12, 25, 131) tensor (39,300 elements):
/// the parallel `sum_axis` with both an outer and an inner extent above 1,
/// where the 2-D sums above have one of them equal to 1 (axis 0: one
/// outer block; axis 1 of a matrix: rows of one element), so a wrong
/// offset mixing the two passes them. Its gradient broadcasts the seed
/// back along the axis.
#[test]
fn sum_over_a_middle_axis_above_par_min() {
    let (a, n, c) = (12, 25, COLS);
    let x = randn(&[a, n, c], 12); // (A, N, C)
    let r = randn(&[a, c], 13); // (A, C)
    let (xd, rd) = (x.data(), r.data());
    let mut s = vec![0.0; a * c];
    let mut dx = vec![0.0; a * n * c];
    for i in 0..a {
        for j in 0..n {
            for k in 0..c {
                s[i * c + k] += xd[(i * n + j) * c + k];
                dx[(i * n + j) * c + k] = rd[i * c + k];
            }
        }
    }
    check_on_threads("sum over axis 1", &[s, dx], 1e-12, || {
        let tape = Tape::new();
        let v = tape.leaf(x.clone());
        let out = v.sum(1, false); // (A, C)
        let g = tape.backward_with(out, r.clone());
        vecs(&[out.value(), g.wrt(v).clone()])
    });
}

// ---------------------------------------------------------------------------
// Matmul: the per-thread split of one product, the batch-parallel loop
// ---------------------------------------------------------------------------

/// `C = A B` for a stack of `batch` products, naively; `a_t` / `b_t` read
/// A or B transposed; `b_batch` false broadcasts one B over the batch.
#[allow(clippy::too_many_arguments)]
fn naive_matmul(
    a: &[f64],
    b: &[f64],
    batch: usize,
    (m, k, n): (usize, usize, usize),
    a_t: bool,
    b_t: bool,
    b_batch: bool,
) -> Vec<f64> {
    let mut c = vec![0.0; batch * m * n];
    for s in 0..batch {
        let (ao, bo) = (s * m * k, if b_batch { s * k * n } else { 0 });
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0;
                for p in 0..k {
                    let av = if a_t {
                        a[ao + p * m + i]
                    } else {
                        a[ao + i * k + p]
                    };
                    let bv = if b_t {
                        b[bo + j * k + p]
                    } else {
                        b[bo + p * n + j]
                    };
                    acc += av * bv;
                }
                c[s * m * n + i * n + j] = acc;
            }
        }
    }
    c
}

/// Sums `batch` stacked (rows, cols) matrices into one.
fn sum_stack(x: &[f64], batch: usize) -> Vec<f64> {
    let per = x.len() / batch;
    (0..per)
        .map(|i| (0..batch).map(|s| x[s * per + i]).sum())
        .collect()
}

/// One 2-D product `A (m, k) @ B (k, n)` and both gradients against the
/// naive loop: `dA = R B^T`, `dB = A^T R`, every product above the
/// threshold, so each runs split into per-thread blocks.
fn check_matmul_2d(m: usize, k: usize, n: usize, seed: u64) {
    assert!(m * k * n >= 1 << 21 && m * n * k >= 1 << 21);
    let a = randn(&[m, k], seed);
    let b = randn(&[k, n], seed + 1);
    let r = randn(&[m, n], seed + 2);
    let c = naive_matmul(a.data(), b.data(), 1, (m, k, n), false, false, true);
    let da = naive_matmul(r.data(), b.data(), 1, (m, n, k), false, true, true);
    let db = naive_matmul(a.data(), r.data(), 1, (k, m, n), true, false, true);
    check_on_threads(
        &format!("matmul {m}x{k} @ {k}x{n}"),
        &[c, da, db],
        1e-12,
        || {
            let tape = Tape::new();
            let (va, vb) = (tape.leaf(a.clone()), tape.leaf(b.clone()));
            let y = va.matmul(vb);
            let g = tape.backward_with(y, r.clone());
            vecs(&[y.value(), g.wrt(va).clone(), g.wrt(vb).clone()])
        },
    );
}

/// Tall (m >= n: split by rows) and wide (m < n: split by columns), odd
/// sizes so that the blocks (multiples of 8) end in partial tiles.
#[test]
fn matmul_2d_split_above_the_threshold() {
    check_matmul_2d(151, 121, 131, 10); // 2.39M multiply-adds, tall
    check_matmul_2d(71, 121, 257, 20); // 2.21M, wide
}

/// A batch of 8 products of 64 x 64 (2^21 multiply-adds in all: the
/// batch-parallel loop), with `B` transposed and broadcast over an outer
/// axis; and a stack of matrices against one weight (one tall gemm).
#[test]
fn matmul_batched_above_the_threshold() {
    let a = randn(&[2, 4, 64, 64], 30); // (2, 4, M, K)
    let b = randn(&[4, 64, 64], 31); // (4, N, K): transposed, broadcast over the 2
    let r = randn(&[2, 4, 64, 64], 32); // (2, 4, M, N)
    let mut b8 = b.data().to_vec();
    b8.extend_from_slice(b.data()); // B repeated for each of the 2
    let dims = (64, 64, 64);
    let c = naive_matmul(a.data(), &b8, 8, dims, false, true, true);
    // dA = R B (per product); dB = sum over the 2 of R^T A.
    let da = naive_matmul(r.data(), &b8, 8, dims, false, false, true);
    let db8: Vec<f64> = (0..8)
        .flat_map(|s| {
            let o = s * 64 * 64;
            naive_matmul(
                &r.data()[o..o + 4096],
                &a.data()[o..o + 4096],
                1,
                dims,
                true,
                false,
                true,
            )
        })
        .collect();
    let db = sum_stack(&db8, 2);
    check_on_threads("batched matmul_t", &[c, da, db], 1e-12, || {
        let tape = Tape::new();
        let (va, vb) = (tape.leaf(a.clone()), tape.leaf(b.clone()));
        let y = va.matmul_t(vb);
        let g = tape.backward_with(y, r.clone());
        vecs(&[y.value(), g.wrt(va).clone(), g.wrt(vb).clone()])
    });
}

/// `linear`: (4, 100, 64) x (64, 96) + (96), 2.46M multiply-adds as one
/// tall gemm; the bias gradient sums 400 rows (`column_sums`, 7 blocks).
#[test]
fn linear_above_the_threshold() {
    let (rows, din, dout) = (400, 64, 96);
    let x = randn(&[4, 100, din], 40); // (B, T, Din)
    let w = randn(&[din, dout], 41); // (Din, Dout)
    let bias = randn(&[dout], 42); // (Dout)
    let r = randn(&[4, 100, dout], 43); // (B, T, Dout)
    let mut y = naive_matmul(x.data(), w.data(), 1, (rows, din, dout), false, false, true);
    for (i, v) in y.iter_mut().enumerate() {
        *v += bias.data()[i % dout];
    }
    let dx = naive_matmul(r.data(), w.data(), 1, (rows, dout, din), false, true, true);
    let dw = naive_matmul(x.data(), r.data(), 1, (din, rows, dout), true, false, true);
    let db = sum_stack(r.data(), rows);
    check_on_threads("linear", &[y, dx, dw, db], 1e-12, || {
        let tape = Tape::new();
        let (vx, vw, vb) = (
            tape.leaf(x.clone()),
            tape.leaf(w.clone()),
            tape.leaf(bias.clone()),
        );
        let out = vx.linear(vw, Some(vb));
        let g = tape.backward_with(out, r.clone());
        vecs(&[
            out.value(),
            g.wrt(vx).clone(),
            g.wrt(vw).clone(),
            g.wrt(vb).clone(),
        ])
    });
}

// ---------------------------------------------------------------------------
// The softmax family, layer norm, cross-entropy
// ---------------------------------------------------------------------------

fn softmax_rows(x: &[f64], d: usize) -> Vec<f64> {
    x.chunks(d)
        .flat_map(|row| {
            let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = row.iter().map(|v| (v - m).exp()).sum();
            row.iter()
                .map(move |v| (v - m).exp() / s)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn softmax_and_log_softmax_above_par_min() {
    let x = Tensor::randn(&[ROWS, COLS], 0.0, 3.0, 50); // (N, V)
    let r = randn(&[ROWS, COLS], 51);
    let p = softmax_rows(x.data(), COLS);
    let logp: Vec<f64> = p.iter().map(|v| v.ln()).collect();
    let (mut ds, mut dl) = (vec![0.0; ROWS * COLS], vec![0.0; ROWS * COLS]);
    for i in 0..ROWS {
        let row = i * COLS..(i + 1) * COLS;
        let rp: f64 = row.clone().map(|k| r.data()[k] * p[k]).sum();
        let rsum: f64 = row.clone().map(|k| r.data()[k]).sum();
        for k in row {
            ds[k] = p[k] * (r.data()[k] - rp); // softmax VJP
            dl[k] = r.data()[k] - p[k] * rsum; // log_softmax VJP
        }
    }
    check_on_threads("softmax, log_softmax", &[p, logp, ds, dl], 1e-12, || {
        let tape = Tape::new();
        let v = tape.leaf(x.clone());
        let (s, l) = (v.softmax(), v.log_softmax());
        let gs = tape.backward_with(s, r.clone());
        let gl = tape.backward_with(l, r.clone());
        vecs(&[s.value(), l.value(), gs.wrt(v).clone(), gl.wrt(v).clone()])
    });
}

#[test]
fn layer_norm_above_par_min() {
    let (n, d, eps) = (ROWS, COLS, 1e-5);
    let x = Tensor::randn(&[n, d], 0.5, 2.0, 60); // (N, D)
    let gain = Tensor::rand_uniform(&[d], 0.5, 1.5, 61);
    let bias = randn(&[d], 62);
    let r = randn(&[n, d], 63);
    let (xd, gd, bd, rd) = (x.data(), gain.data(), bias.data(), r.data());
    let (mut y, mut dx) = (vec![0.0; n * d], vec![0.0; n * d]);
    let (mut dgain, mut dbias) = (vec![0.0; d], vec![0.0; d]);
    for i in 0..n {
        let row = &xd[i * d..(i + 1) * d];
        let mean = row.iter().sum::<f64>() / d as f64;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d as f64;
        let rstd = 1.0 / (var + eps).sqrt();
        let xh: Vec<f64> = row.iter().map(|v| (v - mean) * rstd).collect();
        let dxh: Vec<f64> = (0..d).map(|j| rd[i * d + j] * gd[j]).collect();
        let m1 = dxh.iter().sum::<f64>() / d as f64;
        let m2 = dxh.iter().zip(&xh).map(|(a, b)| a * b).sum::<f64>() / d as f64;
        for j in 0..d {
            y[i * d + j] = xh[j] * gd[j] + bd[j];
            dx[i * d + j] = rstd * (dxh[j] - m1 - xh[j] * m2);
            dgain[j] += rd[i * d + j] * xh[j];
            dbias[j] += rd[i * d + j];
        }
    }
    check_on_threads("layer_norm", &[y, dx, dgain, dbias], 1e-11, || {
        let tape = Tape::new();
        let (v, g, b) = (
            tape.leaf(x.clone()),
            tape.leaf(gain.clone()),
            tape.leaf(bias.clone()),
        );
        let out = v.layer_norm(g, b, eps);
        let grads = tape.backward_with(out, r.clone());
        vecs(&[
            out.value(),
            grads.wrt(v).clone(),
            grads.wrt(g).clone(),
            grads.wrt(b).clone(),
        ])
    });
}

/// Label-smoothed cross-entropy over 300 rows of 131 logits, every fifth
/// target the ignored padding id.
#[test]
fn cross_entropy_above_par_min() {
    let (n, v, eps, pad) = (ROWS, COLS, 0.1, 0);
    let x = Tensor::randn(&[n, v], 0.0, 2.0, 70); // (N, V)
    let targets: Vec<usize> = (0..n)
        .map(|i| {
            if i % 5 == 0 {
                pad
            } else {
                1 + (i * 37) % (v - 1)
            }
        })
        .collect();
    let p = softmax_rows(x.data(), v);
    let counted = targets.iter().filter(|&&t| t != pad).count() as f64;
    let mut loss = 0.0;
    let mut dx = vec![0.0; n * v];
    for (i, &t) in targets.iter().enumerate() {
        if t == pad {
            continue;
        }
        for j in 0..v {
            let q = eps / v as f64 + if j == t { 1.0 - eps } else { 0.0 };
            loss -= q * p[i * v + j].ln() / counted;
            dx[i * v + j] = (p[i * v + j] - q) / counted;
        }
    }
    check_on_threads("cross_entropy", &[vec![loss], dx], 1e-12, || {
        let tape = Tape::new();
        let l = tape.leaf(x.clone());
        let out = l.cross_entropy(&targets, Some(pad), eps);
        let g = tape.backward(out);
        vecs(&[out.value(), g.wrt(l).clone()])
    });
}

// ---------------------------------------------------------------------------
// Fused attention: one head's products at 2^21 multiply-adds
// ---------------------------------------------------------------------------

/// The fused attention op with T = 128 and head width 128 (2 heads, D =
/// 256, causal): each head's `P V`, `dO V^T`, `dS K` and `dS^T Q` is 2^21
/// multiply-adds, so the gemm writing into the (B, T, D) output at row
/// stride D is split across threads, which no other test reaches.
#[test]
fn attention_with_head_width_128_above_the_threshold() {
    let (b, t, h, dk) = (2, 128, 2, 128);
    let d = h * dk;
    let q = Tensor::randn(&[b, t, d], 0.0, 0.2, 80); // (B, T, D)
    let k = Tensor::randn(&[b, t, d], 0.0, 0.2, 81);
    let v = randn(&[b, t, d], 82);
    let r = randn(&[b, t, d], 83);
    // 1 above the diagonal: key j > query i is masked.
    let mask = Tensor::from_vec(
        (0..t * t)
            .map(|i| if i % t > i / t { 1.0 } else { 0.0 })
            .collect(),
        &[t, t],
    );
    let scale = 1.0 / (dk as f64).sqrt();
    let (qd, kd, vd, rd) = (q.data(), k.data(), v.data(), r.data());
    let at =
        |x: &[f64], bi: usize, i: usize, hi: usize, c: usize| x[(bi * t + i) * d + hi * dk + c];
    let (mut y, mut dq, mut dkk, mut dv) = (
        vec![0.0; b * t * d],
        vec![0.0; b * t * d],
        vec![0.0; b * t * d],
        vec![0.0; b * t * d],
    );
    for bi in 0..b {
        for hi in 0..h {
            // P (T, T), row-wise softmax of the masked, scaled scores.
            let mut p = vec![0.0; t * t];
            for i in 0..t {
                for j in 0..=i {
                    p[i * t + j] = (0..dk)
                        .map(|c| at(qd, bi, i, hi, c) * at(kd, bi, j, hi, c))
                        .sum::<f64>()
                        * scale;
                }
                let m = p[i * t..i * t + i + 1]
                    .iter()
                    .copied()
                    .fold(f64::NEG_INFINITY, f64::max);
                let s: f64 = (0..=i).map(|j| (p[i * t + j] - m).exp()).sum();
                for j in 0..t {
                    p[i * t + j] = if j <= i {
                        (p[i * t + j] - m).exp() / s
                    } else {
                        0.0
                    };
                }
            }
            for i in 0..t {
                for c in 0..dk {
                    let o = (bi * t + i) * d + hi * dk + c;
                    y[o] = (0..t).map(|j| p[i * t + j] * at(vd, bi, j, hi, c)).sum();
                    // dV = P^T dO
                    dv[o] = (0..t).map(|j| p[j * t + i] * at(rd, bi, j, hi, c)).sum();
                }
            }
            // dP = dO V^T; dS = P * (dP - rowsum(dP * P)) * scale
            let mut ds = vec![0.0; t * t];
            for i in 0..t {
                let dp: Vec<f64> = (0..t)
                    .map(|j| {
                        (0..dk)
                            .map(|c| at(rd, bi, i, hi, c) * at(vd, bi, j, hi, c))
                            .sum()
                    })
                    .collect();
                let dot: f64 = (0..t).map(|j| dp[j] * p[i * t + j]).sum();
                for j in 0..t {
                    ds[i * t + j] = p[i * t + j] * (dp[j] - dot) * scale;
                }
            }
            for i in 0..t {
                for c in 0..dk {
                    let o = (bi * t + i) * d + hi * dk + c;
                    dq[o] = (0..t).map(|j| ds[i * t + j] * at(kd, bi, j, hi, c)).sum();
                    dkk[o] = (0..t).map(|j| ds[j * t + i] * at(qd, bi, j, hi, c)).sum();
                }
            }
        }
    }
    check_on_threads(
        "attention T = 128, Dk = 128",
        &[y, dq, dkk, dv],
        1e-11,
        || {
            let tape = Tape::new();
            let (vq, vk, vv) = (
                tape.leaf(q.clone()),
                tape.leaf(k.clone()),
                tape.leaf(v.clone()),
            );
            let out: Var<f64> = vq.attention(vk, vv, h, Some(&mask));
            let g = tape.backward_with(out, r.clone());
            vecs(&[
                out.value(),
                g.wrt(vq).clone(),
                g.wrt(vk).clone(),
                g.wrt(vv).clone(),
            ])
        },
    );
}
