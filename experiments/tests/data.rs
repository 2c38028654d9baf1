//! The bundled corpora load, their checksums hold, and malformed files are
//! errors naming the file and the line (issue 8, data).

use experiments::data::{data_dir, read_pairs, read_text, verify_checksums};

mod common;
use common::TempDir;

#[test]
fn the_bundled_data_is_what_its_readme_says() {
    let dir = data_dir();
    verify_checksums(&dir).unwrap();
    for (split, n) in [("train", 15_594), ("valid", 1_000), ("test", 1_000)] {
        let pairs = read_pairs(&dir.join(format!("ding-en-de/{split}.tsv"))).unwrap();
        assert_eq!(pairs.len(), n, "{split}");
    }
    let austen = read_text(&dir.join("austen/austen.txt")).unwrap();
    assert_eq!(austen.lines().count(), 72_576);
    for licence in [
        "GPL-2",
        "ding-trans-de-en.copyright",
        "r-cran-janeaustenr.copyright",
    ] {
        assert!(dir.join("licenses").join(licence).is_file(), "{licence}");
    }
}

#[test]
fn malformed_files_are_errors_naming_file_and_line() {
    let dir = TempDir::new("data-malformed");
    let case = |name: &str, bytes: &[u8]| {
        let path = dir.0.join(name);
        std::fs::write(&path, bytes).unwrap();
        read_pairs(&path).unwrap_err().to_string()
    };
    let err = case("notab.tsv", b"a\tb\nno tab here\nc\td\n");
    assert!(
        err.ends_with("notab.tsv:2: no TAB: expected `source<TAB>target`"),
        "{err}"
    );
    let err = case("twotabs.tsv", b"a\tb\tc\n");
    assert!(err.contains("twotabs.tsv:1: more than one TAB"), "{err}");
    let err = case("emptyside.tsv", b"a\tb\n\tb\n");
    assert!(err.contains("emptyside.tsv:2: an empty side"), "{err}");
    let err = case("utf8.tsv", b"a\tb\nc\td\ne\t\xff\n");
    assert!(
        err.contains("utf8.tsv:3: invalid UTF-8 at byte 10"),
        "{err}"
    );
    let err = case("empty.tsv", b"");
    assert!(err.ends_with("empty.tsv: the file is empty"), "{err}");
    let err = read_pairs(&dir.0.join("missing.tsv"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.tsv: cannot read"), "{err}");
    // A final newline is optional, and CRLF line ends are accepted.
    let path = dir.0.join("crlf.tsv");
    std::fs::write(&path, b"a\tb\r\nc\td").unwrap();
    assert_eq!(read_pairs(&path).unwrap().len(), 2);
}

#[test]
fn a_checksum_mismatch_names_the_file() {
    let dir = TempDir::new("data-sums");
    std::fs::write(dir.0.join("x.tsv"), b"a\tb\n").unwrap();
    // sha256("a\tb\n") is not all zeros.
    let sums = format!("{}  x.tsv\n", "0".repeat(64));
    std::fs::write(dir.0.join("SHA256SUMS"), sums).unwrap();
    let err = verify_checksums(&dir.0).unwrap_err().to_string();
    assert!(err.contains("x.tsv: checksum mismatch"), "{err}");
    std::fs::write(dir.0.join("SHA256SUMS"), "garbage\n").unwrap();
    let err = verify_checksums(&dir.0).unwrap_err().to_string();
    assert!(
        err.contains("SHA256SUMS:1: expected `<sha256>  <file>`"),
        "{err}"
    );
}
