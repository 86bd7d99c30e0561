#![no_main]
//! `io::ws::WsByteStream` over a scripted WebSocket; input format and properties in `agentwire_fuzz_ws`.
//! `cargo fuzz fmt --fuzz-dir fuzz/ws ws_bytes FILE` prints the ops.
use agentwire_fuzz_ws::{run, WsInput};

libfuzzer_sys::fuzz_target!(|input: WsInput| run(&input));
