//! The access log's own path: one line per request, formatted by the request's thread straight
//! into that thread's buffer, handed to the destination in large chunks.
//!
//! Through `tracing`, an access line cost an event dispatch, a formatted copy, one allocation
//! and one wake-up of the writer thread per request: 12% of a proxied request's throughput on a
//! fast machine. Here a request takes its worker's buffer (an uncontended lock: only the
//! flusher ever competes for it, a few times a second), appends the line with its fields written
//! directly, and leaves. The flusher thread swaps every buffer for an empty one when woken by a
//! buffer passing [`WAKE_BYTES`] or after [`FLUSH_EVERY`], and writes each chunk whole.
//!
//! The line is the one the `tracing` formatter writes for the same event (JSON or the compact
//! text), so nobody reading the log can tell; with colours (a terminal) the event still goes
//! through `tracing`. A buffer holding `log.queue_lines` lines takes no more: further lines
//! are dropped and counted, and requests go on. The [`super::LogGuard`] has the flusher write
//! out every buffer at shutdown.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock, PoisonError};
use std::thread::Thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::buffer::{TimedBuffer, FLUSH_EVERY};
use crate::config::LogFormat;

/// One request as the access log records it.
pub struct AccessLine<'a> {
    /// The request method.
    pub method: &'a str,
    /// The normalized path (`-` when refused before normalization).
    pub path: &'a str,
    /// The status answered.
    pub status: u16,
    /// From the request's arrival to its response head.
    pub latency_us: u64,
    /// The matched route's prefix, `oauth`, or `none`.
    pub route: &'a str,
    /// The token's `sub`, or `-`.
    pub sub: &'a str,
    /// The token's `client_id`, or `-`.
    pub client_id: &'a str,
    /// The upstream's status, 0 when none answered.
    pub upstream_status: u16,
    /// The W3C trace id (hex), or `-`.
    pub trace_id: &'a str,
}

/// A buffer this big wakes the flusher early: at 100k req/s, 200 ms of lines is ~5 MB.
const WAKE_BYTES: usize = 256 * 1024;

/// The installed sink; unset before [`install`] (tests, commands other than `serve`).
static SINK: OnceLock<Sink> = OnceLock::new();

/// Lines dropped because their worker's buffer was full.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Access lines dropped so far because the destination could not keep up.
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Where every worker's lines go.
struct Sink {
    /// JSON or compact text, as `log.format` says.
    format: LogFormat,
    /// Lines a worker's buffer holds before it drops (`log.queue_lines`).
    cap_lines: usize,
    /// Every worker's buffer, for the flusher.
    shards: Mutex<Vec<Arc<Shard>>>,
    /// The flusher, unparked when a buffer fills and at shutdown.
    flusher: Thread,
    /// Set at shutdown: the flusher drains once more, reports, and ends.
    stopping: AtomicBool,
}

/// One worker thread's lines not yet written.
#[derive(Default)]
struct Shard {
    /// The lines, and how many there are (for the cap).
    buf: Mutex<(Vec<u8>, usize)>,
}

thread_local! {
    /// This thread's buffer, registered with the sink on the first line.
    static SHARD: std::cell::OnceCell<Arc<Shard>> = const { std::cell::OnceCell::new() };
    /// The second last formatted and its text up to the seconds (`2026-12-07T23:14:51`).
    static CLOCK: std::cell::Cell<(u64, [u8; 19])> = const { std::cell::Cell::new((u64::MAX, [0; 19])) };
}

/// Stops the flusher after a last drain; dropping it waits at most a second for that.
pub struct Stop {
    /// Signalled by the flusher after its last write.
    done: mpsc::Receiver<()>,
}

impl Drop for Stop {
    fn drop(&mut self) {
        if let Some(sink) = SINK.get() {
            sink.stopping.store(true, Ordering::Release);
            sink.flusher.unpark();
            // A destination that stalls holds the flusher: the process must still exit.
            let _ = self.done.recv_timeout(Duration::from_secs(1));
        }
    }
}

/// Starts the flusher writing to `dest` and routes access lines to it; `None` when already
/// installed (a second `init` in tests).
pub(super) fn install(format: LogFormat, cap_lines: usize, dest: TimedBuffer) -> Option<Stop> {
    // Before the flusher is spawned: a second one would drain the first sink's buffers too.
    if SINK.get().is_some() {
        return None;
    }
    let (done_tx, done) = mpsc::channel();
    let mut dest = dest;
    let flusher = std::thread::Builder::new()
        .name("tokengate-access".into())
        .spawn(move || {
            // The sink is set right after the spawn; wait for it rather than race.
            let sink = loop {
                match SINK.get() {
                    Some(s) => break s,
                    None => std::thread::park_timeout(Duration::from_millis(1)),
                }
            };
            let mut spare = Vec::new();
            loop {
                std::thread::park_timeout(FLUSH_EVERY);
                let last = sink.stopping.load(Ordering::Acquire);
                sink.drain(&mut dest, &mut spare);
                if last {
                    let _ = dest.flush_inner();
                    let _ = done_tx.send(());
                    return;
                }
            }
        })
        .ok()?
        .thread()
        .clone();
    let sink = Sink { format, cap_lines, shards: Mutex::new(Vec::new()), flusher, stopping: AtomicBool::new(false) };
    SINK.set(sink).ok()?;
    Some(Stop { done })
}

/// Logs `line`: through this thread's buffer, or as a `tracing` event when no sink is installed.
pub fn log(line: &AccessLine<'_>) {
    if !write(line) {
        event(line);
    }
}

/// `line` as a `tracing` event, the shape [`json_line`] and [`text_line`] reproduce.
fn event(line: &AccessLine<'_>) {
    tracing::info!(
        target: "access",
        method = %line.method,
        path = line.path,
        status = line.status,
        latency_us = line.latency_us,
        route = line.route,
        sub = line.sub,
        client_id = line.client_id,
        upstream_status = line.upstream_status,
        trace_id = line.trace_id,
    );
}

/// Appends `line` to this thread's buffer; false when no sink is installed.
fn write(line: &AccessLine<'_>) -> bool {
    let Some(sink) = SINK.get() else { return false };
    SHARD.with(|cell| {
        let shard = cell.get_or_init(|| {
            let shard = Arc::new(Shard::default());
            sink.shards.lock().unwrap_or_else(PoisonError::into_inner).push(shard.clone());
            shard
        });
        let mut guard = shard.buf.lock().unwrap_or_else(PoisonError::into_inner);
        let (buf, lines) = &mut *guard;
        if *lines >= sink.cap_lines {
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let before = buf.len();
        match sink.format {
            LogFormat::Json => json_line(buf, line),
            LogFormat::Pretty => text_line(buf, line),
        }
        *lines += 1;
        if before < WAKE_BYTES && buf.len() >= WAKE_BYTES {
            sink.flusher.unpark();
        }
    });
    true
}

impl Sink {
    /// Writes out every buffer, each swapped for `spare` (so capacity is reused, not freed).
    fn drain(&self, dest: &mut TimedBuffer, spare: &mut Vec<u8>) {
        let shards: Vec<Arc<Shard>> = self.shards.lock().unwrap_or_else(PoisonError::into_inner).clone();
        for shard in shards {
            {
                let mut guard = shard.buf.lock().unwrap_or_else(PoisonError::into_inner);
                if guard.0.is_empty() {
                    continue;
                }
                std::mem::swap(&mut guard.0, spare);
                guard.1 = 0;
            }
            // A failed write loses these lines, as a full disk does for any writer; it never
            // reaches the requests.
            let _ = dest.write_all(spare);
            spare.clear();
        }
    }
}

/// `{"timestamp":..,"level":"INFO",<fields>,"target":"access"}` as the JSON formatter writes it.
fn json_line(buf: &mut Vec<u8>, l: &AccessLine<'_>) {
    buf.extend_from_slice(b"{\"timestamp\":\"");
    timestamp(buf);
    // A method is an HTTP token and a trace id hex (or `-`): neither ever needs escaping.
    buf.extend_from_slice(b"\",\"level\":\"INFO\",\"method\":\"");
    buf.extend_from_slice(l.method.as_bytes());
    buf.push(b'"');
    buf.extend_from_slice(b",\"path\":");
    json_str(buf, l.path);
    buf.extend_from_slice(b",\"status\":");
    buf.extend_from_slice(itoa::Buffer::new().format(l.status).as_bytes());
    buf.extend_from_slice(b",\"latency_us\":");
    buf.extend_from_slice(itoa::Buffer::new().format(l.latency_us).as_bytes());
    buf.extend_from_slice(b",\"route\":");
    json_str(buf, l.route);
    buf.extend_from_slice(b",\"sub\":");
    json_str(buf, l.sub);
    buf.extend_from_slice(b",\"client_id\":");
    json_str(buf, l.client_id);
    buf.extend_from_slice(b",\"upstream_status\":");
    buf.extend_from_slice(itoa::Buffer::new().format(l.upstream_status).as_bytes());
    buf.extend_from_slice(b",\"trace_id\":\"");
    buf.extend_from_slice(l.trace_id.as_bytes());
    buf.extend_from_slice(b"\",\"target\":\"access\"}\n");
}

/// The compact text line of `tracing-subscriber` for the same event:
/// `<timestamp>  INFO access: method=GET path="/a" status=200 ...`.
fn text_line(buf: &mut Vec<u8>, l: &AccessLine<'_>) {
    timestamp(buf);
    buf.extend_from_slice(b"  INFO access: method=");
    buf.extend_from_slice(l.method.as_bytes());
    buf.extend_from_slice(b" path=");
    debug_str(buf, l.path);
    buf.extend_from_slice(b" status=");
    buf.extend_from_slice(itoa::Buffer::new().format(l.status).as_bytes());
    buf.extend_from_slice(b" latency_us=");
    buf.extend_from_slice(itoa::Buffer::new().format(l.latency_us).as_bytes());
    buf.extend_from_slice(b" route=");
    debug_str(buf, l.route);
    buf.extend_from_slice(b" sub=");
    debug_str(buf, l.sub);
    buf.extend_from_slice(b" client_id=");
    debug_str(buf, l.client_id);
    buf.extend_from_slice(b" upstream_status=");
    buf.extend_from_slice(itoa::Buffer::new().format(l.upstream_status).as_bytes());
    buf.extend_from_slice(b" trace_id=");
    debug_str(buf, l.trace_id);
    buf.push(b'\n');
}

/// `s` quoted and escaped as JSON.
fn json_str(buf: &mut Vec<u8>, s: &str) {
    // Escaping is shared with the `tracing` formatter; the common case (nothing to escape) is
    // one scan and one copy, without a String.
    if !s.bytes().any(super::json::needs_escape) {
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
        return;
    }
    let mut line = String::new();
    super::json::string(&mut line, s);
    buf.extend_from_slice(line.as_bytes());
}

/// `s` as Rust's `Debug` writes a string (what the compact format shows for a `&str` field).
fn debug_str(buf: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| (b.is_ascii_graphic() && b != b'"' && b != b'\\') || b == b' ') {
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
    } else {
        let _ = write!(buf, "{s:?}");
    }
}

/// RFC 3339 UTC with microseconds (`2026-12-07T23:14:51.123456Z`); the part up to the second is
/// formatted once a second per thread, not per line.
fn timestamp(buf: &mut Vec<u8>) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs();
    let (cached, mut text) = CLOCK.get();
    if cached != secs {
        let whole = UNIX_EPOCH + Duration::from_secs(secs);
        let s = humantime::format_rfc3339_seconds(whole).to_string();
        // `2026-12-07T23:14:51Z`: keep the 19 bytes before the `Z`.
        if let Some(head) = s.as_bytes().get(..19) {
            text.copy_from_slice(head);
        }
        CLOCK.set((secs, text));
    }
    buf.extend_from_slice(&text);
    let micros = now.subsec_micros();
    let mut frac = *b".000000Z";
    let mut m = micros;
    for i in (1..7).rev() {
        frac[i] = b'0' + (m % 10) as u8;
        m /= 10;
    }
    buf.extend_from_slice(&frac);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AccessLine<'static> {
        AccessLine {
            method: "GET",
            path: "/a\"b\u{1}",
            status: 200,
            latency_us: 1234,
            route: "/api",
            sub: "alice",
            client_id: "-",
            upstream_status: 204,
            trace_id: "0af7651916cd43dd8448eb211c80319c",
        }
    }

    /// `line` as the `tracing` formatter of `format` writes it (colours off, as in a file).
    fn through_tracing(line: &AccessLine<'_>, format: LogFormat) -> String {
        use std::sync::{Arc, Mutex};
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let builder = tracing_subscriber::fmt()
            .with_writer(move || Sink(sink.clone()))
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO);
        let dispatch = match format {
            LogFormat::Json => tracing::Dispatch::new(builder.event_format(super::super::json::JsonLine).finish()),
            LogFormat::Pretty => tracing::Dispatch::new(builder.compact().finish()),
        };
        tracing::dispatcher::with_default(&dispatch, || event(line));
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        text
    }

    /// The line without its timestamp (the two were written microseconds apart).
    fn untimed(line: &str) -> &str {
        let cut = line.find("Z\",").map(|i| i + 2).or_else(|| line.find("Z ").map(|i| i + 1));
        &line[cut.unwrap_or_else(|| panic!("no timestamp in {line}"))..]
    }

    #[test]
    fn the_lines_are_the_tracing_formatters_own_byte_for_byte() {
        for format in [LogFormat::Json, LogFormat::Pretty] {
            for line in [sample(), AccessLine { path: "/plain", trace_id: "-", ..sample() }] {
                let mut buf = Vec::new();
                match format {
                    LogFormat::Json => json_line(&mut buf, &line),
                    LogFormat::Pretty => text_line(&mut buf, &line),
                }
                let ours = String::from_utf8(buf).unwrap();
                let theirs = through_tracing(&line, format);
                assert_eq!(untimed(&ours), untimed(&theirs), "{format:?}");
            }
        }
        let mut buf = Vec::new();
        json_line(&mut buf, &sample());
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!((v["path"].as_str(), v["status"].as_u64()), (Some("/a\"b\u{1}"), Some(200)));
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

    #[test]
    fn timestamps_tick_with_the_clock() {
        let mut a = Vec::new();
        timestamp(&mut a);
        let a = String::from_utf8(a).unwrap();
        let t = humantime::parse_rfc3339(&a).unwrap();
        assert!(SystemTime::now().duration_since(t).unwrap_or_default() < Duration::from_secs(2), "{a}");
        assert_eq!(a.len(), "2026-12-07T23:14:51.123456Z".len(), "{a}");
    }
}
