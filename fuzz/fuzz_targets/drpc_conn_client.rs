#![no_main]
//! A client-role `stream::Connection` under a script of calls, input and sends, its output decoded by a server
//! peer. Input format and properties in `agentwire_fuzz::conn`; `cargo fuzz fmt drpc_conn_client FILE` prints them.
use agentwire_fuzz::conn::{run, ConnInput};
use agentwire_transport::stream::Role;

libfuzzer_sys::fuzz_target!(|input: ConnInput| {
    run(Role::Client, &input);
});
