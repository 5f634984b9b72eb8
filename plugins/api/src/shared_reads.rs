//! Reads of a server's state that callers asking at the same moment share.
//!
//! A fleet's preflight asks each server the same question hundreds of times at once (which
//! release an ONTAP cluster runs, at which level an HAProxy socket is). The first caller sends
//! the read; those who ask while it is on its way wait for its answer; the first to ask after
//! the answer reads afresh, so nobody is given an answer older than their own question.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

/// Reads in flight, by server (or any key naming what is read).
pub struct SharedReads<T>(Mutex<BTreeMap<String, Arc<OnceCell<T>>>>);

impl<T: Clone> SharedReads<T> {
    pub const fn new() -> SharedReads<T> {
        SharedReads(Mutex::new(BTreeMap::new()))
    }

    /// The answer of the read of `key` on its way, or of `read` sent now.
    pub async fn read<F, Fut>(&self, key: &str, read: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let cell = self.0.lock().unwrap_or_else(|e| e.into_inner()).entry(key.to_string()).or_default().clone();
        let answer = cell.get_or_init(read).await.clone();
        let mut reads = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if reads.get(key).is_some_and(|r| Arc::ptr_eq(r, &cell)) {
            reads.remove(key);
        }
        answer
    }
}

impl<T: Clone> Default for SharedReads<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn callers_at_the_same_moment_share_one_read_and_a_later_caller_reads_afresh() {
        static READS: SharedReads<usize> = SharedReads::new();
        let sent = AtomicUsize::new(0);
        let read = || async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            sent.fetch_add(1, Ordering::SeqCst) + 1
        };
        let together = futures::future::join_all((0..50).map(|_| READS.read("haproxy:9999", read))).await;
        assert!(together.iter().all(|&n| n == 1), "{together:?}");
        assert_eq!(sent.load(Ordering::SeqCst), 1);
        assert_eq!(READS.read("haproxy:9999", read).await, 2, "a later question is a new read");
        assert_eq!(READS.read("another:1", read).await, 3, "another server has its own read");
    }
}
