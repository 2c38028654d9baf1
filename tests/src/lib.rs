//! Shared helpers of the integration tests.
//!
//! - [`util`]: small tensor helpers (literal tensors, closeness assertions,
//!   inner products, running code on a rayon pool of a given size).
//! - [`autograd_cases`]: the table of gradient cases. Every entry is a
//!   proptest strategy producing a [`autograd_cases::Case`] (input tensors
//!   plus the closure under test). `tests/autograd_grad.rs` runs every entry
//!   as a property test (`grad::<name>`) *and* runs one fixed draw of every
//!   entry in a coverage test that fails when an op of
//!   `autograd::ops::all_ops()` has no entry, so the property tests and the
//!   coverage check share one definition per case.

pub mod util {
    //! Tensor helpers shared by the test files.

    use autograd::{Float, Tensor};

    /// An f64 tensor from literal data (panics if `data` does not fill `shape`).
    pub fn t64(data: &[f64], shape: &[usize]) -> Tensor<f64> {
        Tensor::from_vec(data.to_vec(), shape)
    }

    /// An f32 tensor from literal data (panics if `data` does not fill `shape`).
    pub fn t32(data: &[f32], shape: &[usize]) -> Tensor<f32> {
        Tensor::from_vec(data.to_vec(), shape)
    }

    /// Asserts that `actual` has shape `shape` and that every element is
    /// within `tol * max(1, |expected|)` of the literal `expected` (exact
    /// equality is required for infinities).
    #[track_caller]
    pub fn assert_values<T: Float>(
        actual: &Tensor<T>,
        shape: &[usize],
        expected: &[f64],
        tol: f64,
    ) {
        assert_eq!(actual.shape(), shape, "shape of {actual:?}");
        assert_eq!(
            actual.numel(),
            expected.len(),
            "element count of {actual:?}"
        );
        for (i, (&a, &e)) in actual.data().iter().zip(expected).enumerate() {
            let a = a.to_f64();
            let ok = if e.is_infinite() {
                a == e
            } else {
                (a - e).abs() <= tol * e.abs().max(1.0)
            };
            assert!(
                ok,
                "element {i}: got {a:e}, expected {e:e} (tol {tol:e})\n  actual:   {:?}\n  expected: {expected:?}",
                actual.data()
            );
        }
    }

    /// Asserts equal shapes and every element within `tol * max(1, |b|)`.
    #[track_caller]
    pub fn assert_close<T: Float>(a: &Tensor<T>, b: &Tensor<T>, tol: f64, what: &str) {
        assert_eq!(a.shape(), b.shape(), "{what}: shapes differ");
        for (i, (&x, &y)) in a.data().iter().zip(b.data()).enumerate() {
            let (x, y) = (x.to_f64(), y.to_f64());
            assert!(
                (x - y).abs() <= tol * y.abs().max(1.0),
                "{what}: element {i} differs: {x:e} vs {y:e} (tol {tol:e}, max abs diff {:e})",
                a.max_abs_diff(b)
            );
        }
    }

    /// The Frobenius inner product `<a, b> = sum_i a_i b_i` (same shapes).
    pub fn dot(a: &Tensor<f64>, b: &Tensor<f64>) -> f64 {
        assert_eq!(a.shape(), b.shape(), "dot: shapes differ");
        a.data().iter().zip(b.data()).map(|(x, y)| x * y).sum()
    }

    /// Runs `f` inside a fresh rayon pool of exactly `threads` threads.
    pub fn with_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("building a rayon pool")
            .install(f)
    }
}

pub mod autograd_cases {
    //! The gradient case table: one entry per op variant, each a proptest
    //! strategy of [`Case`]s over random shapes (size-1 and broadcast axes
    //! included) and values kept away from the op's kinks and poles.
    //!
    //! Sizes are kept small: `gradcheck` runs two forward passes per input
    //! element. Values are kept moderate too: the finite difference divides
    //! the rounding error of the projected loss `sum(y * r)` by the step
    //! (`1e-6`), so a huge constant term in the loss (e.g. a `-1e9` fill)
    //! would drown the derivative.

    use std::fmt;
    use std::sync::Arc;

    use autograd::check::strategies::{
        broadcast_pair, shape, tensor, tensor_away_from_zero, tensor_distinct,
    };
    use autograd::check::{GradcheckConfig, GradcheckReport, gradcheck};
    use autograd::{Tape, Tensor, Var, numel};
    use proptest::collection::vec as pvec;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::Xoshiro256PlusPlus;

    /// The closure under test: builds the computation on the given tape from
    /// the inputs (as leaves) and returns the output var.
    pub type CaseFn = Arc<dyn for<'t> Fn(&'t Tape<f64>, &[Var<'t, f64>]) -> Var<'t, f64>>;

    /// A binary op under test, e.g. `|a, b| a + b`.
    pub type BinaryFn = for<'t> fn(Var<'t, f64>, Var<'t, f64>) -> Var<'t, f64>;
    /// A unary op under test, e.g. `|x| x.exp()`.
    pub type UnaryFn = for<'t> fn(Var<'t, f64>) -> Var<'t, f64>;
    /// A unary op with a scalar argument, e.g. `|x, c| x.pow_scalar(c)`.
    pub type ScalarFn = for<'t> fn(Var<'t, f64>, f64) -> Var<'t, f64>;
    /// A reduction over an axis, e.g. `|x, axis, keepdim| x.sum(axis, keepdim)`.
    pub type AxisFn = for<'t> fn(Var<'t, f64>, isize, bool) -> Var<'t, f64>;

    /// The padding id of the cross-entropy cases: class 0, as in most
    /// vocabularies (so the pad id is also a real column of the logits).
    pub const PAD: usize = 0;

    /// One concrete gradient check: inputs and the closure applied to them.
    #[derive(Clone)]
    pub struct Case {
        /// Name of the table entry that produced it.
        pub name: &'static str,
        /// Non-tensor arguments (axis, seed, ids...), for failure messages.
        pub params: String,
        pub inputs: Vec<Tensor<f64>>,
        pub f: CaseFn,
    }

    impl Case {
        /// Wraps `f` (any closure with the `gradcheck` signature).
        pub fn new<F>(
            name: &'static str,
            params: impl Into<String>,
            inputs: Vec<Tensor<f64>>,
            f: F,
        ) -> Case
        where
            F: for<'t> Fn(&'t Tape<f64>, &[Var<'t, f64>]) -> Var<'t, f64> + 'static,
        {
            Case {
                name,
                params: params.into(),
                inputs,
                f: Arc::new(f),
            }
        }

        /// Runs [`gradcheck`] on this case.
        pub fn gradcheck(&self, cfg: &GradcheckConfig) -> GradcheckReport {
            gradcheck(|tape, v| (self.f)(tape, v), &self.inputs, cfg)
        }
    }

    impl fmt::Debug for Case {
        /// Prints everything needed to reproduce a failure: the parameters and
        /// every input in full (shape and data).
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "Case `{}` ({})", self.name, self.params)?;
            for (i, t) in self.inputs.iter().enumerate() {
                write!(
                    f,
                    "\n  input {i}: shape {:?} data {:?}",
                    t.shape(),
                    t.data()
                )?;
            }
            Ok(())
        }
    }

    /// One row of the table.
    pub struct GradCase {
        /// Name of the entry; `autograd_grad.rs` has a property test
        /// `grad::<name>` for it.
        pub name: &'static str,
        /// The op under test: must appear in every report's `ops`.
        pub op: &'static str,
        /// Number of proptest cases of the property test.
        pub cases: u32,
        pub strategy: BoxedStrategy<Case>,
    }

    /// How the values of an input tensor are drawn.
    #[derive(Clone, Copy, Debug)]
    pub enum Values {
        /// Uniform in `[lo, hi]`.
        Uniform(f64, f64),
        /// `gap <= |x| <= hi`, either sign (relu's kink, 1/x's pole).
        AwayFromZero(f64, f64),
        /// Pairwise at least about `gap` apart (no ties for max).
        Distinct(f64),
    }

    impl Values {
        /// A tensor of `shape` with values drawn this way.
        pub fn tensor(self, shape: Vec<usize>) -> BoxedStrategy<Tensor<f64>> {
            match self {
                Values::Uniform(lo, hi) => tensor(shape, lo, hi).boxed(),
                Values::AwayFromZero(gap, hi) => tensor_away_from_zero(shape, gap, hi).boxed(),
                Values::Distinct(gap) => tensor_distinct(shape, gap).boxed(),
            }
        }
    }

    /// Default values of most inputs.
    const UNIT: Values = Values::Uniform(-2.0, 2.0);

    /// Resolves a possibly negative axis of a rank-`nd` tensor.
    fn resolve(axis: isize, nd: usize) -> usize {
        if axis < 0 {
            (axis + nd as isize) as usize
        } else {
            axis as usize
        }
    }

    /// A binary elementwise op on a broadcast-compatible pair of shapes
    /// (rank <= 4, axes <= 3); the right operand's values come from `rhs`.
    pub fn binary(name: &'static str, f: BinaryFn, rhs: Values) -> BoxedStrategy<Case> {
        broadcast_pair(4, 3)
            .prop_flat_map(move |(sa, sb)| (UNIT.tensor(sa), rhs.tensor(sb)))
            .prop_map(move |(a, b)| Case::new(name, "", vec![a, b], move |_, v| f(v[0], v[1])))
            .boxed()
    }

    /// A unary op on a random shape (rank <= `max_rank`, axes <= `max_dim`).
    pub fn unary(
        name: &'static str,
        f: UnaryFn,
        values: Values,
        max_rank: usize,
        max_dim: usize,
    ) -> BoxedStrategy<Case> {
        shape(max_rank, max_dim)
            .prop_flat_map(move |s| values.tensor(s))
            .prop_map(move |x| Case::new(name, "", vec![x], move |_, v| f(v[0])))
            .boxed()
    }

    /// A unary op with a scalar argument drawn from `c`.
    pub fn with_scalar(
        name: &'static str,
        f: ScalarFn,
        values: Values,
        c: std::ops::RangeInclusive<f64>,
    ) -> BoxedStrategy<Case> {
        (shape(4, 3).prop_flat_map(move |s| values.tensor(s)), c)
            .prop_map(move |(x, c)| {
                Case::new(name, format!("scalar {c}"), vec![x], move |_, v| f(v[0], c))
            })
            .boxed()
    }

    /// A reduction over a random axis (negative axes included), with or
    /// without `keepdim`.
    pub fn over_axis(name: &'static str, f: AxisFn, values: Values) -> BoxedStrategy<Case> {
        shape(4, 3)
            .prop_flat_map(move |s| {
                let nd = s.len() as isize;
                (values.tensor(s), -nd..nd, any::<bool>())
            })
            .prop_map(move |(x, axis, keepdim)| {
                Case::new(
                    name,
                    format!("axis {axis}, keepdim {keepdim}"),
                    vec![x],
                    move |_, v| f(v[0], axis, keepdim),
                )
            })
            .boxed()
    }

    /// How the batch axes of a matmul case are shaped.
    #[derive(Clone, Copy, Debug)]
    pub enum Batch {
        /// (M, K) x (K, N).
        None,
        /// (..., M, K) x (..., K, N) with broadcast-compatible batch shapes
        /// (size-1 and missing leading axes on either side).
        Broadcast,
        /// One side 2-D, the other with 1 or 2 batch axes: a weight (K, N)
        /// against a (B, T, K) input, or a 2-D left operand against a stack.
        OneSide,
    }

    /// `matmul` (or `matmul_t` when `transposed`, the right operand then
    /// being (..., N, K)) with batch axes shaped by `batch`.
    pub fn matmul_case(name: &'static str, transposed: bool, batch: Batch) -> BoxedStrategy<Case> {
        let batches: BoxedStrategy<(Vec<usize>, Vec<usize>)> = match batch {
            Batch::None => Just((vec![], vec![])).boxed(),
            Batch::Broadcast => broadcast_pair(3, 3).boxed(),
            Batch::OneSide => (shape(2, 3), any::<bool>())
                .prop_map(|(s, left)| if left { (s, vec![]) } else { (vec![], s) })
                .boxed(),
        };
        let max: usize = if matches!(batch, Batch::None) { 4 } else { 3 };
        (batches, 1..=max, 1..=max, 1..=max)
            .prop_flat_map(move |((ba, bb), m, k, n)| {
                let sa = [ba, vec![m, k]].concat();
                let last = if transposed { vec![n, k] } else { vec![k, n] };
                let sb = [bb, last].concat();
                (UNIT.tensor(sa), UNIT.tensor(sb))
            })
            .prop_map(move |(a, b)| {
                Case::new(name, "", vec![a, b], move |_, v| {
                    if transposed {
                        v[0].matmul_t(v[1])
                    } else {
                        v[0].matmul(v[1])
                    }
                })
            })
            .boxed()
    }

    /// `transpose(a, b)` of two random (possibly equal, possibly negative) axes.
    fn transpose_case() -> BoxedStrategy<Case> {
        shape(4, 3)
            .prop_flat_map(|s| {
                let nd = s.len() as isize;
                (UNIT.tensor(s), -nd..nd, -nd..nd)
            })
            .prop_map(|(x, a, b)| {
                Case::new(
                    "transpose",
                    format!("axes {a}, {b}"),
                    vec![x],
                    move |_, v| v[0].transpose(a, b),
                )
            })
            .boxed()
    }

    /// `permute` by a random permutation of the axes.
    fn permute_case() -> BoxedStrategy<Case> {
        shape(4, 3)
            .prop_flat_map(|s| {
                let n = s.len();
                (
                    UNIT.tensor(s),
                    Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
                )
            })
            .prop_map(|(x, perm)| {
                Case::new("permute", format!("perm {perm:?}"), vec![x], move |_, v| {
                    v[0].permute(&perm)
                })
            })
            .boxed()
    }

    /// `reshape` to the axes shuffled, optionally with a size-1 axis inserted.
    fn reshape_case() -> BoxedStrategy<Case> {
        shape(4, 3)
            .prop_flat_map(|s| {
                let n = s.len();
                (
                    UNIT.tensor(s.clone()),
                    Just(s).prop_shuffle(),
                    0..=n,
                    any::<bool>(),
                )
            })
            .prop_map(|(x, mut target, at, insert)| {
                if insert {
                    target.insert(at, 1);
                }
                Case::new("reshape", format!("to {target:?}"), vec![x], move |_, v| {
                    v[0].reshape(&target)
                })
            })
            .boxed()
    }

    /// `concat` of 1 to 3 parts along a random axis; parts differ in size
    /// along that axis only.
    fn concat_case() -> BoxedStrategy<Case> {
        (shape(3, 3), 1..=3usize)
            .prop_flat_map(|(s, parts)| {
                let nd = s.len() as isize;
                (Just(s), -nd..nd, pvec(1..=3usize, parts))
            })
            .prop_flat_map(|(s, axis, sizes)| {
                let ax = resolve(axis, s.len());
                let parts: Vec<BoxedStrategy<Tensor<f64>>> = sizes
                    .iter()
                    .map(|&n| {
                        let mut p = s.clone();
                        p[ax] = n;
                        UNIT.tensor(p)
                    })
                    .collect();
                (Just(axis), parts)
            })
            .prop_map(|(axis, parts)| {
                Case::new("concat", format!("axis {axis}"), parts, move |_, v| {
                    Var::concat(v, axis)
                })
            })
            .boxed()
    }

    /// `narrow(axis, start, len)` with a random in-range window.
    fn narrow_case() -> BoxedStrategy<Case> {
        shape(4, 4)
            .prop_flat_map(|s| {
                let nd = s.len();
                (Just(s), 0..nd, any::<bool>())
            })
            .prop_flat_map(|(s, ax, negative)| {
                let n = s[ax];
                let axis = if negative {
                    ax as isize - s.len() as isize
                } else {
                    ax as isize
                };
                (UNIT.tensor(s), Just(axis), Just(n), 0..n)
            })
            .prop_flat_map(|(x, axis, n, start)| (Just(x), Just(axis), Just(start), 1..=n - start))
            .prop_map(|(x, axis, start, len)| {
                Case::new(
                    "narrow",
                    format!("axis {axis}, start {start}, len {len}"),
                    vec![x],
                    move |_, v| v[0].narrow(axis, start, len),
                )
            })
            .boxed()
    }

    /// `split_heads(h)` of a (B, T, H * Dk) input.
    fn split_heads_case() -> BoxedStrategy<Case> {
        (1..=2usize, 1..=3usize, 1..=3usize, 1..=3usize)
            .prop_flat_map(|(b, t, h, dk)| (UNIT.tensor(vec![b, t, h * dk]), Just(h)))
            .prop_map(|(x, h)| {
                Case::new("split_heads", format!("{h} heads"), vec![x], move |_, v| {
                    v[0].split_heads(h)
                })
            })
            .boxed()
    }

    /// `merge_heads` of a (B, H, T, Dk) input.
    fn merge_heads_case() -> BoxedStrategy<Case> {
        (1..=2usize, 1..=3usize, 1..=3usize, 1..=3usize)
            .prop_flat_map(|(b, h, t, dk)| UNIT.tensor(vec![b, h, t, dk]))
            .prop_map(|x| Case::new("merge_heads", "", vec![x], |_, v| v[0].merge_heads()))
            .boxed()
    }

    /// `layer_norm` over the last axis (D <= 4, D = 1 included) with random
    /// gain and bias. Row values are pairwise distinct, so the variance is
    /// bounded away from 0 (except D = 1, where the output is the bias) and
    /// the normalisation is not ill-conditioned.
    fn layer_norm_case() -> BoxedStrategy<Case> {
        shape(3, 4)
            .prop_flat_map(|s| {
                let d = s[s.len() - 1];
                (
                    Values::Distinct(0.25).tensor(s),
                    UNIT.tensor(vec![d]),
                    UNIT.tensor(vec![d]),
                )
            })
            .prop_map(|(x, gain, bias)| {
                Case::new("layer_norm", "eps 1e-5", vec![x, gain, bias], |_, v| {
                    v[0].layer_norm(v[1], v[2], 1e-5)
                })
            })
            .boxed()
    }

    /// `embedding` of a (V, D) table with ids of shape (R, C) or (R * C);
    /// at least one id is repeated, so the scatter-add must sum.
    fn embedding_case() -> BoxedStrategy<Case> {
        (1..=3usize, 1..=3usize, 1..=2usize, 2..=3usize)
            .prop_flat_map(|(vocab, d, rows, cols)| {
                (
                    UNIT.tensor(vec![vocab, d]),
                    pvec(0..vocab, rows * cols),
                    Just(vec![rows, cols]),
                    any::<bool>(),
                )
            })
            .prop_map(|(table, mut ids, ids_shape, flat)| {
                let n = ids.len();
                if (1..n).all(|i| !ids[..i].contains(&ids[i])) {
                    ids[n - 1] = ids[0]; // force a repeated id
                }
                let ids_shape = if flat { vec![n] } else { ids_shape };
                Case::new(
                    "embedding",
                    format!("ids {ids:?} shape {ids_shape:?}"),
                    vec![table],
                    move |_, v| v[0].embedding(&ids, &ids_shape),
                )
            })
            .boxed()
    }

    /// `masked_fill` with a random 0/1 mask whose shape broadcasts to the
    /// input's (leading axes dropped, some axes size 1). Fill values are
    /// moderate: see the module docs.
    fn masked_fill_case() -> BoxedStrategy<Case> {
        shape(3, 3)
            .prop_flat_map(|s| {
                let n = s.len();
                (
                    UNIT.tensor(s.clone()),
                    Just(s),
                    0..n,
                    pvec(any::<bool>(), n),
                    prop_oneof![Just(-5.0), Just(0.0), Just(2.5)],
                )
            })
            .prop_flat_map(|(x, s, drop, ones, value)| {
                let ms: Vec<usize> = s
                    .iter()
                    .zip(&ones)
                    .skip(drop)
                    .map(|(&d, &one)| if one { 1 } else { d })
                    .collect();
                let mask = pvec(any::<bool>(), numel(&ms)).prop_map(move |bits| {
                    let data = bits
                        .into_iter()
                        .map(|b| if b { 1.0 } else { 0.0 })
                        .collect();
                    Tensor::from_vec(data, &ms)
                });
                (Just(x), mask, Just(value))
            })
            .prop_map(|(x, mask, value)| {
                Case::new(
                    "masked_fill",
                    format!("mask {mask:?} ({:?}), value {value}", mask.data()),
                    vec![x],
                    move |_, v| v[0].masked_fill(&mask, value),
                )
            })
            .boxed()
    }

    /// Training-mode `dropout`. The rng is seeded *inside* the closure, so
    /// every evaluation of `gradcheck` draws the same mask.
    fn dropout_case() -> BoxedStrategy<Case> {
        (
            shape(3, 4).prop_flat_map(|s| UNIT.tensor(s)),
            0.1..=0.7f64,
            any::<u64>(),
        )
            .prop_map(|(x, p, seed)| {
                Case::new(
                    "dropout",
                    format!("p {p}, seed {seed}"),
                    vec![x],
                    move |_, v| {
                        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
                        v[0].dropout(p, true, &mut rng)
                    },
                )
            })
            .boxed()
    }

    /// `cross_entropy` of logits (R, V) or (B, T, V), V in 2..=5, with label
    /// smoothing in [0, 0.3]. With `ignore`, at least one target is the
    /// padding id [`PAD`] and at least one is not.
    fn cross_entropy_case(name: &'static str, ignore: bool) -> BoxedStrategy<Case> {
        (
            1..=2usize,
            2..=3usize,
            2..=5usize,
            any::<bool>(),
            0.0..=0.3f64,
        )
            .prop_flat_map(|(b, t, v, flat, eps)| {
                let rows = b * t;
                let lead = if flat { vec![rows] } else { vec![b, t] };
                (
                    Values::Uniform(-3.0, 3.0).tensor([lead, vec![v]].concat()),
                    pvec(0..v, rows),
                    0..rows,
                    1..rows,
                    1..v,
                    Just(eps),
                )
            })
            .prop_map(move |(logits, mut targets, pad_at, offset, class, eps)| {
                let ignore = ignore.then_some(PAD);
                if ignore.is_some() {
                    let rows = targets.len();
                    targets[pad_at] = PAD;
                    targets[(pad_at + offset) % rows] = class; // class >= 1: not padding
                }
                Case::new(
                    name,
                    format!("targets {targets:?}, ignore {ignore:?}, eps {eps}"),
                    vec![logits],
                    move |_, v| v[0].cross_entropy(&targets, ignore, eps),
                )
            })
            .boxed()
    }

    /// `linear(w, b)`: x (..., K) with 0 to 2 leading axes, W (K, N), and a
    /// bias (N) or none.
    fn linear_case() -> BoxedStrategy<Case> {
        (
            prop_oneof![Just(vec![]), shape(2, 3)],
            1..=4usize,
            1..=4usize,
            any::<bool>(),
        )
            .prop_flat_map(|(lead, k, n, bias)| {
                let mut inputs = vec![
                    UNIT.tensor([lead, vec![k]].concat()),
                    UNIT.tensor(vec![k, n]),
                ];
                if bias {
                    inputs.push(UNIT.tensor(vec![n]));
                }
                inputs
            })
            .prop_map(|inputs| {
                let params = if inputs.len() == 3 {
                    "with bias"
                } else {
                    "no bias"
                };
                Case::new("linear", params, inputs, |_, v| {
                    v[0].linear(v[1], v.get(2).copied())
                })
            })
            .boxed()
    }

    /// Fused multi-head `attention` of q (B, Tq, D), k and v (B, Tk, D),
    /// D = heads * Dk. With `masked`, a random 0/1 mask of shape (Tq, Tk)
    /// (causal-like), (B, 1, 1, Tk) (padding-like) or (B, H, Tq, Tk); fully
    /// masked rows (output 0) included.
    fn attention_case(name: &'static str, masked: bool) -> BoxedStrategy<Case> {
        (
            1..=2usize,
            1..=3usize,
            1..=3usize,
            1..=2usize,
            1..=2usize,
            0..3usize,
        )
            .prop_flat_map(move |(b, tq, tk, heads, dk, kind)| {
                let d = heads * dk;
                let ms = match kind {
                    0 => vec![tq, tk],
                    1 => vec![b, 1, 1, tk],
                    _ => vec![b, heads, tq, tk],
                };
                let n = if masked { numel(&ms) } else { 0 };
                let mask = pvec(any::<bool>(), n).prop_map(move |bits| {
                    masked.then(|| {
                        let data = bits.iter().map(|&m| if m { 1.0 } else { 0.0 }).collect();
                        Tensor::from_vec(data, &ms)
                    })
                });
                (
                    UNIT.tensor(vec![b, tq, d]),
                    UNIT.tensor(vec![b, tk, d]),
                    UNIT.tensor(vec![b, tk, d]),
                    Just(heads),
                    mask,
                )
            })
            .prop_map(move |(q, k, v, heads, mask)| {
                let params = match &mask {
                    Some(m) => format!("{heads} heads, mask {:?} {:?}", m.shape(), m.data()),
                    None => format!("{heads} heads, no mask"),
                };
                Case::new(name, params, vec![q, k, v], move |_, x| {
                    x[0].attention(x[1], x[2], heads, mask.as_ref())
                })
            })
            .boxed()
    }

    /// Proptest cases of a plain entry.
    const CASES: u32 = 128;
    /// Proptest cases of an entry with more structure to explore (broadcast
    /// shapes, axes, ids, padding).
    const MORE: u32 = 256;

    /// The table: every op of `autograd::ops::all_ops()` has at least one
    /// entry whose `op` is its name (checked by `autograd_grad.rs`).
    #[rustfmt::skip]
    pub fn grad_cases() -> Vec<GradCase> {
        use Values::*;
        let e = |name, op, cases, strategy| GradCase { name, op, cases, strategy };
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
            // Reductions; max without ties.
            e("sum", "sum", MORE, over_axis("sum", |x, a, k| x.sum(a, k), UNIT)),
            e("mean", "mean", MORE, over_axis("mean", |x, a, k| x.mean(a, k), UNIT)),
            e("sum_all", "sum_all", CASES, unary("sum_all", |x| x.sum_all(), UNIT, 4, 3)),
            e("mean_all", "mean_all", CASES, unary("mean_all", |x| x.mean_all(), UNIT, 4, 3)),
            e("max", "max", MORE, over_axis("max", |x, a, k| x.max(a, k), Distinct(0.1))),
            // Matrix products: 2-D, batched with broadcast batch axes, and a
            // 2-D operand against a stack (a weight against (B, T, K)).
            e("matmul_2d", "matmul", CASES, matmul_case("matmul_2d", false, Batch::None)),
            e("matmul_batched", "matmul", MORE, matmul_case("matmul_batched", false, Batch::Broadcast)),
            e("matmul_one_side_2d", "matmul", MORE, matmul_case("matmul_one_side_2d", false, Batch::OneSide)),
            e("matmul_t_2d", "matmul_t", CASES, matmul_case("matmul_t_2d", true, Batch::None)),
            e("matmul_t_batched", "matmul_t", MORE, matmul_case("matmul_t_batched", true, Batch::Broadcast)),
            e("matmul_t_one_side_2d", "matmul_t", MORE, matmul_case("matmul_t_one_side_2d", true, Batch::OneSide)),
            e("linear", "linear", MORE, linear_case()),
            // Shape ops.
            e("transpose", "transpose", CASES, transpose_case()),
            e("permute", "permute", CASES, permute_case()),
            e("reshape", "reshape", CASES, reshape_case()),
            e("concat", "concat", MORE, concat_case()),
            e("narrow", "narrow", MORE, narrow_case()),
            e("split_heads", "split_heads", CASES, split_heads_case()),
            e("merge_heads", "merge_heads", CASES, merge_heads_case()),
            // Neural-network ops.
            e("softmax", "softmax", MORE, unary("softmax", |x| x.softmax(), wide, 3, 4)),
            e("log_softmax", "log_softmax", MORE, unary("log_softmax", |x| x.log_softmax(), wide, 3, 4)),
            e("layer_norm", "layer_norm", MORE, layer_norm_case()),
            e("embedding", "embedding", MORE, embedding_case()),
            e("masked_fill", "masked_fill", MORE, masked_fill_case()),
            e("dropout", "dropout", CASES, dropout_case()),
            e("cross_entropy", "cross_entropy", MORE, cross_entropy_case("cross_entropy", true)),
            e("cross_entropy_no_ignore", "cross_entropy", CASES, cross_entropy_case("cross_entropy_no_ignore", false)),
            // Fused attention.
            e("attention", "attention", MORE, attention_case("attention", false)),
            e("attention_masked", "attention", MORE, attention_case("attention_masked", true)),
        ]
    }
}
