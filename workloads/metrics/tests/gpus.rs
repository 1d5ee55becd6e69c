//! `GET /api/v1/gpus` against a real MongoDB-wire server.

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::Value;

const GPU_C: &str = "GPU-cccccccc-0000-0000-0000-000000000003";
const GPU_D: &str = "GPU-dddddddd-0000-0000-0000-000000000004";

/// Four GPUs: (uuid, hostname, gpu_id, sample seconds after T0).
const FLEET: [(&str, &str, i64, &[i64]); 4] = [
    (GPU_A, "host-b", 1, &[0, 5]),
    (GPU_B, "host-a", 0, &[2]),
    (GPU_C, "host-c", 7, &[1, 3, 9]),
    (GPU_D, "host-a", 2, &[1]),
];

async fn fleet_fixture() -> Fixture {
    let fixture = Fixture::start().await;
    let mut documents = Vec::new();
    for (uuid, hostname, gpu_id, seconds) in FLEET {
        for second in seconds {
            let id = format!("{uuid}-{second}");
            documents.push(
                Sample::new(&id, uuid, T0 + second * 1000)
                    .host(hostname, gpu_id)
                    .doc(),
            );
        }
    }
    fixture.insert(documents).await;
    fixture
}

fn uuids(body: &Value) -> Vec<String> {
    body["data"]
        .as_array()
        .expect("data is an array")
        .iter()
        .map(|gpu| gpu["uuid"].as_str().unwrap().to_owned())
        .collect()
}

/// Follows `next_page_token` from `query` and returns the uuids in the order received.
async fn all_pages(fixture: &Fixture, query: &str) -> Vec<String> {
    let mut received = Vec::new();
    let mut uri = format!("/api/v1/gpus?{query}");
    for _ in 0..20 {
        let body = fixture.get_ok(&uri).await;
        received.extend(uuids(&body));
        match next_token(&body) {
            Some(token) => uri = format!("/api/v1/gpus?{query}&page_token={token}"),
            None => return received,
        }
    }
    panic!("no last page within 20 pages; received {received:?}");
}

#[tokio::test]
async fn summary_fields_from_latest_sample() {
    let fixture = fleet_fixture().await;
    // A later sample of GPU_A reports it on another host: the summary follows the latest one.
    fixture
        .insert(vec![
            Sample::new("moved", GPU_A, T0 + 8000)
                .host("host-z", 4)
                .doc(),
        ])
        .await;

    let body = fixture.get_ok("/api/v1/gpus").await;

    let gpu = &body["data"][0];
    assert_eq!(gpu["uuid"], GPU_A);
    assert_eq!(gpu["hostname"], "host-z");
    assert_eq!(gpu["gpu_id"], 4);
    assert_eq!(gpu["device"], "nvidia4");
    assert_eq!(gpu["model_name"], "NVIDIA H100 80GB HBM3");
    assert_eq!(gpu["last_seen"], rfc3339(T0 + 8000));
    assert!(gpu.get("sample_count").is_none());
    let gpu_c = &body["data"][2];
    assert_eq!(gpu_c["uuid"], GPU_C);
    assert_eq!(gpu_c["last_seen"], "2025-07-18T20:42:43Z");
    assert_eq!(body["next_page_token"], Value::Null);
}

#[tokio::test]
async fn sorted_by_uuid_and_paginated() {
    let fixture = fleet_fixture().await;

    let first = fixture.get_ok("/api/v1/gpus?limit=2").await;
    assert_eq!(uuids(&first), [GPU_A, GPU_B]);
    let token = next_token(&first).expect("a second page exists");
    let second = fixture
        .get_ok(&format!("/api/v1/gpus?limit=2&page_token={token}"))
        .await;
    assert_eq!(uuids(&second), [GPU_C, GPU_D]);
    assert_eq!(second["next_page_token"], Value::Null);

    assert_eq!(
        all_pages(&fixture, "order=desc&limit=3").await,
        [GPU_D, GPU_C, GPU_B, GPU_A]
    );
}

#[tokio::test]
async fn sorted_by_hostname_ties_by_uuid() {
    let fixture = fleet_fixture().await;

    // GPU_B and GPU_D share host-a; a page boundary between them must not lose either.
    assert_eq!(
        all_pages(&fixture, "sort=hostname&limit=1").await,
        [GPU_B, GPU_D, GPU_A, GPU_C]
    );
    assert_eq!(
        all_pages(&fixture, "sort=hostname&order=desc&limit=1").await,
        [GPU_C, GPU_A, GPU_D, GPU_B]
    );
}

#[tokio::test]
async fn sorted_by_last_seen() {
    let fixture = fleet_fixture().await;

    assert_eq!(
        all_pages(&fixture, "sort=last_seen&limit=3").await,
        [GPU_D, GPU_B, GPU_A, GPU_C]
    );
    assert_eq!(
        all_pages(&fixture, "sort=last_seen&order=desc&limit=1").await,
        [GPU_C, GPU_A, GPU_B, GPU_D]
    );
}

#[tokio::test]
async fn pages_stable_under_new_gpus() {
    let fixture = fleet_fixture().await;

    let first = fixture.get_ok("/api/v1/gpus?limit=2").await;
    assert_eq!(uuids(&first), [GPU_A, GPU_B]);
    // A GPU that sorts before the cursor cannot appear any more; one after it does.
    fixture
        .insert(vec![
            Sample::new("new-early", "GPU-aaaaaaaa-9999", T0).doc(),
            Sample::new("new-late", "GPU-eeeeeeee-0000", T0).doc(),
        ])
        .await;
    let token = next_token(&first).expect("a second page exists");
    let second = fixture
        .get_ok(&format!("/api/v1/gpus?limit=2&page_token={token}"))
        .await;
    assert_eq!(uuids(&second), [GPU_C, GPU_D]);
    let token = next_token(&second).expect("the new GPU makes a third page");
    let third = fixture
        .get_ok(&format!("/api/v1/gpus?limit=2&page_token={token}"))
        .await;
    assert_eq!(uuids(&third), ["GPU-eeeeeeee-0000"]);
    assert_eq!(third["next_page_token"], Value::Null);
}

#[tokio::test]
async fn empty_collection_lists_nothing() {
    let fixture = Fixture::start().await;
    let body = fixture.get_ok("/api/v1/gpus").await;
    assert_eq!(body["data"], serde_json::json!([]));
    assert_eq!(body["next_page_token"], Value::Null);
}

#[tokio::test]
async fn bad_parameters_name_parameter() {
    let fixture = Fixture::start_with_limits(10, 20).await;
    let uuid_token = {
        fixture
            .insert(vec![
                Sample::new("m-1", GPU_A, T0).doc(),
                Sample::new("m-2", GPU_B, T0).doc(),
            ])
            .await;
        next_token(&fixture.get_ok("/api/v1/gpus?limit=1").await).expect("a second page exists")
    };
    let cases = [
        ("sort=model_name".to_owned(), "sort"),
        ("order=up".to_owned(), "order"),
        ("limit=21".to_owned(), "limit"),
        ("page_token=%%%".to_owned(), "page_token"),
        (
            format!("sort=hostname&page_token={uuid_token}"),
            "page_token",
        ),
        ("uuid=GPU-1".to_owned(), "uuid"),
    ];
    for (query, parameter) in cases {
        let (status, body) = fixture.get(&format!("/api/v1/gpus?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(
            body["error"]["code"], "invalid_parameter",
            "{query}: {body}"
        );
        assert_eq!(body["error"]["parameter"], parameter, "{query}: {body}");
    }
}
