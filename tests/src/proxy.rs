//! A TCP proxy in front of a database that a test cuts (new connections refused, open
//! ones broken) and restores (start it again on the same port).
//!
//! The proxy relays on a runtime of its own thread. On the test's runtime it stalled
//! whenever the test blocked that thread: `probes` waited for the replicator's exit with
//! a blocking `wait()` on a current-thread runtime after SIGTERM, so the replicator's
//! last commit through the proxy was never relayed, its drain timed out after 25 s and
//! it exited 1 (seen once in a full suite run and once in 15 runs of the test; its log
//! showed a `COMMIT` and a status `INSERT` unanswered for the whole drain).

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::sync::{oneshot, Mutex};
use tokio::task::JoinSet;

/// A TCP proxy the test can cut and restore.
pub struct Proxy {
    links: Arc<Mutex<Option<JoinSet<()>>>>,
    accept: Option<tokio::task::JoinHandle<()>>,
    /// Dropped with the proxy: its thread's runtime ends, and every link with it.
    _stop: oneshot::Sender<()>,
}

/// Serves HTTP/1 on a free local port from a runtime of its own (see above), answering
/// each request with `handle`. Returns the port and the sender whose drop stops it.
pub(crate) async fn serve_http<H, F>(handle: H) -> (u16, oneshot::Sender<()>)
where
    H: Fn(hyper::Request<hyper::body::Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = hyper::Response<http_body_util::Full<hyper::body::Bytes>>>
        + Send
        + 'static,
{
    let (runtime, stop) = own_runtime();
    let listener = runtime
        .spawn(async { TcpListener::bind(("127.0.0.1", 0)).await })
        .await
        .unwrap()
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let on = runtime.clone();
    runtime.spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let handle = handle.clone();
            on.spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let answer = handle(req);
                    async move { Ok::<_, std::convert::Infallible>(answer.await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(client), service)
                    .await;
            });
        }
    });
    (port, stop)
}

/// A runtime on a thread of its own, until the sender is dropped.
pub(crate) fn own_runtime() -> (Handle, oneshot::Sender<()>) {
    let (handle_tx, handle_rx) = std::sync::mpsc::channel();
    let (stop, stopped) = oneshot::channel::<()>();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        handle_tx.send(runtime.handle().clone()).unwrap();
        runtime.block_on(async {
            let _ = stopped.await;
        });
    });
    (handle_rx.recv().unwrap(), stop)
}

impl Proxy {
    /// Listens on `port` and forwards each connection to `upstream` (`host:port`).
    pub async fn start(port: u16, upstream: String) -> Self {
        let (runtime, stop) = own_runtime();
        let listener = runtime
            .spawn(async move { TcpListener::bind(("127.0.0.1", port)).await })
            .await
            .unwrap()
            .unwrap();
        let links = Arc::new(Mutex::new(Some(JoinSet::new())));
        let l = Arc::clone(&links);
        let on = runtime.clone();
        let accept = runtime.spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let upstream = upstream.clone();
                if let Some(set) = l.lock().await.as_mut() {
                    set.spawn_on(
                        async move {
                            if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await
                            {
                                let _ =
                                    tokio::io::copy_bidirectional(&mut client, &mut server).await;
                            }
                        },
                        &on,
                    );
                }
            }
        });
        Self {
            links,
            accept: Some(accept),
            _stop: stop,
        }
    }

    /// Refuses new connections and breaks the open ones.
    pub async fn cut(&mut self) {
        if let Some(a) = self.accept.take() {
            a.abort();
            let _ = a.await;
        }
        if let Some(mut set) = self.links.lock().await.take() {
            set.abort_all();
            while set.join_next().await.is_some() {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::time::Duration;

    use super::Proxy;

    /// The proxy relays while the test's own (current-thread) runtime is blocked, as a
    /// test waiting for a child process with a blocking `wait()` blocks it.
    #[tokio::test]
    async fn relays_while_the_test_thread_blocks() {
        let echo = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let upstream = echo.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut s, _) = echo.accept().unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).unwrap();
            s.write_all(&buf).unwrap();
        });
        let port = crate::free_port();
        let _proxy = Proxy::start(port, upstream).await;
        // Blocks this runtime's only thread until the client is done.
        let client = std::thread::spawn(move || {
            let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            c.write_all(b"hello").unwrap();
            let mut buf = [0u8; 5];
            c.read_exact(&mut buf).map(|()| buf)
        });
        let answer = client.join().unwrap();
        assert_eq!(answer.expect("relayed").as_slice(), b"hello");
    }
}
