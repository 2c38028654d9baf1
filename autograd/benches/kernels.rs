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

criterion_group!(benches, kernels);
criterion_main!(benches);
