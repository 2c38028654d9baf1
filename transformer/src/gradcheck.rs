//! Gradient checks of whole modules: every parameter of a [`Module`] (and
//! any extra inputs) becomes an input of `autograd::check::gradcheck`, so a
//! user's new layer is checked with the same public tool as the built-ins.

use autograd::check::{GradcheckConfig, GradcheckReport, gradcheck};
use autograd::{Tensor, Var};

use crate::{Ctx, Module, named_params};

/// Checks the gradient of `f` with respect to every parameter of `m` and
/// every tensor in `inputs`, in f64. `f` gets the module, a context (in
/// train mode when `train`, with the same dropout seed at every evaluation,
/// so masks do not change between finite-difference evaluations) and the
/// inputs as vars.
///
/// ```
/// use autograd::Tensor;
/// use autograd::check::GradcheckConfig;
/// use transformer::{gradcheck_module, rng, Linear};
/// let mut lin = Linear::<f64>::new(3, 2, true, &mut rng(0));
/// let x = Tensor::randn(&[4, 3], 0.0, 1.0, 1);
/// let report = gradcheck_module(&mut lin, &[x], false, &GradcheckConfig::default(),
///     |m, ctx, v| m.forward(ctx, v[0]).tanh());
/// assert!(report.passed(), "{report}");
/// ```
pub fn gradcheck_module<M: Module<f64>>(
    m: &mut M,
    inputs: &[Tensor<f64>],
    train: bool,
    cfg: &GradcheckConfig,
    f: impl for<'t> Fn(&M, &Ctx<'t, f64>, &[Var<'t, f64>]) -> Var<'t, f64>,
) -> GradcheckReport {
    let params: Vec<_> = named_params(m).into_iter().map(|(_, p)| p).collect();
    let mut all = inputs.to_vec();
    all.extend(params.iter().map(|p| p.value.clone()));
    let n = inputs.len();
    let m = &*m;
    gradcheck(
        |tape, vars| {
            for (p, &v) in params.iter().zip(&vars[n..]) {
                tape.bind_param(p, v);
            }
            let ctx = Ctx::new(tape, train, 0x00c0_ffee);
            f(m, &ctx, &vars[..n])
        },
        &all,
        cfg,
    )
}
