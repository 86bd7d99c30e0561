#![no_main]
//! Every Agent RPC handler on fuzzed request bytes, against an in-memory SQLite store; input format and properties
//! in `agentwire_fuzz_agentapi`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| agentwire_fuzz_agentapi::run(data));
