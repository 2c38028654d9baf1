//! The ablation runner: parallel = alone bit for bit, resume of a sweep,
//! diverged runs counted and judged, the telemetry file, and every
//! ablation binary's `--quick` run.

mod common;

use std::process::Command;

use common::TempDir;
use experiments::ablation::{SweepOptions, report, run_dir, sweep};
use experiments::ablations::{ABLATIONS, ablation};
use experiments::telemetry::{self, ATTN_ENTROPY, GRAD_NORM, RANK_COLLAPSE};

fn opts(dir: &std::path::Path, jobs: usize) -> SweepOptions {
    SweepOptions {
        dir: dir.to_path_buf(),
        jobs,
        threads: 1,
        progress: false,
        verbose: false,
        shard: None,
        train_missing: true,
    }
}

/// Everything of a run that must not depend on how it was scheduled: the
/// final checkpoint's bytes and the non-wall-clock columns of metrics.csv.
fn fingerprint(dir: &std::path::Path) -> (Vec<u8>, Vec<String>) {
    let ckpt = std::fs::read(dir.join("last.ckpt")).unwrap();
    let rows = experiments::report::read_metrics(&dir.join("metrics.csv"))
        .unwrap()
        .into_iter()
        .map(|r| {
            format!(
                "{} {} {:?} {:?} {} {:?}",
                r.step, r.train_loss, r.valid_loss, r.valid_acc, r.lr, r.grad_norm
            )
        })
        .collect();
    (ckpt, rows)
}

#[test]
fn a_run_in_a_parallel_sweep_equals_the_same_run_alone() {
    let tmp = TempDir::new("abl-determinism");
    let mut a = ablation("norm", true).unwrap();
    a.only(&["bn-post".to_string()]).unwrap();
    // Two jobs at a time, two threads each: 4 runs interleaved.
    let par = tmp.0.join("parallel");
    let results = sweep(
        &a,
        &SweepOptions {
            threads: 2,
            ..opts(&par, 2)
        },
    )
    .unwrap();
    assert_eq!(results.len(), 4);
    // One run alone, in a one-job sweep of its own, one thread.
    let mut alone = a.clone();
    alone.seeds = vec![1];
    alone.variants.retain(|v| v.name == "bn-post");
    let one = tmp.0.join("alone");
    let single = sweep(&alone, &opts(&one, 1)).unwrap();
    let from_par = results
        .iter()
        .find(|r| r.variant == "bn-post" && r.seed == 1)
        .unwrap();
    assert_eq!(single[0].valid_ppl, from_par.valid_ppl);
    assert_eq!(single[0].bleu, from_par.bleu);
    assert_eq!(
        fingerprint(&run_dir(&one, "bn-post", 1)),
        fingerprint(&run_dir(&par, "bn-post", 1))
    );
    // The report has every variant and a verdict line.
    let md = report(&a, &results, &par, "test").unwrap();
    assert!(md.contains("| bn-post") && md.contains("| ln-post"), "{md}");
    assert!(
        ["reproduces", "contradicts", "inconclusive"]
            .iter()
            .any(|w| md.contains(w)),
        "{md}"
    );
    for f in [
        "summary.md",
        "runs.csv",
        "curves.svg",
        "curves_time.svg",
        "rank_collapse.svg",
    ] {
        assert!(par.join(f).exists(), "{f} missing");
    }
    let runs_csv = std::fs::read_to_string(par.join("runs.csv")).unwrap();
    assert_eq!(runs_csv.lines().count(), 5, "{runs_csv}");
}

#[test]
fn telemetry_is_recorded_at_init_and_every_validation() {
    let tmp = TempDir::new("abl-telemetry");
    let mut a = ablation("residual", true).unwrap();
    a.seeds = vec![0];
    a.only(&["nores-2".to_string()]).unwrap();
    sweep(&a, &opts(&tmp.0, 2)).unwrap();
    let rows = telemetry::read(&run_dir(&tmp.0, "nores-2", 0).join("telemetry.csv")).unwrap();
    let steps: std::collections::BTreeSet<u64> = rows.iter().map(|r| r.step).collect();
    // Step 0 plus the validations at 12 and 24.
    assert_eq!(steps.into_iter().collect::<Vec<_>>(), vec![0, 12, 24]);
    for m in [GRAD_NORM, ATTN_ENTROPY, RANK_COLLAPSE] {
        assert!(rows.iter().any(|r| r.metric == m && r.step == 0), "{m}");
    }
    // 2 + 2 layers: input + 2 layer outputs per stack.
    let rank: Vec<&str> = rows
        .iter()
        .filter(|r| r.metric == RANK_COLLAPSE && r.step == 0)
        .map(|r| r.module.as_str())
        .collect();
    assert_eq!(
        rank,
        [
            "encoder.input",
            "encoder.layers.0",
            "encoder.layers.1",
            "decoder.input",
            "decoder.layers.0",
            "decoder.layers.1"
        ]
    );
    // Entropies are within [0, ln Tk] and one per head (4 heads, 3 attention
    // layers per 2 + 2 model: 2 encoder self, 2 decoder self, 2 cross).
    let ent: Vec<_> = rows
        .iter()
        .filter(|r| r.metric == ATTN_ENTROPY && r.step == 0)
        .collect();
    assert_eq!(ent.len(), 6 * 4);
    assert!(
        ent.iter()
            .all(|r| r.value >= 0.0 && r.value <= (16f64).ln())
    );
}

#[test]
fn rerunning_a_sweep_skips_finished_runs_and_resumes_interrupted_ones() {
    let tmp = TempDir::new("abl-resume");
    let mut a = ablation("posenc", true).unwrap();
    a.seeds = vec![0];
    let first = sweep(&a, &opts(&tmp.0, 2)).unwrap();
    let reference = fingerprint(&run_dir(&tmp.0, "learned", 0));
    // Interrupt one run: drop its summary and go back to its mid-run
    // checkpoint (the state a kill after step 12 leaves).
    let dir = run_dir(&tmp.0, "learned", 0);
    std::fs::remove_file(dir.join("summary.json")).unwrap();
    let mut t = transformer::Trainer::resume(dir.join("last.ckpt")).unwrap();
    assert_eq!(t.step, 24);
    // Rewind: retrain the first 12 steps from a fresh start in another
    // folder and put that checkpoint in place.
    let scratch = tmp.0.join("scratch");
    let mut cfg = a.config(&a.variants[1], 0).unwrap();
    cfg.run.steps = Some(12);
    let mut run = experiments::train::Run::start(&scratch, cfg, false).unwrap();
    run.train(&Default::default()).unwrap();
    std::fs::copy(scratch.join("last.ckpt"), dir.join("last.ckpt")).unwrap();
    t = transformer::Trainer::resume(dir.join("last.ckpt")).unwrap();
    assert_eq!(t.step, 12);
    let before = std::fs::metadata(run_dir(&tmp.0, "sinusoidal", 0).join("summary.json"))
        .unwrap()
        .modified()
        .unwrap();
    let second = sweep(&a, &opts(&tmp.0, 2)).unwrap();
    assert_eq!(first, {
        // Wall-clock seconds differ for the resumed run only.
        let mut s = second.clone();
        for (x, y) in s.iter_mut().zip(&first) {
            x.train_seconds = y.train_seconds;
            x.eval_seconds = y.eval_seconds;
        }
        s
    });
    assert_eq!(fingerprint(&dir), reference, "the resumed run differs");
    let after = std::fs::metadata(run_dir(&tmp.0, "sinusoidal", 0).join("summary.json"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after, "a finished run was run again");
    // A run folder made with another config is an error, not mixed in.
    let mut other = a.clone();
    other.base.run.steps = Some(30);
    let e = sweep(&other, &opts(&tmp.0, 1)).unwrap_err();
    assert!(e.contains("another config"), "{e}");
}

#[test]
fn diverged_runs_are_counted_and_judged_not_dropped() {
    use experiments::ablation::judge;
    use experiments::stats::{Expect, Verdict};
    let tmp = TempDir::new("abl-diverge");
    let mut a = ablation("norm", true).unwrap();
    a.only(&["bn-post".to_string()]).unwrap();
    a.seeds = vec![0, 1];
    // bn-post at an absurd learning rate: every seed diverges.
    let v = a.variants.iter_mut().find(|v| v.name == "bn-post").unwrap();
    v.sets.push("train.schedule.Cosine.peak_lr=1e6".into());
    v.expect = Some(Expect::Higher);
    let results = sweep(&a, &opts(&tmp.0, 2)).unwrap();
    assert_eq!(results.len(), 4, "diverged runs are results too");
    let bn: Vec<_> = results.iter().filter(|r| r.variant == "bn-post").collect();
    assert!(
        bn.iter().all(|r| r.diverged() && r.diverged_at.is_some()),
        "{bn:?}"
    );
    let stats = judge(&a, &results);
    let s = stats.iter().find(|s| s.variant.name == "bn-post").unwrap();
    assert_eq!(s.diverged, 2);
    assert_eq!(s.verdict, Some(Verdict::Reproduces), "{}", s.reason);
    assert!(s.reason.contains("diverged in all 2 seeds"), "{}", s.reason);
    // The summary shows the count.
    let md = report(&a, &results, &tmp.0, "test").unwrap();
    assert!(md.contains("2/2"), "{md}");
}

#[test]
fn only_keeps_the_baseline_and_references_and_rejects_unknown_names() {
    let mut a = ablation("norm", true).unwrap();
    a.only(&["bn-pre".to_string()]).unwrap();
    let names: Vec<&str> = a.variants.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["ln-post", "ln-pre", "bn-pre"]);
    let e = a.only(&["bn-typo".to_string()]).unwrap_err();
    assert!(e.contains("bn-typo") && e.contains("ln-post"), "{e}");
    assert!(ablation("nope", true).unwrap_err().contains("norm"));
}

#[test]
fn every_ablation_binary_runs_its_quick_sweep() {
    let tmp = TempDir::new("abl-bins");
    let bins = [
        env!("CARGO_BIN_EXE_norm_ablation"),
        env!("CARGO_BIN_EXE_residual_ablation"),
        env!("CARGO_BIN_EXE_warmup_ablation"),
        env!("CARGO_BIN_EXE_heads_ablation"),
        env!("CARGO_BIN_EXE_smoothing_ablation"),
        env!("CARGO_BIN_EXE_posenc_ablation"),
    ];
    for (bin, name) in bins.iter().zip(ABLATIONS) {
        let out = Command::new(bin)
            .args(["--quick", "--no-progress", "--out"])
            .arg(&tmp.0)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("## Verdicts"), "{name}: {stdout}");
        assert!(tmp.0.join(format!("{name}-quick/summary.md")).exists());
    }
    // A bad flag is an error with exit code 2 (clap), not a panic.
    let out = Command::new(bins[0]).arg("--jobs=x").output().unwrap();
    assert!(!out.status.success());

    // all_ablations finds the six sweeps finished (same configs) and writes
    // the index, whose links point at them.
    let out = Command::new(env!("CARGO_BIN_EXE_all_ablations"))
        .args(["--quick", "--no-progress", "--out"])
        .arg(&tmp.0)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "all_ablations: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let index = std::fs::read_to_string(tmp.0.join("README-quick.md")).unwrap();
    for name in ABLATIONS {
        let link = format!("({name}-quick/summary.md)");
        assert!(index.contains(&link), "{link} missing:\n{index}");
        assert!(tmp.0.join(format!("{name}-quick/curves.svg")).exists());
    }
    assert!(index.contains("bn-post vs ln-post: "), "{index}");
    // It refuses --only (variants belong to one ablation).
    let out = Command::new(env!("CARGO_BIN_EXE_all_ablations"))
        .args(["--quick", "--only", "bn-post", "--out"])
        .arg(&tmp.0)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--only"));
}
