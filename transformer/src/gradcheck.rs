//! Gradient checks of whole modules: every parameter of a [`Module`] (and
//! any extra inputs) becomes an input of `autograd::check::gradcheck`, so a
//! user's new layer is checked with the same public tool as the built-ins.

use autograd::check::{GradcheckConfig, GradcheckReport, gradcheck};
use autograd::{Tensor, Var};

use crate::{Ctx, Mode, ModelConfig, Module, Registry, TokenBatch, Transformer, named_params};

/// Checks the gradient of `f` with respect to every parameter of `m` and
/// every tensor in `inputs`, in f64. `f` gets the module, a context (in
/// `mode`, with the same dropout seed at every evaluation, so masks do not
/// change between finite-difference evaluations) and the inputs as vars.
///
/// ```
/// use autograd::Tensor;
/// use autograd::check::GradcheckConfig;
/// use transformer::{gradcheck_module, rng, Linear, Mode};
/// let mut lin = Linear::<f64>::new(3, 2, &mut rng(0));
/// let x = Tensor::randn(&[4, 3], 0.0, 1.0, 1);
/// let report = gradcheck_module(&mut lin, &[x], Mode::Eval, &GradcheckConfig::default(),
///     |m, ctx, v| m.forward(ctx, v[0]).tanh());
/// assert!(report.passed(), "{report}");
/// ```
pub fn gradcheck_module<M: Module<f64>>(
    m: &mut M,
    inputs: &[Tensor<f64>],
    mode: Mode,
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
            let ctx = Ctx::new(tape, mode, 0x00c0_ffee);
            f(m, &ctx, &vars[..n])
        },
        &all,
        cfg,
    )
}

/// Checks the gradient of a whole Transformer's label-smoothed loss with
/// respect to every parameter, in f64 and eval mode, on a fixed padded
/// batch of two sentences (source lengths 3 and 2, target lengths 3 and 2).
/// The model's blocks come from `registry`, so a user's block is checked in
/// place, with everything around it. Use a small config
/// ([`ModelConfig::for_gradcheck`]) with vocabularies of at least 7.
///
/// ```
/// use autograd::check::GradcheckConfig;
/// use transformer::{gradcheck_transformer, ModelConfig, Registry};
/// let cfg = ModelConfig { feed_forward: "gelu".into(), ..ModelConfig::for_gradcheck(7, 7) };
/// let report = gradcheck_transformer(&cfg, &Registry::builtin(), 0, &GradcheckConfig::default());
/// assert!(report.passed(), "{report}");
/// ```
pub fn gradcheck_transformer(
    config: &ModelConfig,
    registry: &Registry<f64>,
    seed: u64,
    cfg: &GradcheckConfig,
) -> GradcheckReport {
    let mut m = Transformer::with_registry(config, registry, seed)
        .unwrap_or_else(|e| panic!("gradcheck_transformer: {e}"));
    let pad = config.pad_id.unwrap_or(0);
    let src = TokenBatch::padded(&[vec![3, 4, 5], vec![6, 2]], pad);
    let tgt_in = TokenBatch::padded(&[vec![1, 3, 4], vec![1, 6]], pad);
    let labels = [3, 4, 5, 6, 2, pad];
    gradcheck_module(&mut m, &[], Mode::Eval, cfg, |m, ctx, _| {
        m.loss(m.forward(ctx, &src, &tgt_in), &labels, 0.1)
    })
}
