//! End-to-end demo: a small Transformer learns to copy random strings.
//! Trains for a fixed number of steps, printing the loss as it falls, then
//! greedy-decodes held-out strings and reports the exact-match rate.
//!
//! `cargo run --release --example copy_task` (about 15 s on 2 cores).

use std::time::Instant;

use transformer::synthetic::{COPY_STEPS, COPY_VOCAB, copy_batch, copy_task_configs, exact_match};
use transformer::{Trainer, rng};

fn main() -> Result<(), String> {
    // Training binaries opt in to keeping freed memory (faster steps).
    autograd::retain_freed_memory();
    let (model, train) = copy_task_configs();
    let mut trainer = Trainer::new(model, train, 42)?;
    let mut data = rng(1);
    let start = Instant::now();
    for step in 1..=COPY_STEPS {
        let b = copy_batch(&mut data, 32, 3, 10, COPY_VOCAB);
        let s = trainer.step(&b.src, &b.tgt_in, &b.labels);
        if step % 50 == 0 || step == 1 {
            println!(
                "step {step:4}  loss {:.4}  lr {:.2e}  ({:.1} s)",
                s.loss,
                s.lr,
                start.elapsed().as_secs_f64()
            );
        }
    }
    // Held-out strings, from a generator training never drew from.
    let test = copy_batch(&mut rng(999), 200, 3, 10, COPY_VOCAB);
    let (out, rate) = exact_match(&trainer.model, &test);
    for (h, t) in out.iter().zip(&test.targets).take(3) {
        println!("source {t:?}\n  -> {h:?}");
    }
    println!(
        "exact match on {} held-out strings: {:.1}% ({:.1} s in all)",
        test.targets.len(),
        100.0 * rate,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
