//! The training loop on tiny configs: the loss falls, `metrics.csv` has
//! its columns, an interrupted run resumed equals the uninterrupted run bit
//! for bit (with ordinary and micro-batched steps), telemetry does not
//! change the training, and a diverging run is an outcome, not a crash.

use std::path::{Path, PathBuf};

use experiments::config::RunConfig;
use experiments::report::read_metrics;
use experiments::summary::{Summary, finish};
use experiments::train::{Outcome, Run, RunOptions, best_checkpoint, last_checkpoint};
use transformer::{Trainer, named_tensors};

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("train-loop-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn quiet() -> RunOptions {
    RunOptions::default()
}

/// The copy task with validation every 10 steps.
fn copy_config(steps: u64) -> RunConfig {
    RunConfig::preset("copy-quick")
        .unwrap()
        .with_overrides(&[
            format!("loop.steps={steps}"),
            "loop.minutes=10".into(),
            "loop.eval_every=10".into(),
            "loop.log_every=5".into(),
            "task.train=2000".into(),
            "task.valid=50".into(),
            // Dropout on: resume must carry the dropout stream too.
            "model.dropout=0.1".into(),
        ])
        .unwrap()
}

fn params(path: &Path) -> Vec<(String, Vec<f32>)> {
    let mut t = Trainer::resume(path).unwrap();
    named_tensors(&mut t.model)
        .into_iter()
        .map(|(n, x)| (n, x.data().to_vec()))
        .collect()
}

#[test]
fn the_loss_falls_and_metrics_csv_has_its_columns() {
    let dir = temp("falls");
    // Two encoder layers, the heatmaps of the first.
    let config = copy_config(60)
        .with_overrides(&[
            "model.encoder_layers=2".into(),
            "eval.attention_layer=0".into(),
        ])
        .unwrap();
    let mut run = Run::start(&dir, config, false).unwrap();
    assert_eq!(run.train(&quiet()).unwrap(), Outcome::Finished);
    let header = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let header = header.lines().next().unwrap();
    for col in [
        "step",
        "elapsed_s",
        "train_loss",
        "valid_loss",
        "valid_ppl",
        "valid_acc",
        "lr",
        "grad_norm",
        "tokens_per_s",
    ] {
        assert!(header.contains(col), "{header} lacks {col}");
    }
    let rows = read_metrics(&dir.join("metrics.csv")).unwrap();
    assert_eq!(rows.last().unwrap().step, 60);
    let valid: Vec<f64> = rows.iter().filter_map(|r| r.valid_loss).collect();
    assert_eq!(valid.len(), 6, "a validation every 10 steps");
    assert!(
        valid[5] < valid[0] * 0.8,
        "validation loss did not fall: {valid:?}"
    );
    assert!(rows[rows.len() - 1].train_loss < rows[0].train_loss);
    assert!(rows.iter().all(|r| r.grad_norm.is_some_and(f64::is_finite)));
    for f in ["config.toml", "vocab/vocab.json", "last.ckpt", "best.ckpt"] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    let summary = finish(&run, &Outcome::Finished, false).unwrap();
    assert_eq!(summary.outcome, "finished");
    let on_disk: Summary =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(on_disk.steps, 60);
    assert!(on_disk.eval.decode.is_some());
    for f in [
        "report.md",
        "loss.svg",
        "attention.svg",
        "attention-encoder-layers-0-self_attn.svg",
        "attention-decoder-layers-0-cross_attn.svg",
    ] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    assert!(
        !dir.join("attention-encoder-layers-1-self_attn.svg")
            .exists()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_resumed_run_equals_the_uninterrupted_run_bit_for_bit() {
    let whole = temp("whole");
    let mut run = Run::start(&whole, copy_config(40), false).unwrap();
    run.train(&quiet()).unwrap();

    let parts = temp("parts");
    let mut run = Run::start(&parts, copy_config(40), false).unwrap();
    // Interrupted after 23 steps: the last checkpoint is at step 20, and
    // rows 21..23 of metrics.csv are dropped on resume.
    let stop = RunOptions {
        stop_after: Some(23),
        ..quiet()
    };
    assert_eq!(run.train(&stop).unwrap(), Outcome::Stopped);
    drop(run);
    let mut run = Run::resume(&parts, false).unwrap();
    assert_eq!(run.trainer.step, 20);
    assert_eq!(run.train(&quiet()).unwrap(), Outcome::Finished);

    assert_eq!(
        params(&last_checkpoint(&whole)),
        params(&last_checkpoint(&parts))
    );
    assert_eq!(
        params(&best_checkpoint(&whole)),
        params(&best_checkpoint(&parts))
    );
    let a = read_metrics(&whole.join("metrics.csv")).unwrap();
    let b = read_metrics(&parts.join("metrics.csv")).unwrap();
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        // Everything but the wall-clock columns.
        assert_eq!(
            (
                x.step,
                x.train_loss,
                x.valid_loss,
                x.valid_ppl,
                x.valid_acc,
                x.lr,
                x.grad_norm
            ),
            (
                y.step,
                y.train_loss,
                y.valid_loss,
                y.valid_ppl,
                y.valid_acc,
                y.lr,
                y.grad_norm
            )
        );
    }
    std::fs::remove_dir_all(&whole).unwrap();
    std::fs::remove_dir_all(&parts).unwrap();
}

#[test]
fn a_diverging_run_is_recorded_as_diverged_not_a_crash() {
    let dir = temp("diverge");
    let config = copy_config(50)
        .with_overrides(&["train.schedule={ Constant = { lr = 1e6 } }".into()])
        .unwrap();
    let mut run = Run::start(&dir, config, false).unwrap();
    let outcome = run.train(&quiet()).unwrap();
    let Outcome::Diverged { step, .. } = outcome.clone() else {
        panic!("expected divergence, got {outcome:?}");
    };
    assert!(step < 50);
    let summary = finish(&run, &outcome, false).unwrap();
    assert_eq!(summary.outcome, "diverged");
    assert_eq!(summary.diverged_at, Some(step));
    let rows = read_metrics(&dir.join("metrics.csv")).unwrap();
    assert_eq!(rows.last().unwrap().step, step);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn starting_over_an_existing_run_is_an_error_pointing_at_resume() {
    let dir = temp("exists");
    let mut run = Run::start(&dir, copy_config(5), false).unwrap();
    run.train(&quiet()).unwrap();
    let e = Run::start(&dir, copy_config(5), false).err().unwrap();
    assert!(e.contains("--resume"), "{e}");
    let e = Run::resume(&temp("nothing-here"), false).err().unwrap();
    assert!(e.contains("config.toml"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_decoder_only_language_model_trains_and_reports_bits_per_character() {
    let dir = temp("lm");
    let config = RunConfig::preset("lm-quick")
        .unwrap()
        .with_overrides(&[
            "loop.steps=30".into(),
            "task.char_limit=40000".into(),
            "task.context=32".into(),
            "model.max_len=32".into(),
        ])
        .unwrap();
    let mut run = Run::start(&dir, config, false).unwrap();
    assert_eq!(run.train(&quiet()).unwrap(), Outcome::Finished);
    let s = finish(&run, &Outcome::Finished, false).unwrap();
    let bpc = s.eval.valid.bits_per_char.unwrap();
    // Better than a uniform guess over the characters, worse than perfect.
    assert!(
        bpc > 0.5 && bpc < (run.vocabs.tgt.len() as f64).log2(),
        "{bpc}"
    );
    assert_eq!(s.eval.samples.len(), 3);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A user's norm block (a learned gain over the root mean square), defined
/// here, outside the crates.
struct ScaledRms {
    gain: autograd::Param<f32>,
}

impl transformer::Module<f32> for ScaledRms {
    fn visit(&mut self, v: &mut transformer::Visitor<'_, f32>) {
        v.param("gain", &mut self.gain);
    }
}

impl transformer::NormBlock<f32> for ScaledRms {
    fn forward<'t>(
        &self,
        ctx: &transformer::Ctx<'t, f32>,
        x: autograd::Var<'t, f32>,
        _: Option<&autograd::Tensor<f32>>,
    ) -> autograd::Var<'t, f32> {
        let ms = (x * x).mean(-1, true); // (B, T, 1)
        x / (ms + 1e-5).sqrt() * ctx.param(&self.gain)
    }
}

#[test]
fn a_users_block_trains_resumes_and_evaluates_through_the_runner() {
    let mut registry = transformer::Registry::builtin();
    registry.norm("scaled_rms", |c, _| {
        Box::new(ScaledRms {
            gain: autograd::Param::new(autograd::Tensor::ones(&[c.d_model])),
        })
    });
    let config = copy_config(20)
        .with_overrides(&["model.norm=scaled_rms".into()])
        .unwrap();
    let dir = temp("user-block");
    // Without the registry the name is an error naming it.
    let e = Run::start(&dir, config.clone(), false).err().unwrap();
    assert!(e.contains("scaled_rms"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
    let mut run = Run::start_with(&dir, config, &registry, false).unwrap();
    let stop = RunOptions {
        stop_after: Some(10),
        ..quiet()
    };
    run.train(&stop).unwrap();
    drop(run);
    let mut run = Run::resume_with(&dir, &registry, false).unwrap();
    assert_eq!(run.train(&quiet()).unwrap(), Outcome::Finished);
    let s = finish(&run, &Outcome::Finished, false).unwrap();
    assert_eq!(s.steps, 20);
    assert!(s.eval.decode.is_some());
    experiments::summary::rerender_with(&dir, &registry, None).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `lm sample` over key/value caches draws exactly what the uncached path
/// (the whole context re-run per token) draws, with the same seed: while
/// the text fits the context and after it outgrows it (the window slides
/// and both paths re-run it).
#[test]
fn cached_sampling_equals_uncached_sampling() {
    use experiments::corpus::Vocabs;
    use experiments::evaluate::{SampleOptions, sample_with};
    use experiments::vocab::{Vocab, VocabSpec};
    use transformer::{ModelConfig, Transformer};
    let text = "It is a truth universally acknowledged, that a single man in possession";
    let v = Vocab::train(&VocabSpec::Char { min_count: 1 }, &[text]).unwrap();
    let vocabs = Vocabs {
        src: v.clone(),
        tgt: v.clone(),
        joint: true,
    };
    let cfg = ModelConfig {
        encoder_layers: 0,
        decoder_layers: 2,
        max_len: 24,
        ..ModelConfig::tiny(v.len(), v.len())
    };
    for seed in 0..3 {
        let model = Transformer::<f32>::new(&cfg, seed).unwrap();
        assert!(model.supports_kv_cache());
        let opts = SampleOptions {
            length: 40, // prompt 8 + 40 > max_len 24: the window slides
            temperature: 0.8,
            top_k: 10,
            seed,
        };
        let fast = sample_with(&model, &vocabs, "It is a ", &opts, true);
        let slow = sample_with(&model, &vocabs, "It is a ", &opts, false);
        assert_eq!(fast.chars().count(), 40, "seed {seed}: {fast:?}");
        assert_eq!(fast, slow, "seed {seed}");
    }
}

#[test]
fn telemetry_reads_the_model_only_the_training_is_the_same_with_it_on() {
    let on = temp("telemetry-on");
    let off = temp("telemetry-off");
    for (dir, flag) in [(&on, "true"), (&off, "false")] {
        let c = copy_config(20)
            .with_overrides(&[format!("loop.telemetry={flag}")])
            .unwrap();
        Run::start(dir, c, false).unwrap().train(&quiet()).unwrap();
    }
    assert!(on.join("telemetry.csv").exists());
    assert!(!off.join("telemetry.csv").exists());
    assert_eq!(
        std::fs::read(last_checkpoint(&on)).unwrap(),
        std::fs::read(last_checkpoint(&off)).unwrap(),
        "telemetry changed the training"
    );
    std::fs::remove_dir_all(&on).unwrap();
    std::fs::remove_dir_all(&off).unwrap();
}

#[test]
fn a_micro_batched_run_trains_and_resumes_bit_for_bit() {
    // loop.micro_batches = 3 (gradient accumulation in the fixed tree order,
    // see experiments::dist): the loss falls, and a resumed run equals the
    // uninterrupted one, as for ordinary steps.
    let config = || {
        copy_config(30)
            .with_overrides(&["loop.micro_batches=3".to_string()])
            .unwrap()
    };
    let whole = temp("micro-whole");
    let mut run = Run::start(&whole, config(), false).unwrap();
    assert_eq!(run.train(&quiet()).unwrap(), Outcome::Finished);
    let rows = read_metrics(&whole.join("metrics.csv")).unwrap();
    assert!(rows.last().unwrap().train_loss < rows[0].train_loss);
    let parts = temp("micro-parts");
    let mut run = Run::start(&parts, config(), false).unwrap();
    let stop = RunOptions {
        stop_after: Some(13),
        ..quiet()
    };
    assert_eq!(run.train(&stop).unwrap(), Outcome::Stopped);
    drop(run);
    let mut run = Run::resume(&parts, false).unwrap();
    assert_eq!(run.trainer.step, 10);
    run.train(&quiet()).unwrap();
    assert_eq!(
        std::fs::read(last_checkpoint(&whole)).unwrap(),
        std::fs::read(last_checkpoint(&parts)).unwrap()
    );
    // And it is not the ordinary step under another name.
    let plain = temp("micro-plain");
    Run::start(&plain, copy_config(30), false)
        .unwrap()
        .train(&quiet())
        .unwrap();
    assert_ne!(
        std::fs::read(last_checkpoint(&whole)).unwrap(),
        std::fs::read(last_checkpoint(&plain)).unwrap()
    );
    for d in [whole, parts, plain] {
        std::fs::remove_dir_all(&d).unwrap();
    }
}
