//! The API section: `wrk` against the REST API's GPU listing and a 1000-point telemetry page,
//! against the same queries issued through `telemetry_metrics::Store` (the MongoDB driver with
//! the API's own filters, sorts and pipelines, but no HTTP, auth or JSON encoding).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mongodb::Client;
use mongodb::bson::Document;
use telemetry_core::contract::{self, env};
use telemetry_metrics::Store;
use telemetry_metrics::store::{GpuSortField, SortOrder, TelemetryFilter};

use crate::Counts;
use crate::dataset::{self, ExportShape};
use crate::error::{Error, Result};
use crate::footprint::Footprint;
use crate::process::{ManagedProcess, free_port};
use crate::report::{Table, micros, per_second, ratio};
use crate::servers::{Binaries, MongoServer, MongoServerKind};
use crate::stats::{percentiles, rate};

/// Points per telemetry page, the API's maximum page size.
const PAGE_POINTS: u32 = 1000;
/// GPUs per page of the GPU listing: the API's default page size.
const GPU_PAGE: u32 = 100;
/// Scrapes per GPU in the API export: 125 samples x 10 fields gives every GPU 1250 points,
/// more than one full telemetry page.
const SAMPLES: u32 = 125;
const GPUS_PER_HOST: u32 = 8;
/// Concurrent connections of `wrk` and concurrent tasks of the driver baseline.
const CONCURRENCY: usize = 16;
/// `wrk` threads: wrk's default.
const WRK_THREADS: usize = 2;
const TOKEN: &str = "bench-token-0123456789abcdef";

pub async fn run(
    binaries: &Binaries,
    mongo_kind: &MongoServerKind,
    work_dir: &Path,
    counts: Counts,
    footprint: &mut Footprint,
) -> Result<Table> {
    let rows_per_host = u64::from(GPUS_PER_HOST * SAMPLES) * 10;
    let hosts = u32::try_from(counts.api_rows.div_ceil(rows_per_host).max(1)).unwrap_or(u32::MAX);
    let csv = work_dir.join("api.csv");
    let shape = ExportShape { hosts, gpus_per_host: GPUS_PER_HOST, samples: SAMPLES, seed: 11 };
    let rows = dataset::generate_export(&binaries.path(contract::images::PRODUCER)?, &csv, &shape)?;

    let mongo = MongoServer::start(mongo_kind, work_dir, "mongodb-api").await?;
    let database = "bench_api";
    let documents = dataset::load_documents(&csv, "api")?;
    let uuid = documents
        .first()
        .and_then(|document| document.get_str("uuid").ok())
        .map(str::to_owned)
        .ok_or_else(|| Error::Check("the API export has no uuid".into()))?;
    seed(&mongo.uri, database, documents).await?;

    let metrics = start_metrics(binaries, work_dir, &mongo.uri, database).await?;
    footprint.idle(&metrics.process);

    let telemetry_path = contract_telemetry_path(&uuid);
    let queries = [
        Query { label: "GPU list (100 per page)", path: "/api/v1/gpus".to_owned(), kind: QueryKind::Gpus },
        Query { label: "telemetry page (1000 points)", path: telemetry_path, kind: QueryKind::Telemetry(uuid.clone()) },
    ];

    let mut table = Table::new(
        "API: req/s and p99 latency, HTTP (wrk) against the same query through the driver",
        &["query", "client", "req/s", "p50", "p99", "errors", "HTTP / driver req/s"],
    );
    let store = Arc::new(Store::connect(&mongo.uri, database).await.map_err(|err| Error::Check(err.to_string()))?);
    for query in &queries {
        let url = format!("http://127.0.0.1:{}{}", metrics.api_port, query.path);
        let (http, driver) = match measure_query(&url, &store, &query.kind, counts).await {
            Ok(loads) => loads,
            Err(err) => {
                // One query too slow for the run's duration still leaves the other's numbers.
                tracing::error!(query = query.label, cause = %err, "API query not measured");
                table.note(format!("{} was not measured: {err}", query.label));
                table.row(vec![query.label.into(), "-".into(), "failed".into()]);
                continue;
            }
        };
        table.row(vec![
            query.label.into(),
            "HTTP via wrk".into(),
            per_second(http.requests_per_second),
            micros(http.p50_us),
            micros(http.p99_us),
            http.errors.to_string(),
            ratio(http.requests_per_second, driver.requests_per_second),
        ]);
        table.row(vec![
            query.label.into(),
            "driver (telemetry_metrics::Store)".into(),
            per_second(driver.requests_per_second),
            micros(driver.p50_us),
            micros(driver.p99_us),
            driver.errors.to_string(),
            String::new(),
        ]);
    }
    footprint.loaded(&metrics.process, "api (wrk)");
    footprint.loaded(&mongo.process, "api (wrk)");

    table.note(format!(
        "{rows} rows ({hosts} hosts x {GPUS_PER_HOST} GPUs x {SAMPLES} samples x 10 fields) loaded with the consumer's batch writer (insert_many plus the per-GPU summaries); the metrics service created its indexes at start."
    ));
    table.note(format!(
        "wrk: {WRK_THREADS} threads, {CONCURRENCY} connections, {:?}, bearer token; driver: {CONCURRENCY} tasks in the harness, same duration, at most {} requests.",
        counts.api_duration, counts.api_requests
    ));
    table.note("The GPU list reads the per-GPU summaries in the gpus collection, so its cost follows the page size, not the rows stored.");
    Ok(table)
}

async fn measure_query(url: &str, store: &Arc<Store>, kind: &QueryKind, counts: Counts) -> Result<(Load, Load)> {
    let http = run_wrk(url, counts.api_duration)?;
    let driver = run_driver(store, kind, counts.api_requests, counts.api_duration).await?;
    tracing::info!(url, http_rps = http.requests_per_second, driver_rps = driver.requests_per_second, "API query measured");
    Ok((http, driver))
}

fn contract_telemetry_path(uuid: &str) -> String {
    telemetry_metrics::TELEMETRY_PATH.replace("{uuid}", uuid) + &format!("?limit={PAGE_POINTS}")
}

struct Query {
    label: &'static str,
    path: String,
    kind: QueryKind,
}

#[derive(Clone)]
enum QueryKind {
    Gpus,
    Telemetry(String),
}

/// Stores the documents as the consumer does, in batches of 1000, so that the per-GPU
/// summaries the GPU listing reads are written too.
async fn seed(uri: &str, database: &str, documents: Vec<Document>) -> Result<()> {
    let client = Client::with_uri_str(uri).await.map_err(Error::mongo("connecting"))?;
    let store = telemetry_consumer::store::MetricsStore::new(&client.database(database));
    for chunk in documents.chunks(1000) {
        store.insert_batch(chunk).await.map_err(Error::mongo("seeding the API data"))?;
    }
    Ok(())
}

struct MetricsService {
    process: ManagedProcess,
    api_port: u16,
}

async fn start_metrics(binaries: &Binaries, work_dir: &Path, mongo_uri: &str, database: &str) -> Result<MetricsService> {
    let tokens = work_dir.join("api-tokens");
    std::fs::write(&tokens, format!("bench:{TOKEN}\n")).map_err(Error::io("writing the API tokens file"))?;
    let api_port = free_port()?;
    let mut command = Command::new(binaries.path(contract::images::METRICS)?);
    command
        .env(telemetry_metrics::BIND_ADDRESS_ENV, "127.0.0.1")
        .env(env::API_PORT, api_port.to_string())
        .env(env::ADMIN_PORT, free_port()?.to_string())
        .env(env::MONGODB_URI, mongo_uri)
        .env(env::MONGODB_DATABASE, database)
        .env(env::API_TOKENS_FILE, &tokens)
        .env("RUST_LOG", "warn");
    let mut process = ManagedProcess::spawn(contract::images::METRICS, command, &work_dir.join("metrics.log"))?;
    process.wait_for_port(([127, 0, 0, 1], api_port).into(), Duration::from_secs(30)).await?;
    Ok(MetricsService { process, api_port })
}

/// Throughput and latency of one load run.
#[derive(Debug, Clone, Copy)]
struct Load {
    requests_per_second: f64,
    p50_us: f64,
    p99_us: f64,
    /// Requests that failed or timed out.
    errors: u64,
}

fn run_wrk(url: &str, duration: Duration) -> Result<Load> {
    let output = Command::new("wrk")
        .args(["-t", &WRK_THREADS.to_string(), "-c", &CONCURRENCY.to_string()])
        .args(["-d", &format!("{}s", duration.as_secs().max(1)), "--latency", "--timeout", "10s"])
        .args(["-H", &format!("Authorization: Bearer {TOKEN}"), url])
        .output()
        .map_err(|source| Error::Spawn { program: "wrk".into(), source })?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(Error::ToolOutput { tool: "wrk", reason: format!("exit status {}", output.status), output: text });
    }
    parse_wrk(&text)
}

/// Parses `wrk --latency` output. A non-2xx response fails the run, because it means a wrong
/// token or URL; socket errors (timeouts of slow requests included) are counted.
fn parse_wrk(text: &str) -> Result<Load> {
    let fail = |reason: &str| Error::ToolOutput { tool: "wrk", reason: reason.to_owned(), output: text.to_owned() };
    if text.contains("Non-2xx or 3xx responses") {
        return Err(fail("some responses were not 2xx; check the token and the URL"));
    }
    let field = |prefix: &str| {
        text.lines().map(str::trim).find_map(|line| line.strip_prefix(prefix)).map(str::trim).map(str::to_owned)
    };
    // `Socket errors: connect 0, read 0, write 0, timeout 12`
    let errors = field("Socket errors:").map_or(0, |counts| {
        counts.split(',').filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok()).sum()
    });
    let completed = text
        .lines()
        .find_map(|line| line.trim().split_once(" requests in ").and_then(|(count, _)| count.parse::<u64>().ok()))
        .ok_or_else(|| fail("no `requests in` line"))?;
    if completed == 0 {
        return Err(fail("no request completed within the run; the query is slower than wrk's timeout"));
    }
    let requests_per_second = field("Requests/sec:")
        .and_then(|value| value.parse::<f64>().ok())
        .ok_or_else(|| fail("no Requests/sec line"))?;
    let p50_us = field("50%").and_then(|value| parse_duration_us(&value)).ok_or_else(|| fail("no 50% line"))?;
    let p99_us = field("99%").and_then(|value| parse_duration_us(&value)).ok_or_else(|| fail("no 99% line"))?;
    Ok(Load { requests_per_second, p50_us, p99_us, errors })
}

/// Parses a wrk duration such as `812.00us`, `1.25ms` or `2.01s` into microseconds.
fn parse_duration_us(text: &str) -> Option<f64> {
    let (number, scale) = if let Some(number) = text.strip_suffix("us") {
        (number, 1.0)
    } else if let Some(number) = text.strip_suffix("ms") {
        (number, 1_000.0)
    } else if let Some(number) = text.strip_suffix('s') {
        (number, 1_000_000.0)
    } else {
        return None;
    };
    number.trim().parse::<f64>().ok().map(|value| value * scale)
}

/// Issues the query from [`CONCURRENCY`] tasks until `max_requests` or `duration` is reached.
async fn run_driver(store: &Arc<Store>, kind: &QueryKind, max_requests: u64, duration: Duration) -> Result<Load> {
    let started = Instant::now();
    let deadline = started + duration;
    let per_task = max_requests.div_ceil(CONCURRENCY as u64);
    let mut tasks = Vec::with_capacity(CONCURRENCY);
    for _ in 0..CONCURRENCY {
        let store = Arc::clone(store);
        let kind = kind.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_task as usize);
            while (latencies.len() as u64) < per_task && Instant::now() < deadline {
                let request = Instant::now();
                let items = match &kind {
                    QueryKind::Gpus => store.gpu_page(GpuSortField::Uuid, SortOrder::Asc, None, GPU_PAGE).await?.items.len(),
                    QueryKind::Telemetry(uuid) => {
                        let filter = TelemetryFilter {
                            uuid: uuid.clone(),
                            metric_name: None,
                            start: None,
                            end: None,
                            order: SortOrder::Asc,
                        };
                        store.telemetry_page(&filter, None, PAGE_POINTS).await?.items.len()
                    }
                };
                latencies.push(request.elapsed().as_nanos() as u64);
                std::hint::black_box(items);
            }
            Ok::<_, telemetry_metrics::Error>(latencies)
        }));
    }

    let mut latencies = Vec::new();
    for task in tasks {
        let task_latencies = task
            .await
            .map_err(|err| Error::Check(format!("driver task failed: {err}")))?
            .map_err(|err| Error::Check(format!("driver query failed: {err}")))?;
        latencies.extend(task_latencies);
    }
    let elapsed = started.elapsed();
    let count = latencies.len() as u64;
    let spread = percentiles(&mut latencies);
    Ok(Load { requests_per_second: rate(count, elapsed), p50_us: spread.p50_us, p99_us: spread.p99_us, errors: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK_OUTPUT: &str = "Running 2s test @ http://127.0.0.1:8080/api/v1/gpus
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     4.38ms    1.09ms  14.35ms   80.71%
    Req/Sec     1.83k   142.07     2.07k    70.00%
  Latency Distribution
     50%    4.20ms
     75%    4.71ms
     90%    5.53ms
     99%    8.25ms
  7300 requests in 2.00s, 10.15MB read
Requests/sec:   3648.52
Transfer/sec:      5.07MB
";

    #[test]
    fn wrk_output_parsed() {
        let load = parse_wrk(WRK_OUTPUT).unwrap();
        assert_eq!(load.requests_per_second, 3648.52);
        assert_eq!(load.p50_us, 4_200.0);
        assert_eq!(load.p99_us, 8_250.0);
        assert_eq!(load.errors, 0);
    }

    #[test]
    fn wrk_socket_errors_counted() {
        let text = WRK_OUTPUT.replace("Requests/sec", "  Socket errors: connect 0, read 1, write 0, timeout 12\nRequests/sec");
        assert_eq!(parse_wrk(&text).unwrap().errors, 13);
    }

    #[test]
    fn wrk_zero_requests_rejected() {
        let text = WRK_OUTPUT.replace("7300 requests", "0 requests");
        let err = parse_wrk(&text).unwrap_err().to_string();
        assert!(err.contains("no request completed"), "{err}");
    }

    #[test]
    fn wrk_non_2xx_rejected() {
        let text = WRK_OUTPUT.replace("Requests/sec", "  Non-2xx or 3xx responses: 7300\nRequests/sec");
        let err = parse_wrk(&text).unwrap_err().to_string();
        assert!(err.contains("not 2xx"), "{err}");
    }

    #[test]
    fn wrk_durations() {
        assert_eq!(parse_duration_us("812.00us"), Some(812.0));
        assert_eq!(parse_duration_us("1.25ms"), Some(1_250.0));
        assert_eq!(parse_duration_us("2.00s"), Some(2_000_000.0));
        assert_eq!(parse_duration_us("fast"), None);
    }
}
