//! Webhook signing and verification following the Standard Webhooks scheme, so receivers can use any
//! Standard Webhooks library to check that a delivery came from Provisio and was not replayed.
//!
//! A delivery carries three headers: `webhook-id` (unique per message, stable across retries),
//! `webhook-timestamp` (Unix seconds of this attempt) and `webhook-signature`, a space-separated
//! list of `v1,<base64 HMAC-SHA256>` entries over `"{id}.{timestamp}.{body}"`. Several entries
//! let an old and a new secret sign side by side while a receiver rotates its secret.
//!
//! Nothing here reads the clock: callers pass the timestamp and "now" in, which keeps signing
//! deterministic and the tolerance window testable.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The prefix Standard Webhooks puts in front of the base64 key so a secret is recognisable
/// (and greppable by secret scanners) wherever it is pasted.
pub const SECRET_PREFIX: &str = "whsec_";
/// Shortest key the scheme allows, in bytes.
pub const MIN_SECRET_BYTES: usize = 24;
/// Longest key the scheme allows, in bytes.
pub const MAX_SECRET_BYTES: usize = 64;
/// Key length of [`Secret::generate`]: as long as the HMAC-SHA256 output, so the key is never the
/// weaker half, and well inside the allowed range.
const GENERATED_SECRET_BYTES: usize = 32;

/// Header carrying the message id.
pub const HEADER_ID: &str = "webhook-id";
/// Header carrying the signing time in Unix seconds.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// Header carrying the space-separated signatures.
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// The tolerance the scheme recommends between the signing time and the receiver's clock.
pub const DEFAULT_TOLERANCE_SECS: u64 = 5 * 60;

const SIGNATURE_VERSION: &str = "v1";
const MESSAGE_ID_PREFIX: &str = "msg_";
/// Crockford's base32 (lower case): no `i l o u`, so ids survive being read aloud or retyped.
const BASE32: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// Why a signing secret was refused. The messages never echo the input, which is a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretParseError {
    #[error(
        "a webhook signing secret must be `whsec_` followed by standard base64 (with padding)"
    )]
    NotBase64,
    #[error(
        "a webhook signing secret must decode to {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, \
         this one decodes to {0}"
    )]
    BadLength(usize),
}

/// Why a delivery did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the webhook-timestamp header is not a whole number of seconds since the Unix epoch")]
    InvalidTimestamp,
    #[error(
        "the webhook-timestamp is {age_secs} s in the past, more than the {tolerance_secs} s tolerance"
    )]
    TimestampTooOld { age_secs: u64, tolerance_secs: u64 },
    #[error(
        "the webhook-timestamp is {ahead_secs} s in the future, more than the {tolerance_secs} s tolerance"
    )]
    TimestampTooNew {
        ahead_secs: u64,
        tolerance_secs: u64,
    },
    #[error("the webhook-signature header holds no v1 signature")]
    NoSignature,
    #[error("no v1 signature in the webhook-signature header matches the secret")]
    SignatureMismatch,
}

/// A webhook signing key. Shown to its owner once as `whsec_<base64>`; `Debug` redacts it.
pub struct Secret {
    key: SecretBox<Vec<u8>>,
}

impl Secret {
    /// A fresh random 32-byte key.
    pub fn generate() -> Self {
        Self {
            key: SecretBox::init_with_mut(|key: &mut Vec<u8>| {
                key.resize(GENERATED_SECRET_BYTES, 0);
                rand::thread_rng().fill_bytes(key);
            }),
        }
    }

    /// Parses `whsec_<base64>` or bare base64 (some tools strip the prefix), of a 24 to 64-byte key.
    pub fn parse(text: &str) -> Result<Self, SecretParseError> {
        let text = text.trim();
        let encoded = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
        // Boxed before the length check so a refused key is still zeroed when dropped.
        let key = SecretBox::new(Box::new(
            B64.decode(encoded)
                .map_err(|_| SecretParseError::NotBase64)?,
        ));
        let len = key.expose_secret().len();
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&len) {
            return Err(SecretParseError::BadLength(len));
        }
        Ok(Self { key })
    }

    /// The `whsec_<base64>` form, to hand to the receiver or to seal for storage.
    pub fn encode(&self) -> SecretString {
        format!("{SECRET_PREFIX}{}", B64.encode(self.key.expose_secret())).into()
    }

    /// The MAC state after the signed content, shared by signing and verifying so the two
    /// can never disagree on what is signed.
    fn mac(&self, msg_id: &str, timestamp_secs: i64, body: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(self.key.expose_secret())
            .expect("HMAC accepts keys of any length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp_secs.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

impl Clone for Secret {
    fn clone(&self) -> Self {
        Self {
            key: SecretBox::new(Box::new(self.key.expose_secret().clone())),
        }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("webhook::Secret([REDACTED])")
    }
}

/// One `v1,<base64>` signature of `body` as message `msg_id` sent at `timestamp_secs`.
pub fn sign(secret: &Secret, msg_id: &str, timestamp_secs: i64, body: &[u8]) -> String {
    let tag = secret
        .mac(msg_id, timestamp_secs, body)
        .finalize()
        .into_bytes();
    format!("{SIGNATURE_VERSION},{}", B64.encode(tag))
}

/// The `webhook-signature` value: one entry per secret, in the order given, so a receiver that
/// knows either the old or the new secret accepts the message during a rotation. An empty slice
/// gives an empty header, which every receiver rejects.
pub fn signature_header(
    secrets: &[&Secret],
    msg_id: &str,
    timestamp_secs: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|s| sign(s, msg_id, timestamp_secs, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The three headers of one delivery attempt, names in lower case as the scheme writes them.
pub fn headers(
    secrets: &[&Secret],
    msg_id: &str,
    timestamp_secs: i64,
    body: &[u8],
) -> [(&'static str, String); 3] {
    [
        (HEADER_ID, msg_id.to_string()),
        (HEADER_TIMESTAMP, timestamp_secs.to_string()),
        (
            HEADER_SIGNATURE,
            signature_header(secrets, msg_id, timestamp_secs, body),
        ),
    ]
}

/// Checks a delivery as a receiver would: the timestamp lies within `tolerance_secs` of
/// `now_secs` (either side, since clocks drift both ways), and at least one `v1` entry of
/// `signature_header` is the HMAC of the content under `secret`. Entries of other versions
/// are ignored, as the scheme asks, so future signature kinds can be added alongside.
pub fn verify(
    secret: &Secret,
    msg_id: &str,
    timestamp_header: &str,
    signature_header: &str,
    body: &[u8],
    now_secs: i64,
    tolerance_secs: u64,
) -> Result<(), VerifyError> {
    let timestamp = parse_timestamp(timestamp_header)?;
    // The window is checked before the MAC so a replayed old message is refused for its age
    // even when its signature is genuine.
    let drift = now_secs.abs_diff(timestamp);
    if drift > tolerance_secs {
        return Err(if timestamp < now_secs {
            VerifyError::TimestampTooOld {
                age_secs: drift,
                tolerance_secs,
            }
        } else {
            VerifyError::TimestampTooNew {
                ahead_secs: drift,
                tolerance_secs,
            }
        });
    }

    let expected = secret.mac(msg_id, timestamp, body);
    let mut saw_v1 = false;
    for entry in signature_header.split_ascii_whitespace() {
        let Some((SIGNATURE_VERSION, encoded)) = entry.split_once(',') else {
            continue;
        };
        saw_v1 = true;
        let Ok(tag) = B64.decode(encoded) else {
            continue;
        };
        // verify_slice compares in constant time; a plain `==` would leak how many leading
        // bytes of a forged signature are right.
        if expected.clone().verify_slice(&tag).is_ok() {
            return Ok(());
        }
    }
    Err(if saw_v1 {
        VerifyError::SignatureMismatch
    } else {
        VerifyError::NoSignature
    })
}

/// Only plain digits: a sign or spaces would parse to the same number but the sender signed
/// the text it sent, so accepting them would only produce confusing mismatches.
fn parse_timestamp(header: &str) -> Result<i64, VerifyError> {
    if header.is_empty() || !header.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::InvalidTimestamp);
    }
    header.parse().map_err(|_| VerifyError::InvalidTimestamp)
}

/// A fresh message id: `msg_` and 26 base32 characters of 128 random bits. Reuse it for every
/// retry of the same message, since receivers deduplicate on it. It never contains `.`, so the
/// signed content `id.timestamp.body` stays unambiguous.
pub fn new_message_id() -> String {
    let mut bits = u128::from_le_bytes({
        let mut bytes = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut bytes);
        bytes
    });
    let mut chars = [0u8; 26];
    for c in chars.iter_mut().rev() {
        *c = BASE32[(bits & 0x1f) as usize];
        bits >>= 5;
    }
    let mut id = String::with_capacity(MESSAGE_ID_PREFIX.len() + chars.len());
    id.push_str(MESSAGE_ID_PREFIX);
    id.extend(chars.iter().map(|&c| char::from(c)));
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;

    #[test]
    fn matches_the_specification_example() {
        // The worked example of the Standard Webhooks specification.
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = sign(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn generated_secret_round_trips_through_its_encoding() {
        let secret = Secret::generate();
        let text = secret.encode();
        assert!(text.expose_secret().starts_with("whsec_"));
        let again = Secret::parse(text.expose_secret()).unwrap();
        assert_eq!(again.key.expose_secret().len(), 32);
        assert_eq!(sign(&secret, "m", 1, b"x"), sign(&again, "m", 1, b"x"));
    }

    #[test]
    fn parse_accepts_bare_base64_and_refuses_bad_input_without_echoing_it() {
        let bare = B64.encode([7u8; 24]);
        assert!(Secret::parse(&bare).is_ok());
        assert!(Secret::parse(&format!("whsec_{bare}\n")).is_ok());

        let err = Secret::parse("whsec_not*base64").unwrap_err();
        assert_eq!(err, SecretParseError::NotBase64);
        assert!(!err.to_string().contains("not*base64"));
        assert_eq!(
            Secret::parse(&B64.encode([1u8; 23])).unwrap_err(),
            SecretParseError::BadLength(23)
        );
        assert_eq!(
            Secret::parse(&B64.encode([1u8; 65])).unwrap_err(),
            SecretParseError::BadLength(65)
        );
        assert!(Secret::parse(&B64.encode([1u8; 64])).is_ok());
    }

    #[test]
    fn debug_redacts_the_key() {
        let secret = Secret::parse(&B64.encode([0xabu8; 32])).unwrap();
        let shown = format!("{secret:?}");
        assert!(shown.contains("REDACTED"));
        assert!(!shown.contains(&B64.encode([0xabu8; 32])));
        assert!(!shown.contains("171"));
    }

    #[test]
    fn verify_accepts_own_signature_and_refuses_tampering() {
        let secret = Secret::generate();
        let sig = sign(&secret, "msg_1", NOW, b"{}");
        let ts = NOW.to_string();
        let check = |id: &str, ts: &str, body: &[u8]| {
            verify(&secret, id, ts, &sig, body, NOW, DEFAULT_TOLERANCE_SECS)
        };
        assert_eq!(check("msg_1", &ts, b"{}"), Ok(()));
        assert_eq!(
            check("msg_2", &ts, b"{}"),
            Err(VerifyError::SignatureMismatch)
        );
        assert_eq!(
            check("msg_1", &(NOW + 1).to_string(), b"{}"),
            Err(VerifyError::SignatureMismatch)
        );
        assert_eq!(
            check("msg_1", &ts, b"{ }"),
            Err(VerifyError::SignatureMismatch)
        );
    }

    #[test]
    fn verify_ignores_other_versions_and_garbage_entries() {
        let secret = Secret::generate();
        let good = sign(&secret, "m", NOW, b"b");
        let ts = NOW.to_string();
        let header = format!("v1a,AAAA v1,%%% v2,{} {good}", &good[3..]);
        assert_eq!(verify(&secret, "m", &ts, &header, b"b", NOW, 300), Ok(()));
        assert_eq!(
            verify(&secret, "m", &ts, "v1a,AAAA", b"b", NOW, 300),
            Err(VerifyError::NoSignature)
        );
        assert_eq!(
            verify(&secret, "m", &ts, "", b"b", NOW, 300),
            Err(VerifyError::NoSignature)
        );
        assert_eq!(
            verify(&secret, "m", &ts, "v1,%%%", b"b", NOW, 300),
            Err(VerifyError::SignatureMismatch)
        );
    }

    #[test]
    fn timestamp_must_be_plain_digits() {
        let secret = Secret::generate();
        for bad in [
            "",
            "+1700000000",
            "-5",
            " 1700000000",
            "17e8",
            "99999999999999999999",
        ] {
            assert_eq!(
                verify(&secret, "m", bad, "v1,AAAA", b"", NOW, 300),
                Err(VerifyError::InvalidTimestamp),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn message_ids_are_prefixed_base32_and_distinct() {
        let a = new_message_id();
        let b = new_message_id();
        assert_ne!(a, b);
        let rest = a.strip_prefix("msg_").unwrap();
        assert_eq!(rest.len(), 26);
        assert!(rest.bytes().all(|c| BASE32.contains(&c)));
    }
}
