//! BLEU against sacreBLEU: every expected value below was computed with
//! sacreBLEU 2.6.0 (`sacrebleu.corpus_bleu(hyps, [refs])`, its defaults:
//! 13a tokenisation, exp smoothing) and written in by hand. Likewise chrF:
//! `sacrebleu.metrics.CHRF().corpus_score(hyps, [refs]).score` (defaults:
//! char order 6, word order 0, beta 2, whitespace removed), printed with
//! `repr` for full precision.

use experiments::bleu::{corpus_bleu, corpus_chrf, tokenize_13a};

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

#[test]
fn corpus_chrf_equals_sacrebleu() {
    // (hypotheses, references, sacreBLEU 2.6.0's score)
    type Case<'a> = (&'a [&'a str], &'a [&'a str], f64);
    let cases: [Case; 9] = [
        // Identical.
        (
            &["The cat sat on the mat."],
            &["The cat sat on the mat."],
            100.0,
        ),
        // An empty hypothesis.
        (&[""], &["The cat sat on the mat."], 0.0),
        // Umlauts and ß: n-grams of characters, not bytes.
        (
            &["Die Brücke über den Fluß ist schön."],
            &["Die Brücke über dem Fluss ist schön!"],
            68.8406588103528,
        ),
        // A corpus: counts summed over sentences, then one F-score.
        (
            &["The cat sat on the mat.", "It is raining today.", "Ja."],
            &["The cat sat on the mat.", "Today it rains.", "Ja, gerne."],
            61.06183034767518,
        ),
        // Partial overlap (a missing word: recall suffers more).
        (
            &["Der Hund bellt laut."],
            &["Der Hund bellt sehr laut."],
            66.55130631400885,
        ),
        // Only a few shared characters.
        (
            &["nothing matches here"],
            &["völlig anders"],
            10.204713601821167,
        ),
        // Whitespace is removed: "a b" matches "abc" at orders 1 and 2;
        // a reference too short for an order leaves that order out.
        (
            &["a b", "Größenordnung"],
            &["abc", "Groessenordnung"],
            55.411329008093944,
        ),
        // An empty reference: its hypothesis n-grams are not counted.
        (&["ab", ""], &["", "xyz"], 0.0),
        (&["", ""], &["", ""], 0.0),
    ];
    for (hyps, refs, score) in cases {
        let c = corpus_chrf(hyps, refs);
        assert!(
            (c.score - score).abs() < 1e-9,
            "{hyps:?}: {} vs {score}",
            c.score
        );
    }
}

#[test]
fn corpus_chrf_statistics_equal_sacrebleu() {
    // sacreBLEU 2.6.0: sum_of_lists(CHRF()._extract_corpus_statistics(hyps,
    // [refs])), which interleaves [hyp, ref, match] per order.
    let sums: [usize; 18] = [
        38, 40, 33, 35, 37, 24, 32, 34, 20, 29, 31, 17, 27, 28, 14, 25, 25, 13,
    ];
    let c = corpus_chrf(
        &["The cat sat on the mat.", "It is raining today.", "Ja."],
        &["The cat sat on the mat.", "Today it rains.", "Ja, gerne."],
    );
    for n in 0..6 {
        assert_eq!(
            [c.hyp[n], c.reference[n], c.matches[n]],
            sums[3 * n..3 * n + 3],
            "order {}",
            n + 1
        );
    }
    // Python's str.split() also splits at U+001C..U+001F:
    // CHRF().corpus_score(["x\x1cy"], [["xy"]]).score == 100.0.
    assert!((corpus_chrf(&["x\u{1c}y"], &["xy"]).score - 100.0).abs() < 1e-9);
}

#[test]
#[should_panic(expected = "corpus_chrf: 2 hypotheses but 1 references")]
fn corpus_chrf_panics_on_length_mismatch() {
    corpus_chrf(&["a", "b"], &["a"]);
}
