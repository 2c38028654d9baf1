//! The bundled corpora (`data/` at the project root: English-German
//! sentence pairs, Jane Austen's novels), read as hostile input: every
//! malformed file is a [`DataError`] naming the file and, where there is
//! one, the line. Nothing here panics on a bad file.
//!
//! ```
//! use experiments::data::{data_dir, read_pairs, verify_checksums};
//! verify_checksums(&data_dir())?; // SHA-256 of every bundled file
//! let valid = read_pairs(&data_dir().join("ding-en-de/valid.tsv"))?;
//! assert_eq!(valid.len(), 1000);
//! assert!(!valid[0].src.is_empty() && !valid[0].tgt.is_empty());
//! # Ok::<(), experiments::data::DataError>(())
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// What went wrong with which file (and line, 1-based).
#[derive(Debug, Clone, PartialEq)]
pub struct DataError {
    /// The file.
    pub path: PathBuf,
    /// The line, where the problem is on one.
    pub line: Option<usize>,
    /// What is wrong, and what was expected.
    pub message: String,
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{l}: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for DataError {}

fn error(path: &Path, line: Option<usize>, message: impl Into<String>) -> DataError {
    DataError {
        path: path.to_path_buf(),
        line,
        message: message.into(),
    }
}

/// The project's `data/` folder (next to the workspace's `Cargo.toml`).
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data")
}

/// A file's text: it must exist, be non-empty and be UTF-8 (the error
/// names the line of the first invalid byte).
pub fn read_text(path: &Path) -> Result<String, DataError> {
    let bytes = std::fs::read(path).map_err(|e| error(path, None, format!("cannot read: {e}")))?;
    if bytes.is_empty() {
        return Err(error(path, None, "the file is empty"));
    }
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count();
        error(path, Some(line), format!("invalid UTF-8 at byte {at}"))
    })
}

/// One sentence pair: source (English) and target (German).
#[derive(Clone, Debug, PartialEq)]
pub struct Pair {
    /// The source sentence.
    pub src: String,
    /// Its translation.
    pub tgt: String,
}

/// Reads `source<TAB>target` lines (no header, no quoting: `"` is an
/// ordinary character). Every line needs exactly one TAB and two non-empty
/// sides; a final newline is optional.
pub fn read_pairs(path: &Path) -> Result<Vec<Pair>, DataError> {
    let text = read_text(path)?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    text.split('\n')
        .enumerate()
        .map(|(i, line)| {
            let at = Some(i + 1);
            let line = line.strip_suffix('\r').unwrap_or(line);
            let mut sides = line.split('\t');
            match (sides.next(), sides.next(), sides.next()) {
                (Some(src), Some(tgt), None) if !src.is_empty() && !tgt.is_empty() => Ok(Pair {
                    src: src.to_string(),
                    tgt: tgt.to_string(),
                }),
                (_, None, _) => Err(error(path, at, "no TAB: expected `source<TAB>target`")),
                (_, _, Some(_)) => Err(error(
                    path,
                    at,
                    "more than one TAB: expected `source<TAB>target`",
                )),
                _ => Err(error(
                    path,
                    at,
                    "an empty side: expected `source<TAB>target`",
                )),
            }
        })
        .collect()
}

/// Checks every file listed in `dir/SHA256SUMS` (`sha256sum` format:
/// `<64 hex digits>  <relative path>`) against its SHA-256.
pub fn verify_checksums(dir: &Path) -> Result<(), DataError> {
    let sums = dir.join("SHA256SUMS");
    let text = read_text(&sums)?;
    for (i, line) in text.lines().enumerate() {
        let Some((hex, name)) = line.split_once("  ") else {
            return Err(error(&sums, Some(i + 1), "expected `<sha256>  <file>`"));
        };
        let file = dir.join(name);
        let bytes =
            std::fs::read(&file).map_err(|e| error(&file, None, format!("cannot read: {e}")))?;
        let got: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if got != hex {
            return Err(error(
                &file,
                None,
                format!("checksum mismatch: SHA256SUMS says {hex}, the file has {got}"),
            ));
        }
    }
    Ok(())
}
