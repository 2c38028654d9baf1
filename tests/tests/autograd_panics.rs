//! Shape errors are programming errors: they panic with a message that names
//! the op and the shapes involved. The expected strings are the exact
//! messages of the ops' asserts.

use autograd::{Tape, Tensor, Var};

/// A tape-free f32 tensor of zeros.
fn z(shape: &[usize]) -> Tensor<f32> {
    Tensor::zeros(shape)
}

#[test]
#[should_panic(expected = "add: shapes [2, 3] and [4] cannot be broadcast together")]
fn add_of_shapes_that_do_not_broadcast() {
    let tape = Tape::new();
    let _ = tape.leaf(z(&[2, 3])) + tape.leaf(z(&[4]));
}

#[test]
#[should_panic(expected = "mul: shapes [2, 3] and [2, 1, 2] cannot be broadcast together")]
fn mul_of_shapes_that_do_not_broadcast() {
    let tape = Tape::new();
    let _ = tape.leaf(z(&[2, 3])) * tape.leaf(z(&[2, 1, 2]));
}

#[test]
#[should_panic(expected = "matmul: inner dimensions differ: shapes [2, 3] and [4, 5]")]
fn matmul_inner_dimension_mismatch() {
    let tape = Tape::new();
    let _ = tape.leaf(z(&[2, 3])).matmul(tape.leaf(z(&[4, 5])));
}

#[test]
#[should_panic(expected = "matmul: shapes [2] and [3] cannot be broadcast together")]
fn matmul_batch_axes_that_do_not_broadcast() {
    let tape = Tape::new();
    let _ = tape.leaf(z(&[2, 4, 5])).matmul(tape.leaf(z(&[3, 5, 6])));
}

#[test]
#[should_panic(expected = "matmul: operands need at least 2 axes, got shapes [3] and [3, 2]")]
fn matmul_of_a_vector() {
    let tape = Tape::new();
    let _ = tape.leaf(z(&[3])).matmul(tape.leaf(z(&[3, 2])));
}

#[test]
#[should_panic(expected = "matmul_t: inner dimensions differ: shapes [2, 3] and [4, 5]")]
fn matmul_t_inner_dimension_mismatch() {
    // (M, K) x (N, K)^T needs the same K: 3 vs 5.
    let tape = Tape::new();
    let _ = tape.leaf(z(&[2, 3])).matmul_t(tape.leaf(z(&[4, 5])));
}

#[test]
#[should_panic(expected = "concat: shapes [2, 3] and [3, 2] differ outside axis 1")]
fn concat_of_shapes_differing_outside_the_axis() {
    let tape = Tape::new();
    let _ = Var::concat(&[tape.leaf(z(&[2, 3])), tape.leaf(z(&[3, 2]))], 1);
}

#[test]
#[should_panic(
    expected = "layer_norm: input [2, 3] needs gain and bias of shape [3], got [4] and [3]"
)]
fn layer_norm_with_a_gain_of_the_wrong_shape() {
    let tape = Tape::new();
    let x = tape.leaf(z(&[2, 3]));
    let _ = x.layer_norm(tape.leaf(z(&[4])), tape.leaf(z(&[3])), 1e-5);
}

#[test]
#[should_panic(expected = "embedding: id 5 out of range for table of shape [3, 2]")]
fn embedding_id_out_of_range() {
    let tape = Tape::new();
    let _ = tape.leaf(z(&[3, 2])).embedding(&[0, 5, 1], &[3]);
}

#[test]
#[should_panic(expected = "embedding: 3 ids do not fill shape [2, 2]")]
fn embedding_ids_not_filling_their_shape() {
    let tape = Tape::new();
    let _ = tape.leaf(z(&[3, 2])).embedding(&[0, 1, 2], &[2, 2]);
}

#[test]
#[should_panic(expected = "cross_entropy: logits [2, 3] have 2 rows but 3 targets were given")]
fn cross_entropy_with_the_wrong_number_of_targets() {
    let tape = Tape::new();
    let _ = tape.leaf(z(&[2, 3])).cross_entropy(&[0, 1, 2], None, 0.0);
}

#[test]
#[should_panic(expected = "cross_entropy: target 3 out of range for logits [2, 3]")]
fn cross_entropy_target_out_of_range() {
    let tape = Tape::new();
    let _ = tape.leaf(z(&[2, 3])).cross_entropy(&[0, 3], Some(0), 0.0);
}

#[test]
#[should_panic(expected = "reshape: cannot reshape [2, 3] to [4, 2]")]
fn reshape_to_a_different_element_count() {
    let tape = Tape::new();
    let _ = tape.leaf(z(&[2, 3])).reshape(&[4, 2]);
}

#[test]
#[should_panic(expected = "narrow: range 2..5 out of bounds for axis 1 of shape [2, 4]")]
fn narrow_out_of_range() {
    let tape = Tape::new();
    let _ = tape.leaf(z(&[2, 4])).narrow(1, 2, 3);
}

#[test]
#[should_panic(expected = "narrow: axis 2 out of range for shape [2, 4]")]
fn narrow_of_a_missing_axis() {
    let tape = Tape::new();
    let _ = tape.leaf(z(&[2, 4])).narrow(2, 0, 1);
}

#[test]
#[should_panic(
    expected = "split_heads: shape [2, 3, 5] is not (B, T, D) with D divisible by 2 heads"
)]
fn split_heads_indivisible() {
    let tape = Tape::new();
    let _ = tape.leaf(z(&[2, 3, 5])).split_heads(2);
}

#[test]
#[should_panic(expected = "merge_heads: shape [2, 3, 4] is not (B, H, T, Dk)")]
fn merge_heads_of_a_3d_input() {
    let tape = Tape::new();
    let _ = tape.leaf(z(&[2, 3, 4])).merge_heads();
}

#[test]
#[should_panic(expected = "sum: axis -3 out of range for shape [2, 3]")]
fn sum_over_a_missing_axis() {
    let tape = Tape::new();
    let _ = tape.leaf(z(&[2, 3])).sum(-3, false);
}

#[test]
#[should_panic(expected = "permute: [0, 0] is not a permutation of the axes of shape [2, 3]")]
fn permute_by_a_non_permutation() {
    let tape = Tape::new();
    let _ = tape.leaf(z(&[2, 3])).permute(&[0, 0]);
}

#[test]
#[should_panic(expected = "masked_fill: shapes [2, 3] and [2] cannot be broadcast together")]
fn masked_fill_with_a_mask_that_does_not_broadcast() {
    let tape = Tape::new();
    let _ = tape.leaf(z(&[2, 3])).masked_fill(&z(&[2]), 0.0);
}

#[test]
#[should_panic(expected = "dropout: p = 1 is not in [0, 1)")]
fn dropout_with_p_one() {
    use rand::SeedableRng;
    let tape = Tape::new();
    let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(0);
    let _ = tape.leaf(z(&[2])).dropout(1.0, true, &mut rng);
}

#[test]
#[should_panic(expected = "an input var belongs to another tape")]
fn vars_from_two_tapes_do_not_mix() {
    let (t1, t2) = (Tape::new(), Tape::new());
    let _ = t1.leaf(z(&[2])) + t2.leaf(z(&[2]));
}

#[test]
#[should_panic(
    expected = "linear: input [2, 3] does not fit weight [4, 5] (need (..., K) and (K, N))"
)]
fn linear_inner_dimension_mismatch() {
    let tape = Tape::new();
    let _ = tape.leaf(z(&[2, 3])).linear(tape.leaf(z(&[4, 5])), None);
}

#[test]
#[should_panic(expected = "linear: bias [3] does not fit weight [3, 4] (need (4))")]
fn linear_bias_of_the_wrong_shape() {
    let tape = Tape::new();
    let _ = tape
        .leaf(z(&[2, 3]))
        .linear(tape.leaf(z(&[3, 4])), Some(tape.leaf(z(&[3]))));
}

#[test]
#[should_panic(
    expected = "attention: q [1, 2, 4], k [1, 3, 4], v [1, 3, 4] are not (B, Tq, D), (B, Tk, D), (B, Tk, D) with D divisible by 3 heads"
)]
fn attention_heads_not_dividing_the_width() {
    let tape = Tape::new();
    let (q, k) = (tape.leaf(z(&[1, 2, 4])), tape.leaf(z(&[1, 3, 4])));
    let _ = q.attention(k, k, 3, None);
}

#[test]
#[should_panic(
    expected = "attention: q [1, 2, 4], k [1, 3, 4], v [1, 2, 4] are not (B, Tq, D), (B, Tk, D), (B, Tk, D) with D divisible by 2 heads"
)]
fn attention_keys_and_values_of_different_lengths() {
    let tape = Tape::new();
    let (q, k) = (tape.leaf(z(&[1, 2, 4])), tape.leaf(z(&[1, 3, 4])));
    let _ = q.attention(k, q, 2, None);
}

#[test]
#[should_panic(
    expected = "attention: mask [2, 2] does not broadcast to the scores (B, H, Tq, Tk) = [1, 2, 2, 3]"
)]
fn attention_mask_that_does_not_broadcast() {
    let tape = Tape::new();
    let (q, k) = (tape.leaf(z(&[1, 2, 4])), tape.leaf(z(&[1, 3, 4])));
    let _ = q.attention(k, k, 2, Some(&z(&[2, 2])));
}

// Issue 10, finding 2: sizes that overflow `usize` used to wrap silently in
// release builds ([2^59, 32] -> 0 elements, so a "tensor" with no storage).

#[test]
#[should_panic(
    expected = "numel: shape [576460752303423488, 32] has more elements than a usize can count"
)]
fn a_shape_whose_size_overflows_panics_naming_it() {
    let _ = z(&[1 << 59, 32]);
}

#[test]
fn from_outside_an_overflowing_shape_is_an_error_naming_it() {
    let shape = [1usize << 59, 32];
    assert_eq!(autograd::checked_numel(&shape), None);
    assert_eq!(autograd::checked_numel(&[1 << 31, 1 << 31]), Some(1 << 62));
    let err = Tensor::<f32>::try_from_vec(vec![], &shape).unwrap_err();
    assert!(
        err.contains("[576460752303423488, 32]") && err.contains("more elements than"),
        "{err}"
    );
    // An empty shape axis is still legal: zero elements, nothing overflows.
    assert_eq!(
        Tensor::<f32>::try_from_vec(vec![], &[0, 1 << 62])
            .unwrap()
            .numel(),
        0
    );
}

#[test]
#[should_panic(expected = "mm: inner dimensions differ: shapes [2, 3] and [3, 4]")]
fn matmul_shape_checks_the_inner_dimension_after_transposing() {
    // A^T is (3, 2): its 2 columns do not meet B's 3 rows (untransposed,
    // the same shapes would fit).
    let _ = autograd::matmul_shape(
        &z(&[2, 3]),
        &z(&[3, 4]),
        autograd::Transpose::Yes,
        autograd::Transpose::No,
        "mm",
    );
}

#[test]
#[should_panic(expected = "mm: output buffer of 5 elements for shape [2, 3]")]
fn matmul_into_checks_the_output_buffer() {
    let mut out = vec![0.0f32; 5];
    autograd::matmul_into(
        &z(&[2, 4]),
        &z(&[4, 3]),
        autograd::Transpose::No,
        autograd::Transpose::No,
        "mm",
        &mut out,
    );
}

#[test]
#[should_panic(expected = "mm: shapes [2, 1] and [3, 2] cannot be broadcast together")]
fn matmul_into_checks_the_batch_axes() {
    let mut out = vec![0.0f32; 0];
    autograd::matmul_into(
        &z(&[2, 1, 2, 4]),
        &z(&[3, 2, 4, 3]),
        autograd::Transpose::No,
        autograd::Transpose::No,
        "mm",
        &mut out,
    );
}
