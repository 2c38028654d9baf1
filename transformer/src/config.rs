//! `ModelConfig`: every architectural and ablation knob of the model in one
//! serde struct. Ablations differ in config, never in forked code.

use serde::{Deserialize, Serialize};

/// Which normalisation a sublayer uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormKind {
    /// LayerNorm over the features of each token (Ba et al. 2016; the paper).
    Layer,
    /// BatchNorm over the non-padding tokens of the batch (Shen et al. 2020).
    Batch,
    /// No normalisation at all.
    None,
}

/// Where the norm kind of `ModelConfig::norm` applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormScope {
    /// Encoder and decoder.
    Both,
    /// Encoder only; the decoder keeps LayerNorm. This is what Shen et al.
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

/// Positional information added to the embeddings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PositionalKind {
    /// The paper's fixed sin/cos table.
    Sinusoidal,
    /// A trained (max_len, d_model) table.
    Learned,
    /// None: the model sees a bag of tokens (an ablation).
    None,
}

/// The feed-forward activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Relu,
    Gelu,
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
/// assert!(c.validate().is_ok());
/// let bad = ModelConfig { heads: 7, ..c };
/// assert!(bad.validate().unwrap_err().contains("divisible"));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub d_model: usize,
    pub heads: usize,
    pub d_ff: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    /// Dropout on every sublayer output and on embeddings + positions (0.1).
    pub dropout: f64,
    /// Dropout on the attention weights (0 in the paper's description).
    pub attention_dropout: f64,
    /// Dropout after the feed-forward activation (0: the paper has none;
    /// tensor2tensor's `relu_dropout` is this knob).
    pub ffn_dropout: f64,
    pub src_vocab: usize,
    pub tgt_vocab: usize,
    pub tying: Tying,
    pub positional: PositionalKind,
    pub norm: NormKind,
    pub norm_scope: NormScope,
    pub placement: Placement,
    /// Residual connections around every sublayer.
    pub residual: bool,
    pub activation: Activation,
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
            positional: PositionalKind::Sinusoidal,
            norm: NormKind::Layer,
            norm_scope: NormScope::Both,
            placement: Placement::Post,
            residual: true,
            activation: Activation::Relu,
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

    /// The norm kind used by the decoder's sublayers.
    pub fn decoder_norm(&self) -> NormKind {
        match (self.norm, self.norm_scope) {
            (NormKind::Batch, NormScope::EncoderOnly) => NormKind::Layer,
            (n, _) => n,
        }
    }

    /// Checks the config; the message says what to change.
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
        if !self.d_model.is_multiple_of(self.heads) {
            return Err(format!(
                "config: d_model {} is not divisible by heads {} (d_k = d_model / heads must be whole)",
                self.d_model, self.heads
            ));
        }
        if self.positional == PositionalKind::Sinusoidal && !self.d_model.is_multiple_of(2) {
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
