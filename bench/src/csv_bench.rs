//! DCGM CSV parsing: `telemetry_core::DcgmReader` (records with parsed `labels_raw`) against
//! the csv crate alone reading the same file into `StringRecord`s, the floor that any parser
//! built on it pays.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::time::{Duration, Instant};

use telemetry_core::DcgmReader;

use crate::error::{Error, Result};
use crate::stats::rate;

/// Rows per second of both readers over one file, best of the repetitions.
#[derive(Debug, Clone)]
pub struct ParseResult {
    pub rows: u64,
    pub file_bytes: u64,
    pub dcgm_reader_rows_per_second: f64,
    pub csv_only_rows_per_second: f64,
}

/// Parses `path` `repetitions` times with each reader and keeps each reader's fastest pass,
/// which is the one least disturbed by other work on the machine.
pub fn run(path: &Path, repetitions: usize) -> Result<ParseResult> {
    let file_bytes = std::fs::metadata(path).map_err(Error::io(format!("reading {}", path.display())))?.len();
    let mut best_dcgm = Duration::MAX;
    let mut best_csv = Duration::MAX;
    let mut rows = 0;

    for _ in 0..repetitions.max(1) {
        let (dcgm_rows, elapsed) = time_dcgm_reader(path)?;
        best_dcgm = best_dcgm.min(elapsed);
        let (csv_rows, elapsed) = time_csv_only(path)?;
        best_csv = best_csv.min(elapsed);
        if dcgm_rows != csv_rows {
            return Err(Error::Check(format!("DcgmReader read {dcgm_rows} rows, the csv crate {csv_rows}")));
        }
        rows = dcgm_rows;
    }

    Ok(ParseResult {
        rows,
        file_bytes,
        dcgm_reader_rows_per_second: rate(rows, best_dcgm),
        csv_only_rows_per_second: rate(rows, best_csv),
    })
}

fn open(path: &Path) -> Result<BufReader<File>> {
    let file = File::open(path).map_err(Error::io(format!("opening {}", path.display())))?;
    Ok(BufReader::new(file))
}

fn time_dcgm_reader(path: &Path) -> Result<(u64, Duration)> {
    let input = open(path)?;
    let started = Instant::now();
    let mut rows = 0u64;
    let mut label_count = 0usize;
    for row in DcgmReader::new(input) {
        let row = row.map_err(|err| Error::Dataset { path: path.to_owned(), reason: err.to_string() })?;
        label_count += row.record.labels.len();
        rows += 1;
    }
    let elapsed = started.elapsed();
    // Keeps the parsed labels observable so the loop cannot be reduced to counting lines.
    std::hint::black_box(label_count);
    Ok((rows, elapsed))
}

fn time_csv_only(path: &Path) -> Result<(u64, Duration)> {
    let input = open(path)?;
    let started = Instant::now();
    let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(input);
    let mut record = csv::StringRecord::new();
    let mut rows = 0u64;
    let mut field_bytes = 0usize;
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {
                field_bytes += record.as_slice().len();
                rows += 1;
            }
            Ok(false) => break,
            Err(err) => return Err(Error::Dataset { path: path.to_owned(), reason: err.to_string() }),
        }
    }
    let elapsed = started.elapsed();
    std::hint::black_box(field_bytes);
    Ok((rows, elapsed))
}
