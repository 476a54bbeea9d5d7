//! W3C Trace Context identifiers: the trace id a job keeps across its attempts, span ids,
//! and the `traceparent` header value that carries both to a remote.

use std::fmt;

use rand::RngCore;

/// A 16-byte trace id, written as 32 lowercase hex digits. Never all zeros (the W3C
/// specification calls that invalid).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span (parent) id, written as 16 lowercase hex digits. Never all zeros.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub [u8; 8]);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    // Uppercase is refused: the specification allows only lowercase, and a stored id
    // compared as text must have one spelling.
    if s.len() != N * 2 || !s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).ok()?;
    }
    (out != [0u8; N]).then_some(out)
}

impl TraceId {
    pub fn random() -> Self {
        loop {
            let mut b = [0u8; 16];
            rand::thread_rng().fill_bytes(&mut b);
            if b != [0u8; 16] {
                return Self(b);
            }
        }
    }

    /// 32 lowercase hex digits, not all zero.
    pub fn parse(s: &str) -> Option<Self> {
        unhex(s).map(Self)
    }
}

impl SpanId {
    pub fn random() -> Self {
        loop {
            let mut b = [0u8; 8];
            rand::thread_rng().fill_bytes(&mut b);
            if b != [0u8; 8] {
                return Self(b);
            }
        }
    }

    /// 16 lowercase hex digits, not all zero.
    pub fn parse(s: &str) -> Option<Self> {
        unhex(s).map(Self)
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

impl serde::Serialize for TraceId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Where a piece of work sits in a trace: its trace, and the span that stands for it, which
/// is the parent of every call it makes to a remote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: TraceId,
    pub span_id: SpanId,
}

impl TraceContext {
    /// A new span in `trace_id`.
    pub fn in_trace(trace_id: TraceId) -> Self {
        Self {
            trace_id,
            span_id: SpanId::random(),
        }
    }

    /// The `traceparent` header value: version 00, trace id, parent id, flags 01 (sampled:
    /// Provisio records every job, so the remote may as well keep its side).
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-01", self.trace_id, self.span_id)
    }

    /// Reads a version-00 `traceparent` value.
    pub fn parse_traceparent(s: &str) -> Option<Self> {
        let mut parts = s.split('-');
        let (Some("00"), Some(t), Some(p), Some(flags), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        unhex::<1>(flags).or((flags == "00").then_some([0]))?;
        Some(Self {
            trace_id: TraceId::parse(t)?,
            span_id: SpanId::parse(p)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_has_the_w3c_shape() {
        let c = TraceContext::in_trace(TraceId::random());
        let h = c.traceparent();
        assert_eq!(h.len(), 55);
        assert!(h.starts_with("00-") && h.ends_with("-01"));
        assert_eq!(TraceContext::parse_traceparent(&h), Some(c));
    }

    #[test]
    fn malformed_ids_are_refused() {
        assert!(TraceId::parse(&"0".repeat(32)).is_none());
        assert!(TraceId::parse(&"A".repeat(32)).is_none());
        assert!(TraceId::parse(&"a".repeat(31)).is_none());
        assert!(SpanId::parse("00f067aa0ba902b7").is_some());
        assert!(TraceContext::parse_traceparent(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        )
        .is_none());
        assert!(TraceContext::parse_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        )
        .is_some());
    }
}
