//! The sublayer wiring around attention and feed-forward blocks, chosen by
//! config: norm kind (layer, batch, none), placement (post as in the paper,
//! or pre) and the residual connection (on or off).

use autograd::{Float, Tensor, Var};

use crate::{Ctx, Module, Norm, NormKind, Placement, Visitor};

/// One residual block: its norm plus the wiring.
///
/// - post (the paper): `y = Norm(x + Dropout(F(x)))`
/// - pre: `y = x + Dropout(F(Norm(x)))`
///
/// Without the residual the `x +` term is dropped.
pub struct Sublayer<T: Float = f32> {
    pub norm: Norm<T>,
    pub placement: Placement,
    pub residual: bool,
    /// Dropout on the sublayer output (the paper's P_drop = 0.1).
    pub dropout: f64,
}

impl<T: Float> Sublayer<T> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: NormKind,
        d: usize,
        eps: f64,
        momentum: f64,
        placement: Placement,
        residual: bool,
        dropout: f64,
    ) -> Self {
        Sublayer {
            norm: Norm::new(kind, d, eps, momentum),
            placement,
            residual,
            dropout,
        }
    }

    /// Applies `f` to (B, T, D) `x` with this block's wiring.
    pub fn forward<'t>(
        &self,
        ctx: &Ctx<'t, T>,
        x: Var<'t, T>,
        tokens: Option<&Tensor<T>>,
        f: impl FnOnce(Var<'t, T>) -> Var<'t, T>,
    ) -> Var<'t, T> {
        let add = |y: Var<'t, T>| if self.residual { x + y } else { y };
        match self.placement {
            Placement::Post => {
                let y = ctx.dropout(f(x), self.dropout);
                self.norm.forward(ctx, add(y), tokens)
            }
            Placement::Pre => {
                let y = f(self.norm.forward(ctx, x, tokens));
                add(ctx.dropout(y, self.dropout))
            }
        }
    }
}

impl<T: Float> Module<T> for Sublayer<T> {
    fn visit(&mut self, v: &mut Visitor<'_, T>) {
        self.norm.visit(v);
    }
}
