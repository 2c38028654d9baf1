//! `EvalStats`: what a researcher reads off an evaluation.
//!
//! The training loss is label-smoothed (the paper, section 5.4), so it is
//! not a negative log-likelihood: with smoothing 0.1 over a vocabulary of
//! 37,000 it never falls below about 1.0 even for a perfect model, and its
//! exponential is no perplexity. Evaluation therefore reports the plain,
//! unsmoothed NLL per token, its perplexity `exp(NLL)`, and token accuracy,
//! beside the smoothed loss that training minimises.

use autograd::Tensor;

/// Evaluation sums over non-padding target tokens. Sums (not means), so
/// that batches of different sizes combine exactly with [`EvalStats::merge`].
///
/// ```
/// use autograd::Tensor;
/// use transformer::EvalStats;
/// // Two tokens over a vocabulary of 2; the second label is padding (0).
/// let logits = Tensor::from_vec(vec![0.0f32, 0.0, 5.0, 0.0], &[1, 2, 2]); // (B, T, V)
/// let s = EvalStats::from_logits(&logits, &[1, 0], Some(0));
/// assert_eq!(s.tokens, 1);
/// assert!((s.nll() - 2f64.ln()).abs() < 1e-7); // uniform over 2 classes
/// assert!((s.perplexity() - 2.0).abs() < 1e-6);
/// assert_eq!(s.accuracy(), 0.0); // a tie goes to the first class
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EvalStats {
    /// Non-padding target tokens.
    pub tokens: usize,
    /// Sum over those tokens of `-ln p(label)` (unsmoothed), in f64.
    pub nll_sum: f64,
    /// Tokens whose most likely class is the label.
    pub correct: usize,
    /// Sum over those tokens of the label-smoothed loss (what training
    /// minimises), for comparison with the training curve.
    pub smoothed_loss_sum: f64,
}

impl EvalStats {
    /// NLL and accuracy of logits (..., V) against `labels` (one per row),
    /// skipping labels equal to `pad`. `smoothed_loss_sum` is left 0 (the
    /// trainer fills it in). The log-softmax is computed in f64 from the
    /// logits, independently of the training kernels.
    pub fn from_logits(logits: &Tensor<f32>, labels: &[usize], pad: Option<usize>) -> Self {
        let v = *logits
            .shape()
            .last()
            .expect("EvalStats::from_logits: logits have no axes");
        assert!(
            v > 0 && logits.numel() / v == labels.len(),
            "EvalStats::from_logits: logits {:?} do not give one row per label ({} labels)",
            logits.shape(),
            labels.len()
        );
        let mut s = EvalStats::default();
        for (row, &label) in logits.data().chunks(v).zip(labels) {
            if Some(label) == pad {
                continue;
            }
            assert!(
                label < v,
                "EvalStats::from_logits: label {label} outside the vocabulary of {v}"
            );
            // Greedy decoding's choice (the first maximum on ties).
            let best = crate::decode::argmax(row);
            let mx = f64::from(row[best]);
            let lse = mx
                + row
                    .iter()
                    .map(|&x| (f64::from(x) - mx).exp())
                    .sum::<f64>()
                    .ln();
            s.tokens += 1;
            s.nll_sum += lse - f64::from(row[label]);
            s.correct += usize::from(best == label);
        }
        s
    }

    /// Adds another batch's sums.
    pub fn merge(&mut self, other: &EvalStats) {
        self.tokens += other.tokens;
        self.nll_sum += other.nll_sum;
        self.correct += other.correct;
        self.smoothed_loss_sum += other.smoothed_loss_sum;
    }

    /// Mean unsmoothed negative log-likelihood per token (nats); NaN with
    /// no tokens.
    pub fn nll(&self) -> f64 {
        self.nll_sum / self.tokens as f64
    }

    /// `exp(nll)`: the perplexity per target token.
    pub fn perplexity(&self) -> f64 {
        self.nll().exp()
    }

    /// Fraction of tokens predicted exactly (argmax = label).
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.tokens as f64
    }

    /// Mean label-smoothed loss per token (the training objective).
    pub fn smoothed_loss(&self) -> f64 {
        self.smoothed_loss_sum / self.tokens as f64
    }
}
