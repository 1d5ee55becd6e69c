//! `GET /api/v1/gpus/{uuid}/telemetry` against a real MongoDB-wire server.

mod common;

use std::collections::BTreeSet;

use axum::http::StatusCode;
use common::*;

fn telemetry_uri(uuid: &str, query: &str) -> String {
    format!("/api/v1/gpus/{uuid}/telemetry?{query}")
}

#[tokio::test]
async fn records_keep_stored_fields() {
    let fixture = Fixture::start().await;
    fixture
        .insert(vec![
            Sample::new("m-1", GPU_A, T0 + 250)
                .value(97.5)
                .host("host-7", 3)
                .doc(),
        ])
        .await;

    let body = fixture.get_ok(&telemetry_uri(GPU_A, "")).await;

    let record = &body["data"][0];
    assert_eq!(record["timestamp"], "2025-07-18T20:42:34.250Z");
    assert_eq!(record["metric_name"], UTIL);
    assert_eq!(record["gpu_id"], 3);
    assert_eq!(record["device"], "nvidia3");
    assert_eq!(record["uuid"], GPU_A);
    assert_eq!(record["hostname"], "host-7");
    assert_eq!(record["value"], 97.5);
    assert_eq!(record["labels"]["job"], "dgx_dcgm_exporter");
    assert_eq!(body["next_page_token"], serde_json::Value::Null);
    let decoded: telemetry_core::TelemetryRecord = serde_json::from_value(record.clone()).unwrap();
    assert_eq!(decoded.uuid, GPU_A);
}

#[tokio::test]
async fn ordered_ascending_and_descending() {
    let fixture = Fixture::start().await;
    // Inserted out of order; two samples share a timestamp and are ordered by `_id`.
    let samples = [
        ("m-3", 3, 3.0),
        ("m-1", 1, 1.0),
        ("m-2b", 2, 22.0),
        ("m-2a", 2, 21.0),
        ("m-0", 0, 0.0),
    ];
    let documents = samples.iter().map(|(id, second, value)| {
        Sample::new(id, GPU_A, T0 + second * 1000)
            .value(*value)
            .doc()
    });
    fixture.insert(documents.collect()).await;
    fixture
        .insert(vec![Sample::new("other", GPU_B, T0).value(99.0).doc()])
        .await;

    let ascending = fixture.get_ok(&telemetry_uri(GPU_A, "")).await;
    assert_eq!(values(&ascending), [0.0, 1.0, 21.0, 22.0, 3.0]);

    let descending = fixture.get_ok(&telemetry_uri(GPU_A, "sort=desc")).await;
    assert_eq!(values(&descending), [3.0, 22.0, 21.0, 1.0, 0.0]);
}

/// Samples one second before, at, inside, at the end of and one second after the window
/// [T0 + 10 s, T0 + 20 s], with values 1 to 5.
async fn window_fixture() -> (Fixture, i64, i64) {
    let fixture = Fixture::start().await;
    let (start, end) = (T0 + 10_000, T0 + 20_000);
    let times = [start - 1000, start, start + 5000, end, end + 1000];
    let documents = times.iter().zip(1..).map(|(ms, value)| {
        Sample::new(&format!("m-{value}"), GPU_A, *ms)
            .value(f64::from(value))
            .doc()
    });
    fixture.insert(documents.collect()).await;
    (fixture, start, end)
}

#[tokio::test]
async fn time_window_start_inclusive() {
    let (fixture, start, _) = window_fixture().await;

    let body = fixture
        .get_ok(&telemetry_uri(
            GPU_A,
            &format!("start_time={}", rfc3339(start)),
        ))
        .await;
    assert_eq!(values(&body), [2.0, 3.0, 4.0, 5.0]);

    // The same start with a +02:00 offset (a percent-encoded `+`).
    assert_eq!(rfc3339(start), "2025-07-18T20:42:44Z");
    let body = fixture
        .get_ok(&telemetry_uri(
            GPU_A,
            "start_time=2025-07-18T22:42:44%2B02:00",
        ))
        .await;
    assert_eq!(values(&body), [2.0, 3.0, 4.0, 5.0]);

    // One millisecond later excludes the sample at the old start.
    let body = fixture
        .get_ok(&telemetry_uri(
            GPU_A,
            &format!("start_time={}", rfc3339(start + 1)),
        ))
        .await;
    assert_eq!(values(&body), [3.0, 4.0, 5.0]);
}

#[tokio::test]
async fn time_window_end_inclusive() {
    let (fixture, start, end) = window_fixture().await;

    let query = format!("start_time={}&end_time={}", rfc3339(start), rfc3339(end));
    let body = fixture.get_ok(&telemetry_uri(GPU_A, &query)).await;
    assert_eq!(values(&body), [2.0, 3.0, 4.0]);

    let query = "start_time=2025-07-18T22:42:44%2B02:00&end_time=2025-07-18T22:42:54%2B02:00";
    let body = fixture.get_ok(&telemetry_uri(GPU_A, query)).await;
    assert_eq!(values(&body), [2.0, 3.0, 4.0]);

    let body = fixture
        .get_ok(&telemetry_uri(
            GPU_A,
            &format!("end_time={}&sort=desc", rfc3339(end)),
        ))
        .await;
    assert_eq!(values(&body), [4.0, 3.0, 2.0, 1.0]);
}

#[tokio::test]
async fn time_window_excludes_outside() {
    let (fixture, start, end) = window_fixture().await;

    // An end bound one millisecond past the last in-window sample avoids the inclusive-bound
    // defect of the test server, so the bounds one second outside are checked everywhere.
    let query = format!(
        "start_time={}&end_time={}",
        rfc3339(start),
        rfc3339(end + 1)
    );
    let body = fixture.get_ok(&telemetry_uri(GPU_A, &query)).await;
    assert_eq!(values(&body), [2.0, 3.0, 4.0]);
}

#[tokio::test]
async fn metric_name_filter() {
    let fixture = Fixture::start().await;
    fixture
        .insert(vec![
            Sample::new("u-1", GPU_A, T0).metric(UTIL).value(1.0).doc(),
            Sample::new("t-1", GPU_A, T0).metric(TEMP).value(60.0).doc(),
            Sample::new("u-2", GPU_A, T0 + 1000)
                .metric(UTIL)
                .value(2.0)
                .doc(),
            Sample::new("t-2", GPU_A, T0 + 1000)
                .metric(TEMP)
                .value(61.0)
                .doc(),
        ])
        .await;

    let body = fixture
        .get_ok(&telemetry_uri(GPU_A, &format!("metric_name={TEMP}")))
        .await;
    assert_eq!(values(&body), [60.0, 61.0]);
    assert!(
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["metric_name"] == TEMP),
        "{body}"
    );

    let none = fixture
        .get_ok(&telemetry_uri(GPU_A, "metric_name=DCGM_FI_DEV_POWER_USAGE"))
        .await;
    assert_eq!(values(&none), Vec::<f64>::new());
}

#[tokio::test]
async fn unknown_gpu_returns_404() {
    let fixture = Fixture::start().await;
    fixture
        .insert(vec![Sample::new("m-1", GPU_A, T0).doc()])
        .await;

    let (status, body) = fixture.get(&telemetry_uri(GPU_B, "")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    assert!(
        body["error"]["message"].as_str().unwrap().contains(GPU_B),
        "{body}"
    );
}

#[tokio::test]
async fn empty_window_returns_empty_page() {
    let fixture = Fixture::start().await;
    fixture
        .insert(vec![Sample::new("m-1", GPU_A, T0).doc()])
        .await;

    let later = format!("start_time={}", rfc3339(T0 + 1000));
    let body = fixture.get_ok(&telemetry_uri(GPU_A, &later)).await;
    assert_eq!(body["data"], serde_json::json!([]));
    assert_eq!(body["next_page_token"], serde_json::Value::Null);
}

#[tokio::test]
async fn limit_above_max_rejected() {
    let fixture = Fixture::start_with_limits(10, 50).await;
    fixture
        .insert(vec![Sample::new("m-1", GPU_A, T0).doc()])
        .await;

    let (status, body) = fixture.get(&telemetry_uri(GPU_A, "limit=51")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_parameter");
    assert_eq!(body["error"]["parameter"], "limit");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("50"),
        "message does not name the maximum: {body}"
    );

    let body = fixture.get_ok(&telemetry_uri(GPU_A, "limit=50")).await;
    assert_eq!(values(&body).len(), 1);
}

#[tokio::test]
async fn default_limit_applies() {
    let fixture = Fixture::start_with_limits(2, 50).await;
    let documents = (0..3).map(|i| Sample::new(&format!("m-{i}"), GPU_A, T0 + i * 1000).doc());
    fixture.insert(documents.collect()).await;

    let body = fixture.get_ok(&telemetry_uri(GPU_A, "")).await;
    assert_eq!(values(&body).len(), 2);
    assert!(next_token(&body).is_some(), "{body}");
}

#[tokio::test]
async fn bad_parameters_name_parameter() {
    let fixture = Fixture::start().await;
    fixture
        .insert(vec![Sample::new("m-1", GPU_A, T0).doc()])
        .await;

    let cases = [
        ("start_time=yesterday", "start_time"),
        ("end_time=2025-07-18", "end_time"),
        ("start_time=2025-07-18T20:42:34", "start_time"),
        ("start_time=2025-07-18T22:42:34+02:00", "start_time"),
        ("sort=newest", "sort"),
        ("limit=ten", "limit"),
        ("limit=0", "limit"),
        ("metric_name=", "metric_name"),
        ("page_token=not-a-token", "page_token"),
        ("start=2025-07-18T20:42:34Z", "start"),
    ];
    for (query, parameter) in cases {
        let (status, body) = fixture.get(&telemetry_uri(GPU_A, query)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"]["parameter"], parameter, "{query}: {body}");
        assert!(
            !body["error"]["message"].as_str().unwrap().is_empty(),
            "{query}: {body}"
        );
    }
}

#[tokio::test]
async fn start_after_end_rejected() {
    let fixture = Fixture::start().await;
    fixture
        .insert(vec![Sample::new("m-1", GPU_A, T0).doc()])
        .await;

    let query = format!("start_time={}&end_time={}", rfc3339(T0 + 1000), rfc3339(T0));
    let (status, body) = fixture.get(&telemetry_uri(GPU_A, &query)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["parameter"], "start_time");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("after end_time"),
        "{body}"
    );
}

#[tokio::test]
async fn token_from_other_query_rejected() {
    let fixture = Fixture::start().await;
    let documents = (0..3).map(|i| Sample::new(&format!("m-{i}"), GPU_A, T0 + i * 1000).doc());
    fixture.insert(documents.collect()).await;
    fixture
        .insert(vec![Sample::new("b-1", GPU_B, T0).doc()])
        .await;

    let first = fixture.get_ok(&telemetry_uri(GPU_A, "limit=1")).await;
    let token = next_token(&first).expect("a second page exists");

    for query in [
        format!("limit=1&sort=desc&page_token={token}"),
        format!("limit=1&metric_name={UTIL}&page_token={token}"),
        format!("limit=1&start_time={}&page_token={token}", rfc3339(T0)),
    ] {
        let (status, body) = fixture.get(&telemetry_uri(GPU_A, &query)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"]["parameter"], "page_token", "{query}: {body}");
    }
    let (status, body) = fixture
        .get(&telemetry_uri(GPU_B, &format!("page_token={token}")))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // A different limit with the same filters is allowed.
    let second = fixture
        .get_ok(&telemetry_uri(
            GPU_A,
            &format!("limit=2&page_token={token}"),
        ))
        .await;
    assert_eq!(values(&second).len(), 2);
    assert_eq!(second["next_page_token"], serde_json::Value::Null);
}

/// Pages through GPU_A with `query` and `limit`, calling `between` before each page after the
/// first, and returns the values in the order received.
async fn collect_pages(
    fixture: &Fixture,
    query: &str,
    limit: u32,
    mut between: impl AsyncFnMut(usize),
) -> Vec<f64> {
    let mut received = Vec::new();
    let mut token: Option<String> = None;
    for page in 0..50 {
        if page > 0 {
            between(page).await;
        }
        let mut uri = telemetry_uri(GPU_A, &format!("{query}&limit={limit}"));
        if let Some(token) = &token {
            uri.push_str(&format!("&page_token={token}"));
        }
        let body = fixture.get_ok(&uri).await;
        let page_values = values(&body);
        assert!(
            page_values.len() <= limit as usize,
            "page larger than limit: {body}"
        );
        received.extend(page_values);
        token = next_token(&body);
        if token.is_none() {
            return received;
        }
    }
    panic!("no last page within 50 pages; received {received:?}");
}

#[tokio::test]
async fn ascending_pages_stable_under_inserts() {
    let fixture = Fixture::start().await;
    // Ten samples one second apart; three more share the timestamp T0 + 3 s.
    let mut documents: Vec<_> = (0..10)
        .map(|i| {
            Sample::new(&format!("m-{i:02}"), GPU_A, T0 + i * 1000)
                .value(i as f64)
                .doc()
        })
        .collect();
    for (suffix, value) in [("a", 3.1), ("b", 3.2), ("c", 3.3)] {
        documents.push(
            Sample::new(&format!("m-03{suffix}"), GPU_A, T0 + 3000)
                .value(value)
                .doc(),
        );
    }
    fixture.insert(documents).await;

    // With limit 4 the first page ends at m-03a (T0 + 3 s). Before the second page, insert one
    // sample at that timestamp that sorts after the cursor (m-03z), one that sorts before it
    // (m-03), which keyset pagination cannot show any more, and one newer than everything.
    let received = collect_pages(&fixture, "sort=asc", 4, async |page| {
        if page == 1 {
            fixture
                .insert(vec![
                    Sample::new("m-03z", GPU_A, T0 + 3000).value(3.9).doc(),
                    Sample::new("m-02z", GPU_A, T0 + 2000).value(2.9).doc(),
                    Sample::new("m-99", GPU_A, T0 + 60_000).value(99.0).doc(),
                ])
                .await;
        }
        if page == 2 {
            fixture
                .insert(vec![
                    Sample::new("m-98", GPU_A, T0 + 50_000).value(98.0).doc(),
                ])
                .await;
        }
    })
    .await;

    let expected = [
        0.0, 1.0, 2.0, 3.0, 3.1, 3.2, 3.3, 3.9, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 98.0, 99.0,
    ];
    assert_eq!(received, expected);
    let unique: BTreeSet<u64> = received.iter().map(|v| v.to_bits()).collect();
    assert_eq!(
        unique.len(),
        received.len(),
        "a sample was returned twice: {received:?}"
    );
}

#[tokio::test]
async fn descending_pages_stable_under_inserts() {
    let fixture = Fixture::start().await;
    let documents: Vec<_> = (0..9)
        .map(|i| {
            Sample::new(&format!("m-{i:02}"), GPU_A, T0 + i * 1000)
                .value(i as f64)
                .doc()
        })
        .collect();
    fixture.insert(documents).await;

    // Newer samples arrive between pages; in descending order they precede the cursor and
    // must not appear. An older sample than all others sorts after the cursor and appears.
    let received = collect_pages(&fixture, "sort=desc", 3, async |page| {
        let newer = Sample::new(&format!("new-{page}"), GPU_A, T0 + 100_000 + page as i64)
            .value(100.0 + page as f64);
        let mut documents = vec![newer.doc()];
        if page == 1 {
            documents.push(Sample::new("old", GPU_A, T0 - 60_000).value(-1.0).doc());
        }
        fixture.insert(documents).await;
    })
    .await;

    assert_eq!(
        received,
        [8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0, -1.0]
    );
}

#[tokio::test]
async fn descending_pages_equal_timestamps() {
    let fixture = Fixture::start().await;
    let mut documents: Vec<_> = (0..9)
        .map(|i| {
            Sample::new(&format!("m-{i:02}"), GPU_A, T0 + i * 1000)
                .value(i as f64)
                .doc()
        })
        .collect();
    // Two more samples share T0 + 6 s: "m-05z" < "m-06" < "m-06a" in `_id` order.
    documents.push(Sample::new("m-06a", GPU_A, T0 + 6000).value(6.9).doc());
    documents.push(Sample::new("m-05z", GPU_A, T0 + 6000).value(6.5).doc());
    fixture.insert(documents).await;

    // With limit 3 the first page is m-08, m-07, m-06a; the second starts at m-06. Before it,
    // insert one sample at T0 + 6 s that sorts after the cursor (m-05y) and one before (m-06b).
    let received = collect_pages(&fixture, "sort=desc", 3, async |page| {
        if page == 1 {
            fixture
                .insert(vec![
                    Sample::new("m-05y", GPU_A, T0 + 6000).value(6.4).doc(),
                    Sample::new("m-06b", GPU_A, T0 + 6000).value(6.95).doc(),
                ])
                .await;
        }
    })
    .await;

    assert_eq!(
        received,
        [8.0, 7.0, 6.9, 6.0, 6.5, 6.4, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0]
    );
}
