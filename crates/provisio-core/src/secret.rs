//! Encryption at rest for secrets (server credentials, service passwords, secret settings).
//!
//! Secrets are sealed with XChaCha20-Poly1305 under one 32-byte key before they reach the
//! store; inside a settings object a sealed value is the marker `{"$sealed": "<base64>"}`, so
//! settings keep one JSON shape whether they hold plaintext (on the way in) or not.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde_json::Value;

use crate::settings::{Settings, SettingsSchema};

const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
/// The key that marks a sealed value inside a settings object.
pub const SEALED_MARKER: &str = "$sealed";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the secret key must be 32 bytes encoded as 64 hex characters or base64")]
    BadKey,
    /// Wrong key or tampered data: the message says nothing about the content.
    #[error("a stored secret could not be decrypted (wrong secret key or corrupted data)")]
    Undecryptable,
}

/// Ciphertext as stored: version byte, nonce, then the AEAD output.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed(pub Vec<u8>);

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealed({} bytes)", self.0.len())
    }
}

/// Seals and opens secrets under the instance's key.
pub struct Cipher {
    aead: XChaCha20Poly1305,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(..)")
    }
}

impl Cipher {
    pub fn new(key: &SecretBox<[u8; 32]>) -> Self {
        Self {
            aead: XChaCha20Poly1305::new(key.expose_secret().into()),
        }
    }

    /// A fresh random key, for the key file written on first start.
    pub fn generate_key() -> SecretBox<[u8; 32]> {
        let mut k = Box::new([0u8; 32]);
        rand::thread_rng().fill_bytes(&mut k[..]);
        SecretBox::new(k)
    }

    /// Parses a key given as 64 hex characters or as base64 of 32 bytes.
    pub fn parse_key(text: &str) -> Result<SecretBox<[u8; 32]>, SecretError> {
        let t = text.trim();
        let bytes = if t.len() == 64 && t.chars().all(|c| c.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&t[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|_| SecretError::BadKey)?
        } else {
            B64.decode(t).map_err(|_| SecretError::BadKey)?
        };
        let arr: [u8; 32] = bytes.try_into().map_err(|_| SecretError::BadKey)?;
        Ok(SecretBox::new(Box::new(arr)))
    }

    /// The key as 64 hex characters, for writing the key file.
    pub fn format_key(key: &SecretBox<[u8; 32]>) -> SecretString {
        let hex: String = key
            .expose_secret()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        SecretString::from(hex)
    }

    pub fn seal(&self, plaintext: &[u8]) -> Sealed {
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ct = self
            .aead
            .encrypt(XNonce::from_slice(&nonce), plaintext)
            .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Sealed(out)
    }

    pub fn seal_str(&self, s: &SecretString) -> Sealed {
        self.seal(s.expose_secret().as_bytes())
    }

    pub fn open(&self, sealed: &Sealed) -> Result<SecretString, SecretError> {
        let b = &sealed.0;
        if b.len() < 1 + NONCE_LEN || b[0] != VERSION {
            return Err(SecretError::Undecryptable);
        }
        let pt = self
            .aead
            .decrypt(
                XNonce::from_slice(&b[1..1 + NONCE_LEN]),
                &b[1 + NONCE_LEN..],
            )
            .map_err(|_| SecretError::Undecryptable)?;
        String::from_utf8(pt)
            .map(SecretString::from)
            .map_err(|_| SecretError::Undecryptable)
    }

    /// Replaces the plaintext of every secret field of `schema` in `settings` by a sealed
    /// marker. Values already sealed are kept.
    pub fn seal_settings(&self, schema: &SettingsSchema, settings: &mut Settings) {
        for name in schema.secret_fields() {
            if let Some(Value::String(plain)) = settings.get(name) {
                let sealed = self.seal(plain.as_bytes());
                settings.insert(name.to_string(), sealed_marker(&sealed));
            }
        }
    }

    /// Replaces every sealed marker by its plaintext, for handing settings to a module.
    pub fn open_settings(&self, settings: &Settings) -> Result<Settings, SecretError> {
        let mut out = settings.clone();
        for v in out.values_mut() {
            if let Some(sealed) = as_sealed(v) {
                let plain = self.open(&sealed)?;
                *v = Value::String(plain.expose_secret().to_string());
            }
        }
        Ok(out)
    }
}

fn sealed_marker(s: &Sealed) -> Value {
    let mut m = serde_json::Map::new();
    m.insert(SEALED_MARKER.into(), Value::String(B64.encode(&s.0)));
    Value::Object(m)
}

/// The ciphertext inside a sealed marker, if `v` is one.
pub fn as_sealed(v: &Value) -> Option<Sealed> {
    let obj = v.as_object()?;
    if obj.len() != 1 {
        return None;
    }
    let b64 = obj.get(SEALED_MARKER)?.as_str()?;
    B64.decode(b64).ok().map(Sealed)
}

/// Settings fit to show: sealed values removed, their names returned separately so a
/// caller can tell that a secret is set without seeing it.
pub fn redact_settings(settings: &Settings) -> (Settings, Vec<String>) {
    let mut shown = Settings::new();
    let mut secrets = Vec::new();
    for (k, v) in settings {
        if as_sealed(v).is_some() {
            secrets.push(k.clone());
        } else {
            shown.insert(k.clone(), v.clone());
        }
    }
    (shown, secrets)
}

/// Generates a random password of `len` characters from an alphabet that avoids
/// look-alike characters and shell metacharacters.
pub fn generate_password(len: usize) -> SecretString {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::thread_rng();
    let s: String = (0..len)
        .map(|_| ALPHABET[(rng.next_u32() as usize) % ALPHABET.len()] as char)
        .collect();
    SecretString::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_roundtrip_and_tamper() {
        let c = Cipher::new(&Cipher::generate_key());
        let s = c.seal(b"hunter2");
        assert!(!s.0.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(c.open(&s).unwrap().expose_secret(), "hunter2");
        let mut bad = s.clone();
        *bad.0.last_mut().unwrap() ^= 1;
        assert!(c.open(&bad).is_err());
        let other = Cipher::new(&Cipher::generate_key());
        assert!(other.open(&s).is_err());
    }

    #[test]
    fn key_formats() {
        let k = Cipher::generate_key();
        let hex = Cipher::format_key(&k);
        let back = Cipher::parse_key(hex.expose_secret()).unwrap();
        assert_eq!(k.expose_secret(), back.expose_secret());
        assert!(Cipher::parse_key("short").is_err());
    }
}
