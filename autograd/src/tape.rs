//! The tape: one forward pass recorded as a list of nodes, walked once in
//! reverse by [`Tape::backward`].
//!
//! A [`Var`] is a `Copy` handle (tape reference + node index), so model code
//! reads like maths: `(x.matmul(w) + b).relu()`. Each node keeps its value
//! and, when a gradient is needed, a boxed vector-Jacobian product that owns
//! (shared, `Arc`) the tensors it needs.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Float, Tensor};

/// A vector-Jacobian product: given the gradient of the op's output and, per
/// input, whether that input needs a gradient, returns one optional gradient
/// per input (same shapes as the inputs).
pub type BackwardFn<T> = Box<dyn Fn(&Tensor<T>, &[bool]) -> Vec<Option<Tensor<T>>>>;

struct Node<T: Float> {
    value: Tensor<T>,
    op: &'static str,
    parents: Vec<usize>,
    backward: Option<BackwardFn<T>>,
    requires_grad: bool,
}

/// Identity of a [`Param`], stable across tapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ParamId(u64);

static NEXT_PARAM: AtomicU64 = AtomicU64::new(0);

/// A trainable tensor that outlives tapes: layers own `Param`s, each step's
/// tape borrows them as leaves ([`Tape::param`]) and gradients come back keyed
/// by [`ParamId`]. After the tape is dropped the optimiser updates
/// [`Param::value`] in place.
///
/// A clone keeps the id (it *is* the same parameter); use [`Param::new`] for a
/// distinct one.
///
/// ```
/// use autograd::{Param, Tape, Tensor};
/// let w = Param::new(Tensor::from_vec(vec![3.0], &[1]));
/// let tape = Tape::new();
/// let x = tape.param(&w);
/// let y = (x * x).sum_all(); // d/dw w^2 = 2w = 6
/// let grads = tape.backward(y);
/// assert_eq!(grads.param(&w).unwrap().data(), &[6.0]);
/// ```
#[derive(Clone, Debug)]
pub struct Param<T: Float = f32> {
    id: ParamId,
    /// The current value; the optimiser updates it in place between tapes.
    pub value: Tensor<T>,
}

impl<T: Float> Param<T> {
    /// A new parameter with a fresh id.
    pub fn new(value: Tensor<T>) -> Self {
        Param {
            id: ParamId(NEXT_PARAM.fetch_add(1, Ordering::Relaxed)),
            value,
        }
    }

    /// This parameter's id (gradients are keyed by it).
    pub fn id(&self) -> ParamId {
        self.id
    }
}

/// The first op whose forward value or backward gradient held NaN or Inf
/// while anomaly mode was on.
#[derive(Clone, Debug, PartialEq)]
pub struct Anomaly {
    /// The op's name, as recorded on the tape.
    pub op: &'static str,
    /// `"forward"` or `"backward"`.
    pub phase: &'static str,
    /// Shapes of the op's inputs.
    pub input_shapes: Vec<Vec<usize>>,
    /// Shape of the op's output.
    pub output_shape: Vec<usize>,
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "anomaly: op `{}` produced NaN or Inf in its {} pass (inputs {:?}, output {:?})",
            self.op, self.phase, self.input_shapes, self.output_shape
        )
    }
}

/// Records one forward pass. Create one per step; drop it after the update.
///
/// ```
/// use autograd::{Tape, Tensor};
/// let tape = Tape::new();
/// let x = tape.leaf(Tensor::from_vec(vec![1.0, 2.0], &[2]));
/// let y = (x * 3.0 + 1.0).sum_all(); // dy/dx = 3
/// let grads = tape.backward(y);
/// assert_eq!(grads.wrt(x).data(), &[3.0, 3.0]);
/// ```
pub struct Tape<T: Float = f32> {
    nodes: RefCell<Vec<Node<T>>>,
    grad_enabled: bool,
    anomaly_mode: Cell<bool>,
    anomaly: RefCell<Option<Anomaly>>,
    params: RefCell<HashMap<ParamId, usize>>,
}

impl<T: Float> Default for Tape<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Float> Tape<T> {
    /// A tape that records gradients.
    pub fn new() -> Self {
        Self::with_grad(true)
    }

    /// A tape that records nothing for backward: no VJP closures, no saved
    /// inputs, every var a constant. Only the values the live `Var` handles
    /// point at are kept, and they go when the tape goes: evaluate inside
    /// [`no_grad`] (one tape per decoding step) to bound memory.
    pub fn no_grad() -> Self {
        Self::with_grad(false)
    }

    fn with_grad(grad_enabled: bool) -> Self {
        Tape {
            nodes: RefCell::new(Vec::new()),
            grad_enabled,
            anomaly_mode: Cell::new(false),
            anomaly: RefCell::new(None),
            params: RefCell::new(HashMap::new()),
        }
    }

    /// True unless this is a [`Tape::no_grad`] tape.
    pub fn grad_enabled(&self) -> bool {
        self.grad_enabled
    }

    /// Turns anomaly mode on or off: when on, every forward value and every
    /// backward gradient is checked, and the first op yielding NaN or Inf is
    /// kept ([`Tape::anomaly`]). It costs one pass over each tensor.
    pub fn set_anomaly_mode(&self, on: bool) {
        self.anomaly_mode.set(on);
    }

    /// The first anomaly seen in anomaly mode, if any.
    pub fn anomaly(&self) -> Option<Anomaly> {
        self.anomaly.borrow().clone()
    }

    /// Number of nodes recorded so far.
    pub fn len(&self) -> usize {
        self.nodes.borrow().len()
    }

    /// True when nothing has been recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The op names recorded so far, in order (`"leaf"` and `"constant"`
    /// included).
    pub fn ops(&self) -> Vec<&'static str> {
        self.nodes.borrow().iter().map(|n| n.op).collect()
    }

    /// Number of nodes holding a backward closure (0 on a no-grad tape).
    pub fn num_backward_nodes(&self) -> usize {
        self.nodes
            .borrow()
            .iter()
            .filter(|n| n.backward.is_some())
            .count()
    }

    fn push(&self, node: Node<T>) -> Var<'_, T> {
        let mut nodes = self.nodes.borrow_mut();
        nodes.push(node);
        Var {
            tape: self,
            id: nodes.len() - 1,
        }
    }

    /// A differentiable input: gradients are reported for it.
    pub fn leaf(&self, value: Tensor<T>) -> Var<'_, T> {
        self.push(Node {
            value,
            op: "leaf",
            parents: Vec::new(),
            backward: None,
            requires_grad: self.grad_enabled,
        })
    }

    /// A constant input: no gradient flows into it.
    pub fn constant(&self, value: Tensor<T>) -> Var<'_, T> {
        self.push(Node {
            value,
            op: "constant",
            parents: Vec::new(),
            backward: None,
            requires_grad: false,
        })
    }

    /// The leaf for a [`Param`] on this tape. Asking twice for the same
    /// parameter (a tied embedding) returns the same var, so its uses sum
    /// their gradients.
    pub fn param(&self, p: &Param<T>) -> Var<'_, T> {
        if let Some(&id) = self.params.borrow().get(&p.id) {
            return Var { tape: self, id };
        }
        let v = self.leaf(p.value.clone());
        self.params.borrow_mut().insert(p.id, v.id);
        v
    }

    /// Makes `v` the var of parameter `p` on this tape: later
    /// [`Tape::param`] calls return `v`. This lets a gradient check drive a
    /// whole module's parameters as inputs (see `transformer::gradcheck_module`).
    pub fn bind_param(&self, p: &Param<T>, v: Var<'_, T>) {
        assert!(
            std::ptr::eq(v.tape, self) && p.value.shape() == v.shape().as_slice(),
            "bind_param: var of shape {:?} cannot stand for a parameter of shape {:?} (or belongs to another tape)",
            v.shape(),
            p.value.shape()
        );
        self.params.borrow_mut().insert(p.id, v.id);
    }

    /// Records an op: its name, its output value, its inputs and its VJP.
    /// This is the general extension point for user ops (every built-in op
    /// goes through it; [`Var::pointwise`] covers the one-input elementwise
    /// case). If no input needs a gradient (or on a no-grad tape) the VJP is
    /// dropped at once, so constants cost nothing for backward.
    ///
    /// The VJP gets the gradient of the output and, per input, whether that
    /// input needs a gradient; it returns one optional gradient per input,
    /// each of that input's shape (checked: a wrong count or shape panics
    /// naming `op`). It must own what it needs (tensors are cheap `Arc`
    /// clones). In anomaly mode a NaN or Inf in the value or in a returned
    /// gradient is reported under `op`.
    ///
    /// A two-input op defined outside the crate, `hypot(a, b) = sqrt(a^2 + b^2)`:
    ///
    /// ```
    /// use autograd::{Float, Tape, Tensor, Var};
    ///
    /// fn hypot<'t, T: Float>(a: Var<'t, T>, b: Var<'t, T>) -> Var<'t, T> {
    ///     let (x, y) = (a.value(), b.value());
    ///     let h = x.zip_map(&y, "hypot", |x, y| (x * x + y * y).sqrt());
    ///     let saved = h.clone();
    ///     a.tape().record("hypot", h, &[a, b], move |g, need| {
    ///         // d/da = a / h, d/db = b / h (same shapes: no broadcasting here).
    ///         let grad = |x: &Tensor<T>| g.map3(x, &saved, "hypot", |g, x, h| g * x / h);
    ///         vec![need[0].then(|| grad(&x)), need[1].then(|| grad(&y))]
    ///     })
    /// }
    ///
    /// let tape = Tape::<f64>::new();
    /// let a = tape.leaf(Tensor::from_vec(vec![3.0], &[1]));
    /// let b = tape.leaf(Tensor::from_vec(vec![4.0], &[1]));
    /// let h = hypot(a, b);
    /// assert_eq!((h.op(), h.value().data()), ("hypot", &[5.0][..]));
    /// let g = tape.backward(h.sum_all());
    /// assert_eq!((g.wrt(a).data(), g.wrt(b).data()), (&[0.6][..], &[0.8][..]));
    /// ```
    pub fn record<'t>(
        &'t self,
        op: &'static str,
        value: Tensor<T>,
        inputs: &[Var<'t, T>],
        backward: impl Fn(&Tensor<T>, &[bool]) -> Vec<Option<Tensor<T>>> + 'static,
    ) -> Var<'t, T> {
        for v in inputs {
            assert!(
                std::ptr::eq(v.tape, self),
                "{op}: an input var belongs to another tape"
            );
        }
        if self.anomaly_mode.get() && self.anomaly.borrow().is_none() && !value.all_finite() {
            let nodes = self.nodes.borrow();
            let input_shapes = inputs
                .iter()
                .map(|v| nodes[v.id].value.shape().to_vec())
                .collect();
            *self.anomaly.borrow_mut() = Some(Anomaly {
                op,
                phase: "forward",
                input_shapes,
                output_shape: value.shape().to_vec(),
            });
        }
        let requires_grad = self.grad_enabled && {
            let nodes = self.nodes.borrow();
            inputs.iter().any(|v| nodes[v.id].requires_grad)
        };
        let (parents, backward): (Vec<usize>, Option<BackwardFn<T>>) = if requires_grad {
            (
                inputs.iter().map(|v| v.id).collect(),
                Some(Box::new(backward)),
            )
        } else {
            (Vec::new(), None)
        };
        self.push(Node {
            value,
            op,
            parents,
            backward,
            requires_grad,
        })
    }

    /// Reverse pass from a scalar (one-element) output, seeded with 1.
    pub fn backward(&self, out: Var<'_, T>) -> Grads<T> {
        let shape = out.shape();
        assert!(
            shape.iter().product::<usize>() == 1,
            "backward: output of shape {shape:?} is not a scalar; use backward_with and pass its gradient"
        );
        self.backward_with(out, Tensor::ones(&shape))
    }

    /// Reverse pass from any output, seeded with `grad` (the output's shape).
    pub fn backward_with(&self, out: Var<'_, T>, grad: Tensor<T>) -> Grads<T> {
        assert!(
            std::ptr::eq(out.tape, self),
            "backward: the output var belongs to another tape"
        );
        let nodes = self.nodes.borrow();
        assert!(
            grad.shape() == nodes[out.id].value.shape(),
            "backward_with: gradient shape {:?} differs from output shape {:?}",
            grad.shape(),
            nodes[out.id].value.shape()
        );
        let mut grads: Vec<Option<Tensor<T>>> = vec![None; out.id + 1];
        if nodes[out.id].requires_grad {
            grads[out.id] = Some(grad);
        }
        let anomaly_mode = self.anomaly_mode.get();
        for i in (0..=out.id).rev() {
            let node = &nodes[i];
            let Some(bw) = &node.backward else { continue };
            // Taking the gradient frees it as soon as this node has used it.
            let Some(g) = grads[i].take() else { continue };
            let needs: Vec<bool> = node
                .parents
                .iter()
                .map(|&p| nodes[p].requires_grad)
                .collect();
            let pgs = bw(&g, &needs);
            assert!(
                pgs.len() == node.parents.len(),
                "backward of `{}` returned {} gradients for {} inputs",
                node.op,
                pgs.len(),
                node.parents.len()
            );
            for (&p, pg) in node.parents.iter().zip(pgs) {
                let Some(pg) = pg else { continue };
                if !nodes[p].requires_grad {
                    continue;
                }
                assert!(
                    pg.shape() == nodes[p].value.shape(),
                    "backward of `{}` returned a gradient of shape {:?} for an input of shape {:?}",
                    node.op,
                    pg.shape(),
                    nodes[p].value.shape()
                );
                if anomaly_mode && self.anomaly.borrow().is_none() && !pg.all_finite() {
                    *self.anomaly.borrow_mut() = Some(Anomaly {
                        op: node.op,
                        phase: "backward",
                        input_shapes: node
                            .parents
                            .iter()
                            .map(|&q| nodes[q].value.shape().to_vec())
                            .collect(),
                        output_shape: node.value.shape().to_vec(),
                    });
                }
                match &mut grads[p] {
                    Some(acc) => acc.add_assign(&pg),
                    slot => *slot = Some(pg),
                }
            }
        }
        // What is left are the leaves' gradients.
        let params = self
            .params
            .borrow()
            .iter()
            .filter_map(|(&pid, &node)| grads.get(node).and_then(|g| g.clone()).map(|g| (pid, g)))
            .collect();
        Grads {
            leaves: grads,
            params: ParamGrads { grads: params },
        }
    }
}

/// Runs `f` on a fresh no-grad tape and returns its result (typically a
/// `Tensor`): nothing is recorded for backward, and every intermediate value
/// is freed when `f` returns.
///
/// ```
/// use autograd::{no_grad, Tensor};
/// let y = no_grad(|tape| {
///     let x = tape.constant(Tensor::from_vec(vec![1.0f32, -2.0], &[2]));
///     assert_eq!(tape.num_backward_nodes(), 0);
///     x.relu().value()
/// });
/// assert_eq!(y.data(), &[1.0, 0.0]);
/// ```
pub fn no_grad<T: Float, R>(f: impl FnOnce(&Tape<T>) -> R) -> R {
    let tape = Tape::no_grad();
    f(&tape)
}

/// Opt-in allocator tuning for training binaries: asks glibc's allocator
/// (once per process; later calls do nothing) to keep freed blocks of up to
/// 32 MiB for reuse instead of handing them back to the kernel. On other
/// platforms (not Linux with glibc) it does nothing.
///
/// Why: every op allocates its output afresh, and by default glibc serves
/// blocks above 128 KiB with `mmap` and frees them with `munmap`, so each
/// training step faults in (and the kernel zeroes) every activation page
/// again, and with two threads the page faults serialise on the process's
/// memory map lock. Measured on W2 with 2 threads (`bench`): 272-303 ms per
/// step before, 202-214 ms with freed memory kept. Peak memory is unchanged
/// (what is kept is what the previous step had freed).
///
/// Why opt-in: it changes the allocator of the whole process, which a
/// library must not do behind a program's back. Call it first thing in
/// `main` of a binary that trains or benchmarks.
///
/// ```
/// // First thing in a training binary's `main`:
/// autograd::retain_freed_memory();
/// ```
pub fn retain_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            unsafe extern "C" {
                fn mallopt(param: i32, value: i32) -> i32;
            }
            const M_TRIM_THRESHOLD: i32 = -1;
            const M_MMAP_THRESHOLD: i32 = -3;
            // 32 MiB is glibc's largest accepted mmap threshold on 64-bit.
            // SAFETY: mallopt only changes allocator tuning parameters; a
            // rejected value returns 0 and changes nothing.
            unsafe {
                mallopt(M_MMAP_THRESHOLD, 32 << 20);
                mallopt(M_TRIM_THRESHOLD, 256 << 20);
            }
        });
    }
}

/// A handle to a value on a tape: `Copy`, two words.
#[derive(Clone, Copy)]
pub struct Var<'t, T: Float = f32> {
    tape: &'t Tape<T>,
    id: usize,
}

impl<'t, T: Float> Var<'t, T> {
    /// The value (shares storage, no copy).
    pub fn value(&self) -> Tensor<T> {
        self.tape.nodes.borrow()[self.id].value.clone()
    }

    /// The value's shape.
    pub fn shape(&self) -> Vec<usize> {
        self.tape.nodes.borrow()[self.id].value.shape().to_vec()
    }

    /// Size of one axis (negative counts from the end).
    pub fn dim(&self, axis: isize) -> usize {
        self.tape.nodes.borrow()[self.id].value.dim(axis)
    }

    /// The value's number of axes.
    pub fn ndim(&self) -> usize {
        self.tape.nodes.borrow()[self.id].value.ndim()
    }

    /// The tape this var lives on.
    pub fn tape(&self) -> &'t Tape<T> {
        self.tape
    }

    /// Index of the node on its tape.
    pub fn id(&self) -> usize {
        self.id
    }

    /// The op that produced this var (`"leaf"`, `"matmul"`, ...).
    pub fn op(&self) -> &'static str {
        self.tape.nodes.borrow()[self.id].op
    }

    /// True when gradients flow into this var (it depends on a leaf).
    pub fn requires_grad(&self) -> bool {
        self.tape.nodes.borrow()[self.id].requires_grad
    }

    /// The same value as a constant: gradients stop here.
    pub fn detach(self) -> Var<'t, T> {
        self.tape.constant(self.value())
    }
}

impl<T: Float> fmt::Debug for Var<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Var#{}({}, {:?})", self.id, self.op(), self.value())
    }
}

/// Gradients of one backward pass, keyed by leaf var and by parameter.
pub struct Grads<T: Float = f32> {
    leaves: Vec<Option<Tensor<T>>>,
    params: ParamGrads<T>,
}

impl<T: Float> Grads<T> {
    /// The gradient of a leaf, if anything flowed into it.
    pub fn get(&self, v: Var<'_, T>) -> Option<&Tensor<T>> {
        self.leaves.get(v.id).and_then(|g| g.as_ref())
    }

    /// The gradient of a leaf; panics if it received none.
    pub fn wrt(&self, v: Var<'_, T>) -> &Tensor<T> {
        self.get(v).unwrap_or_else(|| {
            panic!(
                "Grads::wrt: var #{} ({}) received no gradient (is it a leaf that the output depends on?)",
                v.id,
                v.op()
            )
        })
    }

    /// The gradient of a parameter, if anything flowed into it.
    pub fn param(&self, p: &Param<T>) -> Option<&Tensor<T>> {
        self.params.get(p)
    }

    /// The parameters' gradients, to accumulate or hand to an optimiser.
    pub fn params(&self) -> &ParamGrads<T> {
        &self.params
    }

    /// The parameters' gradients, by value.
    pub fn into_params(self) -> ParamGrads<T> {
        self.params
    }
}

/// Gradients keyed by [`ParamId`]; sums over several tapes (micro-batches)
/// with [`ParamGrads::accumulate`]. Iteration order is by id, so anything
/// computed over it (a global norm) is deterministic.
///
/// ```
/// use autograd::{Param, ParamGrads, Tape, Tensor};
/// let w = Param::new(Tensor::from_vec(vec![2.0], &[1]));
/// let mut acc = ParamGrads::default();
/// for x in [1.0, 3.0] {
///     let tape = Tape::new();
///     let y = (tape.param(&w) * x).sum_all();
///     acc.accumulate(tape.backward(y).params());
/// }
/// assert_eq!(acc.get(&w).unwrap().data(), &[4.0]);
/// ```
#[derive(Clone, Default)]
pub struct ParamGrads<T: Float = f32> {
    grads: BTreeMap<ParamId, Tensor<T>>,
}

impl<T: Float> ParamGrads<T> {
    /// The gradient of a parameter, if present.
    pub fn get(&self, p: &Param<T>) -> Option<&Tensor<T>> {
        self.grads.get(&p.id)
    }

    /// The gradient of the parameter with id `id`, if present.
    pub fn get_id(&self, id: ParamId) -> Option<&Tensor<T>> {
        self.grads.get(&id)
    }

    /// Adds every gradient of `other` into this set.
    pub fn accumulate(&mut self, other: &ParamGrads<T>) {
        for (id, g) in &other.grads {
            match self.grads.get_mut(id) {
                Some(acc) => acc.add_assign(g),
                None => {
                    self.grads.insert(*id, g.clone());
                }
            }
        }
    }

    /// Multiplies every gradient by `s` (e.g. 1 / number of micro-batches).
    pub fn scale(&mut self, s: T) {
        for g in self.grads.values_mut() {
            for x in g.data_mut() {
                *x *= s;
            }
        }
    }

    /// The gradients in parameter-id order.
    pub fn iter(&self) -> impl Iterator<Item = (ParamId, &Tensor<T>)> {
        self.grads.iter().map(|(id, g)| (*id, g))
    }

    /// The gradients in parameter-id order, mutably (e.g. to clip them).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (ParamId, &mut Tensor<T>)> {
        self.grads.iter_mut().map(|(id, g)| (*id, g))
    }

    /// Number of parameters with a gradient.
    pub fn len(&self) -> usize {
        self.grads.len()
    }

    /// True when no parameter has a gradient.
    pub fn is_empty(&self) -> bool {
        self.grads.is_empty()
    }
}

/// Builds a gradient set from (id, gradient) pairs: what an optimiser
/// step on gradients summed elsewhere (another process, a flat buffer)
/// starts from. A repeated id keeps the last gradient.
///
/// ```
/// use autograd::{Param, ParamGrads, Tensor};
/// let w = Param::new(Tensor::from_vec(vec![2.0], &[1]));
/// let g: ParamGrads = [(w.id(), Tensor::from_vec(vec![0.5], &[1]))].into_iter().collect();
/// assert_eq!(g.get(&w).unwrap().data(), &[0.5]);
/// ```
impl<T: Float> FromIterator<(ParamId, Tensor<T>)> for ParamGrads<T> {
    fn from_iter<I: IntoIterator<Item = (ParamId, Tensor<T>)>>(iter: I) -> Self {
        ParamGrads {
            grads: iter.into_iter().collect(),
        }
    }
}
