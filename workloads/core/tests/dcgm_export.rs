//! Reads a whole DCGM export: the real one when `DCGM_CSV` names it, else the project's sample.

use std::collections::{BTreeMap, BTreeSet};

use std::path::{Path, PathBuf};

use telemetry_core::DcgmReader;
use telemetry_core::contract::SAMPLE_CSV_PATH;

/// The file named by `DCGM_CSV`, else the sample under `data/`.
fn dcgm_csv_path() -> PathBuf {
    match std::env::var_os("DCGM_CSV") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(SAMPLE_CSV_PATH),
    }
}

#[test]
fn every_row_parses() {
    let path = dcgm_csv_path();
    let file = std::fs::File::open(&path).unwrap_or_else(|err| panic!("opening {}: {err}", path.display()));
    let mut rows = 0;
    let mut gpus = BTreeSet::new();
    let mut hosts = BTreeSet::new();
    let mut per_gpu: BTreeMap<String, usize> = BTreeMap::new();

    for row in DcgmReader::new(file) {
        let row = row.unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        rows += 1;
        assert_eq!(row.line, rows as u64 + 1, "one line per row, header on line 1");
        assert!(!row.record.labels.is_empty(), "line {} has labels", row.line);
        gpus.insert(row.record.uuid.clone());
        hosts.insert(row.record.hostname.clone());
        *per_gpu.entry(row.record.uuid.clone()).or_default() += 1;
    }

    assert!(rows > 0, "{} has rows", path.display());
    if std::env::var_os("DCGM_CSV").is_some() && path.ends_with("dcgm_metrics_20250718_134233.csv") {
        assert_eq!(rows, 2470);
        assert_eq!(gpus.len(), 247);
        assert_eq!(hosts.len(), 31);
        assert_eq!(per_gpu["GPU-5fd4f087-86f3-7a43-b711-4771313afc50"], 10);
    }
}

#[test]
fn labels_match_columns() {
    let path = dcgm_csv_path();
    let file = std::fs::File::open(&path).expect("opening the DCGM export");
    for row in DcgmReader::new(file) {
        let record = row.expect("row parses").record;
        // The exporter repeats the columns as labels; a parser that split a value at a comma
        // or lost an escaped quote would break this equality.
        if let Some(uuid) = record.labels.get("UUID") {
            assert_eq!(uuid, &record.uuid);
        }
        if let Some(metric) = record.labels.get("__name__") {
            assert_eq!(metric, &record.metric_name);
        }
        if let Some(model) = record.labels.get("modelName") {
            assert_eq!(model, &record.model_name);
        }
    }
}
