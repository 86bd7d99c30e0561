//! Node keys and the NaCl box (curve25519, xsalsa20poly1305) that DERP's login uses: the client seals its info to the
//! server's key and the server seals its info back, each box a 24-byte nonce followed by the sealed bytes, as
//! tailscale's `key.NodePrivate.SealTo`/`OpenFrom` lay it out. Packets themselves are never opened: they are
//! WireGuard's, between the peers.

use std::fmt;

use crypto_box::aead::{Aead, AeadCore, OsRng};
use crypto_box::{PublicKey, SalsaBox, SecretKey};

pub const KEY_LEN: usize = 32;
/// NaCl box nonce. The box belongs to the keys; the frame codec only sizes what it carries.
pub const NONCE_LEN: usize = 24;
/// NaCl box authenticator (Poly1305).
pub const BOX_OVERHEAD: usize = 16;

/// A curve25519 public key: a node's address on the relay.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeKey(pub [u8; KEY_LEN]);

impl NodeKey {
    /// The all-zero key, which no private key has: tailscale treats it as "none".
    pub fn is_zero(&self) -> bool {
        self.0 == [0; KEY_LEN]
    }

    /// Lower-case hex, as tailscale's `UntypedHexString` (the `Derp-Public-Key` header).
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // tailscale's ShortString: enough to tell keys apart in logs.
        write!(f, "[{}]", &self.hex()[..10])
    }
}

impl fmt::Display for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BoxError {
    #[error("the box is shorter than its nonce")]
    Short,
    #[error("the box does not open with these keys")]
    Open,
    #[error("the zero key cannot seal or open")]
    ZeroKey,
}

/// A node's private key: the relay's own, or a client's in tests.
pub struct PrivateKey {
    secret: SecretKey,
    public: NodeKey,
}

impl PrivateKey {
    /// A fresh key from the OS's randomness; the relay makes one per start, as coderd does.
    pub fn generate() -> Self {
        Self::from_secret(SecretKey::generate(&mut OsRng))
    }

    /// A key from its 32 secret bytes (clamped by curve25519 as usual).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self::from_secret(SecretKey::from(bytes))
    }

    fn from_secret(secret: SecretKey) -> Self {
        let public = NodeKey(*secret.public_key().as_bytes());
        PrivateKey { secret, public }
    }

    pub fn public(&self) -> NodeKey {
        self.public
    }

    /// A box of `cleartext` from this key to `to`: a random nonce, then the sealed bytes.
    pub fn seal_to(&self, to: &NodeKey, cleartext: &[u8]) -> Result<Vec<u8>, BoxError> {
        let nonce = SalsaBox::generate_nonce(&mut OsRng);
        self.seal_with_nonce(to, nonce.into(), cleartext)
    }

    fn seal_with_nonce(&self, to: &NodeKey, nonce: [u8; NONCE_LEN], cleartext: &[u8]) -> Result<Vec<u8>, BoxError> {
        if to.is_zero() {
            return Err(BoxError::ZeroKey);
        }
        let sealed = self.salsa_box(to).encrypt(&nonce.into(), cleartext).map_err(|_| BoxError::Open)?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens a box that `from` sealed to this key.
    pub fn open_from(&self, from: &NodeKey, boxed: &[u8]) -> Result<Vec<u8>, BoxError> {
        if from.is_zero() {
            return Err(BoxError::ZeroKey);
        }
        if boxed.len() < NONCE_LEN {
            return Err(BoxError::Short);
        }
        let (nonce, sealed) = boxed.split_at(NONCE_LEN);
        let mut n = [0; NONCE_LEN];
        n.copy_from_slice(nonce);
        self.salsa_box(from).decrypt(&n.into(), sealed).map_err(|_| BoxError::Open)
    }

    fn salsa_box(&self, peer: &NodeKey) -> SalsaBox {
        SalsaBox::new(&PublicKey::from(peer.0), &self.secret)
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey(public {:?})", self.public)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
    }

    fn counting(from: u8) -> [u8; 32] {
        std::array::from_fn(|i| from + i as u8)
    }

    /// Go's `golang.org/x/crypto/nacl/box.Seal(nonce, msg, nonce, bPub, aPriv)`, as tailscale's `SealTo` calls it,
    /// with a = 1..=32, b = 0x80.., nonce = 0x40.., msg = `{"version":2}`.
    const GO_SEALED: &str =
        "404142434445464748494a4b4c4d4e4f5051525354555657d79c604271dd712754f175c4f3d90e10aabff780ce9e4399\
                             be2b0042fb";

    #[test]
    fn boxes_match_go_nacl_byte_for_byte() {
        let a = PrivateKey::from_bytes(counting(1));
        let b = PrivateKey::from_bytes(counting(0x80));
        assert_eq!(a.public().hex(), "07a37cbc142093c8b755dc1b10e86cb426374ad16aa853ed0bdfc0b2b86d1c7c");
        assert_eq!(b.public().hex(), "493e82fc74464a59268817623d2053c5eb8e2cc4a988b4fee179ec6b010d531d");
        let nonce: [u8; NONCE_LEN] = std::array::from_fn(|i| 0x40 + i as u8);
        let sealed = a.seal_with_nonce(&b.public(), nonce, br#"{"version":2}"#).unwrap();
        assert_eq!(sealed, unhex(GO_SEALED));
        assert_eq!(b.open_from(&a.public(), &unhex(GO_SEALED)).unwrap(), br#"{"version":2}"#);
    }

    #[test]
    fn a_box_opens_only_with_the_right_keys() {
        let (a, b, c) = (PrivateKey::generate(), PrivateKey::generate(), PrivateKey::generate());
        let sealed = a.seal_to(&b.public(), b"hello").unwrap();
        assert_eq!(b.open_from(&a.public(), &sealed).unwrap(), b"hello");
        assert_eq!(c.open_from(&a.public(), &sealed), Err(BoxError::Open));
        assert_eq!(b.open_from(&c.public(), &sealed), Err(BoxError::Open));
        let mut tampered = sealed.clone();
        tampered[30] ^= 1;
        assert_eq!(b.open_from(&a.public(), &tampered), Err(BoxError::Open));
        assert_eq!(b.open_from(&a.public(), &sealed[..10]), Err(BoxError::Short));
        assert_eq!(b.open_from(&NodeKey([0; 32]), &sealed), Err(BoxError::ZeroKey));
        assert_eq!(a.seal_to(&NodeKey([0; 32]), b"x"), Err(BoxError::ZeroKey));
    }
}
