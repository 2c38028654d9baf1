use autograd::Tensor;
use autograd::check::{GradcheckConfig, gradcheck};

#[test]
fn smoke() {
    let cfg = GradcheckConfig::default();
    let a = Tensor::<f64>::randn(&[2, 3, 4], 0.0, 1.0, 1);
    let b = Tensor::<f64>::randn(&[4, 5], 0.0, 1.0, 2);
    let r = gradcheck(
        |_, v| v[0].matmul(v[1]).softmax(),
        &[a.clone(), b.clone()],
        &cfg,
    );
    println!("{r}");
    let g = Tensor::<f64>::randn(&[4], 1.0, 0.1, 3);
    let bb = Tensor::<f64>::randn(&[4], 0.0, 0.1, 4);
    let r = gradcheck(
        |_, v| v[0].layer_norm(v[1], v[2], 1e-5),
        &[a.clone(), g, bb],
        &cfg,
    );
    println!("{r}");
    let r = gradcheck(
        |_, v| v[0].cross_entropy(&[0, 1, 3, 2, 0, 1], Some(2), 0.1),
        &[a.clone()],
        &cfg,
    );
    println!("{r}");
    let r = gradcheck(
        |_, v| {
            (v[0].split_heads(2).merge_heads().exp() / v[1].reshape(&[1, 1, 4]).sigmoid())
                .gelu()
                .sum(1, true)
        },
        &[a.clone(), Tensor::randn(&[4], 0.0, 1.0, 5)],
        &cfg,
    );
    println!("{r}");
}
