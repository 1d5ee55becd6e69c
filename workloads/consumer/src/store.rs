//! The `metrics` collection (its indexes and idempotent batch inserts) and the per-GPU
//! summaries in the `gpus` collection that the REST API lists.

use std::collections::BTreeMap;
use std::future::IntoFuture;

use futures::future::try_join_all;
use mongodb::bson::{Bson, Document, doc};
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
/// Index of the `gpus` collection for listings sorted by host.
pub const GPU_HOSTNAME_INDEX: &str = "hostname_id";
/// Index of the `gpus` collection for listings sorted by the time of the latest sample.
pub const GPU_LAST_SEEN_INDEX: &str = "last_seen_id";
/// Fields of a metrics document copied into its GPU's summary.
const GPU_IDENTITY_FIELDS: [&str; 4] = ["gpu_id", "device", "model_name", "hostname"];

/// Counts of one batch insert.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InsertOutcome {
    /// Documents written by this insert.
    pub inserted: usize,
    /// Documents whose `_id` was already stored, as after a redelivery.
    pub duplicates: usize,
}

/// Handle to the `metrics` and `gpus` collections of one database.
#[derive(Clone, Debug)]
pub struct MetricsStore {
    collection: Collection<Document>,
    gpus: Collection<Document>,
}

impl MetricsStore {
    pub fn new(database: &Database) -> Self {
        MetricsStore {
            collection: database.collection(contract::METRICS_COLLECTION),
            gpus: database.collection(contract::GPUS_COLLECTION),
        }
    }

    pub fn collection(&self) -> &Collection<Document> {
        &self.collection
    }

    /// Creates the indexes the REST API queries with. Creating an index that exists with the
    /// same name and keys does nothing, so every consumer calls this at start-up.
    pub async fn ensure_indexes(&self) -> MongoResult<()> {
        self.collection.create_indexes(index_models()).await?;
        self.gpus.create_indexes(gpu_index_models()).await?;
        Ok(())
    }

    /// Inserts `documents` unordered, then updates the summaries of their GPUs. Documents
    /// whose `_id` is already stored count as duplicates, not errors, so writing a redelivered
    /// batch again succeeds. Any other write error fails the whole call, and retrying it is
    /// safe for the same reason: the summary updates are idempotent too.
    pub async fn insert_batch(&self, documents: &[Document]) -> MongoResult<InsertOutcome> {
        if documents.is_empty() {
            return Ok(InsertOutcome::default());
        }
        let outcome = self.insert_documents(documents).await?;
        self.update_gpu_summaries(documents).await?;
        Ok(outcome)
    }

    async fn insert_documents(&self, documents: &[Document]) -> MongoResult<InsertOutcome> {
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

impl MetricsStore {
    /// Upserts one summary per GPU of `documents`: `last_seen` only moves forward, and the
    /// identity fields come from the batch's latest sample of that GPU.
    ///
    /// NOTE: a batch that arrives late (after a newer one) still overwrites the identity fields.
    /// They describe the physical GPU behind the uuid, so they change rarely if ever.
    async fn update_gpu_summaries(&self, documents: &[Document]) -> MongoResult<()> {
        let updates = latest_per_gpu(documents).into_iter().map(|(uuid, latest)| {
            let mut identity = Document::new();
            for field in GPU_IDENTITY_FIELDS {
                if let Some(value) = latest.get(field) {
                    identity.insert(field, value.clone());
                }
            }
            let last_seen = latest.get("timestamp").cloned().unwrap_or(Bson::Null);
            self.gpus
                .update_one(
                    doc! { "_id": uuid },
                    doc! { "$set": identity, "$max": { "last_seen": last_seen } },
                )
                .upsert(true)
                .into_future()
        });
        try_join_all(updates).await?;
        Ok(())
    }
}

/// Groups `documents` by `uuid` and keeps the one with the latest `timestamp` of each GPU.
fn latest_per_gpu(documents: &[Document]) -> BTreeMap<&str, &Document> {
    let mut latest: BTreeMap<&str, &Document> = BTreeMap::new();
    for document in documents {
        let Ok(uuid) = document.get_str("uuid") else {
            continue;
        };
        let time = document.get_datetime("timestamp").ok();
        latest
            .entry(uuid)
            .and_modify(|current| {
                if time > current.get_datetime("timestamp").ok() {
                    *current = document;
                }
            })
            .or_insert(document);
    }
    latest
}

/// Returns the indexes of the `gpus` collection, one per sort order of the GPU listing besides `_id`.
/// The REST API ensures the same names and keys.
pub fn gpu_index_models() -> Vec<IndexModel> {
    let named = |name: &str| IndexOptions::builder().name(name.to_owned()).build();
    vec![
        IndexModel::builder()
            .keys(doc! { "hostname": 1, "_id": 1 })
            .options(named(GPU_HOSTNAME_INDEX))
            .build(),
        IndexModel::builder()
            .keys(doc! { "last_seen": 1, "_id": 1 })
            .options(named(GPU_LAST_SEEN_INDEX))
            .build(),
    ]
}

/// Returns the indexes of the `metrics` collection. The REST API ensures the same names and keys.
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

#[cfg(test)]
mod tests {
    use mongodb::bson::DateTime;

    use super::*;

    fn sample(id: &str, uuid: &str, millis: i64, hostname: &str) -> Document {
        doc! { "_id": id, "uuid": uuid, "timestamp": DateTime::from_millis(millis), "hostname": hostname }
    }

    #[test]
    fn latest_sample_chosen_per_gpu() {
        let documents = [
            sample("1", "GPU-a", 2_000, "new"),
            sample("2", "GPU-a", 1_000, "old"),
            sample("3", "GPU-b", 5_000, "b"),
        ];
        let latest = latest_per_gpu(&documents);
        assert_eq!(latest.len(), 2);
        assert_eq!(latest["GPU-a"].get_str("_id").unwrap(), "1");
        assert_eq!(latest["GPU-b"].get_str("_id").unwrap(), "3");
    }
}
