//! `TokenBatch`: padded token ids (B, T), the model's input.

/// A batch of token sequences, padded to one length: ids (B, T) row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenBatch {
    /// Ids (B, T), row-major.
    pub ids: Vec<usize>,
    /// B.
    pub batch: usize,
    /// T.
    pub len: usize,
}

impl TokenBatch {
    /// Pads every sequence with `pad` to the longest one.
    ///
    /// ```
    /// let b = transformer::TokenBatch::padded(&[vec![5, 6, 7], vec![8]], 0);
    /// assert_eq!((b.batch, b.len), (2, 3));
    /// assert_eq!(b.ids, vec![5, 6, 7, 8, 0, 0]);
    /// ```
    pub fn padded(seqs: &[Vec<usize>], pad: usize) -> Self {
        let len = seqs.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(seqs.len() * len);
        for s in seqs {
            ids.extend_from_slice(s);
            ids.extend(std::iter::repeat_n(pad, len - s.len()));
        }
        TokenBatch {
            ids,
            batch: seqs.len(),
            len,
        }
    }

    /// Wraps ids (B, T); panics if the count does not match.
    pub fn new(ids: Vec<usize>, batch: usize, len: usize) -> Self {
        assert!(
            ids.len() == batch * len,
            "TokenBatch: {} ids do not fill (B, T) = ({batch}, {len})",
            ids.len()
        );
        TokenBatch { ids, batch, len }
    }

    /// `[B, T]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.batch, self.len]
    }

    /// Row `b` as a slice.
    pub fn row(&self, b: usize) -> &[usize] {
        &self.ids[b * self.len..(b + 1) * self.len]
    }
}
