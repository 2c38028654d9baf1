//! Elementwise ops: arithmetic with NumPy broadcasting, scalar arithmetic and
//! pointwise functions. The adjoint of broadcasting is a sum over the
//! broadcast axes ([`Tensor::sum_to_shape`]).

use std::ops::{Add, Div, Mul, Neg, Sub};

use crate::{Float, Tensor, Var};

/// The op names of this family (see [`crate::ops::all_ops`]).
pub const OPS: &[&str] = &[
    "add",
    "sub",
    "mul",
    "div",
    "neg",
    "add_scalar",
    "mul_scalar",
    "pow_scalar",
    "exp",
    "log",
    "sqrt",
    "relu",
    "gelu",
    "tanh",
    "sigmoid",
];

/// sqrt(2 / pi), the constant of GELU's tanh approximation (Hendrycks & Gimpel 2016).
const GELU_C: f64 = 0.797_884_560_802_865_4;
const GELU_A: f64 = 0.044_715;

// `add`, `sub`, `mul`, `div` and `neg` are methods on purpose (chaining
// reads well: `x.add(b).relu()`); the `std::ops` traits are implemented
// below and call them.
#[allow(clippy::should_implement_trait)]
impl<'t, T: Float> Var<'t, T> {
    /// Records a pointwise op `y = f(x)` named `op`, whose derivative is
    /// `df(x, y)` (given both the input and the output, so an op like `exp`
    /// or `tanh` can reuse `y`). Backward is `dx = g * df(x, y)`, elementwise.
    /// This is how the built-in unary ops are written, and the way to add
    /// one from outside the crate: a method on [`Var`] through an extension
    /// trait. `op` names the node on the tape ([`Var::op`], anomaly reports,
    /// coverage checks). For ops with several inputs, see [`Tape::record`].
    ///
    /// [`Tape::record`]: crate::Tape::record
    ///
    /// ```
    /// use autograd::{Float, Tape, Tensor, Var};
    ///
    /// /// softplus(x) = ln(1 + e^x), with derivative sigmoid(x).
    /// trait Softplus {
    ///     fn softplus(self) -> Self;
    /// }
    ///
    /// impl<'t, T: Float> Softplus for Var<'t, T> {
    ///     fn softplus(self) -> Self {
    ///         self.pointwise(
    ///             "softplus",
    ///             // max(x, 0) + ln(1 + e^-|x|): no overflow for large x,
    ///             // no loss of the tiny value for very negative x.
    ///             |x| x.max(T::ZERO) + (-x.abs()).exp().ln_1p(),
    ///             |x, _| T::ONE / (T::ONE + (-x).exp()),
    ///         )
    ///     }
    /// }
    ///
    /// let tape = Tape::<f64>::new();
    /// let x = tape.leaf(Tensor::from_vec(vec![0.0, -50.0], &[2]));
    /// let y = x.softplus();
    /// assert_eq!(y.op(), "softplus");
    /// assert_eq!(y.value().data()[0], 2f64.ln());
    /// assert!(y.value().data()[1] > 1.9e-22); // not rounded to 0
    /// let g = tape.backward(y.sum_all());
    /// assert_eq!(g.wrt(x).data()[0], 0.5); // sigmoid(0)
    /// ```
    pub fn pointwise(
        self,
        op: &'static str,
        f: impl Fn(T) -> T + Sync + Send,
        df: impl Fn(T, T) -> T + Sync + Send + 'static,
    ) -> Var<'t, T> {
        let x = self.value();
        let y = x.map(f);
        let saved = y.clone();
        self.tape().record(op, y, &[self], move |g, _| {
            vec![Some(g.map3(&x, &saved, op, |g, x, y| g * df(x, y)))]
        })
    }

    /// `a + b` with broadcasting.
    pub fn add(self, other: Var<'t, T>) -> Var<'t, T> {
        let (a, b) = (self.value(), other.value());
        let out = a.zip_map(&b, "add", |x, y| x + y);
        let (sa, sb) = (a.shape().to_vec(), b.shape().to_vec());
        self.tape()
            .record("add", out, &[self, other], move |g, need| {
                vec![
                    need[0].then(|| g.sum_to_shape(&sa)),
                    need[1].then(|| g.sum_to_shape(&sb)),
                ]
            })
    }

    /// `a - b` with broadcasting.
    pub fn sub(self, other: Var<'t, T>) -> Var<'t, T> {
        let (a, b) = (self.value(), other.value());
        let out = a.zip_map(&b, "sub", |x, y| x - y);
        let (sa, sb) = (a.shape().to_vec(), b.shape().to_vec());
        self.tape()
            .record("sub", out, &[self, other], move |g, need| {
                vec![
                    need[0].then(|| g.sum_to_shape(&sa)),
                    need[1].then(|| g.map(|v| -v).sum_to_shape(&sb)),
                ]
            })
    }

    /// `a * b` elementwise with broadcasting.
    pub fn mul(self, other: Var<'t, T>) -> Var<'t, T> {
        let (a, b) = (self.value(), other.value());
        let out = a.zip_map(&b, "mul", |x, y| x * y);
        self.tape()
            .record("mul", out, &[self, other], move |g, need| {
                vec![
                    need[0].then(|| g.zip_map(&b, "mul", |g, y| g * y).sum_to_shape(a.shape())),
                    need[1].then(|| g.zip_map(&a, "mul", |g, x| g * x).sum_to_shape(b.shape())),
                ]
            })
    }

    /// `a / b` elementwise with broadcasting.
    pub fn div(self, other: Var<'t, T>) -> Var<'t, T> {
        let (a, b) = (self.value(), other.value());
        let out = a.zip_map(&b, "div", |x, y| x / y);
        self.tape()
            .record("div", out, &[self, other], move |g, need| {
                vec![
                    need[0].then(|| g.zip_map(&b, "div", |g, y| g / y).sum_to_shape(a.shape())),
                    need[1].then(|| {
                        g.zip_map(&a, "div", |g, x| g * x)
                            .zip_map(&b, "div", |gx, y| -gx / (y * y))
                            .sum_to_shape(b.shape())
                    }),
                ]
            })
    }

    /// `-x`.
    pub fn neg(self) -> Var<'t, T> {
        let out = self.value().map(|x| -x);
        self.tape()
            .record("neg", out, &[self], |g, _| vec![Some(g.map(|v| -v))])
    }

    /// `x + c`.
    pub fn add_scalar(self, c: T) -> Var<'t, T> {
        let out = self.value().map(|x| x + c);
        self.tape()
            .record("add_scalar", out, &[self], |g, _| vec![Some(g.clone())])
    }

    /// `x * c`.
    pub fn mul_scalar(self, c: T) -> Var<'t, T> {
        let out = self.value().map(|x| x * c);
        self.tape().record("mul_scalar", out, &[self], move |g, _| {
            vec![Some(g.map(|v| v * c))]
        })
    }

    /// `x^p` for a constant exponent `p` (x > 0 unless p is an integer).
    pub fn pow_scalar(self, p: T) -> Var<'t, T> {
        self.pointwise(
            "pow_scalar",
            move |x| x.powf(p),
            move |x, _| p * x.powf(p - T::ONE),
        )
    }

    /// `e^x`.
    pub fn exp(self) -> Var<'t, T> {
        self.pointwise("exp", |x| x.exp(), |_, y| y)
    }

    /// Natural logarithm.
    pub fn log(self) -> Var<'t, T> {
        self.pointwise("log", |x| x.ln(), |x, _| T::ONE / x)
    }

    /// Square root (x > 0).
    pub fn sqrt(self) -> Var<'t, T> {
        self.pointwise("sqrt", |x| x.sqrt(), |_, y| T::from_f64(0.5) / y)
    }

    /// `max(x, 0)`; the derivative at 0 is taken as 0.
    pub fn relu(self) -> Var<'t, T> {
        self.pointwise(
            "relu",
            |x| if x > T::ZERO { x } else { T::ZERO },
            |x, _| if x > T::ZERO { T::ONE } else { T::ZERO },
        )
    }

    /// GELU, tanh approximation: `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
    pub fn gelu(self) -> Var<'t, T> {
        let (c, a) = (T::from_f64(GELU_C), T::from_f64(GELU_A));
        let half = T::from_f64(0.5);
        self.pointwise(
            "gelu",
            move |x| half * x * (T::ONE + (c * (x + a * x * x * x)).tanh()),
            move |x, _| {
                let t = (c * (x + a * x * x * x)).tanh();
                let du = c * (T::ONE + T::from_f64(3.0) * a * x * x);
                half * (T::ONE + t) + half * x * (T::ONE - t * t) * du
            },
        )
    }

    /// Hyperbolic tangent.
    pub fn tanh(self) -> Var<'t, T> {
        self.pointwise("tanh", |x| x.tanh(), |_, y| T::ONE - y * y)
    }

    /// `1 / (1 + e^-x)`, computed without overflow for large |x|.
    pub fn sigmoid(self) -> Var<'t, T> {
        self.pointwise(
            "sigmoid",
            |x| {
                if x >= T::ZERO {
                    T::ONE / (T::ONE + (-x).exp())
                } else {
                    let e = x.exp();
                    e / (T::ONE + e)
                }
            },
            |_, y| y * (T::ONE - y),
        )
    }
}

// `std::ops` overloads so model code reads like maths.
impl<'t, T: Float> Add for Var<'t, T> {
    type Output = Var<'t, T>;
    fn add(self, rhs: Self) -> Self::Output {
        Var::add(self, rhs)
    }
}
impl<'t, T: Float> Sub for Var<'t, T> {
    type Output = Var<'t, T>;
    fn sub(self, rhs: Self) -> Self::Output {
        Var::sub(self, rhs)
    }
}
impl<'t, T: Float> Mul for Var<'t, T> {
    type Output = Var<'t, T>;
    fn mul(self, rhs: Self) -> Self::Output {
        Var::mul(self, rhs)
    }
}
impl<'t, T: Float> Div for Var<'t, T> {
    type Output = Var<'t, T>;
    fn div(self, rhs: Self) -> Self::Output {
        Var::div(self, rhs)
    }
}
impl<'t, T: Float> Neg for Var<'t, T> {
    type Output = Var<'t, T>;
    fn neg(self) -> Self::Output {
        Var::neg(self)
    }
}
impl<'t, T: Float> Add<T> for Var<'t, T> {
    type Output = Var<'t, T>;
    fn add(self, c: T) -> Self::Output {
        self.add_scalar(c)
    }
}
impl<'t, T: Float> Sub<T> for Var<'t, T> {
    type Output = Var<'t, T>;
    fn sub(self, c: T) -> Self::Output {
        self.add_scalar(-c)
    }
}
impl<'t, T: Float> Mul<T> for Var<'t, T> {
    type Output = Var<'t, T>;
    fn mul(self, c: T) -> Self::Output {
        self.mul_scalar(c)
    }
}
impl<'t, T: Float> Div<T> for Var<'t, T> {
    type Output = Var<'t, T>;
    fn div(self, c: T) -> Self::Output {
        self.mul_scalar(T::ONE / c)
    }
}

macro_rules! scalar_lhs {
    ($t:ty) => {
        impl<'t> Add<Var<'t, $t>> for $t {
            type Output = Var<'t, $t>;
            fn add(self, v: Var<'t, $t>) -> Self::Output {
                v.add_scalar(self)
            }
        }
        impl<'t> Sub<Var<'t, $t>> for $t {
            type Output = Var<'t, $t>;
            fn sub(self, v: Var<'t, $t>) -> Self::Output {
                v.neg().add_scalar(self)
            }
        }
        impl<'t> Mul<Var<'t, $t>> for $t {
            type Output = Var<'t, $t>;
            fn mul(self, v: Var<'t, $t>) -> Self::Output {
                v.mul_scalar(self)
            }
        }
        impl<'t> Div<Var<'t, $t>> for $t {
            type Output = Var<'t, $t>;
            fn div(self, v: Var<'t, $t>) -> Self::Output {
                v.pow_scalar(-1.0).mul_scalar(self)
            }
        }
    };
}
scalar_lhs!(f32);
scalar_lhs!(f64);

impl<T: Float> Tensor<T> {
    /// `self * c`, elementwise (no tape).
    pub fn scale(&self, c: T) -> Tensor<T> {
        self.map(|x| x * c)
    }
}

/// The gradient property entries of this family (feature `proptest`): run
/// by the test suite through [`crate::ops::all_cases`].
#[cfg(feature = "proptest")]
#[rustfmt::skip]
pub fn cases() -> Vec<crate::check::cases::GradCase> {
    use crate::check::cases::{GradCase, Values::*, binary, unary, with_scalar, UNIT, CASES, MORE};
    let e = GradCase::new;
    let positive = Uniform(0.2, 3.0);
    let wide = Uniform(-3.0, 3.0);
    vec![
        // Elementwise, binary (broadcasting); division away from its pole.
        e("add", "add", MORE, binary("add", |a, b| a + b, UNIT)),
        e("sub", "sub", MORE, binary("sub", |a, b| a - b, UNIT)),
        e("mul", "mul", MORE, binary("mul", |a, b| a * b, UNIT)),
        e("div", "div", MORE, binary("div", |a, b| a / b, AwayFromZero(0.5, 2.0))),
        // Elementwise, unary: log, sqrt and pow on positive inputs, relu
        // away from its kink.
        e("neg", "neg", CASES, unary("neg", |x| -x, UNIT, 4, 3)),
        e("add_scalar", "add_scalar", CASES, with_scalar("add_scalar", |x, c| x + c, UNIT, -3.0..=3.0)),
        e("mul_scalar", "mul_scalar", CASES, with_scalar("mul_scalar", |x, c| x * c, UNIT, -3.0..=3.0)),
        e("pow_scalar", "pow_scalar", CASES, with_scalar("pow_scalar", |x, p| x.pow_scalar(p), Uniform(0.5, 2.0), -2.5..=2.5)),
        e("exp", "exp", CASES, unary("exp", |x| x.exp(), UNIT, 4, 3)),
        e("log", "log", CASES, unary("log", |x| x.log(), positive, 4, 3)),
        e("sqrt", "sqrt", CASES, unary("sqrt", |x| x.sqrt(), positive, 4, 3)),
        e("relu", "relu", CASES, unary("relu", |x| x.relu(), AwayFromZero(0.1, 2.0), 4, 3)),
        e("gelu", "gelu", CASES, unary("gelu", |x| x.gelu(), wide, 4, 3)),
        e("tanh", "tanh", CASES, unary("tanh", |x| x.tanh(), wide, 4, 3)),
        e("sigmoid", "sigmoid", CASES, unary("sigmoid", |x| x.sigmoid(), wide, 4, 3)),
    ]
}
