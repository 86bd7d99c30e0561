//! GetResourcesMonitoringConfiguration and PushResourcesMonitoringUsage (Coder's `resources_monitoring.go` and
//! `resourcesmonitor`): memory and disk usage against the thresholds the template set, with OK/NOK state and a
//! debounce on alerts.
//!
//! Differences from Coder, and why:
//! * Coder loads the monitor rows once per connection and keeps them in the connection; the session here has no
//!   slot for them, so each call reads them (2 small keyed reads). The state written on each push is then always
//!   the stored one, which also makes concurrent pushes from two connections of one agent harmless.
//! * Coder then enqueues "workspace out of memory / out of disk" notifications. This server has no notification
//!   queue yet: the transition is computed, the debounce is stored exactly as Coder stores it, and the alert is
//!   logged (`tracing::warn!`), so a Go replica's or a later notifier's debounce stays consistent.
//! * A push with no datapoints keeps the old state (Coder's rule would call an empty window NOK, since
//!   "0 consecutive NOKs ≥ 50 % of 0"); a datapoint with `total <= 0` is UNKNOWN rather than Go's float quirk.

use std::time::Duration;

use agentwire_store::{now_micros, UnixMicros};

use super::{pb, AgentApi, RpcError};
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

const STATE_OK: &str = "OK";
const STATE_NOK: &str = "NOK";

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
    let memory = session.scope.memory_monitor().await.map_err(RpcError::store("fetch memory resource monitor"))?;
    let volumes = session.scope.volume_monitors().await.map_err(RpcError::store("fetch volume resource monitors"))?;
    Ok(pb::GetResourcesMonitoringConfigurationResponse {
        config: Some(config::Config {
            num_datapoints: api.config.resources_monitoring_num_datapoints,
            collection_interval_seconds: i32::try_from(api.config.resources_monitoring_collection_interval.as_secs())
                .unwrap_or(i32::MAX),
        }),
        memory: memory.map(|m| config::Memory { enabled: m.enabled }),
        volumes: volumes.into_iter().map(|v| config::Volume { enabled: v.enabled, path: v.path }).collect(),
    })
}

pub(super) async fn push_resources_monitoring_usage(
    api: &AgentApi,
    session: &Session,
    request: pb::PushResourcesMonitoringUsageRequest,
) -> Result<pb::PushResourcesMonitoringUsageResponse, RpcError> {
    let now = now_micros();
    let debounce = i64::try_from(api.config.resources_monitoring_debounce.as_micros()).unwrap_or(i64::MAX);
    let points = &request.datapoints;
    // Coder runs both and joins their errors; the first failure is enough to fail the call here.
    if let Some(m) = session.scope.memory_monitor().await.map_err(RpcError::store("monitor memory"))? {
        if m.enabled {
            let samples: Vec<Sample> = points
                .iter()
                .map(|p| p.memory.map_or(Sample::Unknown, |u| classify(u.used, u.total, m.threshold)))
                .collect();
            let step = step(&m.state, m.debounced_until, &samples, now, debounce);
            session
                .scope
                .update_memory_monitor(step.state, now, step.debounced_until)
                .await
                .map_err(RpcError::store("monitor memory"))?;
            if step.alert {
                tracing::warn!(agent_id = %session.agent_id(), workspace_id = %session.agent().workspace_id,
                    threshold = m.threshold, "workspace out of memory");
            }
        }
    }
    let volumes = session.scope.volume_monitors().await.map_err(RpcError::store("monitor volume"))?;
    for v in volumes.iter().filter(|v| v.enabled) {
        let samples: Vec<Sample> = points.iter().map(|p| volume_sample(p, &v.path, v.threshold)).collect();
        let step = step(&v.state, v.debounced_until, &samples, now, debounce);
        session
            .scope
            .update_volume_monitor(&v.path, step.state, now, step.debounced_until)
            .await
            .map_err(RpcError::store("monitor volume"))?;
        if step.alert {
            tracing::warn!(agent_id = %session.agent_id(), workspace_id = %session.agent().workspace_id,
                path = %v.path, threshold = v.threshold, "workspace out of disk");
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

struct Step {
    state: &'static str,
    debounced_until: UnixMicros,
    alert: bool,
}

/// One monitor's next state and debounce, given the stored ones and the window's samples.
fn step(old: &str, debounced_until: UnixMicros, samples: &[Sample], now: UnixMicros, debounce: i64) -> Step {
    let old_state = if old == STATE_NOK { STATE_NOK } else { STATE_OK };
    let state = next_state(old_state, samples);
    // Alert only on an OK → NOK transition past the debounce, which then restarts.
    let alert = now > debounced_until && old_state == STATE_OK && state == STATE_NOK;
    let debounced_until = if alert { now.saturating_add(debounce) } else { debounced_until };
    Step { state, debounced_until, alert }
}

/// Coder's `NextState`: NOK on a long enough NOK run or enough NOKs overall; OK when every sample is OK; otherwise
/// unchanged. The shares are Coder's integer `percent * total / 100`.
fn next_state(old: &'static str, samples: &[Sample]) -> &'static str {
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
        STATE_NOK
    } else if samples.iter().all(|s| *s == Sample::Ok) {
        STATE_OK
    } else {
        old
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{another_agent, fixture};
    use super::*;
    use pb::push_resources_monitoring_usage_request::datapoint::{MemoryUsage, VolumeUsage};

    fn mem(used: i64) -> Datapoint {
        Datapoint { collected_at: None, memory: Some(MemoryUsage { used, total: 100 }), volumes: vec![] }
    }

    fn push(points: Vec<Datapoint>) -> pb::PushResourcesMonitoringUsageRequest {
        pb::PushResourcesMonitoringUsageRequest { datapoints: points }
    }

    #[test]
    fn next_state_rules() {
        use Sample::{Nok as N, Ok as O, Unknown as U};
        // 10 samples: 5 consecutive NOKs (50 %) → NOK; 2 scattered NOKs (20 %) → NOK; 1 NOK → keep.
        assert_eq!(next_state(STATE_OK, &[O, O, O, N, N, N, N, N, O, O]), STATE_NOK);
        assert_eq!(next_state(STATE_OK, &[N, O, O, O, O, N, O, O, O, O]), STATE_NOK);
        assert_eq!(next_state(STATE_NOK, &[N, O, O, O, O, O, O, O, O, O]), STATE_NOK);
        assert_eq!(next_state(STATE_OK, &[N, O, O, O, O, O, O, O, O, O]), STATE_OK);
        // All OK → OK; an unknown sample keeps the old state.
        assert_eq!(next_state(STATE_NOK, &[O; 10]), STATE_OK);
        assert_eq!(next_state(STATE_NOK, &[O, O, O, O, U, O, O, O, O, O]), STATE_NOK);
        assert_eq!(next_state(STATE_NOK, &[]), STATE_NOK);
        assert_eq!(classify(79, 100, 80), Sample::Ok);
        assert_eq!(classify(80, 100, 80), Sample::Nok);
        assert_eq!(classify(5, 0, 80), Sample::Unknown);
    }

    #[tokio::test]
    async fn configuration_lists_this_agents_monitors() {
        let f = fixture().await;
        let resp = get_resources_monitoring_configuration(&f.api, &f.session, Default::default()).await.expect("get");
        assert_eq!(resp.config, Some(config::Config { num_datapoints: 20, collection_interval_seconds: 10 }));
        assert_eq!((resp.memory, resp.volumes.len()), (None, 0));

        let admin = f.store.admin();
        admin.add_memory_monitor(f.agent.id, false, 80).await.expect("memory");
        admin.add_volume_monitor(f.agent.id, "/home", true, 90).await.expect("volume");
        let (other, _) = another_agent(&f.store, "bob").await;
        admin.add_volume_monitor(other.id, "/theirs", true, 90).await.expect("volume");
        let before = f.store.queries().snapshot();
        let resp = get_resources_monitoring_configuration(&f.api, &f.session, Default::default()).await.expect("get");
        assert_eq!(f.store.queries().snapshot().since(&before).total(), 2);
        assert_eq!(resp.memory, Some(config::Memory { enabled: false }));
        assert_eq!(resp.volumes, vec![config::Volume { enabled: true, path: "/home".into() }]);
    }

    #[tokio::test]
    async fn memory_goes_nok_with_debounce_then_back_ok() {
        let f = fixture().await;
        f.store.admin().add_memory_monitor(f.agent.id, true, 80).await.expect("memory");
        let high: Vec<Datapoint> = (0..10).map(|i| mem(if i < 5 { 50 } else { 95 })).collect();
        let before = f.store.queries().snapshot();
        let t0 = now_micros();
        push_resources_monitoring_usage(&f.api, &f.session, push(high.clone())).await.expect("push");
        let d = f.store.queries().snapshot().since(&before);
        // Two monitor reads and one update: one write for one enabled monitor.
        assert_eq!(d.total(), 3, "{d:?}");
        assert_eq!(d.get("UpdateMemoryResourceMonitor"), 1);
        let m = f.session.scope.memory_monitor().await.expect("read").expect("row");
        assert_eq!(m.state, "NOK");
        let debounce = DEFAULT_RESOURCES_MONITORING_DEBOUNCE.as_micros() as i64;
        assert!(m.debounced_until >= t0 + debounce && m.updated_at >= t0, "{m:?}");
        let first_debounce = m.debounced_until;

        // Back to all OK: OK, debounce kept. Then NOK again inside the debounce: state moves, debounce does not.
        push_resources_monitoring_usage(&f.api, &f.session, push(vec![mem(10); 10])).await.expect("push");
        let m = f.session.scope.memory_monitor().await.expect("read").expect("row");
        assert_eq!((m.state.as_str(), m.debounced_until), ("OK", first_debounce));
        push_resources_monitoring_usage(&f.api, &f.session, push(high)).await.expect("push");
        let m = f.session.scope.memory_monitor().await.expect("read").expect("row");
        assert_eq!((m.state.as_str(), m.debounced_until), ("NOK", first_debounce));

        // Absent memory readings are unknown: the state stays.
        let blank = Datapoint { collected_at: None, memory: None, volumes: vec![] };
        push_resources_monitoring_usage(&f.api, &f.session, push(vec![blank; 10])).await.expect("push");
        assert_eq!(f.session.scope.memory_monitor().await.expect("read").expect("row").state, "NOK");
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
        let d = f.store.queries().snapshot().since(&before);
        assert_eq!(d.get("UpdateMemoryResourceMonitor"), 0, "disabled");
        assert_eq!(d.get("UpdateVolumeResourceMonitor"), 2, "one per enabled volume");
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

    #[tokio::test]
    async fn no_monitors_means_no_writes() {
        let f = fixture().await;
        let before = f.store.queries().snapshot();
        push_resources_monitoring_usage(&f.api, &f.session, push(vec![mem(99); 10])).await.expect("push");
        let d = f.store.queries().snapshot().since(&before);
        assert_eq!((d.total(), d.begins), (2, 0), "{d:?}");
    }
}
