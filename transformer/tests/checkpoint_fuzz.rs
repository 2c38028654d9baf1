//! Issue 10, "keep it from coming back": the checkpoint loader (and the
//! trainer built from what it loads) on arbitrary bytes and on mutated valid
//! files, with the checksum recomputed so that the decoder and everything
//! after it are exercised, not only the checksum test. Nothing may panic or
//! abort: every outcome is `Ok` or a `CheckpointError`.
//!
//! `PROPTEST_CASES=N cargo test -p transformer --test checkpoint_fuzz`
//! runs N cases per property instead of the default below.

use std::path::PathBuf;
use std::sync::OnceLock;

use proptest::prelude::*;
use transformer::checkpoint::{HEADER_LEN, fnv1a64};
use transformer::schedule::Schedule;
use transformer::{ModelConfig, TokenBatch, TrainConfig, Trainer};

/// A valid file: a tiny trainer with optimiser state after one step.
fn valid() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let train = TrainConfig {
            schedule: Schedule::Constant { lr: 1e-3 },
            clip_norm: Some(1.0),
            ..TrainConfig::paper(4)
        };
        let mut t = Trainer::new(ModelConfig::for_gradcheck(7, 7), train, 0).unwrap();
        let (src, tgt) = batch();
        t.step(&src, &tgt, &[3, 4, 2, 5, 2, 0]);
        let path = scratch("valid");
        t.save(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        bytes
    })
}

fn batch() -> (TokenBatch, TokenBatch) {
    (
        TokenBatch::padded(&[vec![3, 4], vec![5]], 0),
        TokenBatch::padded(&[vec![1, 3, 4], vec![1, 5]], 0),
    )
}

fn scratch(tag: &str) -> PathBuf {
    let n = std::thread::current().id();
    std::env::temp_dir().join(format!("tfmr-fuzz-{}-{tag}-{n:?}.ckpt", std::process::id()))
}

/// Header fields rewritten to agree with the payload: length and checksum.
fn reseal(mut bytes: Vec<u8>) -> Vec<u8> {
    if bytes.len() >= HEADER_LEN {
        let len = (bytes.len() - HEADER_LEN) as u64;
        let sum = fnv1a64(&bytes[HEADER_LEN..]);
        bytes[12..20].copy_from_slice(&len.to_le_bytes());
        bytes[20..28].copy_from_slice(&sum.to_le_bytes());
    }
    bytes
}

/// Loads `bytes` as a trainer; when that works, evaluates and steps once.
/// Returns whether the load worked. Any panic fails the property.
fn load(bytes: &[u8]) -> bool {
    let path = scratch("case");
    std::fs::write(&path, bytes).unwrap();
    let out = Trainer::resume(&path);
    std::fs::remove_file(&path).unwrap();
    match out {
        Ok(mut t) => {
            let (src, tgt) = batch();
            let labels = [3, 4, 2, 5, 2, 0];
            let _ = t.evaluate(&src, &tgt, &labels);
            let _ = t.step(&src, &tgt, &labels);
            true
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            false
        }
    }
}

/// Cases per property unless PROPTEST_CASES says otherwise.
fn cases() -> ProptestConfig {
    ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1000),
    )
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn arbitrary_bytes_are_errors(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        prop_assert!(!load(&bytes));
        // The same bytes behind a valid header reach the decoder.
        let mut sealed = valid()[..HEADER_LEN].to_vec();
        sealed.extend_from_slice(&bytes);
        prop_assert!(!load(&reseal(sealed)));
    }

    #[test]
    fn mutated_valid_files_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
        resealed in any::<bool>(),
    ) {
        let mut bytes = valid().to_vec();
        let payload = bytes.len() - HEADER_LEN;
        for (at, value) in &edits {
            bytes[HEADER_LEN + at.index(payload)] = *value;
        }
        if truncate {
            bytes.truncate(HEADER_LEN + cut.index(payload));
        }
        if resealed {
            bytes = reseal(bytes);
        }
        load(&bytes);
    }
}

#[test]
fn the_untouched_file_loads() {
    assert!(load(valid()));
    assert!(load(&reseal(valid().to_vec())));
}
