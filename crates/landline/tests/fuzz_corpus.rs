//! Every input of the committed fuzz corpus (`fuzz/corpus/page/`) through the same checks as
//! the fuzz target (`tests/support/page_check.rs`), in every `cargo test`, on stable Rust.
//!
//! The corpus holds small pages of each pagination shape, escapes, unicode, nesting, the bad
//! inputs landline must refuse, and every crash the fuzzer found (named by what it is).

#[path = "support/page_check.rs"]
mod page_check;

use std::path::PathBuf;

#[test]
fn every_corpus_input_holds_the_page_properties() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/page");
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 20, "the corpus has {} inputs", inputs.len());
    let mut failed = Vec::new();
    for path in &inputs {
        let body = std::fs::read(path).expect("a corpus input");
        if std::panic::catch_unwind(|| page_check::check_page(&body)).is_err() {
            failed.push(
                path.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    assert!(failed.is_empty(), "inputs failing the checks: {failed:?}");
}
