//! agentwire's copies of Coder's protocol constants against Coder's own, as the Go driver's `interop constants`
//! reads them from the pinned coder/coder/v2 module: from Coder's packages where it exports them, from its source
//! text where it does not (`tests/go/internal/coderconst`). agentwire cannot import Go, so its values are copies;
//! this is what keeps them honest. Each assertion names where the value lives on both sides.
//!
//! Deliberate differences are asserted as such, not skipped: agentwire speaks a newer Agent API than v2.30's, and
//! its coordinator reports a refused request as the dRPC error without coderd's `authorization: ` wrapper.

mod common;

use std::net::Ipv6Addr;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use agentwire::proto::tailnet::v2 as pb;
use agentwire::session::ApiVersion;
use agentwire::tailnet::coordinator::{self, Coordinator, Role};
use agentwire::tailnet::{TailnetConfig, TailnetStats};
use agentwire_store::{pubsub, Store, StoreOptions};
use common::go_interop;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The referee's report, run once per test binary.
fn report() -> &'static Value {
    static REPORT: OnceLock<Value> = OnceLock::new();
    REPORT.get_or_init(|| {
        let output = Command::new(go_interop::binary())
            .arg("constants")
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("run interop constants");
        let report: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|err| panic!("interop constants printed no JSON ({err}); see its stderr above"));
        let problems = report["problems"].as_array().expect("problems");
        assert!(
            output.status.success() && problems.is_empty(),
            "the Go driver's copies of Coder's unexported values disagree with Coder's source: {problems:#?}"
        );
        report
    })
}

/// One of Coder's constants; panics naming the ones there are when `name` is not among them.
fn coder(name: &str) -> &'static Value {
    let constants = &report()["constants"];
    let entry = constants.get(name).unwrap_or_else(|| {
        let names: Vec<_> = constants.as_object().unwrap().keys().collect();
        panic!("the referee has no constant {name:?}; it has {names:#?}")
    });
    &entry["value"]
}

fn coder_str(name: &str) -> &'static str {
    coder(name).as_str().unwrap_or_else(|| panic!("{name} is not a string: {}", coder(name)))
}

fn coder_int(name: &str) -> i64 {
    coder(name).as_i64().unwrap_or_else(|| panic!("{name} is not an integer: {}", coder(name)))
}

fn coder_seconds(name: &str) -> Duration {
    let entry = &report()["constants"][name];
    assert_eq!(entry["unit"], "seconds", "{name}: {entry}");
    Duration::from_secs_f64(coder(name).as_f64().unwrap())
}

/// The cases of one of Coder's functions applied to the referee's inputs.
fn cases(name: &str) -> &'static [Value] {
    report()["functions"][name]["cases"].as_array().unwrap_or_else(|| panic!("the referee has no function {name:?}"))
}

fn uuid(v: &Value) -> Uuid {
    Uuid::parse_str(v.as_str().expect("a UUID string")).expect("a UUID")
}

/// A /48 prefix as Coder prints one (`netip.Prefix.String`).
fn prefix48(bytes: [u8; 6]) -> String {
    let mut full = [0u8; 16];
    full[..6].copy_from_slice(&bytes);
    format!("{}/48", Ipv6Addr::from(full))
}

#[test]
fn service_prefixes_and_the_legacy_agent_address() {
    assert_eq!(prefix48(coordinator::TAILSCALE_SERVICE_PREFIX), coder_str("tailnet.TailscaleServicePrefix"));
    assert_eq!(prefix48(coordinator::CODER_SERVICE_PREFIX), coder_str("tailnet.CoderServicePrefix"));
    assert_eq!(Ipv6Addr::from(coordinator::LEGACY_AGENT_IP).to_string(), coder_str("tailnet.legacyWorkspaceAgentIP"));
}

#[test]
fn agent_addresses_are_coders_addr_from_uuid() {
    let cases = cases("tailnet.ServicePrefix.AddrFromUUID");
    assert_eq!(cases.len(), 2);
    for case in cases {
        let coder_prefix = match case["in"]["prefix"].as_str().unwrap() {
            "TailscaleServicePrefix" => false,
            "CoderServicePrefix" => true,
            other => panic!("unknown prefix {other}"),
        };
        let id = uuid(&case["in"]["id"]);
        assert_eq!(coordinator::service_address(coder_prefix, id).to_string(), case["out"].as_str().unwrap(), "{case}");
    }
}

/// A coordinator with no other replicas: its pubsub link never starts.
fn lone_coordinator(store: Store) -> Coordinator {
    Coordinator::new(
        store,
        Uuid::new_v4(),
        TailnetConfig::default(),
        Arc::new(TailnetStats::default()),
        CancellationToken::new(),
        coordinator::no_replica_link,
    )
}

/// coderd's check of what an agent may claim (tailnet.AgentCoordinateeAuth) and agentwire's coordinator accept and
/// refuse the same requests, for the same reasons. coderd's coordinator sends its text wrapped as
/// `authorization: <text>`; agentwire ends the stream with the bare text as the dRPC error.
#[tokio::test]
async fn the_coordinator_authorizes_agents_as_coderd_does() {
    let store = Store::open("sqlite::memory:", StoreOptions::default()).await.unwrap();
    let coordinator = lone_coordinator(store);
    let cases = cases("tailnet.AgentCoordinateeAuth.Authorize");
    assert!(cases.len() >= 8, "{cases:#?}");
    for case in cases {
        let agent = uuid(&case["in"]["agent_id"]);
        let request = &case["in"]["request"];
        let mut req = pb::CoordinateRequest::default();
        if let Some(addresses) = request.get("addresses") {
            let addresses: Vec<String> =
                addresses.as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect();
            let node = pb::Node {
                id: 1,
                key: vec![0; 32].into(),
                disco: "discokey:referee".to_owned(),
                allowed_ips: addresses.clone(),
                addresses,
                ..Default::default()
            };
            req.update_self = Some(pb::coordinate_request::UpdateSelf { node: Some(node) });
        }
        if let Some(dst) = request.get("add_tunnel") {
            req.add_tunnel = Some(pb::coordinate_request::Tunnel { id: uuid(dst).as_bytes().to_vec().into() });
        }
        let (mut peer, _updates) = coordinator.register(agent, Role::Agent).unwrap();
        let ours = peer.handle(req).err().map(|err| err.to_string());
        assert_eq!(ours.as_deref(), case["out"].as_str(), "{case}");
    }
}

#[test]
fn coordinator_texts_and_queue() {
    assert_eq!(coordinator::CLOSE_ERR_OVERWRITTEN, coder_str("tailnet.CloseErrOverwritten"));
    assert_eq!(coordinator::READY_FOR_HANDSHAKE_ERROR, coder_str("tailnet.ReadyForHandshakeError"));
    assert_eq!(agentwire::tailnet::DEFAULT_PEER_QUEUE as i64, coder_int("tailnet.ResponseBufferSize"));
    assert_eq!(
        agentwire::tailnet::DEFAULT_DERP_MAP_CHECK_INTERVAL,
        coder_seconds("coderd.Options.DERPMapUpdateFrequency default")
    );
}

/// agentwire speaks Agent API 2.0 up to a newer minor than v2.30 (which adds UpdateAppStatus, PushContextState):
/// it must accept every version a v2.30 agent dials with, and default to coderd's version when none is given.
#[test]
fn agent_api_versions() {
    let current = coder_str("proto.CurrentVersion");
    assert_eq!(format!("{}.{}", coder_int("proto.CurrentMajor"), coder_int("proto.CurrentMinor")), current);
    let coders = ApiVersion::from_str(current).unwrap();
    assert_eq!(ApiVersion::CODER_V2_30, coders, "what agentwire serves beside coderd is coderd's own version");
    assert_eq!(ApiVersion::CURRENT.major, coders.major, "a different major is a different API");
    assert!(ApiVersion::CURRENT >= coders, "agentwire {} is older than Coder's {coders}", ApiVersion::CURRENT);
    for minor in 0..=coders.minor {
        assert!(ApiVersion::new(coders.major, minor).is_supported(), "{}.{minor}", coders.major);
    }
    assert_eq!(ApiVersion::DEFAULT.to_string(), coder_str("coderd.workspaceAgentRPC default version"));
}

#[test]
fn the_endpoint_and_its_transport() {
    use agentwire::http::agent_rpc::{TOKEN_COOKIE, TOKEN_HEADER};
    assert_eq!(TOKEN_HEADER, coder_str("codersdk.SessionTokenHeader"));
    assert_eq!(TOKEN_COOKIE, coder_str("codersdk.SessionTokenCookie"));
    assert_eq!(
        agentwire_transport::limits::DEFAULT_MAX_PACKET_SIZE as i64,
        coder_int("drpcsdk.MaxMessageSize"),
        "the largest dRPC message either side accepts"
    );
    assert_eq!(
        agentwire::server::DEFAULT_HEARTBEAT_INTERVAL,
        coder_seconds("coderd.Options.AgentConnectionUpdateFrequency default")
    );
}

#[test]
fn pubsub_channels() {
    assert_eq!(pubsub::METADATA_BATCH_CHANNEL, coder_str("metadatabatcher.MetadataBatchPubsubChannel"));
    for case in cases("wspubsub.WorkspaceEventChannel") {
        assert_eq!(pubsub::workspace_owner_channel(uuid(&case["in"])), case["out"].as_str().unwrap());
    }
    for case in cases("agentsdk.LogsNotifyChannel") {
        assert_eq!(pubsub::agent_logs_channel(uuid(&case["in"])), case["out"].as_str().unwrap());
    }
}

#[test]
fn pubsub_payloads() {
    // Subscribers decode these as JSON, so the documents must be equal, not the bytes.
    for case in cases("json(wspubsub.WorkspaceEvent)") {
        let input = &case["in"];
        let agent = input.get("agent_id").map(uuid);
        let ours =
            pubsub::workspace_event_payload(input["kind"].as_str().unwrap(), uuid(&input["workspace_id"]), agent);
        let theirs: Value = serde_json::from_str(case["out"].as_str().unwrap()).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&ours).unwrap(), theirs, "{ours}");
    }
    for case in cases("json(agentsdk.LogsNotifyMessage)") {
        let ours = pubsub::agent_logs_payload(case["in"].as_i64().unwrap());
        let theirs: Value = serde_json::from_str(case["out"].as_str().unwrap()).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&ours).unwrap(), theirs, "{ours}");
    }
    // The metadata batch is not JSON: its bytes are the format.
    let case = &cases("metadatabatcher.EncodeAgentIDChunks")[0];
    let ids: Vec<Uuid> = case["in"].as_array().unwrap().iter().map(uuid).collect();
    let theirs: Vec<&str> = case["out"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert!(theirs.len() > 1, "the sample must span more than one NOTIFY");
    let ours = pubsub::metadata_batch_payloads(&ids, agentwire_store::DEFAULT_METADATA_NOTIFY_MAX_IDS);
    assert_eq!(ours, theirs);
    assert_eq!(pubsub::encode_agent_id_b64(ids[0]).len() as i64, coder_int("metadatabatcher.UUIDBase64Size"));
}

#[test]
fn workspace_event_kinds() {
    let kind = |value: &str| coder_str(&format!("wspubsub.WorkspaceEventKind {value}"));
    for ours in [
        pubsub::STATS_UPDATE_KIND,
        pubsub::AGENT_CONNECTION_UPDATE_KIND,
        agentwire::agentapi::APP_HEALTH_KIND,
        agentwire::agentapi::APP_STATUS_KIND,
        agentwire::agentapi::LIFECYCLE_UPDATE_KIND,
        agentwire::agentapi::EVENT_FIRST_LOGS,
        agentwire::agentapi::EVENT_LOGS_OVERFLOW,
    ] {
        assert_eq!(ours, kind(ours), "{ours} is not one of Coder's WorkspaceEventKinds");
    }
}

#[test]
fn agent_api_limits() {
    use agentwire::agentapi as api;
    assert_eq!(api::DEFAULT_MAX_METADATA_KEYS_BYTES as i64, coder_int("agentapi.maxAllKeysLen"));
    assert_eq!(api::DEFAULT_MAX_METADATA_VALUE_BYTES as i64, coder_int("agentapi.maxValueLen"));
    assert_eq!(coder_str("agentapi.maxErrorLen"), "maxValueLen");
    assert_eq!(api::DEFAULT_MAX_METADATA_ERROR_BYTES as i64, coder_int("agentapi.maxValueLen"));
    assert_eq!(api::DEFAULT_MAX_METADATA_KEY_CHARS as i64, coder_int("database.workspace_agent_metadata.key length"));
    assert_eq!(agentwire_store::DEFAULT_MAX_LOGS_LENGTH, coder_int("database.workspace_agents.max_logs_length"));
    assert_eq!(
        agentwire_store::DEFAULT_MAX_LOG_LINE_CHARS as i64,
        coder_int("queries.InsertWorkspaceAgentLogs output length")
    );
    assert_eq!(
        api::DEFAULT_MAX_APP_STATUS_MESSAGE_BYTES as i64,
        coder_int("coderd.patchWorkspaceAgentAppStatus message length")
    );
    assert_eq!(api::DEFAULT_STATS_REPORT_INTERVAL, coder_seconds("codersdk.DeploymentValues.AgentStatRefreshInterval"));
    assert_eq!(
        i64::from(api::DEFAULT_RESOURCES_MONITORING_NUM_DATAPOINTS),
        coder_int("agentapi.ResourcesMonitoringAPI.Config.NumDatapoints")
    );
    assert_eq!(
        api::DEFAULT_RESOURCES_MONITORING_COLLECTION_INTERVAL,
        coder_seconds("agentapi.ResourcesMonitoringAPI.Config.CollectionInterval")
    );
    assert_eq!(api::DEFAULT_RESOURCES_MONITORING_DEBOUNCE, coder_seconds("agentapi.ResourcesMonitoringAPI.Debounce"));
    assert_eq!(
        api::MINIMUM_NOKS_PERCENT as i64,
        coder_int("agentapi.ResourcesMonitoringAPI.Config.Alert.MinimumNOKsPercent")
    );
    assert_eq!(
        api::CONSECUTIVE_NOKS_PERCENT as i64,
        coder_int("agentapi.ResourcesMonitoringAPI.Config.Alert.ConsecutiveNOKsPercent")
    );
    assert_eq!(api::AGENT_NAME_REGEX, coder_str("provisioner.AgentNameRegex"));
    assert_eq!(agentwire_store::EXTERNAL_LOG_SOURCE_ID.to_string(), coder_str("agentsdk.ExternalLogSourceID"));
}

#[test]
fn batcher_defaults() {
    use agentwire_store as store;
    assert_eq!(store::DEFAULT_STATS_MAX_ROWS as i64, coder_int("workspacestats.defaultBufferSize"));
    assert_eq!(store::DEFAULT_STATS_FLUSH_INTERVAL, coder_seconds("workspacestats.defaultFlushInterval"));
    let fill = coder("workspacestats.Batcher forced flush fill").as_f64().unwrap();
    assert_eq!(store::DEFAULT_STATS_FORCE_FLUSH_PERCENT as f64, (fill * 100.0).round());
    let batch = coder_int("metadatabatcher.defaultMetadataBatchSize");
    assert_eq!(store::DEFAULT_METADATA_FLUSH_AT as i64, batch);
    assert_eq!(
        store::DEFAULT_METADATA_QUEUE_CAPACITY as i64,
        batch * coder_int("metadatabatcher.defaultChannelBufferMultiplier")
    );
    assert_eq!(store::DEFAULT_METADATA_FLUSH_INTERVAL, coder_seconds("metadatabatcher.defaultMetadataFlushInterval"));
    // How many ids one NOTIFY carries: what EncodeAgentIDChunks puts in its first chunk.
    let case = &cases("metadatabatcher.EncodeAgentIDChunks")[0];
    let first = case["out"][0].as_str().unwrap().len() as i64;
    assert_eq!(store::DEFAULT_METADATA_NOTIFY_MAX_IDS as i64, first / coder_int("metadatabatcher.UUIDBase64Size"));
}

#[test]
fn derp_region_defaults() {
    use agentwire::derp::region;
    assert_eq!(region::DEFAULT_REGION_ID, coder_int("codersdk.DeploymentValues.DERP.Server.RegionID"));
    assert_eq!(region::DEFAULT_REGION_CODE, coder_str("codersdk.DeploymentValues.DERP.Server.RegionCode"));
    assert_eq!(region::DEFAULT_REGION_NAME, coder_str("codersdk.DeploymentValues.DERP.Server.RegionName"));
}

#[test]
fn user_side_texts_and_keys() {
    use agentwire::http::{insights, user_auth, watch_metadata};
    assert_eq!(user_auth::SIGNED_OUT, coder_str("httpmw.SignedOutErrorMessage"));
    assert_eq!(user_auth::RESOURCE_NOT_FOUND, coder_str("httpapi.ResourceNotFoundResponse.Message"));
    assert_eq!(insights::STATS_PROCESSING, coder_str("coderd.deploymentStats processing message"));
    assert_eq!(watch_metadata::PING_INTERVAL, coder_seconds("httpapi.HeartbeatInterval"));
    assert_eq!(agentwire_store::API_KEY_ID_LEN as i64, coder_int("apikey.Generate key ID length"));
    assert_eq!(agentwire_store::API_KEY_SECRET_LEN as i64, coder_int("apikey.Generate secret length"));
    assert_eq!(agentwire_store::SITE_CONFIG_ANNOUNCEMENT_BANNERS, coder_str("queries.GetAnnouncementBanners key"));
}
