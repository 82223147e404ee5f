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
    async fn holds_at_most_depth_items_unread() {
        let mut ahead = ReadAhead::spawn(
            futures::stream::iter((0..100).map(Ok::<u32, Error>)).boxed(),
            2,
        );
        // Let the task fill the queue as far as it may.
        let queued = || async { ahead.len() == 2 };
        crate::testing::wait_for_async(
            "two items queued",
            std::time::Duration::from_secs(5),
            queued,
        )
        .await;
        tokio::task::yield_now().await;
        assert_eq!(ahead.len(), 2);
        assert_eq!(ahead.next().await.unwrap().unwrap(), 0);
    }
}
