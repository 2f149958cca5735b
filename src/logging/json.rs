//! The JSON log line, written straight into tracing's line buffer: one object per event with
//! `timestamp`, `level`, the event's fields at the top level, and `target`.
//!
//! tracing-subscriber's own JSON format goes through tracing-serde and serde_json, which write a
//! field in many small pieces through an `io::Write` adapter: about 20,000 instructions per
//! access line, a third of a proxied request. This writes each field once, escaping only what
//! RFC 8259 requires, at a fraction of that (see docs/benchmarks.md, Access log). Spans are not
//! written: tokengate's events carry everything they need as fields.

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The event formatter of `log.format = "json"`.
pub struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        // The line is built in a reused buffer with inline pushes, then handed over in one write
        // (each write to `w` is a dynamic call).
        LINE.with(|line| {
            let mut line = line.borrow_mut();
            line.clear();
            let meta = event.metadata();
            let now = humantime::format_rfc3339_micros(std::time::SystemTime::now());
            write!(line, "{{\"timestamp\":\"{now}\",\"level\":\"{}\"", meta.level())?;
            event.record(&mut Fields { line: &mut line });
            line.push_str(",\"target\":");
            string(&mut line, meta.target());
            line.push_str("}\n");
            w.write_str(&line)
        })
    }
}

thread_local! {
    /// One line's buffer per thread, kept between events.
    static LINE: std::cell::RefCell<String> = std::cell::RefCell::new(String::with_capacity(512));
}

/// Writes each field as `,"name":value`.
struct Fields<'a> {
    line: &'a mut String,
}

impl Fields<'_> {
    /// `,"name":`; field names are Rust identifiers, so they need no escaping.
    fn key(&mut self, field: &Field) -> &mut String {
        self.line.push_str(",\"");
        self.line.push_str(field.name());
        self.line.push_str("\":");
        self.line
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        string(self.key(field), value);
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        // itoa: the fmt machinery costs several hundred instructions per number.
        self.key(field).push_str(itoa::Buffer::new().format(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field).push_str(itoa::Buffer::new().format(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field).push_str(if value { "true" } else { "false" });
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity: those become strings.
        let line = self.key(field);
        let _ = if value.is_finite() { write!(line, "{value}") } else { write!(line, "\"{value}\"") };
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        quoted(self.key(field), format_args!("{value}"));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `%x` fields arrive here too, their Debug being the value's Display.
        quoted(self.key(field), format_args!("{value:?}"));
    }
}

/// `args`, formatted, as a JSON string.
fn quoted(line: &mut String, args: fmt::Arguments<'_>) {
    line.push('"');
    match args.as_str() {
        Some(s) => escape_into(line, s),
        None => {
            let _ = Escaped(line).write_fmt(args);
        }
    }
    line.push('"');
}

/// `s` as a JSON string.
pub(super) fn string(line: &mut String, s: &str) {
    line.push('"');
    escape_into(line, s);
    line.push('"');
}

/// Whether `b` must be escaped inside a JSON string (DEL too, for terminals reading the log).
pub(super) fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f
}

/// Appends `s` escaped as the inside of a JSON string (RFC 8259 section 7): quote, backslash and
/// control characters; runs of other text are copied whole.
fn escape_into(line: &mut String, s: &str) {
    // Almost every value (paths, ids, methods) needs no escape: one tight scan, one copy.
    let Some(first) = s.bytes().position(needs_escape) else { return line.push_str(s) };
    let mut start = 0;
    for (i, b) in s.bytes().enumerate().skip(first) {
        if !needs_escape(b) {
            continue;
        }
        line.push_str(&s[start..i]);
        match b {
            b'"' => line.push_str("\\\""),
            b'\\' => line.push_str("\\\\"),
            b'\n' => line.push_str("\\n"),
            b'\r' => line.push_str("\\r"),
            b'\t' => line.push_str("\\t"),
            _ => {
                let _ = write!(line, "\\u{b:04x}");
            }
        }
        start = i + 1;
    }
    line.push_str(&s[start..]);
}

/// A `fmt::Write` that escapes what it is given into the line (for Debug and Display values).
struct Escaped<'a>(&'a mut String);

impl Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape_into(self.0, s);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(s: &str) -> String {
        let mut out = String::new();
        string(&mut out, s);
        out
    }

    #[test]
    fn strings_round_trip_through_a_json_parser() {
        for s in
            ["plain", "", "quote \" and \\ back", "line\nbreak\r\ttab", "\u{0}\u{1f}\u{7f}", "é ü 漢字 🙂", "/a?b=c&d"]
        {
            let json = escaped(s);
            let back: String = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
            assert_eq!(back, s, "{json}");
        }
        assert_eq!(escaped("a\"b"), r#""a\"b""#);
        assert_eq!(escaped("\u{1}"), r#""\u0001""#);
    }

    #[test]
    fn an_event_is_one_json_object_with_its_fields_at_the_top() {
        use std::sync::{Arc, Mutex};
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(JsonLine)
            .with_writer(move || Sink(sink.clone()))
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let e = std::io::Error::other("disk \"full\"");
            tracing::info!(target: "access", method = %"GET", path = "/a\"b", status = 200u16, latency_us = 12u64, ok = true, ratio = 0.5, neg = -3i64, "done");
            tracing::warn!(error = &e as &(dyn std::error::Error + 'static), nan = f64::NAN, "upstream failed");
        });
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> =
            text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect();
        assert_eq!(lines.len(), 2, "{text}");
        let a = &lines[0];
        assert_eq!(
            (a["level"].as_str(), a["target"].as_str(), a["message"].as_str()),
            (Some("INFO"), Some("access"), Some("done"))
        );
        assert_eq!((a["method"].as_str(), a["path"].as_str()), (Some("GET"), Some("/a\"b")));
        assert_eq!(
            (a["status"].as_u64(), a["latency_us"].as_u64(), a["ok"].as_bool()),
            (Some(200), Some(12), Some(true))
        );
        assert_eq!((a["ratio"].as_f64(), a["neg"].as_i64()), (Some(0.5), Some(-3)));
        assert!(humantime::parse_rfc3339(a["timestamp"].as_str().unwrap()).is_ok(), "{a}");
        let b = &lines[1];
        assert_eq!(
            (b["level"].as_str(), b["error"].as_str(), b["nan"].as_str()),
            (Some("WARN"), Some("disk \"full\""), Some("NaN"))
        );
    }

    /// A writer into a shared buffer, for the subscriber under test.
    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
