//! Each worker's keep-alive connections to backends, over hyper's bare HTTP/1 connections.
//!
//! A worker serves its connections on one thread (`crate::workers`), so its pool needs no
//! lock and no task of its own: a request takes the connection last put back (or dials a new
//! one), and its response body puts the connection back when the last byte was read. hyper-util's
//! pooled client does the same work with a pool lock, a boxed future and one spawned task
//! per request to wait for the connection to become idle again (bench-results/proxy.md).
//!
//! - A connection is reused only after its response body was read to the end; a body dropped
//!   early closes the connection instead (hyper cannot tell where the next answer starts).
//! - A request that fails on a reused connection before a byte of it was written (the backend
//!   closed the idle connection meanwhile) is sent again on another connection, as hyper-util's
//!   client does; anything else is the caller's error.
//! - A request never waits behind another: a connection still sending a request body that the
//!   backend already answered stays busy, and the request takes or dials another.
//! - Idle connections are dropped after [`IDLE_TIMEOUT`]; at most [`MAX_IDLE`] per origin.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tower::ServiceExt;

use crate::body::{BoxError, ProxyBody};

/// How long an unused connection is kept.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Most idle connections a worker keeps to one origin.
pub(crate) const MAX_IDLE: usize = 256;

type Sender = SendRequest<ProxyBody>;

/// A backend's scheme and authority, with the pool key of its connections.
pub(crate) struct Origin {
    id: u64,
    connect: Uri,
}

impl Origin {
    /// Targets with the same scheme and authority share their connections.
    pub(crate) fn new(scheme: Scheme, authority: Authority) -> Result<Self, http::Error> {
        static IDS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());
        let connect = Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query("/")
            .build()?;
        let mut ids = IDS.lock().unwrap_or_else(PoisonError::into_inner);
        let next = ids.len() as u64;
        let id = *ids.entry(connect.to_string()).or_insert(next);
        Ok(Self { id, connect })
    }
}

struct Idle {
    sender: Sender,
    since: Instant,
}

thread_local! {
    static IDLE: RefCell<HashMap<u64, Vec<Idle>>> = RefCell::new(HashMap::new());
    static CONNECTOR: HttpsConnector<HttpConnector> = crate::client::connector();
}

/// Sends `req` (origin-form URI, `Host` set) to `origin` on an idle connection of this worker
/// or a new one. The response body returns the connection when it has been read to the end.
pub(crate) async fn send(
    origin: &Origin,
    req: Request<ProxyBody>,
) -> Result<Response<PooledBody>, BoxError> {
    let mut req = req;
    loop {
        let (mut sender, reused) = match idle_connection(origin.id).await {
            Some(sender) => (sender, true),
            // Boxed: dialing (TCP, TLS, handshake) is rare and its state large.
            None => (Box::pin(connect(origin)).await?, false),
        };
        if let Err(e) = sender.ready().await {
            if reused {
                continue;
            }
            return Err(e.into());
        }
        match sender.try_send_request(req).await {
            Ok(resp) => {
                return Ok(resp.map(|body| PooledBody {
                    body,
                    back: Some((origin.id, sender)),
                }))
            }
            Err(mut e) => match e.take_message() {
                Some(unsent) if reused => req = unsent,
                _ => return Err(e.into_error().into()),
            },
        }
    }
}

/// A connection of this worker to `origin` that is ready for a request, if there is one.
///
/// A connection is put back when its answer has been read, a moment before its task has seen
/// that; one turn of the worker lets the task catch up. A connection that is still not ready
/// after that is busy (the backend answered before it read all of a request body that is
/// still being sent): it stays in the pool, and the request goes elsewhere, not behind it.
async fn idle_connection(origin: u64) -> Option<Sender> {
    let sender = checkout(origin)?;
    if sender.is_ready() {
        return Some(sender);
    }
    tokio::task::yield_now().await;
    if sender.is_ready() {
        return Some(sender);
    }
    checkin(origin, sender);
    None
}

/// An open connection of this worker to `origin`: the most recently used one that is ready
/// for a request, else the most recently put back (whose task has yet to see its answer end).
/// Expired and closed connections met on the way are dropped.
fn checkout(origin: u64) -> Option<Sender> {
    IDLE.with_borrow_mut(|idle| {
        let list = idle.get_mut(&origin)?;
        let now = Instant::now();
        let mut i = list.len();
        while i > 0 {
            i -= 1;
            let entry = &list[i];
            if entry.sender.is_closed() || now.duration_since(entry.since) >= IDLE_TIMEOUT {
                list.remove(i);
            } else if entry.sender.is_ready() {
                return Some(list.remove(i).sender);
            }
        }
        list.pop().map(|entry| entry.sender)
    })
}

fn checkin(origin: u64, sender: Sender) {
    if sender.is_closed() {
        return;
    }
    // `try_with`: a body dropped while the thread's locals are torn down just closes.
    let _ = IDLE.try_with(|idle| {
        let Ok(mut idle) = idle.try_borrow_mut() else {
            return;
        };
        let list = idle.entry(origin).or_default();
        let now = Instant::now();
        if list
            .first()
            .is_some_and(|oldest| now.duration_since(oldest.since) >= IDLE_TIMEOUT)
        {
            list.retain(|e| now.duration_since(e.since) < IDLE_TIMEOUT && !e.sender.is_closed());
        }
        if list.len() < MAX_IDLE {
            list.push(Idle { sender, since: now });
        }
    });
}

async fn connect(origin: &Origin) -> Result<Sender, BoxError> {
    let connector = CONNECTOR.with(Clone::clone);
    let io = connector.oneshot(origin.connect.clone()).await?;
    let (sender, conn) = http1::Builder::new().handshake(io).await?;
    switchyard_runtime::shutdown::spawn_detached("backend-connection", async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "backend connection ended with an error");
        }
    });
    Ok(sender)
}

/// A backend's response body; its connection goes back to the worker's pool once the body
/// was read to the end, and closes if the body is dropped before that.
pub(crate) struct PooledBody {
    body: Incoming,
    back: Option<(u64, Sender)>,
}

impl PooledBody {
    fn give_back(&mut self) {
        if let Some((origin, sender)) = self.back.take() {
            checkin(origin, sender);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.give_back(),
            Poll::Ready(Some(Err(_))) => this.back = None,
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.give_back(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if self.body.is_end_stream() {
            self.give_back();
        }
    }
}

#[cfg(test)]
// The test backend's connections are plain spawned tasks.
#[allow(clippy::disallowed_methods)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use http::header::HOST;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::body::full;

    /// How the test backend answers each request on a connection.
    #[derive(Clone, Copy)]
    enum Answer {
        /// `200` with a 2-byte body, connection kept open.
        KeepAlive,
        /// The same answer, then the backend closes the connection without saying so.
        ThenClose,
        /// The head and one chunk of a chunked body that never ends.
        Endless,
    }

    /// A raw HTTP/1.1 backend on a random port; counts the connections it accepted.
    async fn backend(answer: Answer) -> (Origin, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    loop {
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                        buf.drain(..end);
                        let reply: &[u8] = match answer {
                            Answer::KeepAlive | Answer::ThenClose => {
                                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                            }
                            Answer::Endless => {
                                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n"
                            }
                        };
                        if sock.write_all(reply).await.is_err() {
                            return;
                        }
                        match answer {
                            Answer::KeepAlive => {}
                            Answer::ThenClose => return,
                            Answer::Endless => {
                                // Holds the body open until the client goes away.
                                let _ = sock.read(&mut chunk).await;
                                return;
                            }
                        }
                    }
                });
            }
        });
        let origin = Origin::new(
            Scheme::HTTP,
            Authority::try_from(addr.to_string().as_str()).unwrap(),
        )
        .unwrap();
        (origin, accepted)
    }

    fn get() -> Request<ProxyBody> {
        Request::builder()
            .uri("/x")
            .header(HOST, "backend")
            .body(full(Bytes::new()))
            .unwrap()
    }

    async fn read_all(resp: Response<PooledBody>) -> Bytes {
        resp.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_its_answer_was_read() {
        let (origin, accepted) = backend(Answer::KeepAlive).await;
        for _ in 0..5 {
            let resp = send(&origin, get()).await.unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(read_all(resp).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        // Two answers in flight at once need two connections; both are kept afterwards.
        let (a, b) = tokio::join!(send(&origin, get()), send(&origin, get()));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        read_all(a).await;
        read_all(b).await;
        assert_eq!(IDLE.with_borrow(|idle| idle[&origin.id].len()), 2);
        for _ in 0..3 {
            read_all(send(&origin, get()).await.unwrap()).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_answer_dropped_before_its_end_closes_its_connection() {
        let (origin, accepted) = backend(Answer::Endless).await;
        let mut resp = send(&origin, get()).await.unwrap();
        let first = resp.body_mut().frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "ok");
        drop(resp);
        assert!(IDLE.with_borrow(|idle| idle.get(&origin.id).is_none_or(Vec::is_empty)));
        let resp = send(&origin, get()).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_request_does_not_wait_behind_an_upload_the_backend_answered_early() {
        let (origin, accepted) = backend(Answer::KeepAlive).await;
        // A body that sends one chunk and then never ends; the backend answers at the head.
        let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
        tx.try_send(Ok(Frame::data(Bytes::from_static(b"part"))))
            .unwrap();
        let upload = Request::builder()
            .method("POST")
            .uri("/upload")
            .header(HOST, "backend")
            .header("transfer-encoding", "chunked")
            .body(http_body_util::StreamBody::new(rx).boxed())
            .unwrap();
        let resp = send(&origin, upload).await.unwrap();
        assert_eq!(read_all(resp).await, "ok");
        // The first connection is still sending the upload: the next request takes a new one.
        let next = tokio::time::timeout(Duration::from_secs(5), send(&origin, get()))
            .await
            .expect("the second request waited behind the upload")
            .unwrap();
        assert_eq!(read_all(next).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        drop(tx);
    }

    #[tokio::test]
    async fn a_connection_the_backend_closed_is_not_used_again() {
        let (origin, accepted) = backend(Answer::ThenClose).await;
        for round in 1..=3 {
            let resp = send(&origin, get()).await.unwrap();
            assert_eq!(read_all(resp).await, "ok", "round {round}");
            // Gives the connection's task time to see the backend's close. (A close that
            // crosses a request on the wire fails that request: no client can tell whether a
            // backend acted on it.)
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn targets_at_one_origin_share_its_connections() {
        let origin = |scheme: Scheme, authority: &'static str| {
            Origin::new(scheme, Authority::from_static(authority))
                .unwrap()
                .id
        };
        let a = origin(Scheme::HTTP, "shared.example:8080");
        assert_eq!(a, origin(Scheme::HTTP, "shared.example:8080"));
        assert_ne!(a, origin(Scheme::HTTPS, "shared.example:8080"));
        assert_ne!(a, origin(Scheme::HTTP, "shared.example:8081"));
    }

    #[tokio::test]
    async fn a_refused_connection_is_an_error_not_a_hang() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let origin = Origin::new(
            Scheme::HTTP,
            Authority::try_from(addr.to_string().as_str()).unwrap(),
        )
        .unwrap();
        assert!(send(&origin, get()).await.is_err());
    }
}
