//! The default DERP map: one region, the embedded relay, whose node is the server's access URL, as coderd builds
//! it in `cli/server.go` when no map is configured. Agents and Coder's clients rewrite an embedded region's nodes
//! to the access URL they themselves use (`tailnet.RewriteDERPMapDefaultRelay`), so the host here matters only to
//! peers that do not.

use std::collections::HashMap;

use axum::http::Uri;

use crate::proto::tailnet::v2 as pb;

/// coderd's `--derp-server-region-id` default.
pub const DEFAULT_REGION_ID: i64 = 999;
/// coderd's `--derp-server-region-code` default.
pub const DEFAULT_REGION_CODE: &str = "coder";
/// coderd's `--derp-server-region-name` default.
pub const DEFAULT_REGION_NAME: &str = "Coder Embedded Relay";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AccessUrlError {
    #[error("access URL {0:?} is not a URL")]
    NotAUrl(String),
    #[error("access URL {0:?} is not http:// or https://")]
    Scheme(String),
    #[error("access URL {0:?} has no host")]
    NoHost(String),
}

/// The embedded relay's region as the map names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedRegion {
    pub region_id: i64,
    pub region_code: String,
    pub region_name: String,
}

impl Default for EmbeddedRegion {
    fn default() -> Self {
        EmbeddedRegion {
            region_id: DEFAULT_REGION_ID,
            region_code: DEFAULT_REGION_CODE.to_owned(),
            region_name: DEFAULT_REGION_NAME.to_owned(),
        }
    }
}

/// The map with the one embedded region reached at `access_url`, with coderd's node: named `<id>b`, STUN off
/// (`-1`), DERP on the URL's port (80 or 443 by default), plain HTTP when the URL is `http://`.
pub fn embedded_derp_map(region: &EmbeddedRegion, access_url: &str) -> Result<pb::DerpMap, AccessUrlError> {
    let uri: Uri = access_url.parse().map_err(|_| AccessUrlError::NotAUrl(access_url.to_owned()))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(AccessUrlError::Scheme(access_url.to_owned())),
    };
    let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(|| AccessUrlError::NoHost(access_url.to_owned()))?;
    // Go's URL.Hostname() drops an IPv6 literal's brackets.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let node = pb::derp_map::region::Node {
        name: format!("{}b", region.region_id),
        region_id: region.region_id,
        host_name: host.to_owned(),
        stun_port: -1,
        derp_port: i32::from(port),
        force_http: !https,
        ..Default::default()
    };
    let region = pb::derp_map::Region {
        region_id: region.region_id,
        embedded_relay: true,
        region_code: region.region_code.clone(),
        region_name: region.region_name.clone(),
        avoid: false,
        nodes: vec![node],
    };
    Ok(pb::DerpMap {
        home_params: Some(pb::derp_map::HomeParams::default()),
        regions: HashMap::from([(region.region_id, region)]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_follows_the_access_url_as_coderd_builds_it() {
        let map = embedded_derp_map(&EmbeddedRegion::default(), "http://127.0.0.1:3000").unwrap();
        let region = &map.regions[&999];
        assert!(region.embedded_relay);
        assert_eq!((region.region_code.as_str(), region.region_name.as_str()), ("coder", "Coder Embedded Relay"));
        let node = &region.nodes[0];
        assert_eq!(node.name, "999b");
        assert_eq!(
            (node.host_name.as_str(), node.derp_port, node.stun_port, node.force_http),
            ("127.0.0.1", 3000, -1, true)
        );

        let map = embedded_derp_map(&EmbeddedRegion::default(), "https://coder.example.com").unwrap();
        let node = &map.regions[&999].nodes[0];
        assert_eq!((node.host_name.as_str(), node.derp_port, node.force_http), ("coder.example.com", 443, false));
        let node = &embedded_derp_map(&EmbeddedRegion::default(), "http://[::1]/").unwrap().regions[&999].nodes[0];
        assert_eq!((node.host_name.as_str(), node.derp_port), ("::1", 80));

        let custom = EmbeddedRegion { region_id: 7, region_code: "x".into(), region_name: "X".into() };
        assert_eq!(embedded_derp_map(&custom, "http://h:1").unwrap().regions[&7].nodes[0].name, "7b");
    }

    #[test]
    fn a_bad_access_url_is_an_error() {
        assert!(matches!(embedded_derp_map(&EmbeddedRegion::default(), "ftp://h"), Err(AccessUrlError::Scheme(_))));
        assert!(embedded_derp_map(&EmbeddedRegion::default(), "127.0.0.1:3000").is_err());
        assert!(matches!(embedded_derp_map(&EmbeddedRegion::default(), "not a url"), Err(AccessUrlError::NotAUrl(_))));
    }
}
