//! Replays the checked-in `ws_bytes` seeds and regressions without libFuzzer (`cargo test` here).

#[path = "../../tests/common/mod.rs"]
mod common;

use std::fs;
use std::path::Path;

#[test]
fn ws_bytes() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    assert!(common::replay(fuzz, "ws_bytes", agentwire_fuzz_ws::run_bytes) > 0);
}

/// The known transport bug, checked strictly: fails until the fix lands (then flip `Checks::FUZZ`).
#[test]
fn strict_liveness_after_end() {
    use agentwire_fuzz_ws::{run_checked, Checks, WsInput};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("regressions/ws_bytes");
    for name in ["timeout-after-eof", "ping-after-close"] {
        eprintln!("{name}");
        run_checked(&WsInput::parse(&fs::read(dir.join(name)).unwrap()), Checks::STRICT);
    }
}
