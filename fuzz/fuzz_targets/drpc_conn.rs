#![no_main]
//! A server-role `stream::Connection` under a script of input and sends, its output decoded by a client peer.
//! Input format and properties in `agentwire_fuzz::conn`; `cargo fuzz fmt drpc_conn FILE` prints the ops.
use agentwire_fuzz::conn::{run, ConnInput};
use agentwire_transport::stream::Role;

libfuzzer_sys::fuzz_target!(|input: ConnInput| {
    run(Role::Server, &input);
});
