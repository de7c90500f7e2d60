//! The two deadlines of a connection between requests, as Go's `ReadHeaderTimeout` and
//! `IdleTimeout` (hyper has one timer for both: golang/go#54784, hyperium/hyper#3828):
//!
//! - **idle**: with no request in flight and no byte of the next one, the connection is closed
//!   after `idle`. This is the keep-alive wait, and it is longer than the clients' own pool
//!   timeouts (Go's and reqwest's 90 s) so that a client lets a pooled connection go before the
//!   server does; a server that closes first races the client's reuse (the client's request
//!   meets a closed socket and fails without reaching any handler).
//! - **header read**: from the first byte of a request to its complete head (the service being
//!   called). A client trickling its head is cut off here, however long the keep-alive wait.
//!   This bound covers the protocol detection bytes too, which hyper's timer does not.
//!
//! [`DeadlineIo`] wraps the accepted stream and enforces both on reads (a read past a deadline
//! fails with `TimedOut`, and hyper closes the connection); an [`InFlight`] guard from
//! [`ConnState::begin`] tells it when a request is in flight: from the service call until the
//! response body is dropped (`http::serve` for the axum services, the proxy for itself). While a request is
//! in flight neither deadline runs (the request deadline layer bounds the body and the answer).
//! An HTTP/2 connection (prior knowledge) has no heads to time; only `idle` applies to it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The connection deadlines (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnDeadlines {
    /// From a request's first byte to its complete head.
    pub header_read: Duration,
    /// With nothing in flight and nothing arriving.
    pub idle: Duration,
}

impl ConnDeadlines {
    /// 10 s for a head; 120 s idle, longer than Go's and reqwest's 90 s pool idle timeouts.
    pub const DEFAULT: Self = Self {
        header_read: Duration::from_secs(10),
        idle: Duration::from_secs(120),
    };
}

/// The HTTP/2 connection preface's first bytes (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

#[derive(Debug)]
struct Clock {
    /// When the connection last had nothing in flight: the accept, or the last answer's end.
    idle_since: Instant,
    /// The first byte read since `idle_since`, if any: a request head is arriving.
    head_started: Option<Instant>,
    /// The connection speaks HTTP/2 (no head deadline).
    h2: bool,
    /// The connection's first bytes are still being compared with the HTTP/2 preface.
    sniffing: bool,
    /// How many of the preface's bytes they matched so far.
    matched: usize,
}

/// What a connection's [`DeadlineIo`] and [`Tracker`] share.
#[derive(Debug)]
pub struct ConnState {
    deadlines: ConnDeadlines,
    in_flight: AtomicUsize,
    clock: Mutex<Clock>,
}

impl ConnState {
    pub fn new(deadlines: ConnDeadlines) -> Arc<Self> {
        Arc::new(Self {
            deadlines,
            in_flight: AtomicUsize::new(0),
            clock: Mutex::new(Clock {
                idle_since: Instant::now(),
                head_started: None,
                h2: false,
                sniffing: true,
                matched: 0,
            }),
        })
    }

    fn clock(&self) -> std::sync::MutexGuard<'_, Clock> {
        self.clock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The deadline reads run against now, with the cause a timeout names.
    fn deadline(&self) -> Option<(Instant, &'static str)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let clock = self.clock();
        match clock.head_started {
            Some(first) if !clock.h2 => Some((first + self.deadlines.header_read, "header read")),
            _ => Some((clock.idle_since + self.deadlines.idle, "idle")),
        }
    }

    /// `bytes` were read: the first byte after an idle start begins a head.
    fn saw(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut clock = self.clock();
        if clock.sniffing {
            let from = clock.matched;
            let n = bytes.len().min(H2_PREFACE.len() - from);
            if H2_PREFACE[from..from + n] == bytes[..n] {
                clock.matched += n;
                clock.h2 = clock.matched == H2_PREFACE.len();
                clock.sniffing = !clock.h2;
            } else {
                clock.sniffing = false;
            }
        }
        if clock.h2 {
            clock.idle_since = Instant::now();
        } else if clock.head_started.is_none() && self.in_flight.load(Ordering::Acquire) == 0 {
            clock.head_started = Some(Instant::now());
        }
    }

    /// `n` bytes of an answer were written after its body was done (hyper still flushing the
    /// tail it buffered to a client reading slowly): the connection is not idle yet, so the
    /// idle wait starts again from now. No lock while a request is in flight.
    fn wrote(&self, n: usize) {
        if n > 0 && self.in_flight.load(Ordering::Acquire) == 0 {
            self.clock().idle_since = Instant::now();
        }
    }

    /// Counts a request in flight until the returned guard is dropped; the server holds it in
    /// the response body.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }
}

/// A request in flight on a connection; dropping it (with the response body) may start the
/// connection's idle wait.
#[derive(Debug)]
pub struct InFlight(Arc<ConnState>);

impl InFlight {
    /// `body`, holding this request in flight until the server drops it (its last frame sent
    /// or the connection gone). A struct rather than a `map_frame` closure in one more box: no
    /// allocation and no virtual call per frame.
    pub fn hold<B>(self, body: B) -> Held<B> {
        Held {
            body,
            _in_flight: self,
        }
    }
}

/// A response body that keeps its request in flight ([`InFlight::hold`]).
#[derive(Debug)]
pub struct Held<B> {
    body: B,
    _in_flight: InFlight,
}

impl<B: http_body::Body + Unpin> http_body::Body for Held<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut clock = self.0.clock();
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            clock.idle_since = Instant::now();
            clock.head_started = None;
        }
    }
}

/// The accepted stream with the connection deadlines on its reads.
#[derive(Debug)]
pub struct DeadlineIo<S> {
    inner: S,
    state: Arc<ConnState>,
    timer: Pin<Box<Sleep>>,
}

impl<S> DeadlineIo<S> {
    pub fn new(inner: S, state: Arc<ConnState>) -> Self {
        let far = Instant::now() + state.deadlines.idle;
        Self {
            inner,
            state,
            timer: Box::pin(tokio::time::sleep_until(far)),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for DeadlineIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some((until, cause)) = this.state.deadline() {
            if this.timer.deadline() != until {
                this.timer.as_mut().reset(until);
            }
            if this.timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{cause} deadline passed"),
                )));
            }
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.state.saw(&buf.filled()[before..]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for DeadlineIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.state.wrote(n);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            self.state.wrote(n);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> Arc<ConnState> {
        ConnState::new(ConnDeadlines {
            header_read: Duration::from_secs(1),
            idle: Duration::from_secs(60),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_runs_the_idle_deadline_and_a_head_the_header_deadline() {
        let s = state();
        let start = Instant::now();
        assert_eq!(s.deadline().unwrap().0, start + Duration::from_secs(60));
        tokio::time::advance(Duration::from_secs(30)).await;
        s.saw(b"POST / HT");
        assert_eq!(
            s.deadline().unwrap(),
            (start + Duration::from_secs(31), "header read")
        );
        // The head is complete: the request is in flight, no deadline.
        let req = s.begin();
        assert_eq!(s.deadline(), None);
        s.saw(b"body bytes");
        tokio::time::advance(Duration::from_secs(5)).await;
        drop(req);
        // Answered: idle again from now, and the next byte starts a new head.
        assert_eq!(
            s.deadline().unwrap(),
            (start + Duration::from_secs(95), "idle")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn writing_the_tail_of_an_answer_keeps_the_connection_from_idling() {
        let s = state();
        let req = s.begin();
        drop(req); // the body is done; hyper may still hold part of it
        tokio::time::advance(Duration::from_secs(50)).await;
        s.wrote(16_384);
        let now = Instant::now();
        assert_eq!(
            s.deadline().unwrap(),
            (now + Duration::from_secs(60), "idle")
        );
        // While a request is in flight, writes take no lock and change nothing.
        let _req = s.begin();
        s.wrote(16_384);
        assert_eq!(s.deadline(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_http2_connection_has_no_head_deadline() {
        let s = state();
        s.saw(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        tokio::time::advance(Duration::from_secs(10)).await;
        s.saw(b"\x00\x00\x08\x06"); // a PING frame while idle
        let now = Instant::now();
        assert_eq!(
            s.deadline().unwrap(),
            (now + Duration::from_secs(60), "idle")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_preface_split_over_reads_is_still_http2() {
        let s = state();
        s.saw(b"PRI * HT");
        s.saw(b"TP/2.0\r\n\r\nSM\r\n\r\n");
        assert!(s.clock().h2);
        let h1 = state();
        h1.saw(b"P");
        h1.saw(b"OST / HTTP/1.1\r\n");
        assert!(!h1.clock().h2);
        assert_eq!(h1.deadline().unwrap().1, "header read");
    }
}
