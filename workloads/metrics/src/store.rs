//! MongoDB access: the `metrics` collection's indexes and the two queries the API serves.
//!
//! Documents are written by the consumer, one per telemetry record, with the record's JSON
//! field names except `_id` (the AMQP message id, a string), `timestamp` (a BSON date with
//! millisecond precision), `value` (a double) and `labels` (a sub-document).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::bson::{self, Bson, Document, doc};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};
use telemetry_core::TelemetryRecord;
use telemetry_core::contract::{GPUS_COLLECTION, METRICS_COLLECTION};

use crate::{Error, Result};

/// Name of the index that serves a GPU's telemetry in time order.
pub const INDEX_UUID_TIMESTAMP: &str = "uuid_timestamp_id";
/// Name of the index that serves a GPU's telemetry of one metric in time order.
pub const INDEX_UUID_METRIC_TIMESTAMP: &str = "uuid_metric_timestamp_id";
/// Index of the `gpus` collection for listings sorted by host.
pub const INDEX_GPU_HOSTNAME: &str = "hostname_id";
/// Index of the `gpus` collection for listings sorted by the time of the latest sample.
pub const INDEX_GPU_LAST_SEEN: &str = "last_seen_id";

/// Server-side time limit of each query (`maxTimeMS`), so a slow query cannot hold a request
/// and a connection open indefinitely.
const QUERY_MAX_TIME: Duration = Duration::from_secs(30);
/// How long a readiness ping may take before the database counts as unavailable.
const PING_TIMEOUT: Duration = Duration::from_secs(3);
/// Server selection timeout when the connection string sets none. The driver's own default
/// of 30 s would hold API requests that long while MongoDB is down.
const DEFAULT_SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Returns the indexes of the `metrics` collection that the API's queries need. The consumer creates
/// the same ones; both sides call `create_indexes`, which is a no-op for an existing index of
/// the same name and keys.
///
/// The trailing `_id` makes the sort key `(timestamp, _id)` unique, which keyset pagination
/// needs, and lets the index alone satisfy the sort.
pub fn indexes() -> Vec<IndexModel> {
    let named = |name: &str| IndexOptions::builder().name(name.to_owned()).build();
    vec![
        IndexModel::builder()
            .keys(doc! { "uuid": 1, "timestamp": 1, "_id": 1 })
            .options(named(INDEX_UUID_TIMESTAMP))
            .build(),
        IndexModel::builder()
            .keys(doc! { "uuid": 1, "metric_name": 1, "timestamp": 1, "_id": 1 })
            .options(named(INDEX_UUID_METRIC_TIMESTAMP))
            .build(),
    ]
}

/// Returns the indexes of the `gpus` collection, one per GPU sort order besides `_id`. The consumer
/// creates the same names and keys.
pub fn gpu_indexes() -> Vec<IndexModel> {
    let named = |name: &str| IndexOptions::builder().name(name.to_owned()).build();
    vec![
        IndexModel::builder()
            .keys(doc! { "hostname": 1, "_id": 1 })
            .options(named(INDEX_GPU_HOSTNAME))
            .build(),
        IndexModel::builder()
            .keys(doc! { "last_seen": 1, "_id": 1 })
            .options(named(INDEX_GPU_LAST_SEEN))
            .build(),
    ]
}

/// Direction of a sort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortOrder {
    Asc,
    Desc,
}

impl SortOrder {
    /// Returns the value of this order in a MongoDB sort document.
    fn direction(self) -> i32 {
        match self {
            SortOrder::Asc => 1,
            SortOrder::Desc => -1,
        }
    }

    /// Returns the comparison operator that selects keys after a given key in this order.
    fn after_operator(self) -> &'static str {
        match self {
            SortOrder::Asc => "$gt",
            SortOrder::Desc => "$lt",
        }
    }

    /// Name of the order as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            SortOrder::Asc => "asc",
            SortOrder::Desc => "desc",
        }
    }
}

/// One stored telemetry document.
#[derive(Debug, Clone, Deserialize)]
pub struct StoredRecord {
    /// The AMQP message id that the consumer used as `_id`.
    #[serde(rename = "_id")]
    pub id: String,
    pub timestamp: bson::DateTime,
    pub metric_name: String,
    pub gpu_id: u32,
    pub device: String,
    pub uuid: String,
    pub model_name: String,
    pub hostname: String,
    #[serde(default)]
    pub container: String,
    #[serde(default)]
    pub pod: String,
    #[serde(default)]
    pub namespace: String,
    pub value: f64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl StoredRecord {
    /// Returns the keyset position of this document in a telemetry listing.
    pub fn key(&self) -> RecordKey {
        RecordKey {
            timestamp_ms: self.timestamp.timestamp_millis(),
            id: self.id.clone(),
        }
    }

    /// Converts the document back into the record the producer sent.
    pub fn into_record(self) -> Result<TelemetryRecord> {
        let timestamp = to_chrono(self.timestamp, &self.id)?;
        Ok(TelemetryRecord {
            timestamp,
            metric_name: self.metric_name,
            gpu_id: self.gpu_id,
            device: self.device,
            uuid: self.uuid,
            model_name: self.model_name,
            hostname: self.hostname,
            container: self.container,
            pod: self.pod,
            namespace: self.namespace,
            value: self.value,
            labels: self.labels,
        })
    }
}

/// Converts a stored date to chrono, whose range (about ±262,000 years) is narrower than BSON's.
pub fn to_chrono(time: bson::DateTime, id: &str) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(time.timestamp_millis()).ok_or_else(|| Error::InvalidDocument {
        id: id.to_owned(),
        reason: format!("date {time} is outside the range an RFC 3339 timestamp can express"),
    })
}

/// Position in a telemetry listing: the sort key `(timestamp, _id)` of the last entry returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordKey {
    /// Timestamp in milliseconds since the Unix epoch, the precision MongoDB stores.
    #[serde(rename = "t")]
    pub timestamp_ms: i64,
    /// The document's `_id`.
    #[serde(rename = "i")]
    pub id: String,
}

/// Filter and order of a listing of one GPU's telemetry.
#[derive(Debug, Clone)]
pub struct TelemetryFilter {
    pub uuid: String,
    pub metric_name: Option<String>,
    /// Inclusive lower bound of `timestamp`.
    pub start: Option<bson::DateTime>,
    /// Inclusive upper bound of `timestamp`.
    pub end: Option<bson::DateTime>,
    pub order: SortOrder,
}

impl TelemetryFilter {
    /// Builds the `find` filter, starting strictly after `after` when given.
    ///
    /// The keyset condition is written as `timestamp >= t AND (timestamp > t OR _id > id)`
    /// (mirrored for descending order) so that the index bounds on `timestamp` tighten as the
    /// listing advances.
    fn to_document(&self, after: Option<&RecordKey>) -> Document {
        let mut filter = doc! { "uuid": &self.uuid };
        if let Some(metric_name) = &self.metric_name {
            filter.insert("metric_name", metric_name);
        }

        let after_time = after.map(|key| bson::DateTime::from_millis(key.timestamp_ms));
        let (mut lower, mut upper) = (self.start, self.end);
        match self.order {
            SortOrder::Asc => lower = lower.max(after_time),
            SortOrder::Desc => upper = min_present(upper, after_time),
        }
        let mut range = Document::new();
        if let Some(lower) = lower {
            range.insert("$gte", lower);
        }
        if let Some(upper) = upper {
            // `timestamp <= upper`, written as `< upper + 1 ms`: BSON dates count whole
            // milliseconds, so both select the same documents. NOTE: the exclusive form is used
            // because secantusd-py 0.7.0b3, the MongoDB-wire server of the tests, drops
            // documents equal to a `$lte` bound on an index field followed by more fields.
            range.insert(
                "$lt",
                bson::DateTime::from_millis(upper.timestamp_millis() + 1),
            );
        }
        if !range.is_empty() {
            filter.insert("timestamp", range);
        }

        if let (Some(key), Some(time)) = (after, after_time) {
            let operator = self.order.after_operator();
            filter.insert(
                "$or",
                vec![
                    doc! { "timestamp": { operator: time } },
                    doc! { "_id": { operator: &key.id } },
                ],
            );
        }
        filter
    }

    fn sort(&self) -> Document {
        let direction = self.order.direction();
        doc! { "timestamp": direction, "_id": direction }
    }
}

/// Returns the smaller of two optional bounds, where a missing bound is no bound.
fn min_present(a: Option<bson::DateTime>, b: Option<bson::DateTime>) -> Option<bson::DateTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Field that a GPU listing is sorted by; `uuid` breaks ties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuSortField {
    Uuid,
    Hostname,
    LastSeen,
}

impl GpuSortField {
    /// Name of the field as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            GpuSortField::Uuid => "uuid",
            GpuSortField::Hostname => "hostname",
            GpuSortField::LastSeen => "last_seen",
        }
    }

    /// Name of the field in a `gpus` summary document, where the uuid is the `_id`.
    fn stored_name(self) -> &'static str {
        match self {
            GpuSortField::Uuid => "_id",
            GpuSortField::Hostname => "hostname",
            GpuSortField::LastSeen => "last_seen",
        }
    }
}

/// Position in a GPU listing: the sort field's value and the uuid of the last GPU returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuKey {
    #[serde(rename = "u")]
    pub uuid: String,
    /// Hostname, when sorting by hostname.
    #[serde(rename = "h", default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// `last_seen` in milliseconds since the Unix epoch, when sorting by it.
    #[serde(rename = "l", default, skip_serializing_if = "Option::is_none")]
    pub last_seen_ms: Option<i64>,
}

/// One GPU as its summary document in the `gpus` collection stores it.
#[derive(Debug, Clone, Deserialize)]
pub struct StoredGpu {
    #[serde(rename = "_id")]
    pub uuid: String,
    pub gpu_id: u32,
    pub device: String,
    pub model_name: String,
    pub hostname: String,
    pub last_seen: bson::DateTime,
}

impl StoredGpu {
    /// Returns the keyset position of this GPU in a listing sorted by `field`.
    pub fn key(&self, field: GpuSortField) -> GpuKey {
        GpuKey {
            uuid: self.uuid.clone(),
            hostname: (field == GpuSortField::Hostname).then(|| self.hostname.clone()),
            last_seen_ms: (field == GpuSortField::LastSeen)
                .then(|| self.last_seen.timestamp_millis()),
        }
    }
}

/// One page of a listing.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// True when at least one more entry follows the last item.
    pub has_more: bool,
}

impl<T> Page<T> {
    /// Splits `limit + 1` fetched entries into a page of `limit` and the has-more flag.
    fn from_overfetch(mut items: Vec<T>, limit: u32) -> Self {
        let limit = limit as usize;
        let has_more = items.len() > limit;
        items.truncate(limit);
        Page { items, has_more }
    }
}

/// Handle to the `metrics` collection. Clones share the driver's connection pool.
#[derive(Debug, Clone)]
pub struct Store {
    database: Database,
    metrics: Collection<Document>,
    gpus: Collection<Document>,
}

impl Store {
    /// Creates the client. The driver connects on first use, so this contacts no server, except
    /// for the DNS look-ups that a `mongodb+srv` URI needs.
    pub async fn connect(uri: &str, database: &str) -> Result<Self> {
        let mut options = ClientOptions::parse(uri)
            .await
            .map_err(Error::mongo("connection string parsing"))?;
        options
            .app_name
            .get_or_insert_with(|| env!("CARGO_PKG_NAME").to_owned());
        options
            .server_selection_timeout
            .get_or_insert(DEFAULT_SERVER_SELECTION_TIMEOUT);
        let hosts: Vec<String> = options.hosts.iter().map(ToString::to_string).collect();
        let client = Client::with_options(options).map_err(Error::mongo("client creation"))?;
        tracing::info!(
            ?hosts,
            database,
            collection = METRICS_COLLECTION,
            "MongoDB client created"
        );
        Ok(Self::from_database(client.database(database)))
    }

    /// Wraps an existing database handle.
    pub fn from_database(database: Database) -> Self {
        let metrics = database.collection(METRICS_COLLECTION);
        let gpus = database.collection(GPUS_COLLECTION);
        Store {
            database,
            metrics,
            gpus,
        }
    }

    /// Creates the [`indexes`] unless they exist already.
    pub async fn ensure_indexes(&self) -> Result<()> {
        let created = self
            .metrics
            .create_indexes(indexes())
            .await
            .map_err(Error::mongo("createIndexes"))?;
        tracing::info!(indexes = ?created.index_names, collection = METRICS_COLLECTION, "indexes ensured");
        let created = self
            .gpus
            .create_indexes(gpu_indexes())
            .await
            .map_err(Error::mongo("createIndexes"))?;
        tracing::info!(indexes = ?created.index_names, collection = GPUS_COLLECTION, "indexes ensured");
        Ok(())
    }

    /// Sends a `ping` and fails unless MongoDB replies within `PING_TIMEOUT`.
    pub async fn ping(&self) -> Result<()> {
        let ping = self.database.run_command(doc! { "ping": 1 });
        match tokio::time::timeout(PING_TIMEOUT, ping).await {
            Ok(result) => result.map(drop).map_err(Error::mongo("ping")),
            Err(_) => Err(Error::MongoTimeout {
                operation: "ping",
                seconds: PING_TIMEOUT.as_secs(),
            }),
        }
    }

    /// Returns up to `limit` telemetry documents of one GPU that sort after `after`.
    pub async fn telemetry_page(
        &self,
        filter: &TelemetryFilter,
        after: Option<&RecordKey>,
        limit: u32,
    ) -> Result<Page<StoredRecord>> {
        let cursor = self
            .metrics
            .clone_with_type::<StoredRecord>()
            .find(filter.to_document(after))
            .sort(filter.sort())
            .limit(i64::from(limit) + 1)
            .max_time(QUERY_MAX_TIME)
            .await
            .map_err(Error::mongo("find telemetry"))?;
        let records: Vec<StoredRecord> = cursor
            .try_collect()
            .await
            .map_err(Error::mongo("read telemetry"))?;
        Ok(Page::from_overfetch(records, limit))
    }

    /// True when at least one document of the GPU exists.
    pub async fn gpu_exists(&self, uuid: &str) -> Result<bool> {
        let found = self
            .metrics
            .find_one(doc! { "uuid": uuid })
            .projection(doc! { "_id": 1 })
            .max_time(QUERY_MAX_TIME)
            .await
            .map_err(Error::mongo("find GPU"))?;
        Ok(found.is_some())
    }

    /// Returns up to `limit` GPUs, sorted by `field` in `order` with `uuid` breaking ties,
    /// that sort after `after`. Reads the per-GPU summaries, so the cost follows the page
    /// size and the number of GPUs, not the amount of stored telemetry.
    pub async fn gpu_page(
        &self,
        field: GpuSortField,
        order: SortOrder,
        after: Option<&GpuKey>,
        limit: u32,
    ) -> Result<Page<StoredGpu>> {
        let filter = after.map_or_else(Document::new, |key| gpu_keyset(field, order, key));
        let direction = order.direction();
        let sort = match field {
            GpuSortField::Uuid => doc! { "_id": direction },
            _ => doc! { field.stored_name(): direction, "_id": direction },
        };
        let cursor = self
            .gpus
            .clone_with_type::<StoredGpu>()
            .find(filter)
            .sort(sort)
            .limit(i64::from(limit) + 1)
            .max_time(QUERY_MAX_TIME)
            .await
            .map_err(Error::mongo("find GPUs"))?;
        let gpus: Vec<StoredGpu> = cursor
            .try_collect()
            .await
            .map_err(Error::mongo("read GPUs"))?;
        Ok(Page::from_overfetch(gpus, limit))
    }
}

/// Builds the `$match` that selects GPUs after `key` in the listing order.
fn gpu_keyset(field: GpuSortField, order: SortOrder, key: &GpuKey) -> Document {
    let operator = order.after_operator();
    let value = match field {
        GpuSortField::Uuid => return doc! { "_id": { operator: &key.uuid } },
        GpuSortField::Hostname => Bson::String(key.hostname.clone().unwrap_or_default()),
        GpuSortField::LastSeen => Bson::DateTime(bson::DateTime::from_millis(
            key.last_seen_ms.unwrap_or_default(),
        )),
    };
    let name = field.stored_name();
    doc! { "$or": [
        { name: { operator: value.clone() } },
        { name: value, "_id": { operator: &key.uuid } },
    ] }
}

/// Converts a parsed request time to a BSON date, rounding sub-millisecond parts so that the
/// bound stays inclusive of exactly the instants the client asked for: a lower bound rounds
/// up and an upper bound rounds down.
pub fn to_bson_bound(time: DateTime<Utc>, round_up: bool) -> bson::DateTime {
    let millis = time.timestamp_millis();
    let has_fraction = !time.timestamp_subsec_nanos().is_multiple_of(1_000_000);
    bson::DateTime::from_millis(if round_up && has_fraction {
        millis + 1
    } else {
        millis
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(order: SortOrder) -> TelemetryFilter {
        TelemetryFilter {
            uuid: "GPU-1".into(),
            metric_name: Some("DCGM_FI_DEV_GPU_UTIL".into()),
            start: Some(bson::DateTime::from_millis(1_000)),
            end: Some(bson::DateTime::from_millis(9_000)),
            order,
        }
    }

    #[test]
    fn first_page_filter_has_window() {
        let document = filter(SortOrder::Asc).to_document(None);
        assert_eq!(
            document,
            doc! {
                "uuid": "GPU-1",
                "metric_name": "DCGM_FI_DEV_GPU_UTIL",
                "timestamp": { "$gte": bson::DateTime::from_millis(1_000), "$lt": bson::DateTime::from_millis(9_001) },
            }
        );
    }

    #[test]
    fn ascending_keyset_raises_lower_bound() {
        let key = RecordKey {
            timestamp_ms: 5_000,
            id: "m-5".into(),
        };
        let document = filter(SortOrder::Asc).to_document(Some(&key));
        let range = document.get_document("timestamp").unwrap();
        assert_eq!(
            range.get_datetime("$gte").unwrap(),
            &bson::DateTime::from_millis(5_000)
        );
        assert_eq!(
            range.get_datetime("$lt").unwrap(),
            &bson::DateTime::from_millis(9_001)
        );
        let or = document.get_array("$or").unwrap();
        assert_eq!(or[1], Bson::Document(doc! { "_id": { "$gt": "m-5" } }));
    }

    #[test]
    fn descending_keyset_lowers_upper_bound() {
        let key = RecordKey {
            timestamp_ms: 5_000,
            id: "m-5".into(),
        };
        let document = filter(SortOrder::Desc).to_document(Some(&key));
        let range = document.get_document("timestamp").unwrap();
        assert_eq!(
            range.get_datetime("$gte").unwrap(),
            &bson::DateTime::from_millis(1_000)
        );
        assert_eq!(
            range.get_datetime("$lt").unwrap(),
            &bson::DateTime::from_millis(5_001)
        );
        let or = document.get_array("$or").unwrap();
        assert_eq!(
            or[0],
            Bson::Document(doc! { "timestamp": { "$lt": bson::DateTime::from_millis(5_000) } })
        );
    }

    #[test]
    fn bounds_round_inward() {
        let time = telemetry_core::record::parse_timestamp("2025-07-18T20:42:34.0005Z").unwrap();
        let floor = time.timestamp_millis();
        assert_eq!(to_bson_bound(time, true).timestamp_millis(), floor + 1);
        assert_eq!(to_bson_bound(time, false).timestamp_millis(), floor);
        let whole = telemetry_core::record::parse_timestamp("2025-07-18T20:42:34.123Z").unwrap();
        assert_eq!(
            to_bson_bound(whole, true).timestamp_millis(),
            whole.timestamp_millis()
        );
    }

    #[test]
    fn index_names_and_keys() {
        let models = indexes();
        let names: Vec<_> = models
            .iter()
            .map(|m| m.options.as_ref().unwrap().name.clone().unwrap())
            .collect();
        assert_eq!(names, [INDEX_UUID_TIMESTAMP, INDEX_UUID_METRIC_TIMESTAMP]);
        let keys: Vec<_> = models[1].keys.keys().cloned().collect();
        assert_eq!(keys, ["uuid", "metric_name", "timestamp", "_id"]);
    }

    #[test]
    fn overfetch_sets_has_more() {
        let page = Page::from_overfetch(vec![1, 2, 3], 2);
        assert_eq!(page.items, [1, 2]);
        assert!(page.has_more);
        let page = Page::from_overfetch(vec![1, 2], 2);
        assert!(!page.has_more);
    }
}
