//! Metrics snapshotter benchmark: refresh time over generated history, and the cost of a snapshot read under
//! contention. `bench/metrics_cache.sh` runs it on SQLite and PostgreSQL.
//!
//! `metrics_cache_bench [--db URL] [--workspaces N] [--days D] [--stats-per-day S] [--rounds R] [--readers T]
//! [--reuse]`

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentwire::metrics_cache::demo::{generate, DemoSpec};
use agentwire::metrics_cache::{Activity, MetricsCache, MetricsCacheConfig, TemplateInputs, TemplateSnapshot};
use agentwire_store::{now_micros, Store, StoreOptions};
use uuid::Uuid;

fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn args_have(flag: &str) -> bool {
    std::env::args().any(|a| a == flag)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("aw-mcb-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let db: String = arg("--db", format!("sqlite://{}?mode=rwc", dir.join("bench.db").display()));
    let spec = DemoSpec {
        workspaces: arg("--workspaces", 10_000),
        days: arg("--days", 10),
        stats_per_workspace_day: arg("--stats-per-day", 10),
        seed: 1,
        now: now_micros(),
    };
    let rounds: usize = arg("--rounds", 5);
    let readers: usize = arg("--readers", 4);
    let store = Store::open(&db, StoreOptions::default()).await?;
    let h = generate(&spec)?;
    let t = Instant::now();
    // `--reuse`: the database already holds this history (a previous run with the same arguments), for profiling
    // the refresh without writing a million rows again.
    if !args_have("--reuse") {
        store.insert_demo_history("default", &h).await?;
    }
    println!(
        "engine {:?}: {} workspaces, {} builds, {} agent stats rows written in {:.1?}",
        store.engine(),
        h.workspaces.len(),
        h.builds.len(),
        h.stats.len(),
        t.elapsed()
    );
    let cache = MetricsCache::new(MetricsCacheConfig::default());
    let (mut templates, mut deployment) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        cache.refresh_templates(&store).await?;
        templates.push(t.elapsed());
        let t = Instant::now();
        cache.refresh_deployment_stats(&store).await?;
        deployment.push(t.elapsed());
    }
    println!(
        "refresh templates (DAUs ×25 offsets, template DAUs, unique users, build times): median {:.1?}, min {:.1?}",
        median(templates.clone()),
        templates.iter().min().copied().unwrap_or_default()
    );
    // Where a templates refresh goes: its reads one by one, and the Rust fold of what they return.
    let (mut activity_read, mut builds_read, mut fold) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        let activity = Activity::Folded {
            user_days: store.user_activity_by_day().await?,
            template_days: store.template_users_by_day().await?,
            unique_users: store.template_unique_users().await?,
        };
        activity_read.push(t.elapsed());
        let t = Instant::now();
        let builds = store.recent_build_durations(0, 100).await?;
        builds_read.push(t.elapsed());
        let inputs = TemplateInputs { templates: store.active_template_ids().await?, activity, builds };
        let t = Instant::now();
        std::hint::black_box(TemplateSnapshot::compute(inputs, cache.config(), now_micros()));
        fold.push(t.elapsed());
    }
    println!(
        "  of which, alone: activity reads (folded, one after another) {:.1?}, build-times read {:.1?}, fold {:.1?} \
         (medians)",
        median(activity_read),
        median(builds_read),
        median(fold)
    );
    println!(
        "refresh deployment stats: median {:.1?}, min {:.1?}",
        median(deployment.clone()),
        deployment.iter().min().copied().unwrap_or_default()
    );

    // Readers on OS threads while a writer republishes both snapshots as fast as it can.
    let template = h.templates[0].id;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (cache, store, stop) = (cache.clone(), store.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _ = cache.refresh_deployment_stats(&store).await;
                n += 1;
            }
            n
        })
    };
    const READS: u64 = 5_000_000;
    let threads: Vec<_> = (0..readers)
        .map(|_| {
            let cache = cache.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                let mut sink = 0i64;
                for i in 0..READS {
                    if i % 2 == 0 {
                        sink = sink.wrapping_add(cache.template_unique_users(template).unwrap_or(0));
                    } else {
                        sink = sink.wrapping_add(cache.deployment_stats().map(|s| s.rx_bytes).unwrap_or(0));
                    }
                }
                std::hint::black_box(sink);
                t.elapsed()
            })
        })
        .collect();
    let per_thread: Vec<Duration> = threads.into_iter().map(|t| t.join().unwrap_or_default()).collect();
    stop.store(true, Ordering::Relaxed);
    let swaps = writer.await?;
    for (i, d) in per_thread.iter().enumerate() {
        println!("reader {i}: {:.1} ns per snapshot read", d.as_nanos() as f64 / READS as f64);
    }
    println!("({readers} reader threads, {swaps} snapshot swaps meanwhile)");
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
