//! Replays the checked-in `ws_bytes` seeds and regressions without libFuzzer (`cargo test` here).

use std::fs;
use std::path::Path;

#[test]
fn ws_bytes() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut count = 0;
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = fs::read_dir(fuzz.join(dir).join("ws_bytes")) else { continue };
        let mut paths: Vec<_> = entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
        paths.sort();
        for path in paths {
            if path.extension().is_some_and(|e| e == "md" || e == "txt") {
                continue;
            }
            eprintln!("ws_bytes: {}", path.display());
            agentwire_fuzz_ws::run_bytes(&fs::read(&path).unwrap());
            count += 1;
        }
    }
    assert!(count > 0);
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
