//! Run configs: every preset is valid and survives a TOML round trip;
//! overrides reach every section; a bad key or value is an error naming it.

use experiments::config::{PRESETS, RunConfig, TaskConfig};

#[test]
fn every_preset_is_valid_and_round_trips_through_toml() {
    let dir = std::env::temp_dir().join(format!("config-presets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in PRESETS {
        let c = RunConfig::preset(name).unwrap();
        c.validate()
            .unwrap_or_else(|e| panic!("preset {name}: {e}"));
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, c.to_toml()).unwrap();
        assert_eq!(RunConfig::load(&path).unwrap(), c, "preset {name}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn overrides_reach_every_section_with_typed_values() {
    let c = RunConfig::preset("translate").unwrap();
    let c = c
        .with_overrides(&[
            "model.d_model=256".into(),
            "model.norm=batch".into(),
            "train.smoothing=0".into(),
            "train.schedule.Noam.warmup=800".into(),
            "loop.steps=123".into(),
            "vocab.min_count=3".into(),
            "task.joint_vocab=true".into(),
            "eval.beam=2".into(),
        ])
        .unwrap();
    assert_eq!(c.model.d_model, 256);
    assert_eq!(c.model.norm, "batch"); // a bare word is a string
    assert_eq!(c.train.smoothing, 0.0); // an integer where a float goes
    assert_eq!(c.run.steps, Some(123)); // an unset optional field
    assert_eq!(c.eval.beam, 2);
    assert!(matches!(
        c.train.schedule,
        transformer::schedule::Schedule::Noam { warmup: 800, .. }
    ));
    assert!(matches!(c.task, TaskConfig::Translate { .. }));
    assert_eq!(
        c.vocab,
        experiments::vocab::VocabSpec::Word { min_count: 3 }
    );
    // Switching the vocabulary kind with its fields.
    let w = c
        .with_overrides(&["vocab={ kind = \"bpe\", size = 2000 }".into()])
        .unwrap();
    assert_eq!(
        w.vocab,
        experiments::vocab::VocabSpec::Bpe {
            size: 2000,
            min_frequency: 2
        }
    );
}

#[test]
fn a_bad_key_or_value_is_an_error_naming_it() {
    let c = RunConfig::preset("translate").unwrap();
    let cases = [
        ("model.d_modle=256", "d_modle"),
        ("loop.stepz=5", "stepz"),
        ("model.d_model=wide", "d_model"),
        ("model.heads=3", "divisible"),
        ("train.smoothing=1.5", "smoothing"),
        ("loop.batch_tokens=0", "batch_tokens"),
        ("model.encoder_layers=0", "decoder-only"),
        ("task.joint_vocab=false", "joint_vocab"),
        ("vocab.min_count=0", "min_count"),
        ("noequals", "key=value"),
        ("model.d_model.x=1", "value, not a section"),
    ];
    for (set, needle) in cases {
        let e = c.with_overrides(&[set.into()]).unwrap_err();
        assert!(
            e.contains(needle),
            "--set {set}: {e:?} does not name {needle:?}"
        );
    }
    let lm = RunConfig::preset("lm").unwrap();
    let e = lm
        .with_overrides(&["model.encoder_layers=2".into()])
        .unwrap_err();
    assert!(e.contains("decoder-only"), "{e}");
    let e = lm
        .with_overrides(&["task.context=100000".into()])
        .unwrap_err();
    assert!(e.contains("context"), "{e}");
    assert!(RunConfig::preset("translat").unwrap_err().contains("known"));
}

#[test]
fn a_config_file_with_an_unknown_field_is_an_error_naming_file_and_field() {
    let dir = std::env::temp_dir().join(format!("config-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    let text = RunConfig::preset("copy")
        .unwrap()
        .to_toml()
        .replace("[loop]", "[loop]\nwarp_speed = 9");
    std::fs::write(&path, text).unwrap();
    let e = RunConfig::load(&path).unwrap_err();
    assert!(e.contains("bad.toml") && e.contains("warp_speed"), "{e}");
    std::fs::write(&path, "not toml [").unwrap();
    assert!(RunConfig::load(&path).unwrap_err().contains("bad.toml"));
    let e = RunConfig::load(&dir.join("missing.toml")).unwrap_err();
    assert!(e.contains("missing.toml"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
