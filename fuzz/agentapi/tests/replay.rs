//! Replays the checked-in `agentapi_requests` seeds and regressions without libFuzzer (`cargo test` here).

use std::fs;
use std::path::{Path, PathBuf};

use agentwire::agentapi::fuzzing::Rpc;

fn inputs(dir: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let Ok(entries) = fs::read_dir(fuzz.join(dir).join("agentapi_requests")) else { return Vec::new() };
    let mut paths: Vec<_> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.extension().is_some_and(|e| e == "md" || e == "txt"))
        .collect();
    paths.sort();
    paths
}

#[test]
fn agentapi_requests() {
    let mut count = 0;
    for path in inputs("seeds").into_iter().chain(inputs("regressions")) {
        eprintln!("agentapi_requests: {}", path.display());
        agentwire_fuzz_agentapi::run(&fs::read(&path).unwrap());
        count += 1;
    }
    assert!(count > 0);
}

/// Seeds are named `NN-Rpc…` by `gen_seeds.py`: the selector byte must pick that RPC, and every RPC has seeds.
#[test]
fn seeds_select_the_rpc_they_are_named_for() {
    let mut seen = vec![0; Rpc::ALL.len()];
    for path in inputs("seeds") {
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
