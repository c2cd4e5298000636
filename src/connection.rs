//! What a TCP connection must do to keep its place: complete its first request's headers
//! (HTTP/1.1) or the HTTP/2 connection preface within `server.handshake_timeout`. A
//! connection that sends nothing — or dribbles bytes — is otherwise held open for ever,
//! and a few thousand of them exhaust the process's descriptors. HTTP/2 connections that
//! have completed the preface may then idle (gRPC channels do), watched by HTTP/2
//! keep-alive pings instead.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether a connection has shown it is a client: set by the first request (the service
/// is called once headers are complete) or by a complete HTTP/2 preface.
#[derive(Clone, Default)]
pub struct Progress(Arc<AtomicBool>);

impl Progress {
    pub fn mark(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn made(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A stream that marks `progress` once the HTTP/2 preface has been read through it.
pub struct Watched<S> {
    inner: S,
    progress: Progress,
    /// Preface bytes matched so far; `None` once the preface is complete or ruled out.
    matched: Option<usize>,
}

impl<S> Watched<S> {
    pub fn new(inner: S, progress: Progress) -> Self {
        Self {
            inner,
            progress,
            matched: Some(0),
        }
    }

    fn scan(&mut self, read: &[u8]) {
        let Some(matched) = self.matched else { return };
        let wanted = &H2_PREFACE[matched..];
        let n = read.len().min(wanted.len());
        if read[..n] != wanted[..n] {
            self.matched = None;
        } else if matched + n == H2_PREFACE.len() {
            self.progress.mark();
            self.matched = None;
        } else {
            self.matched = Some(matched + n);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.matched.is_some() && polled.is_ready() {
            this.scan(&buf.filled()[before..]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fed(chunks: &[&[u8]]) -> bool {
        let progress = Progress::default();
        let mut watched = Watched::new((), progress.clone());
        for chunk in chunks {
            watched.scan(chunk);
        }
        progress.made()
    }

    #[test]
    fn the_preface_counts_in_any_split() {
        assert!(fed(&[H2_PREFACE]));
        assert!(fed(&[
            &H2_PREFACE[..3],
            &H2_PREFACE[3..10],
            &H2_PREFACE[10..]
        ]));
        let mut with_settings = H2_PREFACE.to_vec();
        with_settings.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        assert!(fed(&[&with_settings]));
    }

    #[test]
    fn anything_else_does_not() {
        assert!(!fed(&[&H2_PREFACE[..20]]), "an incomplete preface");
        assert!(!fed(&[b"GET / HTTP/1.1\r\n"]));
        assert!(!fed(&[b"PRI * HTTP/1.1\r\n\r\nSM\r\n\r\n"]));
        assert!(!fed(&[&[0u8; 64]]));
    }
}

/// The responses of one connection that wait for the client to take more of them: each
/// since when. A response waits from when it hands a frame to hyper until hyper asks for
/// the next one; hyper only asks once the client has room (HTTP/2 flow-control window,
/// TCP window), so a client that stops reading leaves its responses waiting — holding
/// their memory — and `serve` closes its connection after `server.send_timeout`. A
/// response waiting for its own data (a stream with nothing new to say) is not waiting
/// on the client.
#[derive(Clone, Default)]
pub struct Stalls(Arc<std::sync::Mutex<Waiting>>);

#[derive(Default)]
struct Waiting {
    next_id: u64,
    // aHash: written on every response; the keys are our own counter.
    since: ahash::HashMap<u64, std::time::Instant>,
}

impl Stalls {
    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How long the longest-waiting response has waited.
    pub fn longest(&self) -> Option<std::time::Duration> {
        self.waiting()
            .since
            .values()
            .min()
            .map(std::time::Instant::elapsed)
    }

    /// `body`, watched: it waits from now until hyper first polls it.
    pub fn watch<B>(&self, body: B) -> Sending<B> {
        let mut waiting = self.waiting();
        let id = waiting.next_id;
        waiting.next_id += 1;
        waiting.since.insert(id, std::time::Instant::now());
        Sending {
            inner: body,
            registration: Registration {
                stalls: self.clone(),
                id,
            },
        }
    }
}

struct Registration {
    stalls: Stalls,
    id: u64,
}

impl Registration {
    fn waits(&self, waits: bool) {
        let mut waiting = self.stalls.waiting();
        if waits {
            waiting.since.insert(self.id, std::time::Instant::now());
        } else {
            waiting.since.remove(&self.id);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.waits(false);
    }
}

pin_project_lite::pin_project! {
    pub struct Sending<B> {
        #[pin]
        inner: B,
        registration: Registration,
    }
}

impl<B: http_body::Body> http_body::Body for Sending<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        this.registration.waits(false);
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            this.registration.waits(true);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
