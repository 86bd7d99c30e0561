//! Coder's DERP map JSON (tailscale's `tailcfg.DERPMap` with Coder's additions) and its conversion to the tailnet
//! proto: what the operator stores with `agentwire derp set`, and what agents get in their manifest and DERP map stream.

use std::collections::HashMap;

use serde::Deserialize;

use crate::proto::tailnet::v2 as pb;

/// An empty map, as the manifest sends when none is configured: agents expect the field. Such agents can only
/// connect directly; the operator sets the map with `agentwire derp set`.
pub fn empty_derp_map() -> pb::DerpMap {
    pb::DerpMap { home_params: Some(pb::derp_map::HomeParams::default()), regions: HashMap::new() }
}

/// Coder's DERP map JSON (tailscale's `tailcfg.DERPMap` with Coder's additions, `EmbeddedRelay` and `ForceHTTP`)
/// as the tailnet proto, the way Coder's `DERPMapToProto` converts it (home params always present).
pub fn parse_derp_map(json: &str) -> Result<pb::DerpMap, serde_json::Error> {
    let map: DerpMapJson = serde_json::from_str(json)?;
    let regions = map
        .regions
        .into_iter()
        .flatten()
        .filter_map(|(id, region)| Some((id, region?)))
        .map(|(id, r)| {
            let nodes = r
                .nodes
                .into_iter()
                .flatten()
                .flatten()
                .map(|n| pb::derp_map::region::Node {
                    name: n.name,
                    region_id: n.region_id,
                    host_name: n.host_name,
                    cert_name: n.cert_name,
                    ipv4: n.ipv4,
                    ipv6: n.ipv6,
                    stun_port: n.stun_port,
                    stun_only: n.stun_only,
                    derp_port: n.derp_port,
                    insecure_for_tests: n.insecure_for_tests,
                    force_http: n.force_http,
                    stun_test_ip: n.stun_test_ip,
                    can_port_80: n.can_port_80,
                })
                .collect();
            let region = pb::derp_map::Region {
                region_id: r.region_id,
                embedded_relay: r.embedded_relay,
                region_code: r.region_code,
                region_name: r.region_name,
                avoid: r.avoid,
                nodes,
            };
            (id, region)
        })
        .collect();
    let region_score = map.home_params.and_then(|h| h.region_score).unwrap_or_default();
    Ok(pb::DerpMap { home_params: Some(pb::derp_map::HomeParams { region_score }), regions })
}

// Go's encoding/json field names (tailcfg has explicit tags only for a few); every field may be missing.
#[derive(Deserialize)]
struct DerpMapJson {
    #[serde(rename = "HomeParams", default)]
    home_params: Option<HomeParamsJson>,
    #[serde(rename = "Regions", default)]
    regions: Option<HashMap<i64, Option<RegionJson>>>,
}

#[derive(Deserialize)]
struct HomeParamsJson {
    #[serde(rename = "RegionScore", default)]
    region_score: Option<HashMap<i64, f64>>,
}

#[derive(Deserialize)]
struct RegionJson {
    #[serde(rename = "RegionID", default)]
    region_id: i64,
    #[serde(rename = "EmbeddedRelay", default)]
    embedded_relay: bool,
    #[serde(rename = "RegionCode", default)]
    region_code: String,
    #[serde(rename = "RegionName", default)]
    region_name: String,
    #[serde(rename = "Avoid", default)]
    avoid: bool,
    #[serde(rename = "Nodes", default)]
    nodes: Option<Vec<Option<NodeJson>>>,
}

#[derive(Deserialize)]
struct NodeJson {
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "RegionID", default)]
    region_id: i64,
    #[serde(rename = "HostName", default)]
    host_name: String,
    #[serde(rename = "CertName", default)]
    cert_name: String,
    #[serde(rename = "IPv4", default)]
    ipv4: String,
    #[serde(rename = "IPv6", default)]
    ipv6: String,
    #[serde(rename = "STUNPort", default)]
    stun_port: i32,
    #[serde(rename = "STUNOnly", default)]
    stun_only: bool,
    #[serde(rename = "DERPPort", default)]
    derp_port: i32,
    #[serde(rename = "InsecureForTests", default)]
    insecure_for_tests: bool,
    #[serde(rename = "ForceHTTP", default)]
    force_http: bool,
    #[serde(rename = "STUNTestIP", default)]
    stun_test_ip: String,
    #[serde(rename = "CanPort80", default)]
    can_port_80: bool,
}
