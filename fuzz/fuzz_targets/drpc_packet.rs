#![no_main]
//! `PacketAssembler` and `encode_packet`; input format and properties in `agentwire_fuzz::packet`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| agentwire_fuzz::packet::run(data));
