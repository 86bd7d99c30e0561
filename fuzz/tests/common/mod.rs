//! The replay harness of every fuzz package's `tests/replay.rs` (this package's through `mod common`, the others'
//! through `#[path]`): a target's checked-in seeds and regression inputs, run through its logic without libFuzzer.

use std::fs;
use std::path::{Path, PathBuf};

/// The inputs in `fuzz/DIR/TARGET` (`fuzz` is the fuzz/ folder, `DIR` is `seeds` or `regressions`), sorted, notes (`.md`, `.txt`) left out;
/// none when the folder is missing.
pub fn inputs(fuzz: &Path, dir: &str, target: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(fuzz.join(dir).join(target)) else { return Vec::new() };
    let mut paths: Vec<_> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.extension().is_some_and(|e| e == "md" || e == "txt"))
        .collect();
    paths.sort();
    paths
}

/// Runs `target`'s seeds, then its regression inputs, through `run`, naming each on stderr; how many ran.
pub fn replay(fuzz: &Path, target: &str, run: impl Fn(&[u8])) -> usize {
    let mut count = 0;
    for path in inputs(fuzz, "seeds", target).into_iter().chain(inputs(fuzz, "regressions", target)) {
        eprintln!("{target}: {}", path.display());
        run(&fs::read(&path).unwrap());
        count += 1;
    }
    count
}
