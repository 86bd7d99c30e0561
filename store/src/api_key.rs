//! User API keys: Coder's `<id>-<secret>` shape, the secret's hash, the token lookup, and the metadata read a
//! key's owner may do for a watcher. Creating a key is an operator write ([`crate::Admin::create_api_key`]).

use uuid::Uuid;

use crate::backend::LookupSql;
use crate::model::Metadata;
use crate::{Store, StoreError};

/// Characters of a key's id and secret (Coder's `cryptorand.String` default: letters and digits).
const API_KEY_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
/// Length of a key's id, the part before the `-` (Coder's `GenerateAPIKeyIDSecret`).
pub const API_KEY_ID_LEN: usize = 10;
/// Length of a key's secret, the part after the `-`.
pub const API_KEY_SECRET_LEN: usize = 22;

/// Lowercase hex SHA-256, as `api_keys.hashed_secret` holds it.
pub(crate) fn hash_api_key_secret(secret: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(secret.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// `n` random characters of [`API_KEY_ALPHABET`], from the OS generator (through v4 UUIDs), unbiased.
pub(crate) fn random_api_key_chars(n: usize) -> String {
    let mut out = String::with_capacity(n);
    while out.len() < n {
        let bytes = *Uuid::new_v4().as_bytes();
        // Bytes 6 and 8 carry the UUID's version and variant bits; the other 14 are random.
        for (i, b) in bytes.into_iter().enumerate() {
            // 248 = 4 × 62: rejecting the rest keeps every character equally likely.
            if i == 6 || i == 8 || b >= 248 || out.len() == n {
                continue;
            }
            out.push(char::from(API_KEY_ALPHABET[usize::from(b) % API_KEY_ALPHABET.len()]));
        }
    }
    out
}

/// Splits `<id>-<secret>` when both parts have Coder's shape.
fn split_api_key(token: &str) -> Option<(&str, &str)> {
    let (key_id, secret) = token.split_once('-')?;
    let shaped = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_alphanumeric());
    (shaped(key_id, API_KEY_ID_LEN) && shaped(secret, API_KEY_SECRET_LEN)).then_some((key_id, secret))
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Store {
    /// The user a `<id>-<secret>` API token belongs to: **one** query by key id, then the secret's hash compared
    /// in constant time. `Ok(None)` for a malformed token (no query then), an unknown id, a wrong secret, an
    /// expired key or a deleted user.
    pub async fn user_by_api_key(&self, token: &str) -> Result<Option<Uuid>, StoreError> {
        let Some((key_id, secret)) = split_api_key(token) else {
            return Ok(None);
        };
        self.core().db.user_by_api_key(key_id, &hash_api_key_secret(secret)).await
    }

    /// An agent's metadata for a watcher: **one** query that also checks `user_id` owns the agent's workspace.
    /// `Ok(None)` when the agent is unknown, deleted, or not the user's; otherwise the rows
    /// [`AgentScope::list_metadata`](crate::AgentScope::list_metadata) returns, in the same order.
    pub async fn agent_metadata_for_user(
        &self,
        user_id: Uuid,
        agent_id: Uuid,
    ) -> Result<Option<Vec<Metadata>>, StoreError> {
        self.core().db.agent_metadata_for_user(user_id, agent_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_coders_shape_and_hash_to_hex() {
        let (a, b) = (random_api_key_chars(API_KEY_ID_LEN), random_api_key_chars(API_KEY_SECRET_LEN));
        let token = format!("{a}-{b}");
        assert_eq!(split_api_key(&token), Some((a.as_str(), b.as_str())));
        assert_ne!(random_api_key_chars(API_KEY_SECRET_LEN), b);
        assert_eq!(split_api_key("short-x"), None);
        assert_eq!(split_api_key(&format!("{a}{b}")), None);
        assert_eq!(split_api_key(&format!("{a}-{b}!")), None);
        assert_eq!(hash_api_key_secret("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(constant_time_eq(b"ab", b"ab") && !constant_time_eq(b"ab", b"ac") && !constant_time_eq(b"a", b"ab"));
    }
}
