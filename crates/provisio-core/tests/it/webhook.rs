//! Standard Webhooks signing from a receiver's point of view: round trips, tampering, secret
//! rotation, the replay window, and interoperability with an independent implementation of the
//! specification written in Python's standard library.

use std::io::Write as _;
use std::process::{Command, Stdio};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use provisio_core::webhook::{
    headers, new_message_id, sign, signature_header, verify, Secret, VerifyError,
    DEFAULT_TOLERANCE_SECS, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP,
};
use secrecy::ExposeSecret;
use serde_json::{json, Value};

const TS: i64 = 1_717_171_717;
const BODY: &[u8] = br#"{"type":"service.suspend.succeeded","data":{"service_id":7}}"#;

fn check(
    secret: &Secret,
    id: &str,
    ts: &str,
    sig: &str,
    body: &[u8],
    now: i64,
) -> Result<(), VerifyError> {
    verify(secret, id, ts, sig, body, now, DEFAULT_TOLERANCE_SECS)
}

#[test]
fn headers_round_trip() {
    let secret = Secret::generate();
    let id = new_message_id();
    let [(n1, id_value), (n2, ts_value), (n3, sig)] = headers(&[&secret], &id, TS, BODY);
    assert_eq!(
        (n1, n2, n3),
        (HEADER_ID, HEADER_TIMESTAMP, HEADER_SIGNATURE)
    );
    assert_eq!(id_value, id);
    assert_eq!(ts_value, TS.to_string());
    assert!(sig.starts_with("v1,") && !sig.contains(' '));
    assert_eq!(check(&secret, &id_value, &ts_value, &sig, BODY, TS), Ok(()));
}

#[test]
fn tampering_with_body_id_or_timestamp_fails() {
    let secret = Secret::generate();
    let sig = sign(&secret, "msg_a", TS, BODY);
    let ts = TS.to_string();
    let mut body = BODY.to_vec();
    body[10] ^= 1;
    let mismatch = Err(VerifyError::SignatureMismatch);
    assert_eq!(check(&secret, "msg_a", &ts, &sig, &body, TS), mismatch);
    assert_eq!(check(&secret, "msg_b", &ts, &sig, BODY, TS), mismatch);
    assert_eq!(
        check(&secret, "msg_a", &(TS - 1).to_string(), &sig, BODY, TS),
        mismatch
    );
    assert_eq!(
        check(&Secret::generate(), "msg_a", &ts, &sig, BODY, TS),
        mismatch
    );

    // A flipped bit in the signature itself.
    let mut tag = B64.decode(&sig[3..]).unwrap();
    tag[0] ^= 0x80;
    let forged = format!("v1,{}", B64.encode(tag));
    assert_eq!(check(&secret, "msg_a", &ts, &forged, BODY, TS), mismatch);
}

#[test]
fn rotation_header_carries_both_signatures_and_each_secret_verifies() {
    let old = Secret::generate();
    let new = Secret::generate();
    let header = signature_header(&[&new, &old], "msg_r", TS, BODY);
    let entries: Vec<&str> = header.split(' ').collect();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0], sign(&new, "msg_r", TS, BODY));
    assert_eq!(entries[1], sign(&old, "msg_r", TS, BODY));
    let ts = TS.to_string();
    assert_eq!(check(&old, "msg_r", &ts, &header, BODY, TS), Ok(()));
    assert_eq!(check(&new, "msg_r", &ts, &header, BODY, TS), Ok(()));
    assert_eq!(
        check(&Secret::generate(), "msg_r", &ts, &header, BODY, TS),
        Err(VerifyError::SignatureMismatch)
    );
}

#[test]
fn timestamp_tolerance_applies_both_ways() {
    let secret = Secret::generate();
    let sig = sign(&secret, "msg_t", TS, BODY);
    let ts = TS.to_string();
    let tol = DEFAULT_TOLERANCE_SECS as i64;
    assert_eq!(DEFAULT_TOLERANCE_SECS, 300);
    assert_eq!(check(&secret, "msg_t", &ts, &sig, BODY, TS + tol), Ok(()));
    assert_eq!(check(&secret, "msg_t", &ts, &sig, BODY, TS - tol), Ok(()));
    assert_eq!(
        check(&secret, "msg_t", &ts, &sig, BODY, TS + tol + 1),
        Err(VerifyError::TimestampTooOld {
            age_secs: 301,
            tolerance_secs: 300
        })
    );
    assert_eq!(
        check(&secret, "msg_t", &ts, &sig, BODY, TS - tol - 1),
        Err(VerifyError::TimestampTooNew {
            ahead_secs: 301,
            tolerance_secs: 300
        })
    );
    // A replayed message is refused for its age even though its signature is genuine.
    assert!(matches!(
        check(&secret, "msg_t", &ts, &sig, BODY, TS + 86_400),
        Err(VerifyError::TimestampTooOld { .. })
    ));
    assert_eq!(verify(&secret, "msg_t", &ts, &sig, BODY, TS, 0), Ok(()));
    assert!(verify(&secret, "msg_t", &ts, &sig, BODY, TS + 1, 0).is_err());
    assert_eq!(
        check(&secret, "msg_t", "yesterday", &sig, BODY, TS),
        Err(VerifyError::InvalidTimestamp)
    );
}

/// Verifies and signs exactly as the Standard Webhooks specification describes, with nothing
/// but Python's standard library: strip `whsec_`, base64-decode the key, HMAC-SHA256 over
/// `id.timestamp.body`, base64, compare with each `v1,` entry of the header.
const PYTHON_PEER: &str = r#"
import base64, hashlib, hmac, json, sys

def key_of(secret):
    if secret.startswith("whsec_"):
        secret = secret[len("whsec_"):]
    return base64.b64decode(secret, validate=True)

def signature(key, msg_id, timestamp, body):
    content = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    return base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()

req = json.load(sys.stdin)
body = base64.b64decode(req["body"])
entries = [e[len("v1,"):] for e in req["signature"].split(" ") if e.startswith("v1,")]
verified = []
for secret in req["secrets"]:
    expected = signature(key_of(secret), req["id"], req["timestamp"], body)
    verified.append(any(hmac.compare_digest(expected, e) for e in entries))

own_id = "msg_from_python"
own_body = "{\"hello\": \"gr\u00fc\u00df dich\"}\n".encode()
own_sig = "v1," + signature(key_of(req["secrets"][0]), own_id, req["timestamp"], own_body)
json.dump({"verified": verified, "id": own_id, "body": base64.b64encode(own_body).decode(),
           "signature": own_sig}, sys.stdout)
"#;

fn run_python(request: &Value) -> Value {
    let mut child = Command::new("python3")
        .args(["-c", PYTHON_PEER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "the Standard Webhooks interoperability test needs `python3` on PATH \
                 (standard library only) and could not start it: {e}"
            )
        });
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(request.to_string().as_bytes())
        .expect("write the request to python3");
    let out = child.wait_with_output().expect("wait for python3");
    assert!(
        out.status.success(),
        "python3 peer failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "python3 peer printed something that is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn interoperates_with_an_independent_python_implementation() {
    let new = Secret::generate();
    // The old secret is 64 bytes and given in bare base64, the other end of what is allowed.
    let old = Secret::parse(&B64.encode([0x5au8; 64])).unwrap();
    let stranger = Secret::generate();
    let id = new_message_id();
    // Non-ASCII and a newline, so any re-encoding of the body on either side would show.
    let body = "{\"name\":\"Zoë\",\"note\":\"a\\nb\"}\n".as_bytes();
    let [_, (_, ts), (_, sig)] = headers(&[&new, &old], &id, TS, body);

    let reply = run_python(&json!({
        "secrets": [
            new.encode().expose_secret(),
            old.encode().expose_secret(),
            stranger.encode().expose_secret(),
        ],
        "id": id,
        "timestamp": ts,
        "body": B64.encode(body),
        "signature": sig,
    }));
    // The stranger's `false` shows the Python check can fail, so the `true`s mean something.
    assert_eq!(reply["verified"], json!([true, true, false]), "{reply}");

    let their_id = reply["id"].as_str().unwrap();
    let their_body = B64.decode(reply["body"].as_str().unwrap()).unwrap();
    let their_sig = reply["signature"].as_str().unwrap();
    assert_eq!(
        check(&new, their_id, &ts, their_sig, &their_body, TS),
        Ok(())
    );
    assert_eq!(their_sig, sign(&new, their_id, TS, &their_body));
    assert_eq!(
        check(&old, their_id, &ts, their_sig, &their_body, TS),
        Err(VerifyError::SignatureMismatch)
    );
}
