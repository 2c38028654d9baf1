//! The small context a forward pass carries: the tape, train/eval mode and
//! the random generator (for dropout).

use std::cell::RefCell;

use autograd::{Float, Param, Tape, Tensor, Var};
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;

/// The generator used everywhere in this crate: Xoshiro256++ is defined by
/// its algorithm (output fixed across versions and machines) and serialisable
/// (checkpoints keep its state).
pub type Rng = Xoshiro256PlusPlus;

/// A seeded [`Rng`].
pub fn rng(seed: u64) -> Rng {
    Rng::seed_from_u64(seed)
}

/// Tensors with their names (recorded attention weights).
pub type NamedTensors<T> = Vec<(String, Tensor<T>)>;

/// Whether a forward pass trains (dropout active, BatchNorm uses and
/// updates batch statistics) or evaluates (dropout off, running statistics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Training.
    Train,
    /// Evaluation and decoding.
    Eval,
}

/// Tape + mode + RNG, handed to every layer's forward.
///
/// ```
/// use autograd::{Tape, Tensor};
/// use transformer::{Ctx, Mode};
/// let tape: Tape = Tape::new();
/// let ctx = Ctx::train(&tape, 7); // or Ctx::new(&tape, Mode::Train, 7)
/// let x = tape.leaf(Tensor::ones(&[2, 3]));
/// let y = ctx.dropout(x, 0.5); // training: some entries zeroed, rest doubled
/// assert!(y.value().data().iter().all(|&v| v == 0.0 || v == 2.0));
/// ```
pub struct Ctx<'t, T: Float = f32> {
    /// The tape the forward pass records on.
    pub tape: &'t Tape<T>,
    /// True in [`Mode::Train`].
    pub train: bool,
    rng: RefCell<Rng>,
    /// Attention weights handed back by the layers, when asked for.
    attention: RefCell<Option<NamedTensors<T>>>,
    /// Each stack's input and layer outputs, when asked for.
    hidden: RefCell<Option<NamedTensors<T>>>,
}

impl<'t, T: Float> Ctx<'t, T> {
    /// A context in `mode` whose dropout draws from a generator seeded
    /// with `seed`.
    pub fn new(tape: &'t Tape<T>, mode: Mode, seed: u64) -> Self {
        Self::with_rng(tape, mode, rng(seed))
    }

    /// Training mode, dropout seeded with `seed`.
    pub fn train(tape: &'t Tape<T>, seed: u64) -> Self {
        Self::new(tape, Mode::Train, seed)
    }

    /// Evaluation mode (no dropout, so no seed).
    pub fn eval(tape: &'t Tape<T>) -> Self {
        Self::new(tape, Mode::Eval, 0)
    }

    /// A context in `mode` drawing from `rng` (a trainer carries its
    /// generator from step to step this way).
    pub fn with_rng(tape: &'t Tape<T>, mode: Mode, rng: Rng) -> Self {
        Ctx {
            tape,
            train: mode == Mode::Train,
            rng: RefCell::new(rng),
            attention: RefCell::new(None),
            hidden: RefCell::new(None),
        }
    }

    /// The parameter as a leaf of this tape.
    pub fn param(&self, p: &Param<T>) -> Var<'t, T> {
        self.tape.param(p)
    }

    /// Inverted dropout in training mode, identity in eval mode.
    pub fn dropout(&self, x: Var<'t, T>, p: f64) -> Var<'t, T> {
        x.dropout(p, self.train, &mut *self.rng.borrow_mut())
    }

    /// The generator, for layers that need randomness of their own.
    pub fn rng(&self) -> std::cell::RefMut<'_, Rng> {
        self.rng.borrow_mut()
    }

    /// From now on, attention layers of the model record their weights
    /// (B, H, Tq, Tk) here, named like `decoder.layers.0.cross_attn`.
    pub fn keep_attention(&self) {
        self.attention.borrow_mut().get_or_insert_with(Vec::new);
    }

    /// True once [`Ctx::keep_attention`] was called.
    pub fn keeps_attention(&self) -> bool {
        self.attention.borrow().is_some()
    }

    /// Records attention weights if [`Ctx::keep_attention`] was called.
    pub fn record_attention(&self, name: impl FnOnce() -> String, weights: Var<'t, T>) {
        if let Some(list) = self.attention.borrow_mut().as_mut() {
            list.push((name(), weights.value()));
        }
    }

    /// The recorded attention weights, in forward order.
    pub fn take_attention(&self) -> Vec<(String, Tensor<T>)> {
        self.attention.borrow_mut().take().unwrap_or_default()
    }

    /// From now on, the encoder and decoder stacks record their input
    /// (`encoder.input`) and every layer's output (`encoder.layers.0`, ...),
    /// each (B, T, D), before the final norm: what telemetry such as the
    /// rank-collapse measure of Dong et al. (2021) reads.
    ///
    /// ```
    /// use autograd::Tape;
    /// use transformer::{Ctx, ModelConfig, TokenBatch, Transformer};
    /// let model = Transformer::<f64>::new(&ModelConfig::tiny(8, 8), 0).unwrap();
    /// let tape: Tape<f64> = Tape::new();
    /// let ctx = Ctx::eval(&tape);
    /// ctx.keep_hidden();
    /// let src = TokenBatch::padded(&[vec![3, 4, 5]], 0);
    /// let tgt = TokenBatch::padded(&[vec![1, 3]], 0);
    /// model.forward(&ctx, &src, &tgt);
    /// let names: Vec<String> = ctx.take_hidden().into_iter().map(|(n, _)| n).collect();
    /// assert_eq!(names[0], "encoder.input");
    /// assert!(names.contains(&"decoder.layers.0".to_string()));
    /// ```
    pub fn keep_hidden(&self) {
        self.hidden.borrow_mut().get_or_insert_with(Vec::new);
    }

    /// Records a hidden state if [`Ctx::keep_hidden`] was called.
    pub fn record_hidden(&self, name: impl FnOnce() -> String, x: Var<'t, T>) {
        if let Some(list) = self.hidden.borrow_mut().as_mut() {
            list.push((name(), x.value()));
        }
    }

    /// The recorded hidden states, in forward order.
    pub fn take_hidden(&self) -> NamedTensors<T> {
        self.hidden.borrow_mut().take().unwrap_or_default()
    }

    /// Hands the generator back (to keep its state across steps).
    pub fn into_rng(self) -> Rng {
        self.rng.into_inner()
    }
}
