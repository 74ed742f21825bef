//! A batch's completion, shared by its records' futures: set once by the
//! sender (or failed as `Closed` if the batch is dropped unfinished), read
//! by every record of the batch with its index. A record's future holds
//! one `Arc` of it: no channel, subscription or allocation per record.

use std::sync::{Arc, OnceLock};

use tokio::sync::Notify;

use crate::error::ProducerError;

/// A batch's outcome: base offset and log-append time (-1 for create time).
pub(crate) type BatchResult = Result<(u64, i64), ProducerError>;

/// What a batch's records share: where the batch goes and how it ended.
#[derive(Debug)]
pub(crate) struct BatchShared {
    /// The topic (interned).
    pub topic: Arc<str>,
    /// The partition.
    pub partition: u32,
    result: OnceLock<BatchResult>,
    done: Notify,
}

/// What a record's future holds: its batch's shared state.
pub(crate) type Completion = Arc<BatchShared>;

impl BatchShared {
    /// The outcome, once set.
    pub fn result(&self) -> Option<&BatchResult> {
        self.result.get()
    }

    /// Whether the batch has finished (acknowledged or failed).
    pub fn is_finished(&self) -> bool {
        self.result.get().is_some()
    }

    /// Waits for the outcome.
    pub async fn finished(&self) -> &BatchResult {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(result) = self.result.get() {
                return result;
            }
            notified.await;
        }
    }
}

/// The sending side of a batch's completion, owned by the batch: completes
/// its records once; dropped unfinished, it fails them as `Closed`.
#[derive(Debug)]
pub(crate) struct Completer {
    shared: Completion,
}

impl Completer {
    /// A new completion for a batch of `topic`/`partition`.
    pub fn new(topic: Arc<str>, partition: u32) -> Self {
        Self {
            shared: Arc::new(BatchShared { topic, partition, result: OnceLock::new(), done: Notify::new() }),
        }
    }

    /// What the batch's records hold.
    pub fn completion(&self) -> &Completion {
        &self.shared
    }

    /// Completes every record of the batch (the first result wins).
    pub fn complete(&self, result: BatchResult) {
        let _ = self.shared.result.set(result);
        self.shared.done.notify_waiters();
    }
}

impl Drop for Completer {
    fn drop(&mut self) {
        if !self.shared.is_finished() {
            self.complete(Err(ProducerError::Closed));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_wake_once_the_result_is_set_and_a_dropped_batch_fails_closed() {
        let completer = Completer::new("t".into(), 0);
        let shared = Arc::clone(completer.completion());
        let waiter = tokio::spawn(async move { shared.finished().await.clone() });
        tokio::task::yield_now().await;
        completer.complete(Ok((5, -1)));
        completer.complete(Ok((9, -1)));
        assert_eq!(waiter.await.unwrap().unwrap(), (5, -1), "set once");
        let dropped = Completer::new("t".into(), 0);
        let shared = Arc::clone(dropped.completion());
        drop(dropped);
        assert!(matches!(shared.finished().await, Err(ProducerError::Closed)));
    }
}
