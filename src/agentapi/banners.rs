//! GetServiceBanner (deprecated) and GetAnnouncementBanners (Coder's `announcement_banners.go`).
//!
//! Deployment-wide appearance settings from the site configuration, not per agent, and polled by every agent every
//! couple of minutes: coderd's enterprise build reads three `site_configs` rows per call. Here the server reads the
//! `announcement_banners` row once per refresh ([`Banners::watch`], every [`DEFAULT_BANNER_REFRESH_INTERVAL`] and at
//! once when the operator's write is announced, see [`crate::site_config`]), decodes it only when its text changed,
//! and both calls answer from that snapshot without a query. Beside coderd, which announces nothing, a banner changed
//! in coderd reaches agents within the interval, on top of the agents' own 2 minutes.
//!
//! The answers are coderd v2.30's for what is stored: the banners as stored, none when the row is absent or empty;
//! GetServiceBanner is the first banner or an empty one (coderd reads no `service_banner` row since its migration
//! 208 moved that row into the list). Stored text that does not decode keeps the last good banners, logged and
//! counted ([`Banners::decode_errors`]); when none ever decoded, both calls fail with coderd's error for it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agentwire_store::{Store, StoreError, SITE_CONFIG_ANNOUNCEMENT_BANNERS};
use arc_swap::ArcSwapOption;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::{pb, AgentApi, RpcError};
use crate::session::Session;
use crate::site_config::Rereads;

/// How often a server re-reads the banners. An operator's write through agentwire is seen at once; coderd's writes
/// (beside coderd) within this. coderd reads them per call, so it has no value of its own for this.
pub const DEFAULT_BANNER_REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// Coder's `codersdk.BannerConfig` JSON; missing fields are their zero value.
#[derive(Debug, Default, Deserialize)]
struct BannerJson {
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    message: String,
    #[serde(default)]
    background_color: String,
}

/// What both calls answer until the next change.
#[derive(Debug)]
struct Snapshot {
    /// The banners; or, when the stored text never decoded, coderd's error for it.
    banners: Result<Vec<pb::BannerConfig>, String>,
}

/// The banners one server serves: a snapshot decoded once per change of the stored text.
pub struct Banners {
    store: Store,
    current: ArcSwapOption<Snapshot>,
    /// Whether a [`Banners::watch`] loop keeps `current` fresh; until then every call reads.
    watched: AtomicBool,
    /// Held across a refresh, so that one read serves the calls that wait for the first; holds the stored text
    /// `current` was made from (`None` until a read), so that a text read again is not decoded again.
    refresh: tokio::sync::Mutex<Option<Option<String>>>,
    decode_errors: AtomicU64,
}

impl Banners {
    /// Unwatched: every call reads the store until [`Banners::watch`] starts.
    pub fn new(store: Store) -> Arc<Self> {
        Arc::new(Banners {
            store,
            current: ArcSwapOption::empty(),
            watched: AtomicBool::new(false),
            refresh: tokio::sync::Mutex::new(None),
            decode_errors: AtomicU64::new(0),
        })
    }

    /// Keeps the snapshot fresh until `stop`: read at once, then after each `interval` and whenever an operator's
    /// write of the banners is announced. From now on calls read only while no snapshot is loaded yet.
    pub fn watch(self: &Arc<Self>, interval: Duration, stop: CancellationToken) {
        self.watched.store(true, Ordering::Release);
        let banners = self.clone();
        tokio::spawn(async move {
            let mut rereads = Rereads::subscribe(&banners.store, SITE_CONFIG_ANNOUNCEMENT_BANNERS, interval).await;
            loop {
                if let Err(err) = banners.refresh(true).await {
                    // The snapshot stays as it was; calls before a first success read for themselves.
                    tracing::warn!(error = %err, "reading the announcement banners");
                }
                if !rereads.wait(&stop).await {
                    return;
                }
            }
        });
    }

    /// Stored banners that did not decode, each distinct text counted once.
    pub fn decode_errors(&self) -> u64 {
        self.decode_errors.load(Ordering::Relaxed)
    }

    /// The snapshot to answer from: the watched one, else a fresh read.
    async fn current(&self) -> Result<Arc<Snapshot>, RpcError> {
        let watched = self.watched.load(Ordering::Acquire);
        if watched {
            if let Some(snapshot) = self.current.load_full() {
                return Ok(snapshot);
            }
        }
        self.refresh(!watched).await.map_err(RpcError::store("fetch appearance"))?;
        // A successful refresh always leaves a snapshot.
        self.current.load_full().ok_or_else(|| RpcError::invalid("fetch appearance: no banners read"))
    }

    /// Reads the stored text and, if it changed, decodes it into the snapshot. Unless `force`, a snapshot loaded by
    /// the time the lock is held is kept without a read: the calls that waited for the first read share it.
    async fn refresh(&self, force: bool) -> Result<(), StoreError> {
        let mut last = self.refresh.lock().await;
        let loaded = self.current.load_full();
        if !force && loaded.is_some() {
            return Ok(());
        }
        let text = self.store.announcement_banners().await?;
        if loaded.is_some() && last.as_ref() == Some(&text) {
            return Ok(());
        }
        let banners = match decode(text.as_deref()) {
            Ok(banners) => Ok(banners),
            Err(err) => {
                self.decode_errors.fetch_add(1, Ordering::Relaxed);
                match loaded.as_deref() {
                    Some(Snapshot { banners: Ok(_) }) => {
                        tracing::warn!(error = %err, "the stored announcement banners do not decode; keeping the last");
                        *last = Some(text);
                        return Ok(());
                    }
                    _ => {
                        tracing::warn!(error = %err, "the stored announcement banners do not decode");
                        Err(err)
                    }
                }
            }
        };
        self.current.store(Some(Arc::new(Snapshot { banners })));
        *last = Some(text);
        Ok(())
    }
}

/// Decodes the stored text as coderd's enterprise appearance fetcher does: absent or empty is no banners, JSON
/// `null` too; otherwise a JSON array of banners. The error is coderd's text for an undecodable row.
fn decode(text: Option<&str>) -> Result<Vec<pb::BannerConfig>, String> {
    let text = match text {
        None | Some("") => return Ok(Vec::new()),
        Some(text) => text,
    };
    let banners: Option<Vec<BannerJson>> = serde_json::from_str(text)
        .map_err(|e| format!("fetch appearance: unmarshal announcement banners json: {e}, raw: {text}"))?;
    Ok(banners
        .unwrap_or_default()
        .into_iter()
        .map(|b| pb::BannerConfig { enabled: b.enabled, message: b.message, background_color: b.background_color })
        .collect())
}

pub(super) async fn get_service_banner(
    api: &AgentApi,
    _session: &Session,
    _request: pb::GetServiceBannerRequest,
) -> Result<pb::ServiceBanner, RpcError> {
    // coderd answers older agents, which only know this call, with the first announcement banner.
    let snapshot = api.banners.current().await?;
    let banners = snapshot.banners.as_ref().map_err(RpcError::invalid)?;
    Ok(banners
        .first()
        .map(|b| pb::ServiceBanner {
            enabled: b.enabled,
            message: b.message.clone(),
            background_color: b.background_color.clone(),
        })
        .unwrap_or_default())
}

pub(super) async fn get_announcement_banners(
    api: &AgentApi,
    _session: &Session,
    _request: pb::GetAnnouncementBannersRequest,
) -> Result<pb::GetAnnouncementBannersResponse, RpcError> {
    let snapshot = api.banners.current().await?;
    let announcement_banners = snapshot.banners.clone().map_err(RpcError::invalid)?;
    Ok(pb::GetAnnouncementBannersResponse { announcement_banners })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::fixture;
    use super::super::AgentApiConfig;
    use super::*;

    const TWO_BANNERS: &str =
        r##"[{"enabled":true,"message":"maintenance at 5","background_color":"#ff0000"},{"message":"second"}]"##;

    /// Long enough that no test here sees a re-read it did not cause.
    const NEVER: Duration = Duration::from_secs(3600);

    /// Bounded wait for something another task does; the bound is a hang guard, not a measurement.
    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let wait = async {
            while !done() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(10), wait).await.is_err() {
            panic!("timed out waiting for {what}");
        }
    }

    async fn announcement(api: &AgentApi, f: &super::super::test_support::Fixture) -> Vec<pb::BannerConfig> {
        let resp = get_announcement_banners(api, &f.session, pb::GetAnnouncementBannersRequest {}).await;
        resp.expect("banners").announcement_banners
    }

    fn messages(banners: &[pb::BannerConfig]) -> Vec<&str> {
        banners.iter().map(|b| b.message.as_str()).collect()
    }

    /// A watched service and its stop; the snapshot is loaded when this returns.
    async fn watched(f: &super::super::test_support::Fixture) -> (AgentApi, CancellationToken) {
        let stop = CancellationToken::new();
        let api =
            AgentApi::new(f.store.clone(), AgentApiConfig { banner_refresh_interval: NEVER, ..Default::default() })
                .with_watched_banners(stop.clone());
        let banners = api.banners.clone();
        until("the first read", || banners.current.load().is_some()).await;
        (api, stop)
    }

    #[tokio::test]
    async fn nothing_configured_is_empty() {
        let f = fixture().await;
        let before = f.store.queries().snapshot();
        assert!(announcement(&f.api, &f).await.is_empty());
        assert_eq!(f.store.queries().snapshot().since(&before).total(), 1);
        let banner = get_service_banner(&f.api, &f.session, pb::GetServiceBannerRequest {}).await.expect("ok");
        assert_eq!(banner, pb::ServiceBanner::default());
        // An empty value is none too, as coderd reads it.
        f.store.admin().set_announcement_banners("").await.expect("set");
        assert!(announcement(&f.api, &f).await.is_empty());
        f.store.admin().set_announcement_banners("null").await.expect("set");
        assert!(announcement(&f.api, &f).await.is_empty());
    }

    #[tokio::test]
    async fn banners_come_from_the_site_config() {
        let f = fixture().await;
        f.store.admin().set_announcement_banners(TWO_BANNERS).await.expect("set");
        assert_eq!(
            announcement(&f.api, &f).await,
            vec![
                pb::BannerConfig {
                    enabled: true,
                    message: "maintenance at 5".into(),
                    background_color: "#ff0000".into()
                },
                pb::BannerConfig { enabled: false, message: "second".into(), background_color: String::new() },
            ]
        );
        // Older agents get the first announcement banner.
        let banner = get_service_banner(&f.api, &f.session, pb::GetServiceBannerRequest {}).await.expect("ok");
        assert_eq!((banner.enabled, banner.message.as_str()), (true, "maintenance at 5"));

        // coderd v2.30 reads no legacy `service_banner` row: it changes nothing.
        f.store.admin().set_service_banner(r#"{"enabled":true,"message":"legacy"}"#).await.expect("set");
        let banner = get_service_banner(&f.api, &f.session, pb::GetServiceBannerRequest {}).await.expect("ok");
        assert_eq!((banner.enabled, banner.message.as_str()), (true, "maintenance at 5"));
    }

    #[tokio::test]
    async fn bad_json_is_an_error_until_good_json_and_the_session_goes_on() {
        let f = fixture().await;
        f.store.admin().set_announcement_banners("{not json").await.expect("set");
        let err = get_announcement_banners(&f.api, &f.session, pb::GetAnnouncementBannersRequest {})
            .await
            .expect_err("bad json");
        assert!(err.to_string().starts_with("fetch appearance: unmarshal announcement banners json: "), "{err}");
        let err = get_service_banner(&f.api, &f.session, pb::GetServiceBannerRequest {}).await.expect_err("bad json");
        assert!(err.to_string().starts_with("fetch appearance: unmarshal announcement banners json: "), "{err}");
        // The same text is one decode error, however often it is read.
        assert_eq!(f.api.banners.decode_errors(), 1);
        f.store.admin().set_announcement_banners("[]").await.expect("set");
        assert!(announcement(&f.api, &f).await.is_empty());
    }

    /// Once the watched snapshot is loaded, the calls read nothing, whatever their number.
    #[tokio::test]
    async fn watched_banners_are_served_without_a_query() {
        let f = fixture().await;
        f.store.admin().set_announcement_banners(TWO_BANNERS).await.expect("set");
        let (api, stop) = watched(&f).await;
        let before = f.store.queries().snapshot();
        for _ in 0..100 {
            assert_eq!(messages(&announcement(&api, &f).await), ["maintenance at 5", "second"]);
            let banner = get_service_banner(&api, &f.session, pb::GetServiceBannerRequest {}).await.expect("ok");
            assert_eq!(banner.message, "maintenance at 5");
        }
        let since = f.store.queries().snapshot().since(&before);
        assert_eq!((since.get("GetSiteConfig"), since.total()), (0, 0), "{since:?}");
        stop.cancel();
    }

    /// Calls that arrive before the watcher's first read share one read.
    #[tokio::test(flavor = "current_thread")]
    async fn calls_before_the_first_read_share_one() {
        let f = fixture().await;
        f.store.admin().set_announcement_banners(TWO_BANNERS).await.expect("set");
        let stop = CancellationToken::new();
        let before = f.store.queries().snapshot();
        // On this one thread the watcher's task cannot run before the calls below are all waiting.
        let api =
            AgentApi::new(f.store.clone(), AgentApiConfig { banner_refresh_interval: NEVER, ..Default::default() })
                .with_watched_banners(stop.clone());
        let calls = (0..20).map(|_| announcement(&api, &f));
        for banners in futures::future::join_all(calls).await {
            assert_eq!(messages(&banners), ["maintenance at 5", "second"]);
        }
        // The calls' one read, and at most the watcher's own first: not one per call.
        let reads = f.store.queries().snapshot().since(&before).get("GetSiteConfig");
        assert!((1..=2).contains(&reads), "{reads} reads");
        stop.cancel();
    }

    /// An operator's write reaches the snapshot through its announcement, long before the interval.
    #[tokio::test]
    async fn an_operator_write_is_seen_without_waiting_for_the_interval() {
        let f = fixture().await;
        let (api, stop) = watched(&f).await;
        assert!(announcement(&api, &f).await.is_empty());
        let before = f.store.queries().snapshot();
        // Another setting's announcement is not a reason to read the banners.
        f.store.admin().set_derp_map(r#"{"Regions":{}}"#).await.expect("derp");
        f.store.admin().set_announcement_banners(TWO_BANNERS).await.expect("set");
        let banners = api.banners.clone();
        until("the announced banners", || {
            banners.current.load().as_ref().is_some_and(|s| s.banners.as_ref().is_ok_and(|b| b.len() == 2))
        })
        .await;
        let reads = f.store.queries().snapshot().since(&before).get("GetSiteConfig");
        assert_eq!(reads, 1, "one read for the one announced write of the banners");
        assert_eq!(messages(&announcement(&api, &f).await), ["maintenance at 5", "second"]);
        stop.cancel();
    }

    /// Stored text that does not decode keeps the last good banners, counted; good text again replaces them.
    #[tokio::test]
    async fn bad_json_keeps_the_last_good_banners() {
        let f = fixture().await;
        f.store.admin().set_announcement_banners(TWO_BANNERS).await.expect("set");
        let (api, stop) = watched(&f).await;
        let banners = api.banners.clone();
        f.store.admin().set_announcement_banners(r#"[{"message":"#).await.expect("set");
        until("the bad text read", || banners.decode_errors() == 1).await;
        assert_eq!(messages(&announcement(&api, &f).await), ["maintenance at 5", "second"]);
        let banner = get_service_banner(&api, &f.session, pb::GetServiceBannerRequest {}).await.expect("ok");
        assert_eq!(banner.message, "maintenance at 5");

        f.store.admin().set_announcement_banners(r#"[{"message":"fixed"}]"#).await.expect("set");
        until("the fixed banners", || {
            banners.current.load().as_ref().is_some_and(|s| s.banners.as_ref().is_ok_and(|b| b.len() == 1))
        })
        .await;
        assert_eq!(messages(&announcement(&api, &f).await), ["fixed"]);
        assert_eq!(banners.decode_errors(), 1);
        stop.cancel();
    }

    /// The interval alone brings a write nobody announced (coderd's, beside coderd).
    #[tokio::test]
    async fn an_unannounced_write_is_seen_at_the_interval() {
        let f = fixture().await;
        let stop = CancellationToken::new();
        let api = AgentApi::new(
            f.store.clone(),
            AgentApiConfig { banner_refresh_interval: Duration::from_millis(20), ..Default::default() },
        )
        .with_watched_banners(stop.clone());
        let banners = api.banners.clone();
        until("the first read", || banners.current.load().is_some()).await;
        // Written without the announcement, as coderd writes.
        f.store.admin().set_site_config(SITE_CONFIG_ANNOUNCEMENT_BANNERS, TWO_BANNERS).await.expect("set");
        until("the re-read", || {
            banners.current.load().as_ref().is_some_and(|s| s.banners.as_ref().is_ok_and(|b| b.len() == 2))
        })
        .await;
        assert_eq!(messages(&announcement(&api, &f).await), ["maintenance at 5", "second"]);
        stop.cancel();
    }
}
