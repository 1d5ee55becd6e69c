//! Properties the fuzz targets check on every input. A violated property panics, which
//! libFuzzer reports as a crash and saves the input under `fuzz/artifacts/<target>/`.
#![deny(unsafe_code)]

use std::collections::BTreeMap;

use telemetry_core::{DcgmReader, TelemetryRecord, parse_labels};

/// Rows read from one input at most; libFuzzer's default max input length (4096 bytes) keeps
/// real inputs far below it.
const MAX_ROWS: usize = 10_000;

/// Checks `parse_labels` on one input: it never panics, and a map it returns, written back as
/// `key="value"` pairs with escapes, parses to the same map.
pub fn check_labels(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    let Ok(labels) = parse_labels(raw) else { return };

    for key in labels.keys() {
        assert!(!key.is_empty(), "empty label name accepted from {raw:?}");
        assert_eq!(key.trim(), key, "label name {key:?} kept surrounding blanks from {raw:?}");
    }

    let written = write_labels(&labels);
    let reparsed = parse_labels(&written)
        .unwrap_or_else(|err| panic!("labels written from {raw:?} as {written:?} do not parse: {err}"));
    assert_eq!(reparsed, labels, "labels changed on a round trip through {written:?}");
}

/// Writes labels in the `labels_raw` syntax that `parse_labels` reads.
fn write_labels(labels: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = labels
        .iter()
        .map(|(key, value)| {
            let escaped = value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            format!("{key}=\"{escaped}\"")
        })
        .collect();
    pairs.join(",")
}

/// Checks `DcgmReader` on one input: it never panics, ends, reports rows on non-decreasing
/// lines after the header, and every row it accepts is a valid record that survives the JSON
/// wire encoding unchanged.
pub fn check_dcgm_csv(data: &[u8]) {
    let mut last_line = 1;
    for (index, row) in DcgmReader::new(data).enumerate() {
        assert!(index < MAX_ROWS, "reader did not end after {MAX_ROWS} rows of a {}-byte input", data.len());
        let line = match &row {
            Ok(row) => row.line,
            Err(err) => err.line(),
        };
        assert!(line >= last_line, "row at line {line} reported after line {last_line}");
        last_line = line;

        let Ok(row) = row else { continue };
        row.record
            .validate()
            .unwrap_or_else(|err| panic!("reader accepted an invalid record at line {line}: {err}"));
        let decoded = TelemetryRecord::from_json(&row.record.to_json())
            .unwrap_or_else(|err| panic!("record from line {line} does not decode from its own JSON: {err}"));
        assert_eq!(decoded, row.record, "record from line {line} changed on a JSON round trip");
    }
}
