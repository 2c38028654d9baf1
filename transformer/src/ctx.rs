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

/// Tape + mode + RNG, handed to every layer's forward.
///
/// ```
/// use autograd::{Tape, Tensor};
/// use transformer::Ctx;
/// let tape: Tape = Tape::new();
/// let ctx = Ctx::new(&tape, true, 7);
/// let x = tape.leaf(Tensor::ones(&[2, 3]));
/// let y = ctx.dropout(x, 0.5); // training: some entries zeroed, rest doubled
/// assert!(y.value().data().iter().all(|&v| v == 0.0 || v == 2.0));
/// ```
pub struct Ctx<'t, T: Float = f32> {
    pub tape: &'t Tape<T>,
    pub train: bool,
    rng: RefCell<Rng>,
    /// Attention weights handed back by the layers, when asked for.
    attention: RefCell<Option<NamedTensors<T>>>,
}

impl<'t, T: Float> Ctx<'t, T> {
    pub fn new(tape: &'t Tape<T>, train: bool, seed: u64) -> Self {
        Self::with_rng(tape, train, rng(seed))
    }

    pub fn with_rng(tape: &'t Tape<T>, train: bool, rng: Rng) -> Self {
        Ctx {
            tape,
            train,
            rng: RefCell::new(rng),
            attention: RefCell::new(None),
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

    /// Hands the generator back (to keep its state across steps).
    pub fn into_rng(self) -> Rng {
        self.rng.into_inner()
    }
}
