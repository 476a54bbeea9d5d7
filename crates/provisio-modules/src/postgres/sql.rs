//! Building the SQL text the `postgres` module cannot bind: role and database names (checked
//! against a strict pattern, then quoted anyway) and passwords (sent only as a SCRAM-SHA-256
//! verifier, so the clear text never leaves Provisio).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::error::PgError;

/// PostgreSQL truncates identifiers longer than this (NAMEDATALEN - 1), which would make two
/// names the same role.
pub(crate) const MAX_IDENTIFIER_BYTES: usize = 63;

/// The iteration count libpq and the server use for new SCRAM verifiers.
const SCRAM_ITERATIONS: u32 = 4096;
const SCRAM_SALT_BYTES: usize = 16;

/// A role (and database) name built from the server's prefix and the service's username.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoleName(String);

impl RoleName {
    /// `prefix` + `username`. Only lowercase ASCII letters, digits and `_` are accepted, so
    /// the name never needs case folding and can never break out of its quotes; anything
    /// else is refused rather than mapped, so two usernames can never map to one role.
    pub(crate) fn new(prefix: &str, username: &str) -> Result<Self, PgError> {
        if username.is_empty()
            || !username
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(PgError::InvalidInput(format!(
                "username {username:?} cannot be a PostgreSQL role: use only lowercase letters, digits and '_'"
            )));
        }
        let name = format!("{prefix}{username}");
        if name.len() > MAX_IDENTIFIER_BYTES {
            return Err(PgError::InvalidInput(format!(
                "role name {name:?} is longer than {MAX_IDENTIFIER_BYTES} bytes"
            )));
        }
        Ok(RoleName(name))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a quoted SQL identifier.
    pub(crate) fn ident(&self) -> String {
        quote_ident(&self.0)
    }
}

/// `"name"` with embedded quotes doubled (the names used here never contain one; quoting is
/// the second line of defence after the pattern).
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string literal that means the same whatever `standard_conforming_strings` is: an
/// escape string (`E'…'`) with backslashes and quotes escaped.
pub(crate) fn quote_literal(text: &str) -> String {
    format!("E'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// The `PASSWORD '…'` literal for `password`: a SCRAM-SHA-256 verifier computed here, as
/// libpq's `PQencryptPasswordConn` does. The server stores a verifier as it is, so the clear
/// password is never sent, and cannot show up in the server's statement log either.
pub(crate) fn password_literal(password: &str) -> Result<String, PgError> {
    if password.is_empty() {
        return Err(PgError::InvalidInput("the password is empty".into()));
    }
    if password.contains('\0') {
        return Err(PgError::InvalidInput(
            "the password contains a NUL character".into(),
        ));
    }
    let mut salt = [0u8; SCRAM_SALT_BYTES];
    rand::thread_rng().fill_bytes(&mut salt);
    Ok(quote_literal(&scram_verifier(
        password,
        &salt,
        SCRAM_ITERATIONS,
    )))
}

/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (RFC 5802, RFC 7677), over the
/// SASLprep-normalised password; like the server, a password SASLprep refuses is used as
/// its raw bytes.
fn scram_verifier(password: &str, salt: &[u8], iterations: u32) -> String {
    let prepared = stringprep::saslprep(password)
        .map(|p| p.into_owned())
        .unwrap_or_else(|_| password.to_string());
    let salted = hi(prepared.as_bytes(), salt, iterations);
    let client_key = hmac(&salted, b"Client Key");
    let stored_key = Sha256::digest(client_key);
    let server_key = hmac(&salted, b"Server Key");
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        B64.encode(salt),
        B64.encode(stored_key),
        B64.encode(server_key)
    )
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA-256 with one output block, which is SCRAM's `Hi()`.
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut first = salt.to_vec();
    first.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password, &first);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        for (o, b) in out.iter_mut().zip(u) {
            *o ^= b;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_are_strict() {
        assert_eq!(
            RoleName::new("pv_", "alice_1").unwrap().as_str(),
            "pv_alice_1"
        );
        assert_eq!(RoleName::new("pv_", "bob").unwrap().ident(), "\"pv_bob\"");
        for bad in ["", "Alice", "a-b", "a\"b", "a;drop", "a b", "é"] {
            assert!(RoleName::new("pv_", bad).is_err(), "{bad:?} was accepted");
        }
        // 63 bytes is the most PostgreSQL keeps without truncating.
        assert!(RoleName::new("pv_", &"a".repeat(60)).is_ok());
        assert!(RoleName::new("pv_", &"a".repeat(61)).is_err());
    }

    #[test]
    fn literals_are_escaped() {
        assert_eq!(quote_literal(r"it's a \ test"), r"E'it''s a \\ test'");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    /// The RFC 7677 example: user "user", password "pencil", its salt and iteration count.
    #[test]
    fn scram_verifier_matches_rfc_7677() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let verifier = scram_verifier("pencil", &salt, 4096);
        let client_key = {
            let salted = hi(b"pencil", &salt, 4096);
            hmac(&salted, b"Client Key")
        };
        // The client proof in RFC 7677 is ClientKey XOR ClientSignature; checking the
        // ServerKey via the server signature it gives.
        let server_key_b64 = verifier.rsplit(':').next().unwrap();
        let server_key = B64.decode(server_key_b64).unwrap();
        let auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let server_signature = hmac(&server_key, auth_message.as_bytes());
        assert_eq!(
            B64.encode(server_signature),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        let stored_key = Sha256::digest(client_key);
        let client_signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(client_signature)
            .map(|(a, b)| a ^ b)
            .collect();
        assert_eq!(
            B64.encode(proof),
            "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert!(verifier.starts_with("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"));
    }
}
