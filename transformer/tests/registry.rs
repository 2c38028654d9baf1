//! The registry: built-in names, a user's block through model, trainer,
//! checkpoints and decoding, and the errors for names nobody registered.

use autograd::{Float, Tape, Var};
use transformer::synthetic::{COPY_VOCAB, copy_batch};
use transformer::{
    Ctx, FeedForwardBlock, Linear, ModelConfig, Module, Registry, Rng, TrainConfig, Trainer,
    Transformer, Visitor, named_params, rng,
};

/// A user's feed-forward: one linear map and a tanh.
struct TanhFfn<T: Float> {
    w: Linear<T>,
}

impl<T: Float> Module<T> for TanhFfn<T> {
    fn visit(&mut self, v: &mut Visitor<'_, T>) {
        v.module("w", &mut self.w);
    }
}

impl<T: Float> FeedForwardBlock<T> for TanhFfn<T> {
    fn forward<'t>(&self, ctx: &Ctx<'t, T>, x: Var<'t, T>) -> Var<'t, T> {
        self.w.forward(ctx, x).tanh()
    }
}

fn with_tanh() -> Registry<f32> {
    let mut r = Registry::builtin();
    r.feed_forward("tanh", |c, rng: &mut Rng| {
        Box::new(TanhFfn {
            w: Linear::new(c.d_model, c.d_model, rng),
        })
    });
    r
}

fn tanh_config() -> ModelConfig {
    ModelConfig {
        feed_forward: "tanh".into(),
        dropout: 0.1,
        ..ModelConfig::tiny(COPY_VOCAB, COPY_VOCAB)
    }
}

#[test]
fn builtin_names() {
    let builtin = Registry::<f32>::builtin();
    let [ffn, norm, attn, pos] = builtin.names();
    assert_eq!(ffn, ["gelu", "relu"]);
    assert_eq!(norm, ["batch", "layer", "none"]);
    assert_eq!(attn, ["mha"]);
    assert_eq!(pos, ["learned", "none", "sinusoidal"]);
    assert!(Registry::<f32>::empty().names().iter().all(Vec::is_empty));
}

#[test]
fn an_unregistered_name_in_any_slot_is_an_error_naming_slot_and_name() {
    let base = ModelConfig::tiny(10, 10);
    let cases = [
        (
            "feed_forward \"swiglu\"",
            ModelConfig {
                feed_forward: "swiglu".into(),
                ..base.clone()
            },
        ),
        (
            "norm \"rms\"",
            ModelConfig {
                norm: "rms".into(),
                ..base.clone()
            },
        ),
        (
            "self_attention \"alibi\"",
            ModelConfig {
                self_attention: "alibi".into(),
                ..base.clone()
            },
        ),
        (
            "cross_attention \"local\"",
            ModelConfig {
                cross_attention: "local".into(),
                ..base.clone()
            },
        ),
        (
            "positional \"rope\"",
            ModelConfig {
                positional: "rope".into(),
                ..base.clone()
            },
        ),
    ];
    for (want, cfg) in cases {
        let err = Transformer::<f32>::new(&cfg, 0).err().expect("must fail");
        assert!(err.contains(&format!("{want} is not registered")), "{err}");
        assert!(err.contains("register it with Registry::"), "{err}");
        let err = Trainer::new(cfg, TrainConfig::paper(32), 0)
            .err()
            .expect("must fail");
        assert!(err.contains(want), "{err}");
    }
}

#[test]
fn a_users_block_is_built_named_and_counted() {
    let mut m = Transformer::with_registry(&tanh_config(), &with_tanh(), 0).unwrap();
    let names: Vec<String> = named_params(&mut m).into_iter().map(|(n, _)| n).collect();
    assert!(
        names.contains(&"encoder.layers.0.ffn.w.weight".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"decoder.layers.0.ffn.w.bias".to_string()),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.contains("ffn.w1")), "{names:?}");
    // The recorded attention weights do not depend on the feed-forward.
    let tape = Tape::no_grad();
    let ctx = Ctx::eval(&tape);
    ctx.keep_attention();
    let b = copy_batch(&mut rng(0), 2, 3, 5, COPY_VOCAB);
    m.forward(&ctx, &b.src, &b.tgt_in);
    let recorded: Vec<String> = ctx.take_attention().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        recorded,
        [
            "encoder.layers.0.self_attn",
            "decoder.layers.0.self_attn",
            "decoder.layers.0.cross_attn"
        ]
    );
}

#[test]
fn same_config_registry_and_seed_give_the_same_weights() {
    let a = named_params(&mut Transformer::with_registry(&tanh_config(), &with_tanh(), 5).unwrap());
    let b = named_params(&mut Transformer::with_registry(&tanh_config(), &with_tanh(), 5).unwrap());
    assert_eq!(a.len(), b.len());
    for ((na, pa), (nb, pb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(pa.value.bit_eq(&pb.value), "{na}");
    }
}

/// A trainer (a model with a user's block, its optimiser, RNG) moves to
/// another thread: the ablation runner trains several at once.
#[test]
fn trainer_with_a_users_block_is_send_and_trains_on_another_thread() {
    fn assert_send<S: Send>(_: &S) {}
    let registry = with_tanh();
    let t = Trainer::with_registry(tanh_config(), TrainConfig::paper(32), 1, &registry).unwrap();
    assert_send(&t);
    let registry2 = registry.clone();
    let loss = std::thread::spawn(move || {
        let mut t = t;
        let b = copy_batch(&mut rng(2), 4, 2, 5, COPY_VOCAB);
        let _ = &registry2;
        t.step(&b.src, &b.tgt_in, &b.labels).loss
    })
    .join()
    .unwrap();
    assert!(loss.is_finite());
}

#[test]
fn resuming_needs_the_registry_that_knows_the_block() {
    let dir = std::env::temp_dir().join(format!("tfmr-registry-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tanh.ckpt");
    let registry = with_tanh();
    let mut t =
        Trainer::with_registry(tanh_config(), TrainConfig::paper(32), 1, &registry).unwrap();
    let b = copy_batch(&mut rng(3), 4, 2, 5, COPY_VOCAB);
    t.step(&b.src, &b.tgt_in, &b.labels);
    t.save(&path).unwrap();

    // Without the block: a clear error, naming the block, the slot and the file.
    let err = Trainer::resume(&path).err().expect("must fail").to_string();
    assert!(
        err.contains("feed_forward \"tanh\" is not registered"),
        "{err}"
    );
    assert!(err.contains("tanh.ckpt"), "{err}");

    // With it: the same model, which decodes.
    let mut back = Trainer::resume_with(&path, &registry).unwrap();
    assert_eq!(back.model.config.feed_forward, "tanh");
    assert_eq!(back.step, 1);
    let (a, b2) = (named_params(&mut back.model), named_params(&mut t.model));
    for ((na, pa), (_, pb)) in a.iter().zip(&b2) {
        assert!(pa.value.bit_eq(&pb.value), "{na}");
    }
    let out = back.model.greedy_decode(&b.src, 1, 2);
    assert_eq!(out.len(), 4);
    std::fs::remove_dir_all(&dir).unwrap();
}
