//! Log setup: `log.format` (json or pretty) and `log.level` (overridden by `RUST_LOG`), written to
//! `log.file` or standard error by a writer thread, off the request path.
//!
//! A request formats its access line and hands it to a bounded queue (`log.queue_lines`); the
//! writer thread appends it to a 64 KiB buffer, written out when full and at least every
//! [`FLUSH_EVERY`] by a timer. Few large writes cost less than one per burst of lines, and a
//! log file beside the config then wakes the reload watcher a few times a second instead of
//! thousands. When the destination stalls (a full disk, a pipe nobody reads), lines past the
//! queue are dropped and counted (`tokengate_log_dropped_lines_total`) instead of blocking
//! requests. The [`LogGuard`] drains the queue and the buffer at shutdown, so a graceful stop
//! loses no line.
//! Nothing logged anywhere carries a token, secret, password, `Authorization` or `Cookie` value.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

pub mod access;
mod buffer;
mod json;

use buffer::TimedBuffer;
pub use buffer::FLUSH_EVERY;

/// Why the log could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log.file: {}: {}", path.display(), crate::reason::io_reason(error))]
    Open { path: PathBuf, error: std::io::Error },
}

/// Keeps the writer thread; dropping it writes out every queued line (at most about a second).
pub struct LogGuard {
    /// Has the access-log flusher write out every worker's buffer (first: its lines then reach
    /// the buffer before the final flush).
    access: Option<access::Stop>,
    /// Drains the queue into the buffer on drop (taken first, so the buffer is flushed after).
    worker: Option<WorkerGuard>,
    /// The buffer, flushed last.
    buffer: TimedBuffer,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        drop(self.access.take());
        drop(self.worker.take());
        let _ = self.buffer.flush_now();
    }
}

/// Lines dropped because the queue was full; read by the metrics at scrape time.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Log lines dropped so far because the writer fell behind (0 before [`init`]).
pub fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64) + access::dropped_lines()
}

/// Installs the global subscriber writing to `log.file` (resolved against `base_dir`) or stderr.
/// A second call (tests) installs nothing but still returns a guard.
pub fn init(cfg: &LogConfig, base_dir: &Path) -> Result<LogGuard, LogError> {
    let dest: Box<dyn Write + Send> = match &cfg.file {
        Some(f) => {
            let path = if f.is_absolute() { f.clone() } else { base_dir.join(f) };
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|error| LogError::Open { path, error })?;
            Box::new(file)
        }
        None => Box::new(std::io::stderr()),
    };
    let buffer = TimedBuffer::new(dest);
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(cfg.queue_lines)
        .thread_name("tokengate-log")
        .finish(buffer.clone());
    let _ = DROPPED.set(writer.error_counter());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.level));
    let ansi = cfg.file.is_none() && std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(ansi);
    let _ = match cfg.format {
        LogFormat::Json => builder.event_format(json::JsonLine).try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
    // With colours the access line keeps going through `tracing`'s formatter (a terminal is
    // not where throughput matters); otherwise it takes its own path.
    let access = if ansi { None } else { access::install(cfg.format, cfg.queue_lines, buffer.clone()) };
    Ok(LogGuard { access, worker: Some(guard), buffer })
}
