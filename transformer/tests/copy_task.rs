//! A tiny model learns the copy task from each of three training seeds (one
//! lucky seed would prove little: issue 13). Each seed's loss must fall and
//! its exact-match rate on 200 held-out strings must reach its floor; the
//! rates are printed (`--nocapture` shows them).

use std::time::Instant;

use transformer::schedule::Schedule;
use transformer::synthetic::{COPY_VOCAB, copy_batch, copy_trial_config, exact_match};
use transformer::{Trainer, rng};

/// Training steps: `copy_trial_config`'s model (width 32, 2 heads, 1 + 1
/// layers) and recipe, its cosine decay stretched from 500 to 800 steps
/// (warmup 30 -> 48). The demo's larger model (`copy_task_configs`, 2 + 2
/// layers of width 64) reaches the same rates but costs about four times
/// as much per seed; three of it would add half a minute to the test
/// command.
const STEPS: u64 = 800;

/// Training seeds (model initialisation and dropout) and the exact-match
/// floor of each. Measured on 200 held-out strings (the same for every
/// seed, as are the training batches): 100% for each of seeds 42-47 (and
/// 92-98.5% at 500 steps on strings of 2-8 symbols), so a floor of 97%
/// leaves 6 strings of margin for a change that only moves a run's
/// rounding, and fails a model that learns markedly worse.
const SEEDS: [(u64, f64); 3] = [(42, 0.97), (43, 0.97), (44, 0.97)];

/// What one seed's run measured.
struct Run {
    first_loss: f32,
    last_loss: f32,
    exact_match: f64,
    seconds: f64,
}

/// Trains one seed on batches of 32 strings of 3-10 symbols (the same
/// batches for every seed), then greedy-decodes 200 held-out strings.
fn train(seed: u64) -> Run {
    let start = Instant::now();
    let (model, mut train) = copy_trial_config();
    train.schedule = Schedule::Cosine {
        peak_lr: 5e-3,
        warmup: 48,
        total_steps: STEPS,
        final_lr: 1e-4,
    };
    let mut trainer = Trainer::new(model, train, seed).unwrap();
    let mut data = rng(1);
    let mut first = None;
    let mut last = 0.0;
    for _ in 0..STEPS {
        let b = copy_batch(&mut data, 32, 3, 10, COPY_VOCAB);
        last = trainer.step(&b.src, &b.tgt_in, &b.labels).loss;
        first.get_or_insert(last);
    }
    let test = copy_batch(&mut rng(999), 200, 3, 10, COPY_VOCAB);
    let (_, exact_match) = exact_match(&trainer.model, &test);
    Run {
        first_loss: first.unwrap(),
        last_loss: last,
        exact_match,
        seconds: start.elapsed().as_secs_f64(),
    }
}

#[test]
fn tiny_model_learns_copy_task_from_three_seeds() {
    // One thread per seed: the runs are independent and too small for the
    // kernels' parallel branches, so on 2 cores three threads take about
    // half as long as three runs in a row.
    let runs: Vec<Run> = std::thread::scope(|s| {
        let handles: Vec<_> = SEEDS
            .iter()
            .map(|&(seed, _)| s.spawn(move || train(seed)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (&(seed, floor), r) in SEEDS.iter().zip(&runs) {
        println!(
            "copy task, seed {seed}: loss {:.3} -> {:.3}, exact match {:.1}% (floor {:.0}%), {:.1} s",
            r.first_loss,
            r.last_loss,
            100.0 * r.exact_match,
            100.0 * floor,
            r.seconds
        );
    }
    for (&(seed, floor), r) in SEEDS.iter().zip(&runs) {
        assert!(
            r.last_loss < r.first_loss / 3.0,
            "seed {seed}: loss did not fall: {} -> {}",
            r.first_loss,
            r.last_loss
        );
        assert!(
            r.exact_match >= floor,
            "seed {seed}: exact match {} < {floor} on held-out strings",
            r.exact_match
        );
    }
}
