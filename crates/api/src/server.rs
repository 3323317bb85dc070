//! The HTTP/1.1 front: accepts connections and bounds what a client can hold.
//!
//! `axum::serve` has no read timeouts and no connection cap, so a client that opens
//! sockets and sends nothing (or a byte every few seconds) keeps them forever. Here
//! each connection is served by hyper directly, with:
//!
//! - a **header read timeout**: the whole request head must arrive within it, counted
//!   from the moment the server waits for a head (a new connection, or the previous
//!   answer sent); hyper then closes the connection;
//! - an **idle timeout**: a connection with no request in flight and no byte read or
//!   written for this long is closed, whatever state its parser is in;
//! - a **connection cap** per process: beyond it, new connections wait in the
//!   kernel's accept queue until one closes;
//! - a **request deadline**: the router's `request_timeout` (see
//!   [`crate::ApiLimits`]) bounds everything from the head to the answer, body
//!   included.
//!
//! A request whose head hyper cannot parse never reaches the router: hyper answers it
//! itself (docs/api.md, "Connection-level rejections") and closes the connection.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::Service;

/// Default of [`ServeLimits::header_read_timeout`].
pub const HEADER_READ_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Default of [`ServeLimits::idle_timeout`].
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// Default of [`ServeLimits::max_connections`].
pub const MAX_CONNECTIONS_DEFAULT: usize = 1_024;
/// Largest request head (request line and headers) read; beyond it hyper answers 431.
/// The API's own headers are a few hundred bytes; a bearer token about one KiB.
pub const HEADER_BYTES_MAX: usize = 64 * 1024;

/// Bounds of the connections of one server (`[server]` in the configuration).
#[derive(Clone, Copy, Debug)]
pub struct ServeLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_millis(HEADER_READ_TIMEOUT_MS_DEFAULT),
            idle_timeout: Duration::from_millis(IDLE_TIMEOUT_MS_DEFAULT),
            max_connections: MAX_CONNECTIONS_DEFAULT,
        }
    }
}

/// Serves `router` on `listener` with the default [`ServeLimits`] until `shutdown` is
/// cancelled (see [`serve_with`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, router, ServeLimits::default(), shutdown).await
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then stops accepting,
/// closes idle connections and waits for requests in flight to finish (each is
/// bounded by the router's request timeout and the idle timeout, so shutdown is too).
/// The peer address reaches handlers and the rate limiter as `ConnectInfo`.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, max_connections = limits.max_connections, "api listening");
    }
    let max = limits.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors or a reset before accept: transient, and
                    // logged once per occurrence; a pause stops a hot loop.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let router = router.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            serve_connection(stream, peer, router, limits, shutdown).await;
            drop(permit);
        });
    }
    // Every connection holds a slot until it ends: all slots back means all done.
    let _ = slots.acquire_many(max as u32).await;
    Ok(())
}

/// When the connection last moved a byte, and how many requests it is serving.
struct Activity {
    started: Instant,
    last_io_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn touch(&self) {
        self.last_io_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = self.started.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_io_ms.load(Ordering::Relaxed)))
    }
}

/// Counts a request in flight until dropped (also when its future is cancelled).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A socket that records when it last read or wrote a byte.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: ServeLimits,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity {
        started: Instant::now(),
        last_io_ms: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
    });
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let per_request = activity.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let in_flight = InFlight::new(per_request.clone());
        let mut router = router.clone();
        async move {
            let response = router.call(req).await;
            drop(in_flight);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(HEADER_BYTES_MAX)
        .keep_alive(true);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut shutting_down = false;
    loop {
        let idle_left = limits.idle_timeout.saturating_sub(activity.idle_for());
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    // Header timeouts, parse errors and resets: the client's doing, so
                    // DEBUG (a flood of them must not flood the log either).
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = shutdown.cancelled(), if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep(idle_left) => {
                if activity.in_flight.load(Ordering::Relaxed) == 0
                    && activity.idle_for() >= limits.idle_timeout
                {
                    // Nothing in flight and nothing moved: dropping the connection
                    // loses no answer.
                    tracing::debug!(%peer, "idle connection closed");
                    return;
                }
                if activity.in_flight.load(Ordering::Relaxed) > 0 {
                    // A handler is working (bounded by the request deadline): look
                    // again one idle period from now rather than spinning.
                    activity.touch();
                }
            }
        }
    }
}
