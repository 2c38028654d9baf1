//! `ModelConfig`: every architectural and ablation knob of the model in one
//! serde struct. Ablations differ in config, never in forked code.
//!
//! The four pluggable slots (feed-forward, norm, self/cross attention,
//! positions) are named by strings that a [`Registry`](crate::Registry)
//! resolves, so a user's block is chosen exactly like a built-in one, and a
//! checkpoint (which stores this config) records which blocks it needs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The largest sizes [`ModelConfig::validate`] accepts: far above anything
/// this framework trains on a CPU (the paper's big model has d_model 1024,
/// d_ff 4096, 6 + 6 layers, 213M parameters), low enough that no config
/// (from a file, a checkpoint or a command line) can make the process
/// abort on an impossible allocation.
pub mod limits {
    /// Model width.
    pub const D_MODEL: usize = 1 << 16;
    /// Attention heads.
    pub const HEADS: usize = 1 << 10;
    /// Feed-forward inner width.
    pub const D_FF: usize = 1 << 18;
    /// Layers per stack.
    pub const LAYERS: usize = 1 << 10;
    /// Vocabulary size (source or target).
    pub const VOCAB: usize = 1 << 24;
    /// Longest sequence (positional tables).
    pub const MAX_LEN: usize = 1 << 16;
    /// Numbers the built-in parts of a model may hold (parameters plus
    /// position tables): 2^30, 4 GiB in f32.
    pub const ELEMENTS: usize = 1 << 30;
}

/// Where the norm named by `ModelConfig::norm` applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormScope {
    /// Encoder and decoder.
    Both,
    /// Encoder only; the decoder keeps LayerNorm (`"layer"`). This is what Shen et al.
    /// (2020) did with BatchNorm: in a causal decoder, batch statistics mix
    /// future positions into past ones during training (see `BatchNorm`).
    EncoderOnly,
}

/// Whether the norm comes after the residual add (the paper) or before the
/// sublayer (Xiong et al. 2020; trains without warmup more easily).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// `x = Norm(x + Dropout(Sublayer(x)))`
    Post,
    /// `x = x + Dropout(Sublayer(Norm(x)))`, with a final norm after the stack.
    Pre,
}

/// Which embedding matrices are one shared matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tying {
    /// Separate source and target embeddings and an output Linear with bias.
    None,
    /// The target embedding is the output projection (`logits = h E^T`, no bias).
    Output,
    /// One matrix for source, target and output (the paper, section 3.4);
    /// needs `src_vocab == tgt_vocab`.
    All,
}

/// The model's configuration.
///
/// ```
/// use transformer::ModelConfig;
/// let c = ModelConfig::base(37000, 37000);
/// assert_eq!((c.d_model, c.heads, c.d_ff, c.encoder_layers), (512, 8, 2048, 6));
/// assert_eq!((c.norm.as_str(), c.feed_forward.as_str()), ("layer", "relu"));
/// assert!(c.validate().is_ok());
/// let bad = ModelConfig { heads: 7, ..c };
/// assert!(bad.validate().unwrap_err().contains("divisible"));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Model width D.
    pub d_model: usize,
    /// Attention heads H (D must be divisible by H).
    pub heads: usize,
    /// Inner width of the feed-forward network.
    pub d_ff: usize,
    /// Encoder layers N (6 in the paper). 0 makes a decoder-only model
    /// (a GPT-style language model, [`ModelConfig::decoder_only`]).
    pub encoder_layers: usize,
    /// Decoder layers N (6 in the paper).
    pub decoder_layers: usize,
    /// Dropout on every sublayer output and on embeddings + positions (0.1).
    pub dropout: f64,
    /// Dropout on the attention weights (0 in the paper's description).
    pub attention_dropout: f64,
    /// Dropout after the feed-forward activation (0: the paper has none;
    /// tensor2tensor's `relu_dropout` is this knob).
    pub ffn_dropout: f64,
    /// Source vocabulary size.
    pub src_vocab: usize,
    /// Target vocabulary size.
    pub tgt_vocab: usize,
    /// Which embedding matrices are shared.
    pub tying: Tying,
    /// Positional block, by registry name: `"sinusoidal"` (the paper),
    /// `"learned"`, `"none"`, or a user's.
    pub positional: String,
    /// Norm block of every Add & Norm, by registry name: `"layer"` (the
    /// paper), `"batch"`, `"none"`, or a user's.
    pub norm: String,
    /// Where `norm` applies (both stacks, or the encoder only).
    pub norm_scope: NormScope,
    /// Post-norm (the paper) or pre-norm.
    pub placement: Placement,
    /// Residual connections around every sublayer.
    pub residual: bool,
    /// Feed-forward block, by registry name: `"relu"` (the paper),
    /// `"gelu"`, or a user's.
    pub feed_forward: String,
    /// Self-attention block of both stacks, by registry name: `"mha"` (the
    /// paper) or a user's.
    pub self_attention: String,
    /// Decoder cross-attention block, by registry name: `"mha"` or a user's.
    pub cross_attention: String,
    /// Hyper-parameters of user blocks, read by their builders (for
    /// instance `"swiglu.hidden" = 96.0`); the built-ins read none. An
    /// ablation can vary them like any other field.
    #[serde(default)]
    pub extra: BTreeMap<String, f64>,
    /// Longest sequence the positional table covers.
    pub max_len: usize,
    /// Epsilon inside the norms' square root.
    pub norm_eps: f64,
    /// BatchNorm's running-statistics momentum (PyTorch convention:
    /// `running = (1 - m) running + m batch`).
    pub bn_momentum: f64,
    /// The padding token, masked out of attention keys, norms and the loss.
    /// `None`: sequences are never padded.
    pub pad_id: Option<usize>,
}

impl ModelConfig {
    /// The paper's base model (Table 3): d_model 512, 8 heads, d_ff 2048,
    /// 6 + 6 layers, dropout 0.1, shared embeddings, post-LN.
    pub fn base(src_vocab: usize, tgt_vocab: usize) -> Self {
        ModelConfig {
            d_model: 512,
            heads: 8,
            d_ff: 2048,
            encoder_layers: 6,
            decoder_layers: 6,
            dropout: 0.1,
            attention_dropout: 0.0,
            ffn_dropout: 0.0,
            src_vocab,
            tgt_vocab,
            tying: if src_vocab == tgt_vocab {
                Tying::All
            } else {
                Tying::Output
            },
            positional: "sinusoidal".into(),
            norm: "layer".into(),
            norm_scope: NormScope::Both,
            placement: Placement::Post,
            residual: true,
            feed_forward: "relu".into(),
            self_attention: "mha".into(),
            cross_attention: "mha".into(),
            extra: BTreeMap::new(),
            max_len: 512,
            norm_eps: 1e-5,
            bn_momentum: 0.1,
            pad_id: Some(0),
        }
    }

    /// A small model that trains in minutes on 2 cores: d_model 128,
    /// 4 heads, d_ff 512, 2 + 2 layers.
    pub fn small(src_vocab: usize, tgt_vocab: usize) -> Self {
        ModelConfig {
            d_model: 128,
            heads: 4,
            d_ff: 512,
            encoder_layers: 2,
            decoder_layers: 2,
            max_len: 256,
            ..Self::base(src_vocab, tgt_vocab)
        }
    }

    /// A tiny model for tests and demos (seconds): d_model 32, 2 heads,
    /// d_ff 64, 1 + 1 layers.
    pub fn tiny(src_vocab: usize, tgt_vocab: usize) -> Self {
        ModelConfig {
            d_model: 32,
            heads: 2,
            d_ff: 64,
            encoder_layers: 1,
            decoder_layers: 1,
            max_len: 128,
            ..Self::base(src_vocab, tgt_vocab)
        }
    }

    /// The smallest useful model, for gradient checks of whole models
    /// (every parameter is an input of the finite differences): d_model 4,
    /// 2 heads, d_ff 8, 1 + 1 layers, max_len 8, no dropout.
    pub fn for_gradcheck(src_vocab: usize, tgt_vocab: usize) -> Self {
        ModelConfig {
            d_model: 4,
            heads: 2,
            d_ff: 8,
            dropout: 0.0,
            max_len: 8,
            ..Self::tiny(src_vocab, tgt_vocab)
        }
    }

    /// A decoder-only model (`encoder_layers == 0`, the layout of GPT,
    /// Radford et al. 2018): no encoder and no cross-attention sublayers;
    /// the source batch must be empty, (B, 0), and the decoder is a causal
    /// language model over `tgt_vocab`.
    ///
    /// ```
    /// use autograd::Tape;
    /// use transformer::{Ctx, ModelConfig, TokenBatch, Transformer};
    /// let cfg = ModelConfig { encoder_layers: 0, ..ModelConfig::tiny(12, 12) };
    /// assert!(cfg.decoder_only());
    /// let model = Transformer::<f32>::new(&cfg, 0).unwrap();
    /// let tape = Tape::new();
    /// let ctx = Ctx::eval(&tape);
    /// let no_source = TokenBatch::new(vec![], 2, 0); // (B, 0)
    /// let ids = TokenBatch::padded(&[vec![1, 5, 6], vec![1, 7]], 0);
    /// assert_eq!(model.forward(&ctx, &no_source, &ids).shape(), vec![2, 3, 12]);
    /// ```
    pub fn decoder_only(&self) -> bool {
        self.encoder_layers == 0
    }

    /// The norm block (registry name) of the encoder's sublayers.
    pub fn encoder_norm(&self) -> &str {
        &self.norm
    }

    /// The norm block (registry name) of the decoder's sublayers:
    /// `"layer"` under [`NormScope::EncoderOnly`].
    pub fn decoder_norm(&self) -> &str {
        match self.norm_scope {
            NormScope::Both => &self.norm,
            NormScope::EncoderOnly => "layer",
        }
    }

    /// A user block's hyper-parameter from [`ModelConfig::extra`], or
    /// `default` when the config does not set it.
    ///
    /// ```
    /// let mut c = transformer::ModelConfig::tiny(8, 8);
    /// assert_eq!(c.extra_or("swiglu.hidden", 64.0), 64.0);
    /// c.extra.insert("swiglu.hidden".into(), 48.0);
    /// assert_eq!(c.extra_or("swiglu.hidden", 64.0), 48.0);
    /// ```
    pub fn extra_or(&self, name: &str, default: f64) -> f64 {
        self.extra.get(name).copied().unwrap_or(default)
    }

    /// The parameters the config's parts whose size it fixes hold
    /// (embeddings, generator, learned positions) plus those of every
    /// *built-in* block it names (a user's block counts 0: its size is its
    /// own). A lower bound on the model's parameter count; exact for the
    /// built-in blocks. Computed in `u128`, so no size overflows.
    ///
    /// ```
    /// use transformer::{param_count, ModelConfig, Transformer};
    /// let c = ModelConfig::tiny(12, 10);
    /// let mut m = Transformer::<f32>::new(&c, 0).unwrap();
    /// assert_eq!(c.builtin_param_count(), param_count(&mut m) as u128);
    /// ```
    pub fn builtin_param_count(&self) -> u128 {
        let n = |x: usize| x as u128;
        let (d, f) = (n(self.d_model), n(self.d_ff));
        let mut p = n(self.src_vocab) * d;
        if self.tying != Tying::All {
            p += n(self.tgt_vocab) * d;
        }
        if self.tying == Tying::None {
            p += d * n(self.tgt_vocab) + n(self.tgt_vocab);
        }
        if self.positional == "learned" {
            p += 2 * n(self.max_len) * d;
        }
        let attn = if self.self_attention == "mha" {
            4 * (d * d + d)
        } else {
            0
        };
        let cross = if self.cross_attention == "mha" && !self.decoder_only() {
            4 * (d * d + d)
        } else {
            0
        };
        let ffn = match self.feed_forward.as_str() {
            "relu" | "gelu" => 2 * d * f + f + d,
            _ => 0,
        };
        let norm = |name: &str| match name {
            "layer" | "batch" => 2 * d,
            _ => 0,
        };
        let (ne, nd) = (norm(self.encoder_norm()), norm(self.decoder_norm()));
        let pre = self.placement == Placement::Pre;
        // A stack's final norm (pre-norm) exists only when it has layers.
        let final_norm = |layers: usize, norm: u128| if pre && layers > 0 { norm } else { 0 };
        let sublayers = if self.decoder_only() { 2 } else { 3 };
        p += n(self.encoder_layers) * (attn + ffn + 2 * ne) + final_norm(self.encoder_layers, ne);
        p += n(self.decoder_layers) * (attn + cross + ffn + sublayers * nd)
            + final_norm(self.decoder_layers, nd);
        p
    }

    /// [`ModelConfig::builtin_param_count`] plus the fixed sinusoidal
    /// tables (two of max_len x D), which are allocated but not parameters.
    fn builtin_elements(&self) -> u128 {
        let tables = if self.positional == "sinusoidal" {
            2 * self.max_len as u128 * self.d_model as u128
        } else {
            0
        };
        self.builtin_param_count() + tables
    }

    /// Checks the config; the message says what to change. Every size is
    /// bounded by [`limits`], before anything is allocated.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("d_model", self.d_model),
            ("heads", self.heads),
            ("d_ff", self.d_ff),
            ("src_vocab", self.src_vocab),
            ("tgt_vocab", self.tgt_vocab),
            ("max_len", self.max_len),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(format!("config: {name} must be at least 1"));
            }
        }
        // Bounds before anything is allocated: a config read from a file
        // (a checkpoint's) must not be able to abort the process with a
        // huge allocation (issue 10).
        let bounded = [
            ("d_model", self.d_model, limits::D_MODEL),
            ("heads", self.heads, limits::HEADS),
            ("d_ff", self.d_ff, limits::D_FF),
            ("encoder_layers", self.encoder_layers, limits::LAYERS),
            ("decoder_layers", self.decoder_layers, limits::LAYERS),
            ("src_vocab", self.src_vocab, limits::VOCAB),
            ("tgt_vocab", self.tgt_vocab, limits::VOCAB),
            ("max_len", self.max_len, limits::MAX_LEN),
        ];
        for (name, v, max) in bounded {
            if v > max {
                return Err(format!(
                    "config: {name} = {v} is above the supported maximum of {max} \
                     (transformer::model::limits)"
                ));
            }
        }
        let elements = self.builtin_elements();
        if elements > limits::ELEMENTS as u128 {
            return Err(format!(
                "config: the model would hold about {elements} numbers (parameters and \
                 position tables), above the supported maximum of {} (4 GiB in f32; \
                 transformer::model::limits)",
                limits::ELEMENTS
            ));
        }
        if !self.d_model.is_multiple_of(self.heads) {
            return Err(format!(
                "config: d_model {} is not divisible by heads {} (d_k = d_model / heads must be whole)",
                self.d_model, self.heads
            ));
        }
        if self.positional == "sinusoidal" && !self.d_model.is_multiple_of(2) {
            return Err(format!(
                "config: sinusoidal positions need an even d_model, got {}",
                self.d_model
            ));
        }
        for (name, p) in [
            ("dropout", self.dropout),
            ("attention_dropout", self.attention_dropout),
            ("ffn_dropout", self.ffn_dropout),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(format!("config: {name} = {p} must be in [0, 1)"));
            }
        }
        // Written so that NaN is rejected too.
        if self.norm_eps.is_nan() || self.norm_eps <= 0.0 {
            return Err(format!(
                "config: norm_eps = {} must be positive",
                self.norm_eps
            ));
        }
        if !(0.0..=1.0).contains(&self.bn_momentum) {
            return Err(format!(
                "config: bn_momentum = {} must be in [0, 1]",
                self.bn_momentum
            ));
        }
        if self.tying == Tying::All && self.src_vocab != self.tgt_vocab {
            return Err(format!(
                "config: tying = all shares one embedding, but src_vocab {} != tgt_vocab {}",
                self.src_vocab, self.tgt_vocab
            ));
        }
        if let Some(p) = self.pad_id
            && p >= self.src_vocab.min(self.tgt_vocab)
        {
            return Err(format!(
                "config: pad_id {p} is outside the vocabularies ({} / {})",
                self.src_vocab, self.tgt_vocab
            ));
        }
        Ok(())
    }
}
