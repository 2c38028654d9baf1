//! Evaluation of a trained run: loss and perplexity (per token, and per
//! word or per character where it applies), token accuracy, exact match,
//! greedy and beam decoding of the test set with corpus BLEU and chrF (as
//! sacreBLEU computes them), sample translations, and for a language model
//! bits per character and sampled text.
//!
//! **Per-word perplexity** is `exp(total NLL / words)`, the total NLL over
//! every target token (end tokens included) and `words` the
//! whitespace-separated words of the references plus one end token per
//! sentence (as word-level language modelling counts `<eos>`). It is the
//! number that compares across vocabularies: a subword model spreads a
//! word's NLL over its pieces, a word model pays it once. It does not
//! forgive `<unk>`: a word vocabulary that maps rare words to `<unk>`
//! predicts `<unk>` cheaply, which flatters its per-word perplexity
//! (../EXPERIMENTS.md: compare across vocabularies only without `<unk>`).

use autograd::Tape;
use rand::RngExt;
use serde::{Deserialize, Serialize};
use transformer::{Ctx, EvalStats, Hypothesis, TokenBatch, Transformer};

use crate::batching::eval_batches;
use crate::bleu::{corpus_bleu, corpus_chrf};
use crate::config::EvalConfig;
use crate::corpus::{Corpus, LmData, Seq2Seq, Vocabs, seq2seq_batch};
use crate::vocab::{BOS, EOS, word_count};

/// Loss-based numbers of one split.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LossReport {
    /// Target tokens scored.
    pub tokens: usize,
    /// Mean NLL per token (nats), without label smoothing.
    pub loss: f64,
    /// Perplexity per token of the vocabulary in use.
    pub ppl_token: f64,
    /// Perplexity per word (see the module docs), translation only.
    pub ppl_word: Option<f64>,
    /// Bits per character, language models only.
    pub bits_per_char: Option<f64>,
    /// Next-token accuracy.
    pub accuracy: f64,
}

impl LossReport {
    fn new(s: &EvalStats) -> LossReport {
        LossReport {
            tokens: s.tokens,
            loss: s.nll(),
            ppl_token: s.perplexity(),
            ppl_word: None,
            bits_per_char: None,
            accuracy: s.accuracy(),
        }
    }
}

/// Decoding scores of the test set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DecodeReport {
    /// Corpus BLEU of greedy decoding (sacreBLEU's defaults).
    pub bleu_greedy: f64,
    /// Corpus BLEU of beam search (`None` when beam = 0).
    pub bleu_beam: Option<f64>,
    /// chrF of greedy decoding (sacreBLEU's defaults).
    pub chrf_greedy: f64,
    /// chrF of beam search.
    pub chrf_beam: Option<f64>,
    /// Share of test sentences whose greedy output equals the reference
    /// (after the vocabulary's normalisation).
    pub exact_match: f64,
    /// Sentences decoded.
    pub sentences: usize,
    /// Seconds spent decoding (greedy + beam).
    pub seconds: f64,
}

/// One sample: source, reference and the model's outputs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The source sentence (or the prompt).
    pub source: String,
    /// The reference translation (or the true continuation).
    pub reference: String,
    /// Greedy output (or a sampled continuation).
    pub greedy: String,
    /// Beam output, if run.
    pub beam: Option<String>,
}

/// Everything the evaluation of a run measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Validation split.
    pub valid: LossReport,
    /// Test split (translation).
    pub test: Option<LossReport>,
    /// Decoding of the test set (translation).
    pub decode: Option<DecodeReport>,
    /// Fixed samples (the first test sentences, or prompts from the
    /// held-out text).
    pub samples: Vec<Sample>,
}

/// NLL statistics of `model` on seq2seq examples (eval mode, no tape).
pub fn split_stats(
    model: &Transformer<f32>,
    examples: &[crate::batching::Example],
    tokens: usize,
) -> EvalStats {
    let mut total = EvalStats::default();
    for idx in eval_batches(examples, tokens) {
        let b = seq2seq_batch(examples, &idx);
        total.merge(&eval_batch(model, &b.src, &b.tgt_in, &b.labels));
    }
    total
}

/// NLL statistics of a language model on its held-out stream (every token
/// but the first predicted once).
pub fn lm_valid_stats(model: &Transformer<f32>, data: &LmData, batch_tokens: usize) -> EvalStats {
    let mut total = EvalStats::default();
    let per_batch = (batch_tokens / data.context).max(1);
    for chunk in data.valid_starts().chunks(per_batch) {
        let b = data.batch(&data.valid, chunk);
        total.merge(&eval_batch(model, &b.src, &b.tgt_in, &b.labels));
    }
    total
}

/// The held-out statistics the training loop validates on.
pub fn validation_stats(
    model: &Transformer<f32>,
    corpus: &Corpus,
    batch_tokens: usize,
) -> EvalStats {
    match corpus {
        Corpus::Seq2Seq(d) => split_stats(model, &d.valid, batch_tokens),
        Corpus::Lm(d) => lm_valid_stats(model, d, batch_tokens),
    }
}

fn eval_batch(
    model: &Transformer<f32>,
    src: &TokenBatch,
    tgt_in: &TokenBatch,
    labels: &[usize],
) -> EvalStats {
    autograd::no_grad(|tape| {
        let ctx = Ctx::eval(tape);
        let logits = model.forward(&ctx, src, tgt_in); // (B, T, V)
        EvalStats::from_logits(&logits.value(), labels, model.config.pad_id)
    })
}

/// Decodes sources (texts) with greedy search, or beam search of width
/// `beam` (> 1), in batches of similar length: the output texts in order.
pub fn translate(
    model: &Transformer<f32>,
    vocabs: &Vocabs,
    sources: &[String],
    beam: usize,
    alpha: f64,
) -> Vec<String> {
    let max_src = model.config.max_len.saturating_sub(1).max(1);
    let ids: Vec<Vec<usize>> = sources
        .iter()
        .map(|s| {
            let mut v = vocabs.src.encode(s);
            v.truncate(max_src);
            v.push(EOS);
            v
        })
        .collect();
    // Sort by length so that batches pad little; decode in chunks.
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&i| (ids[i].len(), i));
    let per_batch = if beam > 1 { 16 } else { 64 };
    let mut out = vec![String::new(); ids.len()];
    for chunk in order.chunks(per_batch) {
        let seqs: Vec<Vec<usize>> = chunk.iter().map(|&i| ids[i].clone()).collect();
        let src = TokenBatch::padded(&seqs, crate::vocab::PAD);
        let hyps: Vec<Hypothesis> = if beam > 1 {
            model.beam_search(&src, BOS, EOS, beam, alpha)
        } else {
            model.greedy_decode(&src, BOS, EOS)
        };
        for (&i, h) in chunk.iter().zip(hyps) {
            out[i] = vocabs.tgt.decode(&h.tokens);
        }
    }
    out
}

/// Evaluates a seq2seq run's model: losses on validation and test,
/// greedy and beam decoding of the test set with BLEU and chrF, samples.
pub fn evaluate_seq2seq(
    model: &Transformer<f32>,
    vocabs: &Vocabs,
    data: &Seq2Seq,
    batch_tokens: usize,
    eval: &EvalConfig,
) -> EvalReport {
    let (beam, alpha, samples) = (eval.beam, eval.alpha, eval.samples);
    let per_word = |s: &EvalStats, text: &[crate::data::Pair]| {
        let words: usize = text.iter().map(|p| word_count(&p.tgt) + 1).sum();
        (s.nll_sum / words.max(1) as f64).exp()
    };
    let v = split_stats(model, &data.valid, batch_tokens);
    let t = split_stats(model, &data.test, batch_tokens);
    let mut valid = LossReport::new(&v);
    valid.ppl_word = Some(per_word(&v, &data.valid_text));
    let mut test = LossReport::new(&t);
    test.ppl_word = Some(per_word(&t, &data.test_text));

    let start = std::time::Instant::now();
    // BLEU over the first `decode_limit` test pairs (0 = all): an
    // ablation's dozens of runs decode a sample, a final run all of them.
    let decoded = match eval.decode_limit {
        0 => data.test_text.len(),
        n => n.min(data.test_text.len()),
    };
    let pairs = &data.test_text[..decoded];
    let sources: Vec<String> = pairs.iter().map(|p| p.src.clone()).collect();
    let refs: Vec<String> = pairs.iter().map(|p| p.tgt.clone()).collect();
    let greedy = translate(model, vocabs, &sources, 1, alpha);
    let beamed = (beam > 1).then(|| translate(model, vocabs, &sources, beam, alpha));
    let exact = greedy
        .iter()
        .zip(&refs)
        .filter(|(h, r)| **h == vocabs.tgt.normalise(r))
        .count();
    let decode = DecodeReport {
        bleu_greedy: corpus_bleu(&greedy, &refs).score,
        bleu_beam: beamed.as_ref().map(|b| corpus_bleu(b, &refs).score),
        chrf_greedy: corpus_chrf(&greedy, &refs).score,
        chrf_beam: beamed.as_ref().map(|b| corpus_chrf(b, &refs).score),
        exact_match: exact as f64 / refs.len().max(1) as f64,
        sentences: refs.len(),
        seconds: start.elapsed().as_secs_f64(),
    };
    let samples = (0..samples.min(refs.len()))
        .map(|i| Sample {
            source: sources[i].clone(),
            reference: refs[i].clone(),
            greedy: greedy[i].clone(),
            beam: beamed.as_ref().map(|b| b[i].clone()),
        })
        .collect();
    EvalReport {
        valid,
        test: Some(test),
        decode: Some(decode),
        samples,
    }
}

/// Bits per character of a language model on the held-out text.
pub fn evaluate_lm(
    model: &Transformer<f32>,
    vocabs: &Vocabs,
    data: &LmData,
    batch_tokens: usize,
    samples: usize,
    seed: u64,
) -> EvalReport {
    let total = lm_valid_stats(model, data, batch_tokens);
    let mut valid = LossReport::new(&total);
    // Every held-out token but the first is predicted; the characters
    // those tokens spell are the characters scored.
    let first_chars = vocabs.tgt.decode(&data.valid[..1]).chars().count();
    let chars = data.valid_chars.saturating_sub(first_chars).max(1);
    valid.bits_per_char = Some(total.nll_sum / std::f64::consts::LN_2 / chars as f64);
    let prompts: Vec<String> = data
        .valid_text
        .split("\n\n")
        .filter(|p| p.chars().count() > 80)
        .take(samples)
        .map(|p| p.chars().take(60).collect())
        .collect();
    let samples = prompts
        .into_iter()
        .enumerate()
        .map(|(i, prompt)| {
            let opts = SampleOptions {
                length: 200,
                temperature: 0.8,
                top_k: 40,
                seed: seed + i as u64,
            };
            Sample {
                greedy: sample(model, vocabs, &prompt, &opts),
                reference: String::new(),
                source: prompt,
                beam: None,
            }
        })
        .collect();
    EvalReport {
        valid,
        test: None,
        decode: None,
        samples,
    }
}

/// How [`sample`] draws.
#[derive(Clone, Debug)]
pub struct SampleOptions {
    /// Tokens to generate.
    pub length: usize,
    /// Softmax temperature (> 0; lower = more conservative).
    pub temperature: f64,
    /// Draw only among the `top_k` likeliest tokens (0 = all).
    pub top_k: usize,
    /// Seeds the draws.
    pub seed: u64,
}

/// Continues `prompt` with a decoder-only model: `length` tokens, each
/// drawn from the softmax of the last position's logits divided by the
/// temperature, restricted to the top k. The context is the last
/// `max_len` tokens. Returns the continuation only. Runs over key/value
/// caches while the text fits the context (see [`sample_with`]).
pub fn sample(
    model: &Transformer<f32>,
    vocabs: &Vocabs,
    prompt: &str,
    opts: &SampleOptions,
) -> String {
    sample_with(model, vocabs, prompt, opts, true)
}

/// [`sample`], over key/value caches if `cached` (and the model supports
/// them), else by re-running the decoder over the whole context for every
/// token (the reference). Once the text outgrows `max_len`, the context
/// window slides and every position moves, so a cache would be stale:
/// from there on both paths re-run the window.
pub fn sample_with(
    model: &Transformer<f32>,
    vocabs: &Vocabs,
    prompt: &str,
    opts: &SampleOptions,
    cached: bool,
) -> String {
    assert!(
        opts.temperature > 0.0 && opts.temperature.is_finite(),
        "sample: temperature {} must be positive",
        opts.temperature
    );
    let mut rng = transformer::rng(opts.seed);
    let mut ids = vocabs.tgt.encode_text(prompt);
    if ids.is_empty() {
        ids.push(BOS);
    }
    let start = ids.len();
    let window = model.config.max_len;
    let none = TokenBatch::new(Vec::new(), 1, 0); // decoder-only: no source
    let mut state =
        (cached && model.supports_kv_cache()).then(|| model.start_decoding(&none, window.min(64)));
    for _ in 0..opts.length {
        let logits: Vec<f32> = match state.as_mut().filter(|_| ids.len() <= window) {
            Some(st) => {
                // Feed what the cache has not seen: the prompt at first,
                // then the last token drawn. (V) logits of the last one.
                let mut last = None;
                while st.position() < ids.len() {
                    last = Some(model.decode_step(st, &[ids[st.position()]]));
                }
                last.expect("one token at least is new").data().to_vec()
            }
            None => {
                let ctx_ids = &ids[ids.len().saturating_sub(window)..];
                let tape = Tape::no_grad();
                let ctx = Ctx::eval(&tape);
                let tgt = TokenBatch::new(ctx_ids.to_vec(), 1, ctx_ids.len());
                let t = ctx_ids.len();
                model
                    .forward(&ctx, &none, &tgt)
                    .narrow(1, t - 1, 1)
                    .value()
                    .data()
                    .to_vec() // (V)
            }
        };
        // Specials (pad, bos, eos, unk) are never drawn.
        let mut cand: Vec<(usize, f64)> = logits
            .iter()
            .enumerate()
            .skip(crate::vocab::SPECIALS.len())
            .map(|(i, &l)| (i, f64::from(l) / opts.temperature))
            .collect();
        cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if opts.top_k > 0 {
            cand.truncate(opts.top_k);
        }
        let max = cand[0].1;
        let weights: Vec<f64> = cand.iter().map(|c| (c.1 - max).exp()).collect();
        let total: f64 = weights.iter().sum();
        let mut r = rng.random::<f64>() * total;
        let mut pick = cand[cand.len() - 1].0;
        for (c, w) in cand.iter().zip(&weights) {
            if r < *w {
                pick = c.0;
                break;
            }
            r -= w;
        }
        ids.push(pick);
    }
    vocabs.tgt.decode_text(&ids[start..])
}

/// Evaluates a run's model on its corpus as the config says.
pub fn evaluate(
    model: &Transformer<f32>,
    vocabs: &Vocabs,
    corpus: &Corpus,
    config: &crate::config::RunConfig,
) -> EvalReport {
    match corpus {
        Corpus::Seq2Seq(d) => {
            evaluate_seq2seq(model, vocabs, d, config.run.batch_tokens, &config.eval)
        }
        Corpus::Lm(d) => evaluate_lm(
            model,
            vocabs,
            d,
            config.run.batch_tokens,
            config.eval.samples,
            config.run.seed,
        ),
    }
}
