//! The metrics store against a real MongoDB-wire server.

use std::collections::BTreeMap;

use futures::TryStreamExt;
use mongodb::Client;
use mongodb::bson::{Bson, Document, doc};
use telemetry_consumer::document::to_document;
use telemetry_consumer::store::{
    InsertOutcome, MetricsStore, UUID_METRIC_TIMESTAMP_INDEX, UUID_TIMESTAMP_INDEX,
};
use telemetry_core::TelemetryRecord;
use telemetry_core::record::parse_timestamp;
use telemetry_core::testing::MongoServer;

fn record(gpu_id: u32, value: f64) -> TelemetryRecord {
    TelemetryRecord {
        timestamp: parse_timestamp("2025-07-18T20:42:34Z").unwrap(),
        metric_name: "DCGM_FI_DEV_GPU_UTIL".into(),
        gpu_id,
        device: format!("nvidia{gpu_id}"),
        uuid: format!("GPU-00000000-0000-4000-8000-00000000000{gpu_id}"),
        model_name: "NVIDIA H100 80GB HBM3".into(),
        hostname: "node-1".into(),
        container: String::new(),
        pod: String::new(),
        namespace: String::new(),
        value,
        labels: BTreeMap::from([("note".into(), r#"a, "quoted" value"#.into())]),
    }
}

fn documents(ids: &[&str]) -> Vec<Document> {
    ids.iter()
        .enumerate()
        .map(|(index, id)| to_document(id, &record(index as u32, index as f64 * 10.0)).unwrap())
        .collect()
}

async fn store(server: &MongoServer, database: &str) -> MetricsStore {
    let client = Client::with_uri_str(&server.uri).await.unwrap();
    MetricsStore::new(&client.database(database))
}

#[tokio::test]
async fn metrics_store_against_mongodb() {
    let server = MongoServer::start();
    batch_stored_with_types(&server).await;
    redelivered_batch_stored_once(&server).await;
    indexes_created_idempotently(&server).await;
    gpu_summaries_follow_latest_sample(&server).await;
}

async fn gpu_summaries_follow_latest_sample(server: &MongoServer) {
    let store = store(server, "summaries").await;
    let at = |text: &str, host: &str| {
        let mut sample = record(7, 1.0);
        sample.timestamp = parse_timestamp(text).unwrap();
        sample.hostname = host.into();
        sample
    };
    let newer = to_document("run:1", &at("2025-07-18T20:43:00Z", "node-2")).unwrap();
    let older = to_document("run:2", &at("2025-07-18T20:42:00Z", "node-2")).unwrap();
    store.insert_batch(&[older.clone(), newer]).await.unwrap();
    // A redelivered, older batch must not move last_seen back.
    store.insert_batch(&[older]).await.unwrap();

    let client = Client::with_uri_str(&server.uri).await.unwrap();
    let gpus: Vec<Document> = client
        .database("summaries")
        .collection::<Document>("gpus")
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(gpus.len(), 1);
    let gpu = &gpus[0];
    assert_eq!(gpu.get_str("_id").unwrap(), "GPU-00000000-0000-4000-8000-000000000007");
    assert_eq!(gpu.get_str("hostname").unwrap(), "node-2");
    assert_eq!(gpu.get_i32("gpu_id").unwrap(), 7);
    assert_eq!(
        gpu.get_datetime("last_seen").unwrap().try_to_rfc3339_string().unwrap(),
        "2025-07-18T20:43:00Z"
    );
}

async fn batch_stored_with_types(server: &MongoServer) {
    let store = store(server, "typed").await;
    let outcome = store
        .insert_batch(&documents(&["run:2", "run:3", "run:4"]))
        .await
        .unwrap();
    assert_eq!(
        outcome,
        InsertOutcome {
            inserted: 3,
            duplicates: 0
        }
    );

    let stored = store
        .collection()
        .find_one(doc! { "_id": "run:3" })
        .await
        .unwrap()
        .expect("run:3 stored");
    assert!(
        matches!(stored.get("timestamp"), Some(Bson::DateTime(_))),
        "{stored}"
    );
    assert_eq!(
        stored.get_datetime("timestamp").unwrap().timestamp_millis(),
        1_752_871_354_000
    );
    assert_eq!(stored.get("value"), Some(&Bson::Double(10.0)));
    assert_eq!(stored.get("gpu_id"), Some(&Bson::Int32(1)));
    assert_eq!(
        stored
            .get_document("labels")
            .unwrap()
            .get_str("note")
            .unwrap(),
        r#"a, "quoted" value"#
    );

    // Queries by a date range work because the timestamp is a date, not a string.
    let since = mongodb::bson::DateTime::from_millis(1_752_871_354_000);
    let count = store
        .collection()
        .count_documents(doc! { "timestamp": { "$gte": since } })
        .await
        .unwrap();
    assert_eq!(count, 3);
}

async fn redelivered_batch_stored_once(server: &MongoServer) {
    let store = store(server, "dedup").await;
    store
        .insert_batch(&documents(&["run:2", "run:3"]))
        .await
        .unwrap();

    let again = store
        .insert_batch(&documents(&["run:2", "run:3"]))
        .await
        .unwrap();
    assert_eq!(
        again,
        InsertOutcome {
            inserted: 0,
            duplicates: 2
        }
    );

    // A batch that mixes redeliveries with new records stores the new ones.
    let mixed = store
        .insert_batch(&documents(&["run:2", "run:5", "run:3", "run:6"]))
        .await
        .unwrap();
    assert_eq!(
        mixed,
        InsertOutcome {
            inserted: 2,
            duplicates: 2
        }
    );

    let ids: Vec<String> = store
        .collection()
        .find(doc! {})
        .sort(doc! { "_id": 1 })
        .await
        .unwrap()
        .try_collect::<Vec<Document>>()
        .await
        .unwrap()
        .iter()
        .map(|document| document.get_str("_id").unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["run:2", "run:3", "run:5", "run:6"]);
}

async fn indexes_created_idempotently(server: &MongoServer) {
    let store = store(server, "indexed").await;
    store.ensure_indexes().await.unwrap();
    store.ensure_indexes().await.unwrap();

    let indexes: Vec<_> = store
        .collection()
        .list_indexes()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let keys_of = |name: &str| {
        indexes
            .iter()
            .find(|index| {
                index
                    .options
                    .as_ref()
                    .and_then(|options| options.name.as_deref())
                    == Some(name)
            })
            .map(|index| index.keys.clone())
            .unwrap_or_else(|| panic!("index {name} missing: {indexes:?}"))
    };
    assert_eq!(
        keys_of(UUID_TIMESTAMP_INDEX),
        doc! { "uuid": 1, "timestamp": 1, "_id": 1 }
    );
    assert_eq!(
        keys_of(UUID_METRIC_TIMESTAMP_INDEX),
        doc! { "uuid": 1, "metric_name": 1, "timestamp": 1, "_id": 1 }
    );
    assert_eq!(
        indexes.len(),
        3,
        "_id plus the two API indexes: {indexes:?}"
    );
}
