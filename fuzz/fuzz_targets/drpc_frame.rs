#![no_main]
//! `Frame::decode`/`encode` and varints on raw bytes; properties in `agentwire_fuzz::frame`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| agentwire_fuzz::frame::run(data));
