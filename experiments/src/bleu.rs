//! Corpus BLEU (Papineni et al. 2002) exactly as sacreBLEU computes it with
//! its defaults (Post 2018): the `13a` tokenisation of mteval-v13a (the WMT
//! standard), case-sensitive, n-grams up to 4 clipped by the reference,
//! counts summed over the corpus, the `exp` smoothing for an order without
//! matches, and the brevity penalty. One reference per sentence. The tests
//! compare with values computed by sacreBLEU 2.x itself.
//!
//! Also corpus chrF (Popović 2015) as sacreBLEU's `CHRF()` computes it
//! with its defaults: [`corpus_chrf`].
//!
//! ```
//! use experiments::bleu::corpus_bleu;
//! let hyp = ["The cat sat on the mat."];
//! let refs = ["The cat sat on the mat."];
//! assert!((corpus_bleu(&hyp, &refs).score - 100.0).abs() < 1e-9);
//! ```

use std::collections::HashMap;
use std::sync::OnceLock;

use regex::Regex;

/// sacreBLEU's `13a` tokeniser: unescape four HTML entities, then split
/// off punctuation and symbols, periods and commas unless next to a digit,
/// and a dash after a digit.
///
/// ```
/// assert_eq!(experiments::bleu::tokenize_13a("Hello, world! It's 3.5-4 km."),
///            "Hello , world ! It's 3.5 - 4 km .");
/// ```
pub fn tokenize_13a(line: &str) -> String {
    // The substitutions, in order, as mteval-v13a.pl and sacreBLEU apply them.
    static RULES: OnceLock<[(Regex, &str); 4]> = OnceLock::new();
    let rules = RULES.get_or_init(|| {
        let re = |p: &str| Regex::new(p).expect("a valid 13a pattern");
        [
            (re(r"([\{-~\[-` -&\(-\+:-@/])"), " ${1} "),
            (re(r"([^0-9])([\.,])"), "${1} ${2} "),
            (re(r"([\.,])([^0-9])"), " ${1} ${2}"),
            (re(r"([0-9])(-)"), "${1} ${2} "),
        ]
    });
    let mut s = line
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if s.contains('&') {
        s = s
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    let mut s = format!(" {s} ");
    for (re, rep) in rules {
        s = re.replace_all(&s, *rep).into_owned();
    }
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A corpus BLEU score and the statistics behind it.
#[derive(Clone, Debug, PartialEq)]
pub struct Bleu {
    /// BLEU in [0, 100].
    pub score: f64,
    /// Clipped n-gram matches, n = 1..4, summed over the corpus.
    pub correct: [usize; 4],
    /// Hypothesis n-grams, n = 1..4.
    pub total: [usize; 4],
    /// The four (smoothed) precisions, in percent.
    pub precisions: [f64; 4],
    /// The brevity penalty.
    pub bp: f64,
    /// Hypothesis tokens.
    pub sys_len: usize,
    /// Reference tokens.
    pub ref_len: usize,
}

fn ngrams(tokens: &[&str], n: usize) -> HashMap<Vec<String>, usize> {
    let mut m = HashMap::new();
    for w in tokens.windows(n) {
        *m.entry(w.iter().map(|s| s.to_string()).collect())
            .or_insert(0) += 1;
    }
    m
}

/// BLEU of `hyps` against one reference each (`refs[i]` for `hyps[i]`).
/// Panics if the lengths differ (a programming error).
pub fn corpus_bleu<H: AsRef<str>, R: AsRef<str>>(hyps: &[H], refs: &[R]) -> Bleu {
    assert_eq!(
        hyps.len(),
        refs.len(),
        "corpus_bleu: {} hypotheses but {} references",
        hyps.len(),
        refs.len()
    );
    let (mut correct, mut total) = ([0usize; 4], [0usize; 4]);
    let (mut sys_len, mut ref_len) = (0, 0);
    for (h, r) in hyps.iter().zip(refs) {
        let (h, r) = (tokenize_13a(h.as_ref()), tokenize_13a(r.as_ref()));
        let h: Vec<&str> = h.split(' ').filter(|t| !t.is_empty()).collect();
        let r: Vec<&str> = r.split(' ').filter(|t| !t.is_empty()).collect();
        sys_len += h.len();
        ref_len += r.len();
        for n in 1..=4 {
            let rc = ngrams(&r, n);
            for (g, c) in ngrams(&h, n) {
                correct[n - 1] += c.min(rc.get(&g).copied().unwrap_or(0));
            }
            total[n - 1] += h.len().saturating_sub(n - 1);
        }
    }
    let bp = if sys_len >= ref_len {
        1.0
    } else if sys_len > 0 {
        (1.0 - ref_len as f64 / sys_len as f64).exp()
    } else {
        0.0
    };
    let mut precisions = [0.0; 4];
    let mut out = Bleu {
        score: 0.0,
        correct,
        total,
        precisions,
        bp,
        sys_len,
        ref_len,
    };
    if correct.iter().all(|&c| c == 0) {
        return out;
    }
    // sacreBLEU's `exp` smoothing: the k-th order without a match gets
    // 1 / (2^k * total) (NIST's mteval-v13a); an order with no n-gram at
    // all stops the loop and counts as precision 0.
    let mut smooth = 1.0;
    for n in 0..4 {
        if total[n] == 0 {
            break;
        }
        precisions[n] = if correct[n] == 0 {
            smooth *= 2.0;
            100.0 / (smooth * total[n] as f64)
        } else {
            100.0 * correct[n] as f64 / total[n] as f64
        };
    }
    // sacreBLEU's log of 0 is -9999999999, so any zero precision gives 0.
    let log = |p: f64| if p == 0.0 { -9_999_999_999.0 } else { p.ln() };
    out.score = bp * (precisions.iter().map(|&p| log(p)).sum::<f64>() / 4.0).exp();
    out.precisions = precisions;
    out
}

/// chrF's character n-gram order (sacreBLEU's default `char_order`).
pub const CHRF_ORDER: usize = 6;

/// chrF's beta: recall weighs beta^2 = 4 times as much as precision
/// (sacreBLEU's default).
pub const CHRF_BETA: f64 = 2.0;

/// A corpus chrF score and the statistics behind it (index `n - 1` for
/// character n-grams of order n).
#[derive(Clone, Debug, PartialEq)]
pub struct Chrf {
    /// chrF in [0, 100].
    pub score: f64,
    /// Hypothesis n-grams, summed over the sentences whose reference has at
    /// least one n-gram of that order (sacreBLEU counts no others).
    pub hyp: [usize; CHRF_ORDER],
    /// Reference n-grams.
    pub reference: [usize; CHRF_ORDER],
    /// Hypothesis n-grams also in the reference, clipped by its counts.
    pub matches: [usize; CHRF_ORDER],
}

/// The characters of `line` without whitespace. Python's `str.split()`
/// (which sacreBLEU uses) also splits at the separators U+001C..U+001F,
/// which Rust does not count as whitespace.
fn chrf_chars(line: &str) -> Vec<char> {
    line.chars()
        .filter(|&c| !c.is_whitespace() && !('\u{1c}'..='\u{1f}').contains(&c))
        .collect()
}

fn char_ngrams(chars: &[char], n: usize) -> HashMap<&[char], usize> {
    let mut m = HashMap::new();
    for w in chars.windows(n) {
        *m.entry(w).or_insert(0) += 1;
    }
    m
}

/// chrF of `hyps` against one reference each (`refs[i]` for `hyps[i]`),
/// equal to sacreBLEU's `CHRF().corpus_score(hyps, [refs]).score`:
/// character n-grams of orders 1..=6 with whitespace removed,
/// case-sensitive, no word n-grams, beta = 2. The counts are summed over
/// the corpus; precision and recall are then averaged over the orders that
/// have both hypothesis and reference n-grams (sacreBLEU's "effective
/// order", its default instead of epsilon smoothing), and the score is the
/// F-beta of the two averages.
/// Panics if the lengths differ (a programming error).
///
/// ```
/// use experiments::bleu::corpus_chrf;
/// assert!((corpus_chrf(&["Die Brücke."], &["Die Brücke."]).score - 100.0).abs() < 1e-9);
/// assert_eq!(corpus_chrf(&[""], &["Die Brücke."]).score, 0.0);
/// ```
pub fn corpus_chrf<H: AsRef<str>, R: AsRef<str>>(hyps: &[H], refs: &[R]) -> Chrf {
    assert_eq!(
        hyps.len(),
        refs.len(),
        "corpus_chrf: {} hypotheses but {} references",
        hyps.len(),
        refs.len()
    );
    let mut out = Chrf {
        score: 0.0,
        hyp: [0; CHRF_ORDER],
        reference: [0; CHRF_ORDER],
        matches: [0; CHRF_ORDER],
    };
    for (h, r) in hyps.iter().zip(refs) {
        let (h, r) = (chrf_chars(h.as_ref()), chrf_chars(r.as_ref()));
        for n in 1..=CHRF_ORDER {
            let rc = char_ngrams(&r, n);
            let hc = char_ngrams(&h, n);
            // sacreBLEU counts a sentence's hypothesis n-grams only when its
            // reference has n-grams of that order.
            if !rc.is_empty() {
                out.hyp[n - 1] += hc.values().sum::<usize>();
            }
            out.reference[n - 1] += rc.values().sum::<usize>();
            for (g, c) in hc {
                out.matches[n - 1] += c.min(rc.get(g).copied().unwrap_or(0));
            }
        }
    }
    let (mut prec, mut rec, mut orders) = (0.0, 0.0, 0);
    for n in 0..CHRF_ORDER {
        if out.hyp[n] > 0 && out.reference[n] > 0 {
            prec += out.matches[n] as f64 / out.hyp[n] as f64;
            rec += out.matches[n] as f64 / out.reference[n] as f64;
            orders += 1;
        }
    }
    if orders > 0 {
        // In the order of sacreBLEU's operations, for the same rounding.
        let (prec, rec) = (prec / orders as f64, rec / orders as f64);
        let factor = CHRF_BETA * CHRF_BETA;
        if prec + rec > 0.0 {
            out.score = 100.0 * ((1.0 + factor) * prec * rec / (factor * prec + rec));
        }
    }
    out
}
