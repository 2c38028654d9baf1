//! `PositionalEncoding`: the paper's sinusoids, a learned table, or nothing.

use autograd::{Float, Param, Tensor, Var};

use crate::{Ctx, Module, PositionalBlock, Rng, Visitor};

/// Which table [`PositionalEncoding::new`] builds: the registry's
/// `sinusoidal`, `learned` and `none` positional blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PositionalKind {
    /// The paper's fixed sin/cos table.
    Sinusoidal,
    /// A trained (max_len, D) table.
    Learned,
    /// None: the model sees a bag of tokens (an ablation).
    None,
}

/// The sinusoidal table of the paper (section 3.5), shape (max_len, D):
/// `PE[pos, 2i] = sin(pos / 10000^(2i/D))`, `PE[pos, 2i+1] = cos(pos / 10000^(2i/D))`.
/// Computed in f64, then rounded once to `T`.
///
/// ```
/// let pe = transformer::sinusoidal_table::<f64>(4, 6);
/// assert_eq!(pe.at(&[0, 0]), 0.0); // sin 0
/// assert_eq!(pe.at(&[0, 1]), 1.0); // cos 0
/// assert!((pe.at(&[1, 2]) - (1.0f64 / 10000f64.powf(2.0 / 6.0)).sin()).abs() < 1e-15);
/// ```
pub fn sinusoidal_table<T: Float>(max_len: usize, d: usize) -> Tensor<T> {
    let mut data = vec![T::ZERO; max_len * d];
    for pos in 0..max_len {
        for i in 0..d.div_ceil(2) {
            let angle = pos as f64 / 10000f64.powf((2 * i) as f64 / d as f64);
            data[pos * d + 2 * i] = T::from_f64(angle.sin());
            if 2 * i + 1 < d {
                data[pos * d + 2 * i + 1] = T::from_f64(angle.cos());
            }
        }
    }
    Tensor::from_vec(data, &[max_len, d])
}

/// Adds positional information to (B, T, D) embeddings.
pub enum PositionalEncoding<T: Float = f32> {
    /// Fixed table (max_len, D): a constant, neither trained nor saved.
    Sinusoidal(Tensor<T>),
    /// Trained table (max_len, D), initialised N(0, 1) like the scaled
    /// embeddings it is added to.
    Learned(Param<T>),
    /// No positions.
    None,
}

impl<T: Float> PositionalEncoding<T> {
    /// The table of `kind` for sequences up to `max_len`, width `d`
    /// (a learned table draws from `rng`).
    pub fn new(kind: PositionalKind, max_len: usize, d: usize, rng: &mut Rng) -> Self {
        match kind {
            PositionalKind::Sinusoidal => Self::Sinusoidal(sinusoidal_table(max_len, d)),
            PositionalKind::Learned => {
                Self::Learned(Param::new(Tensor::randn_with(&[max_len, d], 0.0, 1.0, rng)))
            }
            PositionalKind::None => Self::None,
        }
    }

    /// (B, T, D) -> (B, T, D) + `PE[:T]`. Panics if T exceeds the table.
    pub fn forward<'t>(&self, ctx: &Ctx<'t, T>, x: Var<'t, T>) -> Var<'t, T> {
        self.forward_at(ctx, x, 0)
    }

    /// (B, T, D) holding positions `start..start + T` -> (B, T, D) +
    /// `PE[start..start + T]` (incremental decoding feeds one position at
    /// a time). Panics if `start + T` exceeds the table.
    pub fn forward_at<'t>(&self, ctx: &Ctx<'t, T>, x: Var<'t, T>, start: usize) -> Var<'t, T> {
        let t = x.dim(1);
        let table = match self {
            Self::Sinusoidal(pe) => {
                assert_table(pe, start + t);
                ctx.tape.constant(pe.narrow(0, start, t))
            }
            Self::Learned(p) => {
                assert_table(&p.value, start + t);
                ctx.param(p).narrow(0, start, t)
            }
            Self::None => return x,
        };
        x + table // (B, T, D) + (T, D)
    }
}

fn assert_table<T: Float>(pe: &Tensor<T>, t: usize) {
    assert!(
        t <= pe.shape()[0],
        "positional: sequence length {t} exceeds max_len {} (raise ModelConfig::max_len)",
        pe.shape()[0]
    );
}

impl<T: Float> Module<T> for PositionalEncoding<T> {
    fn visit(&mut self, v: &mut Visitor<'_, T>) {
        if let Self::Learned(p) = self {
            v.param("table", p);
        }
    }
}

impl<T: Float> PositionalBlock<T> for PositionalEncoding<T> {
    fn forward<'t>(&self, ctx: &Ctx<'t, T>, x: Var<'t, T>) -> Var<'t, T> {
        PositionalEncoding::forward(self, ctx, x)
    }

    fn forward_at<'t>(&self, ctx: &Ctx<'t, T>, x: Var<'t, T>, start: usize) -> Option<Var<'t, T>> {
        Some(PositionalEncoding::forward_at(self, ctx, x, start))
    }
}
