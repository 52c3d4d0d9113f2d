//! The admin port (`ringkv-node --admin-listen`): HTTP/1.1 on a loopback
//! address, through `hyper`, for a Prometheus scraper on the same host and
//! for health checks.
//!
//! - `GET /metrics`: the node's metrics in the Prometheus (OpenMetrics)
//!   text format ([`super::metrics`]);
//! - `GET /health`: 200 `ok` while the node's actors answer within 2 s
//!   (the process is live), else 503;
//! - `GET /ready`: 200 `ready` once the ring holds the node and its ring
//!   is confirmed (it serves requests), else 503;
//! - any other path is 404, any other method 405.
//!
//! Off unless asked for. Only a loopback address is accepted: the port has
//! no authentication, and what it shows (members, addresses, load) is for
//! the node's own host. At most [`MAX_CONNECTIONS`] connections at once, and
//! a request's head must arrive within [`HEADER_TIMEOUT`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::Node;
use crate::error::{Error, Result};

/// Connections served at once; more wait in the listen queue.
pub const MAX_CONNECTIONS: usize = 16;

/// How long a request's head may take to arrive.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long `/health` waits for the node's actors.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// The content type of `/metrics` (what `prometheus-client` writes).
const METRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A running admin port.
pub struct AdminPort {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Refuses an admin address that is not a loopback one.
pub fn check_listen(addr: &str) -> Result<()> {
    if super::resp::is_loopback(addr) {
        return Ok(());
    }
    Err(Error::InvalidInput(format!(
        "admin_listen {addr:?} is not a loopback address: the admin port has no \
         authentication, so it listens only on 127.0.0.1, ::1 or localhost"
    )))
}

impl AdminPort {
    /// Binds `listen` (a loopback address) and serves `node`'s admin
    /// endpoints on the current tokio runtime.
    pub async fn start(listen: &str, node: Node) -> Result<AdminPort> {
        check_listen(listen)?;
        let listener = TcpListener::bind(listen).await.map_err(|e| Error::Io {
            context: format!("binding the admin port {listen}"),
            source: e,
        })?;
        let addr = listener.local_addr().map_err(|e| Error::Io {
            context: "the admin port's address".into(),
            source: e,
        })?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(listener, node, stop.clone()));
        info!(%addr, "admin port listening (/metrics, /health, /ready)");
        Ok(AdminPort { addr, stop, task })
    }

    /// The address bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and ends the connections.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn serve(listener: TcpListener, node: Node, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                debug!("admin port: accept failed: {e}");
                continue;
            }
        };
        let node = node.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| answer(node.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = stop.cancelled() => {}
                done = conn => if let Err(e) = done {
                    debug!(%remote, "admin port connection: {e}");
                }
            }
        });
    }
}

fn text(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

async fn answer(
    node: Node,
    req: Request<Incoming>,
) -> std::result::Result<Response<Full<Bytes>>, Infallible> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(text(
            StatusCode::METHOD_NOT_ALLOWED,
            PLAIN,
            "GET only\n".into(),
        ));
    }
    let response = match req.uri().path() {
        "/metrics" => match node.metrics_text().await {
            Ok(body) => text(StatusCode::OK, METRICS_TYPE, body),
            Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, format!("{e}\n")),
        },
        "/health" => match tokio::time::timeout(HEALTH_TIMEOUT, node.ring_state()).await {
            Ok(Ok(_)) => text(StatusCode::OK, PLAIN, "ok\n".into()),
            Ok(Err(e)) => text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, format!("{e}\n")),
            Err(_) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                PLAIN,
                format!("the node did not answer within {HEALTH_TIMEOUT:?}\n"),
            ),
        },
        "/ready" => {
            if node.is_ready().await {
                text(StatusCode::OK, PLAIN, "ready\n".into())
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, "not ready\n".into())
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            PLAIN,
            "not found: /metrics, /health and /ready are served\n".into(),
        ),
    };
    Ok(response)
}
