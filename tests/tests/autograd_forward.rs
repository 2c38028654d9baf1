//! Literal forward values: for every op, hand-computed numbers (written in
//! the test, never computed by the library) against the op's output.
//!
//! Arithmetic and shape ops run in f32 (the training type) and must be exact;
//! transcendental ops run in f64 against 16-digit literals (`1e-14`) and in
//! f32 (`1e-6`).

use autograd::{Tape, Tensor};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use tests::util::{assert_values, t32, t64};

use std::f64::consts::{E, LN_2 as LN2, LN_10, SQRT_2};

/// ln 3 as an f64 literal (ln 2, e, ln 10 and sqrt 2 come from `std`).
const LN3: f64 = 1.098_612_288_668_109_8;

// ---------------------------------------------------------------- elementwise

#[test]
fn forward_add() {
    let tape = Tape::new();
    // (2, 3) + (3): the row broadcasts down.
    let a = tape.leaf(t32(&[1., 2., 3., 4., 5., 6.], &[2, 3]));
    let b = tape.leaf(t32(&[10., 20., 30.], &[3]));
    let y = a + b;
    assert_eq!(y.op(), "add");
    assert_values(&y.value(), &[2, 3], &[11., 22., 33., 14., 25., 36.], 0.0);
    // (2, 1) + (1, 3): an outer sum.
    let c = tape.leaf(t32(&[1., 2.], &[2, 1]));
    let d = tape.leaf(t32(&[10., 20., 30.], &[1, 3]));
    assert_values(
        &c.add(d).value(),
        &[2, 3],
        &[11., 21., 31., 12., 22., 32.],
        0.0,
    );
}

#[test]
fn forward_sub() {
    let tape = Tape::new();
    // (2, 2) - (2, 1)
    let a = tape.leaf(t32(&[5., 7., 9., 11.], &[2, 2]));
    let b = tape.leaf(t32(&[1., 2.], &[2, 1]));
    let y = a - b;
    assert_eq!(y.op(), "sub");
    assert_values(&y.value(), &[2, 2], &[4., 6., 7., 9.], 0.0);
    // (3) - (2, 1) -> (2, 3)
    let c = tape.leaf(t32(&[1., 2., 3.], &[3]));
    assert_values(&c.sub(b).value(), &[2, 3], &[0., 1., 2., -1., 0., 1.], 0.0);
}

#[test]
fn forward_mul() {
    let tape = Tape::new();
    // (2, 2) * (2)
    let a = tape.leaf(t32(&[1., 2., 3., 4.], &[2, 2]));
    let b = tape.leaf(t32(&[10., -1.], &[2]));
    let y = a * b;
    assert_eq!(y.op(), "mul");
    assert_values(&y.value(), &[2, 2], &[10., -2., 30., -4.], 0.0);
    // (2, 1, 1) * (1, 2) -> (2, 1, 2)
    let c = tape.leaf(t32(&[2., 3.], &[2, 1, 1]));
    let d = tape.leaf(t32(&[5., 7.], &[1, 2]));
    assert_values(&c.mul(d).value(), &[2, 1, 2], &[10., 14., 15., 21.], 0.0);
}

#[test]
fn forward_div() {
    let tape = Tape::new();
    // (2, 2) / (2, 1)
    let a = tape.leaf(t32(&[1., 2., 3., 4.], &[2, 2]));
    let b = tape.leaf(t32(&[2., 4.], &[2, 1]));
    let y = a / b;
    assert_eq!(y.op(), "div");
    assert_values(&y.value(), &[2, 2], &[0.5, 1., 0.75, 1.], 0.0);
}

#[test]
fn forward_neg() {
    let tape = Tape::new();
    let x = tape.leaf(t32(&[1., -2., 0.5], &[3]));
    let y = -x;
    assert_eq!(y.op(), "neg");
    assert_values(&y.value(), &[3], &[-1., 2., -0.5], 0.0);
    assert_values(&x.neg().value(), &[3], &[-1., 2., -0.5], 0.0);
}

#[test]
fn forward_add_scalar() {
    let tape = Tape::new();
    let x = tape.leaf(t32(&[1., 2., -3.], &[3]));
    let y = x + 1.5;
    assert_eq!(y.op(), "add_scalar");
    assert_values(&y.value(), &[3], &[2.5, 3.5, -1.5], 0.0);
    assert_values(&(1.5 + x).value(), &[3], &[2.5, 3.5, -1.5], 0.0);
    assert_values(&(x - 1.0).value(), &[3], &[0., 1., -4.], 0.0);
    assert_values(&x.add_scalar(-0.5).value(), &[3], &[0.5, 1.5, -3.5], 0.0);
    // c - x is neg then add_scalar.
    let z = 10.0 - x;
    assert_eq!(z.op(), "add_scalar");
    assert_values(&z.value(), &[3], &[9., 8., 13.], 0.0);
}

#[test]
fn forward_mul_scalar() {
    let tape = Tape::new();
    let x = tape.leaf(t32(&[1., -2.], &[2]));
    let y = x * 3.0;
    assert_eq!(y.op(), "mul_scalar");
    assert_values(&y.value(), &[2], &[3., -6.], 0.0);
    assert_values(&(3.0 * x).value(), &[2], &[3., -6.], 0.0);
    assert_values(&(x / 2.0).value(), &[2], &[0.5, -1.], 0.0);
    assert_values(&x.mul_scalar(-0.25).value(), &[2], &[-0.25, 0.5], 0.0);
}

#[test]
fn forward_pow_scalar() {
    let tape = Tape::new();
    let x = tape.leaf(t64(&[4., 9., 2.25], &[3]));
    let y = x.pow_scalar(0.5);
    assert_eq!(y.op(), "pow_scalar");
    assert_values(&y.value(), &[3], &[2., 3., 1.5], 1e-15);
    assert_values(&x.pow_scalar(2.0).value(), &[3], &[16., 81., 5.0625], 1e-15);
    assert_values(
        &x.pow_scalar(-1.0).value(),
        &[3],
        &[0.25, 1. / 9., 1. / 2.25],
        1e-15,
    );
    // c / x is pow(-1) then mul_scalar.
    let z = 2.0 / x;
    assert_eq!(z.op(), "mul_scalar");
    assert_values(&z.value(), &[3], &[0.5, 2. / 9., 2. / 2.25], 1e-15);
    let tape = Tape::new();
    let w = tape.leaf(t32(&[2., 3.], &[2]));
    assert_values(&w.pow_scalar(3.0).value(), &[2], &[8., 27.], 1e-6);
}

#[test]
fn forward_exp() {
    let tape = Tape::new();
    let x = tape.leaf(t64(&[0., 1., -1., 0.5], &[2, 2]));
    let y = x.exp();
    assert_eq!(y.op(), "exp");
    let e = [1.0, E, 0.367_879_441_171_442_33, 1.648_721_270_700_128_2];
    assert_values(&y.value(), &[2, 2], &e, 1e-14);
    let tape = Tape::new();
    let x = tape.leaf(t32(&[0., 1., -1., 0.5], &[2, 2]));
    assert_values(&x.exp().value(), &[2, 2], &e, 1e-6);
}

#[test]
fn forward_log() {
    let tape = Tape::new();
    let x = tape.leaf(t64(&[1., 2., 10., 0.5], &[4]));
    let y = x.log();
    assert_eq!(y.op(), "log");
    let e = [0.0, LN2, LN_10, -LN2];
    assert_values(&y.value(), &[4], &e, 1e-14);
    let tape = Tape::new();
    let x = tape.leaf(t32(&[1., 2., 10., 0.5], &[4]));
    assert_values(&x.log().value(), &[4], &e, 1e-6);
}

#[test]
fn forward_sqrt() {
    let tape = Tape::new();
    let x = tape.leaf(t64(&[0., 4., 2.25, 2.], &[4]));
    let y = x.sqrt();
    assert_eq!(y.op(), "sqrt");
    assert_values(&y.value(), &[4], &[0., 2., 1.5, SQRT_2], 1e-15);
}

#[test]
fn forward_relu() {
    let tape = Tape::new();
    let x = tape.leaf(t32(&[-1., 0., 2., -0.5, 3.5, 0.125], &[2, 3]));
    let y = x.relu();
    assert_eq!(y.op(), "relu");
    assert_values(&y.value(), &[2, 3], &[0., 0., 2., 0., 3.5, 0.125], 0.0);
}

#[test]
fn forward_gelu() {
    // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), evaluated by hand.
    let e = [
        0.0,
        0.841_191_990_608_276_8,
        -0.158_808_009_391_723_24,
        1.954_597_694_087_775,
    ];
    let tape = Tape::new();
    let x = tape.leaf(t64(&[0., 1., -1., 2.], &[4]));
    let y = x.gelu();
    assert_eq!(y.op(), "gelu");
    assert_values(&y.value(), &[4], &e, 1e-14);
    let tape = Tape::new();
    let x = tape.leaf(t32(&[0., 1., -1., 2.], &[4]));
    assert_values(&x.gelu().value(), &[4], &e, 1e-6);
}

#[test]
fn forward_tanh() {
    let tape = Tape::new();
    let x = tape.leaf(t64(&[0., 0.5, -1.], &[3]));
    let y = x.tanh();
    assert_eq!(y.op(), "tanh");
    let e = [0.0, 0.462_117_157_260_009_74, -0.761_594_155_955_764_9];
    assert_values(&y.value(), &[3], &e, 1e-14);
}

#[test]
fn forward_sigmoid() {
    let tape = Tape::new();
    // Large |x| must not overflow: sigmoid(+-800) is exactly 1 and 0 in f64.
    let x = tape.leaf(t64(&[0., 2., -2., 800., -800.], &[5]));
    let y = x.sigmoid();
    assert_eq!(y.op(), "sigmoid");
    let e = [
        0.5,
        0.880_797_077_977_882_3,
        0.119_202_922_022_117_55,
        1.0,
        0.0,
    ];
    assert_values(&y.value(), &[5], &e, 1e-14);
    let tape = Tape::new();
    let x = tape.leaf(t32(&[0., 2., -2., 100., -100.], &[5]));
    let y = x.sigmoid().value();
    assert!(y.all_finite());
    assert_values(&y, &[5], &e, 1e-6);
}

// ---------------------------------------------------------------- reductions

#[test]
fn forward_sum() {
    let tape = Tape::new();
    // [[1, 2, 3], [4, 5, 6]]
    let x = tape.leaf(t32(&[1., 2., 3., 4., 5., 6.], &[2, 3]));
    let y = x.sum(0, false);
    assert_eq!(y.op(), "sum");
    assert_values(&y.value(), &[3], &[5., 7., 9.], 0.0);
    assert_values(&x.sum(-1, true).value(), &[2, 1], &[6., 15.], 0.0);
    assert_values(&x.sum(1, false).value(), &[2], &[6., 15.], 0.0);
    // Middle axis of arange(24) as (2, 3, 4): out[o][i] = 36 o + 12 + 3 i.
    let z = tape.leaf(Tensor::<f32>::arange(24).reshape(&[2, 3, 4]));
    assert_values(
        &z.sum(1, false).value(),
        &[2, 4],
        &[12., 15., 18., 21., 48., 51., 54., 57.],
        0.0,
    );
    assert_eq!(z.sum(-2, true).shape(), vec![2, 1, 4]);
}

#[test]
fn forward_mean() {
    let tape = Tape::new();
    let x = tape.leaf(t32(&[1., 2., 3., 4., 5., 6.], &[2, 3]));
    let y = x.mean(1, false);
    assert_eq!(y.op(), "mean");
    assert_values(&y.value(), &[2], &[2., 5.], 0.0);
    assert_values(&x.mean(0, true).value(), &[1, 3], &[2.5, 3.5, 4.5], 0.0);
    assert_values(&x.mean(-2, false).value(), &[3], &[2.5, 3.5, 4.5], 0.0);
}

#[test]
fn forward_sum_all() {
    let tape = Tape::new();
    let x = tape.leaf(t32(&[1., 2., 3., 4., 5., 6.], &[2, 3]));
    let y = x.sum_all();
    assert_eq!(y.op(), "sum_all");
    assert_values(&y.value(), &[], &[21.], 0.0);
    assert_eq!(y.value().item(), 21.0);
}

#[test]
fn forward_mean_all() {
    let tape = Tape::new();
    let x = tape.leaf(t32(&[1., 2., 3., 4., 5., 6.], &[2, 3]));
    let y = x.mean_all();
    assert_eq!(y.op(), "mean_all");
    assert_values(&y.value(), &[], &[3.5], 0.0);
}

#[test]
fn forward_max() {
    let tape = Tape::new();
    // [[1, 5, 3], [7, 2, 7]]
    let x = tape.leaf(t32(&[1., 5., 3., 7., 2., 7.], &[2, 3]));
    let y = x.max(1, false);
    assert_eq!(y.op(), "max");
    assert_values(&y.value(), &[2], &[5., 7.], 0.0);
    assert_values(&x.max(0, true).value(), &[1, 3], &[7., 5., 7.], 0.0);
    assert_values(&x.max(-1, true).value(), &[2, 1], &[5., 7.], 0.0);
}

#[test]
fn max_gradient_goes_to_the_first_of_tied_maxima() {
    let tape = Tape::new();
    let x = tape.leaf(t32(&[1., 5., 3., 7., 2., 7.], &[2, 3]));
    let g = tape.backward(x.max(1, false).sum_all());
    assert_values(g.wrt(x), &[2, 3], &[0., 1., 0., 1., 0., 0.], 0.0);
}

// ---------------------------------------------------------------- matmul

#[test]
fn forward_matmul() {
    let tape = Tape::new();
    // [[1, 2, 3], [4, 5, 6]] (2, 3) x [[7, 8], [9, 10], [11, 12]] (3, 2)
    let a = tape.leaf(t32(&[1., 2., 3., 4., 5., 6.], &[2, 3]));
    let b = tape.leaf(t32(&[7., 8., 9., 10., 11., 12.], &[3, 2]));
    let y = a.matmul(b);
    assert_eq!(y.op(), "matmul");
    assert_values(&y.value(), &[2, 2], &[58., 64., 139., 154.], 0.0);

    // Broadcast batch: A (2, 1, 1, 2) = rows [1, 2] and [3, 4];
    // B (3, 2, 1) = columns [1, 0], [0, 1], [1, 1]; out (2, 3, 1, 1) = A_i . B_j.
    let a = tape.leaf(t32(&[1., 2., 3., 4.], &[2, 1, 1, 2]));
    let b = tape.leaf(t32(&[1., 0., 0., 1., 1., 1.], &[3, 2, 1]));
    assert_values(
        &a.matmul(b).value(),
        &[2, 3, 1, 1],
        &[1., 2., 3., 3., 4., 7.],
        0.0,
    );

    // A stack (2, 1, 3) against one weight (3, 2).
    let x = tape.leaf(t32(&[1., 0., 0., 0., 1., 1.], &[2, 1, 3]));
    let w = tape.leaf(t32(&[7., 8., 9., 10., 11., 12.], &[3, 2]));
    assert_values(&x.matmul(w).value(), &[2, 1, 2], &[7., 8., 20., 22.], 0.0);
}

#[test]
fn forward_matmul_t() {
    let tape = Tape::new();
    // [[1, 2, 3], [4, 5, 6]] x [[1, 0, 1], [0, 1, 0]]^T
    let a = tape.leaf(t32(&[1., 2., 3., 4., 5., 6.], &[2, 3]));
    let b = tape.leaf(t32(&[1., 0., 1., 0., 1., 0.], &[2, 3]));
    let y = a.matmul_t(b);
    assert_eq!(y.op(), "matmul_t");
    assert_values(&y.value(), &[2, 2], &[4., 2., 10., 5.], 0.0);
    // Batched (2, 1, 2) x (2, 1, 2)^T: per-batch dot products.
    let q = tape.leaf(t32(&[1., 2., 3., 4.], &[2, 1, 2]));
    let k = tape.leaf(t32(&[5., 6., 7., 8.], &[2, 1, 2]));
    assert_values(&q.matmul_t(k).value(), &[2, 1, 1], &[17., 53.], 0.0);
}

#[test]
fn forward_linear() {
    let tape = Tape::new();
    // [[1, 2], [3, 4]] (2, 2) x [[1, 0, 1], [0, 1, 1]] (2, 3) + [10, 20, 30]
    let x = tape.leaf(t32(&[1., 2., 3., 4.], &[2, 2]));
    let w = tape.leaf(t32(&[1., 0., 1., 0., 1., 1.], &[2, 3]));
    let b = tape.leaf(t32(&[10., 20., 30.], &[3]));
    let y = x.linear(w, Some(b));
    assert_eq!(y.op(), "linear");
    assert_values(&y.value(), &[2, 3], &[11., 22., 33., 13., 24., 37.], 0.0);
    assert_values(
        &x.linear(w, None).value(),
        &[2, 3],
        &[1., 2., 3., 3., 4., 7.],
        0.0,
    );
    // Leading axes are kept: (1, 2, 2) -> (1, 2, 3); a vector (2) -> (3).
    let x3 = tape.leaf(t32(&[1., 2., 3., 4.], &[1, 2, 2]));
    assert_values(
        &x3.linear(w, Some(b)).value(),
        &[1, 2, 3],
        &[11., 22., 33., 13., 24., 37.],
        0.0,
    );
    let x1 = tape.leaf(t32(&[1., 2.], &[2]));
    assert_values(&x1.linear(w, Some(b)).value(), &[3], &[11., 22., 33.], 0.0);
}

// ---------------------------------------------------------------- attention

#[test]
fn forward_attention() {
    let tape = Tape::new();
    // One query, two keys, two heads of width 1 (scale 1/sqrt(1) = 1):
    // head 0 scores [0, ln 3] -> p = [1/4, 3/4]; head 1 scores [ln 3, 0] ->
    // p = [3/4, 1/4]. Values: head 0 [4, 8] -> 7, head 1 [10, 20] -> 12.5.
    let q = tape.leaf(t64(&[1., 1.], &[1, 1, 2]));
    let k = tape.leaf(t64(&[0., LN3, LN3, 0.], &[1, 2, 2]));
    let v = tape.leaf(t64(&[4., 10., 8., 20.], &[1, 2, 2]));
    let y = q.attention(k, v, 2, None);
    assert_eq!(y.op(), "attention");
    assert_values(&y.value(), &[1, 1, 2], &[7., 12.5], 1e-14);
    // Masking key 1 (mask (Tq, Tk) = [[0, 1]]): every head attends to key 0.
    let m = t64(&[0., 1.], &[1, 2]);
    assert_values(
        &q.attention(k, v, 2, Some(&m)).value(),
        &[1, 1, 2],
        &[4., 10.],
        1e-14,
    );
    // A fully masked row gives zeros.
    let all = t64(&[1., 1.], &[1, 2]);
    assert_values(
        &q.attention(k, v, 2, Some(&all)).value(),
        &[1, 1, 2],
        &[0., 0.],
        0.0,
    );
    // One head of width 4 scales scores by 1/2: q . k = [0, 2 ln 3] -> [0, ln 3].
    let q4 = tape.leaf(t64(&[2., 0., 0., 0.], &[1, 1, 4]));
    let k4 = tape.leaf(t64(&[0., 0., 0., 0., LN3, 0., 0., 0.], &[1, 2, 4]));
    let v4 = tape.leaf(t64(&[4., 0., 1., 0., 8., 0., 1., 0.], &[1, 2, 4]));
    assert_values(
        &q4.attention(k4, v4, 1, None).value(),
        &[1, 1, 4],
        &[7., 0., 1., 0.],
        1e-14,
    );
    // Equal scores: plain averages of the values, in f32.
    let tape = Tape::new();
    let z = tape.leaf(Tensor::<f32>::zeros(&[1, 2, 2]));
    let v = tape.leaf(t32(&[1., 2., 3., 4.], &[1, 2, 2]));
    assert_values(
        &z.attention(z, v, 2, None).value(),
        &[1, 2, 2],
        &[2., 3., 2., 3.],
        1e-6,
    );
}

#[test]
fn forward_attention_biased() {
    let tape = Tape::new();
    // One query, two keys, two heads of width 1 (scale 1), all scores 0:
    // the bias alone sets the weights. Bias (1, H, Tq, Tk): head 0 [0, ln 3]
    // -> p = [1/4, 3/4]; head 1 [ln 3, 0] -> p = [3/4, 1/4]. Values: head 0
    // [4, 8] -> 7, head 1 [10, 20] -> 12.5.
    let q = tape.leaf(t64(&[0., 0.], &[1, 1, 2]));
    let k = tape.leaf(t64(&[1., 2., 3., 4.], &[1, 2, 2]));
    let v = tape.leaf(t64(&[4., 10., 8., 20.], &[1, 2, 2]));
    let bias = tape.leaf(t64(&[0., LN3, LN3, 0.], &[1, 2, 1, 2]));
    let y = q.attention_biased(k, v, 2, None, Some(bias));
    assert_eq!(y.op(), "attention");
    assert_values(&y.value(), &[1, 1, 2], &[7., 12.5], 1e-14);
    // The bias is added after the 1/sqrt(Dk) scaling: one head of width 4
    // (scale 1/2), scores q . k = [0, 2 ln 3] -> [0, ln 3], plus the bias
    // (Tq, Tk) = [ln 3, 0] -> [ln 3, ln 3]: equal weights, the mean 6.
    let q4 = tape.leaf(t64(&[2., 0., 0., 0.], &[1, 1, 4]));
    let k4 = tape.leaf(t64(&[0., 0., 0., 0., LN3, 0., 0., 0.], &[1, 2, 4]));
    let v4 = tape.leaf(t64(&[4., 0., 1., 0., 8., 0., 1., 0.], &[1, 2, 4]));
    let b4 = tape.leaf(t64(&[LN3, 0.], &[1, 2]));
    assert_values(
        &q4.attention_biased(k4, v4, 1, None, Some(b4)).value(),
        &[1, 1, 4],
        &[6., 0., 1., 0.],
        1e-14,
    );
    // The mask still wins over the bias: key 1 masked -> key 0 only.
    let m = t64(&[0., 1.], &[1, 2]);
    assert_values(
        &q.attention_biased(k, v, 2, Some(&m), Some(bias)).value(),
        &[1, 1, 2],
        &[4., 10.],
        1e-14,
    );
    // In f32, one (1, 1, Tq, Tk) bias [0, ln 3] for both heads on equal
    // scores: weights [1/4, 3/4] in each, [4, 8] -> 7 and [10, 20] -> 17.5.
    let tape = Tape::<f32>::new();
    let z = tape.leaf(Tensor::<f32>::zeros(&[1, 1, 2]));
    let k = tape.leaf(Tensor::<f32>::zeros(&[1, 2, 2]));
    let v = tape.leaf(t32(&[4., 10., 8., 20.], &[1, 2, 2]));
    let bias = tape.leaf(t32(&[0., LN3 as f32], &[1, 1, 1, 2]));
    assert_values(
        &z.attention_biased(k, v, 2, None, Some(bias)).value(),
        &[1, 1, 2],
        &[7., 17.5],
        1e-6,
    );
}

// ---------------------------------------------------------------- Float functions

/// `ln_1p`, `exp_m1`, `erf` and `erfc` against 16-digit literals, in T.
fn check_float_functions<T: autograd::Float>(tol: f64) {
    let f = |x: f64| T::from_f64(x);
    let close = |got: T, want: f64, what: &str| {
        let got = got.to_f64();
        assert!(
            (got - want).abs() <= tol * want.abs(),
            "{} {what}: got {got:e}, want {want:e}",
            T::NAME
        );
    };
    // softplus(-50) = ln(1 + e^-50) = 1.928749847963918e-22: ln(1 + e^-50)
    // with a plain ln rounds 1 + e^-50 to 1 and gives exactly 0.
    close(
        f(-50.0).exp().ln_1p(),
        1.928_749_847_963_917_8e-22,
        "ln_1p(exp(-50))",
    );
    assert_eq!((T::ONE + f(-50.0).exp()).ln(), T::ZERO);
    close(f(1e-10).ln_1p(), 9.999_999_999_5e-11, "ln_1p(1e-10)");
    close(f(1.0).ln_1p(), LN2, "ln_1p(1)");
    close(f(1e-10).exp_m1(), 1.000_000_000_05e-10, "exp_m1(1e-10)");
    close(f(1.0).exp_m1(), E - 1.0, "exp_m1(1)");
    close(f(0.5).erf(), 0.520_499_877_813_046_5, "erf(0.5)");
    close(f(1.0).erf(), 0.842_700_792_949_714_9, "erf(1)");
    close(f(-2.0).erf(), -0.995_322_265_018_952_7, "erf(-2)");
    assert_eq!(f(0.0).erf(), T::ZERO);
    close(f(3.0).erfc(), 2.209_049_699_858_544e-5, "erfc(3)");
    close(f(0.5).erfc(), 0.479_500_122_186_953_5, "erfc(0.5)");
}

#[test]
fn float_ln_1p_exp_m1_erf_erfc() {
    check_float_functions::<f64>(1e-14);
    check_float_functions::<f32>(1e-6);
    // erfc(10) = 2.088487583762545e-45 in f64, where 1 - erf(10) is 0.
    let e10: f64 = autograd::Float::erfc(10.0);
    assert!((e10 - 2.088_487_583_762_545e-45).abs() <= 1e-14 * e10);
}

// ---------------------------------------------------------------- shape ops

#[test]
fn forward_transpose() {
    let tape = Tape::new();
    let x = tape.leaf(t32(&[1., 2., 3., 4., 5., 6.], &[2, 3]));
    let y = x.transpose(0, 1);
    assert_eq!(y.op(), "transpose");
    assert_values(&y.value(), &[3, 2], &[1., 4., 2., 5., 3., 6.], 0.0);
    // (1, 2, 3) with axes -1 and -3 swapped: (3, 2, 1), out[c][b][0] = 3 b + c.
    let z = tape.leaf(Tensor::<f32>::arange(6).reshape(&[1, 2, 3]));
    assert_values(
        &z.transpose(-1, -3).value(),
        &[3, 2, 1],
        &[0., 3., 1., 4., 2., 5.],
        0.0,
    );
}

#[test]
fn forward_permute() {
    let tape = Tape::new();
    // arange(6) as (1, 2, 3), perm [2, 0, 1] -> (3, 1, 2), out[c][0][b] = 3 b + c.
    let x = tape.leaf(Tensor::<f32>::arange(6).reshape(&[1, 2, 3]));
    let y = x.permute(&[2, 0, 1]);
    assert_eq!(y.op(), "permute");
    assert_values(&y.value(), &[3, 1, 2], &[0., 3., 1., 4., 2., 5.], 0.0);
}

#[test]
fn forward_reshape() {
    let tape = Tape::new();
    let x = tape.leaf(Tensor::<f32>::arange(6));
    let y = x.reshape(&[2, 3]);
    assert_eq!(y.op(), "reshape");
    assert_values(&y.value(), &[2, 3], &[0., 1., 2., 3., 4., 5.], 0.0);
    assert_eq!(y.value().at(&[1, 0]), 3.0);
    // No copy: the reshaped value shares the input's storage.
    assert!(y.value().shares_storage(&x.value()));
}

#[test]
fn forward_concat() {
    let tape = Tape::new();
    // (2, 1) ++ (2, 2) along axis 1.
    let a = tape.leaf(t32(&[1., 2.], &[2, 1]));
    let b = tape.leaf(t32(&[3., 4., 5., 6.], &[2, 2]));
    let y = autograd::Var::concat(&[a, b], 1);
    assert_eq!(y.op(), "concat");
    assert_values(&y.value(), &[2, 3], &[1., 3., 4., 2., 5., 6.], 0.0);
    // (1, 2) ++ (2, 2) along axis -2.
    let c = tape.leaf(t32(&[9., 8.], &[1, 2]));
    let z = autograd::Var::concat(&[c, b], -2);
    assert_values(&z.value(), &[3, 2], &[9., 8., 3., 4., 5., 6.], 0.0);
}

#[test]
fn forward_narrow() {
    let tape = Tape::new();
    // arange(12) as (3, 4)
    let x = tape.leaf(Tensor::<f32>::arange(12).reshape(&[3, 4]));
    let y = x.narrow(1, 1, 2);
    assert_eq!(y.op(), "narrow");
    assert_values(&y.value(), &[3, 2], &[1., 2., 5., 6., 9., 10.], 0.0);
    assert_values(
        &x.narrow(0, 2, 1).value(),
        &[1, 4],
        &[8., 9., 10., 11.],
        0.0,
    );
    assert_values(&x.narrow(-1, 3, 1).value(), &[3, 1], &[3., 7., 11.], 0.0);
}

#[test]
fn forward_split_heads() {
    let tape = Tape::new();
    // (B=1, T=2, D=4) = [[0, 1, 2, 3], [4, 5, 6, 7]], 2 heads of Dk=2:
    // head 0 = [[0, 1], [4, 5]], head 1 = [[2, 3], [6, 7]].
    let x = tape.leaf(Tensor::<f32>::arange(8).reshape(&[1, 2, 4]));
    let y = x.split_heads(2);
    assert_eq!(y.op(), "split_heads");
    assert_values(
        &y.value(),
        &[1, 2, 2, 2],
        &[0., 1., 4., 5., 2., 3., 6., 7.],
        0.0,
    );
}

#[test]
fn forward_merge_heads() {
    let tape = Tape::new();
    // (B=1, H=2, T=2, Dk=2): head 0 = [[0, 1], [4, 5]], head 1 = [[2, 3], [6, 7]].
    let x = tape.leaf(t32(&[0., 1., 4., 5., 2., 3., 6., 7.], &[1, 2, 2, 2]));
    let y = x.merge_heads();
    assert_eq!(y.op(), "merge_heads");
    assert_values(
        &y.value(),
        &[1, 2, 4],
        &[0., 1., 2., 3., 4., 5., 6., 7.],
        0.0,
    );
    // merge_heads inverts split_heads.
    let z = tape.leaf(Tensor::<f32>::arange(24).reshape(&[2, 2, 6]));
    assert!(z.split_heads(3).merge_heads().value().bit_eq(&z.value()));
}

// ---------------------------------------------------------------- nn ops

#[test]
fn forward_softmax() {
    let tape = Tape::new();
    // softmax([0, ln 2, ln 3]) = [1, 2, 3] / 6; a row [0, -inf] gives [1, 0];
    // a fully masked row gives zeros, not NaN.
    let x = tape.leaf(t64(
        &[
            0.,
            LN2,
            LN3,
            0.,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
        ],
        &[3, 3],
    ));
    let y = x.softmax();
    assert_eq!(y.op(), "softmax");
    assert_values(
        &y.value(),
        &[3, 3],
        &[1. / 6., 1. / 3., 0.5, 1., 0., 0., 0., 0., 0.],
        1e-15,
    );
    let tape = Tape::new();
    let x = tape.leaf(t32(&[0., LN2 as f32, LN3 as f32], &[1, 3]));
    assert_values(
        &x.softmax().value(),
        &[1, 3],
        &[1. / 6., 1. / 3., 0.5],
        1e-6,
    );
}

#[test]
fn forward_log_softmax() {
    let tape = Tape::new();
    // log_softmax([0, ln 2, ln 3]) = [-ln 6, -ln 3, -ln 2].
    let x = tape.leaf(t64(&[0., LN2, LN3, 5., 5., 5.], &[2, 3]));
    let y = x.log_softmax();
    assert_eq!(y.op(), "log_softmax");
    let e = [-(LN2 + LN3), -LN3, -LN2, -LN3, -LN3, -LN3];
    assert_values(&y.value(), &[2, 3], &e, 1e-15);
}

#[test]
fn forward_layer_norm() {
    let tape = Tape::new();
    // Rows [-1, 1] and [3, 5] both have variance 1, so with eps = 0 both
    // normalise to [-1, 1]; gain [2, 3], bias [0.5, -0.5] give [-1.5, 2.5].
    let x = tape.leaf(t32(&[-1., 1., 3., 5.], &[2, 2]));
    let gain = tape.leaf(t32(&[2., 3.], &[2]));
    let bias = tape.leaf(t32(&[0.5, -0.5], &[2]));
    let y = x.layer_norm(gain, bias, 0.0);
    assert_eq!(y.op(), "layer_norm");
    assert_values(&y.value(), &[2, 2], &[-1.5, 2.5, -1.5, 2.5], 1e-6);
    // eps = 3: 1 / sqrt(1 + 3) = 0.5, so xhat = [-0.5, 0.5] -> [-0.5, 1.0].
    let y = x.layer_norm(gain, bias, 3.0);
    assert_values(&y.value(), &[2, 2], &[-0.5, 1.0, -0.5, 1.0], 1e-6);
    // A constant row has xhat = 0: the output is the bias.
    let c = tape.leaf(t32(&[7., 7.], &[1, 2]));
    assert_values(
        &c.layer_norm(gain, bias, 1e-5).value(),
        &[1, 2],
        &[0.5, -0.5],
        1e-6,
    );
    // [1, 2, 3, 4]: mean 2.5, variance 1.25, xhat = (x - 2.5) / sqrt(1.25).
    let tape = Tape::new();
    let x = tape.leaf(t64(&[1., 2., 3., 4.], &[4]));
    let ones = tape.leaf(Tensor::ones(&[4]));
    let zeros = tape.leaf(Tensor::zeros(&[4]));
    let e = [
        -1.341_640_786_499_873_8,
        -0.447_213_595_499_957_9,
        0.447_213_595_499_957_9,
        1.341_640_786_499_873_8,
    ];
    assert_values(&x.layer_norm(ones, zeros, 0.0).value(), &[4], &e, 1e-15);
}

#[test]
fn forward_embedding() {
    let tape = Tape::new();
    // Table (V=3, D=2) = [[0, 1], [2, 3], [4, 5]]; ids [[2, 0, 2]] (1, 3).
    let table = tape.leaf(t32(&[0., 1., 2., 3., 4., 5.], &[3, 2]));
    let y = table.embedding(&[2, 0, 2], &[1, 3]);
    assert_eq!(y.op(), "embedding");
    assert_values(&y.value(), &[1, 3, 2], &[4., 5., 0., 1., 4., 5.], 0.0);
    // The repeated id gets the sum of its rows' gradients.
    let g = tape.backward_with(y, t32(&[1., 2., 3., 4., 5., 6.], &[1, 3, 2]));
    assert_values(g.wrt(table), &[3, 2], &[3., 4., 0., 0., 6., 8.], 0.0);
}

#[test]
fn forward_masked_fill() {
    let tape = Tape::new();
    // [[1, 2], [3, 4]] with mask [0, 1] (broadcast over rows) and -9.
    let x = tape.leaf(t32(&[1., 2., 3., 4.], &[2, 2]));
    let y = x.masked_fill(&t32(&[0., 1.], &[2]), -9.0);
    assert_eq!(y.op(), "masked_fill");
    assert_values(&y.value(), &[2, 2], &[1., -9., 3., -9.], 0.0);
    // Mask (2, 1) = [[1], [0]] with -inf masks the first row.
    let z = x.masked_fill(&t32(&[1., 0.], &[2, 1]), f32::NEG_INFINITY);
    let inf = f64::NEG_INFINITY;
    assert_values(&z.value(), &[2, 2], &[inf, inf, 3., 4.], 0.0);
}

#[test]
fn forward_dropout() {
    let (p, seed, n) = (0.25, 7, 1000);
    let x = Tensor::<f32>::full(&[10, 100], 3.0);
    let tape = Tape::new();
    let v = tape.leaf(x.clone());
    let y = v.dropout(p, true, &mut Xoshiro256PlusPlus::seed_from_u64(seed));
    assert_eq!(y.op(), "dropout");
    // The documented rule: one uniform draw per entry in row-major order;
    // an entry is dropped when the draw is below p, else scaled by 1/(1-p).
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let expected: Vec<f64> = (0..n)
        .map(|_| if rng.random::<f64>() < p { 0.0 } else { 4.0 })
        .collect();
    assert_values(&y.value(), &[10, 100], &expected, 1e-6);
    let dropped = expected.iter().filter(|&&e| e == 0.0).count();
    assert!(
        (200..=300).contains(&dropped),
        "{dropped} of {n} dropped with p = {p}"
    );
    // Same seed, same mask.
    let y2 = v.dropout(p, true, &mut Xoshiro256PlusPlus::seed_from_u64(seed));
    assert!(y.value().bit_eq(&y2.value()));
    // Evaluation (and p = 0) is the identity: the var itself comes back.
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let e = v.dropout(p, false, &mut rng);
    assert_eq!((e.id(), e.op()), (v.id(), "leaf"));
    assert_eq!(v.dropout(0.0, true, &mut rng).id(), v.id());
}

#[test]
fn forward_cross_entropy() {
    let tape = Tape::new();
    // V = 3, rows [0, 0, ln 2] have p = [1/4, 1/4, 1/2], so -log p = [2, 2, 1] ln 2.
    // Targets [2, 1, PAD=0]; the padded row is ignored whatever its logits.
    let logits = tape.leaf(t64(&[0., 0., LN2, 0., 0., LN2, 100., -3., 2.], &[3, 3]));
    let targets = [2, 1, 0];
    let y = logits.cross_entropy(&targets, Some(0), 0.0);
    assert_eq!(y.op(), "cross_entropy");
    // eps = 0: mean(ln 2, 2 ln 2) = 1.5 ln 2.
    assert_values(&y.value(), &[], &[1.5 * LN2], 1e-15);
    // eps = 0.3: row loss = 0.7 (-log p_t) + 0.3 mean_v(-log p_v), and
    // mean_v(-log p_v) = 5/3 ln 2: rows 0.7 ln 2 + 0.5 ln 2 = 1.2 ln 2 and
    // 1.4 ln 2 + 0.5 ln 2 = 1.9 ln 2; mean 1.55 ln 2.
    let y = logits.cross_entropy(&targets, Some(0), 0.3);
    assert_values(&y.value(), &[], &[1.55 * LN2], 1e-15);
    // Without ignore, the third row (target 0, p_0 = e^100 / (e^100 + e^-3 + e^2))
    // counts too: its loss is about 0.7 * 0 + 0.3 * mean(0, 103, 98) = 20.1.
    let z = logits.cross_entropy(&targets, None, 0.3).value().item();
    assert!((z - (2.0 * 1.55 * LN2 + 20.1) / 3.0).abs() < 1e-3, "{z}");
    // Every row padded: the loss is 0 (no NaN from 0 / 0).
    let w = logits.cross_entropy(&[0, 0, 0], Some(0), 0.1);
    assert_values(&w.value(), &[], &[0.0], 0.0);
    // (B, T, V) logits take B * T targets.
    let l3 = tape.leaf(t64(&[0., 0., LN2, 0., 0., LN2], &[1, 2, 3]));
    assert_values(
        &l3.cross_entropy(&[2, 1], None, 0.0).value(),
        &[],
        &[1.5 * LN2],
        1e-15,
    );
}
