//! The key/value cache of incremental decoding (issue 11), and attention of
//! new queries against it.
//!
//! Without a cache, every decoding step re-runs the decoder over the whole
//! prefix: O(T^2) work per sentence for T output tokens. With one, each
//! step runs the decoder on the newest position only: its self-attention
//! keys and values are appended to the cache, and the earlier positions'
//! are read back; the cross-attention keys and values over the encoder's
//! memory are projected once per sentence.
//!
//! Rows are addressed through an index (logical row -> stored row), so that
//! beam search's reselection of hypotheses and the dropping of finished
//! sources cost an index update: a cache that is never appended to again
//! (cross-attention) is never copied, and one that is (self-attention) is
//! gathered once, at its next append.

use autograd::{Float, Tensor};
use rayon::prelude::*;

/// Below this many multiply-adds a step's cached attention runs on one
/// thread (rayon's task overhead would outweigh the work).
const PAR_MIN_WORK: usize = 1 << 15;

/// Projected keys and values of one attention block, for R rows (sentences
/// or beam hypotheses), each position `width` (= D) wide, stored as
/// (rows, capacity, width) with room to grow.
///
/// ```
/// use autograd::Tensor;
/// use transformer::KvCache;
/// let mut c = KvCache::<f64>::new(2, 4, 3); // 2 rows, room for 4 positions, width 3
/// let k = Tensor::from_vec((0..6).map(f64::from).collect(), &[2, 1, 3]); // (R, 1, D)
/// c.append(&k, &k);
/// assert_eq!(c.len(), 1);
/// assert_eq!(c.keys(1), &[3.0, 4.0, 5.0]);
/// c.reorder(&[1, 1, 0]); // beam reselection: rows (1, 1, 0)
/// assert_eq!((c.rows(), c.keys(0)), (3, &[3.0, 4.0, 5.0][..]));
/// ```
#[derive(Clone, Debug)]
pub struct KvCache<T: Float = f32> {
    /// (stored rows, capacity, width)
    keys: Vec<T>,
    /// (stored rows, capacity, width)
    values: Vec<T>,
    /// Buffers the next gather writes into (then swapped with the above).
    spare_keys: Vec<T>,
    spare_values: Vec<T>,
    /// Logical row -> stored row.
    index: Vec<usize>,
    len: usize,
    capacity: usize,
    width: usize,
}

impl<T: Float> KvCache<T> {
    /// An empty cache for `rows` rows with room for `capacity` positions
    /// (it grows past that when needed) of width `width`.
    pub fn new(rows: usize, capacity: usize, width: usize) -> Self {
        let n = rows * capacity * width;
        KvCache {
            keys: vec![T::ZERO; n],
            values: vec![T::ZERO; n],
            spare_keys: Vec::new(),
            spare_values: Vec::new(),
            index: (0..rows).collect(),
            len: 0,
            capacity,
            width,
        }
    }

    /// Number of (logical) rows.
    pub fn rows(&self) -> usize {
        self.index.len()
    }

    /// Positions cached so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the first append.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The positions it has room for before it must grow.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The width D of each key and value.
    pub fn width(&self) -> usize {
        self.width
    }

    fn span(&self, r: usize) -> std::ops::Range<usize> {
        assert!(
            r < self.rows(),
            "KvCache: row {r} out of range (rows = {})",
            self.rows()
        );
        let start = self.index[r] * self.capacity * self.width;
        start..start + self.len * self.width
    }

    /// Row `r`'s keys, (len, width) row-major.
    pub fn keys(&self, r: usize) -> &[T] {
        &self.keys[self.span(r)]
    }

    /// Row `r`'s values, (len, width) row-major.
    pub fn values(&self, r: usize) -> &[T] {
        &self.values[self.span(r)]
    }

    /// Appends `keys` and `values`, each (R, n, D), as positions
    /// `len..len + n`, growing the capacity (at least doubling it, so the
    /// copies stay amortised O(1) per position) when they do not fit.
    /// Panics on a shape that does not match the cache.
    pub fn append(&mut self, keys: &Tensor<T>, values: &Tensor<T>) {
        let (r, d) = (self.rows(), self.width);
        let shape = keys.shape();
        assert!(
            shape.len() == 3 && shape[0] == r && shape[2] == d && values.shape() == shape,
            "KvCache::append: keys {:?} and values {:?} must both be (R, n, D) = ({r}, n, {d})",
            shape,
            values.shape()
        );
        let n = shape[1];
        if self.len + n > self.capacity {
            self.grow((self.len + n).max(2 * self.capacity));
        }
        self.materialize();
        let cap = self.capacity;
        for (dst, src) in [(&mut self.keys, keys), (&mut self.values, values)] {
            for row in 0..r {
                let at = (row * cap + self.len) * d;
                dst[at..at + n * d].copy_from_slice(&src.data()[row * n * d..(row + 1) * n * d]);
            }
        }
        self.len += n;
    }

    /// Makes the rows `idx` (indices of the current rows; repeats allowed)
    /// the new rows, in that order: beam search keeping hypotheses, or
    /// greedy search dropping finished sources. Costs an index update; the
    /// stored rows are gathered at the next [`KvCache::append`].
    pub fn reorder(&mut self, idx: &[usize]) {
        let rows = self.rows();
        self.index = idx
            .iter()
            .map(|&i| {
                assert!(
                    i < rows,
                    "KvCache::reorder: row {i} out of range (rows = {rows})"
                );
                self.index[i]
            })
            .collect();
    }

    /// Re-lays the rows out with room for `capacity` positions (in index
    /// order, so the index becomes the identity).
    fn grow(&mut self, capacity: usize) {
        let (old_row, new_row) = (self.capacity * self.width, capacity * self.width);
        let used = self.len * self.width;
        for buf in [&mut self.keys, &mut self.values] {
            let mut out = vec![T::ZERO; self.index.len() * new_row];
            for (r, &i) in self.index.iter().enumerate() {
                out[r * new_row..r * new_row + used]
                    .copy_from_slice(&buf[i * old_row..i * old_row + used]);
            }
            *buf = out;
        }
        self.spare_keys = Vec::new();
        self.spare_values = Vec::new();
        self.index = (0..self.index.len()).collect();
        self.capacity = capacity;
    }

    /// Gathers the stored rows into index order (identity index after),
    /// into the spare buffers, which are then swapped in: after the first
    /// reorder no step allocates, and only the filled positions are copied.
    fn materialize(&mut self) {
        let row = self.capacity * self.width;
        let n = self.index.len() * row;
        if n == self.keys.len() && self.index.iter().enumerate().all(|(r, &i)| r == i) {
            return;
        }
        let used = self.len * self.width;
        for (buf, spare) in [
            (&mut self.keys, &mut self.spare_keys),
            (&mut self.values, &mut self.spare_values),
        ] {
            spare.resize(n, T::ZERO);
            for (r, &i) in self.index.iter().enumerate() {
                spare[r * row..r * row + used].copy_from_slice(&buf[i * row..i * row + used]);
            }
            std::mem::swap(buf, spare);
        }
        self.index = (0..self.index.len()).collect();
    }

    /// Multi-head scaled dot-product attention of `q` (R, Tq, D), already
    /// projected, against every cached key and value, with `heads` heads:
    /// `softmax(q k^T / sqrt(D / heads) + M) v` per head -> (R, Tq, D),
    /// before the output projection. `mask` (R|1, 1, Tq|1, Tk) is 0 to
    /// attend, non-zero to mask (a fully masked row gives zeros, as the
    /// `attention` op does). The reference it must agree with is that op
    /// (`decode_cache_attention_matches_the_attention_op` in
    /// transformer/tests/decode.rs).
    pub fn attend(&self, q: &Tensor<T>, heads: usize, mask: Option<&Tensor<T>>) -> Tensor<T> {
        let (r, d, tk) = (self.rows(), self.width, self.len);
        let shape = q.shape();
        assert!(
            shape.len() == 3 && shape[0] == r && shape[2] == d,
            "KvCache::attend: queries {shape:?} must be (R, Tq, D) = ({r}, Tq, {d})"
        );
        assert!(
            heads > 0 && d.is_multiple_of(heads),
            "KvCache::attend: width {d} is not divisible by {heads} heads"
        );
        let tq = shape[1];
        // Mask strides over (rows, queries); keys are contiguous.
        let (m_rows, m_q) = match mask {
            Some(m) => {
                let s = m.shape();
                assert!(
                    s.len() == 4
                        && (s[0] == r || s[0] == 1)
                        && s[1] == 1
                        && (s[2] == tq || s[2] == 1)
                        && s[3] == tk,
                    "KvCache::attend: mask {s:?} must broadcast to (R, 1, Tq, Tk) = ({r}, 1, {tq}, {tk})"
                );
                (
                    if s[0] == 1 { 0 } else { s[2] * tk },
                    if s[2] == 1 { 0 } else { tk },
                )
            }
            None => (0, 0),
        };
        let dk = d / heads;
        let scale = T::from_f64(1.0 / (dk as f64).sqrt());
        let mut out = vec![T::ZERO; r * tq * d];
        // One output row (R, Tq) at a time: rows are independent, so the
        // result is the same whatever the thread count. With AVX2 when the
        // CPU has it (`autograd::wide`: the same operations in the same
        // order, so the same bits).
        let one_row = |(row_q, o): (usize, &mut [T])| {
            let (row, i) = (row_q / tq.max(1), row_q % tq.max(1));
            let qr = &q.data()[row_q * d..(row_q + 1) * d];
            let m = mask.map(|m| &m.data()[row * m_rows + i * m_q..][..tk]);
            let (k, v) = (self.keys(row), self.values(row));
            autograd::wide(
                #[inline(always)]
                || attend_row(qr, k, v, m, heads, scale, o),
            )
        };
        if r * tq * tk * d >= PAR_MIN_WORK {
            out.par_chunks_mut(d.max(1)).enumerate().for_each(one_row);
        } else {
            out.chunks_mut(d.max(1)).enumerate().for_each(one_row);
        }
        Tensor::from_vec(out, &[r, tq, d])
    }
}

/// One query row `qr` (D) against a row's keys `k` and values `v` (Tk, D),
/// all heads, added into `o` (D); `m` (Tk) non-zero masks a key. Keys and
/// values are streamed once, all heads together (each key's D values are
/// contiguous): read head by head, the same rows were fetched H times at a
/// stride and the loop waited on memory (17.7% -> 11.6% of W5's cached
/// decoding). Each output element is the same sum in the same order as
/// head by head.
#[inline(always)]
fn attend_row<T: Float>(
    qr: &[T],
    k: &[T],
    v: &[T],
    m: Option<&[T]>,
    heads: usize,
    scale: T,
    o: &mut [T],
) {
    let (d, tk) = (qr.len(), k.len() / qr.len().max(1));
    let dk = d / heads;
    let mut p = vec![T::NEG_INFINITY; heads * tk]; // (H, Tk) scores, then weights
    for j in (0..tk).filter(|&j| !m.is_some_and(|m| m[j] != T::ZERO)) {
        let kj = &k[j * d..(j + 1) * d];
        for h in 0..heads {
            let c = h * dk..(h + 1) * dk;
            p[h * tk + j] = dot(&qr[c.clone()], &kj[c]) * scale;
        }
    }
    // Per head, the softmax's normaliser z, or None when the head's row is
    // fully masked (or there are no keys): zeros.
    let z: Vec<Option<T>> = p
        .chunks_mut(tk.max(1))
        .map(|ph| {
            let max = ph.iter().fold(T::NEG_INFINITY, |a, &b| a.max(b));
            if max == T::NEG_INFINITY {
                return None;
            }
            // The exps in a loop of their own (it vectorises), then their
            // sum in order.
            for pj in ph.iter_mut() {
                *pj = (*pj - max).exp_fast();
            }
            Some(ph.iter().fold(T::ZERO, |a, &b| a + b))
        })
        .collect();
    for j in 0..tk {
        let vj = &v[j * d..(j + 1) * d];
        for (h, z) in z.iter().enumerate() {
            let Some(z) = *z else { continue };
            let w = p[h * tk + j] / z;
            let c = h * dk..(h + 1) * dk;
            for (a, b) in o[c.clone()].iter_mut().zip(&vj[c]) {
                *a += w * *b;
            }
        }
    }
}

/// `sum_i a_i b_i` in eight interleaved partial sums, so that the compiler
/// can keep them in one SIMD register (a single running sum is a chain of
/// dependent adds it may not reorder). The order is fixed by the lengths,
/// so the result is the same on every run and thread count.
#[inline]
fn dot<T: Float>(a: &[T], b: &[T]) -> T {
    let mut acc = [T::ZERO; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: T = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| *x * *y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}
