//! The refresh loops on paused time, against a scripted source.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::*;
use agentwire_store::aggregates::ActivityDay;

const DAY: i64 = 86_400_000_000;
/// 2024-01-02T00:00:00Z.
const WALL: i64 = 19_724 * DAY;

/// A source whose answers the test sets, recording when it was asked; `fail` makes the next reads fail.
#[derive(Default)]
struct Scripted {
    rx_bytes: AtomicI64,
    users: Mutex<Vec<Uuid>>,
    fail: AtomicUsize,
    deployment_reads: Mutex<Vec<tokio::time::Instant>>,
    template_reads: AtomicUsize,
}

fn failure() -> StoreError {
    StoreError::Invalid("scripted failure".into())
}

impl Source for Arc<Scripted> {
    async fn template_inputs(&self, _: UnixMicros, _: i64, _: bool) -> Result<TemplateInputs, StoreError> {
        self.template_reads.fetch_add(1, Ordering::SeqCst);
        let template = Uuid::from_u128(7);
        let activity = self
            .users
            .lock()
            .unwrap()
            .iter()
            .map(|u| ActivityDay {
                template_id: template,
                user_id: *u,
                day: 19_723,
                first_at: WALL - 1,
                last_at: WALL - 1,
            })
            .collect();
        Ok(TemplateInputs { templates: vec![template], activity: Activity::Rows(activity), builds: Vec::new() })
    }

    async fn deployment_inputs(&self, _: UnixMicros, _: UnixMicros) -> Result<DeploymentInputs, StoreError> {
        self.deployment_reads.lock().unwrap().push(tokio::time::Instant::now());
        if self.fail.load(Ordering::SeqCst) > 0 {
            self.fail.fetch_sub(1, Ordering::SeqCst);
            return Err(failure());
        }
        let agents = AgentStatsWindow { rx_bytes: self.rx_bytes.load(Ordering::SeqCst), ..Default::default() };
        Ok(DeploymentInputs { agents, workspaces: WorkspaceStateCounts { running: 3, ..Default::default() } })
    }
}

fn config() -> MetricsCacheConfig {
    MetricsCacheConfig {
        template_interval: Duration::from_secs(3600),
        deployment_stats_interval: Duration::from_secs(60),
        clock: Clock::tokio_at(WALL),
        ..MetricsCacheConfig::default()
    }
}

/// Lets the spawned loops run until they wait on a timer again (no time passes: nothing else is scheduled).
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn nothing_before_the_first_refresh_then_values_then_the_next_after_one_interval() {
    let source = Arc::new(Scripted::default());
    source.rx_bytes.store(10, Ordering::SeqCst);
    source.users.lock().unwrap().extend([Uuid::from_u128(1), Uuid::from_u128(2)]);
    let cache = MetricsCache::new(config());
    assert!(cache.deployment_stats().is_none());
    assert!(cache.deployment_daus(0).is_none());
    assert_eq!(cache.template_unique_users(Uuid::from_u128(7)), None);
    assert_eq!(cache.template_build_time_stats(Uuid::from_u128(7)), BuildTimeStats::default());
    let mut text = String::new();
    cache.render_prometheus(&mut text);
    assert!(!text.contains("snapshot_age_seconds{"), "no age before a refresh: {text}");

    let cache = {
        drop(cache);
        MetricsCache::start(source.clone(), config())
    };
    settle().await;
    let stats = cache.deployment_stats().expect("the first refresh runs at once");
    assert_eq!((stats.rx_bytes, stats.workspaces.running), (10, 3));
    assert_eq!(stats.collected_at, WALL);
    assert_eq!(stats.aggregated_from, WALL - 15 * 60 * 1_000_000);
    assert_eq!(stats.next_update_at, WALL + 60 * 1_000_000);
    assert_eq!((stats.latency_p50_ms, stats.latency_p95_ms), (-1.0, -1.0));
    let daus = cache.deployment_daus(0).unwrap();
    assert_eq!(daus.entries, vec![DauEntry { day: 19_723, amount: 2 }]);
    assert_eq!(cache.deployment_daus(3).unwrap().tz_hour_offset, 3);
    assert_eq!(cache.template_unique_users(Uuid::from_u128(7)), Some(2));
    assert_eq!(cache.template_daus(Uuid::from_u128(7), 5).unwrap().tz_hour_offset, 0, "closest template offset");

    // Just before the interval: still the first value.
    source.rx_bytes.store(20, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(59)).await;
    settle().await;
    assert_eq!(cache.deployment_stats().unwrap().rx_bytes, 10);
    // One interval after the first: the next value.
    tokio::time::advance(Duration::from_secs(1)).await;
    settle().await;
    let stats = cache.deployment_stats().unwrap();
    assert_eq!(stats.rx_bytes, 20);
    assert_eq!(stats.collected_at, WALL + 60 * 1_000_000);
    assert_eq!(source.template_reads.load(Ordering::SeqCst), 1, "templates wait for their own interval");
    let mut text = String::new();
    cache.render_prometheus(&mut text);
    assert!(text.contains("agentwire_metrics_cache_snapshot_age_seconds{snapshot=\"deployment_stats\"} 0\n"), "{text}");
    assert!(text.contains("agentwire_metrics_cache_snapshot_age_seconds{snapshot=\"templates\"} 60\n"), "{text}");
    cache.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_query_is_retried_with_backoff_and_the_old_snapshot_stays() {
    let source = Arc::new(Scripted::default());
    source.rx_bytes.store(1, Ordering::SeqCst);
    let t0 = tokio::time::Instant::now();
    let cache = MetricsCache::start(source.clone(), config());
    settle().await;
    assert_eq!(cache.deployment_stats().unwrap().rx_bytes, 1);

    // The next round fails four times, then succeeds.
    source.fail.store(4, Ordering::SeqCst);
    source.rx_bytes.store(2, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(60)).await;
    settle().await;
    assert_eq!(cache.deployment_stats().unwrap().rx_bytes, 1, "a failed refresh keeps the previous snapshot");
    for step in [100, 200, 400, 800] {
        tokio::time::advance(Duration::from_millis(step)).await;
        settle().await;
    }
    assert_eq!(cache.deployment_stats().unwrap().rx_bytes, 2);
    let reads: Vec<u128> =
        source.deployment_reads.lock().unwrap().iter().map(|t| t.duration_since(t0).as_millis()).collect();
    assert_eq!(reads, [0, 60_000, 60_100, 60_300, 60_700, 61_500], "retries back off 100, 200, 400, 800 ms");
    assert_eq!(cache.refresh_stats(SNAPSHOT_DEPLOYMENT_STATS).unwrap().failures(), 4);
    let mut text = String::new();
    cache.render_prometheus(&mut text);
    assert!(text.contains("agentwire_metrics_cache_refresh_failures_total{snapshot=\"deployment_stats\"} 4\n"));

    // The back-off is capped, and a stop ends a loop that is waiting to retry.
    source.fail.store(usize::MAX, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(60)).await;
    settle().await;
    let before = source.deployment_reads.lock().unwrap().len();
    for _ in 0..15 {
        tokio::time::advance(Duration::from_secs(60)).await;
        settle().await;
    }
    let after = source.deployment_reads.lock().unwrap().clone();
    let gaps: Vec<u128> = after[before - 1..].windows(2).map(|w| w[1].duration_since(w[0]).as_millis()).collect();
    assert!(gaps.iter().all(|g| *g <= 60_000), "{gaps:?}");
    assert_eq!(gaps.last(), Some(&60_000), "{gaps:?}");
    tokio::time::timeout(Duration::from_secs(1), cache.stop()).await.expect("a clean stop");
}

#[tokio::test(start_paused = true)]
async fn stop_ends_the_loops_and_no_refresh_follows() {
    let source = Arc::new(Scripted::default());
    let cache = MetricsCache::start(source.clone(), config());
    settle().await;
    tokio::time::timeout(Duration::from_secs(1), cache.stop()).await.expect("a clean stop");
    let reads = source.deployment_reads.lock().unwrap().len();
    tokio::time::advance(Duration::from_secs(600)).await;
    settle().await;
    assert_eq!(source.deployment_reads.lock().unwrap().len(), reads);
    assert_eq!(source.template_reads.load(Ordering::SeqCst), 1);
    // The last snapshot stays readable after the stop.
    assert!(cache.deployment_stats().is_some());
}

#[test]
fn config_validation() {
    assert!(MetricsCacheConfig::default().validate().is_ok());
    let bad = MetricsCacheConfig { deployment_tz_offsets: vec![15], ..MetricsCacheConfig::default() };
    assert!(matches!(bad.validate(), Err(ConfigError::Offset(15))));
    let bad = MetricsCacheConfig { template_interval: Duration::ZERO, ..MetricsCacheConfig::default() };
    assert!(matches!(bad.validate(), Err(ConfigError::Zero("template_interval"))));
}

#[test]
fn dates_and_times() {
    assert_eq!(date_string(0), "1970-01-01");
    assert_eq!(date_string(19_724), "2024-01-02");
    assert_eq!(rfc3339(WALL + 1_500_000), "2024-01-02T00:00:01.5Z");
}
