//! The synthetic tasks: every task draws the same sources from a seed, and
//! its targets follow its rule; labels are the targets plus the end token.

use transformer::rng;
use transformer::synthetic::{EOS, PAD, Task, copy_batch, task_batch};

#[test]
fn tasks_share_sources_and_their_targets_follow_the_rule() {
    let copy = copy_batch(&mut rng(3), 16, 1, 9, 13);
    for task in [Task::Copy, Task::Reverse, Task::Sort] {
        let b = task_batch(task, &mut rng(3), 16, 1, 9, 13);
        assert_eq!(b.src, copy.src, "{task:?}");
        for (i, t) in b.targets.iter().enumerate() {
            let src: Vec<usize> = b.src.row(i).iter().copied().filter(|&x| x != PAD).collect();
            assert_eq!(*t, task.target(&src), "{task:?}");
            let labels: Vec<usize> = b.labels[i * b.tgt_in.len..(i + 1) * b.tgt_in.len]
                .iter()
                .copied()
                .filter(|&x| x != PAD)
                .collect();
            assert_eq!(labels, [&t[..], &[EOS]].concat(), "{task:?}");
        }
    }
    let sorted = task_batch(Task::Sort, &mut rng(3), 16, 1, 9, 13);
    assert!(
        sorted
            .targets
            .iter()
            .all(|t| t.windows(2).all(|w| w[0] <= w[1]))
    );
}
