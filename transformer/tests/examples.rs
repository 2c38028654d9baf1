//! Cargo runs an example's `#[test]`s only when `Cargo.toml` declares it
//! with `test = true`; an example added without that line would have its
//! tests skipped in silence. This test makes that a failure.

use std::collections::BTreeSet;

#[test]
fn every_example_is_declared_with_test_true() {
    let root = env!("CARGO_MANIFEST_DIR");
    let manifest = std::fs::read_to_string(format!("{root}/Cargo.toml")).expect("Cargo.toml");
    let mut tested = BTreeSet::new();
    for block in manifest.split("[[example]]").skip(1) {
        let block = block.split("\n[").next().unwrap_or("");
        let name = block
            .lines()
            .find_map(|l| l.trim().strip_prefix("name = "))
            .map(|n| n.trim_matches('"').to_string())
            .expect("an [[example]] without a name");
        let test_true = block
            .lines()
            .any(|l| l.split('#').next().unwrap_or("").replace(' ', "") == "test=true");
        assert!(
            test_true,
            "example `{name}` lacks `test = true` in Cargo.toml"
        );
        tested.insert(name);
    }
    let files: BTreeSet<String> = std::fs::read_dir(format!("{root}/examples"))
        .expect("examples/")
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "rs").then(|| p.file_stem()?.to_str().map(String::from))?
        })
        .collect();
    let missing: Vec<&String> = files.difference(&tested).collect();
    assert!(
        missing.is_empty(),
        "examples without an [[example]] entry with `test = true` in Cargo.toml: {missing:?}"
    );
    assert!(
        files.len() >= 5,
        "expected the five examples, found {files:?}"
    );
}
