//! What happens inside a model while it trains, measured on a fixed
//! validation batch at every validation step (and before the first step)
//! and appended to the run's `telemetry.csv`:
//!
//! - `grad_norm`: the L2 norm of the gradient of each layer's parameters
//!   (the loss the run optimises, smoothing included, in eval mode: no
//!   dropout, BatchNorm on its running statistics). Xiong et al. (2020)
//!   explain why post-LN needs warmup by the large gradients of its last
//!   layers at initialisation; Shen et al. (2020) see BatchNorm's
//!   gradient outliers here.
//! - `attn_entropy`: the entropy (nats) of each head's attention
//!   distribution, averaged over the real (non-pad) query positions: near
//!   0 a head has collapsed onto one key; near `ln T` it is uniform.
//! - `rank_collapse`: for each stack's input and each layer's output X
//!   (T, D) of one sequence, `||X - 1 x̄ᵀ||_F / ||X||_F` with x̄ the mean
//!   row, over the real tokens, averaged over the batch (see
//!   [`rank_collapse`]). Dong, Cordonnier & Loukas (2021) show that
//!   self-attention without skip connections drives this residual to 0
//!   (every token the same) doubly exponentially with depth.
//!
//! Telemetry reads the model and never writes it: a run with telemetry on
//! trains bit for bit like one without (tested in `train_loop.rs`).
//!
//! ```
//! use experiments::telemetry::rank_collapse;
//! // Two identical rows: fully collapsed.
//! assert_eq!(rank_collapse(&[1.0, 2.0, 1.0, 2.0], 2, 2), 0.0);
//! // Rows that are scaled copies are rank 1 but NOT collapsed (Dong et al.):
//! assert!(rank_collapse(&[1.0, 2.0, 3.0, 6.0], 2, 2) > 0.1);
//! ```

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use autograd::Tape;
use serde::{Deserialize, Serialize};
use transformer::{Ctx, Entry, Module, Transformer, Visitor};

use crate::batching::Batch;
use crate::corpus::{Corpus, seq2seq_batch};
use crate::report::{ReportError, error};

/// One measurement: `metric` of `module` (and `head`, for attention) at `step`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TelemetryRow {
    /// Optimiser steps taken when it was measured (0 = at initialisation).
    pub step: u64,
    /// `grad_norm`, `attn_entropy` or `rank_collapse`.
    pub metric: String,
    /// The layer: `encoder.layers.0`, `decoder.layers.1.cross_attn`,
    /// `encoder.input`, `src_embed`, ...
    pub module: String,
    /// The head (attention entropy only).
    pub head: Option<usize>,
    /// The value.
    pub value: f64,
}

/// Gradient norm per layer.
pub const GRAD_NORM: &str = "grad_norm";
/// Attention entropy per head.
pub const ATTN_ENTROPY: &str = "attn_entropy";
/// Relative distance from "all tokens equal" per layer output.
pub const RANK_COLLAPSE: &str = "rank_collapse";

/// The fixed batch telemetry is measured on: the first `rows` validation
/// examples (seq2seq) or held-out windows (language models).
pub fn probe_batch(corpus: &Corpus, rows: usize) -> Option<Batch> {
    match corpus {
        Corpus::Seq2Seq(d) => {
            let n = d.valid.len().min(rows);
            (n > 0).then(|| seq2seq_batch(&d.valid, &(0..n).collect::<Vec<_>>()))
        }
        Corpus::Lm(d) => {
            let starts: Vec<usize> = d.valid_starts().into_iter().take(rows).collect();
            (!starts.is_empty()).then(|| d.batch(&d.valid, &starts))
        }
    }
}

/// The layer a parameter belongs to, from its dotted name:
/// `encoder.layers.0.self_attn.w_q` -> `encoder.layers.0`,
/// `decoder.final_norm.gain` -> `decoder.final_norm`, `src_embed.weight`
/// -> `src_embed`.
pub fn layer_of(param: &str) -> String {
    let parts: Vec<&str> = param.split('.').collect();
    let keep = match parts.as_slice() {
        [_, "layers", _, ..] => 3,
        [stack, _, ..] if *stack == "encoder" || *stack == "decoder" => 2,
        _ => 1,
    };
    parts[..keep.min(parts.len())].join(".")
}

/// `||X - 1 x̄ᵀ||_F / ||X||_F` for X (rows, cols) stored row-major, with x̄
/// the mean row: 0 when every row is the same, 0 for X = 0 too.
pub fn rank_collapse(x: &[f64], rows: usize, cols: usize) -> f64 {
    assert_eq!(
        x.len(),
        rows * cols,
        "rank_collapse: {} values for a ({rows}, {cols}) matrix",
        x.len()
    );
    if rows == 0 || cols == 0 {
        return 0.0;
    }
    let mut mean = vec![0.0; cols];
    for r in x.chunks(cols) {
        for (m, v) in mean.iter_mut().zip(r) {
            *m += v / rows as f64;
        }
    }
    let (mut num, mut den) = (0.0, 0.0);
    for r in x.chunks(cols) {
        for (m, v) in mean.iter().zip(r) {
            num += (v - m) * (v - m);
            den += v * v;
        }
    }
    if den == 0.0 { 0.0 } else { (num / den).sqrt() }
}

/// Entropy (nats) of a probability row; zero entries contribute 0.
pub fn entropy(p: &[f64]) -> f64 {
    -p.iter()
        .filter(|&&v| v > 0.0)
        .map(|&v| v * v.ln())
        .sum::<f64>()
}

/// Real lengths of the queries (or tokens) of the stack a name belongs to.
fn lens_for<'b>(name: &str, batch: &'b Batch) -> &'b [usize] {
    if name.starts_with("encoder") {
        &batch.src_lens
    } else {
        &batch.tgt_lens
    }
}

/// Every telemetry value of `model` on `batch`, at `step`.
pub fn measure(
    model: &mut Transformer<f32>,
    batch: &Batch,
    smoothing: f64,
    step: u64,
) -> Vec<TelemetryRow> {
    let tape = Tape::new();
    let ctx = Ctx::eval(&tape);
    ctx.keep_attention();
    ctx.keep_hidden();
    let logits = model.forward(&ctx, &batch.src, &batch.tgt_in); // (B, T, V)
    let loss = model.loss(logits, &batch.labels, smoothing);
    let attention = ctx.take_attention();
    let hidden = ctx.take_hidden();
    let grads = tape.backward(loss).into_params();
    drop(ctx);
    drop(tape);
    let mut rows = Vec::new();
    let row = |metric: &str, module: String, head, value| TelemetryRow {
        step,
        metric: metric.to_string(),
        module,
        head,
        value,
    };
    // Gradient norm per layer, in visiting order.
    let mut layers: Vec<(String, f64)> = Vec::new();
    model.visit(&mut Visitor::new(&mut |name, e| {
        if let Entry::Param(p) = e
            && let Some(g) = grads.get(p)
        {
            let sq: f64 = g.data().iter().map(|&v| f64::from(v).powi(2)).sum();
            let layer = layer_of(name);
            match layers.iter_mut().find(|(l, _)| *l == layer) {
                Some((_, s)) => *s += sq,
                None => layers.push((layer, sq)),
            }
        }
    }));
    for (layer, sq) in layers {
        rows.push(row(GRAD_NORM, layer, None, sq.sqrt()));
    }
    // Attention entropy per head: weights (B, H, Tq, Tk).
    for (name, w) in &attention {
        let &[b, h, tq, tk] = w.shape() else {
            panic!(
                "telemetry: attention `{name}` of shape {:?} is not (B, H, Tq, Tk)",
                w.shape()
            );
        };
        let lens = lens_for(name, batch);
        let data = w.data();
        for head in 0..h {
            let (mut sum, mut n) = (0.0, 0usize);
            for (bi, &len) in lens.iter().enumerate().take(b) {
                for q in 0..len.min(tq) {
                    let at = ((bi * h + head) * tq + q) * tk;
                    let p: Vec<f64> = data[at..at + tk].iter().map(|&v| f64::from(v)).collect();
                    sum += entropy(&p);
                    n += 1;
                }
            }
            if n > 0 {
                rows.push(row(ATTN_ENTROPY, name.clone(), Some(head), sum / n as f64));
            }
        }
    }
    // Rank collapse per stack input and layer output: (B, T, D).
    for (name, x) in &hidden {
        let &[b, t, d] = x.shape() else {
            panic!(
                "telemetry: hidden state `{name}` of shape {:?} is not (B, T, D)",
                x.shape()
            );
        };
        if t == 0 {
            continue; // the empty encoder of a decoder-only model
        }
        let lens = lens_for(name, batch);
        let data = x.data();
        let (mut sum, mut n) = (0.0, 0usize);
        for (bi, &len) in lens.iter().enumerate().take(b) {
            let len = len.min(t);
            if len < 2 {
                continue; // one token is trivially "all equal"
            }
            let at = bi * t * d;
            let m: Vec<f64> = data[at..at + len * d]
                .iter()
                .map(|&v| f64::from(v))
                .collect();
            sum += rank_collapse(&m, len, d);
            n += 1;
        }
        if n > 0 {
            rows.push(row(RANK_COLLAPSE, name.clone(), None, sum / n as f64));
        }
    }
    rows
}

/// Appends rows to `telemetry.csv` (writing the header first if the file
/// is new or empty).
pub fn append(path: &Path, rows: &[TelemetryRow]) -> Result<(), ReportError> {
    let fresh = std::fs::metadata(path).map_or(true, |m| m.len() == 0);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| error(path, None, e.to_string()))?;
    let mut w = csv::WriterBuilder::new()
        .has_headers(fresh)
        .from_writer(file);
    for r in rows {
        w.serialize(r)
            .map_err(|e| error(path, None, e.to_string()))?;
    }
    w.flush().map_err(|e| error(path, None, e.to_string()))?;
    let mut file = w
        .into_inner()
        .map_err(|e| error(path, None, e.to_string()))?;
    file.flush().map_err(|e| error(path, None, e.to_string()))
}

/// Reads a `telemetry.csv` (a missing file is no telemetry). Hostile input:
/// a bad header, a malformed row or a step that goes backwards is an error naming the file and line.
pub fn read(path: &Path) -> Result<Vec<TelemetryRow>, ReportError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(error(path, None, e.to_string())),
    };
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut r = csv::ReaderBuilder::new().from_reader(bytes.as_slice());
    let header = r
        .headers()
        .map_err(|e| error(path, Some(1), e.to_string()))?
        .clone();
    if header.iter().collect::<Vec<_>>() != ["step", "metric", "module", "head", "value"] {
        return Err(error(
            path,
            Some(1),
            "expected the header `step,metric,module,head,value`",
        ));
    }
    let mut rows: Vec<TelemetryRow> = Vec::new();
    for (i, rec) in r.records().enumerate() {
        let line = i + 2;
        let rec = rec.map_err(|e| error(path, Some(line), e.to_string()))?;
        let row: TelemetryRow = rec
            .deserialize(Some(&header))
            .map_err(|e| error(path, Some(line), e.to_string()))?;
        if rows.last().is_some_and(|p| row.step < p.step) {
            return Err(error(path, Some(line), "steps go backwards"));
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Drops rows after `last_step` (a resumed run measures them again).
pub fn truncate(path: &Path, last_step: u64) -> Result<(), ReportError> {
    if !path.exists() {
        return Ok(());
    }
    let rows: Vec<TelemetryRow> = read(path)?
        .into_iter()
        .filter(|r| r.step <= last_step)
        .collect();
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    append(&tmp, &rows)?;
    std::fs::rename(&tmp, path).map_err(|e| error(path, None, e.to_string()))
}
