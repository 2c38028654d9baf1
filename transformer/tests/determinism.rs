//! Whole-trainer determinism (issue 10, "keep it from coming back"): the
//! real `Trainer`, with dropout and clipping, gives bit-identical runs on 1,
//! 2 and 3 threads, and a run saved, resumed in a *new process* and
//! continued equals the uninterrupted one. Configs from outside reject
//! unknown keys.

use std::path::{Path, PathBuf};
use std::process::Command;

use transformer::synthetic::{COPY_VOCAB, Seq2SeqBatch, copy_batch};
use transformer::{ModelConfig, TrainConfig, Trainer, named_tensors, rng};

fn fresh() -> Trainer {
    let model = ModelConfig {
        dropout: 0.1,
        attention_dropout: 0.1,
        ..ModelConfig::tiny(COPY_VOCAB, COPY_VOCAB)
    };
    let train = TrainConfig {
        clip_norm: Some(0.5),
        ..TrainConfig::paper(32)
    };
    Trainer::new(model, train, 11).unwrap()
}

fn batches() -> Vec<Seq2SeqBatch> {
    let mut r = rng(12);
    (0..6)
        .map(|_| copy_batch(&mut r, 8, 2, 9, COPY_VOCAB))
        .collect()
}

/// Every tensor's bits, the step, and the losses of the steps run.
type Fingerprint = (Vec<(String, Vec<u32>)>, u64, Vec<u32>);

fn fingerprint(t: &mut Trainer, losses: Vec<u32>) -> Fingerprint {
    let tensors = named_tensors(&mut t.model)
        .into_iter()
        .map(|(n, v)| (n, v.data().iter().map(|x| x.to_bits()).collect()))
        .collect();
    (tensors, t.step, losses)
}

fn run(t: &mut Trainer, batches: &[Seq2SeqBatch]) -> Vec<u32> {
    batches
        .iter()
        .map(|b| t.step(&b.src, &b.tgt_in, &b.labels).loss.to_bits())
        .collect()
}

#[test]
fn the_trainer_is_bit_identical_on_1_2_and_3_threads() {
    let data = batches();
    let prints: Vec<Fingerprint> = [1, 2, 3]
        .into_iter()
        .map(|threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| {
                    let mut t = fresh();
                    let losses = run(&mut t, &data);
                    fingerprint(&mut t, losses)
                })
        })
        .collect();
    assert!(prints[0] == prints[1], "1 vs 2 threads differ");
    assert!(prints[0] == prints[2], "1 vs 3 threads differ");
}

const IN_VAR: &str = "TFMR_RESUME_IN";
const OUT_VAR: &str = "TFMR_RESUME_OUT";

/// The child: resumes the checkpoint it is given, runs the second half of
/// the batches, saves.
#[test]
#[ignore = "run by a_run_resumed_in_a_new_process_equals_the_uninterrupted_one as a child"]
fn child_resumes_and_continues() {
    let (Ok(input), Ok(output)) = (std::env::var(IN_VAR), std::env::var(OUT_VAR)) else {
        return;
    };
    let mut t = Trainer::resume(&input).unwrap();
    let losses = run(&mut t, &batches()[3..]);
    t.save(&output).unwrap();
    let text: Vec<String> = losses.iter().map(u32::to_string).collect();
    std::fs::write(Path::new(&output).with_extension("losses"), text.join(" ")).unwrap();
}

#[test]
fn a_run_resumed_in_a_new_process_equals_the_uninterrupted_one() {
    let dir: PathBuf = std::env::temp_dir().join(format!("tfmr-det-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (half, end) = (dir.join("half.ckpt"), dir.join("end.ckpt"));
    let data = batches();
    let mut straight = fresh();
    let mut losses = run(&mut straight, &data[..3]);
    straight.save(&half).unwrap();
    losses.extend(run(&mut straight, &data[3..]));

    let status = Command::new(std::env::current_exe().unwrap())
        .args(["child_resumes_and_continues", "--exact", "--ignored"])
        .env(IN_VAR, &half)
        .env(OUT_VAR, &end)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "the child failed");
    let mut resumed = Trainer::resume(&end).unwrap();
    let child_losses: Vec<u32> = std::fs::read_to_string(end.with_extension("losses"))
        .unwrap()
        .split(' ')
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(child_losses, losses[3..]);
    assert!(fingerprint(&mut resumed, vec![]) == fingerprint(&mut straight, vec![]));
    assert_eq!(resumed.opt, straight.opt);
    assert_eq!(resumed.rng, straight.rng);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn configs_from_outside_reject_unknown_keys() {
    let mut model = serde_json::to_value(ModelConfig::tiny(8, 8)).unwrap();
    model["nrom"] = "batch".into();
    let err = serde_json::from_value::<ModelConfig>(model)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `nrom`"), "{err}");

    let mut train = serde_json::to_value(TrainConfig::paper(32)).unwrap();
    train["smothing"] = 0.1.into();
    let err = serde_json::from_value::<TrainConfig>(train)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `smothing`"), "{err}");

    let mut train = serde_json::to_value(TrainConfig::paper(32)).unwrap();
    train["optimizer"]["beta3"] = 0.5.into();
    let err = serde_json::from_value::<TrainConfig>(train)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `beta3`"), "{err}");

    let mut train = serde_json::to_value(TrainConfig::paper(32)).unwrap();
    let variant = train["schedule"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    train["schedule"][variant.as_str()]["warmpu"] = 10.into();
    let err = serde_json::from_value::<TrainConfig>(train)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `warmpu`"), "{err}");
}
