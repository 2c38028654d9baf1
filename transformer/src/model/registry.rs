//! `Registry`: builds each pluggable slot's block by the name the
//! [`ModelConfig`] gives it.
//!
//! The built-ins are registered under their names; a user registers their
//! own under a new name before building a model or resuming a checkpoint,
//! and then names it in the config like any built-in. Nothing else changes:
//! the trainer, decoding and checkpoints see a [`Module`](crate::Module)
//! like any other.

use std::collections::BTreeMap;
use std::sync::Arc;

use autograd::Float;

use crate::{
    Activation, AttentionBlock, BatchNorm, FeedForward, FeedForwardBlock, LayerNorm, ModelConfig,
    MultiHeadAttention, NoNorm, NormBlock, PositionalBlock, PositionalEncoding, PositionalKind,
    Rng,
};

/// Builds a feed-forward block from the config, drawing initial weights
/// from the generator.
pub type FeedForwardBuilder<T> =
    Arc<dyn Fn(&ModelConfig, &mut Rng) -> Box<dyn FeedForwardBlock<T>> + Send + Sync>;
/// Builds a norm block from the config.
pub type NormBuilder<T> =
    Arc<dyn Fn(&ModelConfig, &mut Rng) -> Box<dyn NormBlock<T>> + Send + Sync>;
/// Builds an attention block from the config.
pub type AttentionBuilder<T> =
    Arc<dyn Fn(&ModelConfig, &mut Rng) -> Box<dyn AttentionBlock<T>> + Send + Sync>;
/// Builds a positional block from the config.
pub type PositionalBuilder<T> =
    Arc<dyn Fn(&ModelConfig, &mut Rng) -> Box<dyn PositionalBlock<T>> + Send + Sync>;

/// Block builders by slot and name.
///
/// Builders are shared (`Arc`) and `Send + Sync`, so one registry serves
/// every model of an ablation, on any thread. Registering a name that is
/// already there replaces its builder (built-ins included: do that only on
/// purpose, since a checkpoint records names, not code).
///
/// ```
/// use transformer::{Activation, FeedForward, ModelConfig, Registry, Transformer, param_count};
/// // A feed-forward block of one's own: the paper's, twice as wide.
/// let mut registry = Registry::<f32>::builtin();
/// registry.feed_forward("wide_relu", |c, rng| {
///     Box::new(FeedForward::new(c.d_model, 2 * c.d_ff, Activation::Relu, c.ffn_dropout, rng))
/// });
/// let config = ModelConfig { feed_forward: "wide_relu".into(), ..ModelConfig::tiny(10, 10) };
/// let mut wide = Transformer::with_registry(&config, &registry, 0).unwrap();
/// let mut paper = Transformer::<f32>::new(&ModelConfig::tiny(10, 10), 0).unwrap();
/// // Two layers' feed-forwards, each (32 x 64 + 64 + 64 x 32) more weights.
/// assert_eq!(param_count(&mut wide) - param_count(&mut paper), 2 * (2 * 32 * 64 + 64));
///
/// // An unknown name is an error that says what to do.
/// let bad = ModelConfig { norm: "rms".into(), ..ModelConfig::tiny(10, 10) };
/// let err = Transformer::<f32>::with_registry(&bad, &registry, 0).err().unwrap();
/// assert!(err.contains("norm \"rms\" is not registered"), "{err}");
/// ```
pub struct Registry<T: Float = f32> {
    feed_forward: BTreeMap<String, FeedForwardBuilder<T>>,
    norm: BTreeMap<String, NormBuilder<T>>,
    attention: BTreeMap<String, AttentionBuilder<T>>,
    positional: BTreeMap<String, PositionalBuilder<T>>,
}

impl<T: Float> Clone for Registry<T> {
    fn clone(&self) -> Self {
        Registry {
            feed_forward: self.feed_forward.clone(),
            norm: self.norm.clone(),
            attention: self.attention.clone(),
            positional: self.positional.clone(),
        }
    }
}

impl<T: Float> Default for Registry<T> {
    fn default() -> Self {
        Self::builtin()
    }
}

/// Looks `name` up in one slot's map; the error names the slot, the name,
/// what is registered and what to do.
fn lookup<'a, B>(
    slot: &str,
    map: &'a BTreeMap<String, B>,
    name: &str,
    register: &str,
) -> Result<&'a B, String> {
    map.get(name).ok_or_else(|| {
        let known: Vec<&str> = map.keys().map(String::as_str).collect();
        format!(
            "config: {slot} \"{name}\" is not registered (registered: {}); register it with \
             Registry::{register} before building the model or resuming a checkpoint",
            known.join(", ")
        )
    })
}

impl<T: Float> Registry<T> {
    /// A registry with no blocks at all.
    pub fn empty() -> Self {
        Registry {
            feed_forward: BTreeMap::new(),
            norm: BTreeMap::new(),
            attention: BTreeMap::new(),
            positional: BTreeMap::new(),
        }
    }

    /// The built-in blocks: feed-forward `relu` (the paper) and `gelu`;
    /// norms `layer` (the paper), `batch` and `none`; attention `mha`;
    /// positions `sinusoidal` (the paper), `learned` and `none`.
    pub fn builtin() -> Self {
        let mut r = Self::empty();
        for (name, act) in [("relu", Activation::Relu), ("gelu", Activation::Gelu)] {
            r.feed_forward(name, move |c, rng| {
                Box::new(FeedForward::new(c.d_model, c.d_ff, act, c.ffn_dropout, rng))
            });
        }
        r.norm("layer", |c, _| {
            Box::new(LayerNorm::new(c.d_model, c.norm_eps))
        });
        r.norm("batch", |c, _| {
            Box::new(BatchNorm::new(c.d_model, c.norm_eps, c.bn_momentum))
        });
        r.norm("none", |_, _| Box::new(NoNorm));
        r.attention("mha", |c, rng| {
            Box::new(MultiHeadAttention::new(
                c.d_model,
                c.heads,
                c.attention_dropout,
                rng,
            ))
        });
        for (name, kind) in [
            ("sinusoidal", PositionalKind::Sinusoidal),
            ("learned", PositionalKind::Learned),
            ("none", PositionalKind::None),
        ] {
            r.positional(name, move |c, rng| {
                Box::new(PositionalEncoding::new(kind, c.max_len, c.d_model, rng))
            });
        }
        r
    }

    /// The registry after `register` added to it: reads well for a
    /// user's `register` function, `Registry::builtin().with(my_blocks)`.
    ///
    /// ```
    /// use transformer::{NoNorm, Registry};
    /// let r = Registry::<f32>::builtin().with(|r| {
    ///     r.norm("identity", |_, _| Box::new(NoNorm));
    /// });
    /// assert!(r.names()[1].contains(&"identity"));
    /// ```
    pub fn with(mut self, register: impl FnOnce(&mut Self)) -> Self {
        register(&mut self);
        self
    }

    /// Registers a feed-forward block under `name` (the config's
    /// `feed_forward`).
    pub fn feed_forward(
        &mut self,
        name: &str,
        build: impl Fn(&ModelConfig, &mut Rng) -> Box<dyn FeedForwardBlock<T>> + Send + Sync + 'static,
    ) -> &mut Self {
        self.feed_forward.insert(name.to_string(), Arc::new(build));
        self
    }

    /// Registers a norm block under `name` (the config's `norm`).
    pub fn norm(
        &mut self,
        name: &str,
        build: impl Fn(&ModelConfig, &mut Rng) -> Box<dyn NormBlock<T>> + Send + Sync + 'static,
    ) -> &mut Self {
        self.norm.insert(name.to_string(), Arc::new(build));
        self
    }

    /// Registers an attention block under `name` (the config's
    /// `self_attention` or `cross_attention`).
    pub fn attention(
        &mut self,
        name: &str,
        build: impl Fn(&ModelConfig, &mut Rng) -> Box<dyn AttentionBlock<T>> + Send + Sync + 'static,
    ) -> &mut Self {
        self.attention.insert(name.to_string(), Arc::new(build));
        self
    }

    /// Registers a positional block under `name` (the config's
    /// `positional`).
    pub fn positional(
        &mut self,
        name: &str,
        build: impl Fn(&ModelConfig, &mut Rng) -> Box<dyn PositionalBlock<T>> + Send + Sync + 'static,
    ) -> &mut Self {
        self.positional.insert(name.to_string(), Arc::new(build));
        self
    }

    /// The registered names of each slot: (feed-forward, norm, attention,
    /// positional).
    pub fn names(&self) -> [Vec<&str>; 4] {
        fn keys<B>(m: &BTreeMap<String, B>) -> Vec<&str> {
            m.keys().map(String::as_str).collect()
        }
        [
            keys(&self.feed_forward),
            keys(&self.norm),
            keys(&self.attention),
            keys(&self.positional),
        ]
    }

    /// Checks that every block the config names is registered (before any
    /// weight is drawn, so the error comes first and cheaply).
    pub fn check(&self, c: &ModelConfig) -> Result<(), String> {
        lookup(
            "feed_forward",
            &self.feed_forward,
            &c.feed_forward,
            "feed_forward",
        )?;
        lookup("norm", &self.norm, c.encoder_norm(), "norm")?;
        lookup("norm", &self.norm, c.decoder_norm(), "norm")?;
        lookup(
            "self_attention",
            &self.attention,
            &c.self_attention,
            "attention",
        )?;
        lookup(
            "cross_attention",
            &self.attention,
            &c.cross_attention,
            "attention",
        )?;
        lookup("positional", &self.positional, &c.positional, "positional")?;
        Ok(())
    }

    /// The config's feed-forward block. Panics if it is not registered
    /// (call [`Registry::check`] first).
    pub fn build_feed_forward(
        &self,
        c: &ModelConfig,
        rng: &mut Rng,
    ) -> Box<dyn FeedForwardBlock<T>> {
        let b = lookup(
            "feed_forward",
            &self.feed_forward,
            &c.feed_forward,
            "feed_forward",
        );
        b.unwrap_or_else(|e| panic!("{e}"))(c, rng)
    }

    /// The norm block named `name`. Panics if it is not registered.
    pub fn build_norm(&self, name: &str, c: &ModelConfig, rng: &mut Rng) -> Box<dyn NormBlock<T>> {
        let b = lookup("norm", &self.norm, name, "norm");
        b.unwrap_or_else(|e| panic!("{e}"))(c, rng)
    }

    /// The attention block named `name`. Panics if it is not registered.
    pub fn build_attention(
        &self,
        name: &str,
        c: &ModelConfig,
        rng: &mut Rng,
    ) -> Box<dyn AttentionBlock<T>> {
        let b = lookup("attention", &self.attention, name, "attention");
        b.unwrap_or_else(|e| panic!("{e}"))(c, rng)
    }

    /// The config's positional block. Panics if it is not registered.
    pub fn build_positional(&self, c: &ModelConfig, rng: &mut Rng) -> Box<dyn PositionalBlock<T>> {
        let b = lookup("positional", &self.positional, &c.positional, "positional");
        b.unwrap_or_else(|e| panic!("{e}"))(c, rng)
    }
}
