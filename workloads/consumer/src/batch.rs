//! Bookkeeping of the records read but not yet written and acknowledged.
//!
//! Deliveries on one channel carry increasing delivery tags, and the consumer handles them in
//! order. Every delivery up to the batch's last tag is therefore either in the batch or already
//! rejected, so one `basic.ack` with `multiple` set acknowledges exactly the written batch.

use mongodb::bson::Document;
use tokio::time::{Duration, Instant};

/// Records waiting to be written, with the tag that acknowledges them all.
#[derive(Debug)]
pub struct Batch {
    documents: Vec<Document>,
    last_tag: Option<u64>,
    /// When the oldest record arrived; a partial batch is written `timeout` after it.
    opened_at: Option<Instant>,
    capacity: usize,
}

/// A batch taken out for writing.
#[derive(Debug)]
pub struct FullBatch {
    pub documents: Vec<Document>,
    /// Delivery tag to acknowledge with `multiple` once the documents are written.
    pub last_tag: u64,
}

impl Batch {
    pub fn new(capacity: usize) -> Self {
        Batch {
            documents: Vec::with_capacity(capacity),
            last_tag: None,
            opened_at: None,
            capacity,
        }
    }

    /// Adds the record of delivery `tag`, which must be above every tag already added.
    pub fn push(&mut self, tag: u64, document: Document) {
        debug_assert!(
            self.last_tag.is_none_or(|last| tag > last),
            "delivery tags increase on a channel"
        );
        if self.documents.is_empty() {
            self.opened_at = Some(Instant::now());
        }
        self.documents.push(document);
        self.last_tag = Some(tag);
    }

    pub fn len(&self) -> usize {
        self.documents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.documents.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.documents.len() >= self.capacity
    }

    /// When a partial batch is due for writing, or `None` while it is empty.
    pub fn deadline(&self, timeout: Duration) -> Option<Instant> {
        self.opened_at.map(|opened| opened + timeout)
    }

    /// Takes the records out, leaving the batch empty; `None` when there are none.
    pub fn take(&mut self) -> Option<FullBatch> {
        let last_tag = self.last_tag.take()?;
        self.opened_at = None;
        let documents = std::mem::replace(&mut self.documents, Vec::with_capacity(self.capacity));
        Some(FullBatch {
            documents,
            last_tag,
        })
    }
}

#[cfg(test)]
mod tests {
    use mongodb::bson::doc;

    use super::*;

    #[test]
    fn fills_to_capacity() {
        let mut batch = Batch::new(2);
        assert!(batch.is_empty());
        batch.push(1, doc! { "_id": "a" });
        assert!(!batch.is_full());
        batch.push(2, doc! { "_id": "b" });
        assert!(batch.is_full());
        assert_eq!(batch.len(), 2);
    }

    #[test]
    fn take_returns_last_tag_and_empties() {
        let mut batch = Batch::new(10);
        batch.push(4, doc! { "_id": "a" });
        batch.push(7, doc! { "_id": "b" });
        let taken = batch.take().unwrap();
        assert_eq!(taken.last_tag, 7);
        assert_eq!(taken.documents.len(), 2);
        assert!(batch.is_empty());
        assert!(batch.take().is_none(), "an empty batch has nothing to ack");
    }

    #[test]
    fn deadline_counts_from_first_record() {
        let timeout = Duration::from_millis(200);
        let mut batch = Batch::new(10);
        assert_eq!(batch.deadline(timeout), None);

        let before = Instant::now();
        batch.push(1, doc! { "_id": "a" });
        let after = Instant::now();
        std::thread::sleep(Duration::from_millis(5));
        batch.push(2, doc! { "_id": "b" });

        let deadline = batch.deadline(timeout).unwrap();
        assert!(
            deadline >= before + timeout && deadline <= after + timeout,
            "a later record must not move the deadline"
        );

        batch.take();
        assert_eq!(batch.deadline(timeout), None);
    }
}
