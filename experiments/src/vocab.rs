//! Vocabularies: characters, words, or byte-level BPE subwords, trained on
//! the training split only (the caller passes only training text), each
//! with the four specials `<pad> <bos> <eos> <unk>` at ids 0..4. One
//! vocabulary trained on source and target text together (a *joint*
//! vocabulary) is what lets the embeddings be tied; nothing here stops a
//! caller from training one per side.
//!
//! BPE is trained by the Hugging Face `tokenizers` crate rather than by
//! hand, and saved as its `tokenizer.json`, which Python's `tokenizers`
//! loads as it is. A run saves its vocabulary in its folder
//! ([`Vocab::save`]) and decoding the run later uses exactly that
//! ([`Vocab::load`]), which reads the files as hostile input: every
//! malformed file is a [`VocabError`] naming it.
//!
//! What each kind does with a text, for [`Vocab::normalise`]:
//! - `char`: runs of whitespace become one space, ends trimmed; one token
//!   per Unicode scalar value.
//! - `word`: words (letters, digits, `_`, with inner apostrophes as in
//!   `don't`) and single punctuation marks; decoding puts spaces between
//!   them except before closing and after opening punctuation.
//! - `bpe`: byte-level, so every text encodes without `<unk>` and decodes
//!   to exactly itself.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::ModelWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainer};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer, TokenizerBuilder};

/// The id of `<pad>`, which fills a batch's short sequences.
pub const PAD: usize = 0;
/// The id of `<bos>`, which starts every decoder input.
pub const BOS: usize = 1;
/// The id of `<eos>`, which ends every target.
pub const EOS: usize = 2;
/// The id of `<unk>`, which stands for whatever the vocabulary lacks.
pub const UNK: usize = 3;
/// How a line break of running text is spelt for a vocabulary (see
/// [`Vocab::encode_text`]): the pilcrow, which the bundled corpora never use
/// (checked by a test).
pub const NEWLINE: char = '¶';
/// The specials, in id order: every vocabulary starts with them.
pub const SPECIALS: [&str; 4] = ["<pad>", "<bos>", "<eos>", "<unk>"];

/// The most tokens a vocabulary may have (a larger one is a mistake or a
/// hostile file, and its embedding matrix would not fit anyway).
pub const MAX_TOKENS: usize = 1 << 20;
/// The smallest BPE size: the specials and the 256 bytes of byte-level BPE
/// (every byte is in the vocabulary, so no text needs `<unk>`).
pub const BPE_MIN_SIZE: usize = SPECIALS.len() + 256;

/// The file [`Vocab::save`] writes for every kind: the spec and the tokens.
pub const VOCAB_FILE: &str = "vocab.json";
/// The file [`Vocab::save`] writes for BPE as well: the `tokenizers` file.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// A saved file larger than this is refused before it is read (a
/// vocabulary of [`MAX_TOKENS`] long tokens stays far below it).
const MAX_FILE_BYTES: u64 = 256 << 20;

/// Which vocabulary to train. In TOML: `{ kind = "bpe", size = 8000 }`,
/// `{ kind = "word", min_count = 2 }`, `{ kind = "char" }`; a field left
/// out takes its default.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum VocabSpec {
    /// One token per character (Unicode scalar value).
    Char {
        /// Characters seen fewer times in training are `<unk>` (default 1).
        #[serde(default = "one")]
        min_count: usize,
    },
    /// One token per word or punctuation mark.
    Word {
        /// Words seen fewer times in training are `<unk>` (default 2: a
        /// word seen once gets an embedding trained on one sentence).
        #[serde(default = "two")]
        min_count: usize,
    },
    /// Byte-level BPE, trained by the `tokenizers` crate.
    Bpe {
        /// The number of tokens, specials and the 256 bytes included (fewer
        /// if the training text runs out of merges first).
        size: usize,
        /// A pair seen fewer times is not merged (default 2; 0 and 1 mean
        /// the same).
        #[serde(default = "two_u64")]
        min_frequency: u64,
    },
}

fn one() -> usize {
    1
}
fn two() -> usize {
    2
}
fn two_u64() -> u64 {
    2
}

impl VocabSpec {
    /// Checks the numbers: a `min_count` of at least 1 and a BPE size in
    /// `BPE_MIN_SIZE..=MAX_TOKENS`.
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            VocabSpec::Char { min_count } | VocabSpec::Word { min_count } if min_count == 0 => {
                Err("min_count must be at least 1 (1 keeps every token seen)".into())
            }
            VocabSpec::Bpe { size, .. } if !(BPE_MIN_SIZE..=MAX_TOKENS).contains(&size) => {
                Err(format!(
                    "bpe size {size} is out of range: it must be in {BPE_MIN_SIZE}..={MAX_TOKENS} \
                     ({} specials + 256 bytes at least)",
                    SPECIALS.len()
                ))
            }
            _ => Ok(()),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            VocabSpec::Char { .. } => "char",
            VocabSpec::Word { .. } => "word",
            VocabSpec::Bpe { .. } => "bpe",
        }
    }
}

/// What went wrong, and with which file where there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct VocabError {
    /// The file, for errors in saving or loading.
    pub path: Option<PathBuf>,
    /// What is wrong, and what was expected.
    pub message: String,
}

impl fmt::Display for VocabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(p) => write!(f, "{}: {}", p.display(), self.message),
            None => write!(f, "{}", self.message),
        }
    }
}

impl std::error::Error for VocabError {}

fn error(path: Option<&Path>, message: impl Into<String>) -> VocabError {
    VocabError {
        path: path.map(Path::to_path_buf),
        message: message.into(),
    }
}

/// A trained vocabulary: tokens and their ids, specials first.
///
/// ```
/// use experiments::vocab::{Vocab, VocabSpec, UNK};
/// let v = Vocab::train(&VocabSpec::Char { min_count: 1 }, &["abc", "cab  ba"])?;
/// assert_eq!(v.len(), 4 + 4); // the specials, then 'a' 'b' 'c' ' '
/// assert_eq!(v.decode(&v.encode("cab  ba")), "cab ba");
/// assert_eq!(v.encode("x")[0], UNK);
/// # Ok::<(), experiments::vocab::VocabError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Vocab {
    spec: VocabSpec,
    /// Token strings by id: for BPE, as `tokenizer.json` spells them.
    tokens: Vec<String>,
    /// The inverse of `tokens` (char and word kinds only).
    ids: HashMap<String, usize>,
    /// The trained tokenizer (BPE only).
    bpe: Option<Box<Tokenizer>>,
}

impl Vocab {
    /// Trains a vocabulary on `texts` (training text only). The same texts
    /// give the same tokens with the same ids, whatever the number of
    /// threads: ties in counts are broken by the token itself.
    pub fn train(spec: &VocabSpec, texts: &[&str]) -> Result<Vocab, VocabError> {
        spec.validate().map_err(|m| error(None, m))?;
        if texts.iter().all(|t| t.trim().is_empty()) {
            return Err(error(
                None,
                "no training text: every text given is empty or whitespace",
            ));
        }
        match *spec {
            VocabSpec::Char { min_count } => {
                let mut counts: HashMap<String, usize> = HashMap::new();
                for t in texts {
                    for c in collapse_whitespace(t).chars() {
                        *counts.entry(c.to_string()).or_default() += 1;
                    }
                }
                Vocab::from_counts(spec.clone(), counts, min_count)
            }
            VocabSpec::Word { min_count } => {
                let mut counts: HashMap<String, usize> = HashMap::new();
                for t in texts {
                    for w in words(t) {
                        *counts.entry(w.to_string()).or_default() += 1;
                    }
                }
                Vocab::from_counts(spec.clone(), counts, min_count)
            }
            VocabSpec::Bpe {
                size,
                min_frequency,
            } => train_bpe(spec, size, min_frequency, texts),
        }
    }

    /// The specials, then the tokens seen at least `min_count` times, most
    /// frequent first (ties in token order, so the ids never depend on a
    /// hash map's order).
    fn from_counts(
        spec: VocabSpec,
        counts: HashMap<String, usize>,
        min_count: usize,
    ) -> Result<Vocab, VocabError> {
        let mut kept: Vec<(String, usize)> = counts
            .into_iter()
            .filter(|(t, n)| *n >= min_count && !SPECIALS.contains(&t.as_str()))
            .collect();
        kept.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        if SPECIALS.len() + kept.len() > MAX_TOKENS {
            return Err(error(
                None,
                format!(
                    "{} tokens would exceed the limit of {MAX_TOKENS}: raise min_count",
                    SPECIALS.len() + kept.len()
                ),
            ));
        }
        let tokens: Vec<String> = SPECIALS
            .iter()
            .map(|s| s.to_string())
            .chain(kept.into_iter().map(|(t, _)| t))
            .collect();
        Ok(Vocab::from_tokens(spec, tokens, None))
    }

    fn from_tokens(spec: VocabSpec, tokens: Vec<String>, bpe: Option<Box<Tokenizer>>) -> Vocab {
        let ids = if bpe.is_some() {
            HashMap::new()
        } else {
            tokens
                .iter()
                .enumerate()
                .map(|(i, t)| (t.clone(), i))
                .collect()
        };
        Vocab {
            spec,
            tokens,
            ids,
            bpe,
        }
    }

    /// What was trained.
    pub fn spec(&self) -> &VocabSpec {
        &self.spec
    }

    /// The number of tokens, specials included.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Never true for a trained or loaded vocabulary (it has the specials).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The ids of `text`'s tokens, without `<bos>` or `<eos>`; anything the
    /// vocabulary lacks is [`UNK`]. Specials spelt out in the text (`"<pad>"`)
    /// are ordinary text, never special ids.
    pub fn encode(&self, text: &str) -> Vec<usize> {
        let id = |t: &str| self.ids.get(t).copied().unwrap_or(UNK);
        match (&self.spec, &self.bpe) {
            (_, Some(tok)) => match tok.encode_fast(text, false) {
                Ok(enc) => enc.get_ids().iter().map(|&i| i as usize).collect(),
                // Byte-level BPE covers every text; should `tokenizers`
                // still fail (its regex engine has a backtracking limit),
                // the text is unknown rather than a panic.
                Err(_) => vec![UNK],
            },
            (VocabSpec::Word { .. }, None) => words(text).map(id).collect(),
            (_, None) => {
                let mut buf = [0u8; 4];
                collapse_whitespace(text)
                    .chars()
                    .map(|c| id(c.encode_utf8(&mut buf)))
                    .collect()
            }
        }
    }

    /// The text of `ids`: `<pad>`, `<bos>` and `<eos>` are skipped (all of
    /// them: nothing stops at `<eos>`), `<unk>` and ids out of range are
    /// written `<unk>`.
    pub fn decode(&self, ids: &[usize]) -> String {
        let ids = ids
            .iter()
            .copied()
            .filter(|&i| !matches!(i, PAD | BOS | EOS));
        match &self.bpe {
            Some(tok) => {
                // Runs of ordinary ids go to `tokenizers` together, since a
                // character's bytes may be split over several tokens.
                let mut out = String::new();
                let mut run: Vec<u32> = Vec::new();
                let flush = |run: &mut Vec<u32>, out: &mut String| {
                    if !run.is_empty() {
                        out.push_str(&tok.decode(run, false).unwrap_or_default());
                        run.clear();
                    }
                };
                for i in ids {
                    if i == UNK || i >= self.tokens.len() {
                        flush(&mut run, &mut out);
                        out.push_str(SPECIALS[UNK]);
                    } else {
                        run.push(i as u32);
                    }
                }
                flush(&mut run, &mut out);
                out
            }
            None => {
                let tokens = ids.map(|i| self.tokens.get(i).map_or(SPECIALS[UNK], |t| t));
                match self.spec {
                    VocabSpec::Word { .. } => detokenise(tokens),
                    _ => tokens.collect(),
                }
            }
        }
    }

    /// A printable form of one token, for the axes of attention heatmaps: a
    /// space is `▁`, other control characters are escaped, a BPE token is
    /// shown as the text it stands for (a part of a character's bytes as
    /// `�`), an id out of range as `<bad id N>`.
    pub fn token(&self, id: usize) -> String {
        let Some(raw) = self.tokens.get(id) else {
            return format!("<bad id {id}>");
        };
        if id < SPECIALS.len() {
            return raw.clone();
        }
        let text = match &self.bpe {
            Some(tok) => tok
                .decode(&[id as u32], false)
                .unwrap_or_else(|_| raw.clone()),
            None => raw.clone(),
        };
        text.chars()
            .map(|c| match c {
                ' ' => "▁".to_string(),
                c if c.is_control() => c.escape_default().to_string(),
                c => c.to_string(),
            })
            .collect()
    }

    /// Encodes running text whose line breaks matter (a language model's
    /// corpus): each `\n` is written as [`NEWLINE`] first, an ordinary
    /// character to every kind of vocabulary, so the character kind's
    /// whitespace collapsing keeps it. One character for one, so counts of
    /// characters (bits per character) are those of the original text.
    ///
    /// ```
    /// use experiments::vocab::{Vocab, VocabSpec};
    /// let text = "It is a truth\nuniversally acknowledged";
    /// let v = Vocab::train(&VocabSpec::Char { min_count: 1 }, &[&Vocab::running_text(text)])?;
    /// assert_eq!(v.decode_text(&v.encode_text(text)), text);
    /// # Ok::<(), experiments::vocab::VocabError>(())
    /// ```
    pub fn encode_text(&self, text: &str) -> Vec<usize> {
        self.encode(&Self::running_text(text))
    }

    /// The inverse of [`Vocab::encode_text`]: [`NEWLINE`] back to `\n`.
    pub fn decode_text(&self, ids: &[usize]) -> String {
        self.decode(ids).replace(NEWLINE, "\n")
    }

    /// `text` with its line breaks as [`NEWLINE`]: what a language model's
    /// vocabulary is trained on.
    pub fn running_text(text: &str) -> String {
        text.replace('\n', &NEWLINE.to_string())
    }

    /// What `decode(encode(text))` gives for a text with no unknown tokens:
    /// whitespace collapsed and trimmed (`char`), the detokenised words
    /// (`word`), or the text itself (`bpe`). Compare outputs with
    /// references in this form.
    pub fn normalise(&self, text: &str) -> String {
        match self.spec {
            VocabSpec::Char { .. } => collapse_whitespace(text),
            VocabSpec::Word { .. } => detokenise(words(text)),
            VocabSpec::Bpe { .. } => text.to_string(),
        }
    }

    /// Writes `dir/vocab.json` (the spec and the tokens) and, for BPE,
    /// `dir/tokenizer.json` first (the file Python's `tokenizers` loads).
    /// `dir` is created if missing; each file is written to a temporary
    /// name and renamed, so a crash never leaves half a file.
    pub fn save(&self, dir: &Path) -> Result<(), VocabError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| error(Some(dir), format!("cannot create the folder: {e}")))?;
        if let Some(tok) = &self.bpe {
            let path = dir.join(TOKENIZER_FILE);
            let json = tok
                .to_string(true)
                .map_err(|e| error(Some(&path), format!("cannot serialise: {e}")))?;
            write_atomic(&path, json.as_bytes())?;
        }
        let path = dir.join(VOCAB_FILE);
        let file = VocabFile {
            spec: self.spec.clone(),
            tokens: self.tokens.clone(),
        };
        let json = serde_json::to_string_pretty(&file)
            .map_err(|e| error(Some(&path), format!("cannot serialise: {e}")))?;
        write_atomic(&path, json.as_bytes())
    }

    /// Reads what [`Vocab::save`] wrote in `dir`, checking it: the specials
    /// at ids 0..4, no token twice, at most [`MAX_TOKENS`], a valid spec and,
    /// for BPE, a byte-level BPE `tokenizer.json` with the same tokens as
    /// `vocab.json`. Every error names the file.
    pub fn load(dir: &Path) -> Result<Vocab, VocabError> {
        let path = dir.join(VOCAB_FILE);
        let p = Some(path.as_path());
        let bytes = read_capped(&path)?;
        let file: VocabFile = serde_json::from_slice(&bytes).map_err(|e| {
            error(
                p,
                format!("not a vocabulary file (expected {{\"spec\": …, \"tokens\": […]}}): {e}"),
            )
        })?;
        file.spec.validate().map_err(|m| error(p, m))?;
        check_tokens(&file.tokens, &file.spec).map_err(|m| error(p, m))?;
        let bpe = match file.spec {
            VocabSpec::Bpe { .. } => Some(Box::new(load_tokenizer(dir, &file.tokens)?)),
            _ => None,
        };
        Ok(Vocab::from_tokens(file.spec, file.tokens, bpe))
    }
}

/// The number of whitespace-separated words in `text`, the denominator of
/// per-word perplexity (the same for every kind of vocabulary).
pub fn word_count(text: &str) -> usize {
    text.split_whitespace().count()
}

/// `vocab.json`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VocabFile {
    spec: VocabSpec,
    tokens: Vec<String>,
}

fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The word level's tokens: words (with inner apostrophes, so `don't` and
/// `geht's` stay whole) and single marks that are neither word nor space.
fn words(text: &str) -> impl Iterator<Item = &str> {
    static WORD: OnceLock<Regex> = OnceLock::new();
    WORD.get_or_init(|| Regex::new(r"\w+(?:['’]\w+)*|[^\w\s]").expect("a valid word pattern"))
        .find_iter(text)
        .map(|m| m.as_str())
}

/// Joins word-level tokens with spaces, except before closing punctuation
/// and after opening punctuation (German quotes `„…“` included). Only
/// whole marks count, so re-tokenising the result gives the same tokens.
fn detokenise<'a>(tokens: impl Iterator<Item = &'a str>) -> String {
    const NO_SPACE_BEFORE: &[&str] = &[
        ".", ",", "!", "?", ";", ":", ")", "]", "}", "%", "…", "“", "”",
    ];
    const NO_SPACE_AFTER: &[&str] = &["(", "[", "{", "¿", "¡", "„"];
    let mut out = String::new();
    let mut glue_next = true;
    for t in tokens {
        if !glue_next && !NO_SPACE_BEFORE.contains(&t) {
            out.push(' ');
        }
        out.push_str(t);
        glue_next = NO_SPACE_AFTER.contains(&t);
    }
    out
}

fn bpe_error(message: impl fmt::Display) -> VocabError {
    error(
        None,
        format!("BPE training failed in `tokenizers`: {message}"),
    )
}

fn train_bpe(
    spec: &VocabSpec,
    size: usize,
    min_frequency: u64,
    texts: &[&str],
) -> Result<Vocab, VocabError> {
    // `<unk>` as the model's unknown token is for Python's sake: with all
    // 256 bytes in the alphabet nothing is ever unknown.
    let model = BPE::builder()
        .unk_token(SPECIALS[UNK].to_string())
        .build()
        .map_err(bpe_error)?;
    // No prefix space: it would come back from decoding, and the round
    // trip is exact only without it.
    let byte_level = ByteLevel::default().add_prefix_space(false);
    let mut tokenizer = TokenizerBuilder::new()
        .with_model(model)
        .with_normalizer(None::<tokenizers::NormalizerWrapper>)
        .with_pre_tokenizer(Some(byte_level))
        .with_post_processor(None::<tokenizers::PostProcessorWrapper>)
        .with_decoder(Some(byte_level))
        .build()
        .map_err(bpe_error)?;
    let mut trainer = BpeTrainer::builder()
        .vocab_size(size)
        .min_frequency(min_frequency)
        .show_progress(false)
        .special_tokens(
            SPECIALS
                .iter()
                .map(|s| AddedToken::from(*s, true))
                .collect(),
        )
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    tokenizer
        .train(&mut trainer, texts.iter())
        .map_err(bpe_error)?;
    let mut tokenizer: Tokenizer = tokenizer.into();
    tokenizer.set_encode_special_tokens(true);
    let tokens = dense_tokens(&tokenizer).map_err(bpe_error)?;
    check_tokens(&tokens, spec).map_err(bpe_error)?;
    Ok(Vocab::from_tokens(
        spec.clone(),
        tokens,
        Some(Box::new(tokenizer)),
    ))
}

/// The tokenizer's tokens by id, which must run 0..n without a gap.
fn dense_tokens(tok: &Tokenizer) -> Result<Vec<String>, String> {
    let vocab = tok.get_vocab(true);
    if vocab.len() > MAX_TOKENS {
        return Err(format!(
            "{} tokens, more than the limit of {MAX_TOKENS}",
            vocab.len()
        ));
    }
    let mut tokens = vec![None; vocab.len()];
    for (t, id) in vocab {
        match tokens.get_mut(id as usize) {
            Some(slot) => *slot = Some(t),
            None => {
                return Err(format!(
                    "token {t:?} has id {id}, outside 0..{} (ids must have no gaps)",
                    tokens.len()
                ));
            }
        }
    }
    tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.ok_or_else(|| format!("no token has id {i} (ids must have no gaps)")))
        .collect()
}

/// The checks every token list passes: size, the specials first, no
/// duplicates, and tokens the kind could have produced.
fn check_tokens(tokens: &[String], spec: &VocabSpec) -> Result<(), String> {
    if tokens.len() > MAX_TOKENS {
        return Err(format!(
            "{} tokens, more than the limit of {MAX_TOKENS}",
            tokens.len()
        ));
    }
    for (id, want) in SPECIALS.iter().enumerate() {
        match tokens.get(id) {
            Some(t) if t == want => {}
            Some(t) => return Err(format!("token {id} is {t:?}; it must be {want:?}")),
            None => {
                return Err(format!(
                    "only {} tokens: the specials {SPECIALS:?} must come first",
                    tokens.len()
                ));
            }
        }
    }
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
    for (id, t) in tokens.iter().enumerate() {
        if let Some(first) = seen.insert(t, id) {
            return Err(format!(
                "token {t:?} appears twice, at ids {first} and {id}"
            ));
        }
        if id < SPECIALS.len() {
            continue;
        }
        let ok = match spec {
            VocabSpec::Char { .. } => t.chars().count() == 1,
            VocabSpec::Word { .. } => !t.is_empty() && !t.contains(char::is_whitespace),
            VocabSpec::Bpe { .. } => !t.is_empty(),
        };
        if !ok {
            return Err(format!(
                "token {id} ({t:?}) cannot be a {} token",
                spec.kind()
            ));
        }
    }
    Ok(())
}

/// `dir/tokenizer.json`, checked to be the byte-level BPE that
/// [`Vocab::save`] writes, with exactly `tokens` (from `vocab.json`).
fn load_tokenizer(dir: &Path, tokens: &[String]) -> Result<Tokenizer, VocabError> {
    let path = dir.join(TOKENIZER_FILE);
    let p = Some(path.as_path());
    let bytes = read_capped(&path)?;
    let mut tok = Tokenizer::from_bytes(&bytes)
        .map_err(|e| error(p, format!("not a `tokenizers` tokenizer.json: {e}")))?;
    if !matches!(tok.get_model(), ModelWrapper::BPE(_)) {
        return Err(error(p, "the model is not BPE"));
    }
    if !matches!(
        tok.get_pre_tokenizer(),
        Some(PreTokenizerWrapper::ByteLevel(_))
    ) || !matches!(tok.get_decoder(), Some(DecoderWrapper::ByteLevel(_)))
    {
        return Err(error(
            p,
            "the pre-tokenizer and decoder must both be ByteLevel (byte-level BPE)",
        ));
    }
    let got = dense_tokens(&tok).map_err(|m| error(p, m))?;
    if got != tokens {
        let at = got
            .iter()
            .zip(tokens)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(tokens.len()));
        return Err(error(
            p,
            format!(
                "its {} tokens differ from the {} of {VOCAB_FILE} (first at id {at}): \
                 the two files are not from the same save",
                got.len(),
                tokens.len()
            ),
        ));
    }
    tok.set_encode_special_tokens(true);
    Ok(tok)
}

/// A regular file's bytes, refusing empty and absurdly large files.
fn read_capped(path: &Path) -> Result<Vec<u8>, VocabError> {
    let p = Some(path);
    let meta = std::fs::metadata(path).map_err(|e| error(p, format!("cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(error(p, "not a regular file"));
    }
    if meta.len() == 0 {
        return Err(error(p, "the file is empty"));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(error(
            p,
            format!(
                "{} bytes, more than the {MAX_FILE_BYTES} a vocabulary may have",
                meta.len()
            ),
        ));
    }
    std::fs::read(path).map_err(|e| error(p, format!("cannot read: {e}")))
}

/// Writes `path` through a temporary file in the same folder and a rename,
/// so a reader sees the old file or the whole new one.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), VocabError> {
    use std::io::Write;
    let name = path
        .file_name()
        .map_or_else(|| "vocab".into(), |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(error(Some(path), format!("cannot write: {e}")));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        error(
            Some(path),
            format!("cannot rename the written file into place: {e}"),
        )
    })
}
