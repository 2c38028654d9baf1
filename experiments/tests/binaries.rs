//! Every binary end to end, as a user runs it: `--help` explains the
//! flags; `copy_task --quick`, `translate --quick` and `lm --quick` train,
//! evaluate and write their run folders; `translate decode`, `translate
//! eval`, `lm sample` and `report` work on those folders; `--resume`
//! continues one; bad flags are errors, not panics.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("binaries-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"))
}

fn ok(bin: &str, args: &[&str]) -> String {
    let out = run(bin, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{bin} {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn summary(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("summary.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

const TRANSLATE: &str = env!("CARGO_BIN_EXE_translate");
const LM: &str = env!("CARGO_BIN_EXE_lm");
const COPY: &str = env!("CARGO_BIN_EXE_copy_task");
const REPORT: &str = env!("CARGO_BIN_EXE_report");

#[test]
fn every_binary_explains_its_flags() {
    for bin in [TRANSLATE, LM, COPY] {
        let help = ok(bin, &["--help"]);
        for flag in [
            "--quick",
            "--threads",
            "--seed",
            "--out",
            "--steps",
            "--minutes",
            "--set",
            "--resume",
        ] {
            assert!(help.contains(flag), "{bin} --help lacks {flag}:\n{help}");
        }
    }
    assert!(ok(TRANSLATE, &["decode", "--help"]).contains("--beam"));
    assert!(ok(LM, &["sample", "--help"]).contains("--temperature"));
    assert!(ok(REPORT, &["--help"]).contains("RUNS"));
}

#[test]
fn copy_task_quick_learns_to_copy() {
    let out = temp("copy");
    let stdout = ok(
        COPY,
        &[
            "--quick",
            "--out",
            out.to_str().unwrap(),
            "--threads",
            "2",
            "--steps",
            "300",
        ],
    );
    let dir = out.join("copy-quick");
    let s = summary(&dir);
    assert_eq!(s["outcome"], "finished", "{stdout}");
    let em = s["eval"]["decode"]["exact_match"].as_f64().unwrap();
    assert!(em > 0.8, "exact match {em} after 300 steps:\n{stdout}");
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn translate_quick_trains_evaluates_decodes_resumes_and_reports() {
    let out = temp("translate");
    let o = out.to_str().unwrap();
    let stdout = ok(TRANSLATE, &["--quick", "--out", o, "--seed", "1"]);
    assert!(
        stdout.contains("BLEU") && stdout.contains("report"),
        "{stdout}"
    );
    let dir = out.join("translate-quick");
    let s = summary(&dir);
    assert_eq!(s["outcome"], "finished");
    assert_eq!(s["steps"], 40);
    for f in [
        "config.toml",
        "vocab/tokenizer.json",
        "vocab/vocab.json",
        "metrics.csv",
        "best.ckpt",
        "last.ckpt",
        "report.md",
        "loss.svg",
        "attention.svg",
    ] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    let d = dir.to_str().unwrap();
    // A second run of the same command gets a fresh folder.
    // Decoding uses the run's own vocabulary: one line out per sentence in.
    let decoded = ok(
        TRANSLATE,
        &[
            "decode",
            d,
            "The weather is nice today.",
            "Thank you!",
            "--beam",
            "2",
        ],
    );
    assert_eq!(decoded.lines().count(), 2, "{decoded}");
    // Re-evaluation rewrites the summary with the same numbers.
    let before = s["eval"]["decode"]["bleu_greedy"].clone();
    ok(TRANSLATE, &["eval", d]);
    assert_eq!(summary(&dir)["eval"]["decode"]["bleu_greedy"], before);
    // Resume with a larger budget continues from the last checkpoint.
    ok(TRANSLATE, &["--resume", d, "--steps", "50"]);
    assert_eq!(summary(&dir)["steps"], 50);
    // The report renders from the folder alone.
    std::fs::remove_file(dir.join("loss.svg")).unwrap();
    ok(REPORT, &[d]);
    assert!(dir.join("loss.svg").exists());
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn lm_quick_trains_and_samples() {
    let out = temp("lm");
    let o = out.to_str().unwrap();
    let stdout = ok(LM, &["--quick", "--out", o, "--steps", "20"]);
    assert!(stdout.contains("bits per character"), "{stdout}");
    let dir = out.join("lm-quick");
    let bpc = summary(&dir)["eval"]["valid"]["bits_per_char"]
        .as_f64()
        .unwrap();
    assert!(bpc.is_finite() && bpc > 0.0);
    let d = dir.to_str().unwrap();
    let text = ok(
        LM,
        &[
            "sample",
            d,
            "--prompt",
            "It is a truth",
            "--length",
            "30",
            "--top-k",
            "5",
        ],
    );
    assert!(
        text.starts_with("It is a truth") && text.chars().count() > 13 + 10,
        "{text}"
    );
    // Same seed, same text.
    assert_eq!(
        text,
        ok(
            LM,
            &[
                "sample",
                d,
                "--prompt",
                "It is a truth",
                "--length",
                "30",
                "--top-k",
                "5"
            ]
        )
    );
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn bad_flags_and_folders_are_errors_not_panics() {
    let cases: [(&str, &[&str], &str); 5] = [
        (TRANSLATE, &["--set", "model.d_modle=3"], "d_modle"),
        (TRANSLATE, &["--preset", "nope"], "unknown preset"),
        (
            TRANSLATE,
            &["decode", "/nonexistent/run", "Hello."],
            "/nonexistent/run",
        ),
        (LM, &["sample", "/nonexistent/run"], "/nonexistent/run"),
        (COPY, &["--threads", "0"], "--threads"),
    ];
    for (bin, args, needle) in cases {
        let out = run(bin, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bin} {args:?} succeeded");
        assert_eq!(out.status.code(), Some(1), "{bin} {args:?}: {stderr}");
        assert!(stderr.contains(needle), "{bin} {args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
