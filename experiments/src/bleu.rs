//! Corpus BLEU (Papineni et al. 2002) exactly as sacreBLEU computes it with
//! its defaults (Post 2018): the `13a` tokenisation of mteval-v13a (the WMT
//! standard), case-sensitive, n-grams up to 4 clipped by the reference,
//! counts summed over the corpus, the `exp` smoothing for an order without
//! matches, and the brevity penalty. One reference per sentence. The tests
//! compare with values computed by sacreBLEU 2.x itself.
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
