//! BLEU against sacreBLEU: every expected value below was computed with
//! sacreBLEU 2.6.0 (`sacrebleu.corpus_bleu(hyps, [refs])`, its defaults:
//! 13a tokenisation, exp smoothing) and written in by hand.

use experiments::bleu::{corpus_bleu, tokenize_13a};

#[test]
fn tokenisation_equals_sacrebleu_13a() {
    for (line, want) in [
        (
            "Hello, world! It's 3.5-4 km.",
            "Hello , world ! It's 3.5 - 4 km .",
        ),
        (
            "a &amp; b &lt;c&gt; &quot;d&quot; 1,000.5 x.y ,z (e)[f]{g}",
            "a & b < c > \" d \" 1,000.5 x . y , z ( e ) [ f ] { g }",
        ),
        (
            "Das ist's: 12-14 Uhr, oder?",
            "Das ist's : 12 - 14 Uhr , oder ?",
        ),
    ] {
        assert_eq!(tokenize_13a(line), want, "{line}");
    }
}

#[test]
fn corpus_bleu_equals_sacrebleu() {
    // (hypotheses, references, score, correct, total, sys_len, ref_len)
    type Case<'a> = (
        &'a [&'a str],
        &'a [&'a str],
        f64,
        [usize; 4],
        [usize; 4],
        usize,
        usize,
    );
    let cases: [Case; 5] = [
        (
            &["The cat sat on the mat.", "It is raining today."],
            &["The cat sat on the mat.", "Today it rains."],
            63.89431042462723,
            [8, 6, 5, 4],
            [12, 10, 8, 6],
            12,
            11,
        ),
        (
            &["Der Hund bellt laut.", "Ich habe keine Zeit, sorry!", "Ja."],
            &[
                "Der Hund bellt sehr laut.",
                "Ich habe leider keine Zeit!",
                "Ja, gerne.",
            ],
            21.880022047662823, // no 4-gram matches: exp smoothing
            [12, 5, 1, 0],
            [14, 11, 8, 6],
            14,
            16,
        ),
        (
            &["a b c d e f", "g h"],
            &["a b x d e f g", "g h i j"],
            27.137257609299514, // brevity penalty and smoothing
            [7, 4, 1, 0],
            [8, 6, 4, 3],
            8,
            11,
        ),
        (
            &["nothing matches here"],
            &["völlig anders"],
            0.0,
            [0; 4],
            [3, 2, 1, 0],
            3,
            2,
        ),
        (
            &["one two"],
            &["one two three four five"],
            0.0,
            [2, 1, 0, 0],
            [2, 1, 0, 0],
            2,
            5,
        ),
    ];
    for (hyps, refs, score, correct, total, sys_len, ref_len) in cases {
        let b = corpus_bleu(hyps, refs);
        assert!(
            (b.score - score).abs() < 1e-9,
            "{hyps:?}: {} vs {score}",
            b.score
        );
        assert_eq!((b.correct, b.total), (correct, total), "{hyps:?}");
        assert_eq!((b.sys_len, b.ref_len), (sys_len, ref_len), "{hyps:?}");
    }
}
