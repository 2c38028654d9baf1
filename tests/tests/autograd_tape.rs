//! The tape and its gradients: the matmul adjoint identities, accumulation
//! of a reused var (and of a tied parameter), `ParamGrads::accumulate` over
//! micro-batches, no-grad evaluation, detach, `backward_with` for a
//! non-scalar output, and anomaly mode.

use autograd::check::strategies::tensor;
use autograd::{Param, ParamGrads, Tape, Tensor, Var, no_grad};
use proptest::prelude::*;
use tests::util::{assert_close, assert_values, dot, t32, t64};

// ---------------------------------------------------------------- matmul adjoint

/// Relative tolerance of the inner-product identities (f64).
const ADJ_TOL: f64 = 1e-12;

#[track_caller]
fn assert_rel(a: f64, b: f64, what: &str) {
    assert!(
        (a - b).abs() <= ADJ_TOL * a.abs().max(b.abs()).max(1.0),
        "{what}: {a:e} vs {b:e}"
    );
}

/// Random A (..., M, K), B (..., K, N), C (..., M, N) with the given batch shape.
fn abc(batch: &[usize], m: usize, k: usize, n: usize, seed: u64) -> [Tensor<f64>; 3] {
    let s = |r, c| [batch, &[r, c][..]].concat();
    [
        Tensor::randn(&s(m, k), 0.0, 1.0, seed),
        Tensor::randn(&s(k, n), 0.0, 1.0, seed + 1),
        Tensor::randn(&s(m, n), 0.0, 1.0, seed + 2),
    ]
}

/// `<A B, C> = <B, A^T C> = <A, C B^T>`, with the transposes taken by
/// `transpose` and by `matmul_t` (no explicit transpose).
fn check_adjoint_identity(a: &Tensor<f64>, b: &Tensor<f64>, c: &Tensor<f64>) {
    let tape = Tape::new();
    let (va, vb, vc) = (
        tape.constant(a.clone()),
        tape.constant(b.clone()),
        tape.constant(c.clone()),
    );
    let ab_c = dot(&va.matmul(vb).value(), c);
    let at_c = va.transpose(-1, -2).matmul(vc).value(); // (..., K, N)
    let c_bt = vc.matmul_t(vb).value(); // (..., M, K)
    assert_rel(ab_c, dot(b, &at_c), "<AB, C> = <B, A^T C>");
    assert_rel(ab_c, dot(a, &c_bt), "<AB, C> = <A, C B^T>");
    let c_bt2 = vc.matmul(vb.transpose(-1, -2)).value();
    assert_close(
        &c_bt,
        &c_bt2,
        1e-12,
        "matmul_t equals matmul by the transpose",
    );
}

#[test]
fn matmul_adjoint_identity_2d() {
    let [a, b, c] = abc(&[], 5, 7, 3, 1);
    check_adjoint_identity(&a, &b, &c);
}

#[test]
fn matmul_adjoint_identity_batched() {
    let [a, b, c] = abc(&[2, 3], 4, 5, 6, 10);
    check_adjoint_identity(&a, &b, &c);
}

/// The backward of matmul is its adjoint: for the output gradient C,
/// `<dA, X> = <C, X B>` and `<dB, Y> = <C, A Y>` for any X, Y; so dA = C B^T
/// and dB = A^T C. Also for matmul_t (`A B^T`): `<dB, Y> = <C, A Y^T>`.
fn check_backward_is_adjoint(batch_a: &[usize], batch_b: &[usize], seed: u64) {
    let (m, k, n) = (3, 4, 5);
    let sa = [batch_a, &[m, k][..]].concat();
    let sb = [batch_b, &[k, n][..]].concat();
    let a = Tensor::<f64>::randn(&sa, 0.0, 1.0, seed);
    let b = Tensor::<f64>::randn(&sb, 0.0, 1.0, seed + 1);
    let x = Tensor::<f64>::randn(&sa, 0.0, 1.0, seed + 2);
    let y = Tensor::<f64>::randn(&sb, 0.0, 1.0, seed + 3);

    let tape = Tape::new();
    let (va, vb) = (tape.leaf(a.clone()), tape.leaf(b.clone()));
    let out = va.matmul(vb);
    let c = Tensor::randn(&out.shape(), 0.0, 1.0, seed + 4);
    let g = tape.backward_with(out, c.clone());
    let (da, db) = (g.wrt(va), g.wrt(vb));
    assert_eq!(da.shape(), a.shape());
    assert_eq!(db.shape(), b.shape());
    // <C, X B> and <C, A Y> (broadcast batch axes included: the adjoint of a
    // broadcast is the sum over it).
    assert_rel(dot(da, &x), dot(&c, &x.matmul(&b)), "<dA, X> = <C, X B>");
    assert_rel(dot(db, &y), dot(&c, &a.matmul(&y)), "<dB, Y> = <C, A Y>");

    // matmul_t with B' = B^T stored as (..., N, K).
    let bt = tape.constant(b.clone()).transpose(-1, -2).value();
    let yt = tape.constant(y.clone()).transpose(-1, -2).value();
    let tape = Tape::new();
    let (va, vbt) = (tape.leaf(a.clone()), tape.leaf(bt.clone()));
    let out = va.matmul_t(vbt);
    let g = tape.backward_with(out, c.clone());
    assert_rel(
        dot(g.wrt(va), &x),
        dot(&c, &x.matmul(&b)),
        "matmul_t: <dA, X> = <C, X B>",
    );
    assert_rel(
        dot(g.wrt(vbt), &yt),
        dot(&c, &a.matmul(&y)),
        "matmul_t: <dB', Y^T> = <C, A Y>",
    );
}

#[test]
fn matmul_backward_is_the_adjoint_2d() {
    check_backward_is_adjoint(&[], &[], 20);
}

#[test]
fn matmul_backward_is_the_adjoint_batched_and_broadcast() {
    check_backward_is_adjoint(&[2, 3], &[2, 3], 30);
    check_backward_is_adjoint(&[2, 1], &[4], 40); // batch (2, 4) from (2, 1) and (4)
    check_backward_is_adjoint(&[3], &[], 50); // a (3, M, K) stack against a 2-D weight
    check_backward_is_adjoint(&[], &[3], 60); // a 2-D left operand against a stack
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::with_cases(64) })]

    /// The adjoint identity over random sizes (and a random batch axis).
    #[test]
    fn matmul_adjoint_identity_random(
        (a, b, c) in (0..=3usize, 1..=6usize, 1..=6usize, 1..=6usize).prop_flat_map(|(nb, m, k, n)| {
            let batch: Vec<usize> = if nb == 0 { vec![] } else { vec![nb] };
            let s = move |r: usize, c: usize| [batch.clone(), vec![r, c]].concat();
            (tensor(s(m, k), -2.0, 2.0), tensor(s(k, n), -2.0, 2.0), tensor(s(m, n), -2.0, 2.0))
        })
    ) {
        check_adjoint_identity(&a, &b, &c);
    }
}

// ---------------------------------------------------------------- accumulation

#[test]
fn a_var_used_three_times_gets_the_summed_gradient() {
    let tape = Tape::new();
    let x = tape.leaf(t64(&[0.5, -1.0, 2.0], &[3]));
    // y = sum(x + x * x + exp(x)): dy/dx = 1 + 2x + exp(x).
    let y = (x + x * x + x.exp()).sum_all();
    let g = tape.backward(y);
    let e = [
        1.0 + 1.0 + 1.648_721_270_700_128_2,
        1.0 - 2.0 + 0.367_879_441_171_442_33,
        1.0 + 4.0 + 7.389_056_098_930_65,
    ];
    assert_values(g.wrt(x), &[3], &e, 1e-15);
    // The plainest case: x + x + x has gradient 3.
    let tape = Tape::new();
    let x = tape.leaf(t32(&[1.0, 2.0], &[2]));
    let g = tape.backward((x + x + x).sum_all());
    assert_values(g.wrt(x), &[2], &[3.0, 3.0], 0.0);
}

#[test]
fn a_tied_param_is_one_var_and_sums_its_gradients() {
    // A tied embedding: the same Param as the input table and the output
    // projection.
    let p = Param::new(t32(&[1.0, 2.0, 3.0, 4.0], &[2, 2]));
    let tape = Tape::new();
    let a = tape.param(&p);
    let b = tape.param(&p);
    assert_eq!(a.id(), b.id(), "the same Param gives the same var");
    assert_eq!(tape.len(), 1, "only one leaf was recorded");
    let clone = tape.param(&p.clone()); // a clone is the same parameter
    assert_eq!(clone.id(), a.id());
    // y = sum(2 a + 3 b): gradient 5 everywhere.
    let y = (a * 2.0 + b * 3.0).sum_all();
    let g = tape.backward(y);
    assert_values(g.param(&p).unwrap(), &[2, 2], &[5.0; 4], 0.0);
    assert_values(g.wrt(a), &[2, 2], &[5.0; 4], 0.0);
    // A distinct Param with equal values is a different leaf.
    let q = Param::new(p.value.clone());
    assert_ne!(tape.param(&q).id(), a.id());
}

/// The model of the micro-batch test: `sum(tanh(x W + b))` with parameters
/// W (3, 2) and b (2) on the rows of `x` (R, 3).
fn micro_batch_loss<'t>(
    tape: &'t Tape<f64>,
    w: &Param<f64>,
    b: &Param<f64>,
    x: Tensor<f64>,
) -> Var<'t, f64> {
    let x = tape.constant(x);
    (x.matmul(tape.param(w)) + tape.param(b)).tanh().sum_all()
}

#[test]
fn param_grads_accumulate_over_tapes_like_one_tape_on_the_whole_batch() {
    let w = Param::new(Tensor::<f64>::randn(&[3, 2], 0.0, 1.0, 1));
    let b = Param::new(Tensor::<f64>::randn(&[2], 0.0, 1.0, 2));
    let x = Tensor::<f64>::randn(&[5, 3], 0.0, 1.0, 3);
    let (x1, x2) = {
        let tape = Tape::new();
        let v = tape.constant(x.clone());
        (v.narrow(0, 0, 2).value(), v.narrow(0, 2, 3).value())
    };

    let mut acc = ParamGrads::default();
    assert!(acc.is_empty());
    for part in [x1, x2] {
        let tape = Tape::new();
        let loss = micro_batch_loss(&tape, &w, &b, part);
        acc.accumulate(tape.backward(loss).params());
    }
    let tape = Tape::new();
    let loss = micro_batch_loss(&tape, &w, &b, x);
    let whole = tape.backward(loss).into_params();

    assert_eq!(acc.len(), 2);
    assert_close(acc.get(&w).unwrap(), whole.get(&w).unwrap(), 1e-12, "dW");
    assert_close(acc.get(&b).unwrap(), whole.get(&b).unwrap(), 1e-12, "db");
    assert_close(
        acc.get_id(b.id()).unwrap(),
        whole.get(&b).unwrap(),
        1e-12,
        "db by id",
    );
    // scale(1/2) halves every gradient (averaging micro-batches).
    let mut half = acc.clone();
    half.scale(0.5);
    for (id, g) in half.iter() {
        let full = acc.get_id(id).unwrap();
        assert_close(g, &full.map(|v| v * 0.5), 0.0, "scaled");
    }
}

// ---------------------------------------------------------------- no_grad / detach

/// A small graph: `softmax(relu(x W) + b)`, x (2, 3), W (3, 4), b (4).
fn small_graph<'t>(tape: &'t Tape<f32>, leaf: bool) -> Var<'t, f32> {
    let mk = |t: Tensor<f32>| if leaf { tape.leaf(t) } else { tape.constant(t) };
    let x = mk(Tensor::randn(&[2, 3], 0.0, 1.0, 1));
    let w = mk(Tensor::randn(&[3, 4], 0.0, 1.0, 2));
    let b = mk(Tensor::randn(&[4], 0.0, 1.0, 3));
    (x.matmul(w).relu() + b).softmax()
}

#[test]
fn no_grad_records_no_backward_nodes_and_gives_the_same_values() {
    let tape = Tape::new();
    let recorded = small_graph(&tape, true);
    assert!(tape.grad_enabled());
    assert_eq!(tape.num_backward_nodes(), 4, "matmul, relu, add, softmax");
    assert!(recorded.requires_grad());

    // A no-grad tape: leaves are constants, nothing keeps a VJP.
    let ng = Tape::no_grad();
    assert!(!ng.grad_enabled());
    let y = small_graph(&ng, true);
    assert_eq!(ng.num_backward_nodes(), 0);
    assert!(!y.requires_grad());
    assert!(y.value().bit_eq(&recorded.value()));

    // The `no_grad` helper.
    let (value, nodes) = no_grad(|t: &Tape<f32>| {
        let y = small_graph(t, true);
        (y.value(), t.num_backward_nodes())
    });
    assert_eq!(nodes, 0);
    assert!(value.bit_eq(&recorded.value()));

    // On a recording tape, ops on constants only record no VJP either.
    let tape = Tape::new();
    let c = small_graph(&tape, false);
    assert_eq!(tape.num_backward_nodes(), 0);
    assert!(c.value().bit_eq(&recorded.value()));
}

#[test]
fn detach_stops_gradients() {
    let tape = Tape::new();
    let x = tape.leaf(t64(&[1.0, -2.0, 3.0], &[3]));
    let d = x.detach();
    assert_eq!(d.op(), "constant");
    assert!(!d.requires_grad());
    assert!(d.value().bit_eq(&x.value()));
    // y = sum(x * detach(x)): the gradient is x, not 2x.
    let g = tape.backward((x * d).sum_all());
    assert_values(g.wrt(x), &[3], &[1.0, -2.0, 3.0], 0.0);
    // Nothing flows through a detached branch only.
    let tape = Tape::new();
    let x = tape.leaf(t64(&[1.0, 2.0], &[2]));
    let z = tape.leaf(t64(&[3.0], &[1]));
    let g = tape.backward((x.detach().exp() * z).sum_all());
    assert!(g.get(x).is_none());
    assert_values(g.wrt(z), &[1], &[1.0f64.exp() + 2.0f64.exp()], 1e-15);
}

#[test]
fn backward_with_seeds_a_non_scalar_output() {
    let tape = Tape::new();
    // y = x * x (2, 3) seeded with G: dx = 2 x G.
    let x = tape.leaf(t32(&[1., 2., 3., -1., -2., -3.], &[2, 3]));
    let y = x * x;
    let g = tape.backward_with(y, t32(&[1., 0., 2., 0.5, 1., -1.], &[2, 3]));
    assert_values(g.wrt(x), &[2, 3], &[2., 0., 12., -1., -4., 6.], 0.0);
    // A broadcast input: b (3) added to every row gets the column sums of G.
    let tape = Tape::new();
    let a = tape.leaf(Tensor::<f32>::zeros(&[2, 3]));
    let b = tape.leaf(t32(&[1., 2., 3.], &[3]));
    let g = tape.backward_with(a + b, t32(&[1., 2., 3., 4., 5., 6.], &[2, 3]));
    assert_values(g.wrt(b), &[3], &[5., 7., 9.], 0.0);
    assert_values(g.wrt(a), &[2, 3], &[1., 2., 3., 4., 5., 6.], 0.0);
}

#[test]
#[should_panic(expected = "backward: output of shape [2] is not a scalar")]
fn backward_of_a_non_scalar_output_panics() {
    let tape = Tape::<f32>::new();
    let x = tape.leaf(t32(&[1., 2.], &[2]));
    tape.backward(x * 2.0);
}

#[test]
#[should_panic(expected = "backward_with: gradient shape [3] differs from output shape [2]")]
fn backward_with_a_mismatched_gradient_panics() {
    let tape = Tape::<f32>::new();
    let x = tape.leaf(t32(&[1., 2.], &[2]));
    tape.backward_with(x * 2.0, t32(&[1., 2., 3.], &[3]));
}

// ---------------------------------------------------------------- anomaly mode

#[test]
fn anomaly_mode_names_the_first_forward_op_producing_nan() {
    let tape = Tape::<f32>::new();
    tape.set_anomaly_mode(true);
    let x = tape.leaf(t32(&[-1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]));
    let ok = x.exp().sum(1, false); // fine
    assert_eq!(tape.anomaly(), None);
    let bad = x.log(); // log(-1) = NaN
    let _later = (bad * 2.0).sum_all() + ok.sum_all(); // NaN propagates, but is not first
    let a = tape.anomaly().expect("an anomaly was recorded");
    assert_eq!(a.op, "log");
    assert_eq!(a.phase, "forward");
    assert_eq!(a.input_shapes, vec![vec![2, 3]]);
    assert_eq!(a.output_shape, vec![2, 3]);
    let msg = a.to_string();
    assert!(
        msg.contains("`log`") && msg.contains("forward") && msg.contains("[2, 3]"),
        "{msg}"
    );
}

#[test]
fn anomaly_mode_reports_an_inf_in_a_binary_forward_with_both_shapes() {
    let tape = Tape::<f32>::new();
    tape.set_anomaly_mode(true);
    let a = tape.leaf(t32(&[1.0, 2.0], &[2, 1]));
    let b = tape.leaf(t32(&[0.0, 1.0, 2.0], &[3]));
    let _ = a / b; // 1 / 0 = inf
    let an = tape.anomaly().unwrap();
    assert_eq!((an.op, an.phase), ("div", "forward"));
    assert_eq!(an.input_shapes, vec![vec![2, 1], vec![3]]);
    assert_eq!(an.output_shape, vec![2, 3]);
}

#[test]
fn anomaly_mode_reports_a_backward_inf() {
    let tape = Tape::<f64>::new();
    tape.set_anomaly_mode(true);
    // sqrt(0) = 0 is finite, but its derivative 0.5 / sqrt(0) is inf.
    let x = tape.leaf(t64(&[0.0, 4.0], &[2]));
    let y = x.sqrt().sum_all();
    assert_eq!(tape.anomaly(), None, "the forward pass is finite");
    let g = tape.backward(y);
    let a = tape.anomaly().expect("the backward anomaly was recorded");
    assert_eq!(a.op, "sqrt");
    assert_eq!(a.phase, "backward");
    assert_eq!(a.input_shapes, vec![vec![2]]);
    assert!(g.wrt(x).data()[0].is_infinite());
}

#[test]
fn anomaly_mode_off_records_nothing() {
    let tape = Tape::<f32>::new();
    let x = tape.leaf(t32(&[-1.0], &[1]));
    let y = x.log();
    assert!(y.value().data()[0].is_nan());
    assert_eq!(tape.anomaly(), None);
}

// ---------------------------------------------------------------- misc

#[test]
fn var_accessors_describe_the_node() {
    let tape = Tape::<f32>::new();
    assert!(tape.is_empty());
    let x = tape.leaf(Tensor::zeros(&[2, 3, 4]));
    let c = tape.constant(Tensor::ones(&[4]));
    let y = x + c;
    assert_eq!(y.shape(), vec![2, 3, 4]);
    assert_eq!((y.ndim(), y.dim(-1), y.dim(0)), (3, 4, 2));
    assert_eq!(tape.ops(), vec!["leaf", "constant", "add"]);
    assert!(x.requires_grad() && !c.requires_grad() && y.requires_grad());
    assert!(std::ptr::eq(y.tape(), &tape));
    assert_eq!(format!("{y:?}").split('(').next(), Some("Var#2"));
}
