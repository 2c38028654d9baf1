//! What a training run leaves behind for people to read: its `metrics.csv`
//! ([`MetricsWriter`], [`read_metrics`], [`truncate_metrics`]), plots as SVG
//! ([`line_plot_svg`], [`loss_svg`], [`attention_svg`]) and markdown tables
//! ([`markdown_table`]).
//!
//! Files from outside are hostile input: a malformed `metrics.csv` is a
//! [`ReportError`] naming the file and line, never a panic. Plots are
//! deterministic (the same input gives a byte-identical SVG, so a report can
//! be diffed and checked into git) and written atomically (a temporary file
//! in the same folder, then a rename), so a killed process never leaves
//! half an SVG behind. Text in the SVGs is plain `<text>` elements: no font
//! is loaded, the viewer picks a sans-serif one.
//!
//! ```
//! use experiments::report::{MetricsRow, MetricsWriter, loss_svg, read_metrics};
//! let dir = std::env::temp_dir().join(format!("report-mod-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let csv = dir.join("metrics.csv");
//! let mut writer = MetricsWriter::open(&csv, false)?;
//! for step in 1..=3 {
//!     writer.write(&MetricsRow {
//!         step,
//!         elapsed_s: 0.5 * step as f64,
//!         train_loss: 4.0 / step as f64,
//!         valid_loss: (step == 3).then_some(1.5),
//!         valid_ppl: (step == 3).then_some(1.5f64.exp()),
//!         valid_acc: (step == 3).then_some(0.4),
//!         lr: 1e-3,
//!         grad_norm: Some(1.0),
//!         tokens_per_s: 1000.0,
//!     })?;
//! }
//! let rows = read_metrics(&csv)?;
//! assert_eq!(rows.len(), 3);
//! loss_svg(&rows, &dir.join("loss.svg"))?;
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), experiments::report::ReportError>(())
//! ```

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::{
    BLACK, BindKeyPoints, ChartBuilder, Color, DrawingArea, FontTransform, IntoDrawingArea,
    IntoFont, IntoLogRange, LineSeries, Palette, Palette99, PathElement, Polygon, RGBColor,
    Rectangle, SVGBackend, SeriesLabelPosition, Text, TextStyle, WHITE,
};
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::{Deserialize, Serialize};

/// What went wrong with which file (and line, 1-based, where there is one).
#[derive(Debug, Clone, PartialEq)]
pub struct ReportError {
    /// The file.
    pub path: PathBuf,
    /// The line, where the problem is on one.
    pub line: Option<usize>,
    /// What is wrong, and what was expected.
    pub message: String,
}

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{l}: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for ReportError {}

/// A [`ReportError`] (shared with [`crate::telemetry`]).
pub(crate) fn error(path: &Path, line: Option<usize>, message: impl Into<String>) -> ReportError {
    ReportError {
        path: path.to_path_buf(),
        line,
        message: message.into(),
    }
}

// ---------------------------------------------------------------------------
// metrics.csv

/// One row of a run's `metrics.csv` (header = the field names, in this
/// order). The validation columns are empty when the row is a
/// training-only log row; `grad_norm` is empty when it was not measured.
/// One row per logged step: steps strictly increase down the file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsRow {
    /// Optimiser steps taken so far.
    pub step: u64,
    /// Wall-clock seconds since the run started (resumed runs continue the count).
    pub elapsed_s: f64,
    /// Training loss (mean cross-entropy, nats per token) at this step.
    pub train_loss: f64,
    /// Validation loss, on rows where the model was evaluated.
    pub valid_loss: Option<f64>,
    /// Validation perplexity (`exp(valid_loss)`), on rows where the model was evaluated.
    pub valid_ppl: Option<f64>,
    /// Validation token accuracy in [0, 1], on rows where the model was evaluated.
    pub valid_acc: Option<f64>,
    /// Learning rate used for this step.
    pub lr: f64,
    /// Global gradient norm before clipping, where measured.
    pub grad_norm: Option<f64>,
    /// Training throughput since the previous row.
    pub tokens_per_s: f64,
}

/// The header line (without the newline), taken from what the csv crate
/// writes for a [`MetricsRow`] so it can never drift from the struct.
fn metrics_header() -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let row = MetricsRow {
        step: 0,
        elapsed_s: 0.0,
        train_loss: 0.0,
        valid_loss: None,
        valid_ppl: None,
        valid_acc: None,
        lr: 0.0,
        grad_norm: None,
        tokens_per_s: 0.0,
    };
    // Writing to a Vec cannot fail, and a flat struct of numbers always
    // serialises: an error here is a bug in this file.
    w.serialize(&row).expect("a MetricsRow serialises");
    let bytes = w.into_inner().expect("flushing into a Vec cannot fail");
    let text = String::from_utf8(bytes).expect("the csv crate writes UTF-8");
    text.lines().next().unwrap_or_default().to_string()
}

/// Appends [`MetricsRow`]s to a `metrics.csv`, flushing after every row so
/// that a crash loses at most the row being written. (Flushing hands the
/// bytes to the OS, which survives the process being killed; it does not
/// `fsync`, so a power cut may lose more.)
pub struct MetricsWriter {
    path: PathBuf,
    csv: csv::Writer<File>,
}

impl MetricsWriter {
    /// Opens `path` for writing rows. With `append == false` the file is
    /// created or emptied and gets a header. With `append == true` (a
    /// resumed run) rows go after the existing ones and the header is
    /// written only if the file is new or empty; an existing file must
    /// start with this struct's header and end with a newline (a torn last
    /// row: call [`truncate_metrics`] first).
    pub fn open(path: &Path, append: bool) -> Result<Self, ReportError> {
        let header = metrics_header();
        let existing = if append {
            match std::fs::read(path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(error(path, None, format!("cannot read: {e}"))),
            }
        } else {
            Vec::new()
        };
        if !existing.is_empty() {
            let first = existing.split(|&b| b == b'\n').next().unwrap_or_default();
            let first = first.strip_suffix(b"\r").unwrap_or(first);
            if first != header.as_bytes() {
                return Err(error(
                    path,
                    Some(1),
                    format!(
                        "not a metrics.csv header: expected `{header}`, found `{}`",
                        String::from_utf8_lossy(first)
                    ),
                ));
            }
            if existing.last() != Some(&b'\n') {
                return Err(error(
                    path,
                    None,
                    "the last row has no newline (torn by a crash?): truncate_metrics first",
                ));
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(path)
            .map_err(|e| error(path, None, format!("cannot open for writing: {e}")))?;
        // The header is written by hand below (and only for a new file), so
        // the csv crate must not add its own before the first row.
        let csv = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(file);
        let mut writer = MetricsWriter {
            path: path.to_path_buf(),
            csv,
        };
        if existing.is_empty() {
            // Write the header now, not with the first row: a run that dies
            // before its first log still leaves a valid (empty) metrics.csv.
            writer
                .csv
                .write_record(header.split(','))
                .and_then(|()| writer.csv.flush().map_err(csv::Error::from))
                .map_err(|e| error(path, None, format!("cannot write the header: {e}")))?;
        }
        Ok(writer)
    }

    /// Appends one row and flushes it to the file.
    pub fn write(&mut self, row: &MetricsRow) -> Result<(), ReportError> {
        self.csv
            .serialize(row)
            .map_err(|e| error(&self.path, None, format!("cannot write a row: {e}")))?;
        self.csv
            .flush()
            .map_err(|e| error(&self.path, None, format!("cannot flush: {e}")))
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Parses `metrics.csv` bytes: the exact header, then rows whose steps
/// strictly increase. Errors name `path` and the line.
fn parse_metrics(path: &Path, bytes: &[u8]) -> Result<Vec<MetricsRow>, ReportError> {
    if bytes.is_empty() {
        return Err(error(
            path,
            None,
            "the file is empty: expected at least the header line",
        ));
    }
    let header = metrics_header();
    let columns: Vec<&str> = header.split(',').collect();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(bytes);
    let found = reader
        .headers()
        .map_err(|e| csv_error(path, &columns, &e))?
        .clone();
    if found.iter().ne(columns.iter().copied()) {
        return Err(error(
            path,
            Some(1),
            format!(
                "not a metrics.csv header: expected `{header}`, found `{}`",
                found.iter().collect::<Vec<_>>().join(",")
            ),
        ));
    }
    let mut rows: Vec<MetricsRow> = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(csv_error(path, &columns, &e)),
        }
        let line = record.position().map(|p| p.line() as usize);
        let row: MetricsRow = record
            .deserialize(Some(&found))
            .map_err(|e| csv_error(path, &columns, &e).at(line))?;
        if let Some(prev) = rows.last()
            && row.step <= prev.step
        {
            return Err(error(
                path,
                line,
                format!(
                    "step {} after step {}: steps must increase (a resumed run not truncated?)",
                    row.step, prev.step
                ),
            ));
        }
        rows.push(row);
    }
    Ok(rows)
}

impl ReportError {
    /// Sets the line where the error did not carry one itself.
    fn at(mut self, line: Option<usize>) -> Self {
        self.line = self.line.or(line);
        self
    }
}

/// A csv crate error as a [`ReportError`]: the line from its position and
/// the column by name rather than by index.
fn csv_error(path: &Path, columns: &[&str], e: &csv::Error) -> ReportError {
    let line = e.position().map(|p| p.line() as usize);
    let message = match e.kind() {
        csv::ErrorKind::Deserialize { err, .. } => match err.field() {
            Some(i) => format!(
                "column `{}`: {}",
                columns.get(i as usize).copied().unwrap_or("?"),
                err.kind()
            ),
            None => err.kind().to_string(),
        },
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{len} columns, expected {expected_len}"),
        csv::ErrorKind::Utf8 { err, .. } => format!("invalid UTF-8 in column {}", err.field() + 1),
        _ => e.to_string(),
    };
    error(path, line, message)
}

/// Reads a `metrics.csv` as hostile input. A file with only the header is
/// an empty run (`Ok(vec![])`); a 0-byte file is an error, since
/// [`MetricsWriter::open`] always writes the header first. Errors name the
/// file and line: a bad header, a bad number, a missing or extra column,
/// steps that do not strictly increase.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricsRow>, ReportError> {
    let bytes = std::fs::read(path).map_err(|e| error(path, None, format!("cannot read: {e}")))?;
    parse_metrics(path, &bytes)
}

/// Keeps only the rows with `step <= last_step` (used when resuming from
/// the checkpoint of `last_step`, so that the file ends up equal to an
/// uninterrupted run's). A last line without a newline is a row torn by a
/// crash and is dropped; every other line must parse. The file is
/// rewritten atomically.
pub fn truncate_metrics(path: &Path, last_step: u64) -> Result<(), ReportError> {
    let bytes = std::fs::read(path).map_err(|e| error(path, None, format!("cannot read: {e}")))?;
    let complete = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(end) => &bytes[..=end],
        None => &bytes[..0],
    };
    let rows = parse_metrics(path, complete)?;
    // The header by hand, as MetricsWriter writes it (the csv crate's own
    // would come again before the first row).
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    w.write_record(metrics_header().split(','))
        .map_err(|e| error(path, None, format!("cannot write the header: {e}")))?;
    for row in rows.iter().filter(|r| r.step <= last_step) {
        w.serialize(row)
            .map_err(|e| error(path, None, format!("cannot write a row: {e}")))?;
    }
    let out = w
        .into_inner()
        .map_err(|e| error(path, None, format!("cannot write: {e}")))?;
    write_atomic(path, &out)
}

/// Writes `bytes` to a temporary file next to `path`, then renames it over
/// `path`: readers see the old file or the new one, never half of one.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    let name = path
        .file_name()
        .ok_or_else(|| error(path, None, "not a file name"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // The process id keeps two processes writing the same file from
    // sharing a temporary; `.tmp` is git-ignored.
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    written.map_err(|e| {
        // Best effort: the temporary may not exist, and the write error is
        // the one worth reporting.
        let _ = std::fs::remove_file(&tmp);
        error(path, None, format!("cannot write: {e}"))
    })
}

// ---------------------------------------------------------------------------
// Plots

/// One line of a [`LinePlot`].
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Shown in the legend.
    pub name: String,
    /// `(x, y)` points, in drawing order. Non-finite points (and, on a log
    /// axis, `y <= 0`) are skipped: the line breaks there.
    pub points: Vec<(f64, f64)>,
    /// An optional band `(x, lo, hi)` drawn translucent behind the line
    /// (e.g. min..max or mean ± std over seeds). Non-finite triples break it.
    pub band: Option<Vec<(f64, f64, f64)>>,
}

/// A chart of [`Series`] against a shared x axis.
#[derive(Clone, Copy, Debug)]
pub struct LinePlot<'a> {
    /// Above the chart.
    pub title: &'a str,
    /// Under the x axis.
    pub x_label: &'a str,
    /// Beside the y axis.
    pub y_label: &'a str,
    /// A logarithmic y axis (points with `y <= 0` are then skipped).
    pub log_y: bool,
    /// The lines, coloured and listed in the legend in this order.
    pub series: &'a [Series],
}

/// Size of a line plot, in SVG pixels.
const LINE_PLOT_SIZE: (u32, u32) = (800, 500);

/// The Okabe-Ito colours (distinguishable with the common colour-vision
/// deficiencies), minus yellow, which is unreadable on white.
const SERIES_COLOURS: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
];

/// The colour of series `i`: distinct for every series (past the
/// Okabe-Ito colours, plotters' 99-colour palette).
fn series_colour(i: usize) -> RGBColor {
    match SERIES_COLOURS.get(i) {
        Some(&c) => c,
        None => {
            let (r, g, b) = Palette99::COLORS[(i - SERIES_COLOURS.len()) % Palette99::COLORS.len()];
            RGBColor(r, g, b)
        }
    }
}

/// Text as it goes into the SVG: control characters are not allowed in
/// XML, so they become U+FFFD (plotters escapes `<`, `&` and quotes).
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect()
}

/// Splits `items` into runs of consecutive `Some`s (so a line breaks at a
/// non-finite point instead of jumping over it).
fn runs<T>(items: impl Iterator<Item = Option<T>>) -> Vec<Vec<T>> {
    let (mut out, mut run) = (Vec::new(), Vec::new());
    for item in items {
        match item {
            Some(v) => run.push(v),
            None if !run.is_empty() => out.push(std::mem::take(&mut run)),
            None => {}
        }
    }
    if !run.is_empty() {
        out.push(run);
    }
    out
}

/// The smallest and largest of `values`, `None` when there are none.
fn extent(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// A linear axis range over `span` (0..1 when there is nothing to show),
/// widened by `pad` of its length on each side, never empty.
fn linear_range(span: Option<(f64, f64)>, pad: f64) -> Range<f64> {
    let Some((lo, hi)) = span else {
        return 0.0..1.0;
    };
    let width = hi - lo;
    if width == 0.0 || !width.is_finite() {
        // One value (or a span too wide for f64): centre it, or clamp to a
        // range whose length is finite so tick computation stays sane.
        let (lo, hi) = if width == 0.0 {
            (lo - lo.abs().max(1.0) * 0.5, hi + hi.abs().max(1.0) * 0.5)
        } else {
            (lo / 2.0, hi / 2.0)
        };
        return lo..hi;
    }
    let (plo, phi) = (lo - pad * width, hi + pad * width);
    if plo.is_finite() && phi.is_finite() {
        plo..phi
    } else {
        lo..hi
    }
}

/// A log axis range over a positive `span` (1..10 when there is nothing
/// to show), widened by the factor `(hi / lo)^pad` on each side.
fn log_range(span: Option<(f64, f64)>, pad: f64) -> Range<f64> {
    let Some((lo, hi)) = span else {
        return 1.0..10.0;
    };
    if lo == hi {
        return lo / 2.0..hi * 2.0;
    }
    let factor = (hi / lo).powf(pad);
    let (plo, phi) = (lo / factor, hi * factor);
    if plo > 0.0 && phi.is_finite() {
        plo..phi
    } else {
        lo..hi
    }
}

/// A tick label: at most 4 significant digits, no trailing zeros (axis
/// key points such as `0.1 * 3` are not exact in binary, and plotters'
/// default `{:?}` would print every digit).
fn tick_label(v: &f64) -> String {
    let v = *v;
    if v == 0.0 || !v.is_finite() {
        return "0".to_string();
    }
    let magnitude = v.abs().log10().floor();
    if !(-4.0..6.0).contains(&magnitude) {
        return format!("{v:.2e}");
    }
    let decimals = (3.0 - magnitude).max(0.0) as usize;
    let text = format!("{v:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// Bold and light grid lines for a log axis over `range`: round values
/// (1, 2, 5 and the like times a power of 10), fewer the more decades
/// the range spans; evenly spaced (in log space) when none fall inside.
fn log_ticks(range: &Range<f64>) -> (Vec<f64>, Vec<f64>) {
    let (lo, hi) = (range.start, range.end);
    let decades = (hi / lo).log10();
    let (bold, light): (&[f64], &[f64]) = if decades <= 1.0 {
        (&[1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0], &[])
    } else if decades <= 2.5 {
        (&[1.0, 2.0, 5.0], &[3.0, 4.0, 6.0, 7.0, 8.0, 9.0])
    } else if decades <= 8.0 {
        (&[1.0], &[2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
    } else {
        (&[1.0], &[])
    };
    let first = lo.log10().floor() as i32;
    let last = hi.log10().ceil() as i32;
    let at = |mantissas: &[f64]| -> Vec<f64> {
        (first..=last)
            .flat_map(|k| mantissas.iter().map(move |m| m * 10f64.powi(k)))
            .filter(|v| (lo..=hi).contains(v))
            .collect()
    };
    let bold_points = at(bold);
    if bold_points.len() >= 2 {
        return (bold_points, at(light));
    }
    let even = (0..=4)
        .map(|i| lo * (hi / lo).powf(f64::from(i) / 4.0))
        .collect();
    (even, Vec::new())
}

/// Renders into an in-memory SVG of `size`, then writes it atomically.
fn render_svg(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), String>,
) -> Result<(), ReportError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| e.to_string())
            .and_then(|()| draw(&root))
            .and_then(|()| root.present().map_err(|e| e.to_string()))
            .map_err(|e| error(path, None, format!("cannot plot: {e}")))?;
    }
    write_atomic(path, svg.as_bytes())
}

/// Draws `plot` on `area` with the y axis `y` (linear or log); `keep` says
/// which y values that axis can show.
fn draw_line_chart<Y>(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    plot: &LinePlot,
    x: Range<f64>,
    y: Y,
    keep: impl Fn(f64) -> bool,
) -> Result<(), String>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let e = |e: plotters::drawing::DrawingAreaErrorKind<std::io::Error>| e.to_string();
    let mut chart = ChartBuilder::on(area)
        .caption(clean(plot.title), ("sans-serif", 22))
        .margin(12)
        // Room for half of the last x label, centred on the right edge.
        .margin_right(30)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(x, y)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc(clean(plot.x_label))
        .y_desc(clean(plot.y_label))
        .light_line_style(BLACK.mix(0.05))
        .bold_line_style(BLACK.mix(0.15))
        .label_style(("sans-serif", 14))
        .x_label_formatter(&tick_label)
        .y_label_formatter(&tick_label)
        .axis_desc_style(("sans-serif", 16))
        .draw()
        .map_err(e)?;
    let point_ok = |&(px, py): &(f64, f64)| px.is_finite() && py.is_finite() && keep(py);
    // Bands first, so that every line is drawn over every band.
    for (i, s) in plot.series.iter().enumerate() {
        let Some(band) = &s.band else { continue };
        let colour = series_colour(i);
        let triples = band.iter().map(|&(bx, lo, hi)| {
            (bx.is_finite() && lo.is_finite() && hi.is_finite() && keep(lo) && keep(hi))
                .then_some((bx, lo, hi))
        });
        let polygons = runs(triples).into_iter().map(|run| {
            let upper = run.iter().map(|&(bx, _, hi)| (bx, hi));
            let lower = run.iter().rev().map(|&(bx, lo, _)| (bx, lo));
            Polygon::new(
                upper.chain(lower).collect::<Vec<_>>(),
                colour.mix(0.2).filled(),
            )
        });
        chart.draw_series(polygons).map_err(e)?;
    }
    for (i, s) in plot.series.iter().enumerate() {
        let colour = series_colour(i);
        let style = colour.stroke_width(2);
        // One draw call per unbroken run; the first carries the legend entry
        // (an all-NaN series still gets one, with nothing drawn).
        let mut segments = runs(s.points.iter().map(|p| point_ok(p).then_some(*p)));
        if segments.is_empty() {
            segments.push(Vec::new());
        }
        for (k, seg) in segments.into_iter().enumerate() {
            // A lone point would be an invisible line: mark it.
            let marker = if seg.len() == 1 { 3 } else { 0 };
            let anno = chart
                .draw_series(LineSeries::new(seg, style).point_size(marker))
                .map_err(e)?;
            if k == 0 {
                anno.label(clean(&s.name)).legend(move |(lx, ly)| {
                    PathElement::new(vec![(lx, ly), (lx + 20, ly)], colour.stroke_width(2))
                });
            }
        }
    }
    if !plot.series.is_empty() {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(e)?;
    }
    Ok(())
}

/// Writes `plot` as an SVG to `path` (800 x 500): one colour per series,
/// a legend, each series' band (when `Some`) translucent behind its line.
/// Empty series, NaN and infinite points are drawn as gaps, not errors;
/// axis ranges cover the finite points and bands. The same input gives a
/// byte-identical file.
///
/// ```
/// use experiments::report::{LinePlot, Series, line_plot_svg};
/// let series = [Series {
///     name: "lr 1e-3 (3 seeds)".to_string(),
///     points: vec![(0.0, 4.0), (100.0, 2.5), (200.0, 2.0)],
///     band: Some(vec![(0.0, 3.9, 4.1), (100.0, 2.3, 2.7), (200.0, 1.8, 2.2)]),
/// }];
/// let plot = LinePlot {
///     title: "validation loss",
///     x_label: "step",
///     y_label: "loss",
///     log_y: false,
///     series: &series,
/// };
/// let path = std::env::temp_dir().join(format!("line-plot-doc-{}.svg", std::process::id()));
/// line_plot_svg(&plot, &path)?;
/// let svg = std::fs::read_to_string(&path).unwrap();
/// assert!(svg.starts_with("<svg") && svg.contains("lr 1e-3 (3 seeds)"));
/// # std::fs::remove_file(&path).unwrap();
/// # Ok::<(), experiments::report::ReportError>(())
/// ```
pub fn line_plot_svg(plot: &LinePlot, path: &Path) -> Result<(), ReportError> {
    let keep = |y: f64| !plot.log_y || y > 0.0;
    let ok = |x: f64, y: f64| x.is_finite() && y.is_finite() && keep(y);
    let points = plot.series.iter().flat_map(|s| s.points.iter().copied());
    let bands = plot
        .series
        .iter()
        .filter_map(|s| s.band.as_ref())
        .flatten()
        .filter(|&&(x, lo, hi)| ok(x, lo) && ok(x, hi))
        .flat_map(|&(x, lo, hi)| [(x, lo), (x, hi)]);
    let finite: Vec<(f64, f64)> = points.filter(|&(x, y)| ok(x, y)).chain(bands).collect();
    let xs = linear_range(extent(finite.iter().map(|p| p.0)), 0.0);
    let ys = extent(finite.iter().map(|p| p.1));
    render_svg(path, LINE_PLOT_SIZE, |area| {
        if plot.log_y {
            let range = log_range(ys, 0.05);
            let (bold, light) = log_ticks(&range);
            let y = range
                .log_scale()
                .with_key_points(bold)
                .with_light_points(light);
            draw_line_chart(area, plot, xs, y, keep)
        } else {
            draw_line_chart(area, plot, xs, linear_range(ys, 0.05), keep)
        }
    })
}

/// Writes the loss curves of one run to `path`: training loss at every
/// row and validation loss where it was measured, against step. The y
/// axis is logarithmic when every finite loss is positive.
pub fn loss_svg(rows: &[MetricsRow], path: &Path) -> Result<(), ReportError> {
    let train: Vec<(f64, f64)> = rows.iter().map(|r| (r.step as f64, r.train_loss)).collect();
    let valid: Vec<(f64, f64)> = rows
        .iter()
        .filter_map(|r| r.valid_loss.map(|v| (r.step as f64, v)))
        .collect();
    let log_y = train
        .iter()
        .chain(&valid)
        .filter(|p| p.1.is_finite())
        .all(|p| p.1 > 0.0);
    let series = [
        Series {
            // The training objective (label-smoothed when smoothing is on:
            // above the NLL by smoothing's floor, not a worse fit).
            name: "train loss (as optimised)".to_string(),
            points: train,
            band: None,
        },
        Series {
            name: "valid NLL".to_string(),
            points: valid,
            band: None,
        },
    ];
    let plot = LinePlot {
        title: "loss",
        x_label: "step",
        y_label: if log_y {
            "cross-entropy (nats/token, log scale)"
        } else {
            "cross-entropy (nats/token)"
        },
        log_y,
        series: &series,
    };
    line_plot_svg(&plot, path)
}

/// One attention head's weights for [`attention_svg`].
#[derive(Clone, Debug, PartialEq)]
pub struct Heatmap {
    /// Above the panel (e.g. "layer 2, head 3").
    pub title: String,
    /// `rows x cols` weights, row-major: row = query position, column = key
    /// position. Drawn clamped to [0, 1]; non-finite weights are magenta.
    pub weights: Vec<f32>,
    /// Query positions.
    pub rows: usize,
    /// Key positions.
    pub cols: usize,
}

/// The colour of weight `w` on a light-to-dark scale (0 = near white,
/// 1 = dark blue), linear between three stops; non-finite is magenta so
/// that it cannot pass for a weight.
fn weight_colour(w: f32) -> RGBColor {
    if !w.is_finite() {
        return RGBColor(255, 0, 255);
    }
    const STOPS: [(f32, f32, f32); 3] = [
        (255.0, 255.0, 235.0),
        (65.0, 150.0, 200.0),
        (20.0, 30.0, 90.0),
    ];
    let t = w.clamp(0.0, 1.0) * 2.0;
    let (a, b, f) = if t <= 1.0 {
        (STOPS[0], STOPS[1], t)
    } else {
        (STOPS[1], STOPS[2], t - 1.0)
    };
    let mix = |p: f32, q: f32| (p + (q - p) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Token labels longer than this many characters are cut (with `…`) so
/// that one long token cannot push the panels apart.
const MAX_LABEL_CHARS: usize = 16;

/// A token as an axis label: control characters replaced, long ones cut.
fn token_label(token: &str) -> String {
    let t = clean(token);
    if t.chars().count() > MAX_LABEL_CHARS {
        let mut cut: String = t.chars().take(MAX_LABEL_CHARS - 1).collect();
        cut.push('…');
        cut
    } else {
        t
    }
}

/// Writes attention weights as an SVG grid of heatmaps, one panel per
/// head (`ceil(sqrt(n))` panels a row: 4 heads -> 2 x 2), query tokens
/// down the left of each panel, key tokens under it (rotated), and a
/// colour scale from 0 to 1 at the right. Tokens longer than 16
/// characters are cut. The same input gives a byte-identical file.
///
/// # Panics
///
/// When the shapes disagree (a programming error, not bad data): a head
/// whose `weights.len() != rows * cols`, or whose `rows` / `cols` differ
/// from the number of query / key tokens. The message names the shapes.
pub fn attention_svg(
    title: &str,
    heads: &[Heatmap],
    query_tokens: &[String],
    key_tokens: &[String],
    path: &Path,
) -> Result<(), ReportError> {
    for (i, h) in heads.iter().enumerate() {
        assert_eq!(
            h.weights.len(),
            h.rows * h.cols,
            "attention_svg: head {i} ({:?}) has {} weights for {} x {} (rows x cols)",
            h.title,
            h.weights.len(),
            h.rows,
            h.cols
        );
        assert!(
            h.rows == query_tokens.len() && h.cols == key_tokens.len(),
            "attention_svg: head {i} ({:?}) is {} x {} but there are {} query tokens and {} key tokens",
            h.title,
            h.rows,
            h.cols,
            query_tokens.len(),
            key_tokens.len()
        );
    }
    let queries: Vec<String> = query_tokens.iter().map(|t| token_label(t)).collect();
    let keys: Vec<String> = key_tokens.iter().map(|t| token_label(t)).collect();
    let (nq, nk) = (queries.len() as i32, keys.len() as i32);

    // Layout in SVG pixels. Text widths are estimated (no font is loaded):
    // about 7 pixels a character at the label size.
    const CHAR_W: i32 = 7;
    let cell = (300 / nq.max(nk).max(1)).clamp(6, 28);
    let chars =
        |labels: &[String]| labels.iter().map(|l| l.chars().count()).max().unwrap_or(0) as i32;
    let left = 10 + CHAR_W * chars(&queries);
    let below = 10 + CHAR_W * chars(&keys);
    let panel_title = 24;
    let panel_w = left + nk * cell + 24;
    let panel_h = panel_title + nq * cell + below + 16;
    let n = heads.len() as i32;
    let per_row = (1..).find(|c| c * c >= n).unwrap_or(1).max(1);
    let panel_rows = (n + per_row - 1) / per_row;
    let top = 44;
    let bar = (90, 200); // colour scale area: width, height of the scale
    let width = per_row * panel_w + bar.0 + 20;
    let height = top + (panel_rows * panel_h).max(bar.1 + 40);

    let label = |size: f64, pos: Pos| {
        TextStyle::from(("sans-serif", size).into_font())
            .color(&BLACK)
            .pos(pos)
    };
    render_svg(path, (width as u32, height as u32), |root| {
        let e = |e: plotters::drawing::DrawingAreaErrorKind<std::io::Error>| e.to_string();
        root.draw(&Text::new(
            clean(title),
            (width / 2, 12),
            label(22.0, Pos::new(HPos::Center, VPos::Top)),
        ))
        .map_err(e)?;
        for (i, head) in heads.iter().enumerate() {
            let (pr, pc) = (i as i32 / per_row, i as i32 % per_row);
            let (px, py) = (pc * panel_w, top + pr * panel_h);
            let (gx, gy) = (px + left, py + panel_title);
            root.draw(&Text::new(
                clean(&head.title),
                (gx + nk * cell / 2, py + 4),
                label(16.0, Pos::new(HPos::Center, VPos::Top)),
            ))
            .map_err(e)?;
            for (r, row) in head.weights.chunks(head.cols.max(1)).enumerate() {
                for (c, &w) in row.iter().enumerate() {
                    let (x, y) = (gx + c as i32 * cell, gy + r as i32 * cell);
                    root.draw(&Rectangle::new(
                        [(x, y), (x + cell, y + cell)],
                        weight_colour(w).filled(),
                    ))
                    .map_err(e)?;
                }
            }
            root.draw(&Rectangle::new(
                [(gx, gy), (gx + nk * cell, gy + nq * cell)],
                BLACK.mix(0.5),
            ))
            .map_err(e)?;
            for (r, q) in queries.iter().enumerate() {
                root.draw(&Text::new(
                    q.as_str(),
                    (gx - 5, gy + r as i32 * cell + cell / 2),
                    label(14.0, Pos::new(HPos::Right, VPos::Center)),
                ))
                .map_err(e)?;
            }
            for (c, k) in keys.iter().enumerate() {
                root.draw(&Text::new(
                    k.as_str(),
                    (gx + c as i32 * cell + cell / 2, gy + nq * cell + 5),
                    label(14.0, Pos::new(HPos::Left, VPos::Center))
                        .transform(FontTransform::Rotate90),
                ))
                .map_err(e)?;
            }
        }
        // The colour scale: 50 stripes from 1 (top) down to 0.
        let (bx, by) = (width - bar.0, top + 20);
        const STRIPES: i32 = 50;
        for s in 0..STRIPES {
            let y0 = by + s * bar.1 / STRIPES;
            let y1 = by + (s + 1) * bar.1 / STRIPES;
            let w = 1.0 - (s as f32 + 0.5) / STRIPES as f32;
            root.draw(&Rectangle::new(
                [(bx, y0), (bx + 20, y1)],
                weight_colour(w).filled(),
            ))
            .map_err(e)?;
        }
        root.draw(&Rectangle::new(
            [(bx, by), (bx + 20, by + bar.1)],
            BLACK.mix(0.5),
        ))
        .map_err(e)?;
        for (text, y) in [("1", by), ("0.5", by + bar.1 / 2), ("0", by + bar.1)] {
            root.draw(&Text::new(
                text,
                (bx + 26, y),
                label(14.0, Pos::new(HPos::Left, VPos::Center)),
            ))
            .map_err(e)?;
        }
        root.draw(&Text::new(
            "weight",
            (bx + 10, by - 6),
            label(14.0, Pos::new(HPos::Center, VPos::Bottom)),
        ))
        .map_err(e)?;
        Ok(())
    })
}

// ---------------------------------------------------------------------------
// Tables

/// A GitHub-flavoured markdown table: a header row, a `---` row, then
/// `rows`, columns padded to line up in plain text. `|` in a cell is
/// escaped (`\|`) and line breaks become spaces, so no cell can break
/// the table.
///
/// # Panics
///
/// When a row has a different number of cells than `headers` (a
/// programming error); the message names both counts.
///
/// ```
/// use experiments::report::markdown_table;
/// let table = markdown_table(
///     &["model", "BLEU"],
///     &[vec!["base".to_string(), "27.3".to_string()],
///       vec!["no pos | enc".to_string(), "3.1".to_string()]],
/// );
/// assert_eq!(
///     table,
///     "| model         | BLEU |\n\
///      | ------------- | ---- |\n\
///      | base          | 27.3 |\n\
///      | no pos \\| enc | 3.1  |\n"
/// );
/// ```
pub fn markdown_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let cell = |s: &str| {
        s.replace("\r\n", " ")
            .replace(['\n', '\r'], " ")
            .replace('|', "\\|")
    };
    let head: Vec<String> = headers.iter().map(|h| cell(h)).collect();
    let body: Vec<Vec<String>> = rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            assert_eq!(
                row.len(),
                headers.len(),
                "markdown_table: row {i} has {} cells, the header {}",
                row.len(),
                headers.len()
            );
            row.iter().map(|c| cell(c)).collect()
        })
        .collect();
    // At least 3 wide: GitHub needs `---` in the separator row.
    let widths: Vec<usize> = (0..head.len())
        .map(|j| {
            body.iter()
                .map(|r| r[j].chars().count())
                .chain([head[j].chars().count(), 3])
                .max()
                .unwrap_or(3)
        })
        .collect();
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, &w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let dashes: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
    let mut out = line(&head);
    out.push_str(&line(&dashes));
    for r in &body {
        out.push_str(&line(r));
    }
    out
}
