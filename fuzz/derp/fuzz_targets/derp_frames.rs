#![no_main]
//! The DERP relay's client-frame decoder on raw bytes; input format and properties in `agentwire_fuzz_derp`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| agentwire_fuzz_derp::run(data));
