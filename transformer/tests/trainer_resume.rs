//! Checkpoints of the real model: training N steps, saving, resuming and
//! training N more equals 2N uninterrupted steps, bit for bit.

use transformer::checkpoint::CheckpointError;
use transformer::synthetic::{COPY_VOCAB, copy_batch};
use transformer::{ModelConfig, TrainConfig, Trainer, named_tensors, rng};

fn batches(n: usize) -> Vec<transformer::synthetic::Seq2SeqBatch> {
    let mut r = rng(5);
    (0..n)
        .map(|_| copy_batch(&mut r, 4, 2, 6, COPY_VOCAB))
        .collect()
}

fn fresh() -> Trainer {
    let model = ModelConfig {
        dropout: 0.1, // dropout makes the RNG state part of what must be restored
        ..ModelConfig::tiny(COPY_VOCAB, COPY_VOCAB)
    };
    let train = TrainConfig {
        schedule: transformer::schedule::Schedule::Constant { lr: 1e-3 },
        ..TrainConfig::paper(32)
    };
    Trainer::new(model, train, 3).unwrap()
}

fn snapshot(t: &mut Trainer) -> Vec<(String, Vec<u32>)> {
    named_tensors(&mut t.model)
        .into_iter()
        .map(|(n, v)| (n, v.data().iter().map(|x| x.to_bits()).collect()))
        .collect()
}

#[test]
fn save_resume_equals_uninterrupted_run() {
    let data = batches(6);
    let dir = std::env::temp_dir().join(format!("tfmr-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("step3.ckpt");

    let mut straight = fresh();
    let mut straight_losses = Vec::new();
    for b in &data {
        straight_losses.push(straight.step(&b.src, &b.tgt_in, &b.labels).loss.to_bits());
    }

    let mut first = fresh();
    let mut losses = Vec::new();
    for b in &data[..3] {
        losses.push(first.step(&b.src, &b.tgt_in, &b.labels).loss.to_bits());
    }
    first.save(&path).unwrap();
    drop(first);
    let mut resumed = Trainer::resume(&path).unwrap();
    assert_eq!(resumed.step, 3);
    for b in &data[3..] {
        losses.push(resumed.step(&b.src, &b.tgt_in, &b.labels).loss.to_bits());
    }
    assert_eq!(losses, straight_losses);
    assert_eq!(snapshot(&mut resumed), snapshot(&mut straight));
    assert_eq!(resumed.opt, straight.opt);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resume_from_a_missing_file_is_an_error() {
    let err = Trainer::resume("/nonexistent/dir/x.ckpt")
        .err()
        .expect("must fail");
    assert!(matches!(err.root(), CheckpointError::Io { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/dir/x.ckpt"), "{err}");
}
