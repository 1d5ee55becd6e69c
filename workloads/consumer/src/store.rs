//! The `metrics` collection: its indexes and idempotent batch inserts.

use mongodb::bson::{Document, doc};
use mongodb::error::{ErrorKind, Result as MongoResult};
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};
use telemetry_core::contract;

/// MongoDB's duplicate-key error code.
pub const DUPLICATE_KEY: i32 = 11000;
/// Index for one GPU's samples in time order; `_id` makes the order total for paging.
pub const UUID_TIMESTAMP_INDEX: &str = "uuid_timestamp_id";
/// Index for one metric of one GPU in time order.
pub const UUID_METRIC_TIMESTAMP_INDEX: &str = "uuid_metric_timestamp_id";

/// What one batch insert did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InsertOutcome {
    /// Documents written by this insert.
    pub inserted: usize,
    /// Documents whose `_id` was already stored, as after a redelivery.
    pub duplicates: usize,
}

/// Handle to the `metrics` collection of one database.
#[derive(Clone, Debug)]
pub struct MetricsStore {
    collection: Collection<Document>,
}

impl MetricsStore {
    pub fn new(database: &Database) -> Self {
        MetricsStore {
            collection: database.collection(contract::METRICS_COLLECTION),
        }
    }

    pub fn collection(&self) -> &Collection<Document> {
        &self.collection
    }

    /// Creates the indexes the REST API queries with. Creating an index that exists with the
    /// same name and keys does nothing, so every consumer calls this at start-up.
    pub async fn ensure_indexes(&self) -> MongoResult<()> {
        self.collection.create_indexes(index_models()).await?;
        Ok(())
    }

    /// Inserts `documents` unordered. Documents whose `_id` is already stored count as
    /// duplicates, not errors, so writing a redelivered batch again succeeds. Any other
    /// write error fails the whole call, and retrying it is safe for the same reason.
    pub async fn insert_batch(&self, documents: &[Document]) -> MongoResult<InsertOutcome> {
        if documents.is_empty() {
            return Ok(InsertOutcome::default());
        }
        let error = match self.collection.insert_many(documents).ordered(false).await {
            Ok(result) => {
                return Ok(InsertOutcome {
                    inserted: result.inserted_ids.len(),
                    duplicates: 0,
                });
            }
            Err(error) => error,
        };

        if let ErrorKind::InsertMany(failure) = error.kind.as_ref()
            && failure.write_concern_error.is_none()
        {
            let write_errors = failure.write_errors.as_deref().unwrap_or_default();
            if !write_errors.is_empty()
                && write_errors
                    .iter()
                    .all(|write_error| write_error.code == DUPLICATE_KEY)
            {
                let duplicates = write_errors.len();
                return Ok(InsertOutcome {
                    inserted: documents.len() - duplicates,
                    duplicates,
                });
            }
        }
        Err(error)
    }
}

/// The indexes of the `metrics` collection. The REST API ensures the same names and keys.
pub fn index_models() -> Vec<IndexModel> {
    vec![
        IndexModel::builder()
            .keys(doc! { "uuid": 1, "timestamp": 1, "_id": 1 })
            .options(
                IndexOptions::builder()
                    .name(UUID_TIMESTAMP_INDEX.to_owned())
                    .build(),
            )
            .build(),
        IndexModel::builder()
            .keys(doc! { "uuid": 1, "metric_name": 1, "timestamp": 1, "_id": 1 })
            .options(
                IndexOptions::builder()
                    .name(UUID_METRIC_TIMESTAMP_INDEX.to_owned())
                    .build(),
            )
            .build(),
    ]
}
