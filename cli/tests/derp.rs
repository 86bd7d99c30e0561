//! `agentwire derp set`, the binary run as operators run it: the map it stores is the one a server then serves
//! (the server side of the DERP map is in `tests/tailnet.rs`), and a file that is not a DERP map is refused.

use std::path::Path;
use std::process::Output;

use agentwire_store::{Store, StoreOptions};
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_agentwire");

/// Two regions, one node (`tests/tailnet.rs` serves the same map as `DERP_B`).
const DERP_B: &str = r#"{"Regions":{"999":{"EmbeddedRelay":true,"RegionID":999,"RegionCode":"coder","RegionName":"Coder",
  "Nodes":[{"Name":"999a","RegionID":999,"HostName":"b.example.com","STUNPort":-1,"DERPPort":443}]},
  "1000":{"RegionID":1000,"RegionCode":"two","RegionName":"Two","Nodes":[]}}}"#;

/// `agentwire derp set --db DB FILE`.
async fn derp_set(db: &str, file: &Path) -> Output {
    tokio::process::Command::new(BIN).args(["derp", "set", "--db", db]).arg(file).output().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derp_set_command_stores_the_map() {
    let dir = std::env::temp_dir().join(format!("aw-derp-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.join("db.sqlite").display());
    let file = dir.join("derp.json");
    std::fs::write(&file, DERP_B).unwrap();
    let out = derp_set(&db, &file).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "DERP map set: 2 regions, 1 nodes");
    std::fs::write(&file, "{\"Regions\": 5}").unwrap();
    let bad = derp_set(&db, &file).await;
    assert!(!bad.status.success());
    let store = Store::open(&db, StoreOptions::default()).await.unwrap();
    assert_eq!(store.derp_map().await.unwrap().as_deref(), Some(DERP_B));
    store.close().await;
    let _ = std::fs::remove_dir_all(dir);
}
