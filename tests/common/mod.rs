#![allow(dead_code)]

pub mod chaos;
pub mod go_interop;
pub mod pg;
pub mod pg_cluster;
pub mod recorded;
pub mod server;
pub mod sse;

use std::path::PathBuf;

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/go-wire")
}

pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}
