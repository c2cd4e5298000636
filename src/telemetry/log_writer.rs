//! Where log lines go: appended to a shared buffer by the thread that logs, written to
//! stdout in batches by a thread of their own, so a request never waits on stdout.
//!
//! tracing-appender's non-blocking writer hands each line through a channel whose
//! receiver wakes (spinning, then yielding) for every line: with an access line per
//! request that cost a sixth of the CPU on two cores. Here the writer thread wakes every
//! [`INTERVAL`] — or at once when [`FLUSH_AT`] bytes are waiting — and writes everything
//! pending in one call. Lines are dropped, and counted, only past [`MAX_PENDING`] bytes
//! (a stalled stdout); the count is reported on stderr.

use std::{
    io::Write,
    sync::{Arc, Condvar, Mutex, MutexGuard},
    thread::JoinHandle,
    time::Duration,
};

use tracing_subscriber::fmt::MakeWriter;

/// Longest a line waits in memory.
const INTERVAL: Duration = Duration::from_millis(50);
/// Pending bytes that wake the writer before its interval is up.
const FLUSH_AT: usize = 64 * 1024;
/// Pending bytes beyond which lines are dropped rather than memory grown.
const MAX_PENDING: usize = 8 * 1024 * 1024;

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    dropped: u64,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding the lock leaves plain bytes behind: keep using them.
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The logging side: cheap to clone, one per log layer.
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

/// Stops the writer thread after it has written everything pending.
pub struct Flush {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A writer for `out` and the guard that flushes it at shutdown.
pub fn batched(out: impl Write + Send + 'static) -> std::io::Result<(LogWriter, Flush)> {
    let shared = Arc::new(Shared::default());
    let thread = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn({
            let shared = shared.clone();
            move || write_batches(&shared, out)
        })?;
    Ok((
        LogWriter {
            shared: shared.clone(),
        },
        Flush {
            shared,
            thread: Some(thread),
        },
    ))
}

fn write_batches(shared: &Shared, mut out: impl Write) {
    let mut batch = Vec::with_capacity(FLUSH_AT);
    loop {
        let (closed, dropped) = {
            let mut pending = shared.lock();
            if pending.bytes.is_empty() && !pending.closed {
                pending = shared
                    .wake
                    .wait_timeout(pending, INTERVAL)
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0;
            }
            std::mem::swap(&mut pending.bytes, &mut batch);
            (pending.closed, std::mem::take(&mut pending.dropped))
        };
        if !batch.is_empty() {
            let _ = out.write_all(&batch).and_then(|()| out.flush());
            batch.clear();
            // Hand a huge batch's memory back rather than keep it for good.
            if batch.capacity() > 4 * FLUSH_AT {
                batch = Vec::with_capacity(FLUSH_AT);
            }
        }
        if dropped > 0 {
            eprintln!("conduit: {dropped} log lines dropped: stdout did not keep up");
        }
        if closed {
            return;
        }
        // Lines arriving while we wrote are taken on the next turn without waiting.
    }
}

impl Drop for Flush {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Write for &LogWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut pending = self.shared.lock();
        if pending.bytes.len() + line.len() > MAX_PENDING {
            pending.dropped += 1;
        } else {
            pending.bytes.extend_from_slice(line);
            if pending.bytes.len() >= FLUSH_AT && pending.bytes.len() - line.len() < FLUSH_AT {
                self.shared.wake.notify_one();
            }
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = &'a LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("sink").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_in_order_by_the_time_the_guard_drops() {
        let sink = Sink::default();
        let (writer, flush) = batched(sink.clone()).expect("thread");
        for i in 0..10_000 {
            (&writer)
                .write_all(format!("line {i}\n").as_bytes())
                .expect("write");
        }
        drop(flush);
        let text = String::from_utf8(sink.0.lock().expect("sink").clone()).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 10_000);
        assert_eq!(lines[0], "line 0");
        assert_eq!(lines[9_999], "line 9999");
    }

    #[test]
    fn a_stalled_output_drops_lines_instead_of_growing() {
        use std::sync::atomic::{AtomicBool, Ordering};
        struct Stalled(Arc<Mutex<()>>, Arc<AtomicBool>);
        impl Write for Stalled {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.1.store(true, Ordering::SeqCst);
                let _held = self.0.lock().expect("gate");
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let gate = Arc::new(Mutex::new(()));
        let stalled = Arc::new(AtomicBool::new(false));
        let closed = gate.lock().expect("gate");
        let (writer, flush) = batched(Stalled(gate.clone(), stalled.clone())).expect("thread");
        let line = vec![b'x'; 1024];
        // First the writer thread must be stuck in a write: otherwise it could take the
        // whole flood, and the drop count with it, in its first turn.
        (&writer).write_all(&line).expect("write");
        while !stalled.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Far more than MAX_PENDING while the output is stalled.
        for _ in 0..(3 * MAX_PENDING / line.len()) {
            (&writer).write_all(&line).expect("write");
        }
        let pending = writer.shared.lock().bytes.len();
        let dropped = writer.shared.lock().dropped;
        // Released before asserting: the flush guard joins the writer thread, which
        // waits for the gate.
        drop(closed);
        drop(flush);
        assert!(pending <= MAX_PENDING, "{pending} bytes pending");
        assert!(dropped > 0, "lines past the bound are dropped");
    }
}
