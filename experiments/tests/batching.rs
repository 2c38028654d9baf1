//! Batching: masks and padding, the token budget, every example exactly
//! once per epoch, seeding, length fitting, and a resumable stream; on
//! random lengths (proptest) and on the bundled English-German pairs.

use std::collections::HashMap;

use experiments::batching::{
    Batch, BatchStream, Example, LengthReport, LongPolicy, SpecialIds, StreamPosition,
    epoch_batches, eval_batches, fit_lengths, make_batch, over_budget,
};
use experiments::data::{data_dir, read_pairs};
use proptest::prelude::*;

const IDS: SpecialIds = SpecialIds {
    pad: 0,
    bos: 1,
    eos: 2,
};

/// Token ids never equal to a special id, so padding shows in the ids.
fn example(src: usize, tgt: usize) -> Example {
    Example {
        src: (0..src).map(|i| 10 + i).collect(),
        tgt: (0..tgt).map(|i| 100 + i).collect(),
    }
}

/// Every row of `b` against its example, position by position.
fn check_batch(examples: &[Example], b: &Batch) {
    let rows = b.indices.len();
    let (s, t) = (b.src.len, b.tgt_in.len);
    assert_eq!((b.src.batch, b.tgt_in.batch), (rows, rows));
    assert_eq!(b.labels.len(), rows * t);
    let (src_mask, tgt_mask) = (b.src_mask(), b.tgt_mask());
    assert_eq!((src_mask.len(), tgt_mask.len()), (rows * s, rows * t));
    let decoder_only = b.indices.iter().all(|&i| examples[i].src.is_empty());
    assert_eq!(
        decoder_only,
        s == 0,
        "(B, 0) exactly when every src is empty"
    );
    for (r, &i) in b.indices.iter().enumerate() {
        let e = &examples[i];
        if !decoder_only {
            let want: Vec<usize> = e.src.iter().copied().chain([IDS.eos]).collect();
            let row = b.src.row(r);
            assert_eq!(&row[..want.len()], &want[..], "src = src + EOS");
            assert!(row[want.len()..].iter().all(|&x| x == IDS.pad), "then pad");
            let m = &src_mask[r * s..(r + 1) * s];
            assert!(m.iter().enumerate().all(|(k, &on)| on == (k < want.len())));
        }
        let row = b.tgt_in.row(r);
        assert_eq!(row[0], IDS.bos, "tgt_in = BOS + tgt");
        assert_eq!(&row[1..=e.tgt.len()], &e.tgt[..]);
        assert!(row[e.tgt.len() + 1..].iter().all(|&x| x == IDS.pad));
        let labels = &b.labels[r * t..(r + 1) * t];
        assert_eq!(&labels[..e.tgt.len()], &e.tgt[..], "labels = tgt + EOS");
        assert_eq!(labels[e.tgt.len()], IDS.eos);
        assert!(labels[e.tgt.len() + 1..].iter().all(|&x| x == IDS.pad));
        let m = &tgt_mask[r * t..(r + 1) * t];
        assert!(
            m.iter()
                .enumerate()
                .all(|(k, &on)| on == (k <= e.tgt.len()))
        );
    }
    // With ids that never collide with pad, the masks are "not pad".
    let not_pad = |ids: &[usize]| ids.iter().map(|&x| x != IDS.pad).collect::<Vec<_>>();
    assert_eq!(src_mask, not_pad(&b.src.ids));
    assert_eq!(tgt_mask, not_pad(&b.tgt_in.ids));
    assert_eq!(tgt_mask, not_pad(&b.labels));
    assert_eq!(b.src_tokens, src_mask.iter().filter(|&&m| m).count());
    assert_eq!(b.tgt_tokens, tgt_mask.iter().filter(|&&m| m).count());
    assert_eq!(b.padded_tokens(), rows * s.max(t));
}

/// Every index in 0..n exactly once, and every batch within the budget
/// unless it holds a single example.
fn check_epoch(examples: &[Example], batches: &[Vec<usize>], budget: usize) {
    let mut seen = vec![0; examples.len()];
    for b in batches {
        assert!(!b.is_empty(), "no empty batch");
        for &i in b {
            seen[i] += 1;
        }
        let batch = make_batch(examples, b, IDS);
        assert!(
            batch.padded_tokens() <= budget || b.len() == 1,
            "{} padded tokens in a batch of {} over a budget of {budget}",
            batch.padded_tokens(),
            b.len()
        );
        if b.len() == 1 && batch.padded_tokens() > budget {
            assert!(examples[b[0]].width() > budget, "alone only when too wide");
        }
    }
    assert!(seen.iter().all(|&c| c == 1), "each example once: {seen:?}");
}

#[test]
fn batch_pads_and_masks() {
    let examples = vec![example(3, 1), example(1, 4), example(0, 0), example(5, 2)];
    let b = make_batch(&examples, &[1, 0, 2, 3], IDS);
    assert_eq!(b.src.shape(), [4, 6]); // the longest src (5) + EOS
    assert_eq!(b.tgt_in.shape(), [4, 5]); // BOS + the longest tgt (4)
    assert_eq!(b.indices, vec![1, 0, 2, 3]);
    // An empty src next to others is [EOS]; an empty tgt is BOS / EOS.
    assert_eq!(b.src.row(2), &[2, 0, 0, 0, 0, 0]);
    assert_eq!(b.tgt_in.row(2), &[1, 0, 0, 0, 0]);
    assert_eq!(&b.labels[10..15], &[2, 0, 0, 0, 0]);
    assert_eq!(b.labels[..5], [100, 101, 102, 103, 2]);
    assert_eq!(b.src_lens, vec![2, 4, 1, 6]);
    assert_eq!(b.tgt_lens, vec![5, 2, 1, 3]);
    assert_eq!((b.src_tokens, b.tgt_tokens), (13, 11));
    assert_eq!(b.padded_tokens(), 24);
    check_batch(&examples, &b);
}

#[test]
fn decoder_only_batches_have_no_source() {
    let examples = vec![example(0, 3), example(0, 7), example(0, 0)];
    let b = make_batch(&examples, &[0, 1, 2], IDS);
    assert_eq!(b.src.shape(), [3, 0]);
    assert!(b.src.ids.is_empty() && b.src_mask().is_empty());
    assert_eq!((b.src_tokens, b.src_lens.clone()), (0, vec![0, 0, 0]));
    assert_eq!(b.tgt_in.shape(), [3, 8]);
    assert_eq!(b.padded_tokens(), 24);
    check_batch(&examples, &b);
    // The budget counts only the decoder side.
    let batches = epoch_batches(&examples, 16, 0, 0);
    check_epoch(&examples, &batches, 16);
}

#[test]
fn budget_cuts_sorted_lengths() {
    // Widths 2..=9 (tgt n + BOS), sorted: with 16 tokens a batch grows
    // while B * (its widest) <= 16: 3 * 4, 2 * 6, 2 * 8, 1 * 9.
    let examples: Vec<Example> = (1..=8).rev().map(|n| example(0, n)).collect();
    let batches = eval_batches(&examples, 16);
    // Sorted by length: index 7 is the shortest (tgt 1, width 2).
    assert_eq!(
        batches,
        vec![vec![7, 6, 5], vec![4, 3], vec![2, 1], vec![0]]
    );
    check_epoch(&examples, &batches, 16);
    // Over the budget alone: a batch of one, never dropped, and counted.
    let examples = vec![example(40, 3), example(2, 2), example(2, 2)];
    let batches = eval_batches(&examples, 8);
    assert_eq!(batches, vec![vec![1, 2], vec![0]]);
    assert_eq!(over_budget(&examples, 8), 1);
    check_epoch(&examples, &batches, 8);
}

#[test]
fn seeds_and_epochs_decide_the_order() {
    let examples: Vec<Example> = (0..300).map(|i| example(i % 23, i % 31)).collect();
    let a = epoch_batches(&examples, 128, 5, 0);
    assert_eq!(
        a,
        epoch_batches(&examples, 128, 5, 0),
        "same seed, same epoch"
    );
    let other_seed = epoch_batches(&examples, 128, 6, 0);
    let other_epoch = epoch_batches(&examples, 128, 5, 1);
    assert_ne!(a, other_seed);
    assert_ne!(a, other_epoch);
    // The number of batches depends on the lengths only.
    assert_eq!(a.len(), other_seed.len());
    assert_eq!(a.len(), other_epoch.len());
    for batches in [&a, &other_seed, &other_epoch] {
        check_epoch(&examples, batches, 128);
    }
    // Evaluation batches do not depend on anything but the examples.
    let eval = eval_batches(&examples, 128);
    assert_eq!(eval, eval_batches(&examples, 128));
    assert_eq!(eval.len(), a.len());
    check_epoch(&examples, &eval, 128);
}

#[test]
fn fit_lengths_drops_or_truncates_and_counts() {
    // max_len 5: src + EOS and BOS + tgt at most 5, so at most 4 ids a side.
    let examples = vec![
        example(4, 4), // fits exactly
        example(5, 1), // src too long
        example(1, 9), // tgt too long
        example(0, 0), // empty tgt: kept (it teaches EOS)
        example(7, 7), // both too long
    ];
    let (kept, report) = fit_lengths(examples.clone(), 5, LongPolicy::Drop);
    assert_eq!(kept, vec![example(4, 4), example(0, 0)]);
    assert_eq!(
        report,
        LengthReport {
            kept: 2,
            dropped: 3,
            truncated: 0,
            max_len: 5
        }
    );
    assert_eq!(
        report.to_string(),
        "kept 2 of 5 pairs; dropped 3 longer than 5 tokens"
    );
    let (kept, report) = fit_lengths(examples, 5, LongPolicy::Truncate);
    assert_eq!(
        kept,
        vec![
            example(4, 4),
            example(4, 1),
            example(1, 4),
            example(0, 0),
            example(4, 4)
        ]
    );
    assert_eq!((report.kept, report.dropped, report.truncated), (5, 0, 3));
    assert_eq!(
        report.to_string(),
        "kept 5 of 5 pairs; truncated 3 to 5 tokens"
    );
    assert!(kept.iter().all(|e| e.src_len() <= 5 && e.tgt_len() <= 5));
    let big = LengthReport {
        kept: 15_400,
        dropped: 194,
        truncated: 0,
        max_len: 128,
    };
    assert_eq!(
        big.to_string(),
        "kept 15,400 of 15,594 pairs; dropped 194 longer than 128 tokens"
    );
    let (_, none) = fit_lengths(vec![example(1, 1)], 128, LongPolicy::Drop);
    assert_eq!(
        none.to_string(),
        "kept 1 of 1 pairs; none longer than 128 tokens"
    );
}

#[test]
fn long_policy_is_snake_case_in_json() {
    assert_eq!(
        serde_json::to_string(&LongPolicy::Truncate).unwrap(),
        "\"truncate\""
    );
    let p: LongPolicy = serde_json::from_str("\"drop\"").unwrap();
    assert_eq!(p, LongPolicy::Drop);
}

#[test]
fn stream_resumes_with_exactly_the_next_batch() {
    let examples: Vec<Example> = (0..97).map(|i| example(i % 11, i % 17)).collect();
    let mut stream = BatchStream::new(&examples, 64, 3);
    let per_epoch = stream.epoch_len();
    assert!(per_epoch > 1);
    assert_eq!(stream.position(), StreamPosition::default());
    // The stream's epochs are `epoch_batches`'.
    let run: Vec<(u64, Vec<usize>)> = stream.by_ref().take(3 * per_epoch).collect();
    for epoch in 0..3 {
        let got: Vec<Vec<usize>> = run
            .iter()
            .filter(|(e, _)| *e == epoch)
            .map(|(_, b)| b.clone())
            .collect();
        assert_eq!(got, epoch_batches(&examples, 64, 3, epoch));
    }
    // Stop anywhere (an epoch's end included), save, resume: the same
    // continuation.
    for stop in [0, 1, per_epoch - 1, per_epoch, per_epoch + 2] {
        let mut first = BatchStream::new(&examples, 64, 3);
        first.by_ref().take(stop).for_each(drop);
        let saved = serde_json::to_string(&first.position()).unwrap();
        let rest: Vec<_> = first.take(per_epoch + 1).collect();
        let mut resumed = BatchStream::new(&examples, 64, 3);
        resumed.seek(serde_json::from_str(&saved).unwrap());
        assert_eq!(resumed.take(per_epoch + 1).collect::<Vec<_>>(), rest);
        assert_eq!(rest[..], run[stop..stop + per_epoch + 1]);
    }
}

#[test]
#[should_panic(expected = "make_batch: no indices")]
fn empty_batch_panics() {
    make_batch(&[example(1, 1)], &[], IDS);
}

#[test]
#[should_panic(expected = "make_batch: index 3 out of range for 1 examples")]
fn batch_index_out_of_range_panics() {
    make_batch(&[example(1, 1)], &[0, 3], IDS);
}

#[test]
#[should_panic(expected = "epoch_batches: batch_tokens must be positive")]
fn zero_budget_panics() {
    epoch_batches(&[example(1, 1)], 0, 0, 0);
}

#[test]
#[should_panic(expected = "BatchStream::seek: batch 9 of an epoch of 1 batches")]
fn seek_past_the_epoch_panics() {
    let mut s = BatchStream::new(&[example(1, 1)], 64, 0);
    s.seek(StreamPosition { epoch: 2, batch: 9 });
}

proptest! {
    // No regression files: a failure prints its minimal case.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::with_cases(200) })]

    #[test]
    fn every_example_once_within_budget(
        lens in prop::collection::vec((0usize..40, 0usize..40), 1..150),
        decoder_only in any::<bool>(),
        budget in 1usize..400,
        seed in any::<u64>(),
        epoch in 0u64..1000,
    ) {
        let examples: Vec<Example> = lens
            .iter()
            .map(|&(s, t)| example(if decoder_only { 0 } else { s }, t))
            .collect();
        let batches = epoch_batches(&examples, budget, seed, epoch);
        check_epoch(&examples, &batches, budget);
        let eval = eval_batches(&examples, budget);
        check_epoch(&examples, &eval, budget);
        prop_assert_eq!(batches.len(), eval.len());
        for b in batches.iter().take(5) {
            check_batch(&examples, &make_batch(&examples, b, IDS));
        }
    }
}

#[test]
fn real_pairs_cover_the_set() {
    let pairs = read_pairs(&data_dir().join("ding-en-de/train.tsv")).unwrap();
    // A stand-in tokenisation: one id per distinct whitespace-separated word
    // (the real subword vocabulary is the experiments' business).
    let encode = |text: &str, vocab: &mut HashMap<String, usize>| -> Vec<usize> {
        text.split_whitespace()
            .map(|w| {
                let next = 3 + vocab.len(); // after pad, BOS, EOS
                *vocab.entry(w.to_string()).or_insert(next)
            })
            .collect()
    };
    let mut words: HashMap<String, usize> = HashMap::new();
    let examples: Vec<Example> = pairs
        .iter()
        .map(|p| Example {
            src: encode(&p.src, &mut words),
            tgt: encode(&p.tgt, &mut words),
        })
        .collect();
    let total = examples.len();
    // No pair is longer than 20 words: a short maximum shows the counting.
    let (short, report) = fit_lengths(examples.clone(), 12, LongPolicy::Drop);
    println!("max_len 12: {report}");
    assert_eq!(report.kept + report.dropped, total);
    assert!(report.dropped > 0 && report.kept == short.len());
    let (examples, report) = fit_lengths(examples, 64, LongPolicy::Drop);
    println!("max_len 64: {report}");
    assert_eq!((report.kept, report.dropped), (total, 0));
    let budget = 2048;
    let batches = epoch_batches(&examples, budget, 0, 0);
    check_epoch(&examples, &batches, budget);
    // How much of each batch is padding: rows' own widths against B * max(S, T).
    let real: usize = examples.iter().map(Example::width).sum();
    let padded: usize = batches
        .iter()
        .map(|b| make_batch(&examples, b, IDS).padded_tokens())
        .sum();
    println!(
        "{} pairs in {} batches of at most {budget} tokens per epoch ({:.1}% of the padded width real)",
        examples.len(),
        batches.len(),
        100.0 * real as f64 / padded as f64
    );
    assert_eq!(over_budget(&examples, budget), 0);
    assert_eq!(batches.len(), eval_batches(&examples, budget).len());
}
