//! Password values for `radcheck`: the salted SHA-2 forms FreeRADIUS's `pap` module reads
//! (base64 of digest followed by salt), and checking a stored value against a password so
//! that a retried create can recognise its own earlier write.

use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256, Sha512};

use super::config::PasswordAttribute;

const SALT_LEN: usize = 16;

/// The value to store for `password` under `attribute`.
pub fn encode(attribute: PasswordAttribute, password: &str) -> String {
    match attribute {
        PasswordAttribute::Cleartext => password.to_string(),
        PasswordAttribute::Ssha2_256 | PasswordAttribute::Ssha2_512 => {
            let mut salt = [0u8; SALT_LEN];
            rand::thread_rng().fill_bytes(&mut salt);
            salted(attribute, password, &salt)
        }
    }
}

fn digest(attribute: PasswordAttribute, password: &str, salt: &[u8]) -> Vec<u8> {
    match attribute {
        PasswordAttribute::Ssha2_512 => {
            let mut h = Sha512::new();
            h.update(password.as_bytes());
            h.update(salt);
            h.finalize().to_vec()
        }
        _ => {
            let mut h = Sha256::new();
            h.update(password.as_bytes());
            h.update(salt);
            h.finalize().to_vec()
        }
    }
}

fn salted(attribute: PasswordAttribute, password: &str, salt: &[u8]) -> String {
    let mut bytes = digest(attribute, password, salt);
    bytes.extend_from_slice(salt);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Whether the stored `value` of `attribute` (a radcheck attribute name) is `password`.
/// Attributes this module does not write are never taken as a match.
pub fn matches(attribute: &str, value: &str, password: &str) -> bool {
    let (kind, digest_len) = match attribute {
        "Cleartext-Password" => return constant_time_eq(value.as_bytes(), password.as_bytes()),
        "SSHA2-256-Password" => (PasswordAttribute::Ssha2_256, 32),
        "SSHA2-512-Password" => (PasswordAttribute::Ssha2_512, 64),
        _ => return false,
    };
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(value.trim()) else {
        return false;
    };
    if bytes.len() <= digest_len {
        return false;
    }
    let (stored, salt) = bytes.split_at(digest_len);
    constant_time_eq(stored, &digest(kind, password, salt))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salted_values_verify_and_differ() {
        for kind in [PasswordAttribute::Ssha2_256, PasswordAttribute::Ssha2_512] {
            let a = encode(kind, "s3cret-pw");
            let b = encode(kind, "s3cret-pw");
            assert_ne!(a, b, "a fresh salt every time");
            assert!(matches(kind.name(), &a, "s3cret-pw"));
            assert!(!matches(kind.name(), &a, "s3cret-pX"));
        }
        assert!(matches("Cleartext-Password", "pw", "pw"));
        assert!(!matches("Crypt-Password", "pw", "pw"));
    }
}
