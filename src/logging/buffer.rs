//! The destination behind one large buffer, written out by a timer rather than per line: few
//! large writes cost less than one per burst, and a log file beside the config then wakes the
//! reload watcher a few times a second instead of thousands.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How long a written line may sit in the buffer before it reaches the destination.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// The destination behind a 64 KiB buffer that only a timer (and shutdown) flushes: the writer
/// thread's own flush after every burst is ignored.
#[derive(Clone)]
pub(super) struct TimedBuffer(Arc<Mutex<std::io::BufWriter<Box<dyn Write + Send>>>>);

impl TimedBuffer {
    pub(super) fn new(dest: Box<dyn Write + Send>) -> TimedBuffer {
        let buffer = TimedBuffer(Arc::new(Mutex::new(std::io::BufWriter::with_capacity(WRITE_BUFFER, dest))));
        let weak = Arc::downgrade(&buffer.0);
        // Ends once the guard and the writer thread have dropped the buffer.
        let _ = std::thread::Builder::new().name("tokengate-log-flush".into()).spawn(move || loop {
            std::thread::sleep(FLUSH_EVERY);
            match weak.upgrade() {
                Some(b) => drop(b.lock().unwrap_or_else(PoisonError::into_inner).flush()),
                None => return,
            }
        });
        buffer
    }

    /// The final flush, waiting at most a second for the buffer: a writer stuck on a stalled
    /// destination holds it, and the process must still exit.
    pub(super) fn flush_now(&self) -> std::io::Result<()> {
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        loop {
            match self.0.try_lock() {
                Ok(mut b) => return b.flush(),
                Err(std::sync::TryLockError::Poisoned(p)) => return p.into_inner().flush(),
                Err(std::sync::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(std::sync::TryLockError::WouldBlock) => return Ok(()),
            }
        }
    }
}

impl TimedBuffer {
    /// Writes the buffer out now (the access flusher's last drain at shutdown).
    pub(super) fn flush_inner(&self) -> std::io::Result<()> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).flush()
    }
}

impl Write for TimedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).write_all(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Bytes gathered before a write to the destination.
const WRITE_BUFFER: usize = 64 * 1024;
