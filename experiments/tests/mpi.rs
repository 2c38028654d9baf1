//! The distributed guarantee over real processes (issue 12), with the
//! `mpi` feature and Open MPI's `mpirun`: the copy task and a short
//! `translate` run on 2 and 4 ranks (and the language model on 2) (`--oversubscribe` on 2 cores) equal
//! the single-process run with the same micro-batches bit for bit (the
//! checkpoints' bytes, which hold weights, Adam's moments, step and RNG,
//! and every metrics column but the wall-clock ones); a resumed
//! distributed run equals the uninterrupted one; a sweep over MPI and a
//! sweep in shards merged afterwards equal the local sweep; bad rank
//! counts, mismatched configs, a hung rank and a dead rank end with clear
//! errors instead of hangs.
//!
//! `.ci/run` installs Open MPI and runs `cargo test -p experiments
//! --features mpi --test mpi`.
#![cfg(feature = "mpi")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The flags of a quick training run with `micro` micro-batches on one
/// thread, into `out/name`, then `extra`.
fn quick(out: &Path, name: &str, micro: usize, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "--quick",
        "--threads",
        "1",
        "--set",
        &format!("loop.micro_batches={micro}"),
        "--no-progress",
        "--out",
        &out.to_string_lossy(),
        "--name",
        name,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

const COPY: &str = env!("CARGO_BIN_EXE_copy_task");
const TRANSLATE: &str = env!("CARGO_BIN_EXE_translate");
const NORM: &str = env!("CARGO_BIN_EXE_norm_ablation");
const LM: &str = env!("CARGO_BIN_EXE_lm");

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mpi-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `mpirun -np n bin args` (n = 0: the binary alone), with a short
/// deadline for a silent rank.
fn launch(n: usize, bin: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = if n == 0 {
        Command::new(bin)
    } else {
        let mut c = Command::new("mpirun");
        c.args([
            "--allow-run-as-root",
            "--oversubscribe",
            "-np",
            &n.to_string(),
        ]);
        for (k, _) in env {
            c.args(["-x", k]);
        }
        c.arg(bin);
        c
    };
    cmd.args(args).env("EXPERIMENTS_MPI_TIMEOUT_S", "20");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot start {bin} (is Open MPI installed?): {e}"))
}

fn ok(n: usize, bin: &str, args: &[&str]) -> String {
    let out = launch(n, bin, args, &[]);
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "-np {n} {bin} {args:?} failed:\n{text}"
    );
    text
}

/// Everything of a run folder that must not depend on the rank count: the
/// checkpoints' bytes and metrics.csv without its wall-clock columns
/// (elapsed_s, tokens_per_s).
fn fingerprint(run: &Path) -> (Vec<u8>, Vec<u8>, Vec<String>) {
    let read = |f: &str| {
        std::fs::read(run.join(f)).unwrap_or_else(|e| panic!("{}: {e}", run.join(f).display()))
    };
    let metrics = String::from_utf8(read("metrics.csv")).unwrap();
    let rows: Vec<String> = metrics
        .lines()
        .map(|l| {
            let cols: Vec<&str> = l.split(',').collect();
            assert_eq!(cols.len(), 9, "metrics.csv columns: {l}");
            let mut keep = vec![cols[0]];
            keep.extend(&cols[2..8]);
            keep.join(",")
        })
        .collect();
    assert!(rows.len() > 2, "too few metrics rows to compare");
    (read("last.ckpt"), read("best.ckpt"), rows)
}

fn same(a: &Path, b: &Path) {
    let (fa, fb) = (fingerprint(a), fingerprint(b));
    assert!(
        fa.0 == fb.0,
        "last.ckpt of {} and {} differ",
        a.display(),
        b.display()
    );
    assert!(
        fa.1 == fb.1,
        "best.ckpt of {} and {} differ",
        a.display(),
        b.display()
    );
    assert_eq!(fa.2, fb.2, "metrics of {} and {}", a.display(), b.display());
}

#[test]
fn the_copy_task_on_2_and_4_ranks_equals_one_process() {
    let d = temp("copy");
    ok(0, COPY, &strs(&quick(&d, "one", 4, &[])));
    let two = ok(2, COPY, &strs(&quick(&d, "two", 4, &[])));
    ok(4, COPY, &strs(&quick(&d, "four", 4, &[])));
    same(&d.join("one"), &d.join("two"));
    same(&d.join("one"), &d.join("four"));
    // One report, from rank 0.
    assert_eq!(two.matches("report:").count(), 1, "{two}");
    // The micro-batched run is not the ordinary one (the comparison above
    // is not between two runs that ignore the setting).
    ok(0, COPY, &strs(&quick(&d, "plain", 1, &[])));
    assert_ne!(
        fingerprint(&d.join("one")).0,
        fingerprint(&d.join("plain")).0
    );
}

#[test]
fn a_short_translate_run_on_2_and_4_ranks_and_resumed_equals_one_process() {
    let d = temp("translate");
    let base = |name: &str, steps: &str| -> Vec<String> {
        let mut v = vec!["train".to_string()];
        v.extend(quick(
            &d,
            name,
            4,
            &["--steps", steps, "--set", "loop.eval_every=4"],
        ));
        v
    };
    let one = base("one", "12");
    ok(0, TRANSLATE, &strs(&one));
    let two = base("two", "12");
    ok(2, TRANSLATE, &strs(&two));
    let four = base("four", "12");
    ok(4, TRANSLATE, &strs(&four));
    same(&d.join("one"), &d.join("two"));
    same(&d.join("one"), &d.join("four"));
    // Interrupted at step 8 on 2 ranks, resumed on 2 ranks to 12.
    let part = base("resumed", "8");
    ok(2, TRANSLATE, &strs(&part));
    let dir = d.join("resumed");
    let dir_s = dir.to_string_lossy().into_owned();
    ok(
        2,
        TRANSLATE,
        &[
            "train",
            "--resume",
            &dir_s,
            "--steps",
            "12",
            "--threads",
            "1",
            "--no-progress",
        ],
    );
    same(&d.join("one"), &dir);
}

#[test]
fn the_language_model_on_2_ranks_equals_one_process() {
    let d = temp("lm");
    for (n, name) in [(0, "one"), (2, "two")] {
        ok(n, LM, &strs(&quick(&d, name, 2, &[])));
    }
    same(&d.join("one"), &d.join("two"));
}

/// Every run's checkpoint and numbers in a sweep folder, without the
/// seconds and the commit.
fn sweep_fingerprint(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let runs = dir.join("runs");
    let mut variants: Vec<_> = std::fs::read_dir(&runs).unwrap().flatten().collect();
    variants.sort_by_key(|e| e.file_name());
    for v in variants {
        let mut seeds: Vec<_> = std::fs::read_dir(v.path()).unwrap().flatten().collect();
        seeds.sort_by_key(|e| e.file_name());
        for s in seeds {
            let name = format!(
                "{}/{}",
                v.file_name().to_string_lossy(),
                s.file_name().to_string_lossy()
            );
            out.push((name, std::fs::read(s.path().join("last.ckpt")).unwrap()));
        }
    }
    let csv = std::fs::read_to_string(dir.join("runs.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let keep: Vec<usize> = (0..header.len())
        .filter(|&i| !header[i].contains("seconds") && header[i] != "commit")
        .collect();
    for l in csv.lines() {
        let cols: Vec<&str> = l.split(',').collect();
        let row: Vec<&str> = keep.iter().map(|&i| cols[i]).collect();
        out.push(("runs.csv".into(), row.join(",").into_bytes()));
    }
    assert!(out.len() > 4, "an empty sweep proves nothing");
    out
}

#[test]
fn a_sweep_over_mpi_and_a_merged_sharded_sweep_equal_the_local_sweep() {
    let d = temp("sweep");
    let sweep = |dir: &str| -> Vec<String> {
        [
            "--quick",
            "--seeds",
            "0,1",
            "--only",
            "bn-post",
            "--jobs",
            "1",
            "--threads",
            "1",
            "--no-progress",
            "--out",
            dir,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let local = d.join("local").to_string_lossy().into_owned();
    let over = d.join("mpi").to_string_lossy().into_owned();
    let shards = d.join("shards").to_string_lossy().into_owned();
    ok(0, NORM, &strs(&sweep(&local)));
    let text = ok(2, NORM, &strs(&sweep(&over)));
    assert!(
        text.contains("## Results"),
        "rank 0 prints the tables: {text}"
    );
    for i in ["0/2", "1/2"] {
        let mut a = sweep(&shards);
        a.extend(["--shard".to_string(), i.to_string()]);
        ok(0, NORM, &strs(&a));
    }
    let mut merge = sweep(&shards);
    merge.push("--merge".into());
    ok(0, NORM, &strs(&merge));
    let want = sweep_fingerprint(&Path::new(&local).join("norm-quick"));
    assert_eq!(
        sweep_fingerprint(&Path::new(&over).join("norm-quick")),
        want
    );
    assert_eq!(
        sweep_fingerprint(&Path::new(&shards).join("norm-quick")),
        want
    );
    // Merging with a shard missing names the unfinished runs.
    let lone = d.join("lone").to_string_lossy().into_owned();
    let mut a = sweep(&lone);
    a.extend(["--shard".to_string(), "0/2".to_string()]);
    ok(0, NORM, &strs(&a));
    let mut m = sweep(&lone);
    m.push("--merge".into());
    let out = launch(0, NORM, &strs(&m), &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not finished"), "{err}");
}

fn fails_with(out: &Output, words: &str) {
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "expected a failure:\n{text}");
    assert!(text.contains(words), "expected `{words}` in:\n{text}");
}

#[test]
fn bad_rank_counts_mismatched_configs_and_hung_or_dead_ranks_are_clear_errors() {
    let d = temp("bad");
    let copy = |name: &str, extra: &[&str]| quick(&d, name, 4, extra);
    // 3 ranks cannot share 4 micro-batches.
    fails_with(
        &launch(3, COPY, &strs(&copy("three", &[])), &[]),
        "3 processes cannot share loop.micro_batches = 4",
    );
    // Ranks started with different configs (MPMD: one seed each).
    let a = copy("mixed", &["--seed", "1"]);
    let b = copy("mixed", &["--seed", "2"]);
    let mut cmd = Command::new("mpirun");
    cmd.args(["--allow-run-as-root", "--oversubscribe", "-np", "1", COPY])
        .args(&a)
        .args([":", "-np", "1", COPY])
        .args(&b)
        .env("EXPERIMENTS_MPI_TIMEOUT_S", "20");
    fails_with(&cmd.output().unwrap(), "different configs");
    // A hung rank: its partner gives up after the deadline with a message.
    let t = Instant::now();
    let hung = launch(
        2,
        COPY,
        &strs(&copy("hung", &[])),
        &[
            ("EXPERIMENTS_FAULT", "hang:1:3"),
            ("EXPERIMENTS_MPI_TIMEOUT_S", "3"),
        ],
    );
    fails_with(&hung, "has hung or died");
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    // A dead rank: the job ends (mpirun notices) instead of hanging.
    let t = Instant::now();
    let dead = launch(
        2,
        COPY,
        &strs(&copy("dead", &[])),
        &[
            ("EXPERIMENTS_FAULT", "exit:1:3"),
            ("EXPERIMENTS_MPI_TIMEOUT_S", "3"),
        ],
    );
    assert!(!dead.status.success(), "a job with a dead rank must fail");
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
}
