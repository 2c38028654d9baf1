//! Gradient accumulation over micro-batches in one fixed order, the basis
//! of data-parallel training that is bit-identical on any number of
//! processes (issue 12).
//!
//! A global batch is cut into `M` micro-batches. Micro-batch `m` gets the
//! weight `w_m = n_m / N` (its label tokens over the batch's), so the sum of
//! `w_m * loss_m` is the loss of the whole batch, and its gradient is the
//! sum of the micro-batches' weighted gradients. Floating-point addition is
//! not associative, so *how* those `M` gradients are added decides the bits
//! of the result. Here the order is a property of `M` alone: a pairwise tree
//! over the micro-batch index ([`tree_sum`]: the range `[lo, hi)` splits at
//! `lo + (hi - lo) / 2`, left operand first).
//!
//! With `K` processes, `K` a power of two dividing `M`, the blocks
//! `[r M/K, (r+1) M/K)` are exactly the nodes of that tree at depth
//! `log2 K` (every range above them has an even length, so it halves
//! exactly). Rank `r` sums its block locally with the same [`tree_sum`],
//! and the ranks combine their block sums pairwise up the same tree: 1, 2
//! and 4 processes add the same numbers in the same order. (`MPI_Allreduce`
//! makes no such promise: its order depends on the rank count and the
//! algorithm the library picks.)
//!
//! Each micro-batch draws dropout from its own generator, seeded from the
//! trainer's stream once per step and the micro-batch index
//! ([`micro_seed`]), never from the rank that computes it.
//!
//! The gradients travel as one flat `f32` buffer ([`GradLayout`]):
//! every parameter's gradient in parameter-id order, then one presence
//! flag per parameter (so a parameter no micro-batch reached is left alone
//! by Adam, as in [`Trainer::step`]), then the weighted loss.

use autograd::{ParamGrads, ParamId, Tape, Tensor};

use crate::{Ctx, Mode, Module, StepStats, TokenBatch, Trainer, named_params};

/// One micro-batch of a global batch: `src` (B, S), `tgt_in` (B, T),
/// `labels` (B * T) and its weight in the batch's loss.
#[derive(Clone, Copy, Debug)]
pub struct Micro<'a> {
    /// Source tokens, (B, S).
    pub src: &'a TokenBatch,
    /// Decoder input, (B, T).
    pub tgt_in: &'a TokenBatch,
    /// Labels, (B * T), padding = the model's pad id.
    pub labels: &'a [usize],
    /// Its share of the global batch's label tokens ([`micro_weights`]).
    pub weight: f64,
}

/// The weight of each micro-batch: its label tokens over the total, so
/// the weighted sum of the micro-batches' mean losses is the mean loss of
/// the whole batch. All zeros if the batch has no label token.
///
/// ```
/// use transformer::train::accumulate::micro_weights;
/// assert_eq!(micro_weights(&[30, 10, 0, 60]), vec![0.3, 0.1, 0.0, 0.6]);
/// ```
pub fn micro_weights(label_tokens: &[usize]) -> Vec<f64> {
    let total: usize = label_tokens.iter().sum();
    label_tokens
        .iter()
        .map(|&n| {
            if total == 0 {
                0.0
            } else {
                n as f64 / total as f64
            }
        })
        .collect()
}

/// The dropout seed of micro-batch `index` in a step whose stream seed is
/// `step_seed` (SplitMix64 of the pair): a function of (seed, step,
/// micro-batch), not of the rank.
///
/// ```
/// use transformer::train::accumulate::micro_seed;
/// assert_ne!(micro_seed(7, 0), micro_seed(7, 1));
/// assert_eq!(micro_seed(7, 3), micro_seed(7, 3));
/// ```
pub fn micro_seed(step_seed: u64, index: usize) -> u64 {
    let mut z = step_seed ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Checks that `ranks` processes can share `micro_batches` micro-batches
/// in the fixed tree: `ranks` a power of two that divides `micro_batches`.
/// The message names both and what to change.
///
/// ```
/// use transformer::train::accumulate::check_ranks;
/// assert!(check_ranks(4, 2).is_ok());
/// assert!(check_ranks(4, 3).unwrap_err().contains("3 processes"));
/// assert!(check_ranks(6, 4).is_err());
/// ```
pub fn check_ranks(micro_batches: usize, ranks: usize) -> Result<(), String> {
    if micro_batches == 0 {
        return Err("loop.micro_batches must be at least 1".into());
    }
    if ranks == 0 || !ranks.is_power_of_two() || !micro_batches.is_multiple_of(ranks) {
        return Err(format!(
            "{ranks} processes cannot share loop.micro_batches = {micro_batches}: the number of \
             processes must be a power of two that divides the micro-batches (so every process \
             sums one subtree of the fixed addition order); use -np 1, 2, 4, ... dividing \
             {micro_batches}, or --set loop.micro_batches=<a multiple of {ranks}> if {ranks} is a \
             power of two"
        ));
    }
    Ok(())
}

/// The micro-batches rank `rank` of `ranks` computes: the contiguous block
/// `[rank M/K, (rank+1) M/K)`, a node of the fixed tree.
pub fn rank_block(micro_batches: usize, ranks: usize, rank: usize) -> std::ops::Range<usize> {
    let b = micro_batches / ranks;
    rank * b..(rank + 1) * b
}

/// Adds `other` into `acc`, element by element (`acc` is the left operand).
/// Panics if the lengths differ.
pub fn add_into(acc: &mut [f32], other: &[f32]) {
    assert_eq!(
        acc.len(),
        other.len(),
        "add_into: buffers of {} and {} elements",
        acc.len(),
        other.len()
    );
    for (a, b) in acc.iter_mut().zip(other) {
        *a += *b;
    }
}

/// The sum of `leaf(lo) .. leaf(hi - 1)` in the fixed pairwise tree:
/// `[lo, hi)` splits at `lo + (hi - lo) / 2`, and a node is its left sum
/// plus its right sum. Leaves are computed in index order. Panics if the
/// range is empty.
///
/// ```
/// use transformer::train::accumulate::tree_sum;
/// // ((a + b) + (c + d)), never ((a + b) + c) + d:
/// let v = [1e8f32, 1.0, -1e8, 1.0];
/// let s = tree_sum(0, 4, &mut |i| vec![v[i]]);
/// assert_eq!(s, vec![(v[0] + v[1]) + (v[2] + v[3])]);
/// // A block that is a node of the tree sums to that node's value.
/// let left = tree_sum(0, 2, &mut |i| vec![v[i]]);
/// let right = tree_sum(2, 4, &mut |i| vec![v[i]]);
/// assert_eq!(s, vec![left[0] + right[0]]);
/// ```
pub fn tree_sum(lo: usize, hi: usize, leaf: &mut dyn FnMut(usize) -> Vec<f32>) -> Vec<f32> {
    assert!(hi > lo, "tree_sum: empty range [{lo}, {hi})");
    if hi - lo == 1 {
        return leaf(lo);
    }
    let mid = lo + (hi - lo) / 2;
    let mut left = tree_sum(lo, mid, leaf);
    let right = tree_sum(mid, hi, leaf);
    add_into(&mut left, &right);
    left
}

/// Where each parameter's gradient sits in a flat buffer: parameters in id
/// order (a tied weight once), then one presence flag per parameter, then
/// the weighted loss.
#[derive(Clone, Debug, PartialEq)]
pub struct GradLayout {
    params: Vec<(ParamId, Vec<usize>, usize)>,
    grad_len: usize,
}

impl GradLayout {
    /// The layout of `model`'s parameters.
    pub fn of(model: &mut dyn Module<f32>) -> Self {
        let mut ps: Vec<(ParamId, Vec<usize>)> = named_params(model)
            .into_iter()
            .map(|(_, p)| (p.id(), p.value.shape().to_vec()))
            .collect();
        ps.sort_by_key(|(id, _)| *id);
        ps.dedup_by_key(|(id, _)| *id);
        let mut offset = 0;
        let params = ps
            .into_iter()
            .map(|(id, shape)| {
                let at = offset;
                offset += shape.iter().product::<usize>();
                (id, shape, at)
            })
            .collect();
        GradLayout {
            params,
            grad_len: offset,
        }
    }

    /// Length of a flat buffer: gradient elements, presence flags, loss.
    pub fn len(&self) -> usize {
        self.grad_len + self.params.len() + 1
    }

    /// Gradient elements at the start of a buffer (before the presence
    /// flags and the loss).
    pub fn grad_len(&self) -> usize {
        self.grad_len
    }

    /// True for a model without parameters.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// Bytes of one flat buffer (what one message of the reduction carries).
    pub fn bytes(&self) -> usize {
        self.len() * std::mem::size_of::<f32>()
    }

    /// A buffer of zeros (an empty micro-batch's contribution).
    pub fn zeros(&self) -> Vec<f32> {
        vec![0.0; self.len()]
    }

    /// `grads` and `loss` as one buffer. Panics if a gradient's shape is
    /// not its parameter's.
    pub fn flatten(&self, grads: &ParamGrads<f32>, loss: f32) -> Vec<f32> {
        let mut flat = self.zeros();
        for (k, (id, shape, at)) in self.params.iter().enumerate() {
            if let Some(g) = grads.get_id(*id) {
                assert!(
                    g.shape() == shape.as_slice(),
                    "GradLayout::flatten: gradient of shape {:?} for a parameter of shape {shape:?}",
                    g.shape()
                );
                flat[*at..*at + g.numel()].copy_from_slice(g.data());
                flat[self.grad_len + k] = 1.0;
            }
        }
        flat[self.grad_len + self.params.len()] = loss;
        flat
    }

    /// The gradients (of the parameters some micro-batch reached) and the
    /// loss of a summed buffer. Panics on a buffer of another length.
    pub fn unflatten(&self, flat: &[f32]) -> (ParamGrads<f32>, f32) {
        assert_eq!(
            flat.len(),
            self.len(),
            "GradLayout::unflatten: a buffer of {} elements for a layout of {}",
            flat.len(),
            self.len()
        );
        let grads = self
            .params
            .iter()
            .enumerate()
            .filter(|(k, _)| flat[self.grad_len + k] > 0.0)
            .map(|(_, (id, shape, at))| {
                let n: usize = shape.iter().product();
                (*id, Tensor::from_vec(flat[*at..*at + n].to_vec(), shape))
            })
            .collect();
        (grads, flat[self.len() - 1])
    }
}

impl Trainer {
    /// Starts a step of micro-batches: the seed every micro-batch's dropout
    /// generator derives from ([`micro_seed`]). Advances the trainer's
    /// stream by one draw, the same on every process.
    pub fn step_seed(&mut self) -> u64 {
        rand::Rng::next_u64(&mut self.rng)
    }

    /// The flat weighted gradient and weighted loss of micro-batch `index`
    /// (zeros for a micro-batch of weight 0). Reads the model only.
    pub fn micro_grads(
        &self,
        layout: &GradLayout,
        micro: &Micro<'_>,
        step_seed: u64,
        index: usize,
    ) -> Vec<f32> {
        if micro.weight == 0.0 {
            return layout.zeros();
        }
        let tape = Tape::new();
        let ctx = Ctx::with_rng(&tape, Mode::Train, crate::rng(micro_seed(step_seed, index)));
        let logits = self.model.forward(&ctx, micro.src, micro.tgt_in); // (B, T, V)
        let loss = self.model.loss(logits, micro.labels, self.config.smoothing);
        let w = micro.weight as f32;
        let weighted_loss = loss.value().item() * w;
        let grads = tape.backward(loss.mul_scalar(w)).into_params();
        layout.flatten(&grads, weighted_loss)
    }

    /// Finishes a step from the summed flat buffer of all its micro-batches:
    /// clipping, the scheduled Adam update, the divergence check.
    pub fn apply_sum(&mut self, layout: &GradLayout, sum: &[f32]) -> StepStats {
        let (grads, loss) = layout.unflatten(sum);
        self.apply(grads, loss)
    }

    /// One step on a global batch cut into micro-batches, in this process:
    /// gradient accumulation in the fixed tree order. Equals the same step
    /// computed by 2, 4, ... processes bit for bit (see the module doc).
    ///
    /// ```
    /// use transformer::schedule::Schedule;
    /// use transformer::train::accumulate::{Micro, micro_weights};
    /// use transformer::{ModelConfig, TokenBatch, Trainer, TrainConfig};
    /// let train = TrainConfig { schedule: Schedule::Constant { lr: 1e-3 }, ..TrainConfig::paper(32) };
    /// let mut t = Trainer::new(ModelConfig::tiny(8, 8), train, 0).unwrap();
    /// let (src, tgt_in) = (TokenBatch::padded(&[vec![3, 4, 5]], 0), TokenBatch::padded(&[vec![1, 3, 4, 5]], 0));
    /// let labels = [3, 4, 5, 2];
    /// let w = micro_weights(&[4, 4]);
    /// let micros = [0, 1].map(|i| Micro { src: &src, tgt_in: &tgt_in, labels: &labels, weight: w[i] });
    /// let first = t.step_micro(&micros).loss;
    /// for _ in 0..20 { t.step_micro(&micros); }
    /// assert!(t.step_micro(&micros).loss < first);
    /// ```
    pub fn step_micro(&mut self, micros: &[Micro<'_>]) -> StepStats {
        assert!(!micros.is_empty(), "Trainer::step_micro: no micro-batches");
        let layout = GradLayout::of(&mut self.model);
        let seed = self.step_seed();
        let sum = self.block_sum(&layout, micros, seed, 0..micros.len());
        self.apply_sum(&layout, &sum)
    }

    /// The fixed-tree sum of the flat gradients of `micros[block]` (a node
    /// of the tree when `block` is a rank's [`rank_block`]): what one
    /// process of a data-parallel step computes before the ranks combine.
    pub fn block_sum(
        &self,
        layout: &GradLayout,
        micros: &[Micro<'_>],
        step_seed: u64,
        block: std::ops::Range<usize>,
    ) -> Vec<f32> {
        tree_sum(block.start, block.end, &mut |i| {
            self.micro_grads(layout, &micros[i], step_seed, i)
        })
    }
}
