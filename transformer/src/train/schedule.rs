//! Learning-rate schedules: the paper's warmup then inverse square root,
//! constant, linear warmup then inverse square root by peak rate, and cosine.
//!
//! Steps count from 1 (the first update is step 1), as in the paper. At step
//! 0 (before any update) the warmup schedules give 0.
//!
//! ```
//! use transformer::schedule::Schedule;
//! let s = Schedule::paper(512); // factor 1, warmup 4000
//! s.validate().unwrap();
//! // The peak is at step == warmup: d_model^-0.5 * warmup^-0.5.
//! let peak = 512f64.powf(-0.5) * 4000f64.powf(-0.5);
//! assert!((s.lr(4000) - peak).abs() < 1e-15);
//! assert!(s.lr(3999) < peak && s.lr(4001) < peak);
//! ```

use serde::{Deserialize, Serialize};

/// A learning rate as a function of the step (from 1).
///
/// ```
/// use transformer::schedule::Schedule;
/// let s = Schedule::Constant { lr: 1e-3 };
/// assert_eq!(s.lr(1), 1e-3);
/// assert_eq!(s.lr(1_000_000), 1e-3);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Schedule {
    /// Vaswani et al. (2017), eq. (3), with a scale `factor` (1 in the paper):
    /// `factor * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)`.
    /// Linear increase for `warmup` steps, then decay as `1/sqrt(step)`;
    /// the peak, at `step == warmup`, is `factor / sqrt(d_model * warmup)`.
    Noam {
        /// The model width the rate scales with.
        d_model: usize,
        /// Warmup steps; the paper uses 4000.
        warmup: u64,
        /// Scale of the whole curve (1 in the paper).
        factor: f64,
    },
    /// The same rate at every step.
    Constant {
        /// The rate.
        lr: f64,
    },
    /// Linear warmup from 0 to `peak_lr` over `warmup` steps, then
    /// `peak_lr * sqrt(warmup / step)`: the paper's shape, parameterised by
    /// its peak instead of by `d_model`.
    WarmupInvSqrt {
        /// The rate at the end of warmup.
        peak_lr: f64,
        /// Warmup steps.
        warmup: u64,
    },
    /// Linear warmup from 0 to `peak_lr` over `warmup` steps (none if 0),
    /// then half a cosine from `peak_lr` down to `final_lr` at `total_steps`
    /// (Loshchilov & Hutter 2017, without restarts); `final_lr` after that.
    Cosine {
        /// The rate at the end of warmup.
        peak_lr: f64,
        /// Warmup steps.
        warmup: u64,
        /// The step at which the cosine reaches `final_lr`.
        total_steps: u64,
        /// The rate from `total_steps` on.
        final_lr: f64,
    },
}

impl Schedule {
    /// The paper's schedule for this model width: factor 1, warmup 4000.
    ///
    /// ```
    /// use transformer::schedule::Schedule;
    /// assert_eq!(
    ///     Schedule::paper(512),
    ///     Schedule::Noam { d_model: 512, warmup: 4000, factor: 1.0 }
    /// );
    /// ```
    pub fn paper(d_model: usize) -> Self {
        Schedule::Noam {
            d_model,
            warmup: 4000,
            factor: 1.0,
        }
    }

    /// The learning rate at `step` (the first update is step 1).
    ///
    /// ```
    /// use transformer::schedule::Schedule;
    /// let s = Schedule::WarmupInvSqrt { peak_lr: 1e-3, warmup: 100 };
    /// assert!((s.lr(50) - 5e-4).abs() < 1e-15); // half-way up
    /// assert!((s.lr(100) - 1e-3).abs() < 1e-15); // peak
    /// assert!((s.lr(400) - 5e-4).abs() < 1e-15); // sqrt(100 / 400) = 1/2
    /// ```
    pub fn lr(&self, step: u64) -> f64 {
        let s = step as f64;
        match *self {
            Schedule::Noam {
                d_model,
                warmup,
                factor,
            } => {
                // At step 0, 0^-0.5 = inf and min(inf, 0) = 0.
                let w = warmup as f64;
                factor * (d_model as f64).powf(-0.5) * s.powf(-0.5).min(s * w.powf(-1.5))
            }
            Schedule::Constant { lr } => lr,
            Schedule::WarmupInvSqrt { peak_lr, warmup } => {
                let w = warmup as f64;
                if step <= warmup {
                    peak_lr * s / w
                } else {
                    peak_lr * (w / s).sqrt()
                }
            }
            Schedule::Cosine {
                peak_lr,
                warmup,
                total_steps,
                final_lr,
            } => {
                if step < warmup {
                    peak_lr * s / warmup as f64
                } else if step >= total_steps {
                    final_lr
                } else {
                    let progress = (step - warmup) as f64 / (total_steps - warmup) as f64;
                    final_lr
                        + 0.5
                            * (peak_lr - final_lr)
                            * (1.0 + (std::f64::consts::PI * progress).cos())
                }
            }
        }
    }

    /// Checks that the schedule makes sense: positive finite rates and
    /// factor, `d_model > 0`, `warmup > 0` where the formula divides by it,
    /// `total_steps > warmup` and `0 <= final_lr <= peak_lr` for cosine.
    ///
    /// ```
    /// use transformer::schedule::Schedule;
    /// let bad = Schedule::Noam { d_model: 512, warmup: 0, factor: 1.0 };
    /// assert!(bad.validate().unwrap_err().contains("warmup"));
    /// ```
    pub fn validate(&self) -> Result<(), String> {
        fn positive(what: &str, x: f64) -> Result<(), String> {
            if x.is_finite() && x > 0.0 {
                Ok(())
            } else {
                Err(format!(
                    "schedule: {what} = {x} must be positive and finite"
                ))
            }
        }
        match *self {
            Schedule::Noam {
                d_model,
                warmup,
                factor,
            } => {
                if d_model == 0 {
                    return Err("schedule: d_model must be > 0 (it is raised to -0.5)".into());
                }
                if warmup == 0 {
                    return Err(
                        "schedule: warmup must be > 0 (it is raised to -1.5; the paper uses 4000)"
                            .into(),
                    );
                }
                positive("factor", factor)
            }
            Schedule::Constant { lr } => positive("lr", lr),
            Schedule::WarmupInvSqrt { peak_lr, warmup } => {
                if warmup == 0 {
                    return Err("schedule: warmup must be > 0 for warmup-inverse-sqrt (the rate is peak_lr * sqrt(warmup / step))".into());
                }
                positive("peak_lr", peak_lr)
            }
            Schedule::Cosine {
                peak_lr,
                warmup,
                total_steps,
                final_lr,
            } => {
                positive("peak_lr", peak_lr)?;
                if total_steps <= warmup {
                    return Err(format!(
                        "schedule: cosine total_steps = {total_steps} must exceed warmup = {warmup}"
                    ));
                }
                if !(final_lr.is_finite() && (0.0..=peak_lr).contains(&final_lr)) {
                    return Err(format!(
                        "schedule: cosine final_lr = {final_lr} must be in [0, peak_lr = {peak_lr}]"
                    ));
                }
                Ok(())
            }
        }
    }
}
