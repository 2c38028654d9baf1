//! Data-parallel training without MPI (issue 12): ranks as threads of one
//! process ([`Threads`]), each with its own replica of the model, must end
//! bit for bit where gradient accumulation in one process ends; the
//! micro-batch weights must make the accumulated step the full batch's
//! step; a rank that never answers is an error naming it, within the
//! deadline. The same tests over real MPI processes are in `tests/mpi.rs`
//! (with the `mpi` feature).

use std::time::{Duration, Instant};

use experiments::dist::{Collective, Threads, agree, allreduce_tree, step};
use transformer::schedule::Schedule;
use transformer::train::accumulate::{GradLayout, Micro, micro_weights, tree_sum};
use transformer::{ModelConfig, TokenBatch, TrainConfig, Trainer, named_params};

/// Four micro-batches of different sizes and lengths (source, decoder
/// input, labels), with pads.
fn micro_batches() -> Vec<(TokenBatch, TokenBatch, Vec<usize>)> {
    let rows: [&[&[usize]]; 4] = [
        &[&[3, 4, 5], &[6, 7]],
        &[&[5, 5, 6, 7, 8]],
        &[&[9, 3], &[4, 4, 4], &[7]],
        &[&[8, 6, 4, 3]],
    ];
    rows.iter()
        .map(|group| {
            let src: Vec<Vec<usize>> = group.iter().map(|r| r.to_vec()).collect();
            let tgt_in: Vec<Vec<usize>> = group
                .iter()
                .map(|r| std::iter::once(1).chain(r.iter().copied()).collect())
                .collect();
            let t = tgt_in.iter().map(Vec::len).max().unwrap();
            let labels: Vec<usize> = group
                .iter()
                .flat_map(|r| {
                    let mut l: Vec<usize> = r.to_vec();
                    l.push(2);
                    l.resize(t, 0);
                    l
                })
                .collect();
            (
                TokenBatch::padded(&src, 0),
                TokenBatch::padded(&tgt_in, 0),
                labels,
            )
        })
        .collect()
}

fn micros(parts: &[(TokenBatch, TokenBatch, Vec<usize>)]) -> Vec<Micro<'_>> {
    let counts: Vec<usize> = parts
        .iter()
        .map(|(_, _, l)| l.iter().filter(|&&x| x != 0).count())
        .collect();
    let w = micro_weights(&counts);
    parts
        .iter()
        .zip(w)
        .map(|((s, t, l), weight)| Micro {
            src: s,
            tgt_in: t,
            labels: l,
            weight,
        })
        .collect()
}

fn trainer(dropout: f64) -> Trainer {
    let model = ModelConfig {
        dropout,
        ..ModelConfig::tiny(12, 12)
    };
    let train = TrainConfig {
        schedule: Schedule::Constant { lr: 3e-3 },
        clip_norm: Some(1.0),
        ..TrainConfig::paper(32)
    };
    Trainer::new(model, train, 5).unwrap()
}

/// Every parameter's bits, by name.
fn bits(t: &mut Trainer) -> Vec<(String, Vec<u32>)> {
    named_params(&mut t.model)
        .into_iter()
        .map(|(n, p)| (n, p.value.data().iter().map(|x| x.to_bits()).collect()))
        .collect()
}

const STEPS: usize = 3;

/// Steps on `k` thread-ranks; returns rank 0's trainer after checking that
/// every rank holds the same parameters and optimiser state.
fn on_ranks(k: usize) -> (Trainer, Vec<Vec<u32>>) {
    let parts = micro_batches();
    let ranks = Threads::group(k, Duration::from_secs(20));
    let mut out: Vec<(Trainer, Vec<Vec<u32>>)> = std::thread::scope(|s| {
        let handles: Vec<_> = ranks
            .iter()
            .map(|c| {
                let parts = &parts;
                s.spawn(move || {
                    let mut t = trainer(0.1);
                    let mut losses = Vec::new();
                    for _ in 0..STEPS {
                        let st = step(c, &mut t, &micros(parts)).unwrap();
                        losses.push(vec![st.loss.to_bits(), st.grad_norm.to_bits()]);
                    }
                    (t, losses)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let (mut first, stats) = out.remove(0);
    for (mut other, other_stats) in out {
        assert_eq!(bits(&mut other), bits(&mut first), "replicas differ");
        assert_eq!(other.opt.state(), first.opt.state());
        assert_eq!(other_stats, stats);
    }
    (first, stats)
}

#[test]
fn two_and_four_thread_ranks_equal_one_process_bit_for_bit() {
    // One process: gradient accumulation over the 4 micro-batches.
    let parts = micro_batches();
    let mut alone = trainer(0.1);
    let mut stats = Vec::new();
    for _ in 0..STEPS {
        let st = alone.step_micro(&micros(&parts));
        stats.push(vec![st.loss.to_bits(), st.grad_norm.to_bits()]);
    }
    for k in [1, 2, 4] {
        let (mut t, s) = on_ranks(k);
        assert_eq!(bits(&mut t), bits(&mut alone), "{k} ranks: parameters");
        assert_eq!(t.opt.state(), alone.opt.state(), "{k} ranks: Adam state");
        assert_eq!(t.step, alone.step);
        assert_eq!(s, stats, "{k} ranks: loss and gradient norm");
    }
    // And the step moved the weights (the comparison is not vacuous).
    assert_ne!(bits(&mut alone), bits(&mut trainer(0.1)));
}

#[test]
fn accumulated_micro_batches_give_the_full_batch_gradient() {
    // Without dropout, the weighted micro-batch gradients sum to the
    // gradient of the whole batch's mean loss (not bit for bit: the sums
    // differ in order).
    let parts = micro_batches();
    let mut t = trainer(0.0);
    let layout = GradLayout::of(&mut t.model);
    let ms = micros(&parts);
    let acc = tree_sum(0, ms.len(), &mut |i| t.micro_grads(&layout, &ms[i], 0, i));
    // The same rows as one padded batch.
    let mut src_rows = Vec::new();
    let mut tgt_rows = Vec::new();
    for (s, tg, _) in &parts {
        for b in 0..s.batch {
            let row = |x: &TokenBatch| {
                let w = x.len;
                x.ids[b * w..(b + 1) * w]
                    .iter()
                    .copied()
                    .filter(|&i| i != 0)
                    .collect::<Vec<_>>()
            };
            src_rows.push(row(s));
            tgt_rows.push(row(tg));
        }
    }
    let src = TokenBatch::padded(&src_rows, 0);
    let tgt_in = TokenBatch::padded(&tgt_rows, 0);
    let labels: Vec<usize> = tgt_rows
        .iter()
        .flat_map(|r| {
            let mut l: Vec<usize> = r[1..].to_vec();
            l.push(2);
            l.resize(tgt_in.len, 0);
            l
        })
        .collect();
    let whole = Micro {
        src: &src,
        tgt_in: &tgt_in,
        labels: &labels,
        weight: 1.0,
    };
    let full = t.micro_grads(&layout, &whole, 0, 0);
    assert_eq!(acc.len(), full.len());
    let scale = full.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    assert!(scale > 1e-3, "a vanishing gradient would prove nothing");
    let g = layout.grad_len();
    for (i, (a, f)) in acc[..g].iter().zip(&full[..g]).enumerate() {
        assert!(
            (a - f).abs() <= 1e-5 * scale,
            "element {i}: accumulated {a}, full batch {f}"
        );
    }
    // The last element is the loss: the weighted losses sum to the mean.
    let n = full.len() - 1;
    assert!(
        (acc[n] - full[n]).abs() < 1e-5 * full[n],
        "{} vs {}",
        acc[n],
        full[n]
    );
}

#[test]
fn the_tree_adds_in_the_same_order_on_any_rank_count() {
    // Values whose sum depends on the order of addition in f32.
    let leaves: Vec<f32> = vec![1e8, 1.0, -1e8, 1.0, 3.0, 1e-3, -7.5, 1e7];
    let alone = tree_sum(0, 8, &mut |i| vec![leaves[i]]);
    let sequential = leaves.iter().fold(0.0f32, |a, b| a + b);
    assert_ne!(
        alone,
        vec![sequential],
        "the test values must be order-sensitive"
    );
    for k in [1usize, 2, 4, 8] {
        let ranks = Threads::group(k, Duration::from_secs(10));
        let got: Vec<Vec<f32>> = std::thread::scope(|s| {
            let hs: Vec<_> = ranks
                .iter()
                .map(|c| {
                    let leaves = &leaves;
                    s.spawn(move || {
                        let b = 8 / k;
                        let r = c.rank();
                        let mut v = tree_sum(r * b, (r + 1) * b, &mut |i| vec![leaves[i]]);
                        allreduce_tree(c, &mut v).unwrap();
                        v
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for v in got {
            assert_eq!(v, alone, "{k} ranks");
        }
    }
}

#[test]
fn a_rank_that_never_answers_is_an_error_naming_it_within_the_deadline() {
    let ranks = Threads::group(2, Duration::from_millis(300));
    let t = Instant::now();
    let err = std::thread::scope(|s| {
        let waiting = s.spawn(|| {
            let mut v = vec![1.0f32; 4];
            allreduce_tree(&ranks[0], &mut v)
        });
        // Rank 1 is hung: it never sends its part.
        waiting.join().unwrap()
    })
    .unwrap_err();
    assert!(err.contains("rank 0") && err.contains("rank 1"), "{err}");
    assert!(err.contains("hung or died"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn mismatched_configs_and_rank_counts_are_clear_errors() {
    // Fingerprints differ: every rank gets the same error.
    let ranks = Threads::group(2, Duration::from_secs(10));
    let errs: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = ranks
            .iter()
            .map(|c| s.spawn(move || agree(c, Ok(c.rank() as u64 + 7)).unwrap_err()))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(errs[0], errs[1]);
    assert!(errs[0].contains("different configs"), "{}", errs[0]);
    // A rank that failed to start: its reason reaches everyone.
    let errs: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = ranks
            .iter()
            .map(|c| {
                s.spawn(move || {
                    let mine = if c.rank() == 1 {
                        Err("runs/x already holds a run".to_string())
                    } else {
                        Ok(3)
                    };
                    agree(c, mine).unwrap_err()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        errs.iter().all(|e| e.contains("rank 1: runs/x already")),
        "{errs:?}"
    );
    // Three ranks cannot share four micro-batches in the fixed tree.
    let parts = micro_batches();
    let three = Threads::group(3, Duration::from_secs(1));
    let err = step(&three[0], &mut trainer(0.0), &micros(&parts)).unwrap_err();
    assert!(err.contains("3 processes cannot share"), "{err}");
}
