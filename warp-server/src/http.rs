//! A minimal HTTP/1 server for the probe and metrics ports.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::error::ServerError;
use crate::health::Reply;

pub type Route = Arc<dyn Fn(&str) -> Reply + Send + Sync>;

/// Binds `0.0.0.0:port` (an error names the port) and serves `route` until `shutdown`.
pub async fn serve(
    port: u16,
    what: &'static str,
    route: Route,
    shutdown: CancellationToken,
) -> Result<SocketAddr, ServerError> {
    let listener = TcpListener::bind(("0.0.0.0", port))
        .await
        .map_err(|e| ServerError::Bind {
            what,
            port,
            message: e.to_string(),
        })?;
    let addr = listener.local_addr().map_err(|e| ServerError::Bind {
        what,
        port,
        message: e.to_string(),
    })?;
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => continue,
                },
                () = shutdown.cancelled() => return,
            };
            let route = Arc::clone(&route);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let reply = route(req.uri().path());
                    async move {
                        let response = Response::builder()
                            .status(reply.status)
                            .header("content-type", reply.content_type)
                            .body(Full::new(Bytes::from(reply.body)))
                            .unwrap_or_default();
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}
