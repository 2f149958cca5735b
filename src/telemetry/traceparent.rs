//! W3C Trace Context `traceparent` (https://www.w3.org/TR/trace-context/#traceparent-header),
//! version 00, parsed and written strictly: `00-<32 hex trace id>-<16 hex parent id>-<2 hex
//! flags>`, lowercase hex only, neither id all zeros. Anything else is not a traceparent (the
//! caller starts a new trace; a bad header is never an error).

use http::HeaderValue;
use opentelemetry::trace::{SpanId, TraceFlags, TraceId};

/// The `traceparent` header name.
pub static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
/// The `tracestate` header name.
pub static TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");

/// A parsed `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace every hop of this request shares.
    pub trace_id: TraceId,
    /// The caller's span: the parent of ours.
    pub parent_id: SpanId,
    /// Only the sampled bit is kept; other bits of version 00 are not ours to pass on.
    pub flags: TraceFlags,
}

const LEN: usize = 55;

/// Parses a version-00 `traceparent` exactly as written by the spec; None when it is not one.
pub fn parse(value: &[u8]) -> Option<TraceParent> {
    if value.len() != LEN || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    // Version 00 only: a later version's layout is not known (and "ff" is forbidden).
    if &value[..2] != b"00" {
        return None;
    }
    let trace_id = hex::<16>(&value[3..35])?;
    let parent_id = hex::<8>(&value[36..52])?;
    let flags = hex::<1>(&value[53..55])?[0];
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some(TraceParent {
        trace_id: TraceId::from_bytes(trace_id),
        parent_id: SpanId::from_bytes(parent_id),
        flags: TraceFlags::new(flags & TraceFlags::SAMPLED.to_u8()),
    })
}

/// `traceparent: 00-<trace>-<span>-<flags>`.
pub fn format(trace_id: TraceId, span_id: SpanId, flags: TraceFlags) -> HeaderValue {
    let mut out = [0u8; LEN];
    out[..3].copy_from_slice(b"00-");
    write_hex(&mut out[3..35], &trace_id.to_bytes());
    out[35] = b'-';
    write_hex(&mut out[36..52], &span_id.to_bytes());
    out[52] = b'-';
    write_hex(&mut out[53..55], &[flags.to_u8() & TraceFlags::SAMPLED.to_u8()]);
    // Only hex digits and '-': always a valid header value.
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The 32 lowercase hex digits of a trace id, on the stack (for the access log).
pub fn trace_id_hex(trace_id: TraceId) -> [u8; 32] {
    let mut out = [0u8; 32];
    write_hex(&mut out, &trace_id.to_bytes());
    out
}

fn write_hex(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
}

/// N bytes from 2N lowercase hex digits; None on anything else (uppercase included).
fn hex<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_formats_the_spec_example() {
        let tp = parse(GOOD.as_bytes()).expect("valid");
        assert_eq!(tp.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.parent_id.to_string(), "00f067aa0ba902b7");
        assert!(tp.flags.is_sampled());
        assert_eq!(format(tp.trace_id, tp.parent_id, tp.flags).as_bytes(), GOOD.as_bytes());
        assert_eq!(&trace_id_hex(tp.trace_id), b"4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn keeps_only_the_sampled_flag() {
        let tp = parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03").expect("valid");
        assert_eq!(tp.flags, TraceFlags::SAMPLED);
        let tp = parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").expect("valid");
        assert!(!tp.flags.is_sampled());
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse(bad.as_bytes()), None, "{bad:?}");
        }
    }
}
