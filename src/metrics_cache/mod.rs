//! The metrics snapshotter: Coder's `metricscache` (seed era), deployment-wide aggregates computed in the background
//! and served from immutable snapshots.
//!
//! Two refresh loops, as in the seed:
//!
//! * **templates** (every [`DEFAULT_TEMPLATE_INTERVAL`]): deployment DAUs for each configured timezone offset,
//!   template DAUs (offset 0), unique users per template, build time percentiles per template and transition;
//! * **deployment stats** (every [`DEFAULT_DEPLOYMENT_STATS_INTERVAL`]): workspaces by build state, and the last
//!   [`DEFAULT_STATS_WINDOW`] of agent stats (latency percentiles, bytes, sessions).
//!
//! Each loop refreshes at once, then on its interval; a failed refresh is retried with a back-off from
//! [`DEFAULT_BACKOFF_MIN`] doubling up to [`DEFAULT_BACKOFF_MAX`] until it succeeds or the cache stops. A refresh
//! builds a whole new snapshot and publishes it with one `ArcSwap` store: readers load a pointer, never lock, never
//! query, and never see half a refresh. Before the first success a snapshot is absent and the readers say so; they
//! never answer zeros they did not compute.
//!
//! Timers are `tokio::time`, and wall-clock time comes from a [`Clock`] that can follow tokio's clock, so tests pause
//! time and step through intervals and back-offs deterministically.

pub mod daus;
pub mod demo;
pub mod stats;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agentwire_store::aggregates::{AgentStatsWindow, BuildDuration, WorkspaceStateCounts};
use agentwire_store::{now_micros, Store, StoreError, UnixMicros};
use arc_swap::ArcSwapOption;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

pub use daus::{Activity, DauEntry, DauSeries};
pub use stats::{BuildTimeStats, DeploymentStats, TransitionStats};

/// Template aggregates refresh every hour (the seed's fallback for `Intervals.TemplateDAUs`).
pub const DEFAULT_TEMPLATE_INTERVAL: Duration = Duration::from_secs(3600);
/// Deployment stats refresh every minute (the seed's fallback for `Intervals.DeploymentStats`).
pub const DEFAULT_DEPLOYMENT_STATS_INTERVAL: Duration = Duration::from_secs(60);
/// First retry delay after a failed refresh (coder/retry's floor in the seed).
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest retry delay (coder/retry's ceiling in the seed).
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Agent stats of the last 15 minutes make the deployment stats.
pub const DEFAULT_STATS_WINDOW: Duration = Duration::from_secs(15 * 60);
/// A running build job without a heartbeat for this long is not counted as building (Coder's 30 s).
pub const DEFAULT_BUILD_HEARTBEAT_WINDOW: Duration = Duration::from_secs(30);
/// Build times only count jobs started in the last 30 days (Coder fixed the seed's 30 months in 2024-09).
pub const DEFAULT_BUILD_TIME_WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);
/// Build times use each template's 100 most recent successful builds (Coder, 2025-09).
pub const DEFAULT_BUILD_TIME_SAMPLE: i64 = 100;
/// The seed's `deploymentTimezoneOffsets`: UTC first, then −12…+12.
pub const DEFAULT_DEPLOYMENT_TZ_OFFSETS: [i32; 25] =
    [0, -12, -11, -10, -9, -8, -7, -6, -5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
/// The seed's `templateTimezoneOffsets`: UTC only (each offset costs a pass per template).
pub const DEFAULT_TEMPLATE_TZ_OFFSETS: [i32; 1] = [0];
/// Offsets outside ±this many hours are refused at configuration time (no timezone is further from UTC).
pub const MAX_TZ_OFFSET_HOURS: i32 = 14;

/// Where wall-clock time comes from.
#[derive(Debug, Clone)]
pub enum Clock {
    /// The system clock.
    System,
    /// `wall_at_start` plus the time tokio's clock has advanced since `start`: under `tokio::time::pause()` it only
    /// moves when the test advances it.
    Tokio { wall_at_start: UnixMicros, start: tokio::time::Instant },
}

impl Clock {
    /// A clock following tokio's, starting at `wall` (unix µs).
    pub fn tokio_at(wall: UnixMicros) -> Self {
        Clock::Tokio { wall_at_start: wall, start: tokio::time::Instant::now() }
    }

    pub fn now_micros(&self) -> UnixMicros {
        match self {
            Clock::System => now_micros(),
            Clock::Tokio { wall_at_start, start } => {
                wall_at_start.saturating_add(i64::try_from(start.elapsed().as_micros()).unwrap_or(i64::MAX))
            }
        }
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Everything the snapshotter can be told.
#[derive(Debug, Clone)]
pub struct MetricsCacheConfig {
    /// See [`DEFAULT_TEMPLATE_INTERVAL`].
    pub template_interval: Duration,
    /// See [`DEFAULT_DEPLOYMENT_STATS_INTERVAL`].
    pub deployment_stats_interval: Duration,
    /// See [`DEFAULT_BACKOFF_MIN`].
    pub backoff_min: Duration,
    /// See [`DEFAULT_BACKOFF_MAX`].
    pub backoff_max: Duration,
    /// See [`DEFAULT_STATS_WINDOW`].
    pub stats_window: Duration,
    /// See [`DEFAULT_BUILD_HEARTBEAT_WINDOW`].
    pub build_heartbeat_window: Duration,
    /// See [`DEFAULT_BUILD_TIME_WINDOW`].
    pub build_time_window: Duration,
    /// See [`DEFAULT_BUILD_TIME_SAMPLE`].
    pub build_time_sample: i64,
    /// See [`DEFAULT_DEPLOYMENT_TZ_OFFSETS`].
    pub deployment_tz_offsets: Vec<i32>,
    /// See [`DEFAULT_TEMPLATE_TZ_OFFSETS`].
    pub template_tz_offsets: Vec<i32>,
    pub clock: Clock,
}

impl Default for MetricsCacheConfig {
    fn default() -> Self {
        MetricsCacheConfig {
            template_interval: DEFAULT_TEMPLATE_INTERVAL,
            deployment_stats_interval: DEFAULT_DEPLOYMENT_STATS_INTERVAL,
            backoff_min: DEFAULT_BACKOFF_MIN,
            backoff_max: DEFAULT_BACKOFF_MAX,
            stats_window: DEFAULT_STATS_WINDOW,
            build_heartbeat_window: DEFAULT_BUILD_HEARTBEAT_WINDOW,
            build_time_window: DEFAULT_BUILD_TIME_WINDOW,
            build_time_sample: DEFAULT_BUILD_TIME_SAMPLE,
            deployment_tz_offsets: DEFAULT_DEPLOYMENT_TZ_OFFSETS.to_vec(),
            template_tz_offsets: DEFAULT_TEMPLATE_TZ_OFFSETS.to_vec(),
            clock: Clock::System,
        }
    }
}

/// A configuration the snapshotter refuses.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    #[error("timezone offset {0} is outside ±{MAX_TZ_OFFSET_HOURS} hours")]
    Offset(i32),
    #[error("backoff_min must not exceed backoff_max")]
    Backoff,
}

impl MetricsCacheConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, d) in [
            ("template_interval", self.template_interval),
            ("deployment_stats_interval", self.deployment_stats_interval),
            ("backoff_min", self.backoff_min),
            ("backoff_max", self.backoff_max),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.build_time_sample <= 0 {
            return Err(ConfigError::Zero("build_time_sample"));
        }
        if self.backoff_min > self.backoff_max {
            return Err(ConfigError::Backoff);
        }
        if let Some(bad) =
            self.deployment_tz_offsets.iter().chain(&self.template_tz_offsets).find(|o| o.abs() > MAX_TZ_OFFSET_HOURS)
        {
            return Err(ConfigError::Offset(*bad));
        }
        Ok(())
    }
}

/// What the templates refresh reads.
#[derive(Debug, Clone, Default)]
pub struct TemplateInputs {
    pub templates: Vec<Uuid>,
    pub activity: Activity,
    pub builds: Vec<BuildDuration>,
}

/// What the deployment stats refresh reads.
#[derive(Debug, Clone, Default)]
pub struct DeploymentInputs {
    pub agents: AgentStatsWindow,
    pub workspaces: WorkspaceStateCounts,
}

/// Where the aggregates come from: the store, or a scripted source in tests.
pub trait Source: Send + Sync + 'static {
    fn template_inputs(
        &self,
        builds_started_after: UnixMicros,
        builds_per_template: i64,
        activity_rows_needed: bool,
    ) -> impl Future<Output = Result<TemplateInputs, StoreError>> + Send;
    fn deployment_inputs(
        &self,
        stats_since: UnixMicros,
        heartbeat_after: UnixMicros,
    ) -> impl Future<Output = Result<DeploymentInputs, StoreError>> + Send;
}

impl Source for Store {
    async fn template_inputs(
        &self,
        started_after: UnixMicros,
        per_template: i64,
        activity_rows_needed: bool,
    ) -> Result<TemplateInputs, StoreError> {
        // Independent reads on pooled connections: the refresh takes as long as the slowest, not the sum. The activity
        // is folded by the database unless template DAUs at other offsets need every row: ~20k rows instead of ~90k
        // on 1M stats rows, and shipping rows, not scanning them, is what a read costs here.
        let activity = async {
            if activity_rows_needed {
                return Ok(Activity::Rows(self.user_activity_days().await?));
            }
            let (user_days, template_days, unique_users) = tokio::try_join!(
                self.user_activity_by_day(),
                self.template_users_by_day(),
                self.template_unique_users(),
            )?;
            Ok::<_, StoreError>(Activity::Folded { user_days, template_days, unique_users })
        };
        let (templates, activity, builds) = tokio::try_join!(
            self.active_template_ids(),
            activity,
            self.recent_build_durations(started_after, per_template),
        )?;
        Ok(TemplateInputs { templates, activity, builds })
    }

    async fn deployment_inputs(
        &self,
        since: UnixMicros,
        heartbeat_after: UnixMicros,
    ) -> Result<DeploymentInputs, StoreError> {
        let (agents, workspaces) =
            tokio::try_join!(self.agent_stats_window(since), self.workspace_state_counts(heartbeat_after))?;
        Ok(DeploymentInputs { agents, workspaces })
    }
}

/// The templates snapshot.
#[derive(Debug, Default)]
pub struct TemplateSnapshot {
    /// By offset: every configured deployment offset.
    pub deployment_daus: BTreeMap<i32, Arc<DauSeries>>,
    /// By offset, then template.
    pub template_daus: BTreeMap<i32, HashMap<Uuid, Arc<DauSeries>>>,
    pub unique_users: HashMap<Uuid, i64>,
    pub build_times: HashMap<Uuid, BuildTimeStats>,
    pub refreshed_at: UnixMicros,
}

impl TemplateSnapshot {
    /// The snapshot `inputs` make.
    pub fn compute(inputs: TemplateInputs, config: &MetricsCacheConfig, now: UnixMicros) -> Self {
        let daus = daus::aggregate(
            inputs.activity,
            &inputs.templates,
            &config.deployment_tz_offsets,
            &config.template_tz_offsets,
        );
        TemplateSnapshot {
            deployment_daus: daus.deployment,
            template_daus: daus.templates,
            unique_users: daus.unique_users,
            build_times: stats::build_times(&inputs.templates, inputs.builds),
            refreshed_at: now,
        }
    }
}

/// Refresh bookkeeping of one snapshot, for Prometheus.
#[derive(Debug, Default)]
pub struct RefreshStats {
    /// Unix µs of the last successful refresh; 0 before the first.
    last_success: AtomicI64,
    /// Duration of the last refresh attempt, µs.
    last_duration: AtomicU64,
    failures: AtomicU64,
}

impl RefreshStats {
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

/// The snapshotter. Cheap to read from any thread; see the module doc.
#[derive(Debug)]
pub struct MetricsCache {
    config: MetricsCacheConfig,
    templates: ArcSwapOption<TemplateSnapshot>,
    deployment: ArcSwapOption<DeploymentStats>,
    template_refresh: RefreshStats,
    deployment_refresh: RefreshStats,
    stop: CancellationToken,
    tasks: TaskTracker,
}

/// Names of the snapshots, as the Prometheus `snapshot` label.
pub const SNAPSHOT_TEMPLATES: &str = "templates";
pub const SNAPSHOT_DEPLOYMENT_STATS: &str = "deployment_stats";

impl MetricsCache {
    /// A cache with no refresh loops (snapshots set by [`MetricsCache::refresh_templates`] and
    /// [`MetricsCache::refresh_deployment_stats`]): benchmarks and tests.
    pub fn new(config: MetricsCacheConfig) -> Arc<Self> {
        Arc::new(MetricsCache {
            config,
            templates: ArcSwapOption::empty(),
            deployment: ArcSwapOption::empty(),
            template_refresh: RefreshStats::default(),
            deployment_refresh: RefreshStats::default(),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        })
    }

    /// A cache refreshed from `source` by two background tasks until [`MetricsCache::stop`]. Must run inside a
    /// tokio runtime.
    pub fn start<S: Source>(source: S, config: MetricsCacheConfig) -> Arc<Self> {
        let cache = Self::new(config);
        let source = Arc::new(source);
        let (c, s) = (cache.clone(), source.clone());
        cache.tasks.spawn(async move {
            let every = c.config.template_interval;
            c.run(SNAPSHOT_TEMPLATES, every, &c.template_refresh, || c.refresh_templates(&*s)).await
        });
        let c = cache.clone();
        cache.tasks.spawn(async move {
            let every = c.config.deployment_stats_interval;
            c.run(SNAPSHOT_DEPLOYMENT_STATS, every, &c.deployment_refresh, || c.refresh_deployment_stats(&*source))
                .await
        });
        cache.tasks.close();
        cache
    }

    /// Stops the loops (a refresh in flight is abandoned, its query dropped) and waits for them to end.
    pub async fn stop(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    pub fn config(&self) -> &MetricsCacheConfig {
        &self.config
    }

    /// The seed's `run`: refresh now, then every `interval`; within one round, retry failures with back-off.
    async fn run<F, Fut>(&self, name: &'static str, interval: Duration, stats: &RefreshStats, refresh: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(), StoreError>>,
    {
        let mut ticker = tokio::time::interval(interval);
        // A round that overran (long retries) is followed by one prompt refresh, not a burst of missed ones.
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let mut backoff = self.config.backoff_min;
            loop {
                let started = tokio::time::Instant::now();
                let outcome = tokio::select! {
                    _ = self.stop.cancelled() => return,
                    outcome = refresh() => outcome,
                };
                let took = started.elapsed();
                stats.last_duration.store(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
                match outcome {
                    Ok(()) => {
                        stats.last_success.store(self.config.clock.now_micros(), Ordering::Relaxed);
                        tracing::debug!(snapshot = name, ?took, ?interval, "metrics refreshed");
                        break;
                    }
                    Err(err) => {
                        stats.failures.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(snapshot = name, error = %err, retry_in = ?backoff, "metrics refresh failed");
                        tokio::select! {
                            _ = self.stop.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(self.config.backoff_max);
                    }
                }
            }
        }
    }

    /// One templates refresh: read, compute, publish.
    pub async fn refresh_templates<S: Source>(&self, source: &S) -> Result<(), StoreError> {
        let now = self.config.clock.now_micros();
        let since = now.saturating_sub(micros(self.config.build_time_window));
        let rows_needed = Activity::rows_needed(&self.config.template_tz_offsets);
        let inputs = source.template_inputs(since, self.config.build_time_sample, rows_needed).await?;
        let snapshot = TemplateSnapshot::compute(inputs, &self.config, now);
        self.templates.store(Some(Arc::new(snapshot)));
        Ok(())
    }

    /// One deployment stats refresh: read, compute, publish.
    pub async fn refresh_deployment_stats<S: Source>(&self, source: &S) -> Result<(), StoreError> {
        let now = self.config.clock.now_micros();
        let from = now.saturating_sub(micros(self.config.stats_window));
        let heartbeat_after = now.saturating_sub(micros(self.config.build_heartbeat_window));
        let inputs = source.deployment_inputs(from, heartbeat_after).await?;
        // Collected when the reads are done, as the seed stamps it after its queries.
        let collected = self.config.clock.now_micros();
        let next = collected.saturating_add(micros(self.config.deployment_stats_interval));
        let stats = DeploymentStats::new(from, collected, next, &inputs.agents, inputs.workspaces);
        self.deployment.store(Some(Arc::new(stats)));
        Ok(())
    }

    // Readers: one pointer load each, no lock, no query.

    /// The whole templates snapshot, `None` before the first refresh.
    pub fn templates_snapshot(&self) -> Option<Arc<TemplateSnapshot>> {
        self.templates.load_full()
    }

    /// The deployment stats, `None` before the first refresh (coderd's "still processing").
    pub fn deployment_stats(&self) -> Option<Arc<DeploymentStats>> {
        self.deployment.load_full()
    }

    /// Deployment DAUs for the cached offset closest to `offset`, `None` before the first refresh.
    pub fn deployment_daus(&self, offset: i32) -> Option<Arc<DauSeries>> {
        let guard = self.templates.load();
        let snapshot = guard.as_ref()?;
        daus::closest(&snapshot.deployment_daus, offset).map(|(_, s)| s.clone())
    }

    /// A template's DAUs for the cached offset closest to `offset`; `None` before the first refresh or for a
    /// template the last refresh did not see.
    pub fn template_daus(&self, template_id: Uuid, offset: i32) -> Option<Arc<DauSeries>> {
        let guard = self.templates.load();
        let snapshot = guard.as_ref()?;
        daus::closest(&snapshot.template_daus, offset).and_then(|(_, m)| m.get(&template_id).cloned())
    }

    /// A template's unique users; `None` when unknown.
    pub fn template_unique_users(&self, template_id: Uuid) -> Option<i64> {
        let guard = self.templates.load();
        guard.as_ref()?.unique_users.get(&template_id).copied()
    }

    /// A template's build times; every value unknown before the first refresh or without builds.
    pub fn template_build_time_stats(&self, template_id: Uuid) -> BuildTimeStats {
        let guard = self.templates.load();
        guard.as_ref().and_then(|s| s.build_times.get(&template_id).copied()).unwrap_or_default()
    }

    pub fn refresh_stats(&self, snapshot: &str) -> Option<&RefreshStats> {
        match snapshot {
            SNAPSHOT_TEMPLATES => Some(&self.template_refresh),
            SNAPSHOT_DEPLOYMENT_STATS => Some(&self.deployment_refresh),
            _ => None,
        }
    }

    /// The Prometheus series: snapshot age (absent before the first refresh), last refresh duration, failures.
    pub fn render_prometheus(&self, out: &mut String) {
        let all = [(SNAPSHOT_TEMPLATES, &self.template_refresh), (SNAPSHOT_DEPLOYMENT_STATS, &self.deployment_refresh)];
        let now = self.config.clock.now_micros();
        let _ =
            writeln!(out, "# HELP agentwire_metrics_cache_snapshot_age_seconds Time since the snapshot was refreshed.");
        let _ = writeln!(out, "# TYPE agentwire_metrics_cache_snapshot_age_seconds gauge");
        for (name, s) in all {
            let at = s.last_success.load(Ordering::Relaxed);
            if at > 0 {
                let age = now.saturating_sub(at).max(0) as f64 / 1e6;
                let _ = writeln!(out, "agentwire_metrics_cache_snapshot_age_seconds{{snapshot=\"{name}\"}} {age}");
            }
        }
        let _ = writeln!(out, "# HELP agentwire_metrics_cache_refresh_duration_seconds Duration of the last refresh.");
        let _ = writeln!(out, "# TYPE agentwire_metrics_cache_refresh_duration_seconds gauge");
        for (name, s) in all {
            let d = s.last_duration.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "agentwire_metrics_cache_refresh_duration_seconds{{snapshot=\"{name}\"}} {d}");
        }
        let _ = writeln!(out, "# HELP agentwire_metrics_cache_refresh_failures_total Failed refresh attempts.");
        let _ = writeln!(out, "# TYPE agentwire_metrics_cache_refresh_failures_total counter");
        for (name, s) in all {
            let _ =
                writeln!(out, "agentwire_metrics_cache_refresh_failures_total{{snapshot=\"{name}\"}} {}", s.failures());
        }
    }
}

/// `YYYY-MM-DD` of a day number (days since 1970-01-01).
pub fn date_string(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// RFC 3339 in UTC with Go's trimmed fraction, as Go marshals a `time.Time`.
pub fn rfc3339(micros: UnixMicros) -> String {
    let (secs, frac) = (micros.div_euclid(1_000_000), micros.rem_euclid(1_000_000));
    let (days, in_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let mut out = format!("{}T{:02}:{:02}:{:02}", date_string(days), in_day / 3600, in_day % 3600 / 60, in_day % 60);
    if frac != 0 {
        out.push('.');
        out.push_str(format!("{frac:06}").trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests;
