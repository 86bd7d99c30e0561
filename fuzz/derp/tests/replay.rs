//! Replays the checked-in `derp_frames` seeds and regressions without libFuzzer (`cargo test` here).

#[path = "../../tests/common/mod.rs"]
mod common;

use std::path::Path;

#[test]
fn derp_frames() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    assert!(common::replay(fuzz, "derp_frames", agentwire_fuzz_derp::run) > 0);
}
