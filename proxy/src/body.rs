//! The one body type requests and responses travel in: streamed bodies are boxed, never buffered.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// Boxed error of any body the proxy passes along.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Body of every request the proxy sends and every response it returns.
pub(crate) type ProxyBody = BoxBody<Bytes, BoxError>;

/// A body held in memory (errors, lookups, admin endpoints).
pub(crate) fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// The deadline of a whole request (head to last body byte), put in the request's
/// extensions when it arrives.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline(pub Instant);

/// Why a [`Bounded`] body stopped: not yet, too many bytes, or the deadline.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tripped(Arc<AtomicU8>);

impl Tripped {
    const TOO_LARGE: u8 = 1;
    const DEADLINE: u8 = 2;

    pub(crate) fn too_large(&self) -> bool {
        self.0.load(Ordering::Relaxed) == Self::TOO_LARGE
    }

    pub(crate) fn deadline(&self) -> bool {
        self.0.load(Ordering::Relaxed) == Self::DEADLINE
    }
}

/// A streamed body cut off with an error once it passes `limit` bytes or `deadline`; `tripped`
/// tells the caller which, so it can answer 413 or 504 instead of a generic 502.
///
/// The deadline timer is made only when the body first has to wait: a body that is already
/// in memory (most answers, every empty request body) costs a clock read, not a timer.
pub(crate) struct Bounded<B> {
    inner: B,
    left: u64,
    deadline: Instant,
    timer: Option<Pin<Box<Sleep>>>,
    tripped: Tripped,
}

impl<B> Bounded<B> {
    pub(crate) fn new(inner: B, limit: u64, deadline: Instant, tripped: Tripped) -> Self {
        Self {
            inner,
            left: limit,
            deadline,
            timer: None,
            tripped,
        }
    }

    fn trip_deadline(&self) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.tripped.0.store(Tripped::DEADLINE, Ordering::Relaxed);
        Poll::Ready(Some(Err("request deadline passed".into())))
    }
}

impl<B> Body for Bounded<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if Instant::now() >= this.deadline {
                    return this.trip_deadline();
                }
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > this.left {
                        this.tripped.0.store(Tripped::TOO_LARGE, Ordering::Relaxed);
                        return Poll::Ready(Some(Err("body too large".into())));
                    }
                    this.left -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let deadline = this.deadline;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.as_mut().poll(cx).is_ready() {
                    return this.trip_deadline();
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
