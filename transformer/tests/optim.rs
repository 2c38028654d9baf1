//! Adam, AdamW and gradient clipping against arithmetic written out by hand
//! in f64, independent of the optimiser's code.

use autograd::{Param, ParamGrads, Tape, Tensor};
use transformer::optim::{Adam, AdamConfig, AdamState, clip_grad_norm};
use transformer::schedule::Schedule;
use transformer::{Module, Visitor};

/// `y = x w + b` with w (2, 1), b (1).
struct Affine {
    w: Param,
    b: Param,
}

impl Module for Affine {
    fn visit(&mut self, v: &mut Visitor<'_>) {
        v.param("w", &mut self.w);
        v.param("b", &mut self.b);
    }
}

impl Affine {
    fn new(w: [f32; 2], b: f32) -> Self {
        Affine {
            w: Param::new(Tensor::from_vec(w.to_vec(), &[2, 1])),
            b: Param::new(Tensor::from_vec(vec![b], &[1])),
        }
    }

    fn values(&self) -> [f32; 3] {
        let w = self.w.value.data();
        [w[0], w[1], self.b.value.data()[0]]
    }
}

const X: [[f64; 2]; 4] = [[1.0, 2.0], [-1.0, 0.5], [0.5, -1.5], [2.0, 1.0]];
const Y: [f64; 4] = [1.0, -2.0, 0.5, 3.0];

/// Gradients of the mean squared error through the tape.
fn tape_grads(m: &Affine) -> (ParamGrads, f32) {
    let tape = Tape::new();
    let x = tape.constant(Tensor::from_vec(
        X.iter().flatten().map(|&v| v as f32).collect(),
        &[4, 2],
    ));
    let y = tape.constant(Tensor::from_vec(
        Y.iter().map(|&v| v as f32).collect(),
        &[4, 1],
    ));
    let r = x.matmul(tape.param(&m.w)) + tape.param(&m.b) - y;
    let loss = (r * r).mean_all();
    let value = loss.value().item();
    (tape.backward(loss).into_params(), value)
}

/// The same gradients by hand: L = 1/N sum r_i^2, r = x w + b - y, so
/// dL/dw_j = 2/N sum r_i x_ij and dL/db = 2/N sum r_i.
fn hand_grads(p: [f64; 3]) -> [f64; 3] {
    let n = X.len() as f64;
    let mut g = [0.0; 3];
    for (x, y) in X.iter().zip(Y) {
        let r = x[0] * p[0] + x[1] * p[1] + p[2] - y;
        g[0] += 2.0 / n * r * x[0];
        g[1] += 2.0 / n * r * x[1];
        g[2] += 2.0 / n * r;
    }
    g
}

/// One Adam(W) step in f64, exactly as Kingma & Ba's algorithm 1 with
/// PyTorch's eps placement and Loshchilov & Hutter's decoupled decay.
#[allow(clippy::too_many_arguments)]
fn hand_adam(
    p: &mut [f64; 3],
    m: &mut [f64; 3],
    v: &mut [f64; 3],
    g: [f64; 3],
    t: i32,
    lr: f64,
    wd: f64,
    decoupled: bool,
) {
    let (b1, b2, eps) = (0.9, 0.98, 1e-9);
    for i in 0..3 {
        let mut gi = g[i];
        if decoupled {
            p[i] *= 1.0 - lr * wd;
        } else {
            gi += wd * p[i];
        }
        m[i] = b1 * m[i] + (1.0 - b1) * gi;
        v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
        let m_hat = m[i] / (1.0 - b1.powi(t));
        let v_hat = v[i] / (1.0 - b2.powi(t));
        p[i] -= lr * m_hat / (v_hat.sqrt() + eps);
    }
}

/// The paper's schedule written out: d^-0.5 * min(t^-0.5, t * w^-1.5).
fn hand_noam(d_model: f64, warmup: f64, t: f64) -> f64 {
    d_model.powf(-0.5) * f64::min(t.powf(-0.5), t * warmup.powf(-1.5))
}

fn assert_close(got: [f32; 3], want: [f64; 3], tol: f64, what: &str) {
    for i in 0..3 {
        assert!(
            (got[i] as f64 - want[i]).abs() <= tol,
            "{what}: component {i}: optimiser {} vs hand {}",
            got[i],
            want[i]
        );
    }
}

/// Runs `steps` steps of `opt` under the schedule and checks every
/// intermediate parameter vector against the hand computation.
fn check_trajectory(mut opt: Adam, wd: f64, decoupled: bool, steps: i32) {
    let schedule = Schedule::Noam {
        d_model: 4,
        warmup: 3,
        factor: 1.0,
    };
    let mut model = Affine::new([0.3, -0.2], 0.1);
    let mut p = [0.3f32 as f64, -0.2f32 as f64, 0.1f32 as f64];
    let (mut m, mut v) = ([0.0; 3], [0.0; 3]);
    let mut losses = Vec::new();
    for t in 1..=steps {
        let (grads, loss) = tape_grads(&model);
        losses.push(loss);
        // The tape's gradients agree with the hand derivative...
        let tg = [
            grads.get(&model.w).unwrap().data()[0],
            grads.get(&model.w).unwrap().data()[1],
            grads.get(&model.b).unwrap().data()[0],
        ];
        assert_close(tg, hand_grads(p), 1e-5, &format!("gradient at step {t}"));
        // ...and the schedule its formula.
        let lr = schedule.lr(t as u64);
        let lr_hand = hand_noam(4.0, 3.0, t as f64);
        assert!((lr - lr_hand).abs() < 1e-15, "lr at step {t}");
        opt.step(&mut model, &grads, lr);
        let g = hand_grads(p);
        hand_adam(&mut p, &mut m, &mut v, g, t, lr_hand, wd, decoupled);
        assert_close(
            model.values(),
            p,
            2e-5,
            &format!("parameters after step {t}"),
        );
    }
    assert_eq!(opt.steps(), steps as u64);
    assert!(
        losses.last().unwrap() < &losses[0],
        "loss falls: {losses:?}"
    );
}

#[test]
fn adam_with_warmup_follows_the_hand_computed_trajectory() {
    check_trajectory(Adam::paper(), 0.0, false, 8);
}

#[test]
fn adam_first_step_moves_each_parameter_by_lr() {
    // At t = 1, m_hat = g and v_hat = g^2: the step is lr * g / (|g| + eps).
    let mut model = Affine::new([0.3, -0.2], 0.1);
    let before = model.values();
    let (grads, _) = tape_grads(&model);
    let g = hand_grads(before.map(|x| x as f64));
    let mut opt = Adam::paper();
    opt.step(&mut model, &grads, 0.01);
    for i in 0..3 {
        let moved = model.values()[i] as f64 - before[i] as f64;
        assert!(
            (moved + 0.01 * g[i].signum()).abs() < 1e-6,
            "component {i}: {moved}"
        );
    }
}

#[test]
fn adamw_follows_the_hand_computed_trajectory() {
    check_trajectory(Adam::adamw(0.5), 0.5, true, 6);
}

#[test]
fn adam_with_l2_penalty_follows_the_hand_computed_trajectory() {
    let config = AdamConfig {
        weight_decay: 0.5,
        ..AdamConfig::paper()
    };
    check_trajectory(Adam::new(config), 0.5, false, 6);
}

#[test]
fn adamw_decay_is_decoupled_from_the_gradient() {
    // With a zero gradient Adam's moments stay zero, so AdamW only shrinks
    // the weights: theta_t = theta_0 * (1 - lr * lambda)^t (in f32 here,
    // exactly the optimiser's arithmetic), while L2-coupled Adam, whose
    // penalty goes through the normalised update, moves them by about lr.
    let (lr, wd) = (0.1, 0.2);
    let zero_grads = |m: &Affine| {
        let tape = Tape::new();
        let w = tape.param(&m.w);
        let b = tape.param(&m.b);
        let loss = (w.sum_all() + b.sum_all()) * 0.0;
        tape.backward(loss).into_params()
    };
    let mut model = Affine::new([1.0, -2.0], 4.0);
    let mut opt = Adam::adamw(wd);
    let mut expect = model.values();
    for _ in 0..5 {
        let grads = zero_grads(&model);
        opt.step(&mut model, &grads, lr);
        let shrink = (1.0 - lr * wd) as f32;
        expect = expect.map(|x| x * shrink);
        assert_eq!(model.values(), expect);
    }

    let mut coupled = Affine::new([1.0, -2.0], 4.0);
    let mut opt = Adam::new(AdamConfig {
        weight_decay: wd,
        ..AdamConfig::paper()
    });
    let grads = zero_grads(&coupled);
    opt.step(&mut coupled, &grads, lr);
    // g = lambda * theta, so the first step is lr * sign(theta): scale-free.
    let moved: Vec<f32> = coupled
        .values()
        .iter()
        .zip([1.0f32, -2.0, 4.0])
        .map(|(a, b)| a - b)
        .collect();
    for (d, sign) in moved.iter().zip([-1.0f32, 1.0, -1.0]) {
        assert!((d - sign * lr as f32).abs() < 1e-6, "{moved:?}");
    }
}

#[test]
fn parameters_without_gradient_are_left_alone() {
    let mut model = Affine::new([0.3, -0.2], 0.1);
    let before_b = model.b.value.clone();
    // Only w takes part in this loss.
    let grads = {
        let tape = Tape::new();
        let w = tape.param(&model.w);
        tape.backward(w.sum_all()).into_params()
    };
    let mut opt = Adam::adamw(0.1);
    opt.step(&mut model, &grads, 0.01);
    assert!(model.b.value.bit_eq(&before_b));
    assert!(!opt.state().moments.contains_key("b"));
    assert_eq!(opt.state().moments["w"].step, 1);
}

/// A weight listed under two names (tied) is one parameter.
struct Tied {
    w: Param,
}

impl Module for Tied {
    fn visit(&mut self, v: &mut Visitor<'_>) {
        v.param("embed", &mut self.w);
        v.param("generator", &mut self.w);
    }
}

#[test]
fn a_tied_parameter_is_updated_once() {
    let mut tied = Tied {
        w: Param::new(Tensor::from_vec(vec![1.0], &[1])),
    };
    let grads = {
        let tape = Tape::new();
        let w = tape.param(&tied.w);
        tape.backward(w.sum_all()).into_params()
    };
    let mut opt = Adam::paper();
    opt.step(&mut tied, &grads, 0.1);
    assert!((tied.w.value.data()[0] - 0.9).abs() < 1e-6);
    let names: Vec<&String> = opt.state().moments.keys().collect();
    assert_eq!(names, ["embed"]);
}

/// Builds gradients with chosen values: d/dp sum(p * c) = c.
fn grads_of(params: &[(&Param, Vec<f32>)]) -> ParamGrads {
    let tape = Tape::new();
    let mut total = None;
    for (p, c) in params {
        let c = tape.constant(Tensor::from_vec(c.clone(), p.value.shape()));
        let term = (tape.param(p) * c).sum_all();
        total = Some(match total {
            None => term,
            Some(t) => t + term,
        });
    }
    tape.backward(total.unwrap()).into_params()
}

#[test]
fn clip_grad_norm_scales_to_the_global_norm() {
    let a = Param::new(Tensor::zeros(&[2]));
    let b = Param::new(Tensor::zeros(&[1, 1]));
    // Global norm sqrt(3^2 + 4^2 + 12^2) = 13.
    let mut grads = grads_of(&[(&a, vec![3.0, 4.0]), (&b, vec![12.0])]);
    let norm = clip_grad_norm(&mut grads, 6.5);
    assert_eq!(norm, 13.0);
    let coef = (6.5f64 / (13.0 + 1e-6)) as f32;
    assert_eq!(grads.get(&a).unwrap().data(), &[3.0 * coef, 4.0 * coef]);
    assert_eq!(grads.get(&b).unwrap().data(), &[12.0 * coef]);
    let after: f64 = [3.0 * coef, 4.0 * coef, 12.0 * coef]
        .iter()
        .map(|&x| (x as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!((after - 6.5).abs() < 1e-5, "{after}");
}

#[test]
fn clip_grad_norm_leaves_small_gradients_untouched() {
    let a = Param::new(Tensor::zeros(&[3]));
    let mut grads = grads_of(&[(&a, vec![0.1, -0.2, 0.2])]);
    let norm = clip_grad_norm(&mut grads, 1.0);
    assert!((norm - 0.3).abs() < 1e-7);
    assert_eq!(grads.get(&a).unwrap().data(), &[0.1, -0.2, 0.2]);
}

#[test]
fn clip_grad_norm_reports_a_non_finite_norm_without_touching_gradients() {
    let a = Param::new(Tensor::zeros(&[2]));
    let mut grads = grads_of(&[(&a, vec![f32::INFINITY, 1.0])]);
    let norm = clip_grad_norm(&mut grads, 1.0);
    assert!(norm.is_infinite());
    assert_eq!(grads.get(&a).unwrap().data(), &[f32::INFINITY, 1.0]);
}

#[test]
#[should_panic(expected = "max_norm")]
fn clip_grad_norm_rejects_a_non_positive_max_norm() {
    let mut grads = ParamGrads::default();
    clip_grad_norm(&mut grads, 0.0);
}

#[test]
fn optimiser_state_survives_a_serde_round_trip_and_resumes_identically() {
    let mut model = Affine::new([0.3, -0.2], 0.1);
    let mut opt = Adam::adamw(0.01);
    for t in 1..=3 {
        let (grads, _) = tape_grads(&model);
        opt.step(&mut model, &grads, 0.01 * t as f64);
    }
    let config = bincode::config::standard();
    let bytes = bincode::serde::encode_to_vec(&opt, config).unwrap();
    let (mut back, used): (Adam, usize) =
        bincode::serde::decode_from_slice(&bytes, config).unwrap();
    assert_eq!(used, bytes.len());
    assert_eq!(back, opt);
    let state: &AdamState = back.state();
    assert_eq!(state.step, 3);
    assert_eq!(state.moments.keys().collect::<Vec<_>>(), ["b", "w"]);

    // The state is keyed by name: it drives a fresh model (new ParamIds)
    // exactly as the original optimiser drives the original model.
    let mut twin = Affine::new(model.values()[..2].try_into().unwrap(), model.values()[2]);
    assert!(back.check_model(&mut twin).is_ok());
    for _ in 0..3 {
        let (g1, _) = tape_grads(&model);
        let (g2, _) = tape_grads(&twin);
        opt.step(&mut model, &g1, 0.02);
        back.step(&mut twin, &g2, 0.02);
        assert_eq!(
            model.values().map(f32::to_bits),
            twin.values().map(f32::to_bits)
        );
    }
}

#[test]
fn check_model_reports_state_of_another_model() {
    let mut model = Affine::new([0.3, -0.2], 0.1);
    let mut opt = Adam::paper();
    let (grads, _) = tape_grads(&model);
    opt.step(&mut model, &grads, 0.01);
    let mut other = Tied {
        w: Param::new(Tensor::zeros(&[1])),
    };
    let err = opt.check_model(&mut other).unwrap_err();
    assert!(err.contains("`b`"), "{err}");
}

#[test]
fn adam_config_validation() {
    assert!(AdamConfig::paper().validate().is_ok());
    assert!(AdamConfig::adamw(0.01).validate().is_ok());
    let p = AdamConfig::paper();
    for bad in [
        AdamConfig { beta1: 1.0, ..p },
        AdamConfig { beta2: -0.5, ..p },
        AdamConfig { eps: 0.0, ..p },
        AdamConfig { eps: f64::NAN, ..p },
        AdamConfig {
            weight_decay: -1.0,
            ..p
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
        assert!(Adam::try_new(bad).is_err());
    }
}

/// One parameter of 20,000 elements: above the 16,384-element chunk of
/// Adam's update, so the chunked parallel branch runs (every other test's
/// parameters are at most 8,192). Three steps of AdamW with weight decay,
/// with gradients that change sign and scale between steps, on 1, 2 and 3
/// threads, against the update written out in f64 (`hand_adam`'s formula,
/// element by element).
#[test]
fn adam_on_a_20000_element_parameter_follows_the_hand_computed_update() {
    const N: usize = 20_000;
    struct Big {
        w: Param,
    }
    impl Module for Big {
        fn visit(&mut self, v: &mut Visitor<'_>) {
            v.param("w", &mut self.w);
        }
    }
    let w0 = Tensor::<f32>::randn(&[N], 0.0, 1.0, 90);
    // Per-step gradients: each element different, the third step's
    // pattern unlike the first two.
    let grads: Vec<Vec<f32>> = (0..3u64)
        .map(|s| {
            Tensor::<f32>::randn(&[N], 0.0, 1.0 + s as f64, 91 + s)
                .data()
                .to_vec()
        })
        .collect();
    let (lr, wd) = (1e-2, 0.1);
    // The hand computation in f64, from the same f32 starting values.
    let (b1, b2, eps) = (0.9f64, 0.98f64, 1e-9);
    let mut p: Vec<f64> = w0.data().iter().map(|&x| f64::from(x)).collect();
    let (mut m, mut v) = (vec![0.0f64; N], vec![0.0f64; N]);
    for (t, g) in grads.iter().enumerate() {
        let t = t as i32 + 1;
        for i in 0..N {
            let gi = f64::from(g[i]);
            p[i] *= 1.0 - lr * wd; // decoupled decay
            m[i] = b1 * m[i] + (1.0 - b1) * gi;
            v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
            let (m_hat, v_hat) = (m[i] / (1.0 - b1.powi(t)), v[i] / (1.0 - b2.powi(t)));
            p[i] -= lr * m_hat / (v_hat.sqrt() + eps);
        }
    }
    for threads in [1, 2, 3] {
        let got = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| {
                let mut model = Big {
                    w: Param::new(w0.clone()),
                };
                let mut opt = Adam::adamw(wd);
                for g in &grads {
                    let grads = grads_of(&[(&model.w, g.clone())]);
                    opt.step(&mut model, &grads, lr);
                }
                model.w.value.data().to_vec()
            });
        // f32 arithmetic: each step moves an element by about lr (1e-2).
        let (worst, i) = got
            .iter()
            .zip(&p)
            .enumerate()
            .map(|(i, (&a, &b))| ((f64::from(a) - b).abs(), i))
            .fold((0.0, 0), |m, x| if x.0 > m.0 { x } else { m });
        assert!(
            worst <= 1e-5,
            "{threads} threads: element {i} is {} after 3 steps, the hand update gives {} (error {worst:e})",
            got[i],
            p[i]
        );
    }
}
