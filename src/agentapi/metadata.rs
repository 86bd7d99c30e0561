//! BatchUpdateMetadata (Coder's `metadata.go` with MAIN's `metadatabatcher`).
//!
//! The agent reports the latest value of each metadata key every few seconds; this is one of the hottest calls,
//! so nothing here touches the database: values are capped, stamped with the server's clock and queued for the
//! store's metadata batcher, which writes them (last value per key wins) and announces them on
//! `workspace_agent_metadata_batch`. Keys that were not created at build time are ignored by the batcher's
//! `UPDATE … FROM`, as in Coder.

use agentwire_store::MetadataUpdate;

use super::{pb, AgentApi, RpcError};
use crate::session::Session;

/// Coder's `maxValueLen`: a longer value is cut to this many bytes and its stored error says so.
pub const DEFAULT_MAX_METADATA_VALUE_BYTES: usize = 2048;
/// Coder's `maxErrorLen`: a longer error text is replaced by a note of its length.
pub const DEFAULT_MAX_METADATA_ERROR_BYTES: usize = 2048;
/// Coder's `maxAllKeysLen`: key bytes summed over one request. Keys past the limit are dropped, the ones before it
/// are still stored, and the call then fails with `metadata keys of N bytes exceeded 6144 bytes`.
pub const DEFAULT_MAX_METADATA_KEYS_BYTES: usize = 6144;
/// `workspace_agent_metadata.key` is `varchar(127)`: a longer key can match no row, so it is not queued at all
/// (silently, as an unknown key would be ignored).
pub const DEFAULT_MAX_METADATA_KEY_CHARS: usize = 127;

pub(super) async fn batch_update_metadata(
    api: &AgentApi,
    session: &Session,
    request: pb::BatchUpdateMetadataRequest,
) -> Result<pb::BatchUpdateMetadataResponse, RpcError> {
    let limits = Limits {
        value_bytes: api.config.max_metadata_value_bytes,
        error_bytes: api.config.max_metadata_error_bytes,
        keys_bytes: api.config.max_metadata_keys_bytes,
    };
    let (updates, keys_overflow) = cap_updates(request.metadata, &limits);
    if !updates.is_empty() {
        // The store stamps every item with its own clock: Coder ignores the agent's `collected_at` (clock skew).
        let queued = session.scope.enqueue_metadata(&updates);
        if queued.dropped > 0 {
            // Coder's batcher drops on a full queue too and the call still succeeds; the batcher counts the drops
            // (exported as a metric), so a debug line is enough here and cannot flood the log under overload.
            tracing::debug!(agent_id = %session.agent_id(), dropped = queued.dropped, "metadata batcher queue full");
        }
    }
    if let Some(total) = keys_overflow {
        return Err(RpcError::invalid(format!("metadata keys of {total} bytes exceeded {} bytes", limits.keys_bytes)));
    }
    Ok(pb::BatchUpdateMetadataResponse {})
}

struct Limits {
    value_bytes: usize,
    error_bytes: usize,
    keys_bytes: usize,
}

/// Coder's per-request rules, in Coder's order. Returns what to store and, when the key budget ran out, the byte
/// count that broke it (the sum up to and including the first key over the limit, as Coder reports it).
fn cap_updates(metadata: Vec<pb::Metadata>, limits: &Limits) -> (Vec<MetadataUpdate>, Option<usize>) {
    let mut out = Vec::with_capacity(metadata.len());
    let mut keys_len = 0usize;
    for md in metadata {
        keys_len = keys_len.saturating_add(md.key.len());
        if keys_len > limits.keys_bytes {
            return (out, Some(keys_len));
        }
        if md.key.chars().count() > DEFAULT_MAX_METADATA_KEY_CHARS {
            continue;
        }
        let result = md.result.unwrap_or_default();
        // MAIN trims both before checking their length.
        let mut value = result.value.trim().to_owned();
        let raw_error = result.error.trim();
        let mut error = raw_error.to_owned();
        if value.len() > limits.value_bytes {
            error = format!("value of {} bytes exceeded {} bytes", value.len(), limits.value_bytes);
            // Coder cuts at the byte; a Rust string (and Postgres text) must stay valid UTF-8, so cut at the last
            // character boundary at or below the limit.
            value.truncate(floor_char_boundary(&value, limits.value_bytes));
        }
        if raw_error.len() > limits.error_bytes {
            error = format!("error of {} bytes exceeded {} bytes", raw_error.len(), limits.error_bytes);
        }
        out.push(MetadataUpdate { key: md.key, value, error });
    }
    (out, None)
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    if max >= s.len() {
        return s.len();
    }
    (0..=max).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use agentwire_store::NewMetadata;
    use prost_types::Timestamp;

    use super::super::test_support::{another_agent, fixture};
    use super::*;

    fn md(key: &str, value: &str, error: &str) -> pb::Metadata {
        pb::Metadata {
            key: key.to_owned(),
            result: Some(pb::workspace_agent_metadata::Result {
                // A wildly wrong agent clock: the server must not use it.
                collected_at: Some(Timestamp { seconds: 946_684_800, nanos: 0 }),
                age: 3,
                value: value.to_owned(),
                error: error.to_owned(),
            }),
        }
    }

    async fn describe(f: &super::super::test_support::Fixture, keys: &[&str]) {
        for (i, k) in keys.iter().enumerate() {
            f.store
                .admin()
                .add_metadata_description(
                    f.agent.id,
                    &NewMetadata { key: (*k).to_owned(), display_order: i as i64, ..Default::default() },
                )
                .await
                .expect("metadata description");
        }
    }

    #[tokio::test]
    async fn values_are_batched_capped_and_stamped_by_the_server() {
        let f = fixture().await;
        describe(&f, &["a", "big", "err"]).await;
        let before = f.store.queries().snapshot();
        let start = agentwire_store::now_micros();
        let req = pb::BatchUpdateMetadataRequest {
            metadata: vec![
                md("a", "  hello \n", ""),
                md("big", &"é".repeat(1500), ""),
                md("err", "v", &"x".repeat(2049)),
                md("unknown", "ignored", ""),
            ],
        };
        batch_update_metadata(&f.api, &f.session, req).await.expect("update");
        // The hot path: nothing reaches the database before the batcher flushes.
        assert_eq!(f.store.queries().snapshot().since(&before).total(), 0);

        f.store.flush().await;
        let rows = f.session.scope.list_metadata().await.expect("list");
        let get = |k: &str| rows.iter().find(|m| m.key == k).expect("row").clone();
        assert_eq!(get("a").value, "hello");
        assert_eq!(get("a").error, "");
        assert!(get("a").collected_at >= start, "server clock, not the agent's year-2000 stamp");
        let big = get("big");
        assert_eq!(big.error, "value of 3000 bytes exceeded 2048 bytes");
        assert_eq!(big.value.len(), 2048);
        assert_eq!(big.value, "é".repeat(1024));
        let err = get("err");
        assert_eq!((err.value.as_str(), err.error.as_str()), ("v", "error of 2049 bytes exceeded 2048 bytes"));
        assert!(rows.iter().all(|m| m.key != "unknown"));
    }

    #[tokio::test]
    async fn keys_over_the_budget_fail_after_storing_the_ones_that_fit() {
        let f = fixture().await;
        let k1 = "k".repeat(100);
        let k2 = "m".repeat(100);
        describe(&f, &[&k1, &k2]).await;
        // 100 + 6000 fits (the 6000-byte key is then skipped as too long for any row); + 100 breaks the budget, so
        // the third key is dropped and the call fails with the sum that broke it.
        let filler = "f".repeat(6000);
        let req = pb::BatchUpdateMetadataRequest {
            metadata: vec![md(&k1, "one", ""), md(&filler, "x", ""), md(&k2, "two", "")],
        };
        let err = batch_update_metadata(&f.api, &f.session, req).await.expect_err("over budget");
        assert_eq!(err.to_string(), "metadata keys of 6200 bytes exceeded 6144 bytes");

        f.store.flush().await;
        let rows = f.session.scope.list_metadata().await.expect("list");
        assert_eq!(rows.iter().find(|m| m.key == k1).map(|m| m.value.as_str()), Some("one"));
        assert_eq!(rows.iter().find(|m| m.key == k2).map(|m| m.value.as_str()), Some(""));

        // The session is still usable.
        let ok = pb::BatchUpdateMetadataRequest { metadata: vec![md(&k2, "two", "")] };
        batch_update_metadata(&f.api, &f.session, ok).await.expect("next call");
        f.store.flush().await;
        let rows = f.session.scope.list_metadata().await.expect("list");
        assert_eq!(rows.iter().find(|m| m.key == k2).map(|m| m.value.as_str()), Some("two"));
    }

    #[tokio::test]
    async fn a_session_only_updates_its_own_agent() {
        let f = fixture().await;
        describe(&f, &["shared"]).await;
        let (other, other_session) = another_agent(&f.store, "bob").await;
        f.store
            .admin()
            .add_metadata_description(other.id, &NewMetadata { key: "shared".into(), ..Default::default() })
            .await
            .expect("other description");
        let req = pb::BatchUpdateMetadataRequest { metadata: vec![md("shared", "mine", "")] };
        batch_update_metadata(&f.api, &f.session, req).await.expect("update");
        f.store.flush().await;
        assert_eq!(f.session.scope.list_metadata().await.expect("mine")[0].value, "mine");
        assert_eq!(other_session.scope.list_metadata().await.expect("theirs")[0].value, "");
    }

    #[test]
    fn long_keys_are_skipped_but_counted() {
        let limits = Limits { value_bytes: 10, error_bytes: 10, keys_bytes: 300 };
        let long = "k".repeat(128);
        let (out, overflow) = cap_updates(vec![md(&long, "v", ""), md("ok", "v", "")], &limits);
        assert_eq!(overflow, None);
        assert_eq!(out.iter().map(|u| u.key.as_str()).collect::<Vec<_>>(), vec!["ok"]);
        let (_, overflow) = cap_updates(vec![md(&long, "v", ""), md(&long, "v", ""), md(&long, "v", "")], &limits);
        assert_eq!(overflow, Some(384));
    }
}
