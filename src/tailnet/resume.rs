//! Tailnet resume tokens, as coderd issues and checks them (`tailnet/resume.go`, `coderd/jwtutils`): a client
//! calls `RefreshResumeToken` on the coordinate connection and gets a token naming its peer id; when it reconnects
//! with `?resume_token=…`, the coordinate endpoint gives it the same peer id again, so the agent keeps the tunnel
//! and its peers see an update instead of a lost peer and a new one.
//!
//! The token is coderd's: a compact JWS, HS512, header `{"alg":"HS512","kid":KEY_ID}`, claims
//! `{"sub":PEER_ID,"exp":UNIX_SECONDS}`, valid for 24 h and refreshed after 12 h (coderd's
//! `DefaultResumeTokenExpiry` and half of it). coderd keeps its signing keys in its `crypto_keys` table and rotates
//! them; agentwire keeps one 64-byte key per deployment in `site_configs` (key
//! [`SITE_CONFIG_RESUME_SIGNING_KEY`]), made by the first replica that needs it, so a token one replica issued is
//! good on every other. A token without a key id is an old token: coderd ignores it and gives a fresh peer id, and
//! so does [`ResumeError::MissingKeyId`]'s caller. Agents get no tokens: coderd's agent endpoint has no resume token
//! provider, and its agents never ask.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agentwire_store::{Store, StoreError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha512;
use uuid::Uuid;

use crate::proto::tailnet::v2 as pb;

/// `site_configs` key of the deployment's resume token signing key (JSON `{"id": …, "secret": hex}`).
pub const SITE_CONFIG_RESUME_SIGNING_KEY: &str = "tailnet_resume_signing_key";
/// How long a token is good for (coderd's `DefaultResumeTokenExpiry`); clients refresh it after half of it.
pub const DEFAULT_RESUME_TOKEN_EXPIRY: Duration = Duration::from_secs(24 * 60 * 60);
/// Longest token checked; coderd's are about 200 bytes. Longer ones are refused unread.
pub const DEFAULT_MAX_RESUME_TOKEN_LEN: usize = 2048;
/// Clock skew allowed on `exp`, `nbf` and `iat` (go-jose's `jwt.DefaultLeeway`, which coderd's check uses).
pub const LEEWAY_SECS: i64 = 60;
/// coderd's `jwtutils.SigningAlgo`.
const ALGORITHM: &str = "HS512";
/// coderd's `ResumeTokenSigningKey`: 64 random bytes.
const KEY_LEN: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error("resume token is {len} bytes, more than {max}")]
    TooLong { len: usize, max: usize },
    #[error("parse JWS: {0}")]
    Malformed(&'static str),
    #[error("expected JWS algorithm to be \"HS512\", got {0:?}")]
    Algorithm(String),
    /// coderd's `jwtutils.ErrMissingKeyID`: an old token, ignored rather than refused.
    #[error("missing key ID")]
    MissingKeyId,
    #[error("key with id {0:?}: not found")]
    UnknownKey(String),
    #[error("verify payload: invalid signature")]
    Signature,
    #[error("validation failed, token is expired (exp)")]
    Expired,
    #[error("validation failed, token not valid yet (nbf or iat)")]
    NotYetValid,
    #[error("parse peerID from token: {0}")]
    Subject(String),
    #[error("reading the resume signing key: {0}")]
    Store(#[from] StoreError),
    #[error("the stored resume signing key does not decode: {0}")]
    StoredKey(String),
    #[error("generating a resume signing key: {0}")]
    Random(getrandom::Error),
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    id: String,
    /// Hex.
    secret: String,
}

struct SigningKey {
    id: String,
    secret: [u8; KEY_LEN],
}

impl SigningKey {
    fn generate() -> Result<Self, ResumeError> {
        let mut secret = [0u8; KEY_LEN];
        getrandom::fill(&mut secret).map_err(ResumeError::Random)?;
        Ok(SigningKey { id: Uuid::new_v4().to_string(), secret })
    }

    fn decode(json: &str) -> Result<Self, ResumeError> {
        let stored: StoredKey = serde_json::from_str(json).map_err(|err| ResumeError::StoredKey(err.to_string()))?;
        let bytes = hex_decode(&stored.secret).ok_or_else(|| ResumeError::StoredKey("secret is not hex".into()))?;
        let secret: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| ResumeError::StoredKey(format!("secret is {} bytes, not {KEY_LEN}", b.len())))?;
        if stored.id.is_empty() {
            return Err(ResumeError::StoredKey("empty id".into()));
        }
        Ok(SigningKey { id: stored.id, secret })
    }

    fn encode(&self) -> String {
        let secret = self.secret.iter().map(|b| format!("{b:02x}")).collect();
        serde_json::json!(StoredKey { id: self.id.clone(), secret }).to_string()
    }

    fn mac(&self) -> Hmac<Sha512> {
        // HMAC takes a key of any length; this cannot fail.
        <Hmac<Sha512> as KeyInit>::new_from_slice(&self.secret).unwrap_or_else(|_| unreachable!())
    }
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok())).collect()
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    kid: String,
}

#[derive(Serialize, Deserialize)]
struct Claims {
    #[serde(default)]
    sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<i64>,
}

/// Issues and checks resume tokens with the deployment's key, read (or made) once and kept.
pub struct ResumeTokens {
    store: Store,
    expiry: Duration,
    max_len: usize,
    key: tokio::sync::Mutex<Option<Arc<SigningKey>>>,
}

impl ResumeTokens {
    pub fn new(store: Store) -> Self {
        Self::with_limits(store, DEFAULT_RESUME_TOKEN_EXPIRY, DEFAULT_MAX_RESUME_TOKEN_LEN)
    }

    /// As [`ResumeTokens::new`], with another expiry (see [`DEFAULT_RESUME_TOKEN_EXPIRY`]) and token length bound
    /// (see [`DEFAULT_MAX_RESUME_TOKEN_LEN`]).
    pub fn with_limits(store: Store, expiry: Duration, max_len: usize) -> Self {
        ResumeTokens { store, expiry, max_len, key: tokio::sync::Mutex::new(None) }
    }

    /// A token for `peer_id`, as coderd's `GenerateResumeToken` answers RefreshResumeToken.
    pub async fn generate(&self, peer_id: Uuid) -> Result<pb::RefreshResumeTokenResponse, ResumeError> {
        self.generate_at(peer_id, now_unix()).await
    }

    async fn generate_at(&self, peer_id: Uuid, now: i64) -> Result<pb::RefreshResumeTokenResponse, ResumeError> {
        let key = self.current_key().await?;
        let expiry = i64::try_from(self.expiry.as_secs()).unwrap_or(i64::MAX);
        let exp = now.saturating_add(expiry);
        let header = Header { alg: ALGORITHM.to_owned(), kid: key.id.clone() };
        let claims = Claims { sub: peer_id.to_string(), exp: Some(exp), nbf: None, iat: None };
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::json!(header).to_string()),
            URL_SAFE_NO_PAD.encode(serde_json::json!(claims).to_string())
        );
        let mut mac = key.mac();
        mac.update(signing_input.as_bytes());
        let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()));
        let half = self.expiry / 2;
        Ok(pb::RefreshResumeTokenResponse {
            token,
            refresh_in: Some(prost_types::Duration {
                seconds: i64::try_from(half.as_secs()).unwrap_or(i64::MAX),
                nanos: i32::try_from(half.subsec_nanos()).unwrap_or(0),
            }),
            expires_at: Some(prost_types::Timestamp { seconds: exp, nanos: 0 }),
        })
    }

    /// The peer id a token names, if this deployment signed it and it has not expired.
    pub async fn verify(&self, token: &str) -> Result<Uuid, ResumeError> {
        self.verify_at(token, now_unix()).await
    }

    async fn verify_at(&self, token: &str, now: i64) -> Result<Uuid, ResumeError> {
        if token.len() > self.max_len {
            return Err(ResumeError::TooLong { len: token.len(), max: self.max_len });
        }
        let mut parts = token.split('.');
        let (Some(header_part), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ResumeError::Malformed("compact JWS format must have three parts"));
        };
        let header: Header = URL_SAFE_NO_PAD
            .decode(header_part)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or(ResumeError::Malformed("bad protected header"))?;
        if header.alg != ALGORITHM {
            return Err(ResumeError::Algorithm(header.alg));
        }
        if header.kid.is_empty() {
            return Err(ResumeError::MissingKeyId);
        }
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| ResumeError::Malformed("bad signature"))?;
        let key = self.key_for(&header.kid).await?;
        let mut mac = key.mac();
        mac.update(header_part.as_bytes());
        mac.update(b".");
        mac.update(payload.as_bytes());
        mac.verify_slice(&signature).map_err(|_| ResumeError::Signature)?;
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or(ResumeError::Malformed("bad payload"))?;
        // go-jose's checks with its leeway; coderd always writes exp, so a token without one is not coderd's.
        match claims.exp {
            Some(exp) if now.saturating_sub(LEEWAY_SECS) <= exp => {}
            _ => return Err(ResumeError::Expired),
        }
        if claims.nbf.is_some_and(|nbf| now.saturating_add(LEEWAY_SECS) < nbf)
            || claims.iat.is_some_and(|iat| now.saturating_add(LEEWAY_SECS) < iat)
        {
            return Err(ResumeError::NotYetValid);
        }
        Uuid::parse_str(&claims.sub).map_err(|err| ResumeError::Subject(err.to_string()))
    }

    /// The key tokens are signed with: the stored one, or one made and stored now.
    async fn current_key(&self) -> Result<Arc<SigningKey>, ResumeError> {
        let mut cached = self.key.lock().await;
        if let Some(key) = cached.as_ref() {
            return Ok(key.clone());
        }
        let key = match self.stored_key().await? {
            Some(key) => key,
            None => {
                let fresh = SigningKey::generate()?;
                self.store.admin().set_site_config(SITE_CONFIG_RESUME_SIGNING_KEY, &fresh.encode()).await?;
                // Read back: of two replicas making a key at once, both keep the one written last (the other's
                // tokens until then are re-read below, or refused as coderd refuses a rotated-out key's).
                self.stored_key().await?.unwrap_or(fresh)
            }
        };
        let key = Arc::new(key);
        *cached = Some(key.clone());
        Ok(key)
    }

    /// The key named `kid`: the cached one, or the stored one when another replica stored a key after this one
    /// read it.
    async fn key_for(&self, kid: &str) -> Result<Arc<SigningKey>, ResumeError> {
        let current = self.current_key().await?;
        if current.id == kid {
            return Ok(current);
        }
        match self.stored_key().await? {
            Some(stored) if stored.id == kid => {
                let stored = Arc::new(stored);
                *self.key.lock().await = Some(stored.clone());
                Ok(stored)
            }
            _ => Err(ResumeError::UnknownKey(kid.to_owned())),
        }
    }

    async fn stored_key(&self) -> Result<Option<SigningKey>, ResumeError> {
        self.store.site_config(SITE_CONFIG_RESUME_SIGNING_KEY).await?.as_deref().map(SigningKey::decode).transpose()
    }
}

fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn tokens() -> ResumeTokens {
        let store = Store::open("sqlite::memory:", agentwire_store::StoreOptions::default()).await.unwrap();
        ResumeTokens::new(store)
    }

    #[tokio::test]
    async fn a_token_names_its_peer_until_it_expires() {
        let tokens = tokens().await;
        let peer = Uuid::new_v4();
        let now = 1_700_000_000;
        let response = tokens.generate_at(peer, now).await.unwrap();
        assert_eq!(response.refresh_in.unwrap().seconds, 12 * 3600);
        assert_eq!(response.expires_at.unwrap().seconds, now + 24 * 3600);
        assert_eq!(tokens.verify_at(&response.token, now).await.unwrap(), peer);
        let exp = now + 24 * 3600;
        assert_eq!(tokens.verify_at(&response.token, exp + LEEWAY_SECS).await.unwrap(), peer);
        assert!(matches!(tokens.verify_at(&response.token, exp + LEEWAY_SECS + 1).await, Err(ResumeError::Expired)));

        // coderd's shape: HS512 with a key id, the peer id as the subject.
        let header = response.token.split('.').next().unwrap();
        let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
        assert_eq!(header["alg"], "HS512");
        assert!(header["kid"].as_str().is_some_and(|k| !k.is_empty()));
    }

    #[tokio::test]
    async fn the_key_is_the_deployments_and_survives_a_restart() {
        let store = Store::open("sqlite::memory:", agentwire_store::StoreOptions::default()).await.unwrap();
        let first = ResumeTokens::new(store.clone());
        let token = first.generate(Uuid::new_v4()).await.unwrap().token;
        let stored = store.site_config(SITE_CONFIG_RESUME_SIGNING_KEY).await.unwrap().unwrap();
        assert_eq!(SigningKey::decode(&stored).unwrap().secret.len(), KEY_LEN);
        // Another replica (or the next start) reads the same key.
        let second = ResumeTokens::new(store.clone());
        assert!(second.verify(&token).await.is_ok());

        // A key stored by another replica after this one cached its own is picked up for that key's tokens.
        let other = SigningKey::generate().unwrap();
        store.admin().set_site_config(SITE_CONFIG_RESUME_SIGNING_KEY, &other.encode()).await.unwrap();
        let third = ResumeTokens::new(store);
        let from_other = third.generate(Uuid::new_v4()).await.unwrap().token;
        assert!(first.verify(&from_other).await.is_ok());
    }

    #[tokio::test]
    async fn forged_and_foreign_tokens_are_refused() {
        let tokens = tokens().await;
        let token = tokens.generate(Uuid::new_v4()).await.unwrap().token;
        let (rest, _) = token.rsplit_once('.').unwrap();
        let forged = format!("{rest}.{}", URL_SAFE_NO_PAD.encode([0u8; 64]));
        assert!(matches!(tokens.verify(&forged).await, Err(ResumeError::Signature)));

        // Another deployment's key id.
        let foreign =
            ResumeTokens::new(Store::open("sqlite::memory:", agentwire_store::StoreOptions::default()).await.unwrap());
        let foreign = foreign.generate(Uuid::new_v4()).await.unwrap().token;
        assert!(matches!(tokens.verify(&foreign).await, Err(ResumeError::UnknownKey(_))));

        // No key id: an old token, which the endpoint ignores.
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS512"}"#);
        let no_kid = format!("{header}.e30.{}", URL_SAFE_NO_PAD.encode([0u8; 64]));
        assert!(matches!(tokens.verify(&no_kid).await, Err(ResumeError::MissingKeyId)));

        let none = format!("{}.e30.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"x"}"#));
        assert!(matches!(tokens.verify(&none).await, Err(ResumeError::Algorithm(_))));
        for bad in ["", "a.b", "a.b.c.d", "!!.!!.!!"] {
            assert!(matches!(tokens.verify(bad).await, Err(ResumeError::Malformed(_))), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_token_longer_than_the_limit_is_refused_unread() {
        let store = Store::open("sqlite::memory:", agentwire_store::StoreOptions::default()).await.unwrap();
        let tokens = ResumeTokens::with_limits(store.clone(), DEFAULT_RESUME_TOKEN_EXPIRY, 100);
        let token = ResumeTokens::new(store).generate(Uuid::new_v4()).await.unwrap().token;
        assert!(token.len() > 100 && token.len() <= DEFAULT_MAX_RESUME_TOKEN_LEN, "{}", token.len());
        assert!(matches!(tokens.verify(&token).await, Err(ResumeError::TooLong { max: 100, .. })));
        let long = "a".repeat(DEFAULT_MAX_RESUME_TOKEN_LEN + 1);
        assert!(matches!(
            ResumeTokens::new(tokens.store.clone()).verify(&long).await,
            Err(ResumeError::TooLong { .. })
        ));
    }
}
