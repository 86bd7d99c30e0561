//! The default DERP map, as coderd builds it in `cli/server.go` when no map is configured: the embedded relay's
//! region, whose node is the server's access URL, and one STUN-only region per `--derp-server-stun-addresses` entry
//! (`tailnet.NewDERPMap`). Agents and Coder's clients rewrite an embedded region's nodes to the access URL they
//! themselves use (`tailnet.RewriteDERPMapDefaultRelay`), so the host here matters only to peers that do not.

use std::collections::HashMap;

use axum::http::Uri;

use crate::proto::tailnet::v2 as pb;

/// coderd's `--derp-server-region-id` default.
pub const DEFAULT_REGION_ID: i64 = 999;
/// coderd's `--derp-server-region-code` default.
pub const DEFAULT_REGION_CODE: &str = "coder";
/// coderd's `--derp-server-region-name` default.
pub const DEFAULT_REGION_NAME: &str = "Coder Embedded Relay";

/// coderd's `--derp-server-stun-addresses` default, Google's public STUN servers: agentwire's beside coderd, whose
/// map it must equal (standalone it names none, see [`super::DerpConfig`]).
pub const CODERD_STUN_ADDRESSES: [&str; 5] = [
    "stun.l.google.com:19302",
    "stun1.l.google.com:19302",
    "stun2.l.google.com:19302",
    "stun3.l.google.com:19302",
    "stun4.l.google.com:19302",
];
/// The `--derp-server-stun-addresses` entry that turns STUN off (`tailnet.DisableSTUN`).
pub const DISABLE_STUN: &str = "disable";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AccessUrlError {
    #[error("access URL {0:?} is not a URL")]
    NotAUrl(String),
    #[error("access URL {0:?} is not http:// or https://")]
    Scheme(String),
    #[error("access URL {0:?} has no host")]
    NoHost(String),
}

/// A `--derp-server-stun-addresses` entry coderd would refuse to start with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("STUN address {address:?}: {reason}")]
pub struct StunAddressError {
    pub address: String,
    pub reason: &'static str,
}

/// Why the default map cannot be built: coderd's `create derp map` errors, for the settings agentwire shares.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DerpMapError {
    #[error(transparent)]
    AccessUrl(#[from] AccessUrlError),
    #[error(transparent)]
    StunAddress(#[from] StunAddressError),
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

/// coderd's default map (`tailnet.NewDERPMap` with no URL or path): the embedded region, then a STUN-only region
/// per entry of `stun_addresses` with IDs counting up from the embedded region's. With `block_direct` (coderd's
/// `--block-direct-connections`) there is no STUN at all: the addresses are not even read, and every node's STUN
/// port is `-1`, as the embedded node's already is.
pub fn default_derp_map(
    region: &EmbeddedRegion,
    access_url: &str,
    stun_addresses: &[String],
    block_direct: bool,
) -> Result<pb::DerpMap, DerpMapError> {
    let mut map = embedded_derp_map(region, access_url)?;
    if !block_direct {
        for stun in stun_regions(region.region_id, stun_addresses)? {
            map.regions.insert(stun.region_id, stun);
        }
    }
    Ok(map)
}

/// coderd's `tailnet.STUNRegions`: region `base + i + 1` for the `i`th address, one STUN-only node on its host and
/// port. A `disable` means no STUN regions, whatever follows it; an entry before it that does not parse is still an
/// error, as coderd reads them in order.
pub fn stun_regions(
    base_region_id: i64,
    stun_addresses: &[String],
) -> Result<Vec<pb::derp_map::Region>, StunAddressError> {
    let mut regions = Vec::with_capacity(stun_addresses.len());
    for (index, address) in stun_addresses.iter().enumerate() {
        if address == DISABLE_STUN {
            return Ok(Vec::new());
        }
        let error = |reason| StunAddressError { address: address.clone(), reason };
        let (host, port) = split_host_port(address).map_err(error)?;
        // Go's strconv.Atoi: an optional sign and decimal digits, into a 64-bit int that DERPNodeToProto then
        // narrows with int32(); the same narrowing here keeps an out-of-range port what coderd sends.
        let port: i64 = port.parse().map_err(|_| error("the port is not a number"))?;
        let region_id = base_region_id.wrapping_add(index as i64 + 1);
        regions.push(pb::derp_map::Region {
            region_id,
            embedded_relay: false,
            region_code: format!("coder_stun_{region_id}"),
            region_name: format!("Coder STUN {region_id}"),
            avoid: false,
            nodes: vec![pb::derp_map::region::Node {
                name: format!("{region_id}stun0"),
                region_id,
                host_name: host.to_owned(),
                stun_only: true,
                stun_port: port as i32,
                ..Default::default()
            }],
        });
    }
    Ok(regions)
}

/// Go's `net.SplitHostPort`, whose errors coderd starts with: `host:port` or `[host]:port`, the host possibly empty,
/// the port anything after the last colon.
pub(crate) fn split_host_port(address: &str) -> Result<(&str, &str), &'static str> {
    const MISSING_PORT: &str = "missing port in address";
    const TOO_MANY_COLONS: &str = "too many colons in address";
    let colon = address.rfind(':').ok_or(MISSING_PORT)?;
    let (host, after_open, after_close) = if address.starts_with('[') {
        let end = address.find(']').ok_or("missing ']' in address")?;
        if end + 1 == address.len() {
            return Err(MISSING_PORT);
        }
        if end + 1 != colon {
            return Err(if address.as_bytes()[end + 1] == b':' { TOO_MANY_COLONS } else { MISSING_PORT });
        }
        (&address[1..end], 1, end + 1)
    } else {
        let host = &address[..colon];
        if host.contains(':') {
            return Err(TOO_MANY_COLONS);
        }
        (host, 0, 0)
    };
    if address[after_open..].contains('[') {
        return Err("unexpected '[' in address");
    }
    if address[after_close..].contains(']') {
        return Err("unexpected ']' in address");
    }
    Ok((host, &address[colon + 1..]))
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

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    /// `coder server`'s defaults: regions 1000–1004, each one STUN-only node, and the embedded node's STUN off.
    #[test]
    fn coderds_default_stun_addresses_give_regions_after_the_embedded_one() {
        let stun = strings(&CODERD_STUN_ADDRESSES);
        let map = default_derp_map(&EmbeddedRegion::default(), "https://coder.example.com", &stun, false).unwrap();
        let mut ids: Vec<_> = map.regions.keys().copied().collect();
        ids.sort_unstable();
        assert_eq!(ids, [999, 1000, 1001, 1002, 1003, 1004]);
        assert_eq!(map.regions[&999].nodes[0].stun_port, -1);
        let first = &map.regions[&1000];
        assert!(!first.embedded_relay);
        assert_eq!((first.region_code.as_str(), first.region_name.as_str()), ("coder_stun_1000", "Coder STUN 1000"));
        let node = &first.nodes[0];
        assert_eq!(
            (node.name.as_str(), node.region_id, node.host_name.as_str(), node.stun_port, node.stun_only),
            ("1000stun0", 1000, "stun.l.google.com", 19302, true)
        );
        assert_eq!((node.derp_port, node.force_http), (0, false));
        assert_eq!(map.regions[&1004].nodes[0].host_name, "stun4.l.google.com");

        let custom = EmbeddedRegion { region_id: 7, ..EmbeddedRegion::default() };
        let map = default_derp_map(&custom, "http://h:1", &strings(&["[::1]:3478"]), false).unwrap();
        assert_eq!((map.regions[&8].nodes[0].host_name.as_str(), map.regions[&8].nodes[0].stun_port), ("::1", 3478));
    }

    /// `disable`, no addresses, or blocked direct connections: the embedded region alone.
    #[test]
    fn stun_off_leaves_the_embedded_region_alone() {
        let alone = embedded_derp_map(&EmbeddedRegion::default(), "http://127.0.0.1:3000").unwrap();
        for (stun, block) in [
            (strings(&["stun.example.com:3478", DISABLE_STUN]), false),
            (strings(&[DISABLE_STUN, "bad"]), false),
            (Vec::new(), false),
            (strings(&CODERD_STUN_ADDRESSES), true),
            (strings(&["bad"]), true),
        ] {
            let map = default_derp_map(&EmbeddedRegion::default(), "http://127.0.0.1:3000", &stun, block).unwrap();
            assert_eq!(map, alone, "{stun:?}, block direct {block}");
        }
    }

    #[test]
    fn stun_addresses_are_split_as_go_splits_them() {
        assert_eq!(split_host_port("h:1"), Ok(("h", "1")));
        assert_eq!(split_host_port(":1"), Ok(("", "1")));
        assert_eq!(split_host_port("h:"), Ok(("h", "")));
        assert_eq!(split_host_port("[::1]:1"), Ok(("::1", "1")));
        assert_eq!(split_host_port("h"), Err("missing port in address"));
        assert_eq!(split_host_port("::1:1"), Err("too many colons in address"));
        assert_eq!(split_host_port("[::1]"), Err("missing port in address"));
        assert_eq!(split_host_port("[::1]x:1"), Err("missing port in address"));
        assert_eq!(split_host_port("[::1]:1:2"), Err("too many colons in address"));
        assert_eq!(split_host_port("[::1:1"), Err("missing ']' in address"));
        assert_eq!(split_host_port("h[:1"), Err("unexpected '[' in address"));
        assert_eq!(split_host_port("h]:1"), Err("unexpected ']' in address"));

        let port = |a: &str| stun_regions(999, &strings(&[a])).map(|r| r[0].nodes[0].stun_port);
        assert_eq!(port("h:+5"), Ok(5));
        assert!(port("h:").is_err() && port("h:x").is_err() && port("h").is_err());
        assert_eq!(
            stun_regions(999, &strings(&["ok:1", "h"])),
            Err(StunAddressError { address: "h".into(), reason: "missing port in address" })
        );
        assert!(stun_regions(999, &strings(&["h", DISABLE_STUN])).is_err());
    }
}
