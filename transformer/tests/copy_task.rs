//! A tiny model learns the copy task: exact match >= 99% on held-out strings.

use transformer::synthetic::{COPY_STEPS, COPY_VOCAB, copy_batch, copy_task_configs, exact_match};
use transformer::{Trainer, rng};

#[test]
fn tiny_model_learns_copy_task() {
    let (model, train) = copy_task_configs();
    let mut trainer = Trainer::new(model, train, 42).unwrap();
    let mut data = rng(1);
    let mut first = None;
    let mut last = 0.0;
    for _ in 0..COPY_STEPS {
        let b = copy_batch(&mut data, 32, 3, 10, COPY_VOCAB);
        last = trainer.step(&b.src, &b.tgt_in, &b.labels).loss;
        first.get_or_insert(last);
    }
    assert!(
        last < first.unwrap() / 3.0,
        "loss did not fall: {first:?} -> {last}"
    );
    let test = copy_batch(&mut rng(999), 200, 3, 10, COPY_VOCAB);
    let (_, rate) = exact_match(&trainer.model, &test);
    assert!(
        rate >= 0.99,
        "exact match {rate} < 0.99 on held-out strings"
    );
}
