//! Whole-trainer determinism (issue 10, "keep it from coming back"): the
//! real `Trainer`, with dropout and clipping, gives bit-identical runs on 1,
//! 2, 3 and 4 threads (a tiny model, and one big enough for the kernels'
//! parallel branches, recording attention or not: issue 13), and a run saved, resumed in a *new process* and
//! continued equals the uninterrupted one. Configs from outside reject
//! unknown keys.

use std::path::{Path, PathBuf};
use std::process::Command;

use autograd::Tape;
use transformer::synthetic::{COPY_VOCAB, Seq2SeqBatch, copy_batch};
use transformer::{
    Ctx, Mode, ModelConfig, NamedTensors, TrainConfig, Trainer, clip_grad_norm, named_tensors, rng,
};

/// A trainer for `model` with clipping at 0.5 (it bites on a fresh model)
/// and the paper's schedule for width `d_model`.
fn trainer(model: ModelConfig, d_model: usize, seed: u64) -> Trainer {
    let train = TrainConfig {
        clip_norm: Some(0.5),
        ..TrainConfig::paper(d_model)
    };
    Trainer::new(model, train, seed).unwrap()
}

/// `n` copy-task batches of `batch` sentences of `min_len..=max_len` tokens.
fn copy_batches(
    seed: u64,
    n: usize,
    batch: usize,
    min_len: usize,
    max_len: usize,
) -> Vec<Seq2SeqBatch> {
    let mut r = rng(seed);
    (0..n)
        .map(|_| copy_batch(&mut r, batch, min_len, max_len, COPY_VOCAB))
        .collect()
}

fn fresh() -> Trainer {
    let model = ModelConfig {
        dropout: 0.1,
        attention_dropout: 0.1,
        ..ModelConfig::tiny(COPY_VOCAB, COPY_VOCAB)
    };
    trainer(model, 32, 11)
}

fn batches() -> Vec<Seq2SeqBatch> {
    copy_batches(12, 6, 8, 2, 9)
}

/// Named tensors as bits.
type Bits = Vec<(String, Vec<u32>)>;

/// Every tensor's bits, the step, and the losses of the steps run.
type Fingerprint = (Bits, u64, Vec<u32>);

fn fingerprint(t: &mut Trainer, losses: Vec<u32>) -> Fingerprint {
    let tensors = named_tensors(&mut t.model)
        .into_iter()
        .map(|(n, v)| (n, v.data().iter().map(|x| x.to_bits()).collect()))
        .collect();
    (tensors, t.step, losses)
}

fn run(t: &mut Trainer, batches: &[Seq2SeqBatch]) -> Vec<u32> {
    batches
        .iter()
        .map(|b| t.step(&b.src, &b.tgt_in, &b.labels).loss.to_bits())
        .collect()
}

#[test]
fn the_trainer_is_bit_identical_on_1_2_3_and_4_threads() {
    let data = batches();
    let prints: Vec<Fingerprint> = [1, 2, 3, 4]
        .into_iter()
        .map(|threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| {
                    let mut t = fresh();
                    let losses = run(&mut t, &data);
                    fingerprint(&mut t, losses)
                })
        })
        .collect();
    assert!(prints[0] == prints[1], "1 vs 2 threads differ");
    assert!(prints[0] == prints[2], "1 vs 3 threads differ");
    assert!(prints[0] == prints[3], "1 vs 4 threads differ");
}

const IN_VAR: &str = "TFMR_RESUME_IN";
const OUT_VAR: &str = "TFMR_RESUME_OUT";

/// The child: resumes the checkpoint it is given, runs the second half of
/// the batches, saves.
#[test]
#[ignore = "run by a_run_resumed_in_a_new_process_equals_the_uninterrupted_one as a child"]
fn child_resumes_and_continues() {
    let (Ok(input), Ok(output)) = (std::env::var(IN_VAR), std::env::var(OUT_VAR)) else {
        return;
    };
    let mut t = Trainer::resume(&input).unwrap();
    let losses = run(&mut t, &batches()[3..]);
    t.save(&output).unwrap();
    let text: Vec<String> = losses.iter().map(u32::to_string).collect();
    std::fs::write(Path::new(&output).with_extension("losses"), text.join(" ")).unwrap();
}

#[test]
fn a_run_resumed_in_a_new_process_equals_the_uninterrupted_one() {
    let dir: PathBuf = std::env::temp_dir().join(format!("tfmr-det-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (half, end) = (dir.join("half.ckpt"), dir.join("end.ckpt"));
    let data = batches();
    let mut straight = fresh();
    let mut losses = run(&mut straight, &data[..3]);
    straight.save(&half).unwrap();
    losses.extend(run(&mut straight, &data[3..]));

    let status = Command::new(std::env::current_exe().unwrap())
        .args(["child_resumes_and_continues", "--exact", "--ignored"])
        .env(IN_VAR, &half)
        .env(OUT_VAR, &end)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "the child failed");
    let mut resumed = Trainer::resume(&end).unwrap();
    let child_losses: Vec<u32> = std::fs::read_to_string(end.with_extension("losses"))
        .unwrap()
        .split(' ')
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(child_losses, losses[3..]);
    assert!(fingerprint(&mut resumed, vec![]) == fingerprint(&mut straight, vec![]));
    assert_eq!(resumed.opt, straight.opt);
    assert_eq!(resumed.rng, straight.rng);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn configs_from_outside_reject_unknown_keys() {
    let mut model = serde_json::to_value(ModelConfig::tiny(8, 8)).unwrap();
    model["nrom"] = "batch".into();
    let err = serde_json::from_value::<ModelConfig>(model)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `nrom`"), "{err}");

    let mut train = serde_json::to_value(TrainConfig::paper(32)).unwrap();
    train["smothing"] = 0.1.into();
    let err = serde_json::from_value::<TrainConfig>(train)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `smothing`"), "{err}");

    let mut train = serde_json::to_value(TrainConfig::paper(32)).unwrap();
    train["optimizer"]["beta3"] = 0.5.into();
    let err = serde_json::from_value::<TrainConfig>(train)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `beta3`"), "{err}");

    let mut train = serde_json::to_value(TrainConfig::paper(32)).unwrap();
    let variant = train["schedule"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    train["schedule"][variant.as_str()]["warmpu"] = 10.into();
    let err = serde_json::from_value::<TrainConfig>(train)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `warmpu`"), "{err}");
}

/// A model big enough for the parallel branches of the kernels (issue 13):
/// 32 sentences of up to 12 tokens give about 400 rows, so the feed-forward
/// activations (rows x 256) exceed `PAR_MIN` (2^15 elements) and its
/// matmuls `GEMM_PAR_MIN_FLOPS` (2^21 multiply-adds), where the tiny model
/// above stays below both. Dropout everywhere but on the attention weights,
/// so the fused attention op runs in training (attention dropout takes the
/// composed path), and clipping that bites (the gradient norm of a fresh
/// model is above 0.5).
fn fresh_big() -> Trainer {
    let model = ModelConfig {
        d_model: 64,
        heads: 4,
        d_ff: 256,
        dropout: 0.1,
        attention_dropout: 0.0,
        ffn_dropout: 0.1,
        ..ModelConfig::tiny(COPY_VOCAB, COPY_VOCAB)
    };
    trainer(model, 64, 21)
}

fn big_batches() -> Vec<Seq2SeqBatch> {
    copy_batches(22, 3, 32, 8, 12)
}

/// `Trainer::step` written out from the public pieces, with the context
/// asked to keep the attention weights: the model then runs the composed
/// attention path (`forward_with_weights`), not the fused op. Returns the
/// step's statistics as bits (loss, learning rate, gradient norm) and the
/// recorded weights.
fn step_recording_attention(t: &mut Trainer, b: &Seq2SeqBatch) -> (Vec<u64>, NamedTensors<f32>) {
    let tape = Tape::new();
    let rng = std::mem::replace(&mut t.rng, transformer::rng(0));
    let ctx = Ctx::with_rng(&tape, Mode::Train, rng);
    ctx.keep_attention();
    let logits = t.model.forward(&ctx, &b.src, &b.tgt_in); // (B, T, V)
    let loss = t.model.loss(logits, &b.labels, t.config.smoothing);
    let loss_value = loss.value().item();
    let mut grads = tape.backward(loss).into_params();
    let attention = ctx.take_attention();
    t.rng = ctx.into_rng();
    drop(tape);
    let norm = clip_grad_norm(&mut grads, t.config.clip_norm.unwrap());
    t.step += 1;
    let lr = t.config.schedule.lr(t.step);
    t.opt.step(&mut t.model, &grads, lr);
    let stats = vec![
        u64::from(loss_value.to_bits()),
        lr.to_bits(),
        u64::from(norm.to_bits()),
    ];
    (stats, attention)
}

/// The fingerprint of a few steps of the big model, recording attention or
/// not, plus the recorded weights' bits.
fn big_run(record: bool) -> (Fingerprint, Vec<u64>, Bits) {
    let mut t = fresh_big();
    let (mut losses, mut stats, mut weights) = (vec![], vec![], vec![]);
    for b in &big_batches() {
        if record {
            let (s, w) = step_recording_attention(&mut t, b);
            losses.push(s[0] as u32);
            stats.extend(s);
            weights.extend(
                w.into_iter()
                    .map(|(n, v)| (n, v.data().iter().map(|x| x.to_bits()).collect())),
            );
        } else {
            let s = t.step(&b.src, &b.tgt_in, &b.labels);
            losses.push(s.loss.to_bits());
            stats.extend([
                u64::from(s.loss.to_bits()),
                s.lr.to_bits(),
                u64::from(s.grad_norm.to_bits()),
            ]);
        }
    }
    (fingerprint(&mut t, losses), stats, weights)
}

/// A few `Trainer::step`s of the big model (fused attention, dropout,
/// clipping) and the same steps with the attention weights recorded
/// (composed attention), each bit-identical on 1, 2 and 3 threads:
/// parameters, Adam's step, losses, learning rates, gradient norms and the
/// recorded weights. 3 threads move every thread-dependent block boundary.
#[test]
fn the_big_trainer_is_bit_identical_on_1_2_3_and_4_threads_recording_attention_or_not() {
    let mut first_steps = vec![];
    for record in [false, true] {
        let runs: Vec<_> = [1, 2, 3, 4]
            .into_iter()
            .map(|threads| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap()
                    .install(|| big_run(record))
            })
            .collect();
        if record {
            // 3 steps x (2 self-attentions + 1 cross-attention), each (B, H, Tq, Tk).
            assert_eq!(runs[0].2.len(), 9);
        }
        first_steps.push(runs[0].1[..3].to_vec());
        for (threads, r) in [2, 3, 4].into_iter().zip(&runs[1..]) {
            assert!(
                r.0 == runs[0].0,
                "record {record}: parameters or losses differ between 1 and {threads} threads"
            );
            assert_eq!(
                r.1, runs[0].1,
                "record {record}: loss, lr or grad norm differ (1 vs {threads} threads)"
            );
            assert!(
                r.2 == runs[0].2,
                "record {record}: recorded attention differs between 1 and {threads} threads"
            );
        }
    }
    // The written-out step is `Trainer::step` but for the attention path:
    // same learning rate, loss and gradient norm up to f32 rounding.
    let (plain, recorded) = (&first_steps[0], &first_steps[1]);
    let f = |bits: u64| f64::from(f32::from_bits(bits as u32));
    assert_eq!(plain[1], recorded[1], "learning rate");
    for (i, what) in [(0, "loss"), (2, "gradient norm")] {
        let (a, b) = (f(plain[i]), f(recorded[i]));
        assert!((a - b).abs() <= 1e-5 * a.abs(), "{what}: {a} vs {b}");
    }
}
