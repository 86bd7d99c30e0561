//! `GET /api/v2/workspaceagents/me/gitsshkey`: the workspace owner's SSH key pair, which `coder gitssh` hands to
//! `ssh -i` for git inside the workspace.
//!
//! coderd makes each user's pair when it creates the user (`gitsshkey.Generate` with the deployment's
//! `--ssh-keygen-algorithm`, ed25519 by default) and answers `agentsdk.GitSSHKey{public_key, private_key}`: the
//! private key as an unencrypted OpenSSH PEM block (`-----BEGIN OPENSSH PRIVATE KEY-----`, 64-column base64, empty
//! comment), the public key in `authorized_keys` form with a trailing newline. agentwire makes the same ed25519 pair,
//! byte for byte in that format, on the owner's first request (its users are made by operators and tests, not by a
//! signup path), stores it in `gitsshkeys`, and answers the stored pair from then on.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Serialize;

use super::{write_json, MeAgent, MeState};
use crate::http::error::ApiError;

/// `agentsdk.GitSSHKey`.
#[derive(Debug, Serialize)]
pub struct GitSshKeyResponse<'a> {
    pub public_key: &'a str,
    pub private_key: &'a str,
}

/// Making a key pair failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyGenError {
    #[error("read random bytes: {0}")]
    Random(getrandom::Error),
}

/// The key type name OpenSSH gives ed25519 keys.
const ED25519: &str = "ssh-ed25519";
/// Go's `pem.EncodeToMemory` line length.
const PEM_LINE: usize = 64;
/// The private section's padding block for an unencrypted key, as `ssh-keygen` (and coderd) write it.
const PRIVATE_BLOCK: usize = 8;

/// A new ed25519 pair as coderd's `gitsshkey.Generate(AlgorithmEd25519)` returns it: the OpenSSH PEM private key and
/// the `authorized_keys` line.
pub fn generate_ed25519() -> Result<(String, String), KeyGenError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(KeyGenError::Random)?;
    let mut check = [0u8; 4];
    getrandom::fill(&mut check).map_err(KeyGenError::Random)?;
    Ok(encode_ed25519(&seed, check))
}

/// The pair of the ed25519 key with this seed; `check` is the private section's random check word.
pub fn encode_ed25519(seed: &[u8; 32], check: [u8; 4]) -> (String, String) {
    let signing = ed25519_dalek::SigningKey::from_bytes(seed);
    let public = signing.verifying_key().to_bytes();

    let mut public_blob = Vec::with_capacity(51);
    put_string(&mut public_blob, ED25519.as_bytes());
    put_string(&mut public_blob, &public);

    // checkint ×2, key type, public key, private key (seed ‖ public, Go's 64-byte form), comment, padding 1, 2, 3…
    let mut private = Vec::with_capacity(136);
    private.extend_from_slice(&check);
    private.extend_from_slice(&check);
    put_string(&mut private, ED25519.as_bytes());
    put_string(&mut private, &public);
    put_string(&mut private, &signing.to_keypair_bytes());
    put_string(&mut private, b"");
    let pad = (PRIVATE_BLOCK - private.len() % PRIVATE_BLOCK) % PRIVATE_BLOCK;
    private.extend((1..=pad).map(|i| i as u8));

    let mut key = b"openssh-key-v1\0".to_vec();
    put_string(&mut key, b"none"); // cipher
    put_string(&mut key, b"none"); // KDF
    put_string(&mut key, b""); // KDF options
    key.extend_from_slice(&1u32.to_be_bytes()); // number of keys
    put_string(&mut key, &public_blob);
    put_string(&mut key, &private);

    let b64 = base64::engine::general_purpose::STANDARD;
    let body = b64.encode(&key);
    let mut pem = String::from("-----BEGIN OPENSSH PRIVATE KEY-----\n");
    for line in body.as_bytes().chunks(PEM_LINE) {
        // Base64 is ASCII, so every chunk is a whole string.
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END OPENSSH PRIVATE KEY-----\n");
    let authorized = format!("{ED25519} {}\n", b64.encode(&public_blob));
    (pem, authorized)
}

/// SSH's `string`: a big-endian u32 length, then the bytes.
fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    // Every string here is a few dozen bytes.
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

pub async fn git_ssh_key(State(state): State<MeState>, MeAgent(agent): MeAgent) -> Response {
    let internal = |message: &str, detail: String| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message).detail(detail).into_response()
    };
    let scope = state.app.store().into_agent_scope(agent);
    let key = match scope.owner_git_ssh_key().await {
        Ok(Some(key)) => key,
        Ok(None) => {
            let (private_key, public_key) = match generate_ed25519() {
                Ok(pair) => pair,
                Err(err) => return internal("Internal error generating a new SSH keypair.", err.to_string()),
            };
            match scope.insert_owner_git_ssh_key(&private_key, &public_key).await {
                Ok(key) => {
                    tracing::info!(user_id = %key.user_id, "made the user's git SSH key");
                    key
                }
                Err(err) => {
                    tracing::error!(error = %err, "storing a git SSH key");
                    return internal("Internal error fetching git SSH key.", err.to_string());
                }
            }
        }
        Err(err) => {
            tracing::error!(error = %err, "reading a git SSH key");
            return internal("Internal error fetching git SSH key.", err.to_string());
        }
    };
    write_json(StatusCode::OK, &GitSshKeyResponse { public_key: &key.public_key, private_key: &key.private_key })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8032's first test vector, as `ssh-keygen` would write it with check word 0x01020304: the body decodes
    /// back to the fields coderd's `MarshalED25519PrivateKey` writes, in that order.
    #[test]
    fn the_private_key_has_coders_openssh_layout() {
        let seed: [u8; 32] = [
            0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a, 0xf4, 0x92, 0xec, 0x2c, 0xc4, 0x44, 0x49,
            0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19, 0x70, 0x3b, 0xac, 0x03, 0x1c, 0xae, 0x7f, 0x60,
        ];
        let (pem, public) = encode_ed25519(&seed, [1, 2, 3, 4]);
        assert_eq!(public, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea\n");
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines.first(), Some(&"-----BEGIN OPENSSH PRIVATE KEY-----"));
        assert_eq!(lines.last(), Some(&"-----END OPENSSH PRIVATE KEY-----"));
        assert!(lines[1..lines.len() - 1].iter().all(|l| l.len() <= PEM_LINE));
        assert!(lines[1..lines.len() - 2].iter().all(|l| l.len() == PEM_LINE));
        let body = base64::engine::general_purpose::STANDARD.decode(lines[1..lines.len() - 1].concat()).unwrap();
        let public_key = hex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
        let mut expect = b"openssh-key-v1\0".to_vec();
        for s in [&b"none"[..], b"none", b""] {
            put_string(&mut expect, s);
        }
        expect.extend_from_slice(&[0, 0, 0, 1]);
        let mut blob = Vec::new();
        put_string(&mut blob, b"ssh-ed25519");
        put_string(&mut blob, &public_key);
        put_string(&mut expect, &blob);
        let mut private = vec![1, 2, 3, 4, 1, 2, 3, 4];
        put_string(&mut private, b"ssh-ed25519");
        put_string(&mut private, &public_key);
        put_string(&mut private, &[&seed[..], &public_key].concat());
        put_string(&mut private, b"");
        assert_eq!(private.len(), 131);
        private.extend_from_slice(&[1, 2, 3, 4, 5]);
        put_string(&mut expect, &private);
        assert_eq!(body, expect);
    }

    #[test]
    fn every_pair_is_new() {
        let (a, a_pub) = generate_ed25519().unwrap();
        let (b, b_pub) = generate_ed25519().unwrap();
        assert_ne!(a, b);
        assert_ne!(a_pub, b_pub);
        assert!(a_pub.starts_with("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI") && a_pub.ends_with('\n'));
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }
}
