//! `Module`: a layer is a struct of named parameter fields plus one visitor.
//!
//! The visitor is the only thing a layer writes besides its forward: from it
//! come parameter names (`encoder.layers.0.self_attn.w_q`), parameter counts,
//! the optimiser's view, and checkpoints, for any layer, a user's included.
//! It takes `&mut self` so that one method serves both reading (counting,
//! saving) and writing (optimiser updates, loading).

use autograd::{Float, Param, Tensor};

/// What a visitor is shown: a trainable parameter, or a buffer (state saved
/// in checkpoints but not trained, such as BatchNorm's running statistics).
pub enum Entry<'a, T: Float> {
    /// A trainable parameter.
    Param(&'a mut Param<T>),
    /// A saved, untrained tensor.
    Buffer(&'a mut Tensor<T>),
}

/// Walks a module tree, handing each entry with its dotted name to a callback.
pub struct Visitor<'a, T: Float = f32> {
    prefix: String,
    f: &'a mut dyn FnMut(&str, Entry<'_, T>),
}

impl<'a, T: Float> Visitor<'a, T> {
    /// A visitor calling `f(dotted_name, entry)` for every entry.
    pub fn new(f: &'a mut dyn FnMut(&str, Entry<'_, T>)) -> Self {
        Visitor {
            prefix: String::new(),
            f,
        }
    }

    fn name(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// A trainable parameter of this module.
    pub fn param(&mut self, name: &str, p: &mut Param<T>) {
        let full = self.name(name);
        (self.f)(&full, Entry::Param(p));
    }

    /// A non-trained tensor that checkpoints must keep.
    pub fn buffer(&mut self, name: &str, t: &mut Tensor<T>) {
        let full = self.name(name);
        (self.f)(&full, Entry::Buffer(t));
    }

    /// A sub-module; its entries are named `name.<entry>`.
    pub fn module(&mut self, name: &str, m: &mut dyn Module<T>) {
        let full = self.name(name);
        let saved = std::mem::replace(&mut self.prefix, full);
        m.visit(self);
        self.prefix = saved;
    }
}

/// A layer. Implement `visit` by listing the parameter fields and the
/// sub-modules; the forward pass is an ordinary method taking a
/// [`Ctx`](crate::Ctx) and `Var`s (no backward is ever written by hand).
///
/// ```
/// use autograd::{Param, Tensor};
/// use transformer::{param_count, Module, Visitor};
/// struct Scale { gain: Param }
/// impl Module for Scale {
///     fn visit(&mut self, v: &mut Visitor<'_>) { v.param("gain", &mut self.gain); }
/// }
/// let mut s = Scale { gain: Param::new(Tensor::ones(&[4])) };
/// assert_eq!(param_count(&mut s), 4);
/// ```
pub trait Module<T: Float = f32> {
    /// Shows `v` every parameter (`v.param`), buffer (`v.buffer`) and
    /// sub-module (`v.module`), each under its field name.
    fn visit(&mut self, v: &mut Visitor<'_, T>);
}

/// Every parameter, in visiting order, with its dotted name.
pub fn named_params<T: Float>(m: &mut dyn Module<T>) -> Vec<(String, Param<T>)> {
    let mut out = Vec::new();
    m.visit(&mut Visitor::new(&mut |name, e| {
        if let Entry::Param(p) = e {
            out.push((name.to_string(), p.clone()));
        }
    }));
    out
}

/// Every parameter and buffer value, in visiting order, with its name.
pub fn named_tensors<T: Float>(m: &mut dyn Module<T>) -> Vec<(String, Tensor<T>)> {
    let mut out = Vec::new();
    m.visit(&mut Visitor::new(&mut |name, e| {
        let t = match e {
            Entry::Param(p) => p.value.clone(),
            Entry::Buffer(b) => b.clone(),
        };
        out.push((name.to_string(), t));
    }));
    out
}

/// Number of trainable scalars.
pub fn param_count<T: Float>(m: &mut dyn Module<T>) -> usize {
    let mut n = 0;
    m.visit(&mut Visitor::new(&mut |_, e| {
        if let Entry::Param(p) = e {
            n += p.value.numel();
        }
    }));
    n
}
