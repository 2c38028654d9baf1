//! The `bench` binary: the workloads of `experiments/bench/WORKLOADS.md` (W1 a
//! small encoder-decoder training step, W2 one base-size encoder layer, W3
//! long attention at T = 512, W4 sgemm, W5 greedy and beam decoding with and
//! without the key/value cache), run with the project's real model code, so the figures compare with PyTorch, JAX, candle and burn.
//!
//! ```text
//! cargo run --release --bin bench -- --workload all --threads 2 --markdown bench.md
//! cargo run --release --bin bench -- --workload W1 --threads 1 --json
//! ```
//!
//! Peak memory is the whole process's: run one (workload, threads) per
//! process under `/usr/bin/time -v` and read "Maximum resident set size".

#![deny(missing_docs)]

use std::io::Write;
use std::time::Instant;

use autograd::{Tape, Tensor, Transpose, matmul_into, matmul_shape, numel};
use clap::{Parser, ValueEnum};
use rand::RngExt;
use transformer::{
    Ctx, EncoderLayer, Mode, ModelConfig, Placement, Registry, TokenBatch, TrainConfig, Trainer,
    Transformer, Tying, beam, greedy, param_count, rng,
};

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum Workload {
    #[value(name = "W1")]
    W1,
    #[value(name = "W2")]
    W2,
    #[value(name = "W3")]
    W3,
    #[value(name = "W4")]
    W4,
    #[value(name = "W5")]
    W5,
    /// W1's step in micro-batches with the fixed-order sum, shared among
    /// the ranks of `mpirun` (issue 12); not part of `all`.
    #[value(name = "W1-dp")]
    W1Dp,
    #[value(name = "all")]
    All,
}

#[derive(Parser, Debug)]
#[command(about = "Runs the WORKLOADS.md workloads with the project's model code.")]
struct Args {
    /// Which workload to run.
    #[arg(long, value_enum, default_value = "all")]
    workload: Workload,
    /// Rayon threads (the whole engine's parallelism).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Timed steps (the median is reported).
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Also write the table as markdown to this file.
    #[arg(long)]
    markdown: Option<std::path::PathBuf>,
    /// Print one JSON object per measurement instead of the table.
    #[arg(long)]
    json: bool,
    /// W1-dp: micro-batches per step (a multiple of the rank count).
    #[arg(long, default_value_t = 2)]
    micro_batches: usize,
    /// W5: which decoding paths to time (`uncached` alone is the slow
    /// reference; `cached` alone is what a profile of the cache wants).
    #[arg(long, value_enum, default_value_t = DecodePaths::Both)]
    decode: DecodePaths,
}

/// W5's decoding paths.
#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
enum DecodePaths {
    Cached,
    Uncached,
    Both,
}

/// One row of the report.
struct Row {
    workload: String,
    threads: usize,
    median_ms: f64,
    min_ms: f64,
    max_ms: f64,
    first_ms: Option<f64>,
    /// tokens/s for W1-W3 and W5 (generated tokens), GFLOP/s for W4.
    rate: f64,
    is_gflops: bool,
    model_gflops: Option<f64>,
    /// model GFLOP/s as a share of this run's sgemm GFLOP/s (sq512).
    sgemm_share: Option<f64>,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Times `step` after `warmup` untimed runs: (first warm-up ms, all timed ms).
fn time_steps(warmup: usize, steps: usize, mut step: impl FnMut()) -> (Option<f64>, Vec<f64>) {
    let mut first = None;
    for i in 0..warmup {
        let t = Instant::now();
        step();
        if i == 0 {
            first = Some(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let times = (0..steps)
        .map(|_| {
            let t = Instant::now();
            step();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    (first, times)
}

/// The common model definition of WORKLOADS.md: post-LN, eps 1e-5,
/// dropout 0.1 on embeddings and sublayer outputs only, shared embedding
/// and tied output projection, sinusoidal positions, no padding.
fn bench_config(
    vocab: usize,
    d: usize,
    heads: usize,
    d_ff: usize,
    layers: usize,
    max_len: usize,
) -> ModelConfig {
    ModelConfig {
        d_model: d,
        heads,
        d_ff,
        encoder_layers: layers,
        decoder_layers: layers,
        dropout: 0.1,
        attention_dropout: 0.0,
        ffn_dropout: 0.0,
        tying: Tying::All,
        positional: "sinusoidal".into(),
        norm: "layer".into(),
        placement: Placement::Post,
        residual: true,
        max_len,
        norm_eps: 1e-5,
        pad_id: None,
        ..ModelConfig::base(vocab, vocab)
    }
}

/// Nominal model GFLOP per step (WORKLOADS.md, "Model GFLOP/s"): 3 x the
/// forward matmul FLOPs.
fn encoder_layer_flops(tokens: f64, s: f64, d: f64, f: f64) -> f64 {
    tokens * (8.0 * d * d + 4.0 * s * d + 4.0 * d * f)
}

fn w1_gflop() -> f64 {
    let (b, s, t, d, f, v) = (32.0, 32.0, 32.0, 256.0, 1024.0, 1000.0);
    let enc = 3.0 * encoder_layer_flops(b * s, s, d, f);
    let dec_per_tok = 8.0 * d * d + 4.0 * t * d + 4.0 * d * d + 4.0 * s * d + 4.0 * d * f;
    let dec = 3.0 * (b * t * dec_per_tok + b * s * 4.0 * d * d);
    let out = b * t * 2.0 * d * v;
    3.0 * (enc + dec + out) / 1e9
}

fn w1(args: &Args) -> Row {
    let cfg = bench_config(1000, 256, 4, 1024, 3, 64);
    let mut trainer = Trainer::new(cfg, TrainConfig::paper(256), 0).expect("W1 config is valid");
    assert_eq!(
        param_count(&mut trainer.model),
        5_785_600,
        "W1 parameter count"
    );
    let mut r = rng(1234);
    let mut toks = |n: usize| {
        (0..n)
            .map(|_| r.random_range(0..1000usize))
            .collect::<Vec<_>>()
    };
    let src = TokenBatch::new(toks(32 * 32), 32, 32);
    let tgt_in = TokenBatch::new(toks(32 * 32), 32, 32);
    let labels = toks(32 * 32);
    let (first, mut times) = time_steps(args.warmup, args.steps, || {
        trainer.step(&src, &tgt_in, &labels);
    });
    model_row(
        "W1 train step",
        args,
        first,
        &mut times,
        32.0 * 32.0,
        w1_gflop(),
    )
}

/// W1-dp: W1's batch (32 x 32 tokens) cut into `--micro-batches` equal
/// micro-batches, summed in the fixed tree order and shared among the
/// ranks of the MPI job (`mpirun -np K bench --workload W1-dp`; one rank
/// without mpirun). Reports the step (rank 0's clock: the job's pace) and,
/// on stderr, the medians of compute, all-reduce and update time per step
/// and the bytes one rank sends per step.
fn w1_dp(args: &Args) -> Result<Vec<Row>, String> {
    use experiments::dist::{self, StepTiming};
    use transformer::train::accumulate::{GradLayout, Micro, micro_weights};
    let world = dist::world();
    let m = args.micro_batches;
    transformer::train::accumulate::check_ranks(m, world.size())?;
    if !32usize.is_multiple_of(m) {
        return Err(format!("--micro-batches {m} must divide W1's 32 rows"));
    }
    let cfg = bench_config(1000, 256, 4, 1024, 3, 64);
    let mut trainer = Trainer::new(cfg, TrainConfig::paper(256), 0).expect("W1 config is valid");
    let mut r = rng(1234);
    let mut toks = |n: usize| {
        (0..n)
            .map(|_| r.random_range(0..1000usize))
            .collect::<Vec<_>>()
    };
    let (src, tgt_in, labels) = (toks(32 * 32), toks(32 * 32), toks(32 * 32));
    let rows = 32 / m;
    let parts: Vec<(TokenBatch, TokenBatch, Vec<usize>)> = (0..m)
        .map(|i| {
            let span = i * rows * 32..(i + 1) * rows * 32;
            (
                TokenBatch::new(src[span.clone()].to_vec(), rows, 32),
                TokenBatch::new(tgt_in[span.clone()].to_vec(), rows, 32),
                labels[span].to_vec(),
            )
        })
        .collect();
    let w = micro_weights(&vec![rows * 32; m]);
    let micros: Vec<Micro<'_>> = parts
        .iter()
        .zip(&w)
        .map(|((s, t, l), &weight)| Micro {
            src: s,
            tgt_in: t,
            labels: l,
            weight,
        })
        .collect();
    let mut timings: Vec<StepTiming> = Vec::new();
    let mut failed = None;
    let (first, mut times) = time_steps(args.warmup, args.steps, || {
        match dist::step_timed(world, &mut trainer, &micros) {
            Ok((_, t)) => timings.push(t),
            Err(e) => failed = Some(e),
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    let timed = &timings[timings.len() - args.steps..];
    let pick = |f: fn(&StepTiming) -> f64| {
        let mut v: Vec<f64> = timed.iter().map(|t| f(t) * 1e3).collect();
        median(&mut v)
    };
    let (compute, reduce, update) = (
        pick(|t| t.compute_s),
        pick(|t| t.reduce_s),
        pick(|t| t.update_s),
    );
    let bytes = GradLayout::of(&mut trainer.model).bytes();
    let label = format!(
        "W1-dp train step ({m} micro-batches, {} rank(s))",
        world.size()
    );
    if world.rank() == 0 {
        eprintln!(
            "{label}: per step (medians) compute {compute:.2} ms ({:.2} ms per micro-batch), \
             all-reduce {reduce:.2} ms, update {update:.2} ms; one gradient buffer = {bytes} bytes \
             ({:.1} MB), sent log2(K) = {} time(s) up and received as often down the tree",
            compute / (m / world.size()) as f64,
            bytes as f64 / 1e6,
            world.size().trailing_zeros()
        );
    }
    Ok(vec![model_row(
        &label,
        args,
        first,
        &mut times,
        32.0 * 32.0,
        w1_gflop(),
    )])
}

/// W2 and W3: one encoder layer, forward + sum + backward to its parameters.
fn encoder_layer(
    args: &Args,
    name: &str,
    d: usize,
    heads: usize,
    f: usize,
    b: usize,
    t: usize,
) -> Row {
    let cfg = bench_config(8, d, heads, f, 1, t);
    let layer = EncoderLayer::<f32>::new(&cfg, &Registry::builtin(), &mut rng(0));
    let x = Tensor::<f32>::randn(&[b, t, d], 0.0, 1.0, 42);
    let mut dropout_rng = rng(7);
    let (first, mut times) = time_steps(args.warmup, args.steps, || {
        let tape = Tape::new();
        let ctx = Ctx::with_rng(&tape, Mode::Train, dropout_rng.clone());
        let y = layer.forward(&ctx, tape.constant(x.clone()), None, None);
        let grads = tape.backward(y.sum_all());
        dropout_rng = ctx.into_rng();
        drop(grads);
    });
    let gflop = 3.0 * encoder_layer_flops((b * t) as f64, t as f64, d as f64, f as f64) / 1e9;
    model_row(name, args, first, &mut times, (b * t) as f64, gflop)
}

fn model_row(
    name: &str,
    args: &Args,
    first: Option<f64>,
    times: &mut [f64],
    tokens: f64,
    gflop: f64,
) -> Row {
    let med = median(times);
    let model_gflops = gflop / (med / 1e3);
    let peak = sgemm_gflops(512);
    Row {
        workload: name.to_string(),
        threads: args.threads,
        median_ms: med,
        min_ms: times.iter().copied().fold(f64::INFINITY, f64::min),
        max_ms: times.iter().copied().fold(0.0, f64::max),
        first_ms: first,
        rate: tokens / (med / 1e3),
        is_gflops: false,
        model_gflops: Some(model_gflops),
        sgemm_share: Some(model_gflops / peak),
    }
}

/// W4 timing of one product shape: one warm-up call, then 9 samples of
/// `reps` calls (a sample lasting >= 60 ms); returns (median ms per call,
/// min, max, GFLOP/s).
fn time_gemm(a: &Tensor<f32>, b: &Tensor<f32>) -> (f64, f64, f64, f64) {
    let shape = matmul_shape(a, b, Transpose::No, Transpose::No, "bench");
    let mut c = vec![0f32; numel(&shape)];
    let flops = 2.0 * (c.len() * a.shape()[a.ndim() - 1]) as f64;
    matmul_into(a, b, Transpose::No, Transpose::No, "bench", &mut c);
    let t = Instant::now();
    matmul_into(a, b, Transpose::No, Transpose::No, "bench", &mut c);
    let once = t.elapsed().as_secs_f64();
    let reps = ((0.06 / once.max(1e-9)).ceil() as usize).max(1);
    let mut samples: Vec<f64> = (0..9)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                matmul_into(a, b, Transpose::No, Transpose::No, "bench", &mut c);
            }
            t.elapsed().as_secs_f64() * 1e3 / reps as f64
        })
        .collect();
    let med = median(&mut samples);
    let (lo, hi) = (samples[0], samples[samples.len() - 1]);
    (med, lo, hi, flops / (med / 1e3) / 1e9)
}

fn sgemm_gflops(n: usize) -> f64 {
    let a = Tensor::<f32>::rand_uniform(&[n, n], -1.0, 1.0, 1);
    let b = Tensor::<f32>::rand_uniform(&[n, n], -1.0, 1.0, 2);
    time_gemm(&a, &b).3
}

fn w4(args: &Args) -> Vec<Row> {
    let mut shapes: Vec<(String, Vec<usize>, Vec<usize>)> = [128, 256, 512, 1024]
        .iter()
        .map(|&n| (format!("W4 sq{n}"), vec![n, n], vec![n, n]))
        .collect();
    shapes.push((
        "W4 attn32x64x32".into(),
        vec![32, 4, 32, 64],
        vec![32, 4, 64, 32],
    ));
    shapes
        .into_iter()
        .map(|(name, sa, sb)| {
            let a = Tensor::<f32>::rand_uniform(&sa, -1.0, 1.0, 1);
            let b = Tensor::<f32>::rand_uniform(&sb, -1.0, 1.0, 2);
            let (med, lo, hi, gflops) = time_gemm(&a, &b);
            Row {
                workload: name,
                threads: args.threads,
                median_ms: med,
                min_ms: lo,
                max_ms: hi,
                first_ms: None,
                rate: gflops,
                is_gflops: true,
                model_gflops: None,
                sgemm_share: None,
            }
        })
        .collect()
}

/// W5 (WORKLOADS.md): the W1 model in eval mode decoding exactly 32
/// tokens per source (no early stop: the end id is outside the
/// vocabulary, so every framework does the same work): greedy over 32
/// sources, beam 4 (alpha 0.6) over 8 sources; with the key/value cache
/// and, for reference, without it. One warm-up run, then the median of 5
/// (or `--steps`, if fewer); generated tokens/s.
fn w5(args: &Args) -> Vec<Row> {
    let model = Transformer::<f32>::new(&bench_config(1000, 256, 4, 1024, 3, 64), 0)
        .expect("W5 config is valid");
    let mut r = rng(1234);
    let mut sources = |n: usize| {
        let ids = (0..n * 32).map(|_| r.random_range(0..1000usize)).collect();
        TokenBatch::new(ids, n, 32) // (N, S)
    };
    let (greedy_src, beam_src) = (sources(32), sources(8));
    const BOS: usize = 1;
    const NEVER: usize = usize::MAX; // no end token: exactly 32 steps
    let runs = args.steps.min(5);
    let mut rows = Vec::new();
    let paths: &[bool] = match args.decode {
        DecodePaths::Cached => &[true],
        DecodePaths::Uncached => &[false],
        DecodePaths::Both => &[true, false],
    };
    for &cached in paths {
        let tag = if cached { "cached" } else { "uncached" };
        let mut time = |name: String, tokens: usize, run: &dyn Fn() -> usize| {
            let (first, mut times) = time_steps(1, runs, || {
                assert_eq!(run(), tokens, "W5: every hypothesis has 32 tokens");
            });
            let med = median(&mut times);
            rows.push(Row {
                workload: name,
                threads: args.threads,
                median_ms: med,
                min_ms: times[0],
                max_ms: times[times.len() - 1],
                first_ms: first,
                rate: tokens as f64 / (med / 1e3),
                is_gflops: false,
                model_gflops: None,
                sgemm_share: None,
            });
        };
        time(format!("W5 greedy {tag}"), 32 * 32, &|| {
            let hs = model.search_with(&greedy_src, cached, |step| {
                greedy(step, &[32; 32], BOS, NEVER)
            });
            hs.iter().map(|h| h.tokens.len()).sum()
        });
        // Every step scores k = 4 live hypotheses per source: 8 x 4 x 32
        // generated tokens, of which the 8 best are returned.
        time(format!("W5 beam4 {tag}"), 8 * 4 * 32, &|| {
            let hs = model.search_with(&beam_src, cached, |step| {
                beam(step, &[32; 8], BOS, NEVER, 4, 0.6)
            });
            4 * hs.iter().map(|h| h.tokens.len()).sum::<usize>()
        });
    }
    rows
}

fn markdown(rows: &[Row]) -> String {
    let mut s = String::from(
        "| workload | threads | median ms | min-max ms | first step ms | tokens/s or GFLOP/s | model GFLOP/s | share of sgemm |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in rows {
        let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or("-".into(), f);
        s += &format!(
            "| {} | {} | {:.2} | {:.2}-{:.2} | {} | {} | {} | {} |\n",
            r.workload,
            r.threads,
            r.median_ms,
            r.min_ms,
            r.max_ms,
            opt(r.first_ms, &|v| format!("{v:.1}")),
            if r.is_gflops {
                format!("{:.1} GFLOP/s", r.rate)
            } else {
                format!("{:.0} tok/s", r.rate)
            },
            opt(r.model_gflops, &|v| format!("{v:.1}")),
            opt(r.sgemm_share, &|v| format!("{:.0}%", 100.0 * v)),
        );
    }
    s
}

fn json(r: &Row) -> serde_json::Value {
    let mut o = serde_json::json!({
        "workload": r.workload,
        "threads": r.threads,
        "median_ms": r.median_ms,
        "min_ms": r.min_ms,
        "max_ms": r.max_ms,
    });
    let rate_key = if r.is_gflops {
        "gflops"
    } else {
        "tokens_per_s"
    };
    o[rate_key] = r.rate.into();
    if let Some(g) = r.model_gflops {
        o["model_gflops"] = g.into();
    }
    if let Some(s) = r.sgemm_share {
        o["sgemm_share"] = s.into();
    }
    if let Some(f) = r.first_ms {
        o["first_step_ms"] = f.into();
    }
    o
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Keep freed activation memory in the process's heap between steps (see
    // `autograd::retain_freed_memory`: W2 at 2 threads 272-303 -> 202-214
    // ms per step). A library must not change this for every program that
    // links it, so the binary opts in, first thing.
    autograd::retain_freed_memory();
    let args = Args::parse();
    let _mpi = experiments::dist::init()?;
    let quiet = experiments::dist::world().rank() != 0;
    if args.threads == 0 || args.steps == 0 {
        return Err("--threads and --steps must be at least 1".into());
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build_global()
        .map_err(|e| format!("cannot start {} rayon threads: {e}", args.threads))?;
    let all = args.workload == Workload::All;
    let mut rows = Vec::new();
    let mut emit = |batch: Vec<Row>| {
        for r in &batch {
            if quiet {
                continue;
            }
            if args.json {
                println!("{}", json(r));
            } else {
                eprintln!("{}: median {:.2} ms", r.workload, r.median_ms);
            }
        }
        rows.extend(batch);
    };
    if all || args.workload == Workload::W1 {
        emit(vec![w1(&args)]);
    }
    if all || args.workload == Workload::W2 {
        emit(vec![encoder_layer(
            &args,
            "W2 base layer",
            512,
            8,
            2048,
            8,
            128,
        )]);
    }
    if all || args.workload == Workload::W3 {
        emit(vec![encoder_layer(
            &args,
            "W3 long attn",
            256,
            4,
            1024,
            2,
            512,
        )]);
    }
    if all || args.workload == Workload::W4 {
        emit(w4(&args));
    }
    if all || args.workload == Workload::W5 {
        emit(w5(&args));
    }
    if args.workload == Workload::W1Dp {
        emit(w1_dp(&args)?);
    }
    if quiet {
        return Ok(());
    }
    let table = markdown(&rows);
    if !args.json {
        print!("{table}");
    }
    if let Some(path) = &args.markdown {
        let mut f = std::fs::File::create(path)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        f.write_all(table.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}
