//! Character, word and BPE vocabularies: round trips on real and odd text,
//! `<unk>`, the specials' ids, save/load, deterministic training whatever
//! the thread count, and malformed saved files as errors naming the file.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

use experiments::data::{Pair, data_dir, read_pairs};
use experiments::vocab::{
    BOS, EOS, PAD, SPECIALS, TOKENIZER_FILE, UNK, VOCAB_FILE, Vocab, VocabSpec, word_count,
};

mod common;
use common::TempDir;

fn train_pairs() -> &'static [Pair] {
    static PAIRS: OnceLock<Vec<Pair>> = OnceLock::new();
    PAIRS.get_or_init(|| read_pairs(&data_dir().join("ding-en-de/train.tsv")).unwrap())
}

/// English and German training text together: the joint vocabulary.
fn joint_texts() -> Vec<&'static str> {
    train_pairs()
        .iter()
        .flat_map(|p| [p.src.as_str(), p.tgt.as_str()])
        .collect()
}

const CHAR: VocabSpec = VocabSpec::Char { min_count: 1 };
const WORD: VocabSpec = VocabSpec::Word { min_count: 2 };
const BPE: VocabSpec = VocabSpec::Bpe {
    size: 2000,
    min_frequency: 2,
};

fn joint(spec: &VocabSpec) -> Vocab {
    Vocab::train(spec, &joint_texts()).unwrap()
}

const ODD: &[&str] = &[
    "",
    " ",
    "  Hello,\tworld!\n ",
    "🦀 Rust 👩‍👩‍👧",
    "Привет, мир",
    "日本語のテキスト",
    "مرحبا",
    "<pad> <unk> literal specials </s>",
    "Straße „Zitat“ (Klammer) 50 % – don't",
    "a\u{0}b\u{7f}c",
];

fn every_kind() -> Vec<Vocab> {
    vec![joint(&CHAR), joint(&WORD), joint(&BPE)]
}

#[test]
fn specials_come_first_in_every_kind() {
    assert_eq!((PAD, BOS, EOS, UNK), (0, 1, 2, 3));
    for v in every_kind() {
        for (id, s) in SPECIALS.iter().enumerate() {
            assert_eq!(v.token(id), *s, "{:?}", v.spec());
        }
        assert!(v.len() > SPECIALS.len() && !v.is_empty());
    }
}

#[test]
fn real_sentences_round_trip() {
    let valid = read_pairs(&data_dir().join("ding-en-de/valid.tsv")).unwrap();
    for v in every_kind() {
        // Training sentences have every token known (word min_count 2
        // aside, hence the check on `UNK`).
        for p in train_pairs().iter().take(2000) {
            for text in [&p.src, &p.tgt] {
                let ids = v.encode(text);
                assert!(!ids.is_empty() && ids.iter().all(|&i| i < v.len()));
                if !ids.contains(&UNK) {
                    assert_eq!(v.decode(&ids), v.normalise(text), "{:?}", v.spec());
                }
            }
        }
        // Unseen sentences too, where they have no unknown token.
        let known = valid
            .iter()
            .filter(|p| {
                let ids = v.encode(&p.src);
                !ids.contains(&UNK) && v.decode(&ids) == v.normalise(&p.src)
            })
            .count();
        assert!(known > 500, "{:?}: {known}", v.spec());
    }
}

#[test]
fn normalise_is_what_each_kind_promises() {
    let [c, w, b] = <[Vocab; 3]>::try_from(every_kind()).unwrap();
    let text = "  Don't   say \"no\" (please) , „ja“ !  ";
    assert_eq!(c.normalise(text), "Don't say \"no\" (please) , „ja“ !");
    assert_eq!(w.normalise(text), "Don't say \" no \" (please), „ja“!");
    assert_eq!(b.normalise(text), text);
    // Word level: normalising twice changes nothing.
    for t in ODD.iter().chain([&text]) {
        assert_eq!(w.normalise(&w.normalise(t)), w.normalise(t));
    }
}

#[test]
fn odd_input_never_panics_and_bpe_is_exact() {
    let [c, w, b] = <[Vocab; 3]>::try_from(every_kind()).unwrap();
    for t in ODD {
        for v in [&c, &w] {
            let ids = v.encode(t);
            let back = v.decode(&ids);
            if !ids.contains(&UNK) {
                assert_eq!(back, v.normalise(t));
            }
            for &i in &ids {
                assert!(!v.token(i).is_empty());
            }
        }
        // Byte-level BPE: no unknowns, and the exact text back, literal
        // specials included (they are text, not special ids).
        let ids = b.encode(t);
        assert!(
            ids.iter().all(|&i| i > UNK && i < b.len()),
            "{t:?}: {ids:?}"
        );
        assert_eq!(b.decode(&ids), *t);
        assert_eq!(b.normalise(t), *t);
        for &i in &ids {
            let shown = b.token(i);
            assert!(!shown.contains(' ') && !shown.is_empty(), "{shown:?}");
        }
    }
    assert!(c.encode("").is_empty() && w.encode("").is_empty() && b.encode("").is_empty());
    // A long run of whitespace and a long word: no panic, exact round trip.
    let long = format!("{}x{}", " ".repeat(100_000), "ab".repeat(50_000));
    let ids = b.encode(&long);
    assert_eq!(b.decode(&ids), long);
}

#[test]
fn unknown_characters_and_words_are_unk() {
    let c = Vocab::train(&CHAR, &["abc ab"]).unwrap();
    assert_eq!(
        c.encode("abz"),
        vec![c.encode("a")[0], c.encode("b")[0], UNK]
    );
    assert_eq!(c.decode(&c.encode("abz")), "ab<unk>");
    let w = Vocab::train(&VocabSpec::Word { min_count: 1 }, &["the cat sat."]).unwrap();
    let ids = w.encode("the dog sat.");
    assert_eq!(ids[1], UNK);
    assert_eq!(w.decode(&ids), "the <unk> sat.");
    // min_count drops the rare ones.
    let w2 = Vocab::train(&VocabSpec::Word { min_count: 2 }, &["a b a", "a c"]).unwrap();
    assert_eq!(w2.len(), SPECIALS.len() + 1);
    assert_eq!(w2.encode("a b c"), vec![SPECIALS.len(), UNK, UNK]);
}

#[test]
fn decode_skips_pad_bos_eos_and_survives_bad_ids() {
    for v in every_kind() {
        let ids = v.encode("Tom is here.");
        let mut wrapped = vec![BOS];
        wrapped.extend(&ids);
        wrapped.extend([EOS, PAD, PAD]);
        assert_eq!(v.decode(&wrapped), v.decode(&ids));
        assert_eq!(v.decode(&[v.len() + 7]), "<unk>");
        assert_eq!(v.decode(&[UNK]), "<unk>");
        assert!(v.token(v.len()).contains("bad id"));
    }
}

#[test]
fn tokens_are_printable() {
    let b = joint(&BPE);
    let ids = b.encode("Hello Straße");
    let shown: Vec<String> = ids.iter().map(|&i| b.token(i)).collect();
    assert_eq!(shown.concat(), "Hello▁Straße", "{shown:?}");
    let c = joint(&CHAR);
    assert_eq!(c.token(c.encode("a b")[1]), "▁");
}

#[test]
fn a_joint_vocabulary_encodes_both_languages() {
    for v in every_kind() {
        for (en, de) in [
            ("The house is big.", "Das Haus ist groß."),
            ("I'm hungry.", "Ich habe Hunger."),
        ] {
            for t in [en, de] {
                let ids = v.encode(t);
                assert!(!ids.contains(&UNK), "{:?}: {t}", v.spec());
                assert_eq!(v.decode(&ids), v.normalise(t));
            }
        }
    }
}

fn assert_same(a: &Vocab, b: &Vocab) {
    assert_eq!(a.len(), b.len());
    assert_eq!(a.spec(), b.spec());
    for i in 0..a.len() {
        assert_eq!(a.token(i), b.token(i));
    }
    for p in train_pairs().iter().take(500) {
        assert_eq!(a.encode(&p.src), b.encode(&p.src));
        assert_eq!(a.encode(&p.tgt), b.encode(&p.tgt));
    }
    for t in ODD {
        assert_eq!(a.encode(t), b.encode(t));
    }
}

#[test]
fn save_then_load_gives_the_same_vocabulary() {
    for (k, v) in every_kind().into_iter().enumerate() {
        let dir = TempDir::new(&format!("vocab-save{k}"));
        let run = dir.0.join("run/vocab"); // created by save
        v.save(&run).unwrap();
        let loaded = Vocab::load(&run).unwrap();
        assert_same(&v, &loaded);
        let bpe = matches!(v.spec(), VocabSpec::Bpe { .. });
        assert_eq!(run.join(TOKENIZER_FILE).exists(), bpe);
        // Saving over an old save works, and leaves no temporary file.
        loaded.save(&run).unwrap();
        let names: Vec<String> = std::fs::read_dir(&run)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), if bpe { 2 } else { 1 }, "{names:?}");
    }
}

#[test]
fn the_spec_reads_with_defaults_and_rejects_unknown_fields() {
    let s: VocabSpec = serde_json::from_str(r#"{"kind": "bpe", "size": 8000}"#).unwrap();
    assert_eq!(
        s,
        VocabSpec::Bpe {
            size: 8000,
            min_frequency: 2
        }
    );
    let s: VocabSpec = serde_json::from_str(r#"{"kind": "char"}"#).unwrap();
    assert_eq!(s, VocabSpec::Char { min_count: 1 });
    let s: VocabSpec = serde_json::from_str(r#"{"kind": "word"}"#).unwrap();
    assert_eq!(s, VocabSpec::Word { min_count: 2 });
    assert!(serde_json::from_str::<VocabSpec>(r#"{"kind": "bpe", "size": 8, "x": 1}"#).is_err());
    assert!(serde_json::from_str::<VocabSpec>(r#"{"kind": "bytes"}"#).is_err());
    assert!(
        VocabSpec::Bpe {
            size: 100,
            min_frequency: 2
        }
        .validate()
        .is_err()
    );
    assert!(
        VocabSpec::Bpe {
            size: 1 << 30,
            min_frequency: 2
        }
        .validate()
        .is_err()
    );
    assert!(VocabSpec::Word { min_count: 0 }.validate().is_err());
    assert!(BPE.validate().is_ok());
    let e = Vocab::train(
        &VocabSpec::Bpe {
            size: 5,
            min_frequency: 2,
        },
        &["a"],
    )
    .unwrap_err();
    assert!(e.to_string().contains("size 5"), "{e}");
    assert!(Vocab::train(&CHAR, &[]).is_err());
    assert!(Vocab::train(&CHAR, &[" ", ""]).is_err());
}

#[test]
fn training_is_deterministic_whatever_the_thread_count() {
    // Char and word: train twice, identical ids.
    for spec in [CHAR, WORD] {
        assert_same(&joint(&spec), &joint(&spec));
    }
    // BPE: `tokenizers` counts pairs and merges words on rayon's current
    // pool, so train inside pools of 1 and 2 threads and compare the files.
    let texts = joint_texts();
    let spec = VocabSpec::Bpe {
        size: 4000,
        min_frequency: 2,
    };
    let files: Vec<String> = [1, 2, 2]
        .iter()
        .enumerate()
        .map(|(k, &threads)| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let v = pool.install(|| Vocab::train(&spec, &texts).unwrap());
            let dir = TempDir::new(&format!("vocab-det{k}"));
            v.save(&dir.0).unwrap();
            std::fs::read_to_string(dir.0.join(TOKENIZER_FILE)).unwrap()
        })
        .collect();
    assert_eq!(files[0], files[1]);
    assert_eq!(files[1], files[2]);
}

/// Saves a vocabulary of `spec`, lets `spoil` change the folder, and
/// returns the error loading it gives, which must name `file`.
fn load_error(spec: &VocabSpec, file: &str, spoil: impl FnOnce(&Path)) -> String {
    let v = Vocab::train(spec, &["the cat sat on the mat.", "a cat, a mat!"]).unwrap();
    let dir = TempDir::new(&format!("vocab-bad-{}", file.replace('.', "-")));
    let path = dir.0.join(file);
    let _ = std::fs::remove_dir_all(&dir.0);
    v.save(&dir.0).unwrap();
    spoil(&dir.0);
    let e = Vocab::load(&dir.0).unwrap_err();
    assert_eq!(e.path.as_deref(), Some(path.as_path()), "{e}");
    assert!(e.to_string().contains(file), "{e}");
    e.message
}

fn edit(dir: &Path, file: &str, f: impl FnOnce(String) -> String) {
    let p = dir.join(file);
    std::fs::write(&p, f(std::fs::read_to_string(&p).unwrap())).unwrap();
}

#[test]
fn malformed_saved_files_are_errors_naming_the_file() {
    let word = VocabSpec::Word { min_count: 1 };
    let small_bpe = VocabSpec::Bpe {
        size: 300,
        min_frequency: 1,
    };
    for spec in [&CHAR, &word, &small_bpe] {
        // Missing, empty, truncated, not JSON.
        let m = load_error(spec, VOCAB_FILE, |d| {
            std::fs::remove_file(d.join(VOCAB_FILE)).unwrap()
        });
        assert!(m.contains("cannot read"), "{m}");
        let m = load_error(spec, VOCAB_FILE, |d| edit(d, VOCAB_FILE, |_| String::new()));
        assert!(m.contains("empty"), "{m}");
        let m = load_error(spec, VOCAB_FILE, |d| {
            edit(d, VOCAB_FILE, |s| s[..s.len() / 2].to_string())
        });
        assert!(m.contains("not a vocabulary file"), "{m}");
        load_error(spec, VOCAB_FILE, |d| {
            edit(d, VOCAB_FILE, |_| "\u{0}\u{1}".into())
        });
        // A special at the wrong id.
        let m = load_error(spec, VOCAB_FILE, |d| {
            edit(d, VOCAB_FILE, |s| s.replacen("\"<bos>\"", "\"<bos2>\"", 1))
        });
        assert!(m.contains("token 1"), "{m}");
        let m = load_error(spec, VOCAB_FILE, |d| {
            edit(d, VOCAB_FILE, |s| {
                s.replacen("\"<pad>\"", "\"<TMP>\"", 1)
                    .replacen("\"<eos>\"", "\"<pad>\"", 1)
                    .replacen("\"<TMP>\"", "\"<eos>\"", 1)
            })
        });
        assert!(m.contains("token 0"), "{m}");
        // A token twice.
        let m = load_error(spec, VOCAB_FILE, |d| {
            edit(d, VOCAB_FILE, |s| {
                let mut f: serde_json::Value = serde_json::from_str(&s).unwrap();
                let tokens = f["tokens"].as_array_mut().unwrap();
                let last = tokens.len() - 1;
                tokens[last] = tokens[4].clone();
                f.to_string()
            })
        });
        assert!(m.contains("twice"), "{m}");
        // An unknown field, a bad spec, an absurd size.
        load_error(spec, VOCAB_FILE, |d| {
            edit(d, VOCAB_FILE, |s| s.replacen('{', "{\"extra\": 1,", 1))
        });
        let m = load_error(spec, VOCAB_FILE, |d| {
            edit(d, VOCAB_FILE, |s| {
                let mut f: serde_json::Value = serde_json::from_str(&s).unwrap();
                let tokens = f["tokens"].as_array_mut().unwrap();
                tokens.resize((1 << 20) + 1, serde_json::Value::from("x"));
                f.to_string()
            })
        });
        assert!(m.contains("limit"), "{m}");
    }
    let m = load_error(&CHAR, VOCAB_FILE, |d| {
        edit(d, VOCAB_FILE, |s| {
            s.replacen("\"min_count\": 1", "\"min_count\": 0", 1)
        })
    });
    assert!(m.contains("min_count"), "{m}");
    let m = load_error(&CHAR, VOCAB_FILE, |d| {
        edit(d, VOCAB_FILE, |s| s.replacen("\"a\"", "\"ab\"", 1))
    });
    assert!(m.contains("char token"), "{m}");

    // BPE's tokenizer.json: missing, empty, truncated, a vocabulary that
    // disagrees with vocab.json, the wrong kind of model.
    let m = load_error(&small_bpe, TOKENIZER_FILE, |d| {
        std::fs::remove_file(d.join(TOKENIZER_FILE)).unwrap()
    });
    assert!(m.contains("cannot read"), "{m}");
    load_error(&small_bpe, TOKENIZER_FILE, |d| {
        edit(d, TOKENIZER_FILE, |_| String::new())
    });
    let m = load_error(&small_bpe, TOKENIZER_FILE, |d| {
        edit(d, TOKENIZER_FILE, |s| s[..s.len() / 2].to_string())
    });
    assert!(m.contains("tokenizer.json"), "{m}");
    let m = load_error(&small_bpe, TOKENIZER_FILE, |d| {
        edit(d, TOKENIZER_FILE, |s| {
            s.replacen("\"<bos>\"", "\"<BOS>\"", 2)
        })
    });
    assert!(m.contains("differ"), "{m}");
    load_error(&small_bpe, TOKENIZER_FILE, |d| {
        edit(d, TOKENIZER_FILE, |s| {
            let mut f: serde_json::Value = serde_json::from_str(&s).unwrap();
            f["decoder"] = serde_json::json!({"type": "Fuse"});
            f.to_string()
        })
    });
}

#[test]
fn word_count_counts_whitespace_separated_words() {
    assert_eq!(word_count(""), 0);
    assert_eq!(word_count("  Tom ist  hier. \n"), 3);
    assert_eq!(word_count("Don't go!"), 2);
}

/// The numbers for choosing a default: training time of BPE 8000 on both
/// sides of the training split, and average tokens per sentence for each
/// kind (run with `--nocapture` to see them).
#[test]
fn tokens_per_sentence_report() {
    let texts = joint_texts();
    let valid = read_pairs(&data_dir().join("ding-en-de/valid.tsv")).unwrap();
    for spec in [
        CHAR,
        WORD,
        VocabSpec::Bpe {
            size: 4000,
            min_frequency: 2,
        },
        VocabSpec::Bpe {
            size: 8000,
            min_frequency: 2,
        },
    ] {
        let t = Instant::now();
        let v = Vocab::train(&spec, &texts).unwrap();
        let secs = t.elapsed().as_secs_f64();
        let mean = |pairs: &[Pair], side: &dyn Fn(&Pair) -> &str| {
            let (mut tokens, mut unk) = (0, 0);
            for p in pairs {
                let ids = v.encode(side(p));
                tokens += ids.len();
                unk += ids.iter().filter(|&&i| i == UNK).count();
            }
            format!(
                "{:.1} ({:.1}% unk)",
                tokens as f64 / pairs.len() as f64,
                100.0 * unk as f64 / tokens as f64
            )
        };
        println!("{spec:?}: {} tokens, trained in {secs:.2}s", v.len());
        for (split, pairs) in [("train", train_pairs()), ("valid", &valid[..])] {
            println!(
                "  {split} tokens/sentence: en {}, de {}",
                mean(pairs, &|p| &p.src),
                mean(pairs, &|p| &p.tgt)
            );
        }
        if matches!(spec, VocabSpec::Bpe { size: 8000, .. }) {
            assert!(secs < 60.0, "BPE 8000 took {secs:.1}s");
        }
    }
}

/// A language model's running text spells line breaks as `NEWLINE`, so no
/// bundled corpus may use that character itself.
#[test]
fn the_newline_stand_in_occurs_in_no_bundled_corpus_and_round_trips() {
    use experiments::vocab::NEWLINE;
    let dir = experiments::data::data_dir();
    for f in [
        "austen/austen.txt",
        "ding-en-de/train.tsv",
        "ding-en-de/valid.tsv",
        "ding-en-de/test.tsv",
    ] {
        let text = experiments::data::read_text(&dir.join(f)).unwrap();
        assert!(!text.contains(NEWLINE), "{f} contains {NEWLINE}");
    }
    let text = "It is a truth\nuniversally acknowledged,\n\nthat a single man";
    for spec in [
        VocabSpec::Char { min_count: 1 },
        VocabSpec::Word { min_count: 1 },
        VocabSpec::Bpe {
            size: 300,
            min_frequency: 1,
        },
    ] {
        let v = Vocab::train(&spec, &[&Vocab::running_text(text)]).unwrap();
        let back = v.decode_text(&v.encode_text(text));
        match spec {
            // The word kind detokenises (no space before punctuation);
            // line breaks survive in every kind.
            VocabSpec::Word { .. } => assert_eq!(back.matches('\n').count(), 3, "{back:?}"),
            _ => assert_eq!(back, text),
        }
    }
}
