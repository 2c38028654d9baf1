//! The end of a run: evaluate the best checkpoint, write `summary.json`,
//! and render the report (`report.md`, `loss.svg`, `attention.svg`) from
//! the run folder alone, so the `report` binary can redo it for any run.

use std::path::Path;

use serde::{Deserialize, Serialize};
use transformer::{Ctx, TokenBatch, Trainer, Transformer};

use crate::config::RunConfig;
use crate::corpus::{Corpus, Vocabs};
use crate::evaluate::{EvalReport, evaluate};
use crate::report::{Heatmap, attention_svg, loss_svg, markdown_table, read_metrics};
use crate::train::{Outcome, Run, best_checkpoint, write_atomic};
use crate::vocab::{BOS, EOS, word_count};

/// What `summary.json` holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The run folder's name.
    pub name: String,
    /// `finished`, `diverged` or `stopped`.
    pub outcome: String,
    /// The diverging step, if it diverged, and why.
    pub diverged_at: Option<u64>,
    /// Why it diverged.
    pub divergence: Option<String>,
    /// Optimiser steps taken.
    pub steps: u64,
    /// Training wall time (seconds, all sessions).
    pub train_seconds: f64,
    /// Training tokens per second (source + target, real tokens), mean
    /// over the logged windows.
    pub tokens_per_s: f64,
    /// Evaluation wall time (seconds).
    pub eval_seconds: f64,
    /// Model parameters.
    pub parameters: u128,
    /// The step of the best checkpoint (lowest validation loss).
    pub best_step: Option<u64>,
    /// What the evaluation of the best checkpoint measured.
    pub eval: EvalReport,
    /// `git rev-parse HEAD` of the source tree, if available.
    pub git_commit: Option<String>,
    /// The command line that ran it.
    pub command: String,
}

fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Evaluates the run's best checkpoint (its current model if it has none),
/// writes `summary.json` and the report.
pub fn finish(run: &Run, outcome: &Outcome, verbose: bool) -> Result<Summary, String> {
    let t = std::time::Instant::now();
    let best = best_checkpoint(&run.dir);
    let best_model;
    let model = if best.exists() && !matches!(outcome, Outcome::Diverged { .. }) {
        best_model = Trainer::resume_with(&best, &run.registry)
            .map_err(|e| e.to_string())?
            .model;
        &best_model
    } else {
        &run.trainer.model
    };
    let eval = evaluate(model, &run.vocabs, &run.corpus, &run.config);
    let rows = read_metrics(&run.dir.join("metrics.csv")).map_err(|e| e.to_string())?;
    let tps: Vec<f64> = rows
        .iter()
        .map(|r| r.tokens_per_s)
        .filter(|x| *x > 0.0)
        .collect();
    let (diverged_at, divergence) = match outcome {
        Outcome::Diverged { step, reason } => (Some(*step), Some(reason.clone())),
        _ => (None, None),
    };
    let summary = Summary {
        name: run
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        outcome: outcome.word().into(),
        diverged_at,
        divergence,
        steps: run.trainer.step,
        train_seconds: run.elapsed_s(),
        tokens_per_s: tps.iter().sum::<f64>() / tps.len().max(1) as f64,
        eval_seconds: t.elapsed().as_secs_f64(),
        parameters: run.config.model.builtin_param_count(),
        best_step: run.best().map(|b| b.1),
        eval,
        git_commit: git_commit(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    let json = serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?;
    write_atomic(&run.dir.join("summary.json"), json.as_bytes())?;
    render(
        &run.dir,
        model,
        &run.vocabs,
        &run.corpus,
        run.config.eval.attention_layer,
    )?;
    if verbose {
        print!("{}", headline(&summary));
    }
    Ok(summary)
}

/// The few lines a binary prints at the end.
pub fn headline(s: &Summary) -> String {
    let mut out = format!(
        "{}: {} after {} steps, {:.0} s of training ({:.0} tokens/s), {} parameters\n",
        s.name, s.outcome, s.steps, s.train_seconds, s.tokens_per_s, s.parameters
    );
    if let Some(d) = &s.divergence {
        out += &format!("  diverged at step {}: {d}\n", s.diverged_at.unwrap_or(0));
    }
    let v = &s.eval.valid;
    out += &format!(
        "  valid: loss {:.3}, perplexity {:.2} per token{}{}, accuracy {:.1}%\n",
        v.loss,
        v.ppl_token,
        v.ppl_word
            .map(|p| format!(", {p:.1} per word"))
            .unwrap_or_default(),
        v.bits_per_char
            .map(|b| format!(", {b:.3} bits per character"))
            .unwrap_or_default(),
        100.0 * v.accuracy
    );
    if let Some(t) = &s.eval.test {
        out += &format!(
            "  test:  loss {:.3}, perplexity {:.2} per token, {:.1} per word\n",
            t.loss,
            t.ppl_token,
            t.ppl_word.unwrap_or(f64::NAN)
        );
    }
    if let Some(d) = &s.eval.decode {
        out += &format!(
            "  test BLEU {:.2} greedy{}, chrF {:.1}, exact match {:.1}% ({} sentences, {:.0} s)\n",
            d.bleu_greedy,
            d.bleu_beam
                .map(|b| format!(" / {b:.2} beam"))
                .unwrap_or_default(),
            d.chrf_greedy,
            100.0 * d.exact_match,
            d.sentences,
            d.seconds
        );
    }
    out
}

/// Renders `loss.svg`, `attention.svg` and `report.md` in `dir` from its
/// `metrics.csv`, `summary.json` and `model`.
pub fn render(
    dir: &Path,
    model: &Transformer<f32>,
    vocabs: &Vocabs,
    corpus: &Corpus,
    layer: Option<usize>,
) -> Result<(), String> {
    let rows = read_metrics(&dir.join("metrics.csv")).map_err(|e| e.to_string())?;
    loss_svg(&rows, &dir.join("loss.svg")).map_err(|e| e.to_string())?;
    let attention = attention_figure(dir, model, vocabs, corpus, layer)?;
    let summary: Option<Summary> = std::fs::read_to_string(dir.join("summary.json"))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok());
    let config = std::fs::read_to_string(dir.join("config.toml")).unwrap_or_default();
    let mut md = format!("# Run `{}`\n\n", dir.display());
    if let Some(s) = &summary {
        md += &format!("```\n{}```\n\n", headline(s));
        md += &format!(
            "Command: `{}`; commit `{}`.\n\n",
            s.command,
            s.git_commit.as_deref().unwrap_or("unknown")
        );
    }
    md += "![loss](loss.svg)\n\n";
    if attention {
        md += "![attention](attention.svg)\n\n";
    }
    let validations: Vec<Vec<String>> = rows
        .iter()
        .filter(|r| r.valid_loss.is_some())
        .map(|r| {
            vec![
                r.step.to_string(),
                format!("{:.0}", r.elapsed_s),
                format!("{:.3}", r.train_loss),
                format!("{:.3}", r.valid_loss.unwrap_or(f64::NAN)),
                format!("{:.2}", r.valid_ppl.unwrap_or(f64::NAN)),
                format!("{:.1}", 100.0 * r.valid_acc.unwrap_or(f64::NAN)),
                format!("{:.2e}", r.lr),
                format!("{:.0}", r.tokens_per_s),
            ]
        })
        .collect();
    md += "## Validation\n\n";
    md += &markdown_table(
        &[
            "step",
            "seconds",
            "train loss",
            "valid loss",
            "valid ppl",
            "valid acc %",
            "lr",
            "tokens/s",
        ],
        &validations,
    );
    if let Some(s) = &summary
        && !s.eval.samples.is_empty()
    {
        md += "\n## Samples\n\n";
        let rows: Vec<Vec<String>> = s
            .eval
            .samples
            .iter()
            .map(|x| {
                vec![
                    x.source.clone(),
                    x.reference.clone(),
                    x.greedy.clone(),
                    x.beam.clone().unwrap_or_default(),
                ]
            })
            .collect();
        md += &markdown_table(
            &["source / prompt", "reference", "greedy / sampled", "beam"],
            &rows,
        );
    }
    md += &format!("\n## Config\n\n```toml\n{config}```\n");
    write_atomic(&dir.join("report.md"), md.as_bytes())
}

/// Attention heatmaps of one test sentence (translation: the first of 6 to
/// 14 words), of layer `layer` of each stack (default: the last): every head
/// of the last encoder self-attention, decoder self-attention and
/// cross-attention layer, on the model's own greedy output; for a language
/// model, the last layer's self-attention over the start of the held-out
/// text. Returns whether a figure was drawn.
fn attention_figure(
    dir: &Path,
    model: &Transformer<f32>,
    vocabs: &Vocabs,
    corpus: &Corpus,
    layer: Option<usize>,
) -> Result<bool, String> {
    let (src, tgt_in, src_tokens, tgt_tokens) = match corpus {
        Corpus::Seq2Seq(d) => {
            // The first test sentence of a readable length (a few words
            // make a heatmap too small to show anything), else the first.
            let readable = |p: &&crate::data::Pair| (6..=14).contains(&word_count(&p.src));
            let Some(pair) = d.test_text.iter().find(readable).or(d.test_text.first()) else {
                return Ok(false);
            };
            let mut src_ids = vocabs.src.encode(&pair.src);
            src_ids.truncate(model.config.max_len.saturating_sub(1).clamp(1, 40));
            src_ids.push(EOS);
            let src = TokenBatch::new(src_ids.clone(), 1, src_ids.len());
            let hyp = model.greedy_decode(&src, BOS, EOS).remove(0);
            let mut tgt_ids = vec![BOS];
            tgt_ids.extend(hyp.tokens.iter().take(40));
            let names = |v: &crate::vocab::Vocab, ids: &[usize]| -> Vec<String> {
                ids.iter().map(|&i| v.token(i)).collect()
            };
            (
                src,
                TokenBatch::new(tgt_ids.clone(), 1, tgt_ids.len()),
                names(&vocabs.src, &src_ids),
                names(&vocabs.tgt, &tgt_ids),
            )
        }
        Corpus::Lm(d) => {
            let n = d.valid.len().min(48).min(model.config.max_len);
            if n == 0 {
                return Ok(false);
            }
            let ids = d.valid[..n].to_vec();
            let names: Vec<String> = ids.iter().map(|&i| vocabs.tgt.token(i)).collect();
            (
                TokenBatch::new(Vec::new(), 1, 0),
                TokenBatch::new(ids, 1, n),
                Vec::new(),
                names,
            )
        }
    };
    let weights = autograd::no_grad(|tape| {
        let ctx = Ctx::eval(tape);
        ctx.keep_attention();
        model.forward(&ctx, &src, &tgt_in);
        ctx.take_attention()
    });
    // Layer `layer` (default: the last) of a stack holding a block:
    // "decoder.layers.2.cross_attn".
    let last = |stack: &str, block: &str| -> Option<(String, autograd::Tensor<f32>)> {
        let mut found = weights
            .iter()
            .filter(|(n, _)| n.starts_with(stack) && n.ends_with(block));
        match layer {
            Some(i) => found.find(|(n, _)| n.starts_with(&format!("{stack}layers.{i}."))),
            None => found.next_back(),
        }
        .cloned()
    };
    let mut panels = Vec::new();
    for (stack, block, q, k) in [
        ("encoder.", "self_attn", &src_tokens, &src_tokens),
        ("decoder.", "self_attn", &tgt_tokens, &tgt_tokens),
        ("decoder.", "cross_attn", &tgt_tokens, &src_tokens),
    ] {
        let Some((name, w)) = last(stack, block) else {
            continue;
        };
        let shape = w.shape().to_vec(); // (1, H, Tq, Tk)
        let (h, tq, tk) = (shape[1], shape[2], shape[3]);
        let heads: Vec<Heatmap> = (0..h)
            .map(|i| Heatmap {
                title: format!("head {i}"),
                weights: w.data()[i * tq * tk..(i + 1) * tq * tk].to_vec(),
                rows: tq,
                cols: tk,
            })
            .collect();
        panels.push((name, heads, q.clone(), k.clone()));
    }
    if panels.is_empty() {
        return Ok(false);
    }
    // One file per layer kind; attention.svg is the cross-attention (the
    // alignment) if there is one, else the last panel.
    let mut main = None;
    for (name, heads, q, k) in &panels {
        let file = format!("attention-{}.svg", name.replace('.', "-"));
        attention_svg(name, heads, q, k, &dir.join(&file)).map_err(|e| e.to_string())?;
        main = Some((name.clone(), heads.clone(), q.clone(), k.clone()));
    }
    if let Some((name, heads, q, k)) = main {
        attention_svg(&name, &heads, &q, &k, &dir.join("attention.svg"))
            .map_err(|e| e.to_string())?;
    }
    Ok(true)
}

/// Re-renders the report of a finished run folder from its files alone:
/// config, vocabulary, metrics, summary and best checkpoint.
pub fn rerender(dir: &Path) -> Result<(), String> {
    rerender_with(dir, &transformer::Registry::builtin(), None)
}

/// [`rerender`] for a run whose model has a user's blocks; `layer`
/// replaces the config's `eval.attention_layer` (which attention layer the
/// heatmaps show).
pub fn rerender_with(
    dir: &Path,
    registry: &transformer::Registry<f32>,
    layer: Option<usize>,
) -> Result<(), String> {
    let config = RunConfig::load(&dir.join("config.toml"))?;
    let vocabs = Vocabs::load(dir)?;
    let raw = crate::corpus::read_raw(&config)?;
    let corpus = crate::corpus::encode(&config, raw, &vocabs);
    let ckpt = if best_checkpoint(dir).exists() {
        best_checkpoint(dir)
    } else {
        crate::train::last_checkpoint(dir)
    };
    let model = Trainer::resume_with(&ckpt, registry)
        .map_err(|e| e.to_string())?
        .model;
    let layer = layer.or(config.eval.attention_layer);
    render(dir, &model, &vocabs, &corpus, layer)
}
