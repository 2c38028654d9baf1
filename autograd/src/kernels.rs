//! Raw tensor kernels, no autodiff: broadcasting elementwise maps, reductions,
//! copies between layouts, and matmul through `matrixmultiply`.
//!
//! Determinism rule (issue 2): every output element is computed by exactly one
//! task, and every sum runs in an order fixed by the shapes alone. Work is
//! split into blocks whose boundaries do not depend on the number of rayon
//! threads, so results are bit-identical with 1 or N threads.

use rayon::prelude::*;

use crate::tensor::{numel, strides};
use crate::{Float, Tensor};

/// Below this many output elements a kernel runs on the calling thread:
/// spawning rayon tasks costs more than it saves.
const PAR_MIN: usize = 1 << 15;
/// Fixed block for `sum_all`; partial sums are added in block order.
const SUM_BLOCK: usize = 1 << 14;
/// Rows per parallel task in the row-wise kernels (a fixed size, so the
/// split does not depend on the thread count).
pub(crate) const ROWS_PER_TASK: usize = 64;
/// Below this many multiply-adds a matmul runs as one `gemm` call, and a
/// batch of products runs sequentially.
const GEMM_PAR_MIN_FLOPS: usize = 1 << 21;

/// NumPy broadcasting of two shapes; panics naming `op` and both shapes.
pub fn broadcast_shapes(a: &[usize], b: &[usize], op: &str) -> Vec<usize> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => panic!("{op}: shapes {a:?} and {b:?} cannot be broadcast together"),
        };
    }
    out
}

/// Strides to read a tensor of shape `s` as if broadcast to `out` (0 on
/// broadcast axes). `s` must broadcast to `out`.
fn broadcast_strides(s: &[usize], out: &[usize]) -> Vec<usize> {
    let st = strides(s);
    let lead = out.len() - s.len();
    (0..out.len())
        .map(|i| {
            if i < lead || s[i - lead] == 1 {
                0
            } else {
                st[i - lead]
            }
        })
        .collect()
}

/// Offset of the start of row `row` (all axes but the last) under `st`.
#[inline]
fn row_offset(mut row: usize, shape: &[usize], st: &[usize]) -> usize {
    let mut off = 0;
    for ax in (0..shape.len().saturating_sub(1)).rev() {
        off += (row % shape[ax]) * st[ax];
        row /= shape[ax];
    }
    off
}

/// Runs `f(row_index, row)` over the rows (last axis) of `out`, in parallel
/// when large. Each row is written by exactly one task.
fn for_rows<T: Float>(out: &mut [T], inner: usize, f: impl Fn(usize, &mut [T]) + Sync + Send) {
    if inner == 0 {
        return;
    }
    if out.len() >= PAR_MIN {
        let rows_per = (PAR_MIN / inner).max(1);
        out.par_chunks_mut(rows_per * inner)
            .enumerate()
            .for_each(|(c, chunk)| {
                for (r, row) in chunk.chunks_mut(inner).enumerate() {
                    f(c * rows_per + r, row);
                }
            });
    } else {
        for (r, row) in out.chunks_mut(inner).enumerate() {
            f(r, row);
        }
    }
}

impl<T: Float> Tensor<T> {
    /// Elementwise `f(x)`.
    pub fn map(&self, f: impl Fn(T) -> T + Sync + Send) -> Tensor<T> {
        let x = self.data();
        let mut out = vec![T::ZERO; x.len()];
        let inner = self.shape().last().copied().unwrap_or(1).max(1);
        for_rows(&mut out, inner, |r, row| {
            let xs = &x[r * inner..(r + 1) * inner];
            for (o, &v) in row.iter_mut().zip(xs) {
                *o = f(v);
            }
        });
        Tensor::from_vec(out, self.shape())
    }

    /// Elementwise `f(a, b)` with NumPy broadcasting; `op` names the caller
    /// in the panic message when the shapes do not broadcast.
    pub fn zip_map(
        &self,
        other: &Tensor<T>,
        op: &str,
        f: impl Fn(T, T) -> T + Sync + Send,
    ) -> Tensor<T> {
        let (a, b) = (self.data(), other.data());
        if self.shape() == other.shape() {
            let mut out = vec![T::ZERO; a.len()];
            let inner = self.shape().last().copied().unwrap_or(1).max(1);
            for_rows(&mut out, inner, |r, row| {
                let s = r * inner;
                for ((o, &x), &y) in row.iter_mut().zip(&a[s..s + inner]).zip(&b[s..s + inner]) {
                    *o = f(x, y);
                }
            });
            return Tensor::from_vec(out, self.shape());
        }
        let shape = broadcast_shapes(self.shape(), other.shape(), op);
        let (sa, sb) = (
            broadcast_strides(self.shape(), &shape),
            broadcast_strides(other.shape(), &shape),
        );
        let inner = shape.last().copied().unwrap_or(1);
        let (ia, ib) = (
            sa.last().copied().unwrap_or(0),
            sb.last().copied().unwrap_or(0),
        );
        let mut out = vec![T::ZERO; numel(&shape)];
        for_rows(&mut out, inner, |r, row| {
            let (oa, ob) = (row_offset(r, &shape, &sa), row_offset(r, &shape, &sb));
            for (j, o) in row.iter_mut().enumerate() {
                *o = f(a[oa + j * ia], b[ob + j * ib]);
            }
        });
        Tensor::from_vec(out, &shape)
    }

    /// Copies this tensor broadcast to `shape`.
    pub fn broadcast_to(&self, shape: &[usize]) -> Tensor<T> {
        if self.shape() == shape {
            return self.clone();
        }
        let target = broadcast_shapes(self.shape(), shape, "broadcast_to");
        assert!(
            target == shape,
            "broadcast_to: shape {:?} cannot be broadcast to {:?}",
            self.shape(),
            shape
        );
        // Read through broadcast strides; no second operand is allocated.
        let st = broadcast_strides(self.shape(), shape);
        let inner = shape.last().copied().unwrap_or(1);
        let is = st.last().copied().unwrap_or(0);
        let x = self.data();
        let mut out = vec![T::ZERO; numel(shape)];
        for_rows(&mut out, inner, |r, row| {
            let o = row_offset(r, shape, &st);
            for (j, v) in row.iter_mut().enumerate() {
                *v = x[o + j * is];
            }
        });
        Tensor::from_vec(out, shape)
    }

    /// Sums a (broadcast) gradient back down to `shape`: the adjoint of
    /// broadcasting. Each output element is summed in increasing input order.
    pub fn sum_to_shape(&self, shape: &[usize]) -> Tensor<T> {
        if self.shape() == shape {
            return self.clone();
        }
        assert!(
            broadcast_shapes(shape, self.shape(), "sum_to_shape") == self.shape(),
            "sum_to_shape: {:?} does not broadcast to {:?}",
            shape,
            self.shape()
        );
        let mut out = vec![T::ZERO; numel(shape)];
        let x = self.data();
        let lead = self.ndim() - shape.len();
        // Fast path: only leading axes were broadcast (a bias of shape (D)
        // against (B, T, D)): add whole rows, in row order.
        if shape == &self.shape()[lead..] && !out.is_empty() {
            return column_sums(x, None, out.len()).reshape(shape);
        }
        let st = broadcast_strides(shape, self.shape());
        let inner = self.shape().last().copied().unwrap_or(1);
        let is = st.last().copied().unwrap_or(0);
        for (r, row) in x.chunks(inner.max(1)).enumerate() {
            let o = row_offset(r, self.shape(), &st);
            for (j, &v) in row.iter().enumerate() {
                out[o + j * is] += v;
            }
        }
        Tensor::from_vec(out, shape)
    }

    /// In-place `self += other` (same shape); used to accumulate gradients.
    pub fn add_assign(&mut self, other: &Tensor<T>) {
        assert!(
            self.shape() == other.shape(),
            "add_assign: shapes {:?} and {:?} differ",
            self.shape(),
            other.shape()
        );
        for (a, &b) in self.data_mut().iter_mut().zip(other.data()) {
            *a += b;
        }
    }

    /// (outer, n, inner) view of the shape around `axis`.
    fn split_at_axis(&self, axis: usize) -> (usize, usize, usize) {
        let s = self.shape();
        (numel(&s[..axis]), s[axis], numel(&s[axis + 1..]))
    }

    fn reduced_shape(&self, axis: usize, keepdim: bool) -> Vec<usize> {
        let mut s = self.shape().to_vec();
        if keepdim {
            s[axis] = 1;
        } else {
            s.remove(axis);
        }
        s
    }

    /// Sum over one axis (negative counts from the end).
    pub fn sum_axis(&self, axis: isize, keepdim: bool) -> Tensor<T> {
        let ax = self.axis(axis, "sum");
        let (outer, n, inner) = self.split_at_axis(ax);
        let x = self.data();
        let mut out = vec![T::ZERO; outer * inner];
        let body = |o: usize, row: &mut [T]| {
            for j in 0..n {
                let s = (o * n + j) * inner;
                for (acc, &v) in row.iter_mut().zip(&x[s..s + inner]) {
                    *acc += v;
                }
            }
        };
        if x.len() >= PAR_MIN && inner > 0 {
            out.par_chunks_mut(inner)
                .enumerate()
                .for_each(|(o, row)| body(o, row));
        } else if inner > 0 {
            out.chunks_mut(inner)
                .enumerate()
                .for_each(|(o, row)| body(o, row));
        }
        Tensor::from_vec(out, &self.reduced_shape(ax, keepdim))
    }

    /// Maximum over one axis and the index of the first maximum.
    pub fn max_axis(&self, axis: isize, keepdim: bool) -> (Tensor<T>, Vec<usize>) {
        let ax = self.axis(axis, "max");
        let (outer, n, inner) = self.split_at_axis(ax);
        assert!(
            n > 0,
            "max: axis {axis} of shape {:?} is empty",
            self.shape()
        );
        let x = self.data();
        let mut out = vec![T::ZERO; outer * inner];
        let mut arg = vec![0usize; outer * inner];
        for o in 0..outer {
            for i in 0..inner {
                let (mut best, mut bi) = (x[o * n * inner + i], 0);
                for j in 1..n {
                    let v = x[(o * n + j) * inner + i];
                    if v > best {
                        best = v;
                        bi = j;
                    }
                }
                out[o * inner + i] = best;
                arg[o * inner + i] = bi;
            }
        }
        (Tensor::from_vec(out, &self.reduced_shape(ax, keepdim)), arg)
    }

    /// Sum of all elements as a scalar tensor. Blocks of fixed size are summed
    /// (in parallel), then the partial sums are added in block order.
    pub fn sum_all(&self) -> Tensor<T> {
        let x = self.data();
        let partial: Vec<T> = if x.len() >= PAR_MIN {
            x.par_chunks(SUM_BLOCK)
                .map(|c| c.iter().copied().sum())
                .collect()
        } else {
            x.chunks(SUM_BLOCK)
                .map(|c| c.iter().copied().sum())
                .collect()
        };
        Tensor::scalar(partial.into_iter().sum())
    }

    /// Axes reordered: output axis `i` is input axis `perm[i]`.
    pub fn permute(&self, perm: &[usize]) -> Tensor<T> {
        let nd = self.ndim();
        let mut seen = vec![false; nd];
        assert!(
            perm.len() == nd
                && perm
                    .iter()
                    .all(|&p| p < nd && !std::mem::replace(&mut seen[p], true)),
            "permute: {perm:?} is not a permutation of the axes of shape {:?}",
            self.shape()
        );
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return self.clone();
        }
        let in_st = strides(self.shape());
        let shape: Vec<usize> = perm.iter().map(|&p| self.shape()[p]).collect();
        let st: Vec<usize> = perm.iter().map(|&p| in_st[p]).collect();
        let inner = shape.last().copied().unwrap_or(1);
        let is = st.last().copied().unwrap_or(0);
        let x = self.data();
        let mut out = vec![T::ZERO; x.len()];
        for_rows(&mut out, inner, |r, row| {
            let o = row_offset(r, &shape, &st);
            for (j, v) in row.iter_mut().enumerate() {
                *v = x[o + j * is];
            }
        });
        Tensor::from_vec(out, &shape)
    }

    /// `len` entries of `axis` starting at `start` (a copy).
    pub fn narrow(&self, axis: isize, start: usize, len: usize) -> Tensor<T> {
        let ax = self.axis(axis, "narrow");
        let (outer, n, inner) = self.split_at_axis(ax);
        assert!(
            start + len <= n,
            "narrow: range {start}..{} out of bounds for axis {ax} of shape {:?}",
            start + len,
            self.shape()
        );
        let x = self.data();
        let mut out = Vec::with_capacity(outer * len * inner);
        for o in 0..outer {
            let s = (o * n + start) * inner;
            out.extend_from_slice(&x[s..s + len * inner]);
        }
        let mut shape = self.shape().to_vec();
        shape[ax] = len;
        Tensor::from_vec(out, &shape)
    }

    /// Joins tensors along `axis`; all other axes must agree.
    pub fn concat(parts: &[&Tensor<T>], axis: isize) -> Tensor<T> {
        assert!(!parts.is_empty(), "concat: no tensors given");
        let first = parts[0];
        let ax = first.axis(axis, "concat");
        for p in parts {
            let ok = p.ndim() == first.ndim()
                && p.shape()
                    .iter()
                    .zip(first.shape())
                    .enumerate()
                    .all(|(i, (a, b))| i == ax || a == b);
            assert!(
                ok,
                "concat: shapes {:?} and {:?} differ outside axis {ax}",
                first.shape(),
                p.shape()
            );
        }
        let outer = numel(&first.shape()[..ax]);
        let inner = numel(&first.shape()[ax + 1..]);
        let total: usize = parts.iter().map(|p| p.shape()[ax]).sum();
        let mut out = Vec::with_capacity(outer * total * inner);
        for o in 0..outer {
            for p in parts {
                let blk = p.shape()[ax] * inner;
                out.extend_from_slice(&p.data()[o * blk..(o + 1) * blk]);
            }
        }
        let mut shape = first.shape().to_vec();
        shape[ax] = total;
        Tensor::from_vec(out, &shape)
    }

    /// Batched matrix product `op(A) op(B)` where `op` transposes the last two
    /// axes when asked ([`Transpose::Yes`]). Batch axes broadcast. Transposes
    /// are strides handed to `gemm`, never copies.
    ///
    /// ```
    /// use autograd::{Tensor, Transpose};
    /// let a = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2]);
    /// // A A^T = [[1*1 + 2*2, 1*3 + 2*4], [3*1 + 4*2, 3*3 + 4*4]]
    /// let c = a.matmul_ex(&a, Transpose::No, Transpose::Yes, "example");
    /// assert_eq!(c.data(), &[5.0, 11.0, 11.0, 25.0]);
    /// ```
    pub fn matmul_ex(
        &self,
        other: &Tensor<T>,
        trans_a: Transpose,
        trans_b: Transpose,
        op: &str,
    ) -> Tensor<T> {
        let shape = matmul_shape(self, other, trans_a, trans_b, op);
        let mut out = vec![T::ZERO; numel(&shape)];
        matmul_into(self, other, trans_a, trans_b, op, &mut out);
        Tensor::from_vec(out, &shape)
    }

    /// Plain `A B` for the last two axes (batch axes broadcast).
    pub fn matmul(&self, other: &Tensor<T>) -> Tensor<T> {
        self.matmul_ex(other, Transpose::No, Transpose::No, "matmul")
    }
}

/// Whether a matmul operand is used as stored or transposed (its last two
/// axes swapped, through strides: no copy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transpose {
    /// The operand as stored.
    No,
    /// The operand with its last two axes swapped.
    Yes,
}

impl Transpose {
    #[inline]
    fn yes(self) -> bool {
        self == Transpose::Yes
    }
}

/// Output shape of `op(A) op(B)` (see [`Tensor::matmul_ex`]); panics naming
/// `op` and both shapes when they do not fit.
pub fn matmul_shape<T: Float>(
    a: &Tensor<T>,
    b: &Tensor<T>,
    trans_a: Transpose,
    trans_b: Transpose,
    op: &str,
) -> Vec<usize> {
    assert!(
        a.ndim() >= 2 && b.ndim() >= 2,
        "{op}: operands need at least 2 axes, got shapes {:?} and {:?}",
        a.shape(),
        b.shape()
    );
    let (ar, ac) = (a.shape()[a.ndim() - 2], a.shape()[a.ndim() - 1]);
    let (br, bc) = (b.shape()[b.ndim() - 2], b.shape()[b.ndim() - 1]);
    let (m, k) = if trans_a.yes() { (ac, ar) } else { (ar, ac) };
    let (k2, n) = if trans_b.yes() { (bc, br) } else { (br, bc) };
    assert!(
        k == k2,
        "{op}: inner dimensions differ: shapes {:?} and {:?}",
        a.shape(),
        b.shape()
    );
    let mut shape = broadcast_shapes(&a.shape()[..a.ndim() - 2], &b.shape()[..b.ndim() - 2], op);
    shape.extend([m, n]);
    shape
}

/// `op(A) op(B)` written into a preallocated `out` (overwritten), of the
/// shape [`matmul_shape`] gives. Products over the batch run in parallel
/// when large; a stack of matrices times one matrix is one tall `gemm`.
///
/// ```
/// use autograd::{Tensor, Transpose, matmul_into, matmul_shape, numel};
/// let a = Tensor::from_vec(vec![1.0f32, 2.0], &[1, 2]);
/// let b = Tensor::from_vec(vec![3.0f32, 4.0], &[2, 1]);
/// let shape = matmul_shape(&a, &b, Transpose::No, Transpose::No, "example");
/// let mut c = vec![0.0; numel(&shape)];
/// matmul_into(&a, &b, Transpose::No, Transpose::No, "example", &mut c);
/// assert_eq!(c, [11.0]);
/// ```
pub fn matmul_into<T: Float>(
    a: &Tensor<T>,
    b: &Tensor<T>,
    trans_a: Transpose,
    trans_b: Transpose,
    op: &str,
    out: &mut [T],
) {
    let shape = matmul_shape(a, b, trans_a, trans_b, op);
    assert!(
        out.len() == numel(&shape),
        "{op}: output buffer of {} elements for shape {shape:?}",
        out.len()
    );
    let (ar, ac) = (a.shape()[a.ndim() - 2], a.shape()[a.ndim() - 1]);
    let (br, bc) = (b.shape()[b.ndim() - 2], b.shape()[b.ndim() - 1]);
    let (m, n) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    let k = if trans_a.yes() { ar } else { ac };
    let batch = &shape[..shape.len() - 2];
    let nb = numel(batch);
    let (ba, bb) = (&a.shape()[..a.ndim() - 2], &b.shape()[..b.ndim() - 2]);
    // Logical strides of op(A) and op(B) inside one matrix.
    let (rsa, csa) = if trans_a.yes() { (1, ac) } else { (ac, 1) };
    let (rsb, csb) = if trans_b.yes() { (1, bc) } else { (bc, 1) };
    if m == 0 || n == 0 {
        return;
    }
    if bb.is_empty() && !trans_a.yes() {
        // A stack of row-major matrices is one tall (batch * M, K) matrix.
        let a = MatRef::strided(a.data(), numel(ba) * m, k, rsa, csa);
        gemm(a, MatRef::strided(b.data(), k, n, rsb, csb), out, false);
        return;
    }
    let (sa, sb) = (broadcast_strides(ba, batch), broadcast_strides(bb, batch));
    let (ma, mb) = (ar * ac, br * bc);
    let offset = |i: usize, st: &[usize]| -> usize {
        let (mut i, mut off) = (i, 0);
        for ax in (0..batch.len()).rev() {
            off += (i % batch[ax]) * st[ax];
            i /= batch[ax];
        }
        off
    };
    let one = |i: usize, c: &mut [T]| {
        let pa = &a.data()[offset(i, &sa) * ma..];
        let pb = &b.data()[offset(i, &sb) * mb..];
        gemm(
            MatRef::strided(pa, m, k, rsa, csa),
            MatRef::strided(pb, k, n, rsb, csb),
            c,
            false,
        );
    };
    if nb > 1 && nb * m * n * k >= GEMM_PAR_MIN_FLOPS {
        out.par_chunks_mut(m * n)
            .enumerate()
            .for_each(|(i, c)| one(i, c));
    } else {
        out.chunks_mut(m * n)
            .enumerate()
            .for_each(|(i, c)| one(i, c));
    }
}

/// A raw pointer that may cross to another rayon task: each task writes a
/// disjoint block of C through it.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr<T>(pub(crate) *mut T);

impl<T> SendPtr<T> {
    /// The pointer. A method, so closures capture the whole (Send) wrapper
    /// rather than the raw pointer field.
    #[inline]
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}
// SAFETY: only used to hand disjoint output blocks to parallel tasks.
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

/// A read-only strided view of an `rows x cols` matrix inside a slice:
/// element `(i, j)` is `data[i * row_stride + j * col_stride]`. A transposed
/// matrix is the same data with swapped strides ([`MatRef::t`]), so no copy
/// is ever made to transpose an operand of [`gemm`].
///
/// ```
/// use autograd::MatRef;
/// let data = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
/// let m = MatRef::new(&data, 2, 3); // [[1, 2, 3], [4, 5, 6]]
/// assert_eq!(m.at(1, 0), 4.0);
/// assert_eq!(m.t().at(0, 1), 4.0); // the transpose, (3, 2)
/// ```
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a, T> {
    /// The storage; element `(0, 0)` is `data[0]`.
    pub data: &'a [T],
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Distance in elements between `(i, j)` and `(i + 1, j)`.
    pub row_stride: usize,
    /// Distance in elements between `(i, j)` and `(i, j + 1)`.
    pub col_stride: usize,
}

impl<'a, T: Copy> MatRef<'a, T> {
    /// A contiguous row-major matrix (row stride `cols`, column stride 1).
    #[inline]
    pub fn new(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self::strided(data, rows, cols, cols, 1)
    }

    /// A matrix with explicit strides, e.g. one head's (T, Dk) columns
    /// inside a (T, D) buffer: `MatRef::strided(&x[h * dk..], t, dk, d, 1)`.
    #[inline]
    pub fn strided(
        data: &'a [T],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Self {
        MatRef {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        }
    }

    /// The transpose: the same storage with rows and columns swapped.
    #[inline]
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    /// Element `(i, j)` (panics if the storage is too short).
    #[inline]
    pub fn at(&self, i: usize, j: usize) -> T {
        self.data[i * self.row_stride + j * self.col_stride]
    }
}

/// Where [`gemm_raw`] writes C: a raw pointer to element `(0, 0)` and the
/// row stride (column stride 1). Raw, because the fused attention has
/// several tasks writing disjoint column blocks of one buffer.
#[derive(Clone, Copy)]
pub(crate) struct MatPtr<T> {
    pub(crate) ptr: SendPtr<T>,
    pub(crate) row_stride: usize,
}

impl<T> MatPtr<T> {
    /// C at `ptr` with row stride `row_stride`.
    #[inline]
    pub(crate) fn new(ptr: *mut T, row_stride: usize) -> Self {
        MatPtr {
            ptr: SendPtr(ptr),
            row_stride,
        }
    }
}

/// `C = A B` (or `C += A B` when `accumulate`) for `A` (m x k) and `B`
/// (k x n) given as strided views (a transposed operand is [`MatRef::t`])
/// and a contiguous row-major C of at least m x n elements. Panics naming
/// the shapes when the inner dimensions differ or a buffer is too short.
///
/// With more than one rayon thread, a large product is split into one block
/// per thread along its longer output axis (rows when m >= n, else columns),
/// so that the operand packed again by every block is the smaller one.
/// Splitting never changes a result: `gemm` computes every element of C as
/// the same sequence of multiply-adds over k (blocked by kc, independent of
/// the m and n tiling), so the output is bit-identical for any thread count
/// (tested with 1 and 2 threads).
///
/// ```
/// use autograd::{MatRef, gemm};
/// let a = [1.0, 2.0, 3.0, 4.0]; // [[1, 2], [3, 4]]
/// let mut c = [0.0; 4];
/// gemm(MatRef::new(&a, 2, 2), MatRef::new(&a, 2, 2).t(), &mut c, false); // A A^T
/// assert_eq!(c, [5.0, 11.0, 11.0, 25.0]);
/// ```
#[inline]
pub fn gemm<T: Float>(a: MatRef<'_, T>, b: MatRef<'_, T>, c: &mut [T], accumulate: bool) {
    let (m, n) = (a.rows, b.cols);
    assert!(
        c.len() >= m * n,
        "gemm: C has {} elements, needs {m} x {n}",
        c.len()
    );
    // SAFETY: C is exclusively borrowed and holds m rows of n.
    unsafe { gemm_raw(a, b, MatPtr::new(c.as_mut_ptr(), n), accumulate) }
}

/// [`gemm`] into C at `c` (row stride `c.row_stride`, column stride 1):
/// the fused attention writes each head's block straight into (B, T, D).
///
/// # Safety
/// `c` must be valid for writes of rows `0..a.rows`, columns `0..b.cols` at
/// its row stride, and nothing else may access that block during the call.
pub(crate) unsafe fn gemm_raw<T: Float>(
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    c: MatPtr<T>,
    accumulate: bool,
) {
    assert!(
        a.cols == b.rows,
        "gemm: inner dimensions differ: A is {} x {}, B is {} x {}",
        a.rows,
        a.cols,
        b.rows,
        b.cols
    );
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let (rsa, csa, rsb, csb) = (a.row_stride, a.col_stride, b.row_stride, b.col_stride);
    let (cp, rsc) = (c.ptr, c.row_stride);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                // SAFETY: row r of the block, as the caller guarantees.
                unsafe { std::slice::from_raw_parts_mut(cp.get().add(r * rsc), n) }.fill(T::ZERO);
            }
        }
        return;
    }
    let (a, b) = (a.data, b.data);
    // Bounds: the last element of A and B that gemm will read.
    assert!(
        (m - 1) * rsa + (k - 1) * csa < a.len(),
        "gemm: A too short for {m} x {k}"
    );
    assert!(
        (k - 1) * rsb + (n - 1) * csb < b.len(),
        "gemm: B too short for {k} x {n}"
    );
    let beta = if accumulate { T::ONE } else { T::ZERO };
    // Block (r0, rows) x (c0, cols) of C.
    let run = |r0: usize, rows: usize, c0: usize, cols: usize| {
        // SAFETY: the asserts above bound every read of A and B (a block
        // reads a sub-range of them); blocks of C are disjoint and inside the
        // caller's m x n block.
        unsafe {
            T::gemm(
                rows,
                k,
                cols,
                T::ONE,
                a.as_ptr().add(r0 * rsa),
                rsa as isize,
                csa as isize,
                b.as_ptr().add(c0 * csb),
                rsb as isize,
                csb as isize,
                beta,
                cp.get().add(r0 * rsc + c0),
                rsc as isize,
                1,
            )
        }
    };
    let threads = rayon::current_num_threads();
    if threads == 1 || m * n * k < GEMM_PAR_MIN_FLOPS {
        run(0, m, 0, n);
        return;
    }
    // Blocks are multiples of 8 (the kernels' tile edge) so that tiles stay aligned.
    let long = m.max(n);
    let block = long.div_ceil(threads).div_ceil(8) * 8;
    let blocks = long.div_ceil(block);
    (0..blocks).into_par_iter().for_each(|i| {
        let (s, e) = (i * block, ((i + 1) * block).min(long));
        if m >= n {
            run(s, e - s, 0, n);
        } else {
            run(0, m, s, e - s);
        }
    });
}

impl<T: Float> Tensor<T> {
    /// Elementwise `f(a, b, c)` over three tensors of one shape (used by
    /// backward passes: `g * f'(x, y)` in one pass, no temporaries).
    pub fn map3(
        &self,
        b: &Tensor<T>,
        c: &Tensor<T>,
        op: &str,
        f: impl Fn(T, T, T) -> T + Sync + Send,
    ) -> Tensor<T> {
        assert!(
            self.shape() == b.shape() && b.shape() == c.shape(),
            "{op}: shapes {:?}, {:?} and {:?} differ",
            self.shape(),
            b.shape(),
            c.shape()
        );
        let (x, y, z) = (self.data(), b.data(), c.data());
        let mut out = vec![T::ZERO; x.len()];
        let inner = self.shape().last().copied().unwrap_or(1).max(1);
        for_rows(&mut out, inner, |r, row| {
            let s = r * inner;
            for (j, o) in row.iter_mut().enumerate() {
                *o = f(x[s + j], y[s + j], z[s + j]);
            }
        });
        Tensor::from_vec(out, self.shape())
    }

    /// Runs `f(row_in, row_out)` over the rows of the last axis, writing a
    /// tensor of the same shape (rows in parallel when large).
    pub fn map_rows(&self, f: impl Fn(&[T], &mut [T]) + Sync + Send) -> Tensor<T> {
        let x = self.data();
        let inner = self.shape().last().copied().unwrap_or(1);
        let mut out = vec![T::ZERO; x.len()];
        for_rows(&mut out, inner, |r, row| {
            f(&x[r * inner..(r + 1) * inner], row)
        });
        Tensor::from_vec(out, self.shape())
    }

    /// Like [`Tensor::map_rows`] over two tensors of one shape.
    pub fn zip_rows(
        &self,
        b: &Tensor<T>,
        op: &str,
        f: impl Fn(&[T], &[T], &mut [T]) + Sync + Send,
    ) -> Tensor<T> {
        assert!(
            self.shape() == b.shape(),
            "{op}: shapes {:?} and {:?} differ",
            self.shape(),
            b.shape()
        );
        let (x, y) = (self.data(), b.data());
        let inner = self.shape().last().copied().unwrap_or(1);
        let mut out = vec![T::ZERO; x.len()];
        for_rows(&mut out, inner, |r, row| {
            let s = r * inner..(r + 1) * inner;
            f(&x[s.clone()], &y[s], row)
        });
        Tensor::from_vec(out, self.shape())
    }
}

/// `sum over rows of a[r, j] * b[r, j]` (or of `a[r, j]` alone) for each
/// column `j` of (rows, d) data, as a (d) tensor. Blocks of
/// `ROWS_PER_TASK` rows are summed in parallel, then the block sums are
/// added in block order: the same result for any thread count.
pub(crate) fn column_sums<T: Float>(a: &[T], b: Option<&[T]>, d: usize) -> Tensor<T> {
    if d == 0 {
        return Tensor::zeros(&[0]);
    }
    let blk = ROWS_PER_TASK * d;
    let partial = |i: usize| -> Vec<T> {
        let mut s = vec![T::ZERO; d];
        let end = ((i + 1) * blk).min(a.len());
        for r in (i * blk..end).step_by(d) {
            match b {
                Some(b) => {
                    for j in 0..d {
                        s[j] += a[r + j] * b[r + j];
                    }
                }
                None => {
                    for j in 0..d {
                        s[j] += a[r + j];
                    }
                }
            }
        }
        s
    };
    let parts: Vec<Vec<T>> = (0..a.len().div_ceil(blk))
        .into_par_iter()
        .map(partial)
        .collect();
    let mut total = vec![T::ZERO; d];
    for p in parts {
        for (t, v) in total.iter_mut().zip(p) {
            *t += v;
        }
    }
    Tensor::from_vec(total, &[d])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The naive reference: `C[i][j] = sum_p A[i][p] B[p][j]` with explicit
    /// strides, summed in f64.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        m: usize,
        k: usize,
        n: usize,
        a: &[f64],
        rsa: usize,
        csa: usize,
        b: &[f64],
        rsb: usize,
        csb: usize,
    ) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k)
                    .map(|p| a[i * rsa + p * csa] * b[p * rsb + j * csb])
                    .sum();
            }
        }
        c
    }

    /// `gemm` (plain, transposed operands, accumulating, and large enough to
    /// be split across threads) agrees with the naive loop.
    #[test]
    fn gemm_matches_the_naive_loop() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (3, 5, 2),
            (17, 9, 33),
            (130, 70, 260),
            (260, 70, 130),
        ] {
            for &(ta, tb) in &[(false, false), (true, false), (false, true), (true, true)] {
                let a = Tensor::<f64>::randn(&[m * k], 0.0, 1.0, (m * k) as u64);
                let b = Tensor::<f64>::randn(&[k * n], 0.0, 1.0, (k * n + 1) as u64);
                let (rsa, csa) = if ta { (1, m) } else { (k, 1) };
                let (rsb, csb) = if tb { (1, k) } else { (n, 1) };
                let want = naive(m, k, n, a.data(), rsa, csa, b.data(), rsb, csb);
                for threads in [1, 2] {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .unwrap();
                    let mut c = vec![0.5; m * n];
                    // Overwrite, then accumulate onto the result: C = 1x, then 2x the product.
                    for (accumulate, times) in [(false, 1.0), (true, 2.0)] {
                        pool.install(|| {
                            gemm(
                                MatRef::strided(a.data(), m, k, rsa, csa),
                                MatRef::strided(b.data(), k, n, rsb, csb),
                                &mut c,
                                accumulate,
                            )
                        });
                        for (x, y) in c.iter().zip(&want) {
                            assert!(
                                (x - times * y).abs() < 1e-9,
                                "({m},{k},{n}) ta={ta} tb={tb} accumulate={accumulate}: {x} vs {}",
                                times * y
                            );
                        }
                    }
                }
            }
        }
    }
}
