//! The saturating and fixed-rate modes' default load, `--rpc mix`: the unary calls a real Coder agent makes while it
//! idles at Coder's defaults, in the proportions measured (BENCHMARKS.md, "The real agent at Coder's defaults"), each
//! with the payload that agent sends.
//!
//! Calls are drawn from one fixed order (a smooth weighted round robin over [`AGENT_MIX`]) by a counter all agents
//! share, not at random: any run's per-method counts are the order's first N entries, so a run of whole periods
//! makes exactly the table's counts, and tests can hold the server's counts to them.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agentwire_proto::agent::v2 as pb;
use pb::push_resources_monitoring_usage_request::{datapoint, Datapoint};
use pb::stats::metric::{Label, Type};

use crate::config::RpcName;

/// One unary call the saturating and fixed-rate modes make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Call {
    BatchUpdateMetadata,
    PushResourcesMonitoringUsage,
    UpdateStats,
    GetAnnouncementBanners,
    GetServiceBanner,
    GetManifest,
}

impl Call {
    /// The full method path, as the report and the server's metrics name it.
    pub fn method(self) -> &'static str {
        use pb::agent_methods as m;
        match self {
            Call::BatchUpdateMetadata => m::BATCH_UPDATE_METADATA,
            Call::PushResourcesMonitoringUsage => m::PUSH_RESOURCES_MONITORING_USAGE,
            Call::UpdateStats => m::UPDATE_STATS,
            Call::GetAnnouncementBanners => m::GET_ANNOUNCEMENT_BANNERS,
            Call::GetServiceBanner => m::GET_SERVICE_BANNER,
            Call::GetManifest => m::GET_MANIFEST,
        }
    }

    /// The method's own name (`UpdateStats`).
    pub fn name(self) -> &'static str {
        let method = self.method();
        method.rsplit('/').next().unwrap_or(method)
    }
}

/// The real agent's steady-state unary calls per 10 idle minutes, the weights of `--rpc mix`.
///
/// Measured with `bench/real_agent_idle.sh 10` (BENCHMARKS.md, "The real agent at Coder's defaults (issue 17)": Coder
/// v2.30.0's agent, the shipped `examples/agent.toml`, calls counted from the server's `/metrics`): 15.1
/// BatchUpdateMetadata, 2.0 UpdateStats and 0.5 GetAnnouncementBanners a minute. PushResourcesMonitoringUsage is 60
/// here, not that run's 41: the agent pushes only once its window of 20 datapoints is full, 200 s of 10 s collections
/// after it starts, so all 41 fell in the run's last 400 s; from then on it pushes every 10 s (BENCHMARKS.md, "The
/// real agent's steady state"). Calls of the agent's start (lifecycle, logs, scripts, app health) are left out.
pub const AGENT_MIX: [(Call, u32); 4] = [
    (Call::BatchUpdateMetadata, 151),
    (Call::PushResourcesMonitoringUsage, 60),
    (Call::UpdateStats, 20),
    (Call::GetAnnouncementBanners, 5),
];

/// A fixed order of calls that repeats every [`Schedule::period`] calls, each call as often per period as its weight.
#[derive(Debug, Clone)]
pub struct Schedule {
    weights: Vec<(Call, u32)>,
    /// Each entry's call and how many of that call came before it in the period.
    order: Vec<(Call, u32)>,
}

impl Schedule {
    /// The smooth weighted round robin (nginx's): at every step each call gains its weight, and the call with the
    /// most, the first of equals, is drawn and pays the total. Calls interleave as evenly as their weights allow,
    /// so any stretch of the order has each call within about one of its share.
    pub fn smooth(weights: &[(Call, u32)]) -> Schedule {
        let total: i64 = weights.iter().map(|&(_, w)| i64::from(w)).sum();
        let mut current = vec![0i64; weights.len()];
        let mut seen = vec![0u32; weights.len()];
        let mut order = Vec::with_capacity(total as usize);
        for _ in 0..total {
            for (c, &(_, w)) in current.iter_mut().zip(weights) {
                *c += i64::from(w);
            }
            let mut best = 0;
            for i in 1..current.len() {
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total;
            order.push((weights[best].0, seen[best]));
            seen[best] += 1;
        }
        Schedule { weights: weights.to_vec(), order }
    }

    /// Calls per period: the weights' sum.
    pub fn period(&self) -> u64 {
        self.order.len() as u64
    }

    pub fn weights(&self) -> &[(Call, u32)] {
        &self.weights
    }

    /// The call of run-wide call number `slot` (from 0), and how many of that call came before it in the run.
    pub fn at(&self, slot: u64) -> (Call, u64) {
        let (call, before) = self.order[(slot % self.period()) as usize];
        let weight = self.weights.iter().find(|(c, _)| *c == call).map_or(0, |&(_, w)| w);
        (call, slot / self.period() * u64::from(weight) + u64::from(before))
    }

    /// Calls per method path among the first `calls` of the order: what a run of that many calls makes.
    pub fn counts(&self, calls: u64) -> BTreeMap<&'static str, u64> {
        let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
        let whole = calls / self.period();
        for &(call, weight) in &self.weights {
            counts.insert(call.method(), whole * u64::from(weight));
        }
        for &(call, _) in &self.order[..(calls % self.period()) as usize] {
            *counts.entry(call.method()).or_default() += 1;
        }
        counts
    }
}

/// The order of [`AGENT_MIX`], built once.
pub fn agent_mix() -> &'static Schedule {
    static MIX: OnceLock<Schedule> = OnceLock::new();
    MIX.get_or_init(|| Schedule::smooth(&AGENT_MIX))
}

/// What a saturating or fixed-rate session calls: one RPC with the payload of earlier runs, or the mix.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Plan {
    One(Call),
    Mix(&'static Schedule),
}

impl Plan {
    pub fn of(rpc: RpcName) -> Plan {
        let one = match rpc {
            RpcName::Mix => return Plan::Mix(agent_mix()),
            RpcName::UpdateStats => Call::UpdateStats,
            RpcName::BatchUpdateMetadata => Call::BatchUpdateMetadata,
            RpcName::PushResourcesMonitoringUsage => Call::PushResourcesMonitoringUsage,
            RpcName::GetAnnouncementBanners => Call::GetAnnouncementBanners,
            RpcName::GetServiceBanner => Call::GetServiceBanner,
            RpcName::GetManifest => Call::GetManifest,
        };
        Plan::One(one)
    }

    /// The only method a single-RPC plan calls.
    pub fn single(self) -> Option<&'static str> {
        match self {
            Plan::One(call) => Some(call.method()),
            Plan::Mix(_) => None,
        }
    }
}

/// The metadata keys of the agents `agentwire loadgen --db` creates, so that the server's batcher finds rows to
/// update, as it does for a real agent.
const METADATA_KEYS: [&str; 2] = ["key0", "key1"];

/// The keys of 11 consecutive metadata reports, repeated. The agent reports, once a second, what it collected since
/// its last report, and its two items (every 5 s and every 10 s) seldom come due on the same tick: 98 keys in 90
/// batches over 6 idle minutes (BENCHMARKS.md, "The real agent's steady state"), so one report in 11 carries both.
/// The 5 s item is reported twice as often as the 10 s one.
const METADATA_CYCLE: [&[usize]; 11] = [&[0], &[0], &[1], &[0], &[0], &[1], &[0], &[0], &[1], &[0], &[0, 1]];

/// The `nth` metadata report of the run.
pub(crate) fn metadata_request(nth: u64) -> pb::BatchUpdateMetadataRequest {
    let keys = METADATA_CYCLE[(nth % METADATA_CYCLE.len() as u64) as usize];
    let collected_at = Some(timestamp(SystemTime::now()));
    let metadata = keys
        .iter()
        .map(|&key| {
            // What the example's scripts print, newline included (the agent sends the output as it is): the
            // 1-minute load average, and the home volume's use in percent.
            let value =
                if key == 0 { format!("{}.{:02}\n", nth % 3, nth % 100) } else { format!("{}%\n", 20 + nth % 60) };
            pb::Metadata {
                key: METADATA_KEYS[key].to_owned(),
                result: Some(pb::workspace_agent_metadata::Result {
                    collected_at,
                    age: 0,
                    value,
                    error: String::new(),
                }),
            }
        })
        .collect();
    pb::BatchUpdateMetadataRequest { metadata }
}

/// Datapoints per push: coderd's `NumDatapoints`. The agent keeps a window of this many and, once it is full, sends
/// all of them on every collection.
const RESOURCE_DATAPOINTS: u32 = 20;
/// coderd's `CollectionIntervalSeconds`: the datapoints' spacing.
const RESOURCE_COLLECTION_INTERVAL: Duration = Duration::from_secs(10);
const GIB: i64 = 1 << 30;

/// The `nth` push of the run: the window of the example's monitors, memory and the volume `/`.
pub(crate) fn resources_request(nth: u64) -> pb::PushResourcesMonitoringUsageRequest {
    let now = SystemTime::now();
    let volumes = ["/".to_owned()];
    let datapoints = (0..RESOURCE_DATAPOINTS)
        .map(|i| {
            let age = RESOURCE_COLLECTION_INTERVAL * (RESOURCE_DATAPOINTS - 1 - i);
            resources_datapoint(nth + u64::from(i), now.checked_sub(age).unwrap_or(now), true, &volumes)
        })
        .collect();
    pb::PushResourcesMonitoringUsageRequest { datapoints }
}

/// The `k`th collection of an agent's resources: its memory if `memory`, and each of `volumes`, in bytes as the
/// agent reads them, below the example's 90 % thresholds (no alert).
pub(crate) fn resources_datapoint(k: u64, collected_at: SystemTime, memory: bool, volumes: &[String]) -> Datapoint {
    let k = k as i64;
    Datapoint {
        collected_at: Some(timestamp(collected_at)),
        memory: memory.then(|| datapoint::MemoryUsage { used: 4 * GIB + (k % 64) * (1 << 20), total: 16 * GIB }),
        volumes: volumes
            .iter()
            .map(|volume| datapoint::VolumeUsage {
                volume: volume.clone(),
                used: 40 * GIB + (k % 1024) * 4096,
                total: 100 * GIB,
            })
            .collect(),
    }
}

/// A metric's name, type, label (the agent's have at most one) and value.
type AgentMetric = (&'static str, Type, Option<(&'static str, &'static str)>, f64);

/// What a v2.30.0 agent attaches to every UpdateStats (`collectMetrics`): tailscale's client metrics but the prefixes
/// it ignores, then its own Prometheus registry, as one idle agent of the example definition had them (read off its
/// Prometheus endpoint, `CODER_AGENT_PROMETHEUS_ADDRESS`, which serves the same two sources); the reachable DERP
/// peer is the session's.
#[rustfmt::skip]
const AGENT_METRICS: [AgentMetric; 83] = [
    ("derp_home_change", Type::Counter, None, 0.0),
    ("dnsfallback_recursive_errors", Type::Counter, None, 0.0),
    ("dnsfallback_recursive_matches", Type::Counter, None, 0.0),
    ("dnsfallback_recursive_mismatches", Type::Counter, None, 0.0),
    ("issue_869_workaround", Type::Counter, None, 0.0),
    ("magicdns_packet_in", Type::Counter, None, 0.0),
    ("magicsock_disco_recv_bad_key", Type::Counter, None, 0.0),
    ("magicsock_disco_recv_bad_parse", Type::Counter, None, 0.0),
    ("magicsock_disco_recv_bad_peer", Type::Counter, None, 0.0),
    ("magicsock_disco_recv_bpf_ipv4", Type::Counter, None, 0.0),
    ("magicsock_disco_recv_bpf_ipv6", Type::Counter, None, 0.0),
    ("magicsock_disco_recv_callmemaybe", Type::Counter, None, 0.0),
    ("magicsock_disco_recv_callmemaybe_bad_disco", Type::Counter, None, 0.0),
    ("magicsock_disco_recv_callmemaybe_bad_node", Type::Counter, None, 0.0),
    ("magicsock_disco_recv_derp", Type::Counter, None, 0.0),
    ("magicsock_disco_recv_derp_peer_gone_unknown", Type::Counter, None, 0.0),
    ("magicsock_disco_recv_derp_peer_not_here", Type::Counter, None, 0.0),
    ("magicsock_disco_recv_ping", Type::Counter, None, 0.0),
    ("magicsock_disco_recv_pong", Type::Counter, None, 0.0),
    ("magicsock_disco_recv_udp", Type::Counter, None, 0.0),
    ("magicsock_disco_send_derp", Type::Counter, None, 0.0),
    ("magicsock_disco_send_udp", Type::Counter, None, 0.0),
    ("magicsock_disco_sent_callmemaybe", Type::Counter, None, 0.0),
    ("magicsock_disco_sent_derp", Type::Counter, None, 0.0),
    ("magicsock_disco_sent_ping", Type::Counter, None, 0.0),
    ("magicsock_disco_sent_pong", Type::Counter, None, 0.0),
    ("magicsock_disco_sent_udp", Type::Counter, None, 0.0),
    ("magicsock_netmap_num_peers", Type::Gauge, None, 0.0),
    ("magicsock_num_derp_conns", Type::Gauge, None, 1.0),
    ("magicsock_rebind_calls", Type::Counter, None, 1.0),
    ("magicsock_recv_data_derp", Type::Counter, None, 0.0),
    ("magicsock_recv_data_ipv4", Type::Counter, None, 0.0),
    ("magicsock_recv_data_ipv6", Type::Counter, None, 0.0),
    ("magicsock_restun_calls", Type::Counter, None, 2.0),
    ("magicsock_send_data", Type::Counter, None, 0.0),
    ("magicsock_send_data_network_down", Type::Counter, None, 0.0),
    ("magicsock_send_derp", Type::Counter, None, 0.0),
    ("magicsock_send_derp_error", Type::Counter, None, 0.0),
    ("magicsock_send_derp_error_chan", Type::Counter, None, 0.0),
    ("magicsock_send_derp_error_closed", Type::Counter, None, 0.0),
    ("magicsock_send_derp_error_queue", Type::Counter, None, 0.0),
    ("magicsock_send_derp_queued", Type::Counter, None, 0.0),
    ("magicsock_send_udp", Type::Counter, None, 0.0),
    ("magicsock_send_udp_error", Type::Counter, None, 0.0),
    ("magicsock_update_endpoints", Type::Counter, None, 2.0),
    ("netcheck_https_measure", Type::Counter, None, 2.0),
    ("netcheck_report", Type::Counter, None, 2.0),
    ("netcheck_report_error", Type::Counter, None, 0.0),
    ("netcheck_report_full", Type::Counter, None, 1.0),
    ("netcheck_stun_recv_ipv4", Type::Counter, None, 0.0),
    ("netcheck_stun_recv_ipv6", Type::Counter, None, 0.0),
    ("netcheck_stun_send_ipv4", Type::Counter, None, 0.0),
    ("netcheck_stun_send_ipv6", Type::Counter, None, 0.0),
    ("packet_reflect_to_os", Type::Counter, None, 0.0),
    ("portmap_pcp_address_mismatch", Type::Counter, None, 0.0),
    ("portmap_pcp_not_authorized", Type::Counter, None, 0.0),
    ("portmap_pcp_ok", Type::Counter, None, 0.0),
    ("portmap_pcp_sent", Type::Counter, None, 0.0),
    ("portmap_pcp_unhandled_response_code", Type::Counter, None, 0.0),
    ("portmap_pmp_network_failure", Type::Counter, None, 0.0),
    ("portmap_pmp_not_authorized", Type::Counter, None, 0.0),
    ("portmap_pmp_ok", Type::Counter, None, 0.0),
    ("portmap_pmp_out_of_resources", Type::Counter, None, 0.0),
    ("portmap_pmp_sent", Type::Counter, None, 0.0),
    ("portmap_pmp_unhandled_opcode", Type::Counter, None, 0.0),
    ("portmap_pmp_unhandled_response_code", Type::Counter, None, 0.0),
    ("portmap_pxp_response", Type::Counter, None, 0.0),
    ("portmap_upnp_ok", Type::Counter, None, 0.0),
    ("portmap_upnp_parse_err", Type::Counter, None, 0.0),
    ("portmap_upnp_response", Type::Counter, None, 0.0),
    ("portmap_upnp_response_alternate_port", Type::Counter, None, 0.0),
    ("portmap_upnp_sent", Type::Counter, None, 0.0),
    ("portmap_upnp_updated_meta", Type::Counter, None, 0.0),
    ("wgengine_major_changes", Type::Counter, None, 0.0),
    ("wgengine_minor_changes", Type::Counter, None, 0.0),
    ("agent_reconnecting_pty_connections_total", Type::Counter, None, 0.0),
    ("agent_scripts_executed_total", Type::Counter, Some(("success", "true")), 2.0),
    ("agent_ssh_server_failed_connections_total", Type::Counter, None, 0.0),
    ("agent_ssh_server_sftp_connections_total", Type::Counter, None, 0.0),
    ("agent_ssh_server_sftp_server_errors_total", Type::Counter, None, 0.0),
    ("coderd_agentstats_currently_reachable_peers", Type::Gauge, Some(("connection_type", "derp")), 1.0),
    ("coderd_agentstats_currently_reachable_peers", Type::Gauge, Some(("connection_type", "p2p")), 0.0),
    ("coderd_agentstats_startup_script_seconds", Type::Gauge, Some(("success", "true")), 0.503791312),
];

fn agent_metrics() -> &'static [pb::stats::Metric] {
    static METRICS: OnceLock<Vec<pb::stats::Metric>> = OnceLock::new();
    METRICS.get_or_init(|| {
        AGENT_METRICS
            .iter()
            .map(|&(name, kind, label, value)| pb::stats::Metric {
                name: name.to_owned(),
                r#type: kind as i32,
                value,
                labels: label
                    .map(|(name, value)| Label { name: name.to_owned(), value: value.to_owned() })
                    .into_iter()
                    .collect(),
            })
            .collect()
    })
}

/// The `nth` stats report of the run: an agent with one SSH session over one tailnet connection, its traffic over
/// the 30 s report interval, and the agent's metrics. An idle agent reports no session, but a live connection is what
/// makes the server bump the workspace, the costlier report of a workspace in use. The connection is keyed by its IP
/// protocol, as the agent's network log names it.
pub(crate) fn stats_request(nth: u64) -> pb::UpdateStatsRequest {
    let n = (nth % 16) as i64;
    pb::UpdateStatsRequest {
        stats: Some(pb::Stats {
            connections_by_proto: [("TCP".to_owned(), 1)].into_iter().collect(),
            connection_count: 1,
            connection_median_latency_ms: 18.5,
            rx_packets: 60 + n,
            rx_bytes: 9_000 + 150 * n,
            tx_packets: 48 + n,
            tx_bytes: 14_000 + 120 * n,
            session_count_ssh: 1,
            metrics: agent_metrics().to_vec(),
            ..Default::default()
        }),
    }
}

fn timestamp(at: SystemTime) -> prost_types::Timestamp {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp { seconds: since.as_secs() as i64, nanos: since.subsec_nanos() as i32 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_period_has_each_call_as_often_as_its_weight() {
        let mix = agent_mix();
        assert_eq!(mix.period(), AGENT_MIX.iter().map(|&(_, w)| u64::from(w)).sum::<u64>());
        for periods in [1, 3] {
            let counts = mix.counts(periods * mix.period());
            for (call, weight) in AGENT_MIX {
                assert_eq!(counts[call.method()], periods * u64::from(weight), "{call:?}");
            }
        }
        let mut drawn: BTreeMap<&str, u64> = BTreeMap::new();
        for slot in 0..2 * mix.period() + 17 {
            let (call, before) = mix.at(slot);
            let seen = drawn.entry(call.method()).or_default();
            assert_eq!(before, *seen, "slot {slot}: {call:?} is numbered by the calls of its kind before it");
            *seen += 1;
        }
        assert_eq!(drawn, mix.counts(2 * mix.period() + 17));
    }

    /// The order spreads each call out: every prefix holds each call within one of its share, so a run's
    /// per-method counts follow the weights from its first calls on, not only over whole periods.
    #[test]
    fn every_prefix_is_within_one_call_of_the_weights() {
        let mix = agent_mix();
        let total = mix.period() as f64;
        for calls in 0..=mix.period() {
            let counts = mix.counts(calls);
            for (call, weight) in AGENT_MIX {
                let share = calls as f64 * f64::from(weight) / total;
                let got = counts[call.method()] as f64;
                assert!((got - share).abs() < 1.0, "{call:?} after {calls}: {got} against {share:.2}");
            }
        }
    }

    #[test]
    fn payloads_have_the_real_agents_shapes() {
        let batches: Vec<Vec<String>> =
            (0..22).map(|n| metadata_request(n).metadata.into_iter().map(|m| m.key).collect()).collect();
        let keys = |key: &str| batches.iter().flatten().filter(|k| *k == key).count();
        assert_eq!((batches.len(), keys("key0") + keys("key1")), (22, 24), "12 keys in every 11 batches");
        assert_eq!(keys("key0"), 2 * keys("key1"), "the 5 s item twice as often as the 10 s one");
        let push = resources_request(7);
        assert_eq!(push.datapoints.len(), RESOURCE_DATAPOINTS as usize);
        let first = push.datapoints[0].collected_at.unwrap().seconds;
        let last = push.datapoints[19].collected_at.unwrap().seconds;
        assert_eq!(last - first, 190, "20 collections 10 s apart, oldest first");
        let stats = stats_request(1).stats.unwrap();
        assert_eq!((stats.connection_count, stats.session_count_ssh, stats.metrics.len()), (1, 1, 83));
    }
}
