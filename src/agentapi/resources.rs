//! GetResourcesMonitoringConfiguration and PushResourcesMonitoringUsage (Coder's `resources_monitoring.go` and
//! `resourcesmonitor`): memory and disk usage against the thresholds the template set, with OK/NOK state and a
//! debounce on alerts.
//!
//! Differences from Coder, and why:
//! * Coder loads the monitor rows when the connection starts (`InitMonitors`) and keeps them in the connection; the
//!   session here loads them on the first call of either RPC instead ([`ResourceMonitors`](crate::resource_monitors::ResourceMonitors)), so a session that never
//!   monitors reads nothing and holds one empty slot. From then on, as in Coder, each push computes from that copy
//!   and updates it, under a lock held for the whole push, so two pushes of one session never interleave. Monitors
//!   the template changes later are seen by the agent's next connection, as with coderd.
//! * Coder writes each enabled monitor's new state with a statement of its own on every push. Here the state,
//!   `updated_at` and debounce go to the store's monitor batcher, which writes the latest per monitor for every
//!   agent in one transaction per flush (one statement per monitor kind). The session's copy is what the next push
//!   computes from, so a write still waiting in the batcher changes nothing for it; a write the full queue drops
//!   (counted) is made good by the next push, which writes every enabled monitor again.
//! * Coder then enqueues "workspace out of memory / out of disk" notifications. This server has no notification
//!   queue yet: the transition is computed, the debounce is stored exactly as Coder stores it, and the alert is
//!   logged at once (`tracing::warn!`), so a Go replica's or a later notifier's debounce stays consistent.
//! * A push with no datapoints keeps the old state (Coder's rule would call an empty window NOK, since
//!   "0 consecutive NOKs ≥ 50 % of 0"); a datapoint with `total <= 0` is UNKNOWN rather than Go's float quirk.

use std::time::Duration;

use agentwire_store::{now_micros, MonitorState, UnixMicros};

use super::{pb, AgentApi, RpcError};
use crate::resource_monitors::{Loaded, Monitor};
use crate::session::Session;

use pb::get_resources_monitoring_configuration_response as config;
use pb::push_resources_monitoring_usage_request::Datapoint;

/// Datapoints the agent keeps and sends per push (Coder's fixed value).
pub const DEFAULT_RESOURCES_MONITORING_NUM_DATAPOINTS: i32 = 20;
/// How often the agent samples (Coder's fixed value).
pub const DEFAULT_RESOURCES_MONITORING_COLLECTION_INTERVAL: Duration = Duration::from_secs(10);
/// After an alert, no other alert for this long (Coder's 30 minutes).
pub const DEFAULT_RESOURCES_MONITORING_DEBOUNCE: Duration = Duration::from_secs(30 * 60);
/// NOK if at least this share of the window's datapoints are NOK (Coder's `MinimumNOKsPercent`).
pub const MINIMUM_NOKS_PERCENT: usize = 20;
/// NOK if a run of consecutive NOKs covers at least this share of the window (Coder's `ConsecutiveNOKsPercent`).
pub const CONSECUTIVE_NOKS_PERCENT: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sample {
    Unknown,
    Ok,
    Nok,
}

pub(super) async fn get_resources_monitoring_configuration(
    api: &AgentApi,
    session: &Session,
    _request: pb::GetResourcesMonitoringConfigurationRequest,
) -> Result<pb::GetResourcesMonitoringConfigurationResponse, RpcError> {
    let monitors = session.monitors.lock(&session.scope).await.map_err(RpcError::store("fetch resource monitors"))?;
    Ok(pb::GetResourcesMonitoringConfigurationResponse {
        config: Some(config::Config {
            num_datapoints: api.config.resources_monitoring_num_datapoints,
            collection_interval_seconds: i32::try_from(api.config.resources_monitoring_collection_interval.as_secs())
                .unwrap_or(i32::MAX),
        }),
        memory: monitors.memory.as_ref().map(|m| config::Memory { enabled: m.enabled }),
        volumes: monitors
            .volumes
            .iter()
            .map(|(path, v)| config::Volume { enabled: v.enabled, path: path.clone() })
            .collect(),
    })
}

pub(super) async fn push_resources_monitoring_usage(
    api: &AgentApi,
    session: &Session,
    request: pb::PushResourcesMonitoringUsageRequest,
) -> Result<pb::PushResourcesMonitoringUsageResponse, RpcError> {
    // Held to the end of the push, as Coder holds its lock: read, compute and update are one step per session.
    let mut monitors =
        session.monitors.lock(&session.scope).await.map_err(RpcError::store("fetch resource monitors"))?;
    let now = now_micros();
    let debounce = i64::try_from(api.config.resources_monitoring_debounce.as_micros()).unwrap_or(i64::MAX);
    let points = &request.datapoints;
    let Loaded { memory, volumes } = &mut *monitors;
    if let Some(m) = memory.as_mut().filter(|m| m.enabled) {
        let samples: Vec<Sample> = points
            .iter()
            .map(|p| p.memory.map_or(Sample::Unknown, |u| classify(u.used, u.total, m.threshold)))
            .collect();
        let alert = advance(m, &samples, now, debounce);
        if !session.scope.enqueue_memory_monitor(m.state, now, m.debounced_until) {
            tracing::debug!(agent_id = %session.agent_id(), "monitor batcher queue full; memory monitor state dropped");
        }
        if alert {
            tracing::warn!(agent_id = %session.agent_id(), workspace_id = %session.agent().workspace_id,
                threshold = m.threshold, "workspace out of memory");
        }
    }
    for (path, v) in volumes.iter_mut().filter(|(_, v)| v.enabled) {
        let samples: Vec<Sample> = points.iter().map(|p| volume_sample(p, path, v.threshold)).collect();
        let alert = advance(v, &samples, now, debounce);
        if !session.scope.enqueue_volume_monitor(path, v.state, now, v.debounced_until) {
            tracing::debug!(agent_id = %session.agent_id(), %path,
                "monitor batcher queue full; volume monitor state dropped");
        }
        if alert {
            tracing::warn!(agent_id = %session.agent_id(), workspace_id = %session.agent().workspace_id,
                path = %path, threshold = v.threshold, "workspace out of disk");
        }
    }
    Ok(pb::PushResourcesMonitoringUsageResponse {})
}

fn volume_sample(p: &Datapoint, path: &str, threshold: i64) -> Sample {
    p.volumes.iter().find(|u| u.volume == path).map_or(Sample::Unknown, |u| classify(u.used, u.total, threshold))
}

/// Coder: `int32(used / total * 100) < threshold` is OK, else NOK.
fn classify(used: i64, total: i64, threshold: i64) -> Sample {
    if total <= 0 {
        return Sample::Unknown;
    }
    // Truncation toward zero, as Go's int32 conversion of the float.
    let percent = (used as f64 / total as f64 * 100.0) as i64;
    if percent < threshold {
        Sample::Ok
    } else {
        Sample::Nok
    }
}

/// Moves one monitor to its next state and debounce, given the window's samples; whether that is an alert.
fn advance(m: &mut Monitor, samples: &[Sample], now: UnixMicros, debounce: i64) -> bool {
    let old = m.state;
    m.state = next_state(old, samples);
    // Alert only on an OK → NOK transition past the debounce, which then restarts.
    let alert = now > m.debounced_until && old == MonitorState::Ok && m.state == MonitorState::Nok;
    if alert {
        m.debounced_until = now.saturating_add(debounce);
    }
    alert
}

/// Coder's `NextState`: NOK on a long enough NOK run or enough NOKs overall; OK when every sample is OK; otherwise
/// unchanged. The shares are Coder's integer `percent * total / 100`.
fn next_state(old: MonitorState, samples: &[Sample]) -> MonitorState {
    if samples.is_empty() {
        return old;
    }
    let n = samples.len();
    let mut longest = 0;
    let mut run = 0;
    for s in samples {
        run = if *s == Sample::Nok { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let noks = samples.iter().filter(|s| **s == Sample::Nok).count();
    if longest >= CONSECUTIVE_NOKS_PERCENT * n / 100 || noks >= MINIMUM_NOKS_PERCENT * n / 100 {
        MonitorState::Nok
    } else if samples.iter().all(|s| *s == Sample::Ok) {
        MonitorState::Ok
    } else {
        old
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{another_agent, fixture};
    use super::*;
    use crate::resource_monitors::ResourceMonitors;
    use agentwire_store::QuerySnapshot;
    use pb::push_resources_monitoring_usage_request::datapoint::{MemoryUsage, VolumeUsage};

    const MEMORY_READ: &str = "FetchMemoryResourceMonitorsByAgentID";
    const VOLUME_READ: &str = "FetchVolumesResourceMonitorsByAgentID";
    const MEMORY_WRITE: &str = "UpdateMemoryResourceMonitor";
    const VOLUME_WRITE: &str = "UpdateVolumeResourceMonitor";

    fn mem(used: i64) -> Datapoint {
        Datapoint { collected_at: None, memory: Some(MemoryUsage { used, total: 100 }), volumes: vec![] }
    }

    fn push(points: Vec<Datapoint>) -> pb::PushResourcesMonitoringUsageRequest {
        pb::PushResourcesMonitoringUsageRequest { datapoints: points }
    }

    /// What the store ran since `before`.
    fn since(f: &super::super::test_support::Fixture, before: &QuerySnapshot) -> QuerySnapshot {
        f.store.queries().snapshot().since(before)
    }

    #[test]
    fn next_state_rules() {
        use MonitorState::{Nok as NOK, Ok as OK};
        use Sample::{Nok as N, Ok as O, Unknown as U};
        // 10 samples: 5 consecutive NOKs (50 %) → NOK; 2 scattered NOKs (20 %) → NOK; 1 NOK → keep.
        assert_eq!(next_state(OK, &[O, O, O, N, N, N, N, N, O, O]), NOK);
        assert_eq!(next_state(OK, &[N, O, O, O, O, N, O, O, O, O]), NOK);
        assert_eq!(next_state(NOK, &[N, O, O, O, O, O, O, O, O, O]), NOK);
        assert_eq!(next_state(OK, &[N, O, O, O, O, O, O, O, O, O]), OK);
        // All OK → OK; an unknown sample keeps the old state.
        assert_eq!(next_state(NOK, &[O; 10]), OK);
        assert_eq!(next_state(NOK, &[O, O, O, O, U, O, O, O, O, O]), NOK);
        assert_eq!(next_state(NOK, &[]), NOK);
        assert_eq!(classify(79, 100, 80), Sample::Ok);
        assert_eq!(classify(80, 100, 80), Sample::Nok);
        assert_eq!(classify(5, 0, 80), Sample::Unknown);
    }

    #[test]
    fn an_idle_session_holds_an_empty_slot() {
        // The slot every session carries, monitoring or not: a cell and a pointer, nothing allocated.
        assert_eq!(std::mem::size_of::<ResourceMonitors>(), 16);
        assert!(ResourceMonitors::default().0.get().is_none());
    }

    #[tokio::test]
    async fn configuration_lists_this_agents_monitors_read_once_per_session() {
        let f = fixture().await;
        let admin = f.store.admin();
        admin.add_memory_monitor(f.agent.id, false, 80).await.expect("memory");
        admin.add_volume_monitor(f.agent.id, "/home", true, 90).await.expect("volume");
        let (other, _) = another_agent(&f.store, "bob").await;
        admin.add_volume_monitor(other.id, "/theirs", true, 90).await.expect("volume");
        let before = f.store.queries().snapshot();
        let resp = get_resources_monitoring_configuration(&f.api, &f.session, Default::default()).await.expect("get");
        assert_eq!(since(&f, &before).total(), 2);
        assert_eq!(resp.config, Some(config::Config { num_datapoints: 20, collection_interval_seconds: 10 }));
        assert_eq!(resp.memory, Some(config::Memory { enabled: false }));
        assert_eq!(resp.volumes, vec![config::Volume { enabled: true, path: "/home".into() }]);

        // Loaded once per session, as Coder's connection: later calls read nothing, and a monitor added since is
        // the next session's.
        admin.add_volume_monitor(f.agent.id, "/later", true, 90).await.expect("volume");
        let before = f.store.queries().snapshot();
        let again = get_resources_monitoring_configuration(&f.api, &f.session, Default::default()).await.expect("get");
        assert_eq!(since(&f, &before).total(), 0);
        assert_eq!(again.volumes, resp.volumes);
        let next = super::super::test_support::session_for(&f.store, &f.agent).await;
        let fresh = get_resources_monitoring_configuration(&f.api, &next, Default::default()).await.expect("get");
        assert_eq!(fresh.volumes.len(), 2);
    }

    #[tokio::test]
    async fn no_monitors_configured() {
        let f = fixture().await;
        let resp = get_resources_monitoring_configuration(&f.api, &f.session, Default::default()).await.expect("get");
        assert_eq!((resp.memory, resp.volumes.len()), (None, 0));
        let before = f.store.queries().snapshot();
        push_resources_monitoring_usage(&f.api, &f.session, push(vec![mem(99); 10])).await.expect("push");
        f.store.flush().await;
        let d = since(&f, &before);
        assert_eq!((d.total(), d.begins), (0, 0), "{d:?}");
        assert_eq!(f.store.batcher_stats().monitors.enqueued, 0);
    }

    /// N pushes on one session: the monitors are read once (the first use), every push computes from the session's
    /// copy, and the states reach the database only through the batcher, one statement per monitor kind per flush.
    #[tokio::test]
    async fn pushes_read_once_and_write_through_the_batcher() {
        const PUSHES: usize = 60;
        let f = fixture().await;
        let admin = f.store.admin();
        admin.add_memory_monitor(f.agent.id, true, 80).await.expect("memory");
        admin.add_volume_monitor(f.agent.id, "/home/coder", true, 90).await.expect("volume");
        let point = |memory: i64, disk: i64| Datapoint {
            collected_at: None,
            memory: Some(MemoryUsage { used: memory, total: 100 }),
            volumes: vec![VolumeUsage { volume: "/home/coder".into(), used: disk, total: 100 }],
        };
        let before = f.store.queries().snapshot();
        let flushes_before = f.store.batcher_stats().monitors.flushes;
        let (mut alerted, mut last) = ((0, 0), (0, 0));
        for i in 0..PUSHES {
            // Memory goes NOK at push 20 (the alert) and back to OK at push 40; the disk stays OK throughout.
            let memory = if (20..40).contains(&i) { 95 } else { 10 };
            let t0 = now_micros();
            push_resources_monitoring_usage(&f.api, &f.session, push(vec![point(memory, 10); 20])).await.expect("push");
            let t1 = now_micros();
            if i == 20 {
                alerted = (t0, t1);
            }
            last = (t0, t1);
        }
        let d = since(&f, &before);
        assert_eq!(d.by_name, [(MEMORY_READ, 1), (VOLUME_READ, 1)].into(), "{d:?}");
        assert_eq!(f.store.batcher_stats().monitors.enqueued, 2 * PUSHES as u64);

        f.store.flush().await;
        let d = since(&f, &before);
        let flushes = f.store.batcher_stats().monitors.flushes - flushes_before;
        assert!(flushes >= 1);
        assert!(d.get(MEMORY_WRITE) <= flushes && d.get(VOLUME_WRITE) <= flushes, "{d:?} in {flushes} flushes");
        assert_eq!((d.total(), d.commits), (2 + d.get(MEMORY_WRITE) + d.get(VOLUME_WRITE), flushes), "{d:?}");
        println!(
            "{PUSHES} pushes of 2 monitors: {} statements, {} transactions: {:?}",
            d.total(),
            d.commits,
            d.by_name
        );

        let debounce = DEFAULT_RESOURCES_MONITORING_DEBOUNCE.as_micros() as i64;
        let m = f.session.scope.memory_monitor().await.expect("read").expect("row");
        assert_eq!(m.state, "OK");
        assert!((alerted.0 + debounce..=alerted.1 + debounce).contains(&m.debounced_until), "{m:?} {alerted:?}");
        assert!((last.0..=last.1).contains(&m.updated_at), "{m:?} {last:?}");
        let v = &f.session.scope.volume_monitors().await.expect("read")[0];
        assert_eq!((v.state.as_str(), v.debounced_until), ("OK", 0));
        assert!((last.0..=last.1).contains(&v.updated_at), "{v:?} {last:?}");
    }

    /// Two pushes at once on one session queue behind one lock: the first loads, the second waits and computes from
    /// what the first left, so the rows are read once.
    #[tokio::test]
    async fn concurrent_first_pushes_load_once() {
        let f = fixture().await;
        f.store.admin().add_memory_monitor(f.agent.id, true, 80).await.expect("memory");
        let before = f.store.queries().snapshot();
        let (a, b) = tokio::join!(
            push_resources_monitoring_usage(&f.api, &f.session, push(vec![mem(95); 10])),
            push_resources_monitoring_usage(&f.api, &f.session, push(vec![mem(95); 10])),
        );
        a.expect("push");
        b.expect("push");
        let d = since(&f, &before);
        assert_eq!(d.by_name, [(MEMORY_READ, 1), (VOLUME_READ, 1)].into(), "{d:?}");
        f.store.flush().await;
        assert_eq!(f.store.batcher_stats().monitors.superseded, 1, "two writes of one monitor, the later kept");
        assert_eq!(f.session.scope.memory_monitor().await.expect("read").expect("row").state, "NOK");
    }

    #[tokio::test]
    async fn memory_goes_nok_with_debounce_then_back_ok() {
        let f = fixture().await;
        f.store.admin().add_memory_monitor(f.agent.id, true, 80).await.expect("memory");
        let high: Vec<Datapoint> = (0..10).map(|i| mem(if i < 5 { 50 } else { 95 })).collect();
        let t0 = now_micros();
        push_resources_monitoring_usage(&f.api, &f.session, push(high.clone())).await.expect("push");
        f.store.flush().await;
        let m = f.session.scope.memory_monitor().await.expect("read").expect("row");
        assert_eq!(m.state, "NOK");
        let debounce = DEFAULT_RESOURCES_MONITORING_DEBOUNCE.as_micros() as i64;
        assert!(m.debounced_until >= t0 + debounce && m.updated_at >= t0, "{m:?}");
        let first_debounce = m.debounced_until;

        // Back to all OK: OK, debounce kept. Then NOK again inside the debounce: state moves, debounce does not.
        push_resources_monitoring_usage(&f.api, &f.session, push(vec![mem(10); 10])).await.expect("push");
        f.store.flush().await;
        let m = f.session.scope.memory_monitor().await.expect("read").expect("row");
        assert_eq!((m.state.as_str(), m.debounced_until), ("OK", first_debounce));
        push_resources_monitoring_usage(&f.api, &f.session, push(high)).await.expect("push");
        f.store.flush().await;
        let m = f.session.scope.memory_monitor().await.expect("read").expect("row");
        assert_eq!((m.state.as_str(), m.debounced_until), ("NOK", first_debounce));

        // Absent memory readings are unknown: the state stays.
        let blank = Datapoint { collected_at: None, memory: None, volumes: vec![] };
        push_resources_monitoring_usage(&f.api, &f.session, push(vec![blank; 10])).await.expect("push");
        f.store.flush().await;
        assert_eq!(f.session.scope.memory_monitor().await.expect("read").expect("row").state, "NOK");

        // A new session starts from the stored state and debounce: OK → NOK inside the debounce is no alert.
        push_resources_monitoring_usage(&f.api, &f.session, push(vec![mem(10); 10])).await.expect("push");
        let next = super::super::test_support::session_for(&f.store, &f.agent).await;
        f.store.flush().await;
        push_resources_monitoring_usage(&f.api, &next, push(vec![mem(95); 10])).await.expect("push");
        f.store.flush().await;
        let m = next.scope.memory_monitor().await.expect("read").expect("row");
        assert_eq!((m.state.as_str(), m.debounced_until), ("NOK", first_debounce));
    }

    #[tokio::test]
    async fn volumes_match_on_path_and_disabled_monitors_are_not_written() {
        let f = fixture().await;
        let admin = f.store.admin();
        admin.add_memory_monitor(f.agent.id, false, 80).await.expect("memory");
        admin.add_volume_monitor(f.agent.id, "/home", true, 90).await.expect("volume");
        admin.add_volume_monitor(f.agent.id, "/data", true, 90).await.expect("volume");
        admin.add_volume_monitor(f.agent.id, "/off", false, 1).await.expect("volume");
        let (other, other_session) = another_agent(&f.store, "bob").await;
        admin.add_volume_monitor(other.id, "/home", true, 90).await.expect("volume");
        let point = Datapoint {
            collected_at: None,
            memory: Some(MemoryUsage { used: 99, total: 100 }),
            volumes: vec![
                VolumeUsage { volume: "/home".into(), used: 95, total: 100 },
                VolumeUsage { volume: "/data".into(), used: 10, total: 100 },
                VolumeUsage { volume: "/off".into(), used: 99, total: 100 },
            ],
        };
        tokio::time::sleep(Duration::from_millis(2)).await;
        let t0 = now_micros();
        let before = f.store.queries().snapshot();
        push_resources_monitoring_usage(&f.api, &f.session, push(vec![point; 10])).await.expect("push");
        assert_eq!(f.store.batcher_stats().monitors.enqueued, 2, "one state per enabled volume");
        f.store.flush().await;
        let d = since(&f, &before);
        assert_eq!(d.get(MEMORY_WRITE), 0, "disabled");
        assert_eq!(d.get(VOLUME_WRITE), 1, "both volumes in one statement");
        let v = f.session.scope.volume_monitors().await.expect("read");
        let got: Vec<(&str, &str)> = v.iter().map(|v| (v.path.as_str(), v.state.as_str())).collect();
        assert_eq!(got, vec![("/data", "OK"), ("/home", "NOK"), ("/off", "OK")]);
        let updated = |path: &str| v.iter().find(|v| v.path == path).expect("monitor").updated_at;
        assert!(updated("/off") < t0 && updated("/home") >= t0 && updated("/data") >= t0);
        assert_eq!(f.session.scope.memory_monitor().await.expect("read").expect("row").state, "OK");
        // The other agent's monitor on the same path is untouched.
        let theirs = other_session.scope.volume_monitors().await.expect("read");
        assert_eq!((theirs[0].state.as_str(), theirs[0].debounced_until), ("OK", 0));
    }
}
