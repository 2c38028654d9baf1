//! What `Trainer::step` and `Trainer::evaluate` report, recomputed outside
//! the trainer (issue 13): the learning rate against the schedule's
//! formula written out here (and the update Adam actually made with it),
//! the gradient norm against a separate forward and backward on a copy of
//! the model taken before the step, and evaluation against an eval-mode
//! forward whose NLL, accuracy and smoothed loss are computed here in f64;
//! evaluation leaves every parameter and buffer as it was.

use std::collections::HashMap;

use autograd::{Float, Tape, Tensor};
use transformer::schedule::Schedule;
use transformer::synthetic::{COPY_VOCAB, PAD, Seq2SeqBatch, copy_batch};
use transformer::{
    Ctx, Entry, ModelConfig, Module, TrainConfig, Trainer, Transformer, Visitor, named_params,
    named_tensors, rng,
};

/// Every parameter and buffer as bits, by name.
fn bits(m: &mut Transformer<f32>) -> Vec<(String, Vec<u32>)> {
    named_tensors(m)
        .into_iter()
        .map(|(n, t)| (n, t.data().iter().map(|x| x.to_bits()).collect()))
        .collect()
}

/// A model of the same config with `from`'s current parameter and buffer
/// values. Tensors share storage until written, and the optimiser writes
/// through `Arc::make_mut`, so the copy keeps the values of the moment.
fn copy_of(from: &mut Transformer<f32>) -> Transformer<f32> {
    let values: HashMap<String, Tensor<f32>> = named_tensors(from).into_iter().collect();
    let mut to = Transformer::<f32>::new(&from.config, 0).unwrap();
    to.visit(&mut Visitor::new(&mut |name, e| match e {
        Entry::Param(p) => p.value = values[name].clone(),
        Entry::Buffer(b) => *b = values[name].clone(),
    }));
    assert!(bits(&mut to) == bits(from), "copy_of: values differ");
    to
}

/// Loss and global gradient norm (f64 sum of squares over every element of
/// every parameter's gradient, in visiting order) of one forward and
/// backward of `m` on `b`. No dropout in the configs that use it, so the
/// pass needs none of the trainer's generator.
fn loss_and_grad_norm(m: &mut Transformer<f32>, b: &Seq2SeqBatch, smoothing: f64) -> (f32, f64) {
    let tape = Tape::new();
    let ctx = Ctx::train(&tape, 0);
    let logits = m.forward(&ctx, &b.src, &b.tgt_in); // (B, T, V)
    let loss = m.loss(logits, &b.labels, smoothing);
    let grads = tape.backward(loss).into_params();
    let mut sq = 0.0f64;
    for (_, p) in named_params(m) {
        if let Some(g) = grads.get(&p) {
            sq += g.data().iter().map(|&x| f64::from(x).powi(2)).sum::<f64>();
        }
    }
    (loss.value().item(), sq.sqrt())
}

/// The Noam schedule written out: `factor * d^-0.5 * min(n^-0.5, n w^-1.5)`.
fn noam(d_model: usize, warmup: u64, factor: f64, n: u64) -> f64 {
    let (d, w, n) = (d_model as f64, warmup as f64, n as f64);
    factor / d.sqrt() * (1.0 / n.sqrt()).min(n / w.powf(1.5))
}

fn batches(n: usize) -> Vec<Seq2SeqBatch> {
    let mut r = rng(31);
    (0..n)
        .map(|_| copy_batch(&mut r, 6, 2, 7, COPY_VOCAB))
        .collect()
}

/// Five steps of a dropout-free tiny model with clipping at 0.5 (below a
/// fresh model's gradient norm, so it bites) and a Noam schedule warming up
/// over 3 steps (the rate rises, then falls). Each step returns the rate of
/// its 1-based step number and the norm of the gradients *before*
/// clipping, recomputed on a copy of the model taken before the step; the
/// first step moves every parameter with a clear gradient by the returned
/// rate (Adam's first update is `lr * g / (|g| + eps)`, about
/// `lr * sign(g)`), so the returned rate is the one used.
#[test]
fn step_returns_the_scheduled_lr_and_the_unclipped_gradient_norm() {
    let (d_model, warmup, factor) = (32, 3, 0.1);
    let model = ModelConfig {
        dropout: 0.0,
        attention_dropout: 0.0,
        ffn_dropout: 0.0,
        ..ModelConfig::tiny(COPY_VOCAB, COPY_VOCAB)
    };
    assert_eq!(model.d_model, d_model);
    let train = TrainConfig {
        schedule: Schedule::Noam {
            d_model,
            warmup,
            factor,
        },
        clip_norm: Some(0.5),
        ..TrainConfig::paper(d_model)
    };
    let smoothing = train.smoothing;
    let mut t = Trainer::new(model, train, 7).unwrap();
    let mut clipped = 0;
    for (i, b) in batches(5).iter().enumerate() {
        let n = i as u64 + 1;
        let mut before = copy_of(&mut t.model);
        let (loss, norm) = loss_and_grad_norm(&mut before, b, smoothing);
        let s = t.step(&b.src, &b.tgt_in, &b.labels);
        let lr = noam(d_model, warmup, factor, n);
        assert!(
            (s.lr - lr).abs() <= 1e-15 * lr,
            "step {n}: returned lr {} but the schedule gives {lr}",
            s.lr
        );
        assert_eq!(t.step, n);
        assert!(
            (f64::from(s.loss) - f64::from(loss)).abs() <= 1e-6 * f64::from(loss),
            "step {n}: loss {} vs {loss} recomputed",
            s.loss
        );
        assert!(
            (f64::from(s.grad_norm) - norm).abs() <= 1e-6 * norm,
            "step {n}: returned gradient norm {} but the gradients' L2 norm is {norm}",
            s.grad_norm
        );
        clipped += usize::from(norm > 0.5);

        if n == 1 {
            // Adam's first step: every element whose gradient is well
            // above eps (1e-9) moves by lr against its gradient's sign.
            let tape = Tape::new();
            let ctx = Ctx::train(&tape, 0);
            let logits = before.forward(&ctx, &b.src, &b.tgt_in); // (B, T, V)
            let grads = tape
                .backward(before.loss(logits, &b.labels, smoothing))
                .into_params();
            let after: HashMap<String, Tensor<f32>> =
                named_tensors(&mut t.model).into_iter().collect();
            let mut moved = 0;
            for (name, p) in named_params(&mut before) {
                let Some(g) = grads.get(&p) else { continue };
                for ((&g, &x0), &x1) in g.data().iter().zip(p.value.data()).zip(after[&name].data())
                {
                    if g.abs() < 1e-5 {
                        continue;
                    }
                    let step = f64::from(x1) - f64::from(x0);
                    let want = -lr * f64::from(g.signum());
                    // f32 rounding of the parameter (|x| < 8: 1e-6) on top
                    // of Adam's own arithmetic.
                    assert!(
                        (step - want).abs() <= 1e-3 * lr + 1e-6,
                        "{name}: moved by {step:e}, expected {want:e} (lr {lr})"
                    );
                    moved += 1;
                }
            }
            assert!(moved > 1000, "only {moved} elements checked");
        }
    }
    assert!(
        clipped >= 1,
        "clipping never bit: the norm test proves less"
    );
}

/// Mean unsmoothed NLL, correct tokens and mean label-smoothed loss of
/// logits (rows of V) against labels, padding skipped, in f64: the
/// smoothed target is `(1 - eps) onehot + eps / V`.
fn by_hand<T: Float>(logits: &Tensor<T>, labels: &[usize], eps: f64) -> (usize, f64, usize, f64) {
    let v = *logits.shape().last().unwrap();
    let (mut tokens, mut nll, mut correct, mut smooth) = (0, 0.0, 0, 0.0);
    for (row, &y) in logits.data().chunks(v).zip(labels) {
        if y == PAD {
            continue;
        }
        let row: Vec<f64> = row.iter().map(|x| x.to_f64()).collect();
        let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
        let nll_y = lse - row[y];
        let mean_nll = row.iter().map(|x| lse - x).sum::<f64>() / v as f64;
        tokens += 1;
        nll += nll_y;
        smooth += (1.0 - eps) * nll_y + eps * mean_nll;
        // The first maximum, as greedy decoding picks.
        let best = row.iter().position(|&x| x == max).unwrap();
        correct += usize::from(best == y);
    }
    (tokens, nll / tokens as f64, correct, smooth / tokens as f64)
}

/// `Trainer::evaluate` on a model with dropout and BatchNorm (whose
/// running statistics a train-mode pass would update), after two steps:
/// its token count, NLL, accuracy and smoothed loss equal those computed
/// here from an eval-mode forward of the same model, and it changes no
/// parameter, no buffer, and not the trainer's generator or step (twice
/// gives the same stats).
#[test]
fn evaluate_is_an_eval_mode_forward_and_changes_nothing() {
    let model = ModelConfig {
        dropout: 0.3,
        attention_dropout: 0.3,
        ffn_dropout: 0.3,
        norm: "batch".into(),
        ..ModelConfig::tiny(COPY_VOCAB, COPY_VOCAB)
    };
    let mut t = Trainer::new(model, TrainConfig::paper(32), 3).unwrap();
    let data = batches(3);
    for b in &data[..2] {
        t.step(&b.src, &b.tgt_in, &b.labels);
    }
    let b = &data[2];
    let (before, rng_before, step_before) = (bits(&mut t.model), t.rng.clone(), t.step);
    let stats = t.evaluate(&b.src, &b.tgt_in, &b.labels);
    assert!(
        bits(&mut t.model) == before,
        "evaluate changed a parameter or buffer"
    );
    assert_eq!(
        t.rng, rng_before,
        "evaluate drew from the trainer's generator"
    );
    assert_eq!(t.step, step_before);
    assert_eq!(t.evaluate(&b.src, &b.tgt_in, &b.labels), stats);

    let tape = Tape::no_grad();
    let ctx = Ctx::eval(&tape);
    let logits = t.model.forward(&ctx, &b.src, &b.tgt_in).value(); // (B, T, V)
    let (tokens, nll, correct, smooth) = by_hand(&logits, &b.labels, t.config.smoothing);
    assert_eq!(stats.tokens, tokens);
    assert_eq!(stats.correct, correct);
    assert!(
        (stats.nll() - nll).abs() <= 1e-9 * nll,
        "NLL {} vs {nll} by hand",
        stats.nll()
    );
    // The smoothed loss comes from the f32 cross-entropy op.
    assert!(
        (stats.smoothed_loss() - smooth).abs() <= 1e-5 * smooth,
        "smoothed loss {} vs {smooth} by hand",
        stats.smoothed_loss()
    );
    // Dropout at 0.3 moves a train-mode forward far from this one.
    let tape = Tape::no_grad();
    let ctx = Ctx::train(&tape, 1);
    let train_logits = copy_of(&mut t.model)
        .forward(&ctx, &b.src, &b.tgt_in)
        .value();
    let (_, train_nll, _, _) = by_hand(&train_logits, &b.labels, 0.0);
    assert!(
        (train_nll - nll).abs() > 1e-3,
        "a train-mode forward gives the same NLL ({train_nll}): the test could not tell"
    );
}
