//! Checkpoints: a model's named tensors (parameters and buffers), the
//! optimiser state, a config, the step and the RNG state, in one file.
//!
//! # File layout
//!
//! ```text
//! offset  size  field
//!      0     8  magic, b"TFMRCKPT"
//!      8     4  format version, u32 little-endian (FORMAT_VERSION)
//!     12     8  payload length in bytes, u64 little-endian
//!     20     8  FNV-1a 64 checksum of the payload, u64 little-endian
//!     28     -  payload: a `Checkpoint<C>` encoded by bincode 2 (serde,
//!               `config::standard()`: little-endian, varint integers)
//! ```
//!
//! Saving writes a temporary file in the same directory, fsyncs it and
//! renames it over the target, so a crash leaves the old file or the new one,
//! never half of one. Loading checks, in order, the magic, the version, the
//! payload length against the real file size (before reading or allocating
//! anything), the checksum, and then decodes with a bincode size limit
//! proportional to the payload, so a hostile length inside a payload (one
//! with a valid checksum) is an error, not a huge allocation. Every failure
//! is a [`CheckpointError`]; nothing here panics on a bad file.
//!
//! ```
//! use autograd::Tensor;
//! use transformer::checkpoint::Checkpoint;
//! use transformer::optim::Adam;
//! use transformer::{rng, Linear};
//!
//! let mut model = Linear::<f32>::new(3, 2, &mut rng(0));
//! let dir = std::env::temp_dir().join(format!("ckpt-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("model.ckpt");
//! let config = ("tiny", 3usize); // any serde type
//! Checkpoint::new(&mut model, Some(&Adam::paper()), &config, 10, &rng(1)).save(&path)?;
//!
//! let mut fresh = Linear::<f32>::new(3, 2, &mut rng(99));
//! let ckpt = Checkpoint::<(String, usize)>::load(&path)?;
//! ckpt.restore(&mut fresh)?;
//! assert_eq!(fresh.weight.value, model.weight.value);
//! assert_eq!((ckpt.step, ckpt.config.1), (10, 3));
//! std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), transformer::checkpoint::CheckpointError>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use autograd::Tensor;
use bincode::error::DecodeError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::optim::Adam;
use crate::{Entry, Module, Rng, Visitor};

/// The first 8 bytes of every checkpoint file.
pub const MAGIC: [u8; 8] = *b"TFMRCKPT";

/// The format version this code writes and reads. 2: the Transformer's
/// config names its blocks (issue 7), and its sublayer norms are named
/// `self_attn_norm`, `cross_attn_norm`, `ffn_norm` (were `norm1..3`).
pub const FORMAT_VERSION: u32 = 2;

/// Bytes before the payload: magic, version, payload length, checksum.
pub const HEADER_LEN: usize = 28;

/// Whether a saved tensor was a trainable parameter or a buffer.
///
/// ```
/// use transformer::checkpoint::TensorKind;
/// assert_eq!(TensorKind::Param.to_string(), "parameter");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TensorKind {
    /// A trainable parameter.
    Param,
    /// A saved, untrained tensor (BatchNorm's running statistics).
    Buffer,
}

impl fmt::Display for TensorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TensorKind::Param => "parameter",
            TensorKind::Buffer => "buffer",
        })
    }
}

/// One named tensor of a model, as stored.
///
/// ```
/// use autograd::Tensor;
/// use transformer::checkpoint::{SavedTensor, TensorKind};
/// let t = SavedTensor { name: "w".into(), kind: TensorKind::Param, shape: vec![2], data: vec![1.0, 2.0] };
/// assert_eq!(t.to_tensor(), Tensor::from_vec(vec![1.0, 2.0], &[2]));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedTensor {
    /// Dotted name from the module's visitor (`encoder.layers.0.ff.w1.weight`).
    pub name: String,
    /// Parameter or buffer.
    pub kind: TensorKind,
    /// The tensor's shape.
    pub shape: Vec<usize>,
    /// Row-major elements.
    pub data: Vec<f32>,
}

impl SavedTensor {
    /// The stored values as a tensor (copies the data).
    ///
    /// ```
    /// use transformer::checkpoint::{SavedTensor, TensorKind};
    /// let t = SavedTensor { name: "b".into(), kind: TensorKind::Buffer, shape: vec![1, 1], data: vec![3.0] };
    /// assert_eq!(t.to_tensor().shape(), &[1, 1]);
    /// ```
    pub fn to_tensor(&self) -> Tensor<f32> {
        Tensor::from_vec(self.data.clone(), &self.shape)
    }
}

/// Everything needed to resume training bit for bit: the model's tensors,
/// the optimiser, the config `C` (any serde type), the step and the RNG.
///
/// ```
/// use transformer::checkpoint::{Checkpoint, TensorKind};
/// use transformer::{rng, Linear};
/// let mut model = Linear::<f32>::without_bias(2, 2, &mut rng(0));
/// let ckpt = Checkpoint::new(&mut model, None, &"cfg", 0, &rng(0));
/// assert_eq!(ckpt.tensors.len(), 1);
/// assert_eq!((ckpt.tensors[0].name.as_str(), ckpt.tensors[0].kind), ("weight", TensorKind::Param));
/// let bytes = ckpt.to_bytes().unwrap();
/// assert_eq!(&bytes[..8], b"TFMRCKPT");
/// let back = Checkpoint::<String>::from_bytes(&bytes).unwrap();
/// assert_eq!(back.tensors, ckpt.tensors);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint<C> {
    /// The caller's config (the trainer stores its model and training
    /// configs, block names included).
    pub config: C,
    /// Training step (number of optimiser updates done).
    pub step: u64,
    /// The generator's state, so dropout masks continue where they left off.
    pub rng: Rng,
    /// Every parameter and buffer, in the model's visiting order.
    pub tensors: Vec<SavedTensor>,
    /// The optimiser (hyper-parameters, moments, step counts), if saved.
    pub optimizer: Option<Adam>,
}

/// Why a checkpoint could not be written, read, or applied to a model.
///
/// ```
/// use transformer::checkpoint::{Checkpoint, CheckpointError};
/// let err = Checkpoint::<()>::from_bytes(b"not a checkpoint, just some text").unwrap_err();
/// assert!(matches!(err, CheckpointError::NotACheckpoint { .. }));
/// assert!(err.to_string().contains("not a checkpoint"));
/// ```
#[derive(Debug)]
pub enum CheckpointError {
    /// The operating system refused an operation on `path`.
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done (`"open"`, `"read"`, `"write"`, ...).
        action: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
    /// The file does not start with [`MAGIC`].
    NotACheckpoint {
        /// The first bytes of the file.
        found: Vec<u8>,
    },
    /// The file was written by another format version.
    UnsupportedVersion {
        /// The file's version.
        found: u32,
        /// [`FORMAT_VERSION`].
        supported: u32,
    },
    /// The file is shorter than its header says (or than the header itself):
    /// an interrupted copy, or a corrupt length field.
    Truncated {
        /// Bytes the header promises.
        expected: u64,
        /// Bytes the file has.
        actual: u64,
    },
    /// The file is longer than its header says.
    TrailingBytes {
        /// Bytes the header promises.
        expected: u64,
        /// Bytes the file has.
        actual: u64,
    },
    /// The payload's checksum differs from the header's: the bytes changed
    /// after writing.
    ChecksumMismatch {
        /// The header's checksum.
        stored: u64,
        /// The checksum of the bytes read.
        computed: u64,
    },
    /// A length inside the payload claims more memory than the payload could
    /// hold: a corrupt or hostile file.
    LimitExceeded {
        /// The decoder's byte limit.
        limit: usize,
    },
    /// The payload does not decode as a checkpoint of the requested type.
    Decode(String),
    /// The checkpoint could not be encoded.
    Encode(String),
    /// The payload decoded but is inconsistent (a shape that does not match
    /// its data, an invalid optimiser state).
    Corrupt(String),
    /// The checkpoint does not fit the model (or another checkpoint): the
    /// first differing name, kind or shape.
    Mismatch(String),
    /// [`average_checkpoints`] was given no paths.
    NoCheckpoints,
    /// An error in the file at `path`.
    InFile {
        /// The file.
        path: PathBuf,
        /// What went wrong in it.
        source: Box<CheckpointError>,
    },
}

impl CheckpointError {
    /// The error itself, looking through [`CheckpointError::InFile`].
    ///
    /// ```
    /// use transformer::checkpoint::{Checkpoint, CheckpointError};
    /// let path = std::env::temp_dir().join(format!("empty-{}.ckpt", std::process::id()));
    /// std::fs::write(&path, b"").unwrap();
    /// let err = Checkpoint::<()>::load(&path).unwrap_err();
    /// assert!(matches!(err.root(), CheckpointError::Truncated { actual: 0, .. }));
    /// std::fs::remove_file(&path).unwrap();
    /// ```
    pub fn root(&self) -> &CheckpointError {
        match self {
            CheckpointError::InFile { source, .. } => source.root(),
            e => e,
        }
    }

    pub(crate) fn in_file(self, path: &Path) -> Self {
        match self {
            e @ (CheckpointError::Io { .. } | CheckpointError::InFile { .. }) => e,
            e => CheckpointError::InFile {
                path: path.to_path_buf(),
                source: Box::new(e),
            },
        }
    }
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use CheckpointError::*;
        match self {
            Io {
                path,
                action,
                source,
            } => write!(f, "could not {action} `{}`: {source}", path.display()),
            NotACheckpoint { found } => write!(
                f,
                "not a checkpoint file: it starts with {:?}, not the magic bytes {:?}",
                String::from_utf8_lossy(found),
                String::from_utf8_lossy(&MAGIC)
            ),
            UnsupportedVersion { found, supported } => write!(
                f,
                "checkpoint format version {found} is not supported (this build reads version \
                 {supported}); load it with the version of the program that wrote it"
            ),
            Truncated { expected, actual } => write!(
                f,
                "checkpoint is truncated: its header promises {expected} bytes but the file has \
                 {actual} (an interrupted copy or a corrupt header); use another checkpoint"
            ),
            TrailingBytes { expected, actual } => write!(
                f,
                "checkpoint is corrupt: its header promises {expected} bytes but the file has \
                 {actual}; use another checkpoint"
            ),
            ChecksumMismatch { stored, computed } => write!(
                f,
                "checkpoint is corrupt: payload checksum {computed:#018x} differs from the \
                 stored {stored:#018x} (the file changed after it was written); use another checkpoint"
            ),
            LimitExceeded { limit } => write!(
                f,
                "checkpoint is corrupt or hostile: a length inside it needs more than the \
                 {limit}-byte decoding limit for a payload of its size"
            ),
            Decode(msg) => write!(
                f,
                "checkpoint payload does not decode ({msg}); was it saved with another config \
                 type or another version of the program?"
            ),
            Encode(msg) => write!(f, "could not encode the checkpoint: {msg}"),
            Corrupt(msg) => write!(f, "checkpoint is inconsistent: {msg}"),
            Mismatch(msg) => write!(f, "checkpoint does not match: {msg}"),
            NoCheckpoints => write!(f, "no checkpoints to average"),
            InFile { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for CheckpointError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CheckpointError::Io { source, .. } => Some(source),
            CheckpointError::InFile { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

/// FNV-1a, 64 bit (Fowler, Noll, Vo): the payload checksum. Each step
/// `h = (h ^ byte) * prime` is a bijection of `h`, so any change of a single
/// byte always changes the result.
///
/// ```
/// use transformer::checkpoint::fnv1a64;
/// assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
/// assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
/// ```
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Parses and checks the header against the number of bytes that follow it;
/// returns the payload length and checksum.
fn parse_header(header: &[u8], available: u64) -> Result<(usize, u64), CheckpointError> {
    let total = HEADER_LEN as u64 + available;
    if header.len() < HEADER_LEN {
        // Report a wrong magic first: a short text file is "not a checkpoint".
        let n = header.len().min(MAGIC.len());
        if header[..n] != MAGIC[..n] {
            return Err(CheckpointError::NotACheckpoint {
                found: header[..n].to_vec(),
            });
        }
        return Err(CheckpointError::Truncated {
            expected: HEADER_LEN as u64,
            actual: header.len() as u64,
        });
    }
    let field = |range: std::ops::Range<usize>| -> [u8; 8] {
        let mut b = [0u8; 8];
        b[..range.len()].copy_from_slice(&header[range]);
        b
    };
    if header[..8] != MAGIC {
        return Err(CheckpointError::NotACheckpoint {
            found: header[..8].to_vec(),
        });
    }
    let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if version != FORMAT_VERSION {
        return Err(CheckpointError::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let len = u64::from_le_bytes(field(12..20));
    let checksum = u64::from_le_bytes(field(20..28));
    let expected = (HEADER_LEN as u64).saturating_add(len);
    if len > available {
        return Err(CheckpointError::Truncated {
            expected,
            actual: total,
        });
    }
    if len < available {
        return Err(CheckpointError::TrailingBytes {
            expected,
            actual: total,
        });
    }
    let len = usize::try_from(len).map_err(|_| {
        CheckpointError::Corrupt(format!("payload of {len} bytes does not fit in memory"))
    })?;
    Ok((len, checksum))
}

/// Decodes `payload` with a bincode size limit proportional to its length.
///
/// bincode's limit counts the bytes each value *claims*: a container claims
/// `len * size_of::<T>()` before allocating, and an integer claims its full
/// width (8 for a u64) even when its varint encoding is one byte. So a valid
/// payload claims at most 8 bytes per byte, and any length prefix larger than
/// that bound is rejected before allocation. The limit is a const generic,
/// hence the ladder of powers of 4.
fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, CheckpointError> {
    fn decode<T: DeserializeOwned, const LIMIT: usize>(
        payload: &[u8],
    ) -> Result<T, CheckpointError> {
        let config = bincode::config::standard().with_limit::<LIMIT>();
        let (value, used) =
            bincode::serde::decode_from_slice(payload, config).map_err(|e| match e {
                DecodeError::LimitExceeded => CheckpointError::LimitExceeded { limit: LIMIT },
                DecodeError::UnexpectedEnd { .. } => CheckpointError::Decode(
                    "the payload ends before the value does: a length inside it is corrupt".into(),
                ),
                e => CheckpointError::Decode(e.to_string()),
            })?;
        if used != payload.len() {
            return Err(CheckpointError::Decode(format!(
                "{} bytes left over after the checkpoint",
                payload.len() - used
            )));
        }
        Ok(value)
    }
    let budget = (payload.len() as u64).saturating_mul(8) + (1 << 16);
    macro_rules! ladder {
        ($($k:literal)*) => {
            $(if budget <= 1u64 << $k {
                return decode::<T, { 1usize << $k }>(payload);
            })*
        };
    }
    ladder!(16 18 20 22 24 26 28 30 32 34 36 38 40 42 44);
    Err(CheckpointError::Corrupt(format!(
        "a payload of {} bytes is larger than this build can decode",
        payload.len()
    )))
}

/// The model's entries in visiting order: name, kind, shape.
fn layout(model: &mut dyn Module<f32>) -> Vec<(String, TensorKind, Vec<usize>)> {
    let mut out = Vec::new();
    model.visit(&mut Visitor::new(&mut |name, e| {
        let (kind, shape) = match e {
            Entry::Param(p) => (TensorKind::Param, p.value.shape().to_vec()),
            Entry::Buffer(b) => (TensorKind::Buffer, b.shape().to_vec()),
        };
        out.push((name.to_string(), kind, shape));
    }));
    out
}

impl<C> Checkpoint<C> {
    /// Captures `model`'s parameters and buffers (copied), the optimiser, the
    /// config, the step and the generator's state.
    ///
    /// ```
    /// use transformer::checkpoint::Checkpoint;
    /// use transformer::{rng, Linear};
    /// let mut lin = Linear::<f32>::new(2, 3, &mut rng(0));
    /// let c = Checkpoint::new(&mut lin, None, &(), 5, &rng(0));
    /// let names: Vec<_> = c.tensors.iter().map(|t| t.name.as_str()).collect();
    /// assert_eq!(names, ["weight", "bias"]);
    /// assert_eq!(c.step, 5);
    /// ```
    pub fn new(
        model: &mut dyn Module<f32>,
        optimizer: Option<&Adam>,
        config: &C,
        step: u64,
        rng: &Rng,
    ) -> Self
    where
        C: Clone,
    {
        let mut tensors = Vec::new();
        model.visit(&mut Visitor::new(&mut |name, e| {
            let (kind, t) = match e {
                Entry::Param(p) => (TensorKind::Param, &p.value),
                Entry::Buffer(b) => (TensorKind::Buffer, &*b),
            };
            tensors.push(SavedTensor {
                name: name.to_string(),
                kind,
                shape: t.shape().to_vec(),
                data: t.to_vec(),
            });
        }));
        Checkpoint {
            config: config.clone(),
            step,
            rng: rng.clone(),
            tensors,
            optimizer: optimizer.cloned(),
        }
    }

    /// The stored tensor called `name`, if any.
    ///
    /// ```
    /// use transformer::checkpoint::Checkpoint;
    /// use transformer::{rng, Linear};
    /// let mut lin = Linear::<f32>::new(2, 3, &mut rng(0));
    /// let c = Checkpoint::new(&mut lin, None, &(), 0, &rng(0));
    /// assert_eq!(c.tensor("bias").unwrap().data, vec![0.0; 3]);
    /// assert!(c.tensor("nope").is_none());
    /// ```
    pub fn tensor(&self, name: &str) -> Option<&SavedTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Writes the values back into `model`, after checking that its entries
    /// match the checkpoint's exactly (same names, each a parameter or a
    /// buffer as saved, same shapes; none missing or extra) and that the
    /// optimiser state fits its parameters. On a mismatch nothing is written
    /// and the first difference is reported. Order does not matter: entries
    /// are matched by name.
    ///
    /// ```
    /// use transformer::checkpoint::{Checkpoint, CheckpointError};
    /// use transformer::{rng, Linear};
    /// let mut a = Linear::<f32>::new(2, 3, &mut rng(0));
    /// let c = Checkpoint::new(&mut a, None, &(), 0, &rng(0));
    /// let mut wider = Linear::<f32>::new(2, 4, &mut rng(0));
    /// let err = c.restore(&mut wider).unwrap_err();
    /// assert!(matches!(err, CheckpointError::Mismatch(_)));
    /// assert!(err.to_string().contains("weight"));
    /// ```
    pub fn restore(&self, model: &mut dyn Module<f32>) -> Result<(), CheckpointError> {
        let by_name: BTreeMap<&str, &SavedTensor> =
            self.tensors.iter().map(|t| (t.name.as_str(), t)).collect();
        let entries = layout(model);
        for (name, kind, shape) in &entries {
            let Some(saved) = by_name.get(name.as_str()) else {
                return Err(CheckpointError::Mismatch(format!(
                    "the model's {kind} `{name}` {shape:?} is not in the checkpoint"
                )));
            };
            if saved.kind != *kind || saved.shape != *shape {
                return Err(CheckpointError::Mismatch(format!(
                    "`{name}`: the checkpoint has a {} of shape {:?}, the model a {kind} of shape {shape:?}",
                    saved.kind, saved.shape
                )));
            }
        }
        if entries.len() != self.tensors.len() {
            let in_model: BTreeMap<&str, ()> =
                entries.iter().map(|(n, ..)| (n.as_str(), ())).collect();
            if let Some(extra) = self
                .tensors
                .iter()
                .find(|t| !in_model.contains_key(t.name.as_str()))
            {
                return Err(CheckpointError::Mismatch(format!(
                    "the checkpoint's {} `{}` {:?} is not in the model",
                    extra.kind, extra.name, extra.shape
                )));
            }
        }
        if let Some(opt) = &self.optimizer {
            opt.check_model(model).map_err(CheckpointError::Mismatch)?;
        }
        model.visit(&mut Visitor::new(&mut |name, e| {
            let saved = by_name[name];
            match e {
                Entry::Param(p) => p.value.data_mut().copy_from_slice(&saved.data),
                Entry::Buffer(b) => b.data_mut().copy_from_slice(&saved.data),
            }
        }));
        Ok(())
    }

    /// Checks what the decoder cannot: every tensor's data fills its shape,
    /// the optimiser state is well formed.
    fn check_consistent(&self) -> Result<(), CheckpointError> {
        for t in &self.tensors {
            let numel = autograd::checked_numel(&t.shape).ok_or_else(|| {
                CheckpointError::Corrupt(format!(
                    "tensor `{}` has an impossible shape {:?}",
                    t.name, t.shape
                ))
            })?;
            if numel != t.data.len() {
                return Err(CheckpointError::Corrupt(format!(
                    "tensor `{}` of shape {:?} needs {numel} values but {} are stored",
                    t.name,
                    t.shape,
                    t.data.len()
                )));
            }
        }
        if let Some(opt) = &self.optimizer {
            opt.config()
                .validate()
                .map_err(|e| CheckpointError::Corrupt(format!("optimiser: {e}")))?;
            for (name, m) in &opt.state().moments {
                if m.m.len() != m.v.len() {
                    return Err(CheckpointError::Corrupt(format!(
                        "optimiser moments for `{name}` have lengths {} and {}",
                        m.m.len(),
                        m.v.len()
                    )));
                }
            }
        }
        Ok(())
    }
}

impl<C: Serialize> Checkpoint<C> {
    /// The complete file contents: header and payload.
    ///
    /// ```
    /// use transformer::checkpoint::{Checkpoint, FORMAT_VERSION, HEADER_LEN};
    /// use transformer::{rng, Linear};
    /// let mut lin = Linear::<f32>::without_bias(1, 1, &mut rng(0));
    /// let bytes = Checkpoint::new(&mut lin, None, &(), 0, &rng(0)).to_bytes().unwrap();
    /// assert_eq!(bytes[8..12], FORMAT_VERSION.to_le_bytes());
    /// let len = u64::from_le_bytes(bytes[12..20].try_into().unwrap());
    /// assert_eq!(len as usize, bytes.len() - HEADER_LEN);
    /// ```
    pub fn to_bytes(&self) -> Result<Vec<u8>, CheckpointError> {
        let payload = bincode::serde::encode_to_vec(self, bincode::config::standard())
            .map_err(|e| CheckpointError::Encode(e.to_string()))?;
        let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(&fnv1a64(&payload).to_le_bytes());
        out.extend_from_slice(&payload);
        Ok(out)
    }

    /// Writes the checkpoint to `path` atomically: a temporary file in the
    /// same directory, fsync, rename over `path`, fsync of the directory.
    /// A reader sees the previous file or this one, never a partial write.
    ///
    /// ```
    /// use transformer::checkpoint::Checkpoint;
    /// use transformer::{rng, Linear};
    /// let dir = std::env::temp_dir().join(format!("ckpt-save-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let mut lin = Linear::<f32>::new(2, 2, &mut rng(0));
    /// let path = dir.join("a.ckpt");
    /// Checkpoint::new(&mut lin, None, &(), 1, &rng(0)).save(&path).unwrap();
    /// Checkpoint::new(&mut lin, None, &(), 2, &rng(0)).save(&path).unwrap(); // replaces it
    /// assert_eq!(Checkpoint::<()>::load(&path).unwrap().step, 2);
    /// assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1); // no temporary left
    /// std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), CheckpointError> {
        let path = path.as_ref();
        let bytes = self.to_bytes()?;
        write_atomic(path, &bytes)
    }
}

impl<C: DeserializeOwned> Checkpoint<C> {
    /// Parses complete file contents (as written by [`Checkpoint::to_bytes`]).
    ///
    /// ```
    /// use transformer::checkpoint::{Checkpoint, CheckpointError};
    /// use transformer::{rng, Linear};
    /// let mut lin = Linear::<f32>::new(2, 2, &mut rng(0));
    /// let bytes = Checkpoint::new(&mut lin, None, &(), 0, &rng(0)).to_bytes().unwrap();
    /// let cut = Checkpoint::<()>::from_bytes(&bytes[..bytes.len() - 1]).unwrap_err();
    /// assert!(matches!(cut, CheckpointError::Truncated { .. }));
    /// ```
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CheckpointError> {
        let head = &bytes[..bytes.len().min(HEADER_LEN)];
        let available = bytes.len().saturating_sub(HEADER_LEN) as u64;
        let (_, checksum) = parse_header(head, available)?;
        Self::from_payload(&bytes[HEADER_LEN..], checksum)
    }

    fn from_payload(payload: &[u8], stored: u64) -> Result<Self, CheckpointError> {
        let computed = fnv1a64(payload);
        if computed != stored {
            return Err(CheckpointError::ChecksumMismatch { stored, computed });
        }
        let ckpt: Self = decode_payload(payload)?;
        ckpt.check_consistent()?;
        Ok(ckpt)
    }

    /// Reads a checkpoint written by [`Checkpoint::save`]. The header is
    /// checked against the file's real size before the payload is read, so
    /// memory use is bounded by the file, whatever its header says. Errors
    /// other than I/O name the file ([`CheckpointError::InFile`]; see
    /// [`CheckpointError::root`]).
    ///
    /// ```
    /// use transformer::checkpoint::{Checkpoint, CheckpointError};
    /// let err = Checkpoint::<()>::load("/nonexistent/dir/x.ckpt").unwrap_err();
    /// assert!(matches!(err, CheckpointError::Io { action: "open", .. }));
    /// ```
    pub fn load(path: impl AsRef<Path>) -> Result<Self, CheckpointError> {
        let path = path.as_ref();
        Self::load_file(path).map_err(|e| e.in_file(path))
    }

    fn load_file(path: &Path) -> Result<Self, CheckpointError> {
        let io_err = |action| {
            move |source| CheckpointError::Io {
                path: path.to_path_buf(),
                action,
                source,
            }
        };
        // Opening a FIFO for reading blocks until a writer comes (forever,
        // usually), and a device can be endless: refuse anything but a
        // regular file before opening it (issue 10).
        let not_regular = || {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file (a directory, FIFO, socket or device)",
            )
        };
        if !fs::metadata(path).map_err(io_err("open"))?.is_file() {
            return Err(io_err("open")(not_regular()));
        }
        let mut file = File::open(path).map_err(io_err("open"))?;
        let meta = file.metadata().map_err(io_err("inspect"))?;
        if !meta.is_file() {
            return Err(io_err("open")(not_regular()));
        }
        let size = meta.len();
        let mut head = vec![0u8; (size as usize).min(HEADER_LEN)];
        file.read_exact(&mut head).map_err(io_err("read"))?;
        let (len, checksum) = parse_header(&head, size.saturating_sub(HEADER_LEN as u64))?;
        // `len` equals what the file holds after the header: a bounded allocation.
        let mut payload = vec![0u8; len];
        file.read_exact(&mut payload).map_err(io_err("read"))?;
        Self::from_payload(&payload, checksum)
    }
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The file a path finally names, following symbolic links (at most 40, as
/// the kernel does), also when the last target does not exist yet.
fn resolve_links(path: &Path) -> PathBuf {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        let is_link = fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink());
        let Some(target) = is_link.then(|| fs::read_link(&p).ok()).flatten() else {
            break;
        };
        p = match p.parent() {
            Some(dir) if target.is_relative() => dir.join(target),
            _ => target,
        };
    }
    p
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    // Saving through a link (`runs/x/latest -> step-N.ckpt`) updates the
    // file it points to and keeps the link: renaming the temporary file
    // over the link itself would replace the link with a regular file and
    // leave its target stale (issue 10).
    let path = &resolve_links(path);
    let io_err = |path: &Path, action: &'static str| {
        let path = path.to_path_buf();
        move |source| CheckpointError::Io {
            path,
            action,
            source,
        }
    };
    let Some(file_name) = path.file_name() else {
        return Err(CheckpointError::Io {
            path: path.to_path_buf(),
            action: "write",
            source: io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"),
        });
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        file_name.to_string_lossy(),
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_err(&tmp, "create"))?;
        f.write_all(bytes).map_err(io_err(&tmp, "write"))?;
        f.sync_all().map_err(io_err(&tmp, "sync"))?;
        fs::rename(&tmp, path).map_err(io_err(path, "rename a temporary file onto"))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
        return written;
    }
    // Make the rename itself durable. Some file systems cannot sync a
    // directory; the file is complete either way, so this is best effort.
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    remove_stale_temp_files(dir);
    Ok(())
}

/// The process id in a temporary file's name `.NAME.tmp-PID-N`, if it is
/// one of ours.
fn temp_file_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    let (_, tail) = rest.rsplit_once(".tmp-")?;
    let (pid, counter) = tail.split_once('-')?;
    counter.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// Removes the temporary files that processes killed while saving left in
/// `dir` (issue 10: about one kill in four left one, checkpoint-sized, for
/// ever). Only files named like ours whose process is gone are removed: a
/// live process may be writing its own. Whether a process is alive is read
/// from `/proc`, so this runs on Linux only; elsewhere nothing is removed.
/// Best effort: a file that cannot be removed stays.
fn remove_stale_temp_files(dir: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(temp_file_pid) else {
            continue;
        };
        if pid != me && !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Loads the checkpoints at `paths` and averages their tensors elementwise
/// (in f64, in the order given), as the paper does with its last 5
/// checkpoints (section 6.1). Buffers are averaged too (running statistics
/// are means as well; a constant buffer stays exactly what it was). The
/// result takes its config, step and RNG from the last path and has no
/// optimiser state. Every checkpoint must have the same entries (names,
/// kinds, shapes, in the same order) as the one before it; the first
/// difference is an error.
///
/// ```
/// use transformer::checkpoint::{average_checkpoints, Checkpoint};
/// use transformer::{rng, Linear};
/// let dir = std::env::temp_dir().join(format!("ckpt-avg-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let mut paths = Vec::new();
/// for (i, v) in [1.0f32, 2.0, 6.0].into_iter().enumerate() {
///     let mut lin = Linear::<f32>::without_bias(1, 1, &mut rng(0));
///     lin.weight.value.data_mut()[0] = v;
///     let path = dir.join(format!("{i}.ckpt"));
///     Checkpoint::new(&mut lin, None, &(), i as u64, &rng(0)).save(&path).unwrap();
///     paths.push(path);
/// }
/// let avg = average_checkpoints::<(), _>(&paths).unwrap();
/// assert_eq!(avg.tensors[0].data, vec![3.0]);
/// assert_eq!(avg.step, 2);
/// std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub fn average_checkpoints<C, P>(paths: &[P]) -> Result<Checkpoint<C>, CheckpointError>
where
    C: DeserializeOwned,
    P: AsRef<Path>,
{
    let Some(first_path) = paths.first() else {
        return Err(CheckpointError::NoCheckpoints);
    };
    let first_path = first_path.as_ref();
    let mut last = Checkpoint::<C>::load(first_path)?;
    let mut sums: Vec<Vec<f64>> = last
        .tensors
        .iter()
        .map(|t| t.data.iter().map(|&x| x as f64).collect())
        .collect();
    let mut last_path = first_path;
    for path in &paths[1..] {
        let path = path.as_ref();
        let next = Checkpoint::<C>::load(path)?;
        if next.tensors.len() != last.tensors.len() {
            return Err(CheckpointError::Mismatch(format!(
                "`{}` has {} tensors but `{}` has {}",
                path.display(),
                next.tensors.len(),
                last_path.display(),
                last.tensors.len()
            )));
        }
        for (i, (a, b)) in last.tensors.iter().zip(&next.tensors).enumerate() {
            if (&a.name, a.kind, &a.shape) != (&b.name, b.kind, &b.shape) {
                return Err(CheckpointError::Mismatch(format!(
                    "entry {i}: `{}` has {} `{}` {:?} but `{}` has {} `{}` {:?}",
                    path.display(),
                    b.kind,
                    b.name,
                    b.shape,
                    last_path.display(),
                    a.kind,
                    a.name,
                    a.shape
                )));
            }
        }
        for (sum, t) in sums.iter_mut().zip(&next.tensors) {
            for (s, &x) in sum.iter_mut().zip(&t.data) {
                *s += x as f64;
            }
        }
        // Keep the newest tensors' names and metadata; data is overwritten below.
        last = next;
        last_path = path;
    }
    let k = paths.len() as f64;
    for (t, sum) in last.tensors.iter_mut().zip(&sums) {
        for (x, &s) in t.data.iter_mut().zip(sum) {
            *x = (s / k) as f32;
        }
    }
    last.optimizer = None;
    Ok(last)
}
