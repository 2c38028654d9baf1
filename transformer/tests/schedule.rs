//! Learning-rate schedules against their formulas, written out here.

use transformer::schedule::Schedule;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-15 + 1e-12 * b.abs()
}

#[test]
fn paper_schedule_matches_its_formula() {
    let s = Schedule::paper(512);
    assert_eq!(
        s,
        Schedule::Noam {
            d_model: 512,
            warmup: 4000,
            factor: 1.0
        }
    );
    s.validate().unwrap();
    let d = 512f64;
    let w = 4000f64;
    // Step 1: still warming up, lr = d^-0.5 * 1 * w^-1.5.
    assert!(close(s.lr(1), d.powf(-0.5) * w.powf(-1.5)));
    // Step w: both branches agree, lr = d^-0.5 * w^-0.5 (the peak).
    assert!(close(s.lr(4000), d.powf(-0.5) * w.powf(-0.5)));
    assert!(close(s.lr(4000), 6.987712429686844e-4));
    // Step 2w: decaying, lr = d^-0.5 * (2w)^-0.5 = peak / sqrt(2).
    assert!(close(s.lr(8000), d.powf(-0.5) * (2.0 * w).powf(-0.5)));
    assert!(close(s.lr(8000), s.lr(4000) / 2f64.sqrt()));
    // Linear during warmup: lr(2000) is half the peak.
    assert!(close(s.lr(2000), s.lr(4000) / 2.0));
    // Step 0 (before training) gives 0, not infinity.
    assert_eq!(s.lr(0), 0.0);
}

#[test]
fn paper_schedule_peaks_at_warmup() {
    let s = Schedule::Noam {
        d_model: 64,
        warmup: 50,
        factor: 2.0,
    };
    let peak = s.lr(50);
    assert!(close(peak, 2.0 * 64f64.powf(-0.5) * 50f64.powf(-0.5)));
    for step in 1..=200 {
        if step != 50 {
            assert!(s.lr(step) < peak, "step {step}");
        }
        if step < 50 {
            assert!(s.lr(step) < s.lr(step + 1), "rising at step {step}");
        } else {
            assert!(s.lr(step) > s.lr(step + 1), "falling at step {step}");
        }
    }
}

#[test]
fn warmup_inverse_sqrt_is_the_paper_shape_by_peak() {
    let noam = Schedule::Noam {
        d_model: 256,
        warmup: 100,
        factor: 1.0,
    };
    let peak = noam.lr(100);
    let s = Schedule::WarmupInvSqrt {
        peak_lr: peak,
        warmup: 100,
    };
    s.validate().unwrap();
    for step in [1, 7, 50, 99, 100, 101, 400, 10_000] {
        assert!(close(s.lr(step), noam.lr(step)), "step {step}");
    }
    assert!(close(s.lr(400), peak * (100.0f64 / 400.0).sqrt()));
}

#[test]
fn cosine_warms_up_then_follows_half_a_cosine() {
    let s = Schedule::Cosine {
        peak_lr: 1e-3,
        warmup: 10,
        total_steps: 110,
        final_lr: 1e-4,
    };
    s.validate().unwrap();
    assert!(close(s.lr(5), 1e-3 * 5.0 / 10.0));
    assert!(close(s.lr(10), 1e-3));
    // Half-way through the decay the cosine is at 0: mean of peak and final.
    assert!(close(s.lr(60), (1e-3 + 1e-4) / 2.0));
    // A quarter of the way: final + (peak - final) * (1 + cos(pi / 4)) / 2.
    let q = 1e-4 + 0.5 * (1e-3 - 1e-4) * (1.0 + (std::f64::consts::PI / 4.0).cos());
    assert!(close(s.lr(35), q));
    assert!(close(s.lr(110), 1e-4));
    assert!(close(s.lr(1_000), 1e-4));
    for step in 10..110 {
        assert!(s.lr(step) >= s.lr(step + 1), "monotone decay at {step}");
    }
    // Without warmup it starts at the peak.
    let no_warmup = Schedule::Cosine {
        peak_lr: 1.0,
        warmup: 0,
        total_steps: 100,
        final_lr: 0.0,
    };
    no_warmup.validate().unwrap();
    assert!(no_warmup.lr(1) > 0.999 && no_warmup.lr(1) <= 1.0);
}

#[test]
fn constant_is_constant() {
    let s = Schedule::Constant { lr: 3e-4 };
    s.validate().unwrap();
    for step in [0, 1, 4000, u64::MAX] {
        assert_eq!(s.lr(step), 3e-4);
    }
}

#[test]
fn validate_rejects_nonsense() {
    let bad = [
        Schedule::Noam {
            d_model: 512,
            warmup: 0,
            factor: 1.0,
        },
        Schedule::Noam {
            d_model: 0,
            warmup: 4000,
            factor: 1.0,
        },
        Schedule::Noam {
            d_model: 512,
            warmup: 4000,
            factor: -1.0,
        },
        Schedule::Noam {
            d_model: 512,
            warmup: 4000,
            factor: f64::NAN,
        },
        Schedule::Constant { lr: 0.0 },
        Schedule::Constant { lr: f64::INFINITY },
        Schedule::WarmupInvSqrt {
            peak_lr: 1e-3,
            warmup: 0,
        },
        Schedule::WarmupInvSqrt {
            peak_lr: -1e-3,
            warmup: 10,
        },
        Schedule::Cosine {
            peak_lr: 1e-3,
            warmup: 100,
            total_steps: 100,
            final_lr: 0.0,
        },
        Schedule::Cosine {
            peak_lr: 1e-3,
            warmup: 0,
            total_steps: 100,
            final_lr: 1e-2,
        },
        Schedule::Cosine {
            peak_lr: 1e-3,
            warmup: 0,
            total_steps: 100,
            final_lr: -1e-5,
        },
    ];
    for s in bad {
        let err = s
            .validate()
            .expect_err(&format!("{s:?} should be rejected"));
        assert!(err.starts_with("schedule:"), "{err}");
    }
    let err = Schedule::Noam {
        d_model: 512,
        warmup: 0,
        factor: 1.0,
    }
    .validate()
    .unwrap_err();
    assert!(err.contains("warmup"), "{err}");
}

#[test]
fn schedule_serde_round_trip() {
    let config = bincode::config::standard();
    for s in [
        Schedule::paper(512),
        Schedule::Constant { lr: 0.5 },
        Schedule::WarmupInvSqrt {
            peak_lr: 1e-3,
            warmup: 7,
        },
        Schedule::Cosine {
            peak_lr: 1e-3,
            warmup: 3,
            total_steps: 30,
            final_lr: 0.0,
        },
    ] {
        let bytes = bincode::serde::encode_to_vec(&s, config).unwrap();
        let (back, _): (Schedule, usize) =
            bincode::serde::decode_from_slice(&bytes, config).unwrap();
        assert_eq!(back, s);
    }
}
