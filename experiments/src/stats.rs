//! The statistics of an ablation: mean and spread over seeds, the 95%
//! confidence interval of a variant's difference to the baseline (Welch's
//! t interval: unequal variances, Welch-Satterthwaite degrees of freedom,
//! Student's t quantile from `statrs`), and the verdict against a
//! published finding.
//!
//! Why Welch and not a bootstrap: with 3 seeds a bootstrap resamples 3
//! numbers (10 distinct resamples) and its interval is far too narrow;
//! Welch's interval is honest about how little 3 seeds say.
//!
//! ```
//! use experiments::stats::{Expect, Verdict, verdict, welch};
//! let baseline = [30.0, 31.0, 32.0];
//! let batchnorm = [40.0, 42.0, 41.0];
//! let ci = welch(&batchnorm, &baseline, 0.95).unwrap();
//! assert_eq!(ci.diff, 10.0);
//! assert!(ci.low > 0.0); // clearly higher perplexity
//! assert_eq!(verdict(Expect::Higher, &ci, 31.0), Verdict::Reproduces);
//! assert_eq!(verdict(Expect::Lower, &ci, 31.0), Verdict::Contradicts);
//! ```

use statrs::distribution::{ContinuousCDF, StudentsT};

/// Mean and sample standard deviation (n - 1 in the denominator).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    /// How many values.
    pub n: usize,
    /// Their mean.
    pub mean: f64,
    /// Their sample standard deviation (0 for a single value).
    pub std: f64,
}

/// The mean and spread of `xs`; `None` when empty.
///
/// ```
/// let s = experiments::stats::spread(&[1.0, 2.0, 3.0]).unwrap();
/// assert_eq!((s.n, s.mean, s.std), (3, 2.0, 1.0));
/// ```
pub fn spread(xs: &[f64]) -> Option<Spread> {
    let n = xs.len();
    if n == 0 {
        return None;
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    let var = if n > 1 {
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64
    } else {
        0.0
    };
    Some(Spread {
        n,
        mean,
        std: var.sqrt(),
    })
}

/// A confidence interval for the difference of two means.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    /// mean(a) - mean(b).
    pub diff: f64,
    /// Lower end.
    pub low: f64,
    /// Upper end.
    pub high: f64,
    /// Welch-Satterthwaite degrees of freedom (infinite when both samples
    /// have zero spread: the interval is then the point `diff`).
    pub df: f64,
}

impl Interval {
    /// True when the interval contains 0.
    pub fn includes_zero(&self) -> bool {
        self.low <= 0.0 && 0.0 <= self.high
    }
}

/// Welch's `level` (e.g. 0.95) confidence interval for mean(a) - mean(b).
/// `None` when either sample has fewer than 2 values (no spread to
/// estimate).
pub fn welch(a: &[f64], b: &[f64], level: f64) -> Option<Interval> {
    assert!(
        level > 0.0 && level < 1.0,
        "welch: confidence level {level} is not in (0, 1)"
    );
    let (sa, sb) = (spread(a)?, spread(b)?);
    if sa.n < 2 || sb.n < 2 {
        return None;
    }
    let (va, vb) = (sa.std.powi(2) / sa.n as f64, sb.std.powi(2) / sb.n as f64);
    let se = (va + vb).sqrt();
    let diff = sa.mean - sb.mean;
    if se == 0.0 {
        return Some(Interval {
            diff,
            low: diff,
            high: diff,
            df: f64::INFINITY,
        });
    }
    let df = (va + vb).powi(2) / (va.powi(2) / (sa.n - 1) as f64 + vb.powi(2) / (sb.n - 1) as f64);
    let t = StudentsT::new(0.0, 1.0, df)
        .expect("welch: degrees of freedom are positive and finite here")
        .inverse_cdf(0.5 + level / 2.0);
    Some(Interval {
        diff,
        low: diff - t * se,
        high: diff + t * se,
        df,
    })
}

/// Which way the published finding says the variant's primary metric
/// (validation perplexity: lower is better) moves against the baseline.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Expect {
    /// The variant's metric is higher (worse perplexity).
    Higher,
    /// The variant's metric is lower.
    Lower,
    /// No real difference: the whole interval lies within
    /// `± margin x baseline mean` (an equivalence margin; "the CI includes
    /// 0" alone is absence of evidence, not evidence of no difference).
    Same {
        /// Relative equivalence margin, e.g. 0.05 for 5%.
        margin: f64,
    },
}

/// The verdict of one variant against the published finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The interval lies on the side the finding predicts (or, for
    /// [`Expect::Same`], within the margin).
    Reproduces,
    /// The interval lies on the other side (or, for [`Expect::Same`],
    /// excludes 0).
    Contradicts,
    /// Neither: the interval includes 0 (or, for [`Expect::Same`], it
    /// includes 0 but reaches beyond the margin).
    Inconclusive,
}

impl Verdict {
    /// The word in the reports.
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Reproduces => "reproduces",
            Verdict::Contradicts => "contradicts",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// The verdict for an interval of (variant - baseline) given the finding's
/// direction; `baseline_mean` scales [`Expect::Same`]'s margin.
///
/// ```
/// use experiments::stats::{Expect, Interval, Verdict, verdict};
/// let ci = Interval { diff: 0.2, low: -0.5, high: 0.9, df: 4.0 };
/// assert_eq!(verdict(Expect::Higher, &ci, 30.0), Verdict::Inconclusive);
/// // Within 5% of 30 (1.5) on both sides: the same, as the paper found.
/// assert_eq!(verdict(Expect::Same { margin: 0.05 }, &ci, 30.0), Verdict::Reproduces);
/// ```
pub fn verdict(expect: Expect, ci: &Interval, baseline_mean: f64) -> Verdict {
    match expect {
        Expect::Higher | Expect::Lower => {
            let sign = if expect == Expect::Higher { 1.0 } else { -1.0 };
            let (low, high) = if sign > 0.0 {
                (ci.low, ci.high)
            } else {
                (-ci.high, -ci.low)
            };
            if low > 0.0 {
                Verdict::Reproduces
            } else if high < 0.0 {
                Verdict::Contradicts
            } else {
                Verdict::Inconclusive
            }
        }
        Expect::Same { margin } => {
            let m = margin * baseline_mean.abs();
            if !ci.includes_zero() {
                Verdict::Contradicts
            } else if ci.low >= -m && ci.high <= m {
                Verdict::Reproduces
            } else {
                Verdict::Inconclusive
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn welch_matches_a_hand_computed_interval() {
        // a = [1, 2, 3]: mean 2, var 1; b = [2, 4, 6]: mean 4, var 4.
        // se = sqrt(1/3 + 4/3) = 1.2910; df = (5/3)^2 / ((1/9)/2 + (16/9)/2) = 2.9412;
        // t(0.975, 2.9412) = 3.21876, computed independently by bisection
        // on a midpoint-rule integral of Student's t density.
        let ci = welch(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0], 0.95).unwrap();
        assert_eq!(ci.diff, -2.0);
        assert!((ci.df - 2.941_176).abs() < 1e-5, "{}", ci.df);
        let half = 3.21876 * (5.0f64 / 3.0).sqrt();
        assert!((ci.low - (-2.0 - half)).abs() < 2e-3, "{ci:?}");
        assert!((ci.high - (-2.0 + half)).abs() < 2e-3, "{ci:?}");
        assert!(ci.includes_zero());
    }

    #[test]
    fn large_samples_approach_the_normal_quantile() {
        let a: Vec<f64> = (0..2000).map(|i| f64::from(i % 2)).collect();
        let b: Vec<f64> = (0..2000).map(|i| f64::from(i % 2) + 1.0).collect();
        let ci = welch(&a, &b, 0.95).unwrap();
        let se = (2.0 * 0.25 * 2000.0 / 1999.0 / 2000.0f64).sqrt();
        assert!(((ci.high - ci.diff) / se - 1.96).abs() < 0.01);
    }

    #[test]
    fn too_few_values_give_no_interval() {
        assert!(welch(&[1.0], &[1.0, 2.0], 0.95).is_none());
        assert!(spread(&[]).is_none());
        assert_eq!(spread(&[5.0]).unwrap().std, 0.0);
    }

    #[test]
    fn zero_spread_gives_a_point_interval() {
        let ci = welch(&[3.0, 3.0], &[1.0, 1.0], 0.95).unwrap();
        assert_eq!((ci.low, ci.high), (2.0, 2.0));
        assert_eq!(verdict(Expect::Higher, &ci, 1.0), Verdict::Reproduces);
    }

    #[test]
    fn verdicts_on_constructed_intervals() {
        let above = Interval {
            diff: 2.0,
            low: 1.0,
            high: 3.0,
            df: 4.0,
        };
        let below = Interval {
            diff: -2.0,
            low: -3.0,
            high: -1.0,
            df: 4.0,
        };
        let across = Interval {
            diff: 0.5,
            low: -1.0,
            high: 2.0,
            df: 4.0,
        };
        assert_eq!(verdict(Expect::Higher, &above, 10.0), Verdict::Reproduces);
        assert_eq!(verdict(Expect::Higher, &below, 10.0), Verdict::Contradicts);
        assert_eq!(
            verdict(Expect::Higher, &across, 10.0),
            Verdict::Inconclusive
        );
        assert_eq!(verdict(Expect::Lower, &below, 10.0), Verdict::Reproduces);
        assert_eq!(verdict(Expect::Lower, &above, 10.0), Verdict::Contradicts);
        assert_eq!(verdict(Expect::Lower, &across, 10.0), Verdict::Inconclusive);
        let same = Expect::Same { margin: 0.05 };
        // Margin 5% of 100 = 5: [-1, 2] is inside.
        assert_eq!(verdict(same, &across, 100.0), Verdict::Reproduces);
        // Margin 5% of 10 = 0.5: [-1, 2] includes 0 but is wider.
        assert_eq!(verdict(same, &across, 10.0), Verdict::Inconclusive);
        assert_eq!(verdict(same, &above, 100.0), Verdict::Contradicts);
        assert_eq!(Verdict::Inconclusive.word(), "inconclusive");
    }
}
