//! Batched versus per-row writes on one engine, and a simulated deployment at Coder's default
//! reporting intervals.
//!
//! ```text
//! cargo run --release -p agentwire-store --example store_bench -- --db URL [options]
//!
//!   --db URL                 sqlite://path?mode=rwc or postgres://… (required)
//!   --cases LIST             comma list of setup-independent cases to run, default
//!                            stats_batched,stats_per_row,metadata_batched,metadata_per_row,sim
//!   --rows N                 rows / updates per row case (default 100000)
//!   --row-agents N           agents the row cases spread their rows over (default 1000)
//!   --per-row-concurrency N  per-row transactions in flight at once (default 1)
//!   --agents N               simulated agents (default 10000)
//!   --seconds S              simulated wall time (default 60)
//!   --metadata-min-ms MS     shortest metadata period per agent (default 1000)
//!   --metadata-max-ms MS     longest metadata period per agent (default 10000)
//!   --stats-ms MS            stats period per agent (default 30000)
//!   --heartbeat-ms MS        heartbeat period per agent (default 15000)
//!   --target-tx-per-s X      pass/fail threshold for the simulation (default 10)
//!   --metadata-flush-at N    override StoreOptions::metadata_flush_at (default: Coder's 500)
//!   --metadata-queue N       override StoreOptions::metadata_queue_capacity (default 2500)
//! ```
//!
//! Every measurement prints one line of `key=value` pairs, e.g.
//! `engine=sqlite case=stats_batched rows=100000 seconds=… rows_per_s=… transactions=…`.
//! `transactions` is the number of commits counted by the store (`Store::queries`), and on
//! PostgreSQL `pg_xids` is the number of transaction ids the server assigned meanwhile (every
//! write transaction, including NOTIFYs and autovacuum's ANALYZE) as a cross-check.
//!
//! The store runs with Coder's batching defaults (`StoreOptions::default()`) unless overridden.
//! Batched producers never outrun the batcher's queue (which would drop rows by design): they
//! keep at most one queue's worth of items in flight, so a run writes every row it enqueues and
//! `dropped` stays 0. The simulation does not pace itself: drops there are real.
//!
//! Over 600 lines: one runnable benchmark, its simulated deployment and its report.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use agentwire_store::bench_support;
use agentwire_store::{
    AgentScope, AllBatcherStats, BatcherStats, Engine, MetadataUpdate, NewAgent, NewMetadata, QuerySnapshot,
    ResolvedAgent, StatsReport, Store, StoreOptions,
};
use futures::{StreamExt, TryStreamExt};
use sqlx::Connection;
use uuid::Uuid;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const METADATA_KEYS: [&str; 2] = ["cpu_usage", "mem_usage"];
const ALL_CASES: &str = "stats_batched,stats_per_row,metadata_batched,metadata_per_row,sim";

#[derive(Debug, Clone)]
struct Args {
    db: String,
    cases: Vec<String>,
    rows: usize,
    row_agents: usize,
    per_row_concurrency: usize,
    agents: usize,
    seconds: u64,
    metadata_min_ms: u64,
    metadata_max_ms: u64,
    stats_ms: u64,
    heartbeat_ms: u64,
    target_tx_per_s: f64,
    metadata_flush_at: Option<usize>,
    metadata_queue: Option<usize>,
}

fn parse_args() -> Result<Args, BoxError> {
    let mut a = Args {
        db: String::new(),
        cases: ALL_CASES.split(',').map(str::to_owned).collect(),
        rows: 100_000,
        row_agents: 1000,
        per_row_concurrency: 1,
        agents: 10_000,
        seconds: 60,
        metadata_min_ms: 1000,
        metadata_max_ms: 10_000,
        stats_ms: 30_000,
        heartbeat_ms: 15_000,
        target_tx_per_s: 10.0,
        metadata_flush_at: None,
        metadata_queue: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--db" => a.db = val()?,
            "--cases" => a.cases = val()?.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
            "--rows" => a.rows = num(&flag, &val()?)?,
            "--row-agents" => a.row_agents = num(&flag, &val()?)?,
            "--per-row-concurrency" => a.per_row_concurrency = num(&flag, &val()?)?,
            "--agents" => a.agents = num(&flag, &val()?)?,
            "--seconds" => a.seconds = num(&flag, &val()?)?,
            "--metadata-min-ms" => a.metadata_min_ms = num(&flag, &val()?)?,
            "--metadata-max-ms" => a.metadata_max_ms = num(&flag, &val()?)?,
            "--stats-ms" => a.stats_ms = num(&flag, &val()?)?,
            "--heartbeat-ms" => a.heartbeat_ms = num(&flag, &val()?)?,
            "--target-tx-per-s" => a.target_tx_per_s = num(&flag, &val()?)?,
            "--metadata-flush-at" => a.metadata_flush_at = Some(num(&flag, &val()?)?),
            "--metadata-queue" => a.metadata_queue = Some(num(&flag, &val()?)?),
            "-h" | "--help" => {
                eprintln!("usage: store_bench --db URL [--cases {ALL_CASES}] [--rows N] [--row-agents N] [--agents N] [--seconds S] …; see the source header");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    if a.db.is_empty() {
        return Err("--db URL is required".into());
    }
    for c in &a.cases {
        if !ALL_CASES.split(',').any(|k| k == c) {
            return Err(format!("unknown case {c:?} (known: {ALL_CASES})").into());
        }
    }
    if a.rows == 0 || a.row_agents == 0 || a.agents == 0 || a.seconds == 0 || a.per_row_concurrency == 0 {
        return Err("counts, agents, seconds and concurrency must be > 0".into());
    }
    if a.metadata_min_ms == 0 || a.metadata_min_ms > a.metadata_max_ms || a.stats_ms == 0 || a.heartbeat_ms == 0 {
        return Err("periods must be > 0 and --metadata-min-ms <= --metadata-max-ms".into());
    }
    Ok(a)
}

fn num<T: FromStr>(flag: &str, v: &str) -> Result<T, BoxError> {
    v.parse().map_err(|_| format!("{flag}: cannot parse {v:?}").into())
}

/// SplitMix64: deterministic spread for periods and phases without a `rand` dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// A second connection used only to read back what the benchmark wrote, and on PostgreSQL to
/// read the server's next transaction id.
enum Probe {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl Probe {
    async fn connect(url: &str, engine: Engine) -> Result<Probe, BoxError> {
        Ok(match engine {
            Engine::Sqlite => Probe::Sqlite(sqlx::SqliteConnection::connect(url).await?),
            Engine::Postgres => Probe::Postgres(sqlx::PgConnection::connect(url).await?),
        })
    }

    async fn scalar(&mut self, sql: &'static str) -> Result<i64, BoxError> {
        Ok(match self {
            Probe::Sqlite(c) => sqlx::query_scalar::<_, i64>(sql).fetch_one(c).await?,
            Probe::Postgres(c) => sqlx::query_scalar::<_, i64>(sql).fetch_one(c).await?,
        })
    }

    /// PostgreSQL: the next transaction id to be assigned (read without assigning one).
    async fn next_xid(&mut self) -> Result<Option<u64>, BoxError> {
        match self {
            Probe::Sqlite(_) => Ok(None),
            Probe::Postgres(c) => {
                let s: String =
                    sqlx::query_scalar("SELECT pg_snapshot_xmax(pg_current_snapshot())::text").fetch_one(c).await?;
                Ok(Some(s.parse()?))
            }
        }
    }

    async fn stats_rows(&mut self) -> Result<i64, BoxError> {
        self.scalar("SELECT COUNT(*) FROM workspace_agent_stats").await
    }

    async fn metadata_rows_since(&mut self, since: i64) -> Result<i64, BoxError> {
        let sql = "SELECT COUNT(*) FROM workspace_agent_metadata WHERE collected_at >= $1";
        Ok(match self {
            Probe::Sqlite(c) => sqlx::query_scalar::<_, i64>(sql).bind(since).fetch_one(c).await?,
            Probe::Postgres(c) => sqlx::query_scalar::<_, i64>(sql).bind(since).fetch_one(c).await?,
        })
    }
}

fn engine_name(e: Engine) -> &'static str {
    match e {
        Engine::Sqlite => "sqlite",
        Engine::Postgres => "postgres",
    }
}

fn now_micros() -> i64 {
    agentwire_store::now_micros()
}

/// Counters around one measurement.
struct Mark {
    at: Instant,
    queries: QuerySnapshot,
    batchers: AllBatcherStats,
    xid: Option<u64>,
}

async fn mark(store: &Store, probe: &mut Probe) -> Result<Mark, BoxError> {
    let xid = probe.next_xid().await?;
    Ok(Mark { at: Instant::now(), queries: store.queries().snapshot(), batchers: store.batcher_stats(), xid })
}

fn diff(a: BatcherStats, b: BatcherStats) -> BatcherStats {
    BatcherStats {
        enqueued: a.enqueued - b.enqueued,
        refused: a.refused - b.refused,
        dropped: a.dropped - b.dropped,
        superseded: a.superseded - b.superseded,
        flushes: a.flushes - b.flushes,
        flush_errors: a.flush_errors - b.flush_errors,
        items_flushed: a.items_flushed - b.items_flushed,
    }
}

/// What happened between two marks.
struct Delta {
    seconds: f64,
    queries: QuerySnapshot,
    stats: BatcherStats,
    metadata: BatcherStats,
    heartbeats: BatcherStats,
    xids: Option<u64>,
}

fn delta(after: &Mark, before: &Mark) -> Delta {
    Delta {
        seconds: after.at.duration_since(before.at).as_secs_f64(),
        queries: after.queries.since(&before.queries),
        stats: diff(after.batchers.stats, before.batchers.stats),
        metadata: diff(after.batchers.metadata, before.batchers.metadata),
        heartbeats: diff(after.batchers.heartbeats, before.batchers.heartbeats),
        xids: match (after.xid, before.xid) {
            // The probe's own read transactions take no xid.
            (Some(a), Some(b)) => Some(a - b),
            _ => None,
        },
    }
}

fn xid_field(d: &Delta) -> String {
    d.xids.map(|x| format!(" pg_xids={x}")).unwrap_or_default()
}

/// Fixture: one owner and template; one workspace (with a succeeded build) per agent; two
/// described metadata keys per agent; each agent resolved through its token as a session would.
async fn create_agents(
    store: &Store,
    n: usize,
    rng: &mut Rng,
    meta_ms: (u64, u64),
) -> Result<Vec<ResolvedAgent>, BoxError> {
    let admin = store.admin();
    let owner = admin.create_user("bench", "bench@example.com").await?;
    let template = admin.create_template("default", "bench").await?;
    let intervals: Vec<u64> = (0..n).map(|_| rng.range(meta_ms.0, meta_ms.1)).collect();
    let agents: Vec<ResolvedAgent> = futures::stream::iter(0..n)
        .map(|i| {
            let admin = admin.clone();
            let store = store.clone();
            let interval_ns = i64::try_from(intervals[i]).unwrap_or(i64::MAX).saturating_mul(1_000_000);
            async move {
                let build = admin.create_workspace_with_build(owner, template.template_id, &format!("ws-{i}")).await?;
                let agent = NewAgent {
                    name: "main".to_owned(),
                    directory: "/home/coder".to_owned(),
                    architecture: "amd64".to_owned(),
                    operating_system: "linux".to_owned(),
                    ..NewAgent::default()
                };
                let created = admin.create_agent(build.resource_id, &agent).await?;
                for (order, key) in (0i64..).zip(METADATA_KEYS) {
                    let m = NewMetadata {
                        key: key.to_owned(),
                        display_name: key.to_owned(),
                        script: format!("echo {key}"),
                        interval: interval_ns,
                        timeout: 1_000_000_000,
                        display_order: order,
                    };
                    admin.add_metadata_description(created.id, &m).await?;
                }
                let resolved = store
                    .resolve_agent_by_token(&created.auth_token.to_string())
                    .await?
                    .ok_or("fresh agent token did not resolve")?;
                Ok::<_, BoxError>(resolved)
            }
        })
        .buffer_unordered(8)
        .try_collect()
        .await?;
    Ok(agents)
}

fn report(i: usize) -> StatsReport {
    let i = i64::try_from(i).unwrap_or(i64::MAX);
    StatsReport {
        connections_by_proto: r#"{"ssh":1}"#.to_owned(),
        connection_count: 1,
        rx_packets: 10 + i % 7,
        rx_bytes: 1500 * (10 + i % 7),
        tx_packets: 12 + i % 5,
        tx_bytes: 1400 * (12 + i % 5),
        connection_median_latency_ms: 12.5,
        session_count_ssh: 1,
        usage: i % 3 == 0,
        ..StatsReport::default()
    }
}

/// Keep at most `cap` items between "enqueued" and "written" so the producer never overflows
/// the batcher's queue (which would drop by design). Gives up after 10 s (then drops count).
async fn wait_for_room(store: &Store, pick: fn(&AllBatcherStats) -> BatcherStats, cap: u64) {
    let started = Instant::now();
    loop {
        let s = pick(&store.batcher_stats());
        if s.enqueued.saturating_sub(s.items_flushed + s.dropped) < cap || started.elapsed() > Duration::from_secs(10) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn line(engine: Engine, case: &str, rows: usize, d: &Delta, extra: &str) {
    let rows_per_s = rows as f64 / d.seconds;
    println!(
        "engine={} case={case} rows={rows} seconds={:.2} rows_per_s={:.0} transactions={} statements={}{}{extra}",
        engine_name(engine),
        d.seconds,
        rows_per_s,
        d.queries.commits,
        d.queries.total(),
        xid_field(d),
    );
}

async fn stats_batched(args: &Args, store: &Store, scopes: &[AgentScope], probe: &mut Probe) -> Result<(), BoxError> {
    let cap = store.options().stats_queue_capacity as u64;
    let rows_before = probe.stats_rows().await?;
    let before = mark(store, probe).await?;
    for i in 0..args.rows {
        wait_for_room(store, |s| s.stats, cap).await;
        scopes[i % scopes.len()].enqueue_stats(report(i));
    }
    store.flush().await;
    let after = mark(store, probe).await?;
    let d = delta(&after, &before);
    let written = probe.stats_rows().await? - rows_before;
    let extra = format!(
        " flushes={} rows_per_tx={:.0} dropped={} flush_errors={} rows_verified={written}",
        d.stats.flushes,
        d.stats.items_flushed as f64 / d.stats.flushes.max(1) as f64,
        d.stats.dropped,
        d.stats.flush_errors
    );
    line(store.engine(), "stats_batched", args.rows, &d, &extra);
    Ok(())
}

async fn stats_per_row(
    args: &Args,
    store: &Store,
    agents: &[ResolvedAgent],
    probe: &mut Probe,
) -> Result<(), BoxError> {
    let rows_before = probe.stats_rows().await?;
    let before = mark(store, probe).await?;
    futures::stream::iter(0..args.rows)
        .map(|i| bench_support::insert_stats_row_per_tx(store, &agents[i % agents.len()], report(i)))
        .buffer_unordered(args.per_row_concurrency)
        .try_collect::<()>()
        .await?;
    let after = mark(store, probe).await?;
    let d = delta(&after, &before);
    let written = probe.stats_rows().await? - rows_before;
    let extra = format!(" concurrency={} rows_verified={written}", args.per_row_concurrency);
    line(store.engine(), "stats_per_row", args.rows, &d, &extra);
    Ok(())
}

fn metadata_value(i: usize, key: &str) -> String {
    format!("{key}={}", i % 100)
}

async fn metadata_batched(
    args: &Args,
    store: &Store,
    scopes: &[AgentScope],
    probe: &mut Probe,
) -> Result<(), BoxError> {
    let cap = store.options().metadata_queue_capacity as u64;
    let since = now_micros();
    let before = mark(store, probe).await?;
    // Round robin over agents, both keys per call (as an agent reports them): any window of
    // 2 × agents consecutive updates is distinct, so nothing coalesces inside a flush of 500.
    let calls = args.rows / METADATA_KEYS.len();
    for c in 0..calls {
        wait_for_room(store, |s| s.metadata, cap.saturating_sub(METADATA_KEYS.len() as u64)).await;
        let updates: Vec<MetadataUpdate> = METADATA_KEYS
            .iter()
            .map(|k| MetadataUpdate { key: (*k).to_owned(), value: metadata_value(c, k), error: String::new() })
            .collect();
        scopes[c % scopes.len()].enqueue_metadata(&updates);
    }
    store.flush().await;
    let after = mark(store, probe).await?;
    let d = delta(&after, &before);
    let touched = probe.metadata_rows_since(since).await?;
    let extra = format!(
        " flushes={} rows_per_tx={:.0} written={} dropped={} flush_errors={} notifications={} keys_touched={touched}",
        d.metadata.flushes,
        d.metadata.items_flushed as f64 / d.metadata.flushes.max(1) as f64,
        d.metadata.items_flushed,
        d.metadata.dropped,
        d.metadata.flush_errors,
        d.queries.notifications
    );
    line(store.engine(), "metadata_batched", calls * METADATA_KEYS.len(), &d, &extra);
    Ok(())
}

async fn metadata_per_row(
    args: &Args,
    store: &Store,
    agents: &[ResolvedAgent],
    probe: &mut Probe,
) -> Result<(), BoxError> {
    let since = now_micros();
    let before = mark(store, probe).await?;
    let calls = args.rows / METADATA_KEYS.len();
    let changed: u64 = futures::stream::iter(0..calls * METADATA_KEYS.len())
        .map(|i| {
            let (c, k) = (i / METADATA_KEYS.len(), METADATA_KEYS[i % METADATA_KEYS.len()]);
            let agent = agents[c % agents.len()].id;
            async move {
                let value = metadata_value(c, k);
                bench_support::update_metadata_row_per_tx(store, agent, k, &value, "").await
            }
        })
        .buffer_unordered(args.per_row_concurrency)
        .try_fold(0u64, |acc, n| async move { Ok(acc + n) })
        .await?;
    let after = mark(store, probe).await?;
    let d = delta(&after, &before);
    let touched = probe.metadata_rows_since(since).await?;
    let extra = format!(
        " concurrency={} written={changed} notifications={} keys_touched={touched}",
        args.per_row_concurrency, d.queries.notifications
    );
    line(store.engine(), "metadata_per_row", calls * METADATA_KEYS.len(), &d, &extra);
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Metadata,
    Stats,
    Heartbeat,
}

/// `agents` agents report for `seconds` of wall time at Coder's default intervals, driven by
/// one loop over a timer queue (no task per agent). Reports write transactions per second.
async fn simulate(
    args: &Args,
    store: &Store,
    scopes: &[AgentScope],
    rng: &mut Rng,
    probe: &mut Probe,
) -> Result<(), BoxError> {
    const TICK_MS: u64 = 10;
    let n = scopes.len();
    // The same per-agent metadata period as the agent's described interval (create_agents
    // drew them from an Rng seeded the same way).
    let mut period_rng = Rng(SEED);
    let meta_ms: Vec<u64> = (0..n).map(|_| period_rng.range(args.metadata_min_ms, args.metadata_max_ms)).collect();
    let mut wheel: BinaryHeap<Reverse<(u64, u32, Event)>> = BinaryHeap::with_capacity(3 * n);
    for (i, &m) in meta_ms.iter().enumerate() {
        let i = u32::try_from(i)?;
        // Random phase within each period, as agents start at different times.
        wheel.push(Reverse((rng.range(0, m - 1), i, Event::Metadata)));
        wheel.push(Reverse((rng.range(0, args.stats_ms - 1), i, Event::Stats)));
        wheel.push(Reverse((rng.range(0, args.heartbeat_ms - 1), i, Event::Heartbeat)));
    }
    let offered_meta: f64 = meta_ms.iter().map(|&m| METADATA_KEYS.len() as f64 * 1000.0 / m as f64).sum();
    let offered_stats = n as f64 * 1000.0 / args.stats_ms as f64;
    let offered_hb = n as f64 * 1000.0 / args.heartbeat_ms as f64;

    let replica = Uuid::new_v4();
    let horizon_ms = args.seconds * 1000;
    let (mut meta_sent, mut meta_dropped, mut stats_sent, mut stats_dropped, mut hb_sent, mut hb_dropped) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut max_lag_ms = 0u64;
    let mut seq = 0usize;

    let before = mark(store, probe).await?;
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(TICK_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let now_ms = u64::try_from(start.elapsed().as_millis())?;
        if now_ms >= horizon_ms {
            break;
        }
        while let Some(&Reverse((due, agent, ev))) = wheel.peek() {
            if due > now_ms {
                break;
            }
            wheel.pop();
            max_lag_ms = max_lag_ms.max(now_ms - due);
            let scope = &scopes[agent as usize];
            seq += 1;
            let period = match ev {
                Event::Metadata => {
                    let updates: Vec<MetadataUpdate> = METADATA_KEYS
                        .iter()
                        .map(|k| MetadataUpdate {
                            key: (*k).to_owned(),
                            value: metadata_value(seq, k),
                            error: String::new(),
                        })
                        .collect();
                    let r = scope.enqueue_metadata(&updates);
                    meta_sent += r.accepted as u64;
                    meta_dropped += r.dropped as u64;
                    meta_ms[agent as usize]
                }
                Event::Stats => {
                    if scope.enqueue_stats(report(seq)) {
                        stats_sent += 1;
                    } else {
                        stats_dropped += 1;
                    }
                    args.stats_ms
                }
                Event::Heartbeat => {
                    if scope.heartbeat(replica) {
                        hb_sent += 1;
                    } else {
                        hb_dropped += 1;
                    }
                    args.heartbeat_ms
                }
            };
            wheel.push(Reverse((due + period, agent, ev)));
        }
    }
    let after = mark(store, probe).await?;
    let d = delta(&after, &before);
    let tx_per_s = d.queries.commits as f64 / d.seconds;
    let verdict = if tx_per_s <= args.target_tx_per_s { "PASS" } else { "FAIL" };
    // PostgreSQL: every xid assigned is a write transaction the server ran, including the
    // metadata NOTIFYs, which run outside the flush transaction.
    let db_side = match d.xids {
        Some(x) => {
            let per_s = x as f64 / d.seconds;
            let v = if per_s <= args.target_tx_per_s { "PASS" } else { "FAIL" };
            format!(" db_tx_per_s={per_s:.2} verdict_db={v}")
        }
        None => String::new(),
    };
    let opts = store.options();
    println!(
        "engine={} case=sim agents={n} seconds={:.2} transactions={} tx_per_s={:.2} target_tx_per_s={} verdict={verdict} \
         headroom={:.2}x{}{db_side} flushes_stats={} flushes_metadata={} flushes_heartbeats={} \
         offered_metadata_per_s={:.0} offered_stats_per_s={:.0} offered_heartbeats_per_s={:.0} \
         metadata_updates={meta_sent} stats_rows={stats_sent} heartbeats={hb_sent} \
         dropped_metadata={meta_dropped} dropped_stats={stats_dropped} dropped_heartbeats={hb_dropped} \
         flush_errors={} notifications={} driver_max_lag_ms={max_lag_ms} metadata_flush_at={} metadata_queue={}",
        engine_name(store.engine()),
        d.seconds,
        d.queries.commits,
        tx_per_s,
        args.target_tx_per_s,
        args.target_tx_per_s / tx_per_s.max(f64::MIN_POSITIVE),
        xid_field(&d),
        d.stats.flushes,
        d.metadata.flushes,
        d.heartbeats.flushes,
        offered_meta,
        offered_stats,
        offered_hb,
        d.stats.flush_errors + d.metadata.flush_errors + d.heartbeats.flush_errors,
        d.queries.notifications,
        opts.metadata_flush_at,
        opts.metadata_queue_capacity,
    );
    // Whatever is still pending is written now, outside the measured window.
    store.flush().await;
    Ok(())
}

const SEED: u64 = 0x5eed_0fa9_e777_1500;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = parse_args()?;
    let mut opts = StoreOptions::default();
    if let Some(n) = args.metadata_flush_at {
        opts.metadata_flush_at = n;
    }
    if let Some(n) = args.metadata_queue {
        opts.metadata_queue_capacity = n;
    }
    let wants_metadata = args.cases.iter().any(|c| c.starts_with("metadata_"));
    let distinct_keys = args.row_agents * METADATA_KEYS.len();
    if wants_metadata && distinct_keys < opts.metadata_flush_at {
        // Fewer keys than a flush holds: updates coalesce and only the 5 s timer flushes, so a
        // throughput run would measure the timer, not the database.
        return Err(format!(
            "metadata cases need --row-agents × {} >= metadata_flush_at ({distinct_keys} < {})",
            METADATA_KEYS.len(),
            opts.metadata_flush_at
        )
        .into());
    }
    let store = Store::open(&args.db, opts).await?;
    let engine = store.engine();
    let mut probe = Probe::connect(&args.db, engine).await?;

    let wants = |c: &str| args.cases.iter().any(|k| k == c);
    let row_cases = ["stats_batched", "stats_per_row", "metadata_batched", "metadata_per_row"];
    let need = match (row_cases.iter().any(|c| wants(c)), wants("sim")) {
        (true, true) => args.row_agents.max(args.agents),
        (true, false) => args.row_agents,
        (false, true) => args.agents,
        (false, false) => 0,
    };

    let setup_start = Instant::now();
    let agents = create_agents(&store, need, &mut Rng(SEED), (args.metadata_min_ms, args.metadata_max_ms)).await?;
    println!(
        "engine={} case=setup agents={need} seconds={:.2}",
        engine_name(engine),
        setup_start.elapsed().as_secs_f64()
    );
    let scopes: Vec<AgentScope> = agents.iter().map(|a| store.agent(a)).collect();
    let row_n = args.row_agents.min(agents.len());

    if wants("stats_batched") {
        stats_batched(&args, &store, &scopes[..row_n], &mut probe).await?;
    }
    if wants("stats_per_row") {
        stats_per_row(&args, &store, &agents[..row_n], &mut probe).await?;
    }
    if wants("metadata_batched") {
        metadata_batched(&args, &store, &scopes[..row_n], &mut probe).await?;
    }
    if wants("metadata_per_row") {
        metadata_per_row(&args, &store, &agents[..row_n], &mut probe).await?;
    }
    if wants("sim") {
        let sim_n = args.agents.min(agents.len());
        simulate(&args, &store, &scopes[..sim_n], &mut Rng(SEED ^ 0xa5a5), &mut probe).await?;
    }
    store.close().await;
    Ok(())
}
