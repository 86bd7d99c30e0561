//! Replays the checked-in `agentapi_requests` seeds and regressions without libFuzzer (`cargo test` here).

#[path = "../../tests/common/mod.rs"]
mod common;

use std::fs;
use std::path::Path;

use agentwire::agentapi::fuzzing::Rpc;

fn fuzz() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

#[test]
fn agentapi_requests() {
    assert!(common::replay(fuzz(), "agentapi_requests", agentwire_fuzz_agentapi::run) > 0);
}

/// Seeds are named `NN-Rpc…` by `gen_seeds.py`: the selector byte must pick that RPC, and every RPC has seeds.
#[test]
fn seeds_select_the_rpc_they_are_named_for() {
    let mut seen = vec![0; Rpc::ALL.len()];
    for path in common::inputs(fuzz(), "seeds", "agentapi_requests") {
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let data = fs::read(&path).unwrap();
        let (rpc, _) = agentwire_fuzz_agentapi::parse(&data).expect("a seed is not empty");
        let named = name.split('-').nth(1).unwrap_or_default();
        assert_eq!(rpc.name(), named, "{name}");
        seen[Rpc::ALL.iter().position(|r| *r == rpc).unwrap()] += 1;
    }
    for (rpc, n) in Rpc::ALL.iter().zip(seen) {
        assert!(n > 0, "no seed for {rpc:?}");
    }
}
