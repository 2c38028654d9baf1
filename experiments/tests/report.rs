//! `experiments::report`: metrics.csv round trips, appends and truncation;
//! malformed files give errors naming file and line; the SVGs hold their
//! labels, survive NaN and are byte-identical across calls.

use std::path::{Path, PathBuf};

use experiments::report::{
    Heatmap, LinePlot, MetricsRow, MetricsWriter, ReportError, Series, attention_svg,
    line_plot_svg, loss_svg, markdown_table, read_metrics, truncate_metrics,
};

/// A fresh folder per test (tests run in parallel), removed first so that
/// leftovers from an earlier run cannot make a test pass.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("report-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn row(step: u64, valid: bool) -> MetricsRow {
    let s = step as f64;
    MetricsRow {
        step,
        elapsed_s: 0.25 * s,
        train_loss: 5.0 / (1.0 + 0.1 * s),
        valid_loss: valid.then_some(4.5 / (1.0 + 0.1 * s)),
        valid_ppl: valid.then_some((4.5 / (1.0 + 0.1 * s)).exp()),
        valid_acc: valid.then_some(0.1 + 0.001 * s),
        lr: 1e-3 * (s + 1.0).sqrt().recip(),
        grad_norm: (!step.is_multiple_of(3)).then_some(0.1 + 1.0 / (s + 1.0)),
        tokens_per_s: 12345.678 + s,
    }
}

fn rows(n: u64) -> Vec<MetricsRow> {
    (1..=n).map(|s| row(s * 10, s.is_multiple_of(4))).collect()
}

fn write_all(path: &Path, rows: &[MetricsRow], append: bool) {
    let mut w = MetricsWriter::open(path, append).unwrap();
    for r in rows {
        w.write(r).unwrap();
    }
}

const HEADER: &str =
    "step,elapsed_s,train_loss,valid_loss,valid_ppl,valid_acc,lr,grad_norm,tokens_per_s";

#[test]
fn metrics_round_trip_with_empty_columns() {
    let dir = scratch("round-trip");
    let path = dir.join("metrics.csv");
    let want = rows(12);
    assert!(want.iter().any(|r| r.valid_loss.is_none()));
    assert!(want.iter().any(|r| r.grad_norm.is_none()));
    write_all(&path, &want, false);
    assert_eq!(read_metrics(&path).unwrap(), want);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().next(), Some(HEADER));
    // A training-only row leaves the validation columns empty.
    assert!(text.lines().nth(1).unwrap().contains(",,,"), "{text}");
    // Header only: an empty run.
    MetricsWriter::open(&path, false).unwrap();
    assert_eq!(read_metrics(&path).unwrap(), vec![]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn append_adds_rows_but_no_second_header() {
    let dir = scratch("append");
    let path = dir.join("metrics.csv");
    let all = rows(10);
    // Appending to a file that does not exist yet creates it with a header.
    write_all(&path, &all[..4], true);
    write_all(&path, &all[4..7], true);
    write_all(&path, &all[7..], true);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.matches("step,").count(), 1, "{text}");
    assert_eq!(read_metrics(&path).unwrap(), all);
    // Not appending starts over.
    write_all(&path, &all[..2], false);
    assert_eq!(read_metrics(&path).unwrap(), all[..2]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn append_refuses_foreign_or_torn_files() {
    let dir = scratch("append-refuse");
    let path = dir.join("metrics.csv");
    std::fs::write(&path, "a,b\n1,2\n").unwrap();
    let err = MetricsWriter::open(&path, true).err().unwrap();
    assert_eq!((err.path.as_path(), err.line), (path.as_path(), Some(1)));
    std::fs::write(&path, format!("{HEADER}\n10,1,2,,,,0.1,,5")).unwrap();
    let err = MetricsWriter::open(&path, true).err().unwrap();
    assert!(err.message.contains("truncate_metrics"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn truncate_keeps_rows_up_to_the_step_and_equals_an_uninterrupted_run() {
    let dir = scratch("truncate");
    let (resumed, straight) = (dir.join("resumed.csv"), dir.join("straight.csv"));
    let all = rows(20);
    write_all(&straight, &all, false);
    // A run that logged up to step 150, crashed mid-row, and is resumed
    // from its checkpoint at step 100.
    write_all(&resumed, &all[..15], false);
    let mut bytes = std::fs::read(&resumed).unwrap();
    bytes.extend_from_slice(b"160,40.0,1.2");
    std::fs::write(&resumed, &bytes).unwrap();
    truncate_metrics(&resumed, 100).unwrap();
    let kept = read_metrics(&resumed).unwrap();
    assert_eq!(kept, all[..10]);
    assert!(kept.iter().all(|r| r.step <= 100));
    write_all(&resumed, &all[10..], true);
    assert_eq!(
        std::fs::read(&resumed).unwrap(),
        std::fs::read(&straight).unwrap()
    );
    // A step between rows, and one before them all.
    truncate_metrics(&resumed, 105).unwrap();
    assert_eq!(read_metrics(&resumed).unwrap(), all[..10]);
    truncate_metrics(&resumed, 0).unwrap();
    assert_eq!(read_metrics(&resumed).unwrap(), vec![]);
    // Only the temporary-free result is left in the folder.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Writes `text` to a file and expects read_metrics to fail on `line`.
fn bad(dir: &Path, name: &str, text: &str, line: Option<usize>) -> ReportError {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let err = read_metrics(&path)
        .err()
        .unwrap_or_else(|| panic!("{name} was accepted"));
    assert_eq!(err.path, path, "{name}: {err}");
    assert_eq!(err.line, line, "{name}: {err}");
    // Display leads with file:line, like the data module's errors.
    let shown = err.to_string();
    let lead = match line {
        Some(l) => format!("{}:{l}: ", path.display()),
        None => format!("{}: ", path.display()),
    };
    assert!(shown.starts_with(&lead), "{shown}");
    err
}

#[test]
fn malformed_metrics_name_file_and_line() {
    let dir = scratch("malformed");
    let good = "10,2.5,4.0,,,,0.001,0.5,1000\n";
    let err = bad(
        &dir,
        "number.csv",
        &format!("{HEADER}\n{good}20,x,4.0,,,,0.001,,1000\n"),
        Some(3),
    );
    assert!(err.message.contains("elapsed_s"), "{err}");
    let err = bad(
        &dir,
        "step.csv",
        &format!("{HEADER}\n-5,1,4.0,,,,0.001,,1000\n"),
        Some(2),
    );
    assert!(err.message.contains("step"), "{err}");
    let err = bad(
        &dir,
        "short.csv",
        &format!("{HEADER}\n{good}20,2.5,4.0,,,,0.001,1000\n"),
        Some(3),
    );
    assert!(err.message.contains("columns"), "{err}");
    bad(
        &dir,
        "long.csv",
        &format!("{HEADER}\n{good}{good}"),
        Some(3),
    );
    bad(
        &dir,
        "long-row.csv",
        &format!("{HEADER}\n10,2.5,4.0,,,,0.001,0.5,1000,7\n"),
        Some(2),
    );
    let missing = HEADER.replace(",valid_acc", "");
    let err = bad(
        &dir,
        "header.csv",
        &format!("{missing}\n10,2.5,4.0,,,0.001,0.5,1000\n"),
        Some(1),
    );
    assert!(err.message.contains("valid_acc"), "{err}");
    bad(
        &dir,
        "required.csv",
        &format!("{HEADER}\n10,2.5,,,,,0.001,0.5,1000\n"),
        Some(2),
    );
    let err = bad(&dir, "empty.csv", "", None);
    assert!(err.message.contains("empty"), "{err}");
    let path = dir.join("utf8.csv");
    std::fs::write(
        &path,
        [
            format!("{HEADER}\n{good}").as_bytes(),
            b"20,\xff,1,,,,1,,1\n",
        ]
        .concat(),
    )
    .unwrap();
    assert_eq!(read_metrics(&path).err().unwrap().line, Some(3));
    let err = read_metrics(&dir.join("absent.csv")).err().unwrap();
    assert!(err.message.contains("cannot read"), "{err}");
    // truncate_metrics reads the same way.
    let err = truncate_metrics(&dir.join("number.csv"), 100)
        .err()
        .unwrap();
    assert_eq!(err.line, Some(3));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Reads an SVG written by the library: well-formed start, and every
/// expected text present (as written by plotters: its own line).
fn check_svg(path: &Path, texts: &[&str]) -> String {
    let svg = std::fs::read_to_string(path).unwrap();
    assert!(
        svg.starts_with("<svg") || svg.starts_with("<?xml"),
        "{}",
        &svg[..80]
    );
    assert!(svg.trim_end().ends_with("</svg>"));
    for t in texts {
        assert!(
            svg.contains(&format!("\n{t}\n</text>")),
            "{t:?} is not a text in {}",
            path.display()
        );
    }
    svg
}

/// Calls `draw` twice into two files and expects identical bytes.
fn deterministic(dir: &Path, name: &str, draw: impl Fn(&Path)) -> PathBuf {
    let (a, b) = (
        dir.join(format!("{name}-a.svg")),
        dir.join(format!("{name}-b.svg")),
    );
    draw(&a);
    draw(&b);
    assert_eq!(
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        "{name}"
    );
    a
}

/// Where the example plots for people to look at go (not cleaned up).
fn samples() -> PathBuf {
    let dir = std::env::temp_dir().join("report-samples");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn seed_series() -> Vec<Series> {
    (0..3)
        .map(|k| {
            let curve = |x: f64, d: f64| {
                (4.0 + d) * (-(x / (300.0 + 200.0 * k as f64))).exp() + 1.0 + 0.2 * k as f64
            };
            let xs: Vec<f64> = (0..=40).map(|i| i as f64 * 25.0).collect();
            Series {
                name: format!("d_model {}", 32 << k),
                points: xs.iter().map(|&x| (x, curve(x, 0.0))).collect(),
                band: Some(
                    xs.iter()
                        .map(|&x| (x, curve(x, -0.3), curve(x, 0.3)))
                        .collect(),
                ),
            }
        })
        .collect()
}

#[test]
fn line_plot_has_its_labels_and_is_deterministic() {
    let dir = scratch("line");
    let series = seed_series();
    for log_y in [false, true] {
        let plot = LinePlot {
            title: "ablation: model width (mean ± range over 3 seeds)",
            x_label: "step",
            y_label: "validation loss",
            log_y,
            series: &series,
        };
        let path = deterministic(&dir, &format!("line-{log_y}"), |p| {
            line_plot_svg(&plot, p).unwrap()
        });
        let svg = check_svg(
            &path,
            &[
                "d_model 32",
                "d_model 64",
                "d_model 128",
                "step",
                "validation loss",
            ],
        );
        assert!(svg.contains("<polygon"), "the bands are drawn");
        let name = if log_y {
            "line-bands-log.svg"
        } else {
            "line-bands.svg"
        };
        std::fs::copy(&path, samples().join(name)).unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn line_plot_survives_nan_inf_empty_and_degenerate_input() {
    let dir = scratch("nan");
    let nan = f64::NAN;
    let cases: Vec<(bool, Vec<Series>)> = vec![
        (false, vec![]),
        (true, vec![]),
        (
            false,
            vec![Series {
                name: "empty".into(),
                points: vec![],
                band: Some(vec![]),
            }],
        ),
        (
            false,
            vec![
                Series {
                    name: "diverged".into(),
                    points: vec![
                        (0.0, 3.0),
                        (1.0, nan),
                        (2.0, f64::INFINITY),
                        (3.0, 2.0),
                        (4.0, 1.5),
                        (nan, 1.0),
                    ],
                    band: Some(vec![
                        (0.0, 2.0, 4.0),
                        (1.0, nan, 3.0),
                        (3.0, 1.0, 3.0),
                        (4.0, 1.0, f64::NEG_INFINITY),
                    ]),
                },
                Series {
                    name: "all nan".into(),
                    points: vec![(nan, nan); 3],
                    band: None,
                },
                Series {
                    name: "one point".into(),
                    points: vec![(2.0, 2.0)],
                    band: None,
                },
            ],
        ),
        (
            true,
            vec![Series {
                name: "non-positive".into(),
                points: vec![(0.0, 0.0), (1.0, -1.0), (2.0, 1e-3), (3.0, 10.0)],
                band: Some(vec![(0.0, -1.0, 1.0)]),
            }],
        ),
        (
            false,
            vec![Series {
                name: "flat".into(),
                points: vec![(5.0, 7.0), (5.0, 7.0)],
                band: None,
            }],
        ),
        (
            true,
            vec![Series {
                name: "flat log".into(),
                points: vec![(5.0, 7.0)],
                band: None,
            }],
        ),
        (
            false,
            vec![Series {
                name: "huge".into(),
                points: vec![(-1e300, -1e300), (1e300, 1e300)],
                band: None,
            }],
        ),
        (
            false,
            vec![Series {
                name: "control\u{7}chars <&>".into(),
                points: vec![(0.0, 1.0), (1.0, 2.0)],
                band: None,
            }],
        ),
    ];
    for (i, (log_y, series)) in cases.iter().enumerate() {
        let plot = LinePlot {
            title: "edge case",
            x_label: "x",
            y_label: "y",
            log_y: *log_y,
            series,
        };
        let path = deterministic(&dir, &format!("case{i}"), |p| {
            line_plot_svg(&plot, p).unwrap()
        });
        let names: Vec<String> = series
            .iter()
            .map(|s| {
                s.name
                    .replace('\u{7}', "\u{FFFD}")
                    .replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;")
            })
            .collect();
        let svg = check_svg(&path, &names.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "case {i}");
        if i == 3 {
            std::fs::copy(&path, samples().join("line-nan.svg")).unwrap();
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn loss_plot_has_train_and_valid() {
    let dir = scratch("loss");
    let mut rows = rows(60);
    let path = deterministic(&dir, "loss", |p| loss_svg(&rows, p).unwrap());
    check_svg(
        &path,
        &["train loss (as optimised)", "valid NLL", "step", "loss"],
    );
    std::fs::copy(&path, samples().join("loss.svg")).unwrap();
    // A diverged run: NaN losses, and no validation at all.
    for r in &mut rows[30..] {
        r.train_loss = f64::NAN;
    }
    for r in &mut rows {
        r.valid_loss = None;
    }
    let path = deterministic(&dir, "loss-nan", |p| loss_svg(&rows, p).unwrap());
    check_svg(&path, &["train loss (as optimised)", "valid NLL"]);
    loss_svg(&[], &dir.join("none.svg")).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

fn tokens(words: &str) -> Vec<String> {
    words.split(' ').map(str::to_string).collect()
}

/// `heads` heads of `rows x cols` softmax-like weights (rows sum to 1).
fn heads(n: usize, rows: usize, cols: usize) -> Vec<Heatmap> {
    (0..n)
        .map(|h| {
            let mut weights = Vec::with_capacity(rows * cols);
            for r in 0..rows {
                let raw: Vec<f32> = (0..cols)
                    .map(|c| {
                        (-((c as f32 - (r + h) as f32 * cols as f32 / rows as f32).powi(2))
                            / (1.0 + h as f32))
                            .exp()
                    })
                    .collect();
                let sum: f32 = raw.iter().sum();
                weights.extend(raw.iter().map(|w| w / sum));
            }
            Heatmap {
                title: format!("layer 1, head {h}"),
                weights,
                rows,
                cols,
            }
        })
        .collect()
}

#[test]
fn attention_grid_has_tokens_and_is_deterministic() {
    let dir = scratch("attention");
    let q = tokens("<s> ein Haus am See");
    let k = tokens("a house by the lake </s> &");
    let hs = heads(4, 5, 7);
    let path = deterministic(&dir, "attention", |p| {
        attention_svg("decoder cross-attention", &hs, &q, &k, p).unwrap()
    });
    let svg = check_svg(
        &path,
        &[
            "decoder cross-attention",
            "layer 1, head 0",
            "layer 1, head 3",
            "&lt;s&gt;",
            "Haus",
            "lake",
            "&lt;/s&gt;",
            "&amp;",
            "0",
            "1",
        ],
    );
    // 4 heads of 5 x 7, plus the colour scale.
    assert!(svg.matches("<rect").count() >= 4 * 35 + 50);
    assert!(svg.contains("rotate(90"), "key tokens are rotated");
    std::fs::copy(&path, samples().join("attention-4-heads.svg")).unwrap();
    // One head, a long token, a NaN weight; zero heads.
    let mut one = heads(1, 5, 7);
    one[0].weights[3] = f32::NAN;
    let long = tokens("a house by the lake </s> Donaudampfschifffahrtsgesellschaft");
    attention_svg("one head", &one, &q, &long, &dir.join("one.svg")).unwrap();
    check_svg(&dir.join("one.svg"), &["Donaudampfschif…"]);
    attention_svg("no heads", &[], &q, &k, &dir.join("none.svg")).unwrap();
    let six = heads(6, 5, 7);
    attention_svg(
        "six heads",
        &six,
        &q,
        &k,
        &samples().join("attention-6-heads.svg"),
    )
    .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[should_panic(expected = "has 34 weights for 5 x 7")]
fn attention_panics_on_weights_of_the_wrong_length() {
    let mut hs = heads(2, 5, 7);
    hs[1].weights.pop();
    let path = std::env::temp_dir().join("report-never-written.svg");
    let _ = attention_svg(
        "bad",
        &hs,
        &tokens("a b c d e"),
        &tokens("a b c d e f g"),
        &path,
    );
}

#[test]
#[should_panic(expected = "is 5 x 7 but there are 5 query tokens and 6 key tokens")]
fn attention_panics_on_token_count_mismatch() {
    let path = std::env::temp_dir().join("report-never-written.svg");
    let _ = attention_svg(
        "bad",
        &heads(1, 5, 7),
        &tokens("a b c d e"),
        &tokens("a b c d e f"),
        &path,
    );
}

#[test]
fn markdown_table_escapes_and_aligns() {
    let table = markdown_table(
        &["run", "a|b", "BLEU"],
        &[
            vec!["base".into(), "x".into(), "27.30".into()],
            vec!["two\nlines".into(), "p|q|r".into(), "".into()],
        ],
    );
    assert_eq!(
        table,
        "| run       | a\\|b    | BLEU  |\n\
         | --------- | ------- | ----- |\n\
         | base      | x       | 27.30 |\n\
         | two lines | p\\|q\\|r |       |\n"
    );
    assert_eq!(markdown_table(&["a"], &[]), "| a   |\n| --- |\n");
}

#[test]
#[should_panic(expected = "row 0 has 1 cells, the header 2")]
fn markdown_table_panics_on_ragged_rows() {
    markdown_table(&["a", "b"], &[vec!["x".into()]]);
}
