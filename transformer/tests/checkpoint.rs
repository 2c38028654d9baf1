//! Checkpoints: bit-exact round trips, resuming equals not stopping, every
//! kind of bad file is its own clear error, averaging.

use std::path::{Path, PathBuf};

use autograd::{Tape, Tensor, Var};
use serde::{Deserialize, Serialize};
use transformer::checkpoint::{
    Checkpoint, CheckpointError, FORMAT_VERSION, HEADER_LEN, MAGIC, SavedTensor, TensorKind,
    average_checkpoints,
};
use transformer::optim::{Adam, clip_grad_norm};
use transformer::schedule::Schedule;
use transformer::{Ctx, Linear, Mode, Module, Rng, Visitor, named_tensors, rng};

/// A small model: Linear, ReLU, dropout, Linear, plus a buffer (a running
/// mean of the hidden activations, like BatchNorm's) so that parameters,
/// buffers and the RNG all matter for resuming.
struct Tiny {
    l1: Linear,
    l2: Linear,
    running_mean: Tensor,
}

impl Module for Tiny {
    fn visit(&mut self, v: &mut Visitor<'_>) {
        v.module("l1", &mut self.l1);
        v.module("l2", &mut self.l2);
        v.buffer("running_mean", &mut self.running_mean);
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Config {
    d_in: usize,
    hidden: usize,
    d_out: usize,
    dropout: f64,
    name: String,
}

fn config() -> Config {
    Config {
        d_in: 3,
        hidden: 8,
        d_out: 2,
        dropout: 0.3,
        name: "tiny".into(),
    }
}

impl Tiny {
    fn new(c: &Config, seed: u64) -> Self {
        let mut r = rng(seed);
        Tiny {
            l1: Linear::new(c.d_in, c.hidden, &mut r),
            l2: Linear::new(c.hidden, c.d_out, &mut r),
            running_mean: Tensor::zeros(&[c.hidden]),
        }
    }

    fn forward<'t>(&self, ctx: &Ctx<'t>, x: Var<'t>, p: f64) -> (Var<'t>, Var<'t>) {
        let h = self.l1.forward(ctx, x).relu();
        let out = self.l2.forward(ctx, ctx.dropout(h, p));
        (out, h)
    }
}

/// Everything a training run carries from step to step.
struct Run {
    model: Tiny,
    opt: Adam,
    step: u64,
    rng: Rng,
}

fn data() -> (Tensor, Tensor) {
    (
        Tensor::randn(&[6, 3], 0.0, 1.0, 11),
        Tensor::randn(&[6, 2], 0.0, 1.0, 12),
    )
}

fn train(run: &mut Run, steps: u64, c: &Config) {
    let schedule = Schedule::WarmupInvSqrt {
        peak_lr: 0.05,
        warmup: 3,
    };
    let (x, y) = data();
    for _ in 0..steps {
        let tape = Tape::new();
        let r = std::mem::replace(&mut run.rng, rng(0));
        let ctx = Ctx::with_rng(&tape, Mode::Train, r);
        let (out, h) = run.model.forward(&ctx, tape.constant(x.clone()), c.dropout);
        let diff = out - tape.constant(y.clone());
        let loss = (diff * diff).mean_all();
        let batch_mean = h.mean(0, false).value();
        let mut grads = tape.backward(loss).into_params();
        run.rng = ctx.into_rng();
        drop(tape);
        clip_grad_norm(&mut grads, 1.0);
        for (m, &b) in run
            .model
            .running_mean
            .data_mut()
            .iter_mut()
            .zip(batch_mean.data())
        {
            *m = 0.9 * *m + 0.1 * b;
        }
        run.step += 1;
        run.opt.step(&mut run.model, &grads, schedule.lr(run.step));
    }
}

fn fresh_run(seed: u64) -> Run {
    Run {
        model: Tiny::new(&config(), seed),
        opt: Adam::adamw(0.01),
        step: 0,
        rng: rng(seed + 1000),
    }
}

/// A scratch directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "transformer-ckpt-test-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn save(run: &mut Run, path: &Path) {
    Checkpoint::new(
        &mut run.model,
        Some(&run.opt),
        &config(),
        run.step,
        &run.rng,
    )
    .save(path)
    .unwrap();
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn assert_models_bit_equal(a: &mut dyn Module, b: &mut dyn Module) {
    let (ta, tb) = (named_tensors(a), named_tensors(b));
    assert_eq!(ta.len(), tb.len());
    for ((na, xa), (nb, xb)) in ta.iter().zip(&tb) {
        assert_eq!(na, nb);
        assert!(xa.bit_eq(xb), "`{na}` differs: {xa:?} vs {xb:?}");
    }
}

fn assert_optimisers_bit_equal(a: &Adam, b: &Adam) {
    assert_eq!(a.config(), b.config());
    assert_eq!(a.state().step, b.state().step);
    let (ma, mb) = (&a.state().moments, &b.state().moments);
    assert_eq!(ma.keys().collect::<Vec<_>>(), mb.keys().collect::<Vec<_>>());
    for (name, x) in ma {
        let y = &mb[name];
        assert_eq!(x.step, y.step, "{name}");
        assert_eq!(bits(&x.m), bits(&y.m), "first moment of {name}");
        assert_eq!(bits(&x.v), bits(&y.v), "second moment of {name}");
    }
}

#[test]
fn round_trip_is_bit_exact() {
    let dir = TempDir::new("round-trip");
    let mut run = fresh_run(1);
    train(&mut run, 5, &config());
    let path = dir.path("a.ckpt");
    save(&mut run, &path);

    let ckpt = Checkpoint::<Config>::load(&path).unwrap();
    assert_eq!(ckpt.config, config());
    assert_eq!(ckpt.step, 5);
    assert_eq!(ckpt.rng, run.rng);
    let names: Vec<&str> = ckpt.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "l1.weight",
            "l1.bias",
            "l2.weight",
            "l2.bias",
            "running_mean"
        ]
    );
    assert_eq!(ckpt.tensors[4].kind, TensorKind::Buffer);
    // The buffer was trained away from zero, so it really is saved.
    assert!(ckpt.tensors[4].data.iter().any(|&x| x != 0.0));
    let saved_opt = ckpt.optimizer.as_ref().unwrap();
    assert_optimisers_bit_equal(saved_opt, &run.opt);
    assert_eq!(saved_opt.state().step, 5);

    let mut fresh = Tiny::new(&config(), 77);
    ckpt.restore(&mut fresh).unwrap();
    assert_models_bit_equal(&mut fresh, &mut run.model);

    // Saving the restored state gives the very same file.
    let again = Checkpoint::new(
        &mut fresh,
        ckpt.optimizer.as_ref(),
        &ckpt.config,
        5,
        &ckpt.rng,
    );
    assert_eq!(again.to_bytes().unwrap(), std::fs::read(&path).unwrap());
}

#[test]
fn resuming_from_a_checkpoint_equals_training_straight_through() {
    let n = 6;
    let c = config();
    let mut straight = fresh_run(3);
    train(&mut straight, 2 * n, &c);

    let dir = TempDir::new("resume");
    let path = dir.path("half.ckpt");
    {
        let mut first_half = fresh_run(3);
        train(&mut first_half, n, &c);
        save(&mut first_half, &path);
    } // the first run is gone: only the file remains

    let ckpt = Checkpoint::<Config>::load(&path).unwrap();
    // A freshly constructed model (other init, other ParamIds) and optimiser.
    let mut resumed = fresh_run(999);
    ckpt.restore(&mut resumed.model).unwrap();
    resumed.opt = ckpt.optimizer.clone().unwrap();
    resumed.step = ckpt.step;
    resumed.rng = ckpt.rng.clone();
    train(&mut resumed, n, &ckpt.config);

    assert_eq!(resumed.step, straight.step);
    assert_eq!(resumed.rng, straight.rng);
    assert_models_bit_equal(&mut resumed.model, &mut straight.model);
    assert_optimisers_bit_equal(&resumed.opt, &straight.opt);

    // And the RNG state matters: resuming with a different generator does
    // not reproduce the run (dropout masks differ).
    let mut wrong = fresh_run(999);
    ckpt.restore(&mut wrong.model).unwrap();
    wrong.opt = ckpt.optimizer.clone().unwrap();
    wrong.step = ckpt.step;
    train(&mut wrong, n, &ckpt.config);
    let differs = named_tensors(&mut wrong.model)
        .iter()
        .zip(named_tensors(&mut straight.model))
        .any(|((_, a), (_, b))| !a.bit_eq(&b));
    assert!(differs);
}

/// A valid checkpoint file's bytes, for a small model with optimiser state.
fn valid_bytes() -> Vec<u8> {
    let mut run = fresh_run(5);
    train(&mut run, 2, &config());
    Checkpoint::new(
        &mut run.model,
        Some(&run.opt),
        &config(),
        run.step,
        &run.rng,
    )
    .to_bytes()
    .unwrap()
}

/// The file layout, written out independently of the library.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf29ce484222325u64;
    for &b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    h
}

fn wrap(payload: &[u8]) -> Vec<u8> {
    let mut out = b"TFMRCKPT".to_vec();
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&fnv1a64(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn load_bytes(dir: &TempDir, name: &str, bytes: &[u8]) -> CheckpointError {
    let path = dir.path(name);
    std::fs::write(&path, bytes).unwrap();
    let err = Checkpoint::<Config>::load(&path).expect_err(name);
    // Errors name the file, and say the same thing from memory.
    let msg = err.to_string();
    assert!(msg.contains(name), "{msg}");
    let from_memory = Checkpoint::<Config>::from_bytes(bytes).unwrap_err();
    assert_eq!(from_memory.to_string(), err.root().to_string());
    match err {
        CheckpointError::InFile { source, .. } => *source,
        e => panic!("expected an error naming the file, got {e:?}"),
    }
}

#[test]
fn the_file_layout_is_as_documented() {
    let bytes = valid_bytes();
    assert_eq!(&bytes[..8], &MAGIC);
    assert_eq!(bytes[8..12], FORMAT_VERSION.to_le_bytes());
    let payload = &bytes[HEADER_LEN..];
    assert_eq!(wrap(payload), bytes);
}

#[test]
fn truncated_files_are_reported_as_truncated() {
    let dir = TempDir::new("truncated");
    let bytes = valid_bytes();
    let n = bytes.len() as u64;
    match load_bytes(&dir, "cut.ckpt", &bytes[..bytes.len() - 10]) {
        CheckpointError::Truncated { expected, actual } => {
            assert_eq!((expected, actual), (n, n - 10));
        }
        e => panic!("{e:?}"),
    }
    match load_bytes(&dir, "header-only.ckpt", &bytes[..12]) {
        CheckpointError::Truncated { expected, actual } => {
            assert_eq!((expected, actual), (HEADER_LEN as u64, 12));
        }
        e => panic!("{e:?}"),
    }
    assert!(matches!(
        load_bytes(&dir, "empty.ckpt", &[]),
        CheckpointError::Truncated { actual: 0, .. }
    ));
    let msg = load_bytes(&dir, "cut2.ckpt", &bytes[..40]).to_string();
    assert!(msg.contains("truncated"), "{msg}");
    // Every prefix is an error, never a panic.
    for len in 0..bytes.len() {
        assert!(Checkpoint::<Config>::from_bytes(&bytes[..len]).is_err());
    }
    // One byte too many is an error too.
    let mut long = bytes.clone();
    long.push(0);
    assert!(matches!(
        load_bytes(&dir, "long.ckpt", &long),
        CheckpointError::TrailingBytes { .. }
    ));
}

#[test]
fn a_flipped_bit_in_the_payload_fails_the_checksum() {
    let dir = TempDir::new("bitflip");
    let bytes = valid_bytes();
    let mut bad = bytes.clone();
    let i = HEADER_LEN + (bytes.len() - HEADER_LEN) / 2;
    bad[i] ^= 0x10;
    let err = load_bytes(&dir, "flipped.ckpt", &bad);
    assert!(
        matches!(err, CheckpointError::ChecksumMismatch { stored, computed } if stored != computed),
        "{err:?}"
    );
    assert!(err.to_string().contains("checksum"));

    // Every single-bit flip anywhere in the file (header included) is an
    // error, never a panic or a silently different checkpoint.
    for byte in 0..bytes.len() {
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[byte] ^= 1 << bit;
            assert!(
                Checkpoint::<Config>::from_bytes(&b).is_err(),
                "flip of bit {bit} of byte {byte} went unnoticed"
            );
        }
    }
}

#[test]
fn wrong_magic_is_not_a_checkpoint() {
    let dir = TempDir::new("magic");
    let mut bytes = valid_bytes();
    bytes[..8].copy_from_slice(b"PK\x03\x04zip!");
    let err = load_bytes(&dir, "zip.ckpt", &bytes);
    assert!(
        matches!(&err, CheckpointError::NotACheckpoint { found } if found.starts_with(b"PK")),
        "{err:?}"
    );
    assert!(err.to_string().contains("not a checkpoint"));
    // A short text file is not a checkpoint either (rather than "truncated").
    assert!(matches!(
        load_bytes(&dir, "text.ckpt", b"hello\n"),
        CheckpointError::NotACheckpoint { .. }
    ));
}

#[test]
fn wrong_version_is_reported_with_both_versions() {
    let dir = TempDir::new("version");
    let mut bytes = valid_bytes();
    bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
    let err = load_bytes(&dir, "v1.ckpt", &bytes);
    assert!(
        matches!(
            err,
            CheckpointError::UnsupportedVersion {
                found: 1,
                supported: FORMAT_VERSION
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("version 2"));
}

#[test]
fn a_huge_length_in_the_header_is_truncation_not_an_allocation() {
    let dir = TempDir::new("huge-header");
    let mut bytes = valid_bytes();
    let actual = bytes.len() as u64;
    bytes[12..20].copy_from_slice(&(1u64 << 60).to_le_bytes());
    match load_bytes(&dir, "huge.ckpt", &bytes) {
        CheckpointError::Truncated {
            expected,
            actual: a,
        } => {
            assert_eq!(expected, HEADER_LEN as u64 + (1 << 60));
            assert_eq!(a, actual);
        }
        e => panic!("{e:?}"),
    }
    bytes[12..20].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        load_bytes(&dir, "max.ckpt", &bytes),
        CheckpointError::Truncated { .. }
    ));
}

#[test]
fn a_huge_length_inside_a_valid_payload_hits_the_decode_limit() {
    let dir = TempDir::new("huge-payload");
    // Checkpoint<String>: the config comes first, so the payload starts with
    // the string's length; bincode's varint 253 announces a u64. The
    // checksum is valid: only the decoder's size limit stands in the way.
    let mut payload = vec![253u8];
    payload.extend_from_slice(&(1u64 << 40).to_le_bytes());
    let bytes = wrap(&payload);
    let path = dir.path("hostile.ckpt");
    std::fs::write(&path, &bytes).unwrap();
    let err = Checkpoint::<String>::load(&path).unwrap_err();
    assert!(
        matches!(err.root(), CheckpointError::LimitExceeded { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("hostile"), "{err}");

    // A huge element count for the tensor list: a valid checkpoint without
    // tensors or optimiser ends with [len(tensors) = 0, None = 0].
    let empty: Checkpoint<u32> = Checkpoint {
        config: 7,
        step: 1,
        rng: rng(0),
        tensors: Vec::new(),
        optimizer: None,
    };
    let good = empty.to_bytes().unwrap();
    let mut payload = good[HEADER_LEN..good.len() - 2].to_vec();
    payload.push(253);
    payload.extend_from_slice(&(1u64 << 58).to_le_bytes());
    payload.push(0);
    let err = Checkpoint::<u32>::from_bytes(&wrap(&payload)).unwrap_err();
    assert!(
        matches!(
            err,
            CheckpointError::Decode(_) | CheckpointError::LimitExceeded { .. }
        ),
        "{err:?}"
    );

    // A tensor whose data claims 2^50 floats.
    let one = Checkpoint::<u32> {
        tensors: vec![SavedTensor {
            name: "w".into(),
            kind: TensorKind::Param,
            shape: vec![1],
            data: vec![1.5],
        }],
        ..empty.clone()
    };
    let good = one.to_bytes().unwrap();
    let payload = &good[HEADER_LEN..];
    // ... name, kind, shape [1], then data: len 1 and the 4 bytes of 1.5f32.
    let data_at = payload.len() - 1 - 4 - 1;
    assert_eq!(payload[data_at], 1);
    let mut hostile = payload[..data_at].to_vec();
    hostile.push(253);
    hostile.extend_from_slice(&(1u64 << 50).to_le_bytes());
    hostile.extend_from_slice(&payload[data_at + 1..]);
    assert!(Checkpoint::<u32>::from_bytes(&wrap(&hostile)).is_err());
}

#[test]
fn a_decodable_but_inconsistent_payload_is_corrupt() {
    let bad = Checkpoint::<u32> {
        config: 0,
        step: 0,
        rng: rng(0),
        tensors: vec![SavedTensor {
            name: "w".into(),
            kind: TensorKind::Param,
            shape: vec![1000, 1000],
            data: vec![0.0; 2],
        }],
        optimizer: None,
    };
    let err = Checkpoint::<u32>::from_bytes(&bad.to_bytes().unwrap()).unwrap_err();
    assert!(
        matches!(&err, CheckpointError::Corrupt(m) if m.contains("`w`")),
        "{err:?}"
    );
}

#[test]
fn a_checkpoint_of_another_config_type_does_not_decode() {
    let bytes = valid_bytes();
    let err = Checkpoint::<(u8, bool)>::from_bytes(&bytes).unwrap_err();
    assert!(matches!(err, CheckpointError::Decode(_)), "{err:?}");
}

#[test]
fn restoring_into_a_different_model_reports_the_first_mismatch_and_writes_nothing() {
    let mut run = fresh_run(1);
    let ckpt = Checkpoint::new(&mut run.model, None, &config(), 0, &run.rng);

    let wider = Config {
        hidden: 9,
        ..config()
    };
    let mut other = Tiny::new(&wider, 2);
    let before = named_tensors(&mut other);
    let err = ckpt.restore(&mut other).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, CheckpointError::Mismatch(_)));
    assert!(
        msg.contains("l1.weight") && msg.contains("[3, 8]") && msg.contains("[3, 9]"),
        "{msg}"
    );
    for ((_, a), (_, b)) in before.iter().zip(named_tensors(&mut other)) {
        assert!(a.bit_eq(&b), "a failed restore wrote into the model");
    }

    // A parameter saved where the model has a buffer (and vice versa).
    struct AsBuffer(Tensor);
    impl Module for AsBuffer {
        fn visit(&mut self, v: &mut Visitor<'_>) {
            v.buffer("weight", &mut self.0);
        }
    }
    let mut lin = Linear::<f32>::without_bias(2, 2, &mut rng(0));
    let c = Checkpoint::new(&mut lin, None, &(), 0, &rng(0));
    let msg = c
        .restore(&mut AsBuffer(Tensor::zeros(&[2, 2])))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("parameter") && msg.contains("buffer"), "{msg}");

    // Missing from the checkpoint / missing from the model.
    let mut with_bias = Linear::<f32>::new(2, 2, &mut rng(0));
    let msg = c.restore(&mut with_bias).unwrap_err().to_string();
    assert!(
        msg.contains("`bias`") && msg.contains("not in the checkpoint"),
        "{msg}"
    );
    let c_bias = Checkpoint::new(&mut with_bias, None, &(), 0, &rng(0));
    let msg = c_bias.restore(&mut lin).unwrap_err().to_string();
    assert!(
        msg.contains("`bias`") && msg.contains("not in the model"),
        "{msg}"
    );

    // Optimiser state of another model.
    let mut trained = fresh_run(1);
    train(&mut trained, 1, &config());
    let mut c = Checkpoint::new(&mut lin, None, &(), 0, &rng(0));
    c.optimizer = Some(trained.opt.clone());
    let msg = c.restore(&mut lin).unwrap_err().to_string();
    assert!(msg.contains("optimiser state"), "{msg}");
}

#[test]
fn saving_is_atomic_and_leaves_no_temporary_files() {
    let dir = TempDir::new("atomic");
    let path = dir.path("model.ckpt");
    let mut run = fresh_run(1);
    save(&mut run, &path);
    train(&mut run, 1, &config());
    save(&mut run, &path); // replaces the file
    assert_eq!(Checkpoint::<Config>::load(&path).unwrap().step, 1);
    let files: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files, ["model.ckpt"]);

    // A directory that does not exist is an I/O error naming the file.
    let nowhere = dir.path("missing-dir").join("x.ckpt");
    let err = Checkpoint::new(&mut run.model, None, &config(), 0, &run.rng)
        .save(&nowhere)
        .unwrap_err();
    assert!(matches!(err, CheckpointError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("missing-dir"), "{err}");
}

#[test]
fn averaging_three_checkpoints_gives_the_mean() {
    let dir = TempDir::new("average");
    let mut run = fresh_run(4);
    let mut paths = Vec::new();
    let mut snapshots = Vec::new();
    for i in 0..3 {
        train(&mut run, 2, &config());
        let p = dir.path(&format!("step{i}.ckpt"));
        save(&mut run, &p);
        paths.push(p);
        snapshots.push(named_tensors(&mut run.model));
    }
    let avg = average_checkpoints::<Config, _>(&paths).unwrap();
    assert_eq!(avg.step, 6);
    assert_eq!(avg.rng, run.rng);
    assert!(avg.optimizer.is_none());
    assert_eq!(avg.tensors.len(), snapshots[0].len());
    for (k, t) in avg.tensors.iter().enumerate() {
        assert_eq!(t.name, snapshots[0][k].0);
        for (j, &x) in t.data.iter().enumerate() {
            let (a, b, c) = (
                snapshots[0][k].1.data()[j] as f64,
                snapshots[1][k].1.data()[j] as f64,
                snapshots[2][k].1.data()[j] as f64,
            );
            let mean = ((a + b + c) / 3.0) as f32;
            assert_eq!(x.to_bits(), mean.to_bits(), "{}[{j}]", t.name);
        }
    }
    // The average restores into the model like any checkpoint.
    let mut model = Tiny::new(&config(), 0);
    avg.restore(&mut model).unwrap();

    // Mismatched checkpoints are refused, naming both files.
    let mut other = Tiny::new(
        &Config {
            hidden: 4,
            ..config()
        },
        0,
    );
    let odd = dir.path("odd.ckpt");
    Checkpoint::new(&mut other, None, &config(), 0, &rng(0))
        .save(&odd)
        .unwrap();
    let err = average_checkpoints::<Config, _>(&[paths[0].clone(), odd]).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, CheckpointError::Mismatch(_)));
    assert!(
        msg.contains("odd.ckpt") && msg.contains("step0.ckpt") && msg.contains("l1.weight"),
        "{msg}"
    );

    assert!(matches!(
        average_checkpoints::<Config, PathBuf>(&[]),
        Err(CheckpointError::NoCheckpoints)
    ));
    // A bad file among them is reported as such.
    let junk = dir.path("junk.ckpt");
    std::fs::write(&junk, b"junk").unwrap();
    let err = average_checkpoints::<Config, _>(&[paths[0].clone(), junk]).unwrap_err();
    assert!(
        matches!(err.root(), CheckpointError::NotACheckpoint { .. }),
        "{err:?}"
    );
}
