//! From a [`TaskConfig`] to token ids: reads the data (the bundled corpora
//! or a synthetic task drawn from the seed), trains the vocabulary on the
//! training split only (or takes a saved one), encodes every split, and
//! fits the lengths to the model. What the training loop and the
//! evaluation consume.

use std::path::Path;

use rand::RngExt;

use crate::batching::{Batch, Example, LengthReport, SpecialIds, fit_lengths, make_batch};
use crate::config::{RunConfig, TaskConfig};
use crate::data::{DataError, Pair, read_pairs, read_text};
use crate::vocab::{BOS, EOS, PAD, Vocab};

/// The special ids every vocabulary of this crate shares.
pub const SPECIALS: SpecialIds = SpecialIds {
    pad: PAD,
    bos: BOS,
    eos: EOS,
};

/// A sequence-to-sequence data set: text pairs and their ids.
pub struct Seq2Seq {
    /// Training examples (after fitting lengths).
    pub train: Vec<Example>,
    /// Validation examples (after fitting lengths, for the loss).
    pub valid: Vec<Example>,
    /// Test examples (after fitting lengths, for the loss).
    pub test: Vec<Example>,
    /// The validation pairs as text (references for decoding).
    pub valid_text: Vec<Pair>,
    /// The test pairs as text (references for BLEU).
    pub test_text: Vec<Pair>,
    /// What fitting the training pairs to `max_len` did.
    pub lengths: LengthReport,
}

/// A language-modelling data set: the text as one stream of ids.
pub struct LmData {
    /// Training ids, the text's lines joined.
    pub train: Vec<usize>,
    /// Held-out ids.
    pub valid: Vec<usize>,
    /// Characters of the held-out text (for bits per character).
    pub valid_chars: usize,
    /// The held-out text (the start of it prompts the samples).
    pub valid_text: String,
    /// Tokens per window.
    pub context: usize,
}

/// The data of a run, encoded.
pub enum Corpus {
    /// Translation or a synthetic seq2seq task.
    Seq2Seq(Seq2Seq),
    /// A decoder-only language model.
    Lm(LmData),
}

/// The vocabularies of a run: one joint, or one per side.
#[derive(Clone)]
pub struct Vocabs {
    /// Source side (the same as `tgt` when joint).
    pub src: Vocab,
    /// Target side.
    pub tgt: Vocab,
    /// Whether `src` and `tgt` are one vocabulary.
    pub joint: bool,
}

impl Vocabs {
    /// Saves into `dir` (`vocab/`, or `vocab-src/` + `vocab-tgt/`).
    pub fn save(&self, dir: &Path) -> Result<(), String> {
        if self.joint {
            self.tgt.save(&dir.join("vocab")).map_err(|e| e.to_string())
        } else {
            self.src
                .save(&dir.join("vocab-src"))
                .map_err(|e| e.to_string())?;
            self.tgt
                .save(&dir.join("vocab-tgt"))
                .map_err(|e| e.to_string())
        }
    }

    /// Loads what [`Vocabs::save`] wrote.
    pub fn load(dir: &Path) -> Result<Vocabs, String> {
        let joint = dir.join("vocab");
        if joint.exists() {
            let v = Vocab::load(&joint).map_err(|e| e.to_string())?;
            return Ok(Vocabs {
                src: v.clone(),
                tgt: v,
                joint: true,
            });
        }
        Ok(Vocabs {
            src: Vocab::load(&dir.join("vocab-src")).map_err(|e| e.to_string())?,
            tgt: Vocab::load(&dir.join("vocab-tgt")).map_err(|e| e.to_string())?,
            joint: false,
        })
    }
}

fn data_err(e: DataError) -> String {
    e.to_string()
}

/// The raw text of a run's data.
pub enum RawData {
    /// Train, valid, test pairs.
    Pairs(Vec<Pair>, Vec<Pair>, Vec<Pair>),
    /// Training text and held-out text.
    Text(String, String),
}

/// Reads (or, for a synthetic task, draws from `seed`) the data `config`
/// names. Files are hostile input: errors name file and line.
pub fn read_raw(config: &RunConfig) -> Result<RawData, String> {
    match &config.task {
        TaskConfig::Translate {
            train_limit,
            eval_limit,
            ..
        } => {
            let dir = config.data_path();
            let limit = |mut v: Vec<Pair>, n: usize| {
                if n > 0 {
                    v.truncate(n);
                }
                v
            };
            let train = read_pairs(&dir.join("train.tsv")).map_err(data_err)?;
            let valid = read_pairs(&dir.join("valid.tsv")).map_err(data_err)?;
            let test = read_pairs(&dir.join("test.tsv")).map_err(data_err)?;
            Ok(RawData::Pairs(
                limit(train, *train_limit),
                limit(valid, *eval_limit),
                limit(test, *eval_limit),
            ))
        }
        TaskConfig::Lm {
            valid_fraction,
            char_limit,
            ..
        } => {
            let path = config.data_path();
            let mut text = read_text(&path).map_err(data_err)?;
            if *char_limit > 0
                && let Some((i, _)) = text.char_indices().nth(*char_limit)
            {
                text.truncate(i);
            }
            // The held-out part is the end of the text, cut at a line end so
            // that no line is split between the two.
            let cut = text.len() - (text.len() as f64 * valid_fraction) as usize;
            let cut = text[..cut].rfind('\n').map_or(cut, |i| i + 1);
            let valid = text.split_off(cut);
            if text.trim().is_empty() || valid.trim().is_empty() {
                return Err(format!(
                    "{}: too little text to hold out {valid_fraction} of it",
                    path.display()
                ));
            }
            Ok(RawData::Text(text, valid))
        }
        TaskConfig::Synthetic {
            task,
            symbols,
            min_len,
            max_len,
            train,
            valid,
        } => {
            // Separate streams, so the validation and test strings do not
            // depend on how many training pairs are drawn.
            let seed = config.run.seed;
            let draw = |stream: u64, n: usize| {
                let mut rng = transformer::rng(seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                (0..n)
                    .map(|_| {
                        let len = rng.random_range(*min_len..=*max_len);
                        let src: Vec<usize> =
                            (0..len).map(|_| rng.random_range(0..*symbols)).collect();
                        let tgt = task.rule().target(&src);
                        // Symbol i is the letter 'a' + i, one word each.
                        let words = |s: &[usize]| {
                            s.iter()
                                .map(|&c| char::from(b'a' + c as u8).to_string())
                                .collect::<Vec<_>>()
                                .join(" ")
                        };
                        Pair {
                            src: words(&src),
                            tgt: words(&tgt),
                        }
                    })
                    .collect::<Vec<_>>()
            };
            Ok(RawData::Pairs(
                draw(1, *train),
                draw(2, *valid),
                draw(3, *valid),
            ))
        }
    }
}

/// Trains the vocabularies on the training split only.
pub fn train_vocabs(config: &RunConfig, raw: &RawData) -> Result<Vocabs, String> {
    let joint = match &config.task {
        TaskConfig::Translate { joint_vocab, .. } => *joint_vocab,
        _ => true,
    };
    let train = |texts: Vec<&str>| Vocab::train(&config.vocab, &texts).map_err(|e| e.to_string());
    match raw {
        RawData::Pairs(tr, _, _) => {
            let src: Vec<&str> = tr.iter().map(|p| p.src.as_str()).collect();
            let tgt: Vec<&str> = tr.iter().map(|p| p.tgt.as_str()).collect();
            if joint {
                let v = train([src, tgt].concat())?;
                Ok(Vocabs {
                    src: v.clone(),
                    tgt: v,
                    joint: true,
                })
            } else {
                Ok(Vocabs {
                    src: train(src)?,
                    tgt: train(tgt)?,
                    joint: false,
                })
            }
        }
        RawData::Text(tr, _) => {
            let v = train(vec![&Vocab::running_text(tr)])?;
            Ok(Vocabs {
                src: v.clone(),
                tgt: v,
                joint: true,
            })
        }
    }
}

/// Encodes the raw data with `vocabs` and fits lengths to the model.
pub fn encode(config: &RunConfig, raw: RawData, vocabs: &Vocabs) -> Corpus {
    match raw {
        RawData::Pairs(tr, va, te) => {
            let examples = |pairs: &[Pair]| -> Vec<Example> {
                pairs
                    .iter()
                    .map(|p| Example {
                        src: vocabs.src.encode(&p.src),
                        tgt: vocabs.tgt.encode(&p.tgt),
                    })
                    .collect()
            };
            let max_len = config.model.max_len;
            let (train, lengths) = fit_lengths(examples(&tr), max_len, config.run.long);
            // Held-out pairs are truncated, never dropped: every one counts
            // in the loss (the decoding scores use the full text).
            let fit = |e| fit_lengths(e, max_len, crate::batching::LongPolicy::Truncate).0;
            Corpus::Seq2Seq(Seq2Seq {
                train,
                valid: fit(examples(&va)),
                test: fit(examples(&te)),
                valid_text: va,
                test_text: te,
                lengths,
            })
        }
        RawData::Text(tr, va) => {
            let context = match &config.task {
                TaskConfig::Lm { context, .. } => *context,
                _ => unreachable!("text data comes from an lm task"),
            };
            Corpus::Lm(LmData {
                train: vocabs.tgt.encode_text(&tr),
                valid: vocabs.tgt.encode_text(&va),
                valid_chars: va.chars().count(),
                valid_text: va,
                context,
            })
        }
    }
}

impl LmData {
    /// The training windows of one epoch, in order: the stream cut into
    /// windows of `context + 1` tokens (input = the first `context`, labels
    /// = the last `context`), starting at an offset drawn from (seed,
    /// epoch) so that window boundaries move from epoch to epoch, then
    /// shuffled by (seed, epoch).
    pub fn epoch_windows(&self, seed: u64, epoch: u64) -> Vec<usize> {
        let mut rng = transformer::rng(seed ^ (epoch + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let w = self.context + 1;
        let offset = rng.random_range(0..self.context.max(1));
        let mut starts: Vec<usize> = (0..)
            .map(|i| offset + i * self.context)
            .take_while(|&s| s + w <= self.train.len())
            .collect();
        if starts.is_empty() {
            starts.push(0);
        }
        rand::seq::SliceRandom::shuffle(&mut starts[..], &mut rng);
        starts
    }

    /// A batch of windows of `ids` starting at `starts`: source (B, 0),
    /// decoder input (B, T) and labels (B * T), T <= context.
    pub fn batch(&self, ids: &[usize], starts: &[usize]) -> Batch {
        let windows: Vec<&[usize]> = starts
            .iter()
            .map(|&s| &ids[s..(s + self.context + 1).min(ids.len())])
            .collect();
        let inputs: Vec<Vec<usize>> = windows.iter().map(|w| w[..w.len() - 1].to_vec()).collect();
        let labels: Vec<Vec<usize>> = windows.iter().map(|w| w[1..].to_vec()).collect();
        let tgt_in = transformer::TokenBatch::padded(&inputs, PAD);
        let labels = transformer::TokenBatch::padded(&labels, PAD);
        let tgt_lens: Vec<usize> = windows.iter().map(|w| w.len() - 1).collect();
        Batch {
            src: transformer::TokenBatch::new(Vec::new(), starts.len(), 0),
            tgt_in,
            labels: labels.ids,
            indices: starts.to_vec(),
            src_lens: vec![0; starts.len()],
            tgt_tokens: tgt_lens.iter().sum(),
            tgt_lens,
            src_tokens: 0,
        }
    }

    /// Windows of the held-out stream that predict every token but the
    /// first exactly once (consecutive windows overlap by one token).
    pub fn valid_starts(&self) -> Vec<usize> {
        let n = self.valid.len();
        (0..)
            .map(|i| i * self.context)
            .take_while(|&s| s + 1 < n)
            .collect()
    }
}

/// A batch of seq2seq examples by index.
pub fn seq2seq_batch(examples: &[Example], indices: &[usize]) -> Batch {
    make_batch(examples, indices, SPECIALS)
}
