//! Request-smuggling detection below hyper: hyper resolves `Content-Length` +
//! `Transfer-Encoding` by dropping the length (RFC 9112 6.3), so the handler cannot see that
//! both were sent. This reader watches the raw bytes of each request head on a connection and
//! flags the connection when one head carries both; the handler then refuses the request.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Longest request head the sniffer buffers; hyper refuses larger ones anyway.
const MAX_HEAD: usize = 64 * 1024;

/// Shared between the connection's reader and its request handler.
#[derive(Debug, Clone, Default)]
pub(crate) struct FramingFlag(Arc<AtomicBool>);

impl FramingFlag {
    pub(crate) fn is_ambiguous(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
}

#[derive(Debug)]
enum State {
    /// Collecting a request head.
    Head(Vec<u8>),
    /// Skipping a fixed-length body.
    Fixed(u64),
    /// Reading a chunk-size line.
    ChunkSize(Vec<u8>),
    /// Skipping chunk data, then its CRLF.
    ChunkData(u64),
    ChunkEnd,
    /// Reading trailer lines until an empty one.
    Trailers(Vec<u8>),
    /// Nothing more to learn (flagged, malformed, or upgraded); hyper handles the rest.
    Off,
}

/// Follows request boundaries in the byte stream (heads, fixed and chunked bodies).
#[derive(Debug)]
pub(crate) struct Sniffer {
    state: State,
    flag: FramingFlag,
}

impl Sniffer {
    pub(crate) fn new(flag: FramingFlag) -> Self {
        Self {
            state: State::Head(Vec::new()),
            flag,
        }
    }

    pub(crate) fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let used = match &mut self.state {
                State::Off => return,
                State::Head(buf) => {
                    // Empty lines before a request line are skipped, as hyper does.
                    if buf.is_empty() {
                        let skip = data
                            .iter()
                            .take_while(|b| **b == b'\r' || **b == b'\n')
                            .count();
                        if skip > 0 {
                            data = &data[skip..];
                            continue;
                        }
                    }
                    if buf.is_empty() {
                        // The common case, a whole head in one read, is parsed where it lies:
                        // no copy, no allocation.
                        let window = &data[..data.len().min(MAX_HEAD + 1)];
                        if let Some(end) = head_end(window) {
                            self.state = head_state(&data[..end], &self.flag);
                            data = &data[end..];
                            continue;
                        }
                    }
                    let start = buf.len().saturating_sub(3);
                    let take = data.len().min(MAX_HEAD + 1 - buf.len().min(MAX_HEAD));
                    buf.extend_from_slice(&data[..take]);
                    match head_end(&buf[start..]) {
                        Some(end) => {
                            let end = start + end;
                            let rest = buf.len() - end;
                            let next = head_state(&buf[..end], &self.flag);
                            self.state = next;
                            take - rest
                        }
                        None if buf.len() > MAX_HEAD => {
                            self.state = State::Off;
                            return;
                        }
                        None => take,
                    }
                }
                State::Fixed(left) => {
                    let n = (*left).min(data.len() as u64);
                    *left -= n;
                    if *left == 0 {
                        self.state = State::Head(Vec::new());
                    }
                    n as usize
                }
                State::ChunkSize(line) | State::Trailers(line) => {
                    let (used, done) = take_line(line, data);
                    if let Some(line) = done {
                        self.state = self.after_line(&line);
                    }
                    used
                }
                State::ChunkData(left) => {
                    let n = (*left).min(data.len() as u64);
                    *left -= n;
                    if *left == 0 {
                        self.state = State::ChunkEnd;
                    }
                    n as usize
                }
                State::ChunkEnd => match data.iter().position(|b| *b == b'\n') {
                    Some(i) => {
                        self.state = State::ChunkSize(Vec::new());
                        i + 1
                    }
                    None => data.len(),
                },
            };
            data = &data[used..];
        }
    }

    fn after_line(&self, line: &[u8]) -> State {
        match &self.state {
            State::ChunkSize(_) => {
                let size = line.split(|b| *b == b';').next().unwrap_or_default();
                let size = std::str::from_utf8(size).ok().map(str::trim);
                match size.and_then(|s| u64::from_str_radix(s, 16).ok()) {
                    Some(0) => State::Trailers(Vec::new()),
                    Some(n) => State::ChunkData(n),
                    None => State::Off,
                }
            }
            _ if line.iter().all(|b| *b == b'\r') => State::Head(Vec::new()),
            _ => State::Trailers(Vec::new()),
        }
    }
}

/// Appends `data` up to and including the first `\n` to `line`; returns bytes used and the
/// complete line (without `\n`) once there is one.
fn take_line(line: &mut Vec<u8>, data: &[u8]) -> (usize, Option<Vec<u8>>) {
    match data.iter().position(|b| *b == b'\n') {
        Some(i) => {
            line.extend_from_slice(&data[..i]);
            (i + 1, Some(std::mem::take(line)))
        }
        None => {
            if line.len() < 4096 {
                line.extend_from_slice(data);
            }
            (data.len(), None)
        }
    }
}

/// Offset just past the blank line ending a head (`\r\n\r\n` or `\n\n`).
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(2).enumerate().find_map(|(i, w)| match w {
        [b'\n', b'\n'] => Some(i + 2),
        [b'\n', b'\r'] if buf.get(i + 2) == Some(&b'\n') => Some(i + 3),
        _ => None,
    })
}

/// Reads the framing headers of one head and returns what follows it.
fn head_state(head: &[u8], flag: &FramingFlag) -> State {
    let mut lines = head.split(|b| *b == b'\n');
    let request_line = lines.next().unwrap_or_default();
    let (mut length, mut chunked, mut cl, mut te) = (None, false, false, false);
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        let value = line[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            cl = true;
            length = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok());
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            te = true;
            chunked = value
                .rsplit(|b| *b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        }
    }
    if cl && te {
        flag.set();
        return State::Off;
    }
    if request_line.starts_with(b"CONNECT ") {
        return State::Off;
    }
    match (te, chunked, length) {
        (true, true, _) => State::ChunkSize(Vec::new()),
        (true, false, _) => State::Off,
        (false, _, Some(0)) => State::Head(Vec::new()),
        (false, _, Some(n)) => State::Fixed(n),
        (false, _, None) if cl => State::Off,
        (false, _, None) => State::Head(Vec::new()),
    }
}

/// A connection whose incoming bytes pass through a [`Sniffer`].
pub(crate) struct SniffedIo<T> {
    inner: T,
    sniffer: Sniffer,
}

impl<T> SniffedIo<T> {
    pub(crate) fn new(inner: T, flag: FramingFlag) -> Self {
        Self {
            inner,
            sniffer: Sniffer::new(flag),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SniffedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled {
            this.sniffer.feed(&buf.filled()[before..]);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for SniffedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flagged(stream: &[u8], step: usize) -> bool {
        let flag = FramingFlag::default();
        let mut s = Sniffer::new(flag.clone());
        for chunk in stream.chunks(step) {
            s.feed(chunk);
        }
        flag.is_ambiguous()
    }

    #[test]
    fn both_framing_headers_are_flagged_in_any_order_and_split() {
        let cl_te = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let te_cl = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\ncontent-length: 4\r\n\r\n0\r\n\r\n";
        for step in [1, 2, 3, 7, 1000] {
            assert!(flagged(cl_te, step), "step {step}");
            assert!(flagged(te_cl, step), "step {step}");
        }
    }

    #[test]
    fn bodies_that_look_like_heads_are_skipped() {
        // Keep-alive: a fixed body, a chunked body whose data mimics both headers, then a
        // clean GET. Nothing is ambiguous.
        let body = b"x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut stream = Vec::new();
        stream.extend_from_slice(
            format!(
                "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        stream.extend_from_slice(body);
        stream.extend_from_slice(
            b"POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        stream.extend_from_slice(format!("{:x};ext=1\r\n", body.len()).as_bytes());
        stream.extend_from_slice(body);
        stream.extend_from_slice(b"\r\n0\r\nTrailer-X: 1\r\n\r\n");
        stream.extend_from_slice(b"GET /c HTTP/1.1\r\nHost: a\r\n\r\n");
        for step in [1, 5, 64, 10_000] {
            assert!(!flagged(&stream, step), "step {step}");
        }
        // ...and a smuggling head after all that is still caught.
        stream.extend_from_slice(
            b"POST /d HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert!(flagged(&stream, 9));
    }
}
