//! Encryption at rest for secrets (server credentials, service passwords, secret settings,
//! handler signing secrets).
//!
//! Secrets are sealed with XChaCha20-Poly1305 under a 32-byte key before they reach the
//! store; inside a settings object a sealed value is the marker `{"$sealed": "<base64>"}`, so
//! settings keep one JSON shape whether they hold plaintext (on the way in) or not.
//!
//! A [`Cipher`] holds one or more keys (a key ring): it seals under one of them and opens
//! under any. Each key has a [`KeyId`] and a check value derived from it by HMAC, which the
//! database keeps so that a node started with another key can be refused, and which name
//! the key in the sealed format without revealing anything of it.
//!
//! Sealed formats: version 1 is `1 ‖ nonce ‖ ciphertext` (no key id: values from before key
//! ids, all under the first key an instance had); version 2 is `2 ‖ key id (8 bytes) ‖
//! nonce ‖ ciphertext`, the first nine bytes authenticated as associated data.

use std::sync::atomic::{AtomicUsize, Ordering};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde_json::Value;
use sha2::Sha256;

use crate::settings::{Settings, SettingsSchema};

const V1: u8 = 1;
const V2: u8 = 2;
const NONCE_LEN: usize = 24;
const KID_LEN: usize = 8;
/// The key that marks a sealed value inside a settings object.
pub const SEALED_MARKER: &str = "$sealed";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the secret key must be 32 bytes encoded as 64 hex characters or base64")]
    BadKey,
    /// Wrong key or tampered data: the message says nothing about the content.
    #[error("a stored secret could not be decrypted (wrong secret key or corrupted data)")]
    Undecryptable,
    /// Sealed under a key this process was not given.
    #[error(
        "a stored secret is sealed under secret key {0}, which this node's key file does not hold"
    )]
    UnknownKey(KeyId),
}

/// Names a secret key without revealing it: the first 8 bytes of
/// HMAC-SHA256(key, "provisio secret key id"), shown as 16 hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; KID_LEN]);

impl KeyId {
    /// Parses the 16 hex characters [`KeyId`]'s `Display` writes.
    pub fn parse(text: &str) -> Option<Self> {
        let bytes = decode_hex(text)?;
        Some(KeyId(bytes.try_into().ok()?))
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&encode_hex(&self.0))
    }
}

impl std::fmt::Debug for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyId({self})")
    }
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(t: &str) -> Option<Vec<u8>> {
    if !t.len().is_multiple_of(2) || !t.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    (0..t.len() / 2)
        .map(|i| u8::from_str_radix(&t[2 * i..2 * i + 2], 16).ok())
        .collect()
}

fn derive(key: &[u8; 32], label: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(label);
    mac.finalize().into_bytes().into()
}

/// Ciphertext as stored: see the module documentation for the formats.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed(pub Vec<u8>);

impl Sealed {
    /// The key this value is sealed under, as its format names it; `None` for version 1
    /// values (which name no key) and for bytes of no known format.
    pub fn key_id(&self) -> Option<KeyId> {
        let b = &self.0;
        if b.len() < 1 + KID_LEN + NONCE_LEN || b[0] != V2 {
            return None;
        }
        Some(KeyId(b[1..1 + KID_LEN].try_into().expect("length checked")))
    }
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealed({} bytes)", self.0.len())
    }
}

struct RingKey {
    id: KeyId,
    check: String,
    aead: XChaCha20Poly1305,
}

/// Seals and opens secrets under the instance's keys.
pub struct Cipher {
    keys: Vec<RingKey>,
    /// The index in `keys` of the key new values are sealed under. It changes at run time
    /// when a rotation makes another key the database's current one.
    sealing: AtomicUsize,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(..)")
    }
}

impl Cipher {
    /// A cipher with one key, which it seals under.
    pub fn new(key: &SecretBox<[u8; 32]>) -> Self {
        Self::with_keys(std::slice::from_ref(key)).expect("one key")
    }

    /// A key ring sealing under the first of `keys` until told otherwise
    /// ([`Cipher::seal_under`]); `None` without keys. A key given twice counts once.
    pub fn with_keys(keys: &[SecretBox<[u8; 32]>]) -> Option<Self> {
        let mut ring: Vec<RingKey> = Vec::new();
        for key in keys {
            let k = key.expose_secret();
            let id = KeyId(
                derive(k, b"provisio secret key id")[..KID_LEN]
                    .try_into()
                    .expect("8 bytes"),
            );
            if ring.iter().any(|r| r.id == id) {
                continue;
            }
            ring.push(RingKey {
                id,
                check: encode_hex(&derive(k, b"provisio secret key check")),
                aead: XChaCha20Poly1305::new(k.into()),
            });
        }
        if ring.is_empty() {
            return None;
        }
        Some(Self {
            keys: ring,
            sealing: AtomicUsize::new(0),
        })
    }

    /// The ids of the keys this cipher holds, in the order it was given them.
    pub fn key_ids(&self) -> Vec<KeyId> {
        self.keys.iter().map(|k| k.id).collect()
    }

    /// The check value of key `id` (64 hex characters, an HMAC under the key: it proves a
    /// key is the same without revealing it); `None` when this cipher does not hold it.
    pub fn check_value(&self, id: KeyId) -> Option<&str> {
        self.keys
            .iter()
            .find(|k| k.id == id)
            .map(|k| k.check.as_str())
    }

    /// The key new values are sealed under.
    pub fn sealing_key(&self) -> KeyId {
        self.keys[self.sealing.load(Ordering::Acquire)].id
    }

    /// Seals under key `id` from now on; false (and no change) when this cipher does not
    /// hold it.
    pub fn seal_under(&self, id: KeyId) -> bool {
        match self.keys.iter().position(|k| k.id == id) {
            Some(index) => {
                self.sealing.store(index, Ordering::Release);
                true
            }
            None => false,
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
            decode_hex(t).ok_or(SecretError::BadKey)?
        } else {
            B64.decode(t).map_err(|_| SecretError::BadKey)?
        };
        let arr: [u8; 32] = bytes.try_into().map_err(|_| SecretError::BadKey)?;
        Ok(SecretBox::new(Box::new(arr)))
    }

    /// Parses a key file or variable holding one or more keys: one per line (or separated
    /// by spaces or commas), blank lines and `#` comments ignored. The error names the
    /// line of the first bad key, never its text.
    pub fn parse_keys(text: &str) -> Result<Vec<SecretBox<[u8; 32]>>, String> {
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default();
            for word in line.split(|c: char| c == ',' || c.is_whitespace()) {
                if word.is_empty() {
                    continue;
                }
                keys.push(Self::parse_key(word).map_err(|e| format!("line {}: {e}", n + 1))?);
            }
        }
        if keys.is_empty() {
            return Err("holds no key".into());
        }
        Ok(keys)
    }

    /// The key as 64 hex characters, for writing the key file.
    pub fn format_key(key: &SecretBox<[u8; 32]>) -> SecretString {
        SecretString::from(encode_hex(key.expose_secret()))
    }

    pub fn seal(&self, plaintext: &[u8]) -> Sealed {
        let key = &self.keys[self.sealing.load(Ordering::Acquire)];
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(1 + KID_LEN + NONCE_LEN + plaintext.len() + 16);
        out.push(V2);
        out.extend_from_slice(&key.id.0);
        let ct = key
            .aead
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &out,
                },
            )
            .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Sealed(out)
    }

    pub fn seal_str(&self, s: &SecretString) -> Sealed {
        self.seal(s.expose_secret().as_bytes())
    }

    pub fn open(&self, sealed: &Sealed) -> Result<SecretString, SecretError> {
        let pt = self.open_bytes(sealed)?;
        String::from_utf8(pt)
            .map(SecretString::from)
            .map_err(|_| SecretError::Undecryptable)
    }

    fn open_bytes(&self, sealed: &Sealed) -> Result<Vec<u8>, SecretError> {
        let b = &sealed.0;
        match b.first() {
            Some(&V2) => {
                let id = sealed.key_id().ok_or(SecretError::Undecryptable)?;
                let key = self
                    .keys
                    .iter()
                    .find(|k| k.id == id)
                    .ok_or(SecretError::UnknownKey(id))?;
                let (header, rest) = b.split_at(1 + KID_LEN);
                let (nonce, ct) = rest.split_at(NONCE_LEN);
                key.aead
                    .decrypt(
                        XNonce::from_slice(nonce),
                        Payload {
                            msg: ct,
                            aad: header,
                        },
                    )
                    .map_err(|_| SecretError::Undecryptable)
            }
            // Version 1 names no key: they were all sealed under the instance's first key,
            // which may be any of the ring's now, so each is tried.
            Some(&V1) if b.len() > NONCE_LEN => {
                let nonce = XNonce::from_slice(&b[1..1 + NONCE_LEN]);
                self.keys
                    .iter()
                    .find_map(|k| k.aead.decrypt(nonce, &b[1 + NONCE_LEN..]).ok())
                    .ok_or(SecretError::Undecryptable)
            }
            _ => Err(SecretError::Undecryptable),
        }
    }

    /// The key of this ring that opens `sealed`, if one does.
    pub fn key_for(&self, sealed: &Sealed) -> Option<KeyId> {
        let b = &sealed.0;
        match b.first() {
            Some(&V2) => self.open_bytes(sealed).ok().and(sealed.key_id()),
            Some(&V1) if b.len() > NONCE_LEN => {
                let nonce = XNonce::from_slice(&b[1..1 + NONCE_LEN]);
                self.keys
                    .iter()
                    .find(|k| k.aead.decrypt(nonce, &b[1 + NONCE_LEN..]).is_ok())
                    .map(|k| k.id)
            }
            _ => None,
        }
    }

    /// `sealed` sealed anew under the sealing key, or `None` when it already is.
    pub fn reseal(&self, sealed: &Sealed) -> Result<Option<Sealed>, SecretError> {
        if sealed.key_id() == Some(self.sealing_key()) {
            return Ok(None);
        }
        let plain = self.open_bytes(sealed)?;
        Ok(Some(self.seal(&plain)))
    }

    /// Seals anew, under the sealing key, every sealed marker inside `value` (at any depth:
    /// job parameters nest settings) that is under another key. Returns whether anything
    /// changed.
    pub fn reseal_markers(&self, value: &mut Value) -> Result<bool, SecretError> {
        if let Some(sealed) = as_sealed(value) {
            return Ok(match self.reseal(&sealed)? {
                Some(new) => {
                    *value = sealed_marker(&new);
                    true
                }
                None => false,
            });
        }
        let mut changed = false;
        match value {
            Value::Object(map) => {
                for v in map.values_mut() {
                    changed |= self.reseal_markers(v)?;
                }
            }
            Value::Array(items) => {
                for v in items {
                    changed |= self.reseal_markers(v)?;
                }
            }
            _ => {}
        }
        Ok(changed)
    }

    /// Replaces the plaintext of every secret setting in `settings` (see
    /// [`SettingsSchema::secret_names`]: declared secret fields, and undeclared keys that look
    /// like credentials where the schema lets them through) by a sealed marker. Values
    /// already sealed are kept.
    pub fn seal_settings(&self, schema: &SettingsSchema, settings: &mut Settings) {
        let names: Vec<String> = schema.secret_names(settings).map(str::to_string).collect();
        for name in names {
            if let Some(Value::String(plain)) = settings.get(&name) {
                let sealed = self.seal(plain.as_bytes());
                settings.insert(name, sealed_marker(&sealed));
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

/// Every sealed value inside `value`, at any depth.
pub fn sealed_in(value: &Value) -> Vec<Sealed> {
    let mut out = Vec::new();
    fn walk(v: &Value, out: &mut Vec<Sealed>) {
        if let Some(s) = as_sealed(v) {
            out.push(s);
            return;
        }
        match v {
            Value::Object(map) => map.values().for_each(|v| walk(v, out)),
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(value, &mut out);
    out
}

/// A sealed value as it sits in a settings object or job parameters.
pub fn sealed_marker(s: &Sealed) -> Value {
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

    fn two_keys() -> (SecretBox<[u8; 32]>, SecretBox<[u8; 32]>) {
        (Cipher::generate_key(), Cipher::generate_key())
    }

    fn copy(k: &SecretBox<[u8; 32]>) -> SecretBox<[u8; 32]> {
        SecretBox::new(Box::new(*k.expose_secret()))
    }

    #[test]
    fn sealed_values_name_their_key_and_open_under_a_ring_holding_it() {
        let (old, new) = two_keys();
        let a = Cipher::new(&old);
        let s = a.seal(b"pw-1");
        assert_eq!(s.key_id(), Some(a.sealing_key()));
        let ring = Cipher::with_keys(&[copy(&new), copy(&old)]).unwrap();
        assert_eq!(ring.sealing_key(), Cipher::new(&new).sealing_key());
        assert_eq!(ring.open(&s).unwrap().expose_secret(), "pw-1");
        // Resealing moves it to the ring's sealing key; a value already there is left.
        let moved = ring.reseal(&s).unwrap().unwrap();
        assert_eq!(moved.key_id(), Some(ring.sealing_key()));
        assert!(ring.reseal(&moved).unwrap().is_none());
        assert_eq!(
            Cipher::new(&new).open(&moved).unwrap().expose_secret(),
            "pw-1"
        );
        // A node without the key says which key it lacks, and nothing else.
        let err = Cipher::new(&new).open(&s).unwrap_err();
        assert!(matches!(err, SecretError::UnknownKey(id) if id == a.sealing_key()));
        // The key id is authenticated: relabelling the value breaks it.
        let mut relabelled = moved.clone();
        relabelled.0[1..9].copy_from_slice(&a.sealing_key().0);
        assert!(ring.open(&relabelled).is_err());
        assert!(ring.seal_under(a.sealing_key()));
        assert_eq!(ring.seal(b"x").key_id(), Some(a.sealing_key()));
        assert!(!ring.seal_under(KeyId([0; 8])));
    }

    #[test]
    fn version_one_values_still_open_and_reseal() {
        let (old, new) = two_keys();
        let aead = XChaCha20Poly1305::new(old.expose_secret().into());
        let nonce = [7u8; NONCE_LEN];
        let mut v1 = vec![V1];
        v1.extend_from_slice(&nonce);
        v1.extend(
            aead.encrypt(XNonce::from_slice(&nonce), &b"legacy"[..])
                .unwrap(),
        );
        let v1 = Sealed(v1);
        assert_eq!(v1.key_id(), None);
        let ring = Cipher::with_keys(&[copy(&new), copy(&old)]).unwrap();
        assert_eq!(ring.open(&v1).unwrap().expose_secret(), "legacy");
        assert_eq!(ring.key_for(&v1), Some(Cipher::new(&old).sealing_key()));
        assert_eq!(Cipher::new(&new).key_for(&v1), None);
        let mut params =
            serde_json::json!({"settings": {"a": sealed_marker(&v1)}, "n": [sealed_marker(&v1)]});
        assert!(ring.reseal_markers(&mut params).unwrap());
        let all = sealed_in(&params);
        assert_eq!(all.len(), 2);
        assert!(all.iter().all(|s| s.key_id() == Some(ring.sealing_key())));
        assert!(!ring.reseal_markers(&mut params).unwrap());
    }

    #[test]
    fn key_ids_and_checks_are_stable_and_differ_per_key() {
        let (a, b) = two_keys();
        let x = Cipher::new(&a);
        let y = Cipher::new(&copy(&a));
        let z = Cipher::new(&b);
        assert_eq!(x.sealing_key(), y.sealing_key());
        assert_ne!(x.sealing_key(), z.sealing_key());
        let id = x.sealing_key();
        assert_eq!(x.check_value(id), y.check_value(id));
        assert_eq!(x.check_value(id).unwrap().len(), 64);
        assert!(z.check_value(id).is_none());
        assert_eq!(KeyId::parse(&id.to_string()), Some(id));
        // Neither the id nor the check shows the key.
        let hex = Cipher::format_key(&a);
        assert!(!hex.expose_secret().contains(&id.to_string()));
        assert!(!hex.expose_secret().contains(x.check_value(id).unwrap()));
    }

    #[test]
    fn key_lists_parse_and_name_the_bad_line() {
        let (a, b) = two_keys();
        let text = format!(
            "# newest first\n{}\n\n{}  # the old one\n",
            Cipher::format_key(&a).expose_secret(),
            Cipher::format_key(&b).expose_secret()
        );
        let keys = Cipher::parse_keys(&text).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[1].expose_secret(), b.expose_secret());
        let err = Cipher::parse_keys("# c\nnot-a-key-at-all\n").unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
        assert!(!err.contains("not-a-key"), "{err}");
        assert!(Cipher::parse_keys("# nothing\n").is_err());
    }

    #[test]
    fn undeclared_credential_settings_are_sealed_where_extras_pass() {
        use crate::settings::Field;
        let c = Cipher::new(&Cipher::generate_key());
        let schema =
            SettingsSchema::new(vec![Field::string("session_key", "Declared plain")]).allow_extra();
        let mut s: Settings = serde_json::from_value(serde_json::json!({
            "api_key": "k1", "clientSecret": "k2", "db_password": "k3", "credentials": "k4",
            "authtoken": "k5", "session_key": "plain", "keyboard": "qwerty", "monkey": "m",
            "key_count": 3, "region": "eu",
        }))
        .unwrap();
        c.seal_settings(&schema, &mut s);
        for name in [
            "api_key",
            "clientSecret",
            "db_password",
            "credentials",
            "authtoken",
        ] {
            assert!(as_sealed(&s[name]).is_some(), "{name} not sealed");
        }
        for name in ["session_key", "keyboard", "monkey", "key_count", "region"] {
            assert!(as_sealed(&s[name]).is_none(), "{name} sealed");
        }
        // A schema that refuses extras never sees undeclared keys, so it seals only its own.
        let strict = SettingsSchema::new(vec![Field::secret("password", "P")]);
        assert!(strict.is_secret_name("password"));
        assert!(!strict.is_secret_name("api_key"));
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
