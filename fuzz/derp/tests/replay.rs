//! Replays the checked-in `derp_frames` seeds and regressions without libFuzzer (`cargo test` here).

use std::fs;
use std::path::{Path, PathBuf};

fn inputs(dir: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let Ok(entries) = fs::read_dir(fuzz.join(dir).join("derp_frames")) else { return Vec::new() };
    let mut paths: Vec<_> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.extension().is_some_and(|e| e == "md" || e == "txt"))
        .collect();
    paths.sort();
    paths
}

#[test]
fn derp_frames() {
    let mut count = 0;
    for path in inputs("seeds").into_iter().chain(inputs("regressions")) {
        eprintln!("derp_frames: {}", path.display());
        agentwire_fuzz_derp::run(&fs::read(&path).unwrap());
        count += 1;
    }
    assert!(count > 0);
}
