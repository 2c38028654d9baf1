//! Results do not depend on the number of threads: every kernel sums in an
//! order fixed by the shapes alone, so 1, 2, 3 and 4 rayon threads give
//! bit-identical results (`Tensor::bit_eq`), in f32. Three threads matter:
//! the matmul split into per-thread blocks puts its block boundaries at
//! `ceil(n / threads)` rounded to 8, which 2 and 4 threads share on even
//! sizes and 3 threads moves.
//!
//! The sizes are chosen to take the parallel paths of `kernels.rs`:
//! `PAR_MIN` = 2^15 elements for maps, rows and reductions; for matmul,
//! `GEMM_PAR_MIN_FLOPS` = 2^21 multiply-adds, above which one product is
//! split into per-thread blocks of rows (m >= n) or of columns (m < n) and a
//! batch of products runs in parallel over the batch. Odd sizes check that
//! the split does not change the arithmetic of edge tiles. Bit equality
//! does not show that the parallel results are *right* (an indexing bug
//! whose partition does not depend on the thread count gives the same
//! wrong answer on every count): `autograd_large.rs` checks the values.

use autograd::{Tape, Tensor, Var};
use tests::util::with_threads;

/// Runs `f` on 1, 2, 3 and 4 threads and asserts that every returned
/// tensor is bit-identical between the runs.
#[track_caller]
fn assert_thread_independent(what: &str, f: impl Fn() -> Vec<Tensor<f32>> + Sync) {
    let one = with_threads(1, &f);
    for threads in [2, 3, 4] {
        let many = with_threads(threads, &f);
        assert_eq!(one.len(), many.len());
        for (i, (a, b)) in one.iter().zip(&many).enumerate() {
            assert!(
                a.bit_eq(b),
                "{what}: result {i} differs between 1 and {threads} threads (max abs diff {:e})",
                a.max_abs_diff(b)
            );
        }
    }
}

/// `a @ b` and both gradients of `sum(a @ b * r)` for a random `r`.
fn matmul_and_grads(a: &Tensor<f32>, b: &Tensor<f32>, transposed: bool) -> Vec<Tensor<f32>> {
    let tape = Tape::new();
    let (va, vb) = (tape.leaf(a.clone()), tape.leaf(b.clone()));
    let y = if transposed {
        va.matmul_t(vb)
    } else {
        va.matmul(vb)
    };
    let r = Tensor::randn(&y.shape(), 0.0, 1.0, 99);
    let g = tape.backward_with(y, r);
    vec![y.value(), g.wrt(va).clone(), g.wrt(vb).clone()]
}

#[test]
fn matmul_2d_is_thread_independent() {
    // 300 x 200 @ 200 x 300: 18M multiply-adds, 300 > 64 rows -> row blocks.
    let a = Tensor::randn(&[300, 200], 0.0, 1.0, 1);
    let b = Tensor::randn(&[200, 300], 0.0, 1.0, 2);
    assert_thread_independent("matmul 2-D", || matmul_and_grads(&a, &b, false));
    let bt = Tensor::randn(&[300, 200], 0.0, 1.0, 3);
    assert_thread_independent("matmul_t 2-D", || matmul_and_grads(&a, &bt, true));
    // Wide (m < n: split by columns) and odd sizes (edge tiles).
    let (w1, w2) = (
        Tensor::randn(&[67, 203], 0.0, 1.0, 12),
        Tensor::randn(&[203, 601], 0.0, 1.0, 13),
    );
    assert_thread_independent("matmul wide, odd sizes", || {
        matmul_and_grads(&w1, &w2, false)
    });
    let (o1, o2) = (
        Tensor::randn(&[301, 203], 0.0, 1.0, 14),
        Tensor::randn(&[203, 299], 0.0, 1.0, 15),
    );
    assert_thread_independent("matmul tall, odd sizes", || {
        matmul_and_grads(&o1, &o2, false)
    });
    // Few rows (decoding's one position per hypothesis): the unpacked
    // kernel on AVX-512 machines, split by columns across threads; B in
    // place and B transposed (copied row-major first).
    let (s1, s2, s2t) = (
        Tensor::randn(&[32, 256], 0.0, 1.0, 16),
        Tensor::randn(&[256, 1001], 0.0, 1.0, 17),
        Tensor::randn(&[1001, 256], 0.0, 1.0, 18),
    );
    assert_thread_independent("matmul few rows", || matmul_and_grads(&s1, &s2, false));
    assert_thread_independent("matmul_t few rows", || matmul_and_grads(&s1, &s2t, true));
}

#[test]
fn matmul_batched_is_thread_independent() {
    // (32, 4, 32, 64) @ (32, 4, 64, 32): 128 matrices, 8.4M multiply-adds.
    let a = Tensor::randn(&[32, 4, 32, 64], 0.0, 1.0, 4);
    let b = Tensor::randn(&[32, 4, 64, 32], 0.0, 1.0, 5);
    assert_thread_independent("matmul batched", || matmul_and_grads(&a, &b, false));
    // Broadcast batch: (32, 4, 32, 64) x (4, 32, 64)^T ... as matmul_t.
    let k = Tensor::randn(&[4, 32, 64], 0.0, 1.0, 6);
    assert_thread_independent("matmul_t broadcast batch", || {
        matmul_and_grads(&a, &k, true)
    });
    // A stack against a 2-D weight: (16, 64, 128) @ (128, 256), one tall gemm.
    let x = Tensor::randn(&[16, 64, 128], 0.0, 1.0, 7);
    let w = Tensor::randn(&[128, 256], 0.0, 1.0, 8);
    assert_thread_independent("matmul weight", || matmul_and_grads(&x, &w, false));
}

#[test]
fn reductions_are_thread_independent() {
    // 300 x 400 = 120k elements (>= PAR_MIN, several SUM_BLOCKs).
    let x = Tensor::<f32>::randn(&[300, 400], 0.0, 1.0, 9);
    assert_thread_independent("reductions", || {
        vec![
            x.sum_all(),
            x.sum_axis(0, false),
            x.sum_axis(1, true),
            x.sum_axis(-1, false).sum_all(),
        ]
    });
    // The same through the tape, with gradients.
    assert_thread_independent("reductions on the tape", || {
        let tape = Tape::new();
        let v = tape.leaf(x.clone());
        let y = v.sum(0, false).sum_all()
            + v.mean(1, true).sum_all()
            + v.mean_all()
            + v.max(0, false).sum_all();
        let g = tape.backward(y);
        vec![y.value(), g.wrt(v).clone()]
    });
}

#[test]
fn softmax_is_thread_independent() {
    // 512 rows of 256: 131k elements, rows processed in parallel chunks.
    let x = Tensor::<f32>::randn(&[4, 128, 256], 0.0, 3.0, 10);
    assert_thread_independent("softmax", || {
        let tape = Tape::new();
        let v = tape.leaf(x.clone());
        let (s, ls) = (v.softmax(), v.log_softmax());
        let r = Tensor::randn(x.shape(), 0.0, 1.0, 11);
        let gs = tape.backward_with(s, r.clone());
        let gl = tape.backward_with(ls, r);
        vec![s.value(), ls.value(), gs.wrt(v).clone(), gl.wrt(v).clone()]
    });
}

#[test]
fn linear_and_attention_are_thread_independent() {
    // linear: (16, 64, 128) x (128, 512) + (512): 67M multiply-adds.
    let x = Tensor::<f32>::randn(&[16, 64, 128], 0.0, 1.0, 30);
    let w = Tensor::<f32>::randn(&[128, 512], 0.0, 0.1, 31);
    let b = Tensor::<f32>::randn(&[512], 0.0, 0.1, 32);
    assert_thread_independent("linear", || {
        let tape = Tape::new();
        let (vx, vw, vb) = (
            tape.leaf(x.clone()),
            tape.leaf(w.clone()),
            tape.leaf(b.clone()),
        );
        let y = vx.linear(vw, Some(vb));
        let g = tape.backward_with(y, Tensor::randn(&y.shape(), 0.0, 1.0, 33));
        vec![
            y.value(),
            g.wrt(vx).clone(),
            g.wrt(vw).clone(),
            g.wrt(vb).clone(),
        ]
    });
    // attention: 16 x 8 heads over T = 64, D = 128, with a causal mask.
    let causal: Vec<f32> = (0..64 * 64)
        .map(|i| if i % 64 > i / 64 { 1.0 } else { 0.0 })
        .collect();
    let mask = Tensor::from_vec(causal, &[64, 64]);
    assert_thread_independent("attention", || {
        let tape = Tape::new();
        let q = tape.leaf(x.clone());
        let k = tape.leaf(x.map(|v| 0.5 * v));
        let v = tape.leaf(x.map(|v| v * v));
        let y = q.attention(k, v, 8, Some(&mask));
        let g = tape.backward_with(y, Tensor::randn(&y.shape(), 0.0, 1.0, 34));
        vec![
            y.value(),
            g.wrt(q).clone(),
            g.wrt(k).clone(),
            g.wrt(v).clone(),
        ]
    });
}

/// Attention with a learned bias (1, H, T, T), broadcast over the batch: the
/// bias gradient sums the heads' score gradients over the batch in a fixed
/// order, so it too is bit-identical on 1 and 2 threads.
#[test]
fn attention_biased_is_thread_independent() {
    let x = Tensor::randn(&[16, 64, 128], 0.0, 1.0, 40);
    let bias = Tensor::randn(&[1, 8, 64, 64], 0.0, 1.0, 41);
    let causal: Vec<f32> = (0..64 * 64)
        .map(|i| if i % 64 > i / 64 { 1.0 } else { 0.0 })
        .collect();
    let mask = Tensor::from_vec(causal, &[64, 64]);
    assert_thread_independent("attention_biased", || {
        let tape = Tape::new();
        let q = tape.leaf(x.clone());
        let k = tape.leaf(x.map(|v| 0.5 * v));
        let v = tape.leaf(x.map(|v| v * v));
        let b = tape.leaf(bias.clone());
        let y = q.attention_biased(k, v, 8, Some(&mask), Some(b));
        let g = tape.backward_with(y, Tensor::randn(&y.shape(), 0.0, 1.0, 42));
        vec![
            y.value(),
            g.wrt(q).clone(),
            g.wrt(k).clone(),
            g.wrt(v).clone(),
            g.wrt(b).clone(),
        ]
    });
}

/// A small transformer-like graph (f32): embedding, linear + gelu,
/// layer_norm, attention scores with a causal mask, softmax, matmul,
/// dropout, output projection tied to the embedding, cross-entropy with
/// smoothing and padding. Returns the loss and every parameter's gradient.
fn composed_graph() -> Vec<Tensor<f32>> {
    let (b, t, d, v, h) = (8, 64, 64, 96, 4);
    let tape = Tape::new();
    let emb = tape.leaf(Tensor::randn(&[v, d], 0.0, 0.5, 20));
    let w1 = tape.leaf(Tensor::randn(&[d, 3 * d], 0.0, 0.2, 21));
    let b1 = tape.leaf(Tensor::randn(&[3 * d], 0.0, 0.1, 22));
    let gain = tape.leaf(Tensor::ones(&[d]));
    let bias = tape.leaf(Tensor::zeros(&[d]));
    let ids: Vec<usize> = (0..b * t).map(|i| (i * 7 + 3) % v).collect();
    let x = emb.embedding(&ids, &[b, t]); // (B, T, D)
    let qkv = (x.matmul(w1) + b1).gelu(); // (B, T, 3D)
    let split = |i: usize| qkv.narrow(-1, i * d, d).split_heads(h); // (B, H, T, D/H)
    let (q, k, val) = (split(0), split(1), split(2));
    let scores = q.matmul_t(k) * (1.0 / ((d / h) as f32).sqrt()); // (B, H, T, T)
    let causal: Vec<f32> = (0..t * t)
        .map(|i| if i % t > i / t { 1.0 } else { 0.0 })
        .collect();
    let att = scores
        .masked_fill(&Tensor::from_vec(causal, &[t, t]), f32::NEG_INFINITY)
        .softmax();
    let ctx = att.matmul(val).merge_heads(); // (B, T, D)
    let mut rng = <rand::rngs::Xoshiro256PlusPlus as rand::SeedableRng>::seed_from_u64(5);
    let y = (x + ctx)
        .dropout(0.1, true, &mut rng)
        .layer_norm(gain, bias, 1e-5);
    let logits = y.matmul_t(emb); // (B, T, V), tied projection
    let targets: Vec<usize> = (0..b * t)
        .map(|i| if i % 9 == 0 { 0 } else { (i * 5 + 1) % v })
        .collect();
    let loss = logits.cross_entropy(&targets, Some(0), 0.1);
    let g = tape.backward(loss);
    let params: [Var<f32>; 5] = [emb, w1, b1, gain, bias];
    std::iter::once(loss.value())
        .chain(params.iter().map(|&p| g.wrt(p).clone()))
        .collect()
}

#[test]
fn a_composed_graph_is_thread_independent() {
    assert_thread_independent("composed graph", composed_graph);
    let r = composed_graph();
    assert!(r.iter().all(|t| t.all_finite()));
}
