//! Reading ahead: a source stream polled by its own task into a bounded queue, so the
//! source reads the next items while the destination writes the current ones. The
//! queue bounds memory; the task ends at the first error and is aborted on drop.

use futures::stream::{BoxStream, StreamExt};
use tokio::sync::mpsc;

use crate::error::Result;

pub(crate) struct ReadAhead<T> {
    rx: mpsc::Receiver<Result<T>>,
    task: tokio::task::JoinHandle<()>,
}

impl<T: Send + 'static> ReadAhead<T> {
    /// Starts reading `upstream`, holding at most `depth` items not yet taken.
    pub fn spawn(mut upstream: BoxStream<'static, Result<T>>, depth: usize) -> Self {
        let (tx, rx) = mpsc::channel(depth.max(1));
        let task = tokio::spawn(async move {
            while let Some(item) = upstream.next().await {
                let stop = item.is_err();
                if tx.send(item).await.is_err() || stop {
                    break;
                }
            }
        });
        Self { rx, task }
    }

    /// The next item; `None` when the upstream ended.
    pub async fn next(&mut self) -> Option<Result<T>> {
        self.rx.recv().await
    }

    /// Items read and waiting.
    pub fn len(&self) -> usize {
        self.rx.len()
    }
}

impl<T> Drop for ReadAhead<T> {
    fn drop(&mut self) {
        // Dropping the task drops the upstream (and releases its connection) now.
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[tokio::test]
    async fn reads_ahead_in_order_and_stops_at_the_first_error() {
        let items: Vec<Result<u32>> = vec![Ok(1), Ok(2), Err(Error::Cancelled), Ok(4)];
        let mut ahead = ReadAhead::spawn(futures::stream::iter(items).boxed(), 8);
        assert_eq!(ahead.next().await.unwrap().unwrap(), 1);
        assert_eq!(ahead.next().await.unwrap().unwrap(), 2);
        assert!(ahead.next().await.unwrap().is_err());
        assert!(ahead.next().await.is_none(), "nothing after the error");
    }

    #[tokio::test]
    async fn reads_no_further_ahead_than_its_depth() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        use std::time::Duration;
        let pulled = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&pulled);
        let upstream = futures::stream::iter(0..100u32)
            .map(move |i| {
                counter.fetch_add(1, Ordering::SeqCst);
                Ok::<u32, Error>(i)
            })
            .boxed();
        let mut ahead = ReadAhead::spawn(upstream, 2);
        let read = |n: usize| {
            let pulled = Arc::clone(&pulled);
            move || {
                let pulled = Arc::clone(&pulled);
                async move { pulled.load(Ordering::SeqCst) == n }
            }
        };
        // Two items queued and a third read, waiting for room; then the reader stops.
        crate::testing::wait_for_async("three items read", Duration::from_secs(5), read(3)).await;
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        assert_eq!(pulled.load(Ordering::SeqCst), 3, "read past its depth");
        // Taking one makes room for exactly one more.
        assert_eq!(ahead.next().await.unwrap().unwrap(), 0);
        crate::testing::wait_for_async("a fourth item read", Duration::from_secs(5), read(4)).await;
    }
}
