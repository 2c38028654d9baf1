//! Optimisers: Adam as in the paper (Kingma & Ba 2015, with the Transformer's
//! beta2 = 0.98 and eps = 1e-9), AdamW (decoupled weight decay, Loshchilov &
//! Hutter 2019), and gradient clipping by global norm.
//!
//! An optimiser walks any [`Module`] with its [`Visitor`], looks each
//! parameter's gradient up by [`ParamId`] in a [`ParamGrads`], and updates
//! `param.value` in place. Its state (first and second moments, step counts)
//! is keyed by the parameter's dotted *name*, not its `ParamId`: ids are
//! process-local, names are what a checkpoint can match in the next run.
//!
//! ```
//! use autograd::{Param, Tape, Tensor};
//! use transformer::{Module, Visitor};
//! use transformer::optim::Adam;
//!
//! struct Quad { w: Param }
//! impl Module for Quad {
//!     fn visit(&mut self, v: &mut Visitor<'_>) { v.param("w", &mut self.w); }
//! }
//! let mut model = Quad { w: Param::new(Tensor::from_vec(vec![1.0, -1.0], &[2])) };
//! let mut opt = Adam::paper();
//! for _ in 0..3 {
//!     let grads = {
//!         let tape = Tape::new();
//!         let w = tape.param(&model.w);
//!         tape.backward((w * w).sum_all()).into_params()
//!     }; // the tape is gone: the update below copies nothing
//!     opt.step(&mut model, &grads, 0.1);
//! }
//! // The first Adam step moves each weight by about lr, against its gradient.
//! assert!(model.w.value.data()[0] < 0.75 && model.w.value.data()[1] > -0.75);
//! assert_eq!(opt.steps(), 3);
//! ```

use std::collections::{BTreeMap, HashMap};

use autograd::{ParamGrads, ParamId};
use serde::{Deserialize, Serialize};

use crate::{Entry, Module, Visitor};

/// Hyper-parameters of [`Adam`] (and of AdamW, which is Adam with
/// `decoupled_weight_decay` on).
///
/// ```
/// use transformer::optim::AdamConfig;
/// let c = AdamConfig::paper();
/// assert_eq!((c.beta1, c.beta2, c.eps), (0.9, 0.98, 1e-9));
/// assert!(c.validate().is_ok());
/// assert!(AdamConfig { beta2: 1.0, ..c }.validate().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamConfig {
    /// Decay of the first moment (mean of gradients); the paper uses 0.9.
    pub beta1: f64,
    /// Decay of the second moment (mean of squared gradients); the paper
    /// uses 0.98 (Kingma & Ba's default is 0.999).
    pub beta2: f64,
    /// Added to `sqrt(v_hat)` in the denominator; the paper uses 1e-9.
    pub eps: f64,
    /// Weight-decay coefficient `lambda` (0 = none).
    pub weight_decay: f64,
    /// `false`: L2 regularisation folded into the gradient
    /// (`g += lambda * theta`, PyTorch `Adam(weight_decay=...)`).
    /// `true`: decoupled decay, `theta *= 1 - lr * lambda` before the Adam
    /// step (AdamW, Loshchilov & Hutter 2019; PyTorch `AdamW`).
    pub decoupled_weight_decay: bool,
}

impl AdamConfig {
    /// The paper's Adam: beta1 = 0.9, beta2 = 0.98, eps = 1e-9, no weight
    /// decay (Vaswani et al. 2017, section 5.3).
    ///
    /// ```
    /// use transformer::optim::AdamConfig;
    /// assert_eq!(AdamConfig::paper(), AdamConfig::default());
    /// assert_eq!(AdamConfig::paper().weight_decay, 0.0);
    /// ```
    pub fn paper() -> Self {
        AdamConfig {
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-9,
            weight_decay: 0.0,
            decoupled_weight_decay: false,
        }
    }

    /// AdamW: the paper's betas and eps with decoupled weight decay
    /// `weight_decay` (Loshchilov & Hutter 2019).
    ///
    /// ```
    /// use transformer::optim::AdamConfig;
    /// let c = AdamConfig::adamw(0.01);
    /// assert!(c.decoupled_weight_decay);
    /// assert_eq!(c.weight_decay, 0.01);
    /// ```
    pub fn adamw(weight_decay: f64) -> Self {
        AdamConfig {
            weight_decay,
            decoupled_weight_decay: true,
            ..Self::paper()
        }
    }

    /// Checks that the hyper-parameters make sense: `0 <= beta1, beta2 < 1`,
    /// `eps > 0`, `weight_decay >= 0`, all finite.
    ///
    /// ```
    /// use transformer::optim::AdamConfig;
    /// let bad = AdamConfig { eps: 0.0, ..AdamConfig::paper() };
    /// assert!(bad.validate().unwrap_err().contains("eps"));
    /// ```
    pub fn validate(&self) -> Result<(), String> {
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(format!(
                    "Adam: {name} = {b} must be in [0, 1) (the paper uses beta1 = 0.9, beta2 = 0.98)"
                ));
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(format!(
                "Adam: eps = {} must be positive and finite (the paper uses 1e-9)",
                self.eps
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(format!(
                "Adam: weight_decay = {} must be finite and >= 0",
                self.weight_decay
            ));
        }
        Ok(())
    }
}

impl Default for AdamConfig {
    /// [`AdamConfig::paper`].
    fn default() -> Self {
        Self::paper()
    }
}

/// Adam's running moments for one parameter tensor, flattened row-major.
///
/// ```
/// use transformer::optim::Moments;
/// let m = Moments::zeros(3);
/// assert_eq!((m.step, m.m.len(), m.v.len()), (0, 3, 3));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    /// Number of updates this parameter has received (its bias correction
    /// uses this count, as PyTorch's per-parameter `state['step']` does; it
    /// differs from [`AdamState::step`] only for parameters that sometimes
    /// get no gradient).
    pub step: u64,
    /// First moment `m` (exponential mean of gradients).
    pub m: Vec<f32>,
    /// Second moment `v` (exponential mean of squared gradients).
    pub v: Vec<f32>,
}

impl Moments {
    /// Zero moments for a tensor of `n` elements.
    ///
    /// ```
    /// use transformer::optim::Moments;
    /// assert!(Moments::zeros(2).m.iter().all(|&x| x == 0.0));
    /// ```
    pub fn zeros(n: usize) -> Self {
        Moments {
            step: 0,
            m: vec![0.0; n],
            v: vec![0.0; n],
        }
    }
}

/// Everything [`Adam`] learns while training: serialisable, deterministic
/// (a `BTreeMap` by parameter name), independent of `ParamId`s.
///
/// ```
/// use transformer::optim::AdamState;
/// let s = AdamState::default();
/// assert_eq!(s.step, 0);
/// assert!(s.moments.is_empty());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AdamState {
    /// Number of [`Adam::step`] calls.
    pub step: u64,
    /// Moments per parameter, by dotted name; created on a parameter's
    /// first gradient.
    pub moments: BTreeMap<String, Moments>,
}

/// Adam (Kingma & Ba 2015), in PyTorch's formulation, optionally with L2 or
/// decoupled (AdamW) weight decay.
///
/// One [`Adam::step`] for a parameter `theta` with gradient `g`, learning
/// rate `lr` and this parameter's update count `t` (from 1):
///
/// ```text
/// AdamW only:   theta <- theta * (1 - lr * lambda)           (Loshchilov & Hutter, alg. 2, line 12)
/// L2 only:      g     <- g + lambda * theta                  (PyTorch Adam weight_decay)
///               m     <- beta1 * m + (1 - beta1) * g         (Kingma & Ba, alg. 1)
///               v     <- beta2 * v + (1 - beta2) * g^2
///               m_hat  = m / (1 - beta1^t)                   (bias corrections)
///               v_hat  = v / (1 - beta2^t)
///               theta <- theta - lr * m_hat / (sqrt(v_hat) + eps)
/// ```
///
/// As in PyTorch (`torch.optim.Adam`, `_single_tensor_adam`) eps is added to
/// `sqrt(v_hat)`, not to `v_hat`, and the update is computed as
/// `theta -= (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)`;
/// the scalars are formed in f64, the per-element loop runs in f32.
///
/// A parameter absent from the gradients (it took no part in the loss) is
/// skipped: its moments, its step count and (like PyTorch) its weight decay
/// wait for its next gradient. A parameter visited twice (a tied weight,
/// listed under two names) is updated once, under its first name.
///
/// ```
/// use autograd::{Param, Tape, Tensor};
/// use transformer::{Module, Visitor};
/// use transformer::optim::Adam;
/// struct M { w: Param }
/// impl Module for M {
///     fn visit(&mut self, v: &mut Visitor<'_>) { v.param("w", &mut self.w); }
/// }
/// let mut m = M { w: Param::new(Tensor::from_vec(vec![0.5], &[1])) };
/// let tape = Tape::new();
/// let grads = tape.backward(tape.param(&m.w).sum_all()).into_params(); // g = 1
/// drop(tape);
/// let mut opt = Adam::paper();
/// opt.step(&mut m, &grads, 0.01);
/// // Step 1: m_hat = g, v_hat = g^2, so theta moves by lr * g / (|g| + eps).
/// assert!((m.w.value.data()[0] - 0.49).abs() < 1e-6);
/// assert_eq!(opt.state().moments["w"].step, 1);
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Adam {
    config: AdamConfig,
    state: AdamState,
    /// Scratch, reused across steps: parameters already updated in this
    /// step (id -> storage address), to update a tied weight once.
    #[serde(skip)]
    seen: HashMap<ParamId, usize>,
}

impl PartialEq for Adam {
    fn eq(&self, other: &Self) -> bool {
        self.config == other.config && self.state == other.state
    }
}

impl Adam {
    /// Adam with these hyper-parameters; panics if they are invalid (use
    /// [`Adam::try_new`] for a config from outside the program).
    ///
    /// ```
    /// use transformer::optim::{Adam, AdamConfig};
    /// let opt = Adam::new(AdamConfig { beta2: 0.999, ..AdamConfig::paper() });
    /// assert_eq!(opt.config().beta2, 0.999);
    /// ```
    pub fn new(config: AdamConfig) -> Self {
        match Self::try_new(config) {
            Ok(a) => a,
            Err(e) => panic!("{e}"),
        }
    }

    /// Adam with these hyper-parameters, or the reason they are invalid.
    ///
    /// ```
    /// use transformer::optim::{Adam, AdamConfig};
    /// assert!(Adam::try_new(AdamConfig { beta1: -0.1, ..AdamConfig::paper() }).is_err());
    /// ```
    pub fn try_new(config: AdamConfig) -> Result<Self, String> {
        config.validate()?;
        Ok(Adam {
            config,
            state: AdamState::default(),
            seen: HashMap::new(),
        })
    }

    /// The paper's Adam ([`AdamConfig::paper`]).
    ///
    /// ```
    /// use transformer::optim::Adam;
    /// assert_eq!(Adam::paper().config().eps, 1e-9);
    /// ```
    pub fn paper() -> Self {
        Self::new(AdamConfig::paper())
    }

    /// AdamW with decoupled weight decay `weight_decay`
    /// ([`AdamConfig::adamw`]).
    ///
    /// ```
    /// use transformer::optim::Adam;
    /// assert!(Adam::adamw(0.01).config().decoupled_weight_decay);
    /// ```
    pub fn adamw(weight_decay: f64) -> Self {
        Self::new(AdamConfig::adamw(weight_decay))
    }

    /// The hyper-parameters.
    ///
    /// ```
    /// use transformer::optim::Adam;
    /// assert_eq!(Adam::paper().config().beta1, 0.9);
    /// ```
    pub fn config(&self) -> &AdamConfig {
        &self.config
    }

    /// The learned state (moments and step counts).
    ///
    /// ```
    /// use transformer::optim::Adam;
    /// assert!(Adam::paper().state().moments.is_empty());
    /// ```
    pub fn state(&self) -> &AdamState {
        &self.state
    }

    /// Number of [`Adam::step`] calls so far (survives a checkpoint).
    ///
    /// ```
    /// use transformer::optim::Adam;
    /// assert_eq!(Adam::paper().steps(), 0);
    /// ```
    pub fn steps(&self) -> u64 {
        self.state.step
    }

    /// One update of every parameter of `model` that has a gradient in
    /// `grads`, with learning rate `lr` (see the type's docs for the
    /// formula). Drop the tape first, or each parameter's storage is copied
    /// before it is written (`Arc::make_mut`).
    ///
    /// Panics if a gradient's shape differs from its parameter's, or if the
    /// state holds moments of another size under a parameter's name (call
    /// [`Adam::check_model`] first on a state loaded from a file).
    ///
    /// ```
    /// use autograd::{Param, ParamGrads, Tensor};
    /// use transformer::{Module, Visitor};
    /// use transformer::optim::Adam;
    /// struct M { w: Param }
    /// impl Module for M {
    ///     fn visit(&mut self, v: &mut Visitor<'_>) { v.param("w", &mut self.w); }
    /// }
    /// let mut m = M { w: Param::new(Tensor::ones(&[2])) };
    /// let mut opt = Adam::paper();
    /// opt.step(&mut m, &ParamGrads::default(), 0.1); // no gradients: nothing moves
    /// assert_eq!(m.w.value.data(), &[1.0, 1.0]);
    /// assert_eq!(opt.steps(), 1);
    /// ```
    pub fn step(&mut self, model: &mut dyn Module<f32>, grads: &ParamGrads<f32>, lr: f64) {
        self.state.step += 1;
        let cfg = self.config;
        let moments = &mut self.state.moments;
        let seen = &mut self.seen;
        seen.clear();
        model.visit(&mut Visitor::new(&mut |name, entry| {
            let Entry::Param(p) = entry else { return };
            let Some(g) = grads.get_id(p.id()) else {
                return;
            };
            if let Some(&addr) = seen.get(&p.id()) {
                assert!(
                    addr == p.value.data().as_ptr() as usize,
                    "Adam: parameter `{name}` shares its ParamId with an earlier one but not its \
                     storage; a tied weight must be one Param (visit it under both names), not clones"
                );
                return;
            }
            assert!(
                g.shape() == p.value.shape(),
                "Adam: gradient of shape {:?} for parameter `{name}` of shape {:?}",
                g.shape(),
                p.value.shape()
            );
            let n = p.value.numel();
            if !moments.contains_key(name) {
                moments.insert(name.to_string(), Moments::zeros(n));
            }
            let Some(mom) = moments.get_mut(name) else {
                unreachable!()
            };
            assert!(
                mom.m.len() == n && mom.v.len() == n,
                "Adam: state for `{name}` has {} / {} moments but the parameter has {n} elements \
                 (the optimiser state belongs to another model)",
                mom.m.len(),
                mom.v.len()
            );
            mom.step += 1;
            let data = p.value.data_mut();
            update(&cfg, mom.step, lr, data, g.data(), &mut mom.m, &mut mom.v);
            seen.insert(p.id(), p.value.data().as_ptr() as usize);
        }));
    }

    /// Checks that this state fits `model`: every parameter with moments
    /// exists under that name with that many elements. Returns the first
    /// mismatch. (Parameters without moments are fine: they start at zero.)
    ///
    /// ```
    /// use autograd::{Param, Tensor};
    /// use transformer::{Module, Visitor};
    /// use transformer::optim::Adam;
    /// struct M { w: Param }
    /// impl Module for M {
    ///     fn visit(&mut self, v: &mut Visitor<'_>) { v.param("w", &mut self.w); }
    /// }
    /// assert!(Adam::paper().check_model(&mut M { w: Param::new(Tensor::ones(&[2])) }).is_ok());
    /// ```
    pub fn check_model(&self, model: &mut dyn Module<f32>) -> Result<(), String> {
        let mut sizes: BTreeMap<String, usize> = BTreeMap::new();
        model.visit(&mut Visitor::new(&mut |name, e| {
            if let Entry::Param(p) = e {
                sizes.insert(name.to_string(), p.value.numel());
            }
        }));
        for (name, mom) in &self.state.moments {
            let Some(&n) = sizes.get(name) else {
                return Err(format!(
                    "optimiser state has moments for `{name}`, which is not a parameter of the model"
                ));
            };
            if mom.m.len() != n || mom.v.len() != n {
                return Err(format!(
                    "optimiser state for `{name}` has {} first and {} second moments, \
                     but the parameter has {n} elements",
                    mom.m.len(),
                    mom.v.len()
                ));
            }
        }
        Ok(())
    }
}

/// The per-tensor Adam/AdamW update (formula on [`Adam`]); `t >= 1` is the
/// parameter's update count.
fn update(
    cfg: &AdamConfig,
    t: u64,
    lr: f64,
    theta: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) {
    let t = t.min(i32::MAX as u64) as i32;
    let bc1 = 1.0 - cfg.beta1.powi(t);
    let bc2_sqrt = (1.0 - cfg.beta2.powi(t)).sqrt();
    let step_size = (lr / bc1) as f32;
    let bc2_sqrt = bc2_sqrt as f32;
    let (b1, b2) = (cfg.beta1 as f32, cfg.beta2 as f32);
    let (c1, c2) = ((1.0 - cfg.beta1) as f32, (1.0 - cfg.beta2) as f32);
    let eps = cfg.eps as f32;
    let l2 = if cfg.decoupled_weight_decay {
        0.0
    } else {
        cfg.weight_decay as f32
    };
    let decay = if cfg.decoupled_weight_decay {
        (1.0 - lr * cfg.weight_decay) as f32
    } else {
        1.0
    };
    let body = |theta: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]| {
        for (((p, &g), m), v) in theta.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            let g = g + l2 * *p;
            *p *= decay;
            *m = b1 * *m + c1 * g;
            *v = b2 * *v + c2 * g * g;
            let denom = v.sqrt() / bc2_sqrt + eps;
            *p -= step_size * *m / denom;
        }
    };
    // Elementwise, so splitting into chunks (in parallel) cannot change a
    // result: bit-identical for any thread count.
    const CHUNK: usize = 1 << 14;
    if theta.len() <= CHUNK {
        body(theta, g, m, v);
    } else {
        use rayon::prelude::*;
        theta
            .par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .for_each(|(((p, g), m), v)| body(p, g, m, v));
    }
}

/// The global L2 norm of all gradients (summed in f64, in the gradients'
/// fixed order, so it is the same on any thread count): what clipping
/// compares with its threshold, and what a run logs every step.
///
/// ```
/// use autograd::{Param, Tape, Tensor};
/// let w = Param::new(Tensor::from_vec(vec![3.0f32, 4.0], &[2]));
/// let tape = Tape::new();
/// let y = (tape.param(&w) * tape.param(&w)).sum_all() * 0.5; // grad = w
/// let grads = tape.backward(y).into_params();
/// assert_eq!(transformer::optim::grad_norm(&grads), 5.0);
/// ```
pub fn grad_norm(grads: &ParamGrads<f32>) -> f64 {
    grads
        .iter()
        .map(|(_, g)| {
            g.data()
                .iter()
                .map(|&x| (x as f64) * (x as f64))
                .sum::<f64>()
        })
        .sum::<f64>()
        .sqrt()
}

/// Scales all gradients together so that their global L2 norm (over every
/// element of every tensor) is at most `max_norm`, and returns the norm
/// *before* clipping (as PyTorch's `clip_grad_norm_`).
///
/// The sum of squares runs in f64 in `ParamGrads`' order (by `ParamId`), so
/// the result does not depend on anything but the gradients. As in PyTorch,
/// the scale is `max_norm / (norm + 1e-6)` and is applied only when below 1.
/// A non-finite norm (a diverged step) is returned as is and the gradients are
/// left untouched, so the caller can report it or skip the step.
///
/// Panics if `max_norm` is not positive and finite.
///
/// ```
/// use autograd::{Param, Tape, Tensor};
/// use transformer::optim::clip_grad_norm;
/// let w = Param::new(Tensor::from_vec(vec![3.0, 4.0], &[2]));
/// let tape = Tape::new();
/// let x = tape.param(&w);
/// let mut grads = tape.backward((x * x).sum_all() * 0.5).into_params(); // g = w
/// let norm = clip_grad_norm(&mut grads, 1.0);
/// assert!((norm - 5.0).abs() < 1e-6);
/// let g = grads.get(&w).unwrap().data();
/// assert!((g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6);
/// ```
pub fn clip_grad_norm(grads: &mut ParamGrads<f32>, max_norm: f32) -> f32 {
    assert!(
        max_norm.is_finite() && max_norm > 0.0,
        "clip_grad_norm: max_norm = {max_norm} must be positive and finite"
    );
    let norm = grad_norm(grads);
    if !norm.is_finite() {
        return norm as f32;
    }
    let coef = max_norm as f64 / (norm + 1e-6);
    if coef < 1.0 {
        let coef = coef as f32;
        for (_, g) in grads.iter_mut() {
            for x in g.data_mut() {
                *x *= coef;
            }
        }
    }
    norm as f32
}
