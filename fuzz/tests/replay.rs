//! Replays every checked-in seed and regression input through the targets' logic, without libFuzzer:
//! `cargo test` here (or `scripts/fuzz.sh replay`) works on stable and keeps fixed crashes fixed.

mod common;

use std::fs;
use std::path::Path;

fn replay(target: &str, run: impl Fn(&[u8])) -> usize {
    common::replay(Path::new(env!("CARGO_MANIFEST_DIR")), target, run)
}

#[test]
fn drpc_frame() {
    assert!(replay("drpc_frame", agentwire_fuzz::frame::run) > 0);
}

#[test]
fn drpc_packet() {
    assert!(replay("drpc_packet", agentwire_fuzz::packet::run) > 0);
}

#[test]
fn drpc_conn() {
    assert!(replay("drpc_conn", agentwire_fuzz::conn::run_server) > 0);
}

#[test]
fn drpc_conn_client() {
    assert!(replay("drpc_conn_client", agentwire_fuzz::conn::run_client) > 0);
}

/// The recorded-call seeds run the whole conversation: events on our side, and our answers matched by the peer.
#[test]
fn conn_seeds_reach_the_peer_checks() {
    use agentwire_fuzz::conn::{run, ConnInput};
    use agentwire_transport::stream::Role;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (target, role) in [("drpc_conn", Role::Server), ("drpc_conn_client", Role::Client)] {
        for entry in fs::read_dir(root.join("seeds").join(target)).unwrap() {
            let path = entry.unwrap().path();
            let stats = run(role, &ConnInput::parse(&fs::read(&path).unwrap()));
            eprintln!("{target} {}: {stats:?}", path.display());
            assert!(!stats.failed, "{}: protocol error on a recorded conversation", path.display());
            assert!(stats.events >= 1 && stats.peer_events >= 1, "{}: {stats:?}", path.display());
        }
    }
}

/// The seeds exercise what they were written for: every recorded call's request reaches the server as an
/// Invoke, and every recorded answer reaches the client.
#[test]
fn seeds_parse_to_the_intended_ops() {
    use agentwire_fuzz::conn::{ConnInput, Op};
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = fs::read(root.join("seeds/drpc_conn_client/01-GetManifest")).unwrap();
    let input = ConnInput::parse(&data);
    assert_eq!(input.limits, agentwire_transport::Limits::default());
    assert!(matches!(&input.ops[0], Op::StartCall(m, md) if m == "/coder.agent.v2.Agent/GetManifest" && md.is_empty()));
    assert!(input.ops.iter().any(|op| matches!(op, Op::Input(b) if b.len() == 750)));
}

/// The known transport bugs, checked strictly: these fail until the fixes land (then flip `Checks::FUZZ`).
#[test]
fn strict_duplicate_close_send() {
    use agentwire_fuzz::conn::{run_checked, Checks, ConnInput};
    use agentwire_transport::stream::Role;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    for (target, role) in [("drpc_conn", Role::Server), ("drpc_conn_client", Role::Client)] {
        let data = fs::read(root.join(target).join("duplicate-close-send")).unwrap();
        run_checked(role, &ConnInput::parse(&data), Checks::STRICT);
    }
}

/// Debugging aid: `FUZZ_TARGET=drpc_conn FUZZ_INPUT=path cargo test --test replay one_input -- --ignored
/// --nocapture` prints the parsed ops of one input (compactly) and runs it.
#[test]
#[ignore]
fn one_input() {
    use agentwire_fuzz::conn::{ConnInput, Op};
    let target = std::env::var("FUZZ_TARGET").expect("FUZZ_TARGET");
    let data = fs::read(std::env::var("FUZZ_INPUT").expect("FUZZ_INPUT")).unwrap();
    if target.starts_with("drpc_conn") {
        let input = ConnInput::parse(&data);
        eprintln!("{:?}", input.limits);
        for op in &input.ops {
            match op {
                Op::Input(b) => eprintln!("Input({} bytes: {:02x?})", b.len(), b),
                Op::SendMessage(s, b) => eprintln!("SendMessage({s:?}, {} bytes)", b.len()),
                other => eprintln!("{other:?}"),
            }
        }
    }
    match target.as_str() {
        "drpc_frame" => agentwire_fuzz::frame::run(&data),
        "drpc_packet" => agentwire_fuzz::packet::run(&data),
        "drpc_conn" => agentwire_fuzz::conn::run_server(&data),
        "drpc_conn_client" => agentwire_fuzz::conn::run_client(&data),
        other => panic!("unknown target {other}"),
    }
}
