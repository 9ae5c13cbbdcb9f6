//! Fuzzes page bytes → records → transform → JSON Lines, checking real properties on every
//! input (see `tests/support/page_check.rs`, shared with `tests/fuzz_corpus.rs`): whole,
//! valid lines whatever the input, and agreement with serde_json wherever it reads the page.
//!
//! Run it with `scripts/fuzz.sh [SECONDS]`.

#![no_main]

#[path = "../../tests/support/page_check.rs"]
mod page_check;

libfuzzer_sys::fuzz_target!(|body: &[u8]| page_check::check_page(body));
