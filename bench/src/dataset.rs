//! Benchmark inputs built from a real DCGM export: 1 KiB message bodies and larger CSV files.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use telemetry_core::{DcgmReader, TelemetryRecord};

use crate::error::{Error, Result};

/// Size the benchmark's telemetry messages are padded to, in bytes of JSON.
pub const MESSAGE_SIZE: usize = 1024;

/// Label that carries the padding; a real exporter label set is that long when a pod, its
/// namespace and the driver version are attached.
const PADDING_LABEL: &str = "bench_padding";

/// Reads the first valid record of the DCGM export at `path`.
pub fn first_record(path: &Path) -> Result<TelemetryRecord> {
    let file = std::fs::File::open(path).map_err(Error::io(format!("opening {}", path.display())))?;
    let mut reader = DcgmReader::new(BufReader::new(file));
    match reader.next() {
        Some(Ok(row)) => Ok(row.record),
        Some(Err(err)) => Err(Error::Dataset { path: path.to_owned(), reason: err.to_string() }),
        None => Err(Error::Dataset { path: path.to_owned(), reason: "the file has no data rows".into() }),
    }
}

/// Encodes `record` as JSON padded through one extra label to exactly [`MESSAGE_SIZE`] bytes.
pub fn padded_body(record: &TelemetryRecord) -> Result<Vec<u8>> {
    let mut padded = record.clone();
    padded.labels.insert(PADDING_LABEL.into(), String::new());
    let unpadded = padded.to_json().len();
    let missing = MESSAGE_SIZE.checked_sub(unpadded).ok_or_else(|| {
        Error::Check(format!("record is already {unpadded} bytes of JSON, over the {MESSAGE_SIZE}-byte message size"))
    })?;
    padded.labels.insert(PADDING_LABEL.into(), "x".repeat(missing));

    let body = padded.to_json();
    if body.len() != MESSAGE_SIZE {
        return Err(Error::Check(format!("padded body is {} bytes, expected {MESSAGE_SIZE}", body.len())));
    }
    TelemetryRecord::from_json(&body).map_err(|err| Error::Check(format!("padded body is not a valid record: {err}")))?;
    Ok(body)
}

/// Writes a CSV of at least `rows` data rows to `target` by repeating the data rows of the
/// export at `source` under its header. Returns the number of data rows written.
pub fn repeat_csv(source: &Path, target: &Path, rows: u64) -> Result<u64> {
    let text = std::fs::read_to_string(source).map_err(Error::io(format!("reading {}", source.display())))?;
    let mut lines = text.lines();
    let header = lines.next().ok_or_else(|| Error::Dataset { path: source.to_owned(), reason: "empty file".into() })?;
    let data: Vec<&str> = lines.filter(|line| !line.trim().is_empty()).collect();
    if data.is_empty() {
        return Err(Error::Dataset { path: source.to_owned(), reason: "the file has no data rows".into() });
    }

    let file = std::fs::File::create(target).map_err(Error::io(format!("creating {}", target.display())))?;
    let mut output = BufWriter::new(file);
    let write_error = Error::io(format!("writing {}", target.display()));
    let mut written = 0;
    let result = (|| -> std::io::Result<()> {
        writeln!(output, "{header}")?;
        while written < rows {
            for line in &data {
                writeln!(output, "{line}")?;
                written += 1;
            }
        }
        output.flush()
    })();
    result.map_err(write_error)?;
    Ok(written)
}

/// Shape of an export written by `telemetry-producer generate`.
#[derive(Debug, Clone, Copy)]
pub struct ExportShape {
    pub hosts: u32,
    pub gpus_per_host: u32,
    /// Scrapes of every GPU; each writes ten rows (one per DCGM field) per GPU.
    pub samples: u32,
    pub seed: u64,
}

/// Writes a synthetic export with the producer's generator and returns its data row count.
pub fn generate_export(producer: &Path, target: &Path, shape: &ExportShape) -> Result<u64> {
    let output = std::process::Command::new(producer)
        .args(["generate", "--hosts", &shape.hosts.to_string(), "--gpus", &shape.gpus_per_host.to_string()])
        .args(["--samples", &shape.samples.to_string(), "--seed", &shape.seed.to_string(), "--out"])
        .arg(target)
        .env("RUST_LOG", "warn")
        .output()
        .map_err(|source| Error::Spawn { program: producer.display().to_string(), source })?;
    if !output.status.success() {
        return Err(Error::Check(format!(
            "`{} generate` failed with {}: {}",
            producer.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    let rows = count_data_lines(target)?;
    let expected = u64::from(shape.hosts) * u64::from(shape.gpus_per_host) * u64::from(shape.samples) * 10;
    if rows != expected {
        return Err(Error::Dataset { path: target.to_owned(), reason: format!("{rows} data rows, expected {expected}") });
    }
    Ok(rows)
}

/// Reads an export and builds the documents the consumer stores for it, in file order, with
/// the ids the producer assigns (`<run-id>:<line>`).
pub fn load_documents(path: &Path, run_id: &str) -> Result<Vec<mongodb::bson::Document>> {
    let file = std::fs::File::open(path).map_err(Error::io(format!("opening {}", path.display())))?;
    let mut documents = Vec::new();
    for row in DcgmReader::new(BufReader::new(file)) {
        let row = row.map_err(|err| Error::Dataset { path: path.to_owned(), reason: err.to_string() })?;
        let id = format!("{run_id}:{}", row.line);
        let document = telemetry_consumer::document::to_document(&id, &row.record)
            .map_err(|err| Error::Dataset { path: path.to_owned(), reason: err.to_string() })?;
        documents.push(document);
    }
    Ok(documents)
}

/// Counts the data rows of a CSV file, header excluded.
pub fn count_data_lines(path: &Path) -> Result<u64> {
    let file = std::fs::File::open(path).map_err(Error::io(format!("opening {}", path.display())))?;
    let lines = BufReader::new(file).lines().skip(1).filter(|line| line.as_ref().is_ok_and(|l| !l.is_empty()));
    Ok(lines.count() as u64)
}

/// The real DCGM export when `DCGM_CSV` names one, else the repository's sample.
pub fn default_csv_path() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    match std::env::var_os("DCGM_CSV") {
        Some(path) if Path::new(&path).exists() => PathBuf::from(path),
        _ => root.join(telemetry_core::contract::SAMPLE_CSV_PATH),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_path() -> PathBuf {
        default_csv_path()
    }

    #[test]
    fn padded_body_is_one_kib_record() {
        let record = first_record(&sample_path()).unwrap();
        let body = padded_body(&record).unwrap();
        assert_eq!(body.len(), MESSAGE_SIZE);
        let decoded = TelemetryRecord::from_json(&body).unwrap();
        assert_eq!(decoded.uuid, record.uuid);
        assert_eq!(decoded.labels.len(), record.labels.len() + 1);
    }

    #[test]
    fn repeat_csv_reaches_row_count() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("big.csv");
        let written = repeat_csv(&sample_path(), &target, 1_000).unwrap();
        assert!(written >= 1_000);
        assert_eq!(count_data_lines(&target).unwrap(), written);
        let rows = DcgmReader::new(std::fs::File::open(&target).unwrap()).filter(Result::is_ok).count();
        assert_eq!(rows as u64, written);
    }
}
