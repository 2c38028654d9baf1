//! Micro-benchmarks of the hot kernels, forward and backward, at W1's shapes
//! (WORKLOADS.md: batch 32, length 32, d_model 256, 4 heads, d_ff 1024,
//! vocab 1000), so a kernel change can be judged alone:
//! `cargo bench -p autograd --bench kernels`.

use autograd::{Tape, Tensor, Var};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

const B: usize = 32;
const T: usize = 32;
const D: usize = 256;
const H: usize = 4;
const F: usize = 1024;
const V: usize = 1000;

/// Times forward only, and forward + backward (seeded with ones).
fn fwd_bwd(
    c: &mut Criterion,
    name: &str,
    inputs: &[Tensor<f32>],
    f: impl for<'t> Fn(&[Var<'t, f32>]) -> Var<'t, f32>,
) {
    c.bench_function(&format!("{name}/forward"), |bch| {
        bch.iter(|| {
            let tape = Tape::no_grad();
            let vars: Vec<Var> = inputs.iter().map(|t| tape.constant(t.clone())).collect();
            black_box(f(&vars).value());
        })
    });
    c.bench_function(&format!("{name}/forward+backward"), |bch| {
        bch.iter(|| {
            let tape = Tape::new();
            let vars: Vec<Var> = inputs.iter().map(|t| tape.leaf(t.clone())).collect();
            let y = f(&vars);
            black_box(tape.backward_with(y, Tensor::ones(&y.shape())));
        })
    });
}

fn kernels(c: &mut Criterion) {
    // As the training binaries do (and as Tape::new did implicitly before
    // it became an opt-in): keep freed activation memory in the heap.
    autograd::retain_freed_memory();
    let x = Tensor::<f32>::randn(&[B, T, D], 0.0, 1.0, 1); // (B, T, D)
    let w = Tensor::<f32>::randn(&[D, F], 0.0, 0.05, 2); // (D, F)
    let bias = Tensor::<f32>::zeros(&[F]);
    fwd_bwd(c, "matmul (B,T,D)x(D,F)", &[x.clone(), w.clone()], |v| {
        v[0].matmul(v[1])
    });
    fwd_bwd(c, "linear (B,T,D)x(D,F)+b", &[x.clone(), w, bias], |v| {
        v[0].linear(v[1], Some(v[2]))
    });
    let scores = Tensor::<f32>::randn(&[B, H, T, T], 0.0, 1.0, 3); // (B, H, T, T)
    fwd_bwd(c, "softmax (B,H,T,T)", &[scores], |v| v[0].softmax());
    let (g, b) = (Tensor::<f32>::ones(&[D]), Tensor::<f32>::zeros(&[D]));
    fwd_bwd(c, "layer_norm (B,T,D)", &[x.clone(), g, b], |v| {
        v[0].layer_norm(v[1], v[2], 1e-5)
    });
    let causal = Tensor::<f32>::from_vec(
        (0..T * T)
            .map(|i| if i % T > i / T { 1.0 } else { 0.0 })
            .collect(),
        &[1, 1, T, T],
    );
    let (k, vv) = (
        Tensor::<f32>::randn(&[B, T, D], 0.0, 1.0, 4),
        Tensor::<f32>::randn(&[B, T, D], 0.0, 1.0, 5),
    );
    fwd_bwd(
        c,
        "attention causal (B,T,D) H=4",
        &[x.clone(), k, vv],
        |v| v[0].attention(v[1], v[2], H, Some(&causal)),
    );
    let logits = Tensor::<f32>::randn(&[B * T, V], 0.0, 1.0, 6); // (B*T, V)
    let targets: Vec<usize> = (0..B * T).map(|i| (i * 7919) % V).collect();
    fwd_bwd(c, "cross_entropy (B*T,V) smoothing 0.1", &[logits], |v| {
        v[0].cross_entropy(&targets, None, 0.1)
    });
}

/// Decoding's products (issue 11): R rows (one position per hypothesis)
/// times a (K, N) weight, through `autograd::gemm` (the unpacked path for
/// R <= 64 on AVX-512 machines) and through `matrixmultiply::sgemm`
/// (always packed), at W5's shapes and across the row cut-off.
fn skinny(c: &mut Criterion) {
    for (r, k, n) in [
        (32, D, F),
        (32, F, D),
        (32, D, D),
        (8, D, F),
        (64, D, F),
        (128, D, F),
    ] {
        let a = Tensor::<f32>::randn(&[r, k], 0.0, 1.0, 7); // (R, K)
        // Twelve weights in turn, as a decoder's layers use theirs: each
        // comes from L3, not from the L2 the previous call left it in.
        let ws: Vec<Tensor<f32>> = (0..12)
            .map(|i| Tensor::<f32>::randn(&[k, n], 0.0, 0.05, 8 + i)) // (K, N)
            .collect();
        let mut turn = 0;
        let mut out = vec![0.0f32; r * n];
        c.bench_function(&format!("skinny {r}x{k}x{n}/gemm"), |bch| {
            bch.iter(|| {
                turn = (turn + 1) % ws.len();
                let w = &ws[turn];
                autograd::gemm(
                    autograd::MatRef::new(a.data(), r, k),
                    autograd::MatRef::new(w.data(), k, n),
                    &mut out,
                    false,
                );
                black_box(&out);
            })
        });
        c.bench_function(&format!("skinny {r}x{k}x{n}/matrixmultiply"), |bch| {
            bch.iter(|| {
                turn = (turn + 1) % ws.len();
                let w = &ws[turn];
                // SAFETY: contiguous (R, K), (K, N) and (R, N) buffers.
                unsafe {
                    matrixmultiply::sgemm(
                        r,
                        k,
                        n,
                        1.0,
                        a.data().as_ptr(),
                        k as isize,
                        1,
                        w.data().as_ptr(),
                        n as isize,
                        1,
                        0.0,
                        out.as_mut_ptr(),
                        n as isize,
                        1,
                    )
                };
                black_box(&out);
            })
        });
    }
}

criterion_group!(benches, kernels, skinny);
criterion_main!(benches);
