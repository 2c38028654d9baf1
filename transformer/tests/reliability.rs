//! Issue 10 (reliability): hostile configs and checkpoints, invalid training
//! settings, checkpoints through symbolic links and from non-regular files.
//! Each test here failed (or aborted the process) before its fix.

use std::path::PathBuf;

use transformer::checkpoint::{Checkpoint, CheckpointError};
use transformer::model::limits;
use transformer::optim::Adam;
use transformer::schedule::Schedule;
use transformer::synthetic::{COPY_VOCAB, copy_batch};
use transformer::{
    ModelConfig, Placement, TokenBatch, TrainConfig, Trainer, Transformer, Tying, beam,
    param_count, rng,
};

/// A scratch directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("tfmr-rel-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The hostile configs of the issue: each used to end in `memory
/// allocation of ... bytes failed` (SIGABRT) or `capacity overflow`.
fn hostile_configs() -> Vec<(&'static str, ModelConfig)> {
    let c = ModelConfig::tiny(COPY_VOCAB, COPY_VOCAB);
    vec![
        (
            "src_vocab",
            ModelConfig {
                src_vocab: 1 << 40,
                tgt_vocab: 1 << 40,
                ..c.clone()
            },
        ),
        (
            "max_len",
            ModelConfig {
                max_len: 1 << 40,
                ..c.clone()
            },
        ),
        (
            "d_ff",
            ModelConfig {
                d_ff: 1 << 40,
                ..c.clone()
            },
        ),
        (
            "d_model",
            ModelConfig {
                d_model: 1 << 33,
                ..c.clone()
            },
        ),
        (
            "encoder_layers",
            ModelConfig {
                encoder_layers: 1 << 40,
                ..c.clone()
            },
        ),
        (
            "src_vocab",
            ModelConfig {
                src_vocab: usize::MAX,
                tying: Tying::Output,
                ..c.clone()
            },
        ),
        // Every size within its bound, the whole model far above 2^30 numbers.
        (
            "numbers",
            ModelConfig {
                d_model: 1 << 14,
                d_ff: 1 << 18,
                encoder_layers: 64,
                heads: 16,
                ..c.clone()
            },
        ),
    ]
}

#[test]
fn hostile_configs_are_errors_naming_the_field_not_aborts() {
    for (field, cfg) in hostile_configs() {
        let err = Transformer::<f32>::new(&cfg, 0).err().expect(field);
        assert!(
            err.contains(field) && err.contains("maximum"),
            "{field}: {err}"
        );
        let err = cfg.validate().unwrap_err();
        assert!(err.contains(field), "{field}: {err}");
    }
    // The bounds themselves are accepted where the model stays small.
    let at_bounds = ModelConfig {
        max_len: limits::MAX_LEN,
        positional: "none".into(),
        encoder_layers: 2,
        ..ModelConfig::tiny(10, 10)
    };
    assert_eq!(at_bounds.validate(), Ok(()));
}

/// A valid file (header, checksum) whose stored config is hostile.
fn write_checkpoint(dir: &TempDir, name: &str, cfg: &ModelConfig) -> PathBuf {
    let mut small = Transformer::<f32>::new(&ModelConfig::tiny(COPY_VOCAB, COPY_VOCAB), 0).unwrap();
    let path = dir.path(name);
    let config = (cfg.clone(), TrainConfig::paper(32));
    Checkpoint::new(&mut small, Some(&Adam::paper()), &config, 1, &rng(0))
        .save(&path)
        .unwrap();
    path
}

#[test]
fn a_checkpoint_with_a_hostile_config_is_an_error_naming_field_and_file() {
    let dir = TempDir::new("hostile");
    for (i, (field, cfg)) in hostile_configs().into_iter().enumerate() {
        let path = write_checkpoint(&dir, &format!("hostile{i}.ckpt"), &cfg);
        let err = Trainer::resume(&path).err().expect(field).to_string();
        assert!(err.contains(field), "{field}: {err}");
        assert!(err.contains(&format!("hostile{i}.ckpt")), "{err}");
    }
}

#[test]
fn a_config_larger_than_the_stored_tensors_is_refused_before_building() {
    // Within every bound (about 2^27 numbers: it would build), but the file
    // holds the tensors of a tiny model only.
    let big = ModelConfig {
        d_model: 512,
        d_ff: 1 << 17,
        ..ModelConfig::tiny(COPY_VOCAB, COPY_VOCAB)
    };
    assert_eq!(big.validate(), Ok(()));
    let dir = TempDir::new("larger");
    let path = write_checkpoint(&dir, "big.ckpt", &big);
    let err = Trainer::resume(&path).err().expect("must fail");
    assert!(matches!(err.root(), CheckpointError::Corrupt(_)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("at least") && msg.contains("stores only"),
        "{msg}"
    );
    assert!(msg.contains("big.ckpt"), "{msg}");
}

#[test]
fn builtin_param_count_is_exact_for_every_builtin_wiring() {
    for tying in [Tying::None, Tying::Output, Tying::All] {
        for positional in ["sinusoidal", "learned", "none"] {
            for (norm, placement) in [
                ("layer", Placement::Post),
                ("batch", Placement::Pre),
                ("none", Placement::Pre),
            ] {
                let c = ModelConfig {
                    tying,
                    positional: positional.into(),
                    norm: norm.into(),
                    placement,
                    feed_forward: "gelu".into(),
                    ..ModelConfig::tiny(12, 12)
                };
                let mut m = Transformer::<f32>::new(&c, 0).unwrap();
                assert_eq!(
                    c.builtin_param_count(),
                    param_count(&mut m) as u128,
                    "{c:?}"
                );
            }
        }
    }
}

#[test]
fn invalid_training_settings_fail_at_construction_naming_the_field() {
    let model = ModelConfig::tiny(COPY_VOCAB, COPY_VOCAB);
    let base = TrainConfig::paper(32);
    let cases = [
        (
            "clip_norm",
            TrainConfig {
                clip_norm: Some(0.0),
                ..base.clone()
            },
        ),
        (
            "clip_norm",
            TrainConfig {
                clip_norm: Some(f32::NAN),
                ..base.clone()
            },
        ),
        (
            "clip_norm",
            TrainConfig {
                clip_norm: Some(-1.0),
                ..base.clone()
            },
        ),
        (
            "smoothing",
            TrainConfig {
                smoothing: f64::NAN,
                ..base.clone()
            },
        ),
        (
            "smoothing",
            TrainConfig {
                smoothing: 1.0,
                ..base.clone()
            },
        ),
        (
            "smoothing",
            TrainConfig {
                smoothing: -0.1,
                ..base.clone()
            },
        ),
        (
            "lr",
            TrainConfig {
                schedule: Schedule::Constant { lr: f64::NAN },
                ..base.clone()
            },
        ),
        (
            "lr",
            TrainConfig {
                schedule: Schedule::Constant { lr: -1e-3 },
                ..base.clone()
            },
        ),
    ];
    for (field, train) in cases {
        let err = train.validate().unwrap_err();
        assert!(err.contains(field), "{field}: {err}");
        let err = Trainer::new(model.clone(), train, 0).err().expect(field);
        assert!(err.contains(field), "{field}: {err}");
    }
    assert_eq!(base.validate(), Ok(()));
}

#[test]
#[should_panic(expected = "beam: length-penalty alpha = NaN must be finite")]
fn beam_search_with_a_nan_alpha_panics_naming_it() {
    let mut step = |_: &[usize], rows: &[Vec<usize>]| vec![vec![-1.0f32; 4]; rows.len()];
    let _ = beam(&mut step, &[3], 1, 2, 2, f64::NAN);
}

#[cfg(unix)]
#[test]
fn saving_through_a_symbolic_link_updates_its_target_and_keeps_the_link() {
    let dir = TempDir::new("symlink");
    let cfg = ModelConfig::tiny(COPY_VOCAB, COPY_VOCAB);
    let mut t = Trainer::new(cfg, TrainConfig::paper(32), 0).unwrap();
    let target = dir.path("step-0.ckpt");
    t.save(&target).unwrap();
    let link = dir.path("latest");
    std::os::unix::fs::symlink("step-0.ckpt", &link).unwrap();
    let b = copy_batch(&mut rng(1), 4, 2, 5, COPY_VOCAB);
    t.step(&b.src, &b.tgt_in, &b.labels);
    t.save(&link).unwrap();
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        Trainer::resume(&target).unwrap().step,
        1,
        "the target holds the new state"
    );
    assert_eq!(Trainer::resume(&link).unwrap().step, 1);
    // No temporary file is left next to the link or the target.
    let left: Vec<String> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Opening a FIFO for reading used to block forever: the test runs the load
/// on a thread and fails (instead of hanging) if it does not return.
#[cfg(unix)]
#[test]
fn loading_a_fifo_or_a_directory_is_a_clean_error_not_a_hang() {
    let dir = TempDir::new("fifo");
    let fifo = dir.path("pipe.ckpt");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo failed");
    for path in [fifo, dir.0.clone()] {
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        std::thread::spawn(move || {
            let _ = tx.send(Trainer::resume(&p).err().map(|e| e.to_string()));
        });
        let err = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("loading {} hangs", path.display()))
            .expect("must fail");
        assert!(err.contains("not a regular file"), "{err}");
    }
}

// Finding 3: empty sequences used to panic with `chunk size must be
// non-zero` (attention over no keys) or a bare slice index.

#[test]
fn an_empty_source_is_like_a_source_of_padding_only() {
    let m = Transformer::<f64>::new(&ModelConfig::tiny(10, 10), 3).unwrap();
    let logits = |src: &TokenBatch| {
        let tape = autograd::Tape::no_grad();
        let ctx = transformer::Ctx::eval(&tape);
        let tgt = TokenBatch::padded(&[vec![1, 4], vec![1]], 0);
        m.forward(&ctx, src, &tgt).value()
    };
    let empty = logits(&TokenBatch::padded(&[vec![], vec![]], 0)); // (2, 0)
    let padding = logits(&TokenBatch::padded(&[vec![0], vec![0]], 0)); // (2, 1), all padding
    assert_eq!(empty.shape(), &[2, 2, 10]);
    assert!(empty.data().iter().all(|x| x.is_finite()));
    assert!(empty.allclose(&padding, 1e-12, 1e-12));
    // Decoding an empty source runs too (to the length limit, 0 + 50).
    let m32 = Transformer::<f32>::new(&ModelConfig::tiny(10, 10), 3).unwrap();
    let out = m32.greedy_decode(&TokenBatch::padded(&[vec![], vec![]], 0), 1, 2);
    assert_eq!(out.len(), 2);
    assert!(
        out.iter()
            .all(|h| h.tokens.len() <= 50 && h.log_prob.is_finite())
    );
}

#[test]
fn an_empty_decoder_input_gives_empty_logits() {
    let m = Transformer::<f32>::new(&ModelConfig::tiny(10, 10), 3).unwrap();
    let tape = autograd::Tape::no_grad();
    let ctx = transformer::Ctx::eval(&tape);
    let src = TokenBatch::padded(&[vec![3, 4], vec![5]], 0);
    let y = m.forward(&ctx, &src, &TokenBatch::padded(&[vec![], vec![]], 0));
    assert_eq!(y.shape(), vec![2, 0, 10]);
}

#[test]
#[should_panic(expected = "Transformer: the source batch is empty ((B, T) = (0, 0))")]
fn an_empty_batch_panics_naming_it() {
    let m = Transformer::<f32>::new(&ModelConfig::tiny(10, 10), 3).unwrap();
    let tape = autograd::Tape::no_grad();
    let empty = TokenBatch::padded(&[], 0);
    m.forward(&transformer::Ctx::eval(&tape), &empty, &empty);
}

#[test]
fn attention_over_no_keys_gives_zeros_and_zero_gradients() {
    let tape = autograd::Tape::<f64>::new();
    let q = tape.leaf(autograd::Tensor::ones(&[2, 3, 4])); // (B, Tq, D)
    let kv = tape.leaf(autograd::Tensor::zeros(&[2, 0, 4])); // (B, 0, D)
    let y = q.attention(kv, kv, 2, None);
    assert_eq!(y.value(), autograd::Tensor::zeros(&[2, 3, 4]));
    let g = tape.backward(y.sum_all());
    assert_eq!(g.wrt(q), &autograd::Tensor::zeros(&[2, 3, 4]));
    assert_eq!(g.wrt(kv).shape(), &[2, 0, 4]);
}

// Finding 7: a learning rate of 1e6 drove the loss to 1e13 without a word.

#[test]
fn a_diverging_run_is_reported_with_its_step() {
    let run = |lr: f64, steps: usize| {
        let train = TrainConfig {
            schedule: Schedule::Constant { lr },
            ..TrainConfig::paper(32)
        };
        let mut t = Trainer::new(ModelConfig::tiny(COPY_VOCAB, COPY_VOCAB), train, 0).unwrap();
        let mut data = rng(4);
        let mut flagged = Vec::new();
        for _ in 0..steps {
            let b = copy_batch(&mut data, 8, 2, 6, COPY_VOCAB);
            let s = t.step(&b.src, &b.tgt_in, &b.labels);
            if let Some(d) = s.divergence {
                flagged.push((t.step, d, s.loss));
            }
        }
        (t.diverged, flagged)
    };
    let (first, flagged) = run(1e6, 40);
    let (step, how) = first.expect("lr 1e6 must be reported as diverging");
    assert!(step > 1 && step <= 40, "{step} {how:?}");
    assert_eq!(flagged[0].0, step);
    assert!(
        flagged
            .iter()
            .all(|&(_, _, loss)| !loss.is_finite() || loss > 1e3),
        "{flagged:?}"
    );
    // A sane run is never flagged.
    let (none, flagged) = run(1e-3, 40);
    assert_eq!(none, None, "{flagged:?}");
}
