//! `GET /api/v2/workspaceagents/{id}/connection` and `GET /api/v2/workspaceagents/connection`: what Coder's
//! client asks before it coordinates (`workspacesdk.DialAgent`, `AgentConnectionInfo`): the DERP map, in tailscale's
//! `tailcfg.DERPMap` JSON as coderd writes it, and the deployment's connection settings, coderd's
//! `workspacesdk.AgentConnectionInfo`. The per-agent form checks the caller as the coordinate endpoint does
//! ([`super::agent_access`]); the generic one needs only a user's API token (coderd also takes a workspace proxy's).
//!
//! The map is the one agents get (the stored map, or the embedded relay's region), read from the same poller as
//! StreamDERPMaps. `derp_force_websockets` and `disable_direct_connections` are the ones the manifest gives agents
//! (`serve --derp-force-websockets`, `--block-direct-connections`), so a client and its agent agree; agentwire has no
//! `--workspace-hostname-suffix`, so that is coderd's default.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::agent_access::user_and_agent;
use super::error::ApiError;
use super::user_auth::authenticate_user;
use crate::proto::tailnet::v2 as pb;
use crate::server::AppState;

/// How long a request waits for the DERP map poller's first read before it answers 500. The read is one
/// `site_configs` row; it takes this long only when the database does not answer.
pub const DEFAULT_DERP_MAP_WAIT: Duration = Duration::from_secs(10);
/// coderd's `--workspace-hostname-suffix` default.
pub const HOSTNAME_SUFFIX: &str = "coder";

/// coderd's `workspacesdk.AgentConnectionInfo`.
#[derive(Debug, Serialize)]
pub struct AgentConnectionInfo {
    pub derp_map: DerpMapJson,
    pub derp_force_websockets: bool,
    pub disable_direct_connections: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub hostname_suffix: String,
}

pub async fn agent_connection(
    State(state): State<AppState>,
    Path(agent): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(err) = user_and_agent(&state, &headers, &query, &agent).await {
        return err.into_response();
    }
    connection_info(&state).await
}

pub async fn connection_generic(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(err) = authenticate_user(&state, &headers, &query).await {
        return err.into_response();
    }
    connection_info(&state).await
}

async fn connection_info(state: &AppState) -> Response {
    let maps = state.tailnet().derp_maps().subscribe();
    let Some(map) = first_map(maps, DEFAULT_DERP_MAP_WAIT).await else {
        return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error fetching the DERP map.")
            .detail(format!("no DERP map read within {DEFAULT_DERP_MAP_WAIT:?}"))
            .into_response();
    };
    let agents = &state.config().agent_api;
    Json(AgentConnectionInfo {
        derp_map: DerpMapJson::from(map.as_ref()),
        derp_force_websockets: agents.derp_force_websockets,
        disable_direct_connections: agents.disable_direct_connections,
        hostname_suffix: HOSTNAME_SUFFIX.to_owned(),
    })
    .into_response()
}

/// The poller's map once it has one, or `None` after `wait`.
async fn first_map(
    mut maps: tokio::sync::watch::Receiver<crate::tailnet::derp_map::Current>,
    wait: Duration,
) -> Option<std::sync::Arc<pb::DerpMap>> {
    let map = tokio::time::timeout(wait, maps.wait_for(Option::is_some)).await.ok()?.ok()?;
    map.clone()
}

/// tailscale's `tailcfg.DERPMap` as Go's encoding/json writes it (field names, `omitempty`), from the proto the
/// way Coder's `DERPMapFromProto` converts it.
#[derive(Debug, Serialize)]
pub struct DerpMapJson {
    #[serde(rename = "HomeParams")]
    home_params: HomeParamsJson,
    /// Ordered, as Go writes map keys.
    #[serde(rename = "Regions")]
    regions: BTreeMap<i64, RegionJson>,
}

#[derive(Debug, Serialize)]
struct HomeParamsJson {
    #[serde(rename = "RegionScore", skip_serializing_if = "BTreeMap::is_empty")]
    region_score: BTreeMap<i64, f64>,
}

#[derive(Debug, Serialize)]
struct RegionJson {
    #[serde(rename = "EmbeddedRelay")]
    embedded_relay: bool,
    #[serde(rename = "RegionID")]
    region_id: i64,
    #[serde(rename = "RegionCode")]
    region_code: String,
    #[serde(rename = "RegionName")]
    region_name: String,
    #[serde(rename = "Avoid", skip_serializing_if = "is_false")]
    avoid: bool,
    #[serde(rename = "Nodes")]
    nodes: Vec<NodeJson>,
}

#[derive(Debug, Serialize)]
struct NodeJson {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "RegionID")]
    region_id: i64,
    #[serde(rename = "HostName")]
    host_name: String,
    #[serde(rename = "CertName", skip_serializing_if = "String::is_empty")]
    cert_name: String,
    #[serde(rename = "IPv4", skip_serializing_if = "String::is_empty")]
    ipv4: String,
    #[serde(rename = "IPv6", skip_serializing_if = "String::is_empty")]
    ipv6: String,
    #[serde(rename = "STUNPort", skip_serializing_if = "is_zero")]
    stun_port: i32,
    #[serde(rename = "STUNOnly", skip_serializing_if = "is_false")]
    stun_only: bool,
    #[serde(rename = "DERPPort", skip_serializing_if = "is_zero")]
    derp_port: i32,
    #[serde(rename = "InsecureForTests", skip_serializing_if = "is_false")]
    insecure_for_tests: bool,
    #[serde(rename = "ForceHTTP", skip_serializing_if = "is_false")]
    force_http: bool,
    #[serde(rename = "STUNTestIP", skip_serializing_if = "String::is_empty")]
    stun_test_ip: String,
    #[serde(rename = "CanPort80", skip_serializing_if = "is_false")]
    can_port_80: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

impl From<&pb::DerpMap> for DerpMapJson {
    fn from(map: &pb::DerpMap) -> Self {
        let region_score = map
            .home_params
            .as_ref()
            .map(|h| h.region_score.iter().map(|(k, v)| (*k, *v)).collect())
            .unwrap_or_default();
        let regions = map
            .regions
            .iter()
            .map(|(id, r)| {
                let nodes = r
                    .nodes
                    .iter()
                    .map(|n| NodeJson {
                        name: n.name.clone(),
                        region_id: n.region_id,
                        host_name: n.host_name.clone(),
                        cert_name: n.cert_name.clone(),
                        ipv4: n.ipv4.clone(),
                        ipv6: n.ipv6.clone(),
                        stun_port: n.stun_port,
                        stun_only: n.stun_only,
                        derp_port: n.derp_port,
                        insecure_for_tests: n.insecure_for_tests,
                        force_http: n.force_http,
                        stun_test_ip: n.stun_test_ip.clone(),
                        can_port_80: n.can_port_80,
                    })
                    .collect();
                let region = RegionJson {
                    embedded_relay: r.embedded_relay,
                    region_id: r.region_id,
                    region_code: r.region_code.clone(),
                    region_name: r.region_name.clone(),
                    avoid: r.avoid,
                    nodes,
                };
                (*id, region)
            })
            .collect();
        DerpMapJson { home_params: HomeParamsJson { region_score }, regions }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::derp::{embedded_derp_map, EmbeddedRegion};
    use crate::tailnet::derp_map::parse_derp_map;

    #[test]
    fn the_embedded_map_is_written_as_coderd_writes_it() {
        let map = embedded_derp_map(&EmbeddedRegion::default(), "http://127.0.0.1:3000").unwrap();
        let json = serde_json::to_string(&DerpMapJson::from(&map)).unwrap();
        assert_eq!(
            json,
            r#"{"HomeParams":{},"Regions":{"999":{"EmbeddedRelay":true,"RegionID":999,"RegionCode":"coder","RegionName":"Coder Embedded Relay","Nodes":[{"Name":"999b","RegionID":999,"HostName":"127.0.0.1","STUNPort":-1,"DERPPort":3000,"ForceHTTP":true}]}}}"#
        );
    }

    #[test]
    fn a_stored_map_comes_back_as_it_went_in() {
        let stored = r#"{"HomeParams":{"RegionScore":{"1":0.5}},"Regions":{"1":{"EmbeddedRelay":false,"RegionID":1,"RegionCode":"a","RegionName":"A","Avoid":true,"Nodes":[{"Name":"1a","RegionID":1,"HostName":"a.example.com","CertName":"c","IPv4":"192.0.2.1","IPv6":"2001:db8::1","STUNPort":3478,"STUNOnly":true,"DERPPort":443,"InsecureForTests":true,"STUNTestIP":"192.0.2.2","CanPort80":true}]}}}"#;
        let json = serde_json::to_string(&DerpMapJson::from(&parse_derp_map(stored).unwrap())).unwrap();
        assert_eq!(json, stored);
    }

    #[tokio::test(start_paused = true)]
    async fn a_map_never_read_is_given_up_on_after_the_wait() {
        let (tx, rx) = tokio::sync::watch::channel(None);
        assert!(first_map(rx.clone(), DEFAULT_DERP_MAP_WAIT).await.is_none());
        let map = std::sync::Arc::new(crate::tailnet::derp_map::empty_derp_map());
        tx.send_replace(Some(map.clone()));
        assert_eq!(first_map(rx, DEFAULT_DERP_MAP_WAIT).await, Some(map));
    }
}
