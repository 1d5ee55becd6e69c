//! DCGM CSV -> producer -> broker -> two shared consumers -> MongoDB -> REST API, on the real
//! export when `DCGM_CSV` names it (CI does), else on the sample under `data/`.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use support::*;
use telemetry_consumer::ConsumerMode;
use telemetry_core::DcgmReader;

/// Expected contents, computed from the CSV itself.
struct Expected {
    rows: u64,
    rows_per_gpu: BTreeMap<String, u64>,
    hosts: BTreeSet<String>,
}

fn read_expected(path: &std::path::Path) -> Expected {
    let file = std::fs::File::open(path).expect("opening the DCGM export");
    let mut expected = Expected { rows: 0, rows_per_gpu: BTreeMap::new(), hosts: BTreeSet::new() };
    for row in DcgmReader::new(file) {
        let record = row.expect("every row of the export is valid").record;
        expected.rows += 1;
        *expected.rows_per_gpu.entry(record.uuid).or_default() += 1;
        expected.hosts.insert(record.hostname);
    }
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn export_stored_and_served() {
    let csv = export_path();
    let expected = read_expected(&csv);
    let is_real_export = csv.ends_with("dcgm_metrics_20250718_134233.csv");
    if is_real_export {
        assert_eq!(expected.rows, 2470);
        assert_eq!(expected.rows_per_gpu.len(), 247);
        assert_eq!(expected.hosts.len(), 31);
    }

    let mongo = start_mongo().await;
    let stop = Stop::new();
    let broker = start_broker(&stop).await;
    let database = "e2e_pipeline";
    for _ in 0..2 {
        start_consumer(consumer_config(&broker.amqp_url, &mongo.uri, database, ConsumerMode::Shared), &stop).await;
    }
    let api = start_api(&mongo.uri, database, &stop).await;

    let summary = produce(&broker.amqp_url, &csv).await;
    assert_eq!(summary.confirmed, expected.rows);
    wait_stored(&mongo.uri, database, expected.rows).await;

    // Every GPU of the export is listed once, across pages.
    let mut listed = BTreeSet::new();
    let mut token: Option<String> = None;
    for _ in 0..100 {
        let query = match &token {
            Some(token) => format!("/api/v1/gpus?limit=100&page_token={token}"),
            None => "/api/v1/gpus?limit=100".to_owned(),
        };
        let page = api_json(&api, &query).await;
        for gpu in page["data"].as_array().expect("data is an array") {
            let uuid = gpu["uuid"].as_str().expect("uuid is a string").to_owned();
            assert!(listed.insert(uuid.clone()), "{uuid} listed twice");
        }
        token = page["next_page_token"].as_str().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    let expected_gpus: BTreeSet<String> = expected.rows_per_gpu.keys().cloned().collect();
    assert_eq!(listed, expected_gpus);

    // Each GPU's telemetry holds exactly its rows, in time order.
    let probe = if is_real_export {
        "GPU-5fd4f087-86f3-7a43-b711-4771313afc50".to_owned()
    } else {
        expected.rows_per_gpu.keys().next().expect("the export has a GPU").clone()
    };
    let page = api_json(&api, &format!("/api/v1/gpus/{probe}/telemetry?limit=1000")).await;
    let entries = page["data"].as_array().expect("data is an array");
    assert_eq!(entries.len() as u64, expected.rows_per_gpu[&probe]);
    if is_real_export {
        assert_eq!(entries.len(), 10);
    }
    let times: Vec<&str> = entries.iter().map(|entry| entry["timestamp"].as_str().expect("timestamp")).collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "entries are ordered by time");
    assert!(entries.iter().all(|entry| entry["uuid"] == probe.as_str()));
    assert!(entries[0]["labels"].as_object().is_some_and(|labels| !labels.is_empty()), "labels stored as a map");

    stop.trigger();
    broker.task.await.expect("broker task").expect("broker stops cleanly");
}
