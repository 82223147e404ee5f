//! A TCP proxy in front of a database that a test cuts (new connections refused, open
//! ones broken) and restores (start it again on the same port).

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio::task::JoinSet;

/// A TCP proxy the test can cut and restore.
pub struct Proxy {
    links: Arc<Mutex<Option<JoinSet<()>>>>,
    accept: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    /// Listens on `port` and forwards each connection to `upstream` (`host:port`).
    pub async fn start(port: u16, upstream: String) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let links = Arc::new(Mutex::new(Some(JoinSet::new())));
        let l = Arc::clone(&links);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let upstream = upstream.clone();
                if let Some(set) = l.lock().await.as_mut() {
                    set.spawn(async move {
                        if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                }
            }
        });
        Self {
            links,
            accept: Some(accept),
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
