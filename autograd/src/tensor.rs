//! `Tensor`: an n-dimensional, row-major, contiguous array with shared storage.
//!
//! Storage is an `Arc<Vec<T>>`: putting a tensor on the tape or cloning a
//! parameter copies a pointer, not the data, and an optimiser can update a
//! parameter in place once the tape is gone ([`Tensor::data_mut`] uses
//! `Arc::make_mut`, which copies only if the storage is still shared).

use std::fmt;
use std::sync::Arc;

use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use rand_distr::{Distribution, Normal, Uniform};

use crate::Float;

/// An n-dimensional row-major contiguous array of `T` (default `f32`).
///
/// ```
/// use autograd::Tensor;
/// let t = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
/// assert_eq!(t.shape(), &[2, 3]);
/// assert_eq!(t.at(&[1, 0]), 4.0);
/// assert_eq!(t.sum_all().item(), 21.0);
/// ```
#[derive(Clone)]
pub struct Tensor<T: Float = f32> {
    data: Arc<Vec<T>>,
    shape: Vec<usize>,
}

/// Number of elements of a shape (1 for the scalar shape `[]`), or `None`
/// when the product does not fit a `usize`. Sizes computed from outside data
/// (files, configs) go through this.
///
/// ```
/// assert_eq!(autograd::checked_numel(&[2, 3]), Some(6));
/// assert_eq!(autograd::checked_numel(&[1 << 59, 32]), None); // would wrap to 0
/// ```
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// Number of elements of a shape (1 for the scalar shape `[]`). Panics,
/// naming the shape, when the product overflows `usize` (unchecked, a shape
/// like `[2^59, 32]` would wrap to 0 elements in a release build).
pub fn numel(shape: &[usize]) -> usize {
    checked_numel(shape).unwrap_or_else(|| {
        panic!("numel: shape {shape:?} has more elements than a usize can count")
    })
}

/// Row-major strides of a contiguous tensor of this shape.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

impl<T: Float> Tensor<T> {
    /// Wraps `data` with `shape`; panics if the element count does not match
    /// (a programming error). Use [`Tensor::try_from_vec`] for outside data.
    pub fn from_vec(data: Vec<T>, shape: &[usize]) -> Self {
        match Self::try_from_vec(data, shape) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`Tensor::from_vec`] but returns an error message instead of panicking.
    pub fn try_from_vec(data: Vec<T>, shape: &[usize]) -> Result<Self, String> {
        let Some(n) = checked_numel(shape) else {
            return Err(format!(
                "Tensor::from_vec: shape {shape:?} has more elements than a usize can count"
            ));
        };
        if data.len() != n {
            return Err(format!(
                "Tensor::from_vec: {} elements do not fill shape {:?} ({} elements)",
                data.len(),
                shape,
                n
            ));
        }
        Ok(Tensor {
            data: Arc::new(data),
            shape: shape.to_vec(),
        })
    }

    /// A 0-dimensional tensor holding `v`.
    pub fn scalar(v: T) -> Self {
        Self::from_vec(vec![v], &[])
    }

    /// A tensor of `shape` with every element `v`.
    pub fn full(shape: &[usize], v: T) -> Self {
        Self::from_vec(vec![v; numel(shape)], shape)
    }

    /// A tensor of `shape` filled with zeros.
    pub fn zeros(shape: &[usize]) -> Self {
        Self::full(shape, T::ZERO)
    }

    /// A tensor of `shape` filled with ones.
    pub fn ones(shape: &[usize]) -> Self {
        Self::full(shape, T::ONE)
    }

    /// `[0, 1, ..., n-1]` as a 1-D tensor.
    pub fn arange(n: usize) -> Self {
        Self::from_vec((0..n).map(T::from_usize).collect(), &[n])
    }

    /// Seeded normal samples. The generator is Xoshiro256++, whose output is
    /// fixed by its definition, so the same seed gives the same tensor on
    /// every machine and every version of this crate.
    pub fn randn(shape: &[usize], mean: f64, std: f64, seed: u64) -> Self {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        Self::randn_with(shape, mean, std, &mut rng)
    }

    /// Normal samples from a caller's generator.
    pub fn randn_with<R: rand::Rng + ?Sized>(
        shape: &[usize],
        mean: f64,
        std: f64,
        rng: &mut R,
    ) -> Self {
        let dist =
            Normal::new(mean, std).unwrap_or_else(|e| panic!("Tensor::randn: bad std {std}: {e}"));
        Self::from_vec(
            (0..numel(shape))
                .map(|_| T::from_f64(dist.sample(rng)))
                .collect(),
            shape,
        )
    }

    /// Seeded uniform samples in `[lo, hi)`.
    pub fn rand_uniform(shape: &[usize], lo: f64, hi: f64, seed: u64) -> Self {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        Self::rand_uniform_with(shape, lo, hi, &mut rng)
    }

    /// Uniform samples in `[lo, hi)` from a caller's generator.
    pub fn rand_uniform_with<R: rand::Rng + ?Sized>(
        shape: &[usize],
        lo: f64,
        hi: f64,
        rng: &mut R,
    ) -> Self {
        let dist = Uniform::new(lo, hi)
            .unwrap_or_else(|e| panic!("Tensor::rand_uniform: bad range [{lo}, {hi}): {e}"));
        Self::from_vec(
            (0..numel(shape))
                .map(|_| T::from_f64(dist.sample(rng)))
                .collect(),
            shape,
        )
    }

    /// The shape (one size per axis; `[]` for a scalar).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of axes.
    pub fn ndim(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// Size of axis `axis`; negative axes count from the end.
    pub fn dim(&self, axis: isize) -> usize {
        self.shape[self.axis(axis, "dim")]
    }

    /// Resolves a possibly negative axis, panicking with the op's name.
    pub(crate) fn axis(&self, axis: isize, op: &str) -> usize {
        resolve_axis(axis, self.ndim(), op, &self.shape)
    }

    /// The elements, row-major.
    pub fn data(&self) -> &[T] {
        &self.data
    }

    /// Mutable access to the elements; copies the storage first only if it is
    /// shared (`Arc::make_mut`). This is how optimisers update parameters.
    pub fn data_mut(&mut self) -> &mut [T] {
        Arc::make_mut(&mut self.data).as_mut_slice()
    }

    /// The elements as a fresh `Vec`, row-major.
    pub fn to_vec(&self) -> Vec<T> {
        self.data.to_vec()
    }

    /// True if both tensors share one storage (no copy was made).
    pub fn shares_storage(&self, other: &Tensor<T>) -> bool {
        Arc::ptr_eq(&self.data, &other.data)
    }

    /// The element at a multi-index (for tests and inspection).
    pub fn at(&self, index: &[usize]) -> T {
        assert!(
            index.len() == self.ndim() && index.iter().zip(&self.shape).all(|(i, n)| i < n),
            "Tensor::at: index {index:?} out of bounds for shape {:?}",
            self.shape
        );
        let off: usize = index
            .iter()
            .zip(strides(&self.shape))
            .map(|(i, s)| i * s)
            .sum();
        self.data[off]
    }

    /// The value of a one-element tensor.
    pub fn item(&self) -> T {
        assert!(
            self.numel() == 1,
            "Tensor::item: shape {:?} has {} elements, not 1",
            self.shape,
            self.numel()
        );
        self.data[0]
    }

    /// Same data, new shape (no copy); panics if the element counts differ.
    pub fn reshape(&self, shape: &[usize]) -> Self {
        assert!(
            numel(shape) == self.numel(),
            "reshape: cannot reshape {:?} to {:?}",
            self.shape,
            shape
        );
        Tensor {
            data: self.data.clone(),
            shape: shape.to_vec(),
        }
    }

    /// Converts the element type (f32 <-> f64), element by element.
    pub fn cast<U: Float>(&self) -> Tensor<U> {
        Tensor::from_vec(
            self.data.iter().map(|x| U::from_f64(x.to_f64())).collect(),
            &self.shape,
        )
    }

    /// Largest absolute elementwise difference; panics if the shapes differ.
    pub fn max_abs_diff(&self, other: &Tensor<T>) -> f64 {
        assert!(
            self.shape == other.shape,
            "max_abs_diff: shapes {:?} and {:?} differ",
            self.shape,
            other.shape
        );
        self.data
            .iter()
            .zip(other.data.iter())
            .map(|(a, b)| (a.to_f64() - b.to_f64()).abs())
            .fold(0.0, f64::max)
    }

    /// Same shape and every element within `atol + rtol * |other|`.
    pub fn allclose(&self, other: &Tensor<T>, rtol: f64, atol: f64) -> bool {
        self.shape == other.shape
            && self
                .data
                .iter()
                .zip(other.data.iter())
                .all(|(a, b)| (a.to_f64() - b.to_f64()).abs() <= atol + rtol * b.to_f64().abs())
    }

    /// True if every element is finite (no NaN or Inf).
    pub fn all_finite(&self) -> bool {
        self.data.iter().all(|x| x.is_finite())
    }

    /// Bitwise equality of shape and elements (for determinism tests).
    pub fn bit_eq(&self, other: &Tensor<T>) -> bool {
        self.shape == other.shape
            && self
                .data
                .iter()
                .zip(other.data.iter())
                .all(|(a, b)| a.to_f64().to_bits() == b.to_f64().to_bits())
    }
}

pub(crate) fn resolve_axis(axis: isize, ndim: usize, op: &str, shape: &[usize]) -> usize {
    let a = if axis < 0 { axis + ndim as isize } else { axis };
    if a < 0 || a as usize >= ndim {
        panic!("{op}: axis {axis} out of range for shape {shape:?}");
    }
    a as usize
}

impl<T: Float> fmt::Debug for Tensor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOW: usize = 8;
        write!(f, "Tensor<{}>{:?} [", T::NAME, self.shape)?;
        for (i, x) in self.data.iter().take(SHOW).enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{x}")?;
        }
        if self.numel() > SHOW {
            write!(f, ", ... ({} more)", self.numel() - SHOW)?;
        }
        write!(f, "]")
    }
}

impl<T: Float> PartialEq for Tensor<T> {
    fn eq(&self, other: &Self) -> bool {
        self.shape == other.shape && self.data == other.data
    }
}
