//! What one agent does on one session, by mode. Every call is bounded by the call timeout and the `--max-rpcs`
//! budget, and stops being issued when the run stops; calls already in flight finish (the server counted them,
//! so the report must too).

use std::collections::VecDeque;
use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use agentwire_transport::client::{CallError, TypedClientStream};
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant as TokioInstant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use agentwire_proto::agent::v2 as pb;
use agentwire_proto::tailnet::v2 as tpb;

use crate::config::Mode;
use crate::connect::{io_kind, Connection};
use crate::mix::{self, Call, Plan};
use crate::pace::Pacer;
use crate::shared::Shared;

/// Tailscale's service prefix `fd7a:115c:a1e0::/48`, under which Coder addresses an agent by its id.
const TAILSCALE_SERVICE_PREFIX: [u8; 6] = [0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0];

/// The agent's tailnet address, as Coder's `tailnet.TailscaleServicePrefix.AddrFromUUID` derives it: the prefix,
/// then the id's last ten bytes. The server refuses a node with any other address (the coordinate calls would fail).
fn agent_address(id: Uuid) -> std::net::Ipv6Addr {
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&TAILSCALE_SERVICE_PREFIX);
    bytes[6..].copy_from_slice(&id.as_bytes()[6..]);
    std::net::Ipv6Addr::from(bytes)
}

type DerpStream = TypedClientStream<tpb::StreamDerpMapsRequest, tpb::DerpMap>;
type CoordinateStream = TypedClientStream<tpb::CoordinateRequest, tpb::CoordinateResponse>;

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The run stopped and we closed the session.
    Stopped,
    /// The session ended under us: the agent reconnects.
    Dropped,
}

/// What an agent keeps across its sessions.
pub(crate) struct AgentState {
    pub index: usize,
    pub ever_connected: bool,
    /// Lifecycle, startup and logs are sent once per agent, not per session, as an agent does.
    started: bool,
    agent_id: Option<Uuid>,
    /// Metadata keys and their collection intervals, from the manifest.
    metadata: Vec<(String, Duration)>,
    log_source: Uuid,
    counter: u64,
}

impl AgentState {
    pub fn new(index: usize, already_started: bool) -> Self {
        AgentState {
            index,
            ever_connected: false,
            started: already_started,
            agent_id: None,
            metadata: Vec::new(),
            log_source: Uuid::new_v4(),
            counter: 0,
        }
    }

    fn learn(&mut self, manifest: &pb::Manifest, report_interval: Duration) {
        self.agent_id = Uuid::from_slice(&manifest.agent_id).ok();
        self.metadata = manifest
            .metadata
            .iter()
            .map(|d| {
                let interval =
                    d.interval.as_ref().map(metadata_interval).filter(|i| !i.is_zero()).unwrap_or(report_interval);
                (d.key.clone(), interval)
            })
            .collect();
    }
}

/// A metadata item's interval as Coder's agent reads it: coderd stores seconds and sends that number as a Go
/// duration, which the agent multiplies by a second (`agent/agent.go`, `time.Duration(md.Interval) * intervalUnit`).
fn metadata_interval(d: &prost_types::Duration) -> Duration {
    let count = (d.seconds.max(0) as u64).saturating_mul(1_000_000_000).saturating_add(d.nanos.max(0) as u64);
    Duration::from_secs(count)
}

fn proto_duration(d: &prost_types::Duration) -> Duration {
    Duration::new(d.seconds.max(0) as u64, d.nanos.clamp(0, 999_999_999) as u32)
}

fn now_ts() -> Option<prost_types::Timestamp> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Some(prost_types::Timestamp { seconds: now.as_secs() as i64, nanos: now.subsec_nanos() as i32 })
}

/// A short label for the report's error counts.
pub(crate) fn call_kind(err: &CallError) -> String {
    match err {
        CallError::Status(status) => format!("status_{}", status.code),
        CallError::Session(_) => "session_closed".into(),
        CallError::Io(err) => format!("io_{}", io_kind(err)),
        CallError::Protocol(_) => "protocol".into(),
        CallError::Send(_) => "send".into(),
        CallError::NoReply => "no_reply".into(),
        CallError::RemoteClosed => "remote_closed".into(),
        CallError::Decode { .. } => "decode".into(),
    }
}

fn stats_request(n: u64) -> pb::UpdateStatsRequest {
    let n = n as i64;
    pb::UpdateStatsRequest {
        stats: Some(pb::Stats {
            connections_by_proto: [("ssh".to_owned(), 1)].into_iter().collect(),
            connection_count: 1,
            connection_median_latency_ms: 12.5,
            rx_packets: 10 * n,
            rx_bytes: 1500 * n,
            tx_packets: 8 * n,
            tx_bytes: 1200 * n,
            session_count_ssh: 1,
            ..Default::default()
        }),
    }
}

fn metadata_request<'a>(keys: impl Iterator<Item = &'a str>, n: u64) -> pb::BatchUpdateMetadataRequest {
    pb::BatchUpdateMetadataRequest {
        metadata: keys
            .map(|key| pb::Metadata {
                key: key.to_owned(),
                result: Some(pb::workspace_agent_metadata::Result {
                    collected_at: now_ts(),
                    age: 0,
                    value: format!("{}", n % 100),
                    error: String::new(),
                }),
            })
            .collect(),
    }
}

/// One unary call of the saturating and fixed-rate modes: the run's call number `slot` and this worker's `n`th
/// (from 1). Returns its method and the call, whose reply is decoded (and dropped), as an agent would. A single RPC
/// of a kind earlier runs had keeps their payload, numbered by `n` as it was, so its figures still compare; the mix
/// sends the real agent's payloads.
fn unary(
    agent: &pb::AgentClient,
    plan: Plan,
    slot: u64,
    n: u64,
) -> (&'static str, impl Future<Output = Result<(), CallError>> + '_) {
    let (call, nth, earlier_payload) = match plan {
        Plan::One(call) => (call, n, true),
        Plan::Mix(order) => {
            let (call, before) = order.at(slot);
            (call, before, false)
        }
    };
    let fut = async move {
        match call {
            Call::UpdateStats if earlier_payload => agent.update_stats(&stats_request(nth)).await.map(drop),
            Call::UpdateStats => agent.update_stats(&mix::stats_request(nth)).await.map(drop),
            Call::BatchUpdateMetadata if earlier_payload => {
                agent.batch_update_metadata(&metadata_request(["cpu", "mem"].into_iter(), nth)).await.map(drop)
            }
            Call::BatchUpdateMetadata => agent.batch_update_metadata(&mix::metadata_request(nth)).await.map(drop),
            Call::PushResourcesMonitoringUsage => {
                agent.push_resources_monitoring_usage(&mix::resources_request(nth)).await.map(drop)
            }
            Call::GetAnnouncementBanners => {
                agent.get_announcement_banners(&pb::GetAnnouncementBannersRequest {}).await.map(drop)
            }
            Call::GetServiceBanner => agent.get_service_banner(&pb::GetServiceBannerRequest {}).await.map(drop),
            Call::GetManifest => agent.get_manifest(&pb::GetManifestRequest {}).await.map(drop),
        }
    };
    (call.method(), fut)
}

/// Runs `fut` as one counted call. Latency runs from `since` (the intended send time in the fixed-rate mode).
async fn call<T>(
    shared: &Shared,
    agent: usize,
    method: &'static str,
    since: Instant,
    fut: impl Future<Output = Result<T, CallError>>,
) -> Option<T> {
    let outcome = tokio::time::timeout(shared.config.call_timeout, fut).await;
    let recorder = &shared.recorder;
    match outcome {
        Ok(Ok(reply)) => {
            recorder.call(agent, method, Ok(since.elapsed()));
            Some(reply)
        }
        Ok(Err(err)) => {
            recorder.call(agent, method, Err(call_kind(&err)));
            None
        }
        Err(_) => {
            recorder.call(agent, method, Err("timeout".into()));
            None
        }
    }
}

/// Runs the mode's work on one session until the run stops or the session ends.
pub(crate) async fn run_session(shared: &Shared, state: &mut AgentState, connection: Connection) -> Outcome {
    let Connection { client, incoming } = connection;
    let ended = incoming.ended();
    tokio::pin!(ended);
    let outcome = {
        let work = workload(shared, state, &client);
        tokio::pin!(work);
        tokio::select! {
            _ = &mut ended => Outcome::Dropped,
            _ = &mut work => {
                // The work is over (run stopped, budget spent, or a call found the session gone): wait for which.
                tokio::select! {
                    biased;
                    _ = shared.stop.cancelled() => Outcome::Stopped,
                    _ = &mut ended => Outcome::Dropped,
                }
            }
        }
    };
    client.session().close();
    outcome
}

async fn workload(shared: &Shared, state: &mut AgentState, client: &agentwire_transport::client::Client) {
    let agent = pb::AgentClient::new(client.clone());
    let index = state.index;
    match shared.config.mode.clone() {
        Mode::Realistic => realistic(shared, state, client).await,
        Mode::Saturating { rpc, concurrency } => {
            let plan = Plan::of(rpc);
            let workers = (0..concurrency).map(|_| {
                let agent = &agent;
                async move {
                    let mut n = 0u64;
                    while !shared.stop.is_cancelled() && shared.budget.take() {
                        n += 1;
                        let (method, unary) = unary(agent, plan, shared.next_slot(), n);
                        call(shared, index, method, Instant::now(), unary).await;
                        if client.session().is_closed() {
                            break;
                        }
                    }
                }
            });
            futures::future::join_all(workers).await;
        }
        Mode::FixedRate { rpc, rate, max_in_flight } => {
            fixed_rate(shared, index, &agent, Plan::of(rpc), rate, max_in_flight).await;
        }
        Mode::Idle { hold_streams } => {
            if hold_streams {
                let tailnet = tpb::TailnetClient::new(client.clone());
                let (derp, coordinate) = open_streams(shared, state, &tailnet).await;
                hold_streams_until_stop(shared, derp, coordinate).await;
            } else {
                shared.stop.cancelled().await;
            }
        }
    }
}

/// Open loop: this agent's share of the total rate, sends due on a fixed schedule whatever the replies do; a call's
/// latency counts from when it was due, so a stalled server shows up as latency, not as fewer samples.
async fn fixed_rate(
    shared: &Shared,
    index: usize,
    agent: &pb::AgentClient,
    plan: Plan,
    rate: f64,
    max_in_flight: usize,
) {
    let period = Duration::from_secs_f64(shared.config.agents as f64 / rate);
    // A random phase so that the agents' sends interleave instead of firing together.
    let first = Instant::now() + period.mul_f64(fastrand::f64());
    let send = |n: u64, intended: Instant, late: Duration| {
        shared.recorder.send_lag(index, late);
        // Numbered when it leaves, so the run's calls follow the mix's order in the order they were sent.
        let (method, unary) = unary(agent, plan, shared.next_slot(), n);
        async move {
            let sent = Instant::now();
            if call(shared, index, method, intended, unary).await.is_some() {
                shared.recorder.service(index, sent.elapsed());
            }
        }
    };
    let admit = || shared.budget.take();
    schedule(first, period, max_in_flight, &shared.stop, admit, send).await;
}

/// The fixed-rate schedule: send `n` (from 1) is due at `first + (n - 1) × period` and leaves when its [`Pacer`] (a
/// timerfd) releases it, or later when `max_in_flight` calls are still out (the wait then counts as its lag). `send` gets the send's
/// number, its intended time and how late it left, and returns the call, which runs alongside the next ones. Ends
/// when `stop` fires or `admit` refuses a send, after the calls in flight are back.
pub(crate) async fn schedule<F, Fut>(
    first: Instant,
    period: Duration,
    max_in_flight: usize,
    stop: &CancellationToken,
    mut admit: impl FnMut() -> bool,
    mut send: F,
) where
    F: FnMut(u64, Instant, Duration) -> Fut,
    Fut: Future<Output = ()>,
{
    // The config refuses 0; a zero here would wait for a slot no call can free.
    let max_in_flight = max_in_flight.max(1);
    let mut pacer = Pacer::new();
    let mut due = first;
    let mut in_flight = FuturesUnordered::new();
    let mut n = 0u64;
    'run: loop {
        let tick = pacer.until(due);
        tokio::pin!(tick);
        let mut ticked = false;
        while !ticked || in_flight.len() >= max_in_flight {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break 'run,
                Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
                _ = &mut tick, if !ticked => ticked = true,
            }
        }
        if !admit() {
            break;
        }
        n += 1;
        // Never negative: the pacer releases a deadline only once it has passed.
        let late = Instant::now().saturating_duration_since(due);
        in_flight.push(send(n, due, late));
        due += period;
    }
    while in_flight.next().await.is_some() {}
}

async fn realistic(shared: &Shared, state: &mut AgentState, client: &agentwire_transport::client::Client) {
    let agent = pb::AgentClient::new(client.clone());
    let tailnet = tpb::TailnetClient::new(client.clone());
    let index = state.index;
    let report_every = shared.config.metadata_report_interval;
    macro_rules! counted {
        ($method:expr, $fut:expr) => {
            if shared.budget.take() {
                call(shared, index, $method, Instant::now(), $fut).await
            } else {
                None
            }
        };
    }

    // As an agent's API loops start: the manifest, the banners, the resources monitoring configuration, then (once
    // per agent) the lifecycle to ready with startup and logs in between. The agent's timers start on connect.
    let connected = TokioInstant::now();
    let manifest = counted!(pb::agent_methods::GET_MANIFEST, agent.get_manifest(&pb::GetManifestRequest {}));
    if let Some(manifest) = &manifest {
        state.learn(manifest, report_every);
    }
    counted!(
        pb::agent_methods::GET_ANNOUNCEMENT_BANNERS,
        agent.get_announcement_banners(&pb::GetAnnouncementBannersRequest {})
    );
    let monitoring = counted!(
        pb::agent_methods::GET_RESOURCES_MONITORING_CONFIGURATION,
        agent.get_resources_monitoring_configuration(&pb::GetResourcesMonitoringConfigurationRequest {})
    );
    // Without a configuration there is no monitor: the agent would end the connection and dial again, which a load
    // run would rather count than copy.
    let monitor = monitoring.as_ref().and_then(|config| {
        let plan = MonitorPlan::from_config(config);
        if plan.is_none() {
            shared.recorder.error(index, "resources_monitoring_config".into());
        }
        plan
    });
    if !state.started {
        state.started = true;
        let lifecycle = |s: pb::lifecycle::State| pb::UpdateLifecycleRequest {
            lifecycle: Some(pb::Lifecycle { state: s as i32, changed_at: now_ts() }),
        };
        counted!(
            pb::agent_methods::UPDATE_LIFECYCLE,
            agent.update_lifecycle(&lifecycle(pb::lifecycle::State::Starting))
        );
        let startup = pb::UpdateStartupRequest {
            startup: Some(pb::Startup {
                version: "v2.30.0".into(),
                expanded_directory: "/home/coder".into(),
                subsystems: Vec::new(),
            }),
        };
        counted!(pb::agent_methods::UPDATE_STARTUP, agent.update_startup(&startup));
        if shared.config.log_lines > 0 {
            let logs = pb::BatchCreateLogsRequest {
                log_source_id: state.log_source.as_bytes().to_vec().into(),
                logs: (0..shared.config.log_lines)
                    .map(|i| pb::Log {
                        created_at: now_ts(),
                        output: format!("startup script line {i}"),
                        level: pb::log::Level::Info as i32,
                    })
                    .collect(),
            };
            counted!(pb::agent_methods::BATCH_CREATE_LOGS, agent.batch_create_logs(&logs));
        }
        counted!(pb::agent_methods::UPDATE_LIFECYCLE, agent.update_lifecycle(&lifecycle(pb::lifecycle::State::Ready)));
    }

    let (derp, coordinate) = open_streams(shared, state, &tailnet).await;
    let streams = hold_streams_until_stop(shared, derp, coordinate);

    let agent = &agent;
    let banners = every_tick(connected, shared.config.banner_refresh_interval, &shared.stop, move || async move {
        counted!(
            pb::agent_methods::GET_ANNOUNCEMENT_BANNERS,
            agent.get_announcement_banners(&pb::GetAnnouncementBannersRequest {})
        );
    });
    let resources = async {
        if let Some(plan) = monitor {
            plan.run(connected, &shared.stop, move |request| async move {
                counted!(
                    pb::agent_methods::PUSH_RESOURCES_MONITORING_USAGE,
                    agent.push_resources_monitoring_usage(&request)
                );
            })
            .await;
        }
    };

    let periodic = async {
        // The first stats call is empty and tells the interval; the agent then adopts whatever the server returns.
        let mut stats_every = report_every.max(Duration::from_secs(1));
        if let Some(reply) =
            counted!(pb::agent_methods::UPDATE_STATS, agent.update_stats(&pb::UpdateStatsRequest { stats: None }))
        {
            if let Some(d) = reply.report_interval.as_ref().map(proto_duration).filter(|d| !d.is_zero()) {
                stats_every = d;
            }
        }
        // Random phases: real agents started at unrelated times, so their ticks do not line up.
        let now = TokioInstant::now();
        let mut next_stats = now + stats_every.mul_f64(fastrand::f64());
        let mut next_report = now + report_every.mul_f64(fastrand::f64());
        let mut key_due: Vec<TokioInstant> =
            state.metadata.iter().map(|(_, every)| now + every.mul_f64(fastrand::f64())).collect();
        loop {
            tokio::select! {
                biased;
                _ = shared.stop.cancelled() => break,
                _ = tokio::time::sleep_until(next_report) => {
                    next_report += report_every;
                    let now = TokioInstant::now();
                    let mut changed = Vec::new();
                    for (i, due) in key_due.iter_mut().enumerate() {
                        if *due <= now {
                            let every = state.metadata[i].1;
                            while *due <= now {
                                *due += every;
                            }
                            changed.push(state.metadata[i].0.as_str());
                        }
                    }
                    if !changed.is_empty() {
                        state.counter += 1;
                        let request = metadata_request(changed.into_iter(), state.counter);
                        counted!(pb::agent_methods::BATCH_UPDATE_METADATA, agent.batch_update_metadata(&request));
                    }
                }
                _ = tokio::time::sleep_until(next_stats) => {
                    next_stats += stats_every;
                    state.counter += 1;
                    let request = stats_request(state.counter);
                    if let Some(reply) = counted!(pb::agent_methods::UPDATE_STATS, agent.update_stats(&request)) {
                        if let Some(d) = reply.report_interval.as_ref().map(proto_duration).filter(|d| !d.is_zero()) {
                            stats_every = d;
                        }
                    }
                }
            }
        }
    };
    futures::future::join4(periodic, banners, resources, streams).await;
}

/// Calls `f` every `every` from `start` (the first call one interval after it) until `stop`, as the agent's Go
/// tickers do; a tick that a slow call overran is dropped, as Go's ticker drops it.
async fn every_tick<F, Fut>(start: TokioInstant, every: Duration, stop: &CancellationToken, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut ticks = tokio::time::interval_at(start + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = ticks.tick() => f().await,
        }
    }
}

/// The resources monitor Coder's agent starts on every connection (`agent/proto/resourcesmonitor`), as the server
/// configured it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MonitorPlan {
    /// Datapoints a push carries: `num_datapoints`.
    window: usize,
    /// `collection_interval_seconds`.
    every: Duration,
    /// The memory monitor is present and enabled.
    memory: bool,
    /// The enabled volume monitors' paths, in the configuration's order.
    volumes: Vec<String>,
}

impl MonitorPlan {
    /// The plan of a GetResourcesMonitoringConfiguration reply; `None` without a window size and interval above
    /// zero, on which the agent's monitor cannot run.
    pub(crate) fn from_config(config: &pb::GetResourcesMonitoringConfigurationResponse) -> Option<MonitorPlan> {
        let c = config.config.as_ref()?;
        let window = usize::try_from(c.num_datapoints).ok().filter(|&n| n > 0)?;
        let every = u64::try_from(c.collection_interval_seconds).ok().filter(|&s| s > 0).map(Duration::from_secs)?;
        Some(MonitorPlan {
            window,
            every,
            memory: config.memory.as_ref().is_some_and(|m| m.enabled),
            volumes: config.volumes.iter().filter(|v| v.enabled).map(|v| v.path.clone()).collect(),
        })
    }

    /// Runs the monitor until `stop`: every interval from `start` (the first one interval after it) a datapoint of
    /// the enabled monitors joins a window of the last `window`; once the window is full, each collection pushes all
    /// of it. The window starts empty on every connection, a reconnect after a server restart included, so the
    /// first push comes `window` intervals after the connect.
    async fn run<F, Fut>(&self, start: TokioInstant, stop: &CancellationToken, mut push: F)
    where
        F: FnMut(pb::PushResourcesMonitoringUsageRequest) -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut collected = VecDeque::with_capacity(self.window);
        let mut k = 0u64;
        every_tick(start, self.every, stop, || {
            if collected.len() == self.window {
                collected.pop_front();
            }
            k += 1;
            collected.push_back(mix::resources_datapoint(k, SystemTime::now(), self.memory, &self.volumes));
            let full = collected.len() == self.window;
            let request = full
                .then(|| pb::PushResourcesMonitoringUsageRequest { datapoints: collected.iter().cloned().collect() });
            let push = request.map(&mut push);
            async move {
                if let Some(push) = push {
                    push.await;
                }
            }
        })
        .await;
    }
}

/// StreamDERPMaps and Coordinate (with this agent's node), as an agent holds them for its whole session.
async fn open_streams(
    shared: &Shared,
    state: &AgentState,
    tailnet: &tpb::TailnetClient,
) -> (Option<DerpStream>, Option<CoordinateStream>) {
    let sessions = &shared.recorder.sessions;
    let index = state.index;
    let derp = match tailnet.stream_derp_maps(&tpb::StreamDerpMapsRequest {}).await {
        Ok(stream) => {
            sessions.streams_opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Some(stream)
        }
        Err(err) => {
            shared.recorder.error(index, format!("stream_{}", call_kind(&err)));
            None
        }
    };
    let coordinate = match tailnet.coordinate().await {
        Ok(stream) => {
            let id = state.agent_id.unwrap_or_else(Uuid::new_v4);
            let address = format!("{}/128", agent_address(id));
            let node = tpb::Node {
                id: (index as i64) + 1,
                key: vec![1; 32].into(),
                disco: format!("discokey:{index}"),
                preferred_derp: 999,
                addresses: vec![address.clone()],
                allowed_ips: vec![address],
                endpoints: vec![format!("192.0.2.1:{}", 41641 + (index % 20_000))],
                ..Default::default()
            };
            let update = tpb::CoordinateRequest {
                update_self: Some(tpb::coordinate_request::UpdateSelf { node: Some(node) }),
                ..Default::default()
            };
            match stream.send(&update).await {
                Ok(()) => {
                    sessions.streams_opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    Some(stream)
                }
                Err(err) => {
                    shared.recorder.error(index, format!("stream_{}", call_kind(&err)));
                    None
                }
            }
        }
        Err(err) => {
            shared.recorder.error(index, format!("stream_{}", call_kind(&err)));
            None
        }
    };
    (derp, coordinate)
}

/// Reads whatever the streams deliver until the run stops; dropping them then ends both calls (Close, FIN).
async fn hold_streams_until_stop(shared: &Shared, derp: Option<DerpStream>, coordinate: Option<CoordinateStream>) {
    let messages = &shared.recorder.sessions.stream_messages;
    let read_derp = async move {
        if let Some(mut stream) = derp {
            while let Ok(Some(_)) = stream.recv().await {
                messages.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            // Held (not dropped) until the run stops, as an agent keeps its side open.
            shared.stop.cancelled().await;
        }
    };
    let read_coordinate = async move {
        if let Some(mut stream) = coordinate {
            while let Ok(Some(_)) = stream.recv().await {
                messages.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            shared.stop.cancelled().await;
        }
    };
    tokio::select! {
        _ = futures::future::join(read_derp, read_coordinate) => {}
        _ = shared.stop.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest's metadata interval of 5 (coderd's seconds, sent as a 5 ns Go duration) is 5 s, as the agent reads
    /// it; the stats report interval is a real duration.
    #[test]
    fn metadata_intervals_are_read_as_coders_agent_reads_them() {
        let five = prost_types::Duration { seconds: 0, nanos: 5 };
        assert_eq!(metadata_interval(&five), Duration::from_secs(5));
        assert_eq!(proto_duration(&five), Duration::from_nanos(5));
        assert_eq!(metadata_interval(&prost_types::Duration { seconds: -1, nanos: -1 }), Duration::ZERO);
    }

    /// The schedule's counts, not its timing: one send per intended time, exactly on the schedule, none early, with
    /// and without calls that outlast the period.
    #[tokio::test]
    async fn the_schedule_sends_once_per_intended_time_and_never_early() {
        use std::sync::Mutex;
        const N: u64 = 40;
        for (max_in_flight, call_takes) in [(4, Duration::ZERO), (1, Duration::from_millis(1))] {
            let stop = CancellationToken::new();
            let period = Duration::from_micros(250);
            let first = Instant::now() + Duration::from_millis(1);
            let sent = Mutex::new(Vec::new());
            let mut left = N;
            let admit = || left.checked_sub(1).map(|l| left = l).is_some();
            let send = |n, intended, late| {
                sent.lock().unwrap().push((n, intended, Instant::now(), late));
                tokio::time::sleep(call_takes)
            };
            schedule(first, period, max_in_flight, &stop, admit, send).await;
            let sent = sent.into_inner().unwrap();
            assert_eq!(sent.len() as u64, N, "max_in_flight {max_in_flight}");
            for (i, (n, intended, actual, late)) in sent.into_iter().enumerate() {
                assert_eq!(n, i as u64 + 1);
                assert_eq!(intended, first + period * i as u32, "send {n} is not on the schedule");
                assert!(actual >= intended, "send {n} left {:?} early", intended - actual);
                assert!(actual >= intended + late, "send {n}'s lag is more than it was late");
            }
        }
    }

    /// A stop ends the schedule before its next send; what was sent is all there is.
    #[tokio::test]
    async fn a_stop_ends_the_schedule() {
        let stop = CancellationToken::new();
        stop.cancel();
        let mut sends = 0;
        let send = |_, _, _| {
            sends += 1;
            async {}
        };
        schedule(Instant::now(), Duration::from_millis(1), 1, &stop, || true, send).await;
        assert_eq!(sends, 0);
    }

    fn monitoring(
        window: i32,
        every_secs: i32,
        memory: Option<bool>,
        volumes: &[(&str, bool)],
    ) -> pb::GetResourcesMonitoringConfigurationResponse {
        use pb::get_resources_monitoring_configuration_response::{Config, Memory, Volume};
        pb::GetResourcesMonitoringConfigurationResponse {
            config: Some(Config { num_datapoints: window, collection_interval_seconds: every_secs }),
            memory: memory.map(|enabled| Memory { enabled }),
            volumes: volumes.iter().map(|&(path, enabled)| Volume { enabled, path: path.to_owned() }).collect(),
        }
    }

    /// Runs `plan` as one session from now for `secs` seconds of tokio's (paused) clock; each push with its offset
    /// from the session's start.
    async fn pushes(plan: &MonitorPlan, secs: u64) -> Vec<(Duration, pb::PushResourcesMonitoringUsageRequest)> {
        let stop = CancellationToken::new();
        let start = TokioInstant::now();
        let pushed = std::cell::RefCell::new(Vec::new());
        let run = plan.run(start, &stop, |request| {
            pushed.borrow_mut().push((start.elapsed(), request));
            async {}
        });
        tokio::select! {
            _ = run => panic!("the monitor ended before its stop"),
            _ = tokio::time::sleep(Duration::from_secs(secs)) => {}
        }
        pushed.into_inner()
    }

    /// At coderd's defaults (20 datapoints, 10 s): nothing until the window is full, 200 s after the connect, then
    /// every 10 s the whole window, sliding by one, each datapoint with the memory and the enabled volumes. A second
    /// session (a reconnect, after a server restart or not) starts with an empty window again, as the agent's.
    #[tokio::test(start_paused = true)]
    async fn the_monitor_pushes_its_whole_window_once_it_is_full() {
        let config = monitoring(20, 10, Some(true), &[("/", true), ("/data", false), ("/home", true)]);
        let plan = MonitorPlan::from_config(&config).expect("a usable configuration");
        for session in 0..2 {
            let pushed = pushes(&plan, 305).await;
            let at: Vec<u64> = pushed.iter().map(|(at, _)| at.as_secs()).collect();
            assert_eq!(at, (200..=300).step_by(10).collect::<Vec<u64>>(), "session {session}");
            for (_, push) in &pushed {
                assert_eq!(push.datapoints.len(), 20);
                for point in &push.datapoints {
                    let volumes: Vec<&str> = point.volumes.iter().map(|v| v.volume.as_str()).collect();
                    assert_eq!((point.memory.is_some(), volumes), (true, vec!["/", "/home"]));
                }
            }
            for pair in pushed.windows(2) {
                assert_eq!(pair[0].1.datapoints[1..], pair[1].1.datapoints[..19], "the window slides by one");
            }
        }
    }

    /// The window size and interval are the server's: 3 datapoints every 2 s push from 6 s on. Without monitors the
    /// agent still collects and pushes, datapoints with neither memory nor volumes.
    #[tokio::test(start_paused = true)]
    async fn the_monitor_takes_its_window_and_interval_from_the_configuration() {
        let plan = MonitorPlan::from_config(&monitoring(3, 2, Some(false), &[])).expect("usable");
        let pushed = pushes(&plan, 11).await;
        let at: Vec<u64> = pushed.iter().map(|(at, _)| at.as_secs()).collect();
        assert_eq!(at, [6, 8, 10]);
        for (_, push) in &pushed {
            assert_eq!(push.datapoints.len(), 3);
            assert!(push.datapoints.iter().all(|p| p.memory.is_none() && p.volumes.is_empty()));
        }
        let unusable = [
            pb::GetResourcesMonitoringConfigurationResponse::default(),
            monitoring(0, 10, Some(true), &[]),
            monitoring(20, 0, Some(true), &[]),
            monitoring(-1, 10, Some(true), &[]),
            monitoring(20, -10, Some(true), &[]),
        ];
        for config in unusable {
            assert_eq!(MonitorPlan::from_config(&config), None, "{config:?}");
        }
    }

    /// The banner refresh: one call per interval from the connect, none at the connect itself (the session's first
    /// calls make that one); a call that outlasts intervals is followed by one call at once, not a burst, as after
    /// Go's ticker.
    #[tokio::test(start_paused = true)]
    async fn ticks_come_once_per_interval_from_the_start() {
        for (call_takes, until, want) in [(0, 601, vec![120, 240, 360, 480, 600]), (250, 701, vec![120, 370, 620])] {
            let stop = CancellationToken::new();
            let start = TokioInstant::now();
            let calls = std::cell::RefCell::new(Vec::new());
            let ticking = every_tick(start, Duration::from_secs(120), &stop, || {
                calls.borrow_mut().push(start.elapsed().as_secs());
                tokio::time::sleep(Duration::from_secs(call_takes))
            });
            tokio::select! {
                _ = ticking => panic!("the ticks ended before their stop"),
                _ = tokio::time::sleep(Duration::from_secs(until)) => {}
            }
            assert_eq!(calls.into_inner(), want, "calls taking {call_takes} s");
        }
    }

    #[test]
    fn the_agent_address_is_coders() {
        let id = Uuid::parse_str("11111111-2222-3333-4444-555555555555").unwrap();
        assert_eq!(agent_address(id).to_string(), "fd7a:115c:a1e0:3333:4444:5555:5555:5555");
    }
}
