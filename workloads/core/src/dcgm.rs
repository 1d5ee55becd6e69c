//! Reader for DCGM CSV exports.
//!
//! The export has this header, in this order:
//! `timestamp,metric_name,gpu_id,device,uuid,modelName,Hostname,container,pod,namespace,value,labels_raw`.
//! Every row becomes one [`TelemetryRecord`]; a bad row becomes a [`RowError`] that names the
//! line, the column and the value, and the reader goes on with the next row.

use std::io::Read;

use crate::labels::parse_labels;
use crate::record::{TelemetryRecord, parse_timestamp};

/// Column names of a DCGM export, in file order.
pub const DCGM_HEADER: [&str; 12] = [
    "timestamp",
    "metric_name",
    "gpu_id",
    "device",
    "uuid",
    "modelName",
    "Hostname",
    "container",
    "pod",
    "namespace",
    "value",
    "labels_raw",
];

/// A row or file that could not be read as DCGM telemetry.
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    #[error("line {line}: column `{column}` has invalid value {value:?}: {reason}")]
    InvalidField { line: u64, column: &'static str, value: String, reason: String },
    #[error("line {line}: expected {expected} columns, found {found}; check the quoting of that row")]
    ColumnCount { line: u64, expected: usize, found: usize },
    #[error("line 1: header is {found:?}; a DCGM export starts with {expected:?}")]
    Header { found: String, expected: String },
    #[error("line {line}: malformed CSV: {source}")]
    Csv {
        line: u64,
        #[source]
        source: csv::Error,
    },
}

impl RowError {
    /// Line of the file the error concerns, counting the header as line 1.
    pub fn line(&self) -> u64 {
        match self {
            RowError::InvalidField { line, .. } | RowError::ColumnCount { line, .. } | RowError::Csv { line, .. } => *line,
            RowError::Header { .. } => 1,
        }
    }
}

/// One parsed row with the line it started on.
#[derive(Debug, Clone, PartialEq)]
pub struct DcgmRow {
    /// Line of the file where the row starts, counting the header as line 1.
    pub line: u64,
    /// The row as a validated record.
    pub record: TelemetryRecord,
}

/// Streaming reader over a DCGM CSV export.
pub struct DcgmReader<R: Read> {
    csv: csv::Reader<R>,
    header_checked: bool,
    /// Set after a wrong header, because no row after it can be trusted.
    finished: bool,
    row: csv::StringRecord,
}

impl<R: Read> DcgmReader<R> {
    /// Wraps a reader positioned at the header line.
    pub fn new(input: R) -> Self {
        // Lines end at `\n` only, so a `\r` before it stays at the end of the last field, where
        // trimming drops it. With the csv crate's default CRLF terminator, line numbers of
        // CRLF files lag one behind (csv 1.4).
        let csv = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .terminator(csv::Terminator::Any(b'\n'))
            .from_reader(input);
        DcgmReader { csv, header_checked: false, finished: false, row: csv::StringRecord::new() }
    }

    /// Reads the next row. Returns `None` at the end of the file; after an error on one row,
    /// the next call goes on with the following row. A wrong header ends the file.
    pub fn next_row(&mut self) -> Option<Result<DcgmRow, RowError>> {
        if self.finished {
            return None;
        }
        if !self.header_checked {
            self.header_checked = true;
            if let Err(err) = self.check_header() {
                self.finished = true;
                return Some(Err(err));
            }
        }

        match self.csv.read_record(&mut self.row) {
            Ok(false) => None,
            Ok(true) => {
                let line = self.row.position().map_or(0, |position| position.line());
                Some(parse_row(&self.row, line).map(|record| DcgmRow { line, record }))
            }
            Err(source) => {
                let line = source.position().map_or(0, |position| position.line());
                Some(Err(RowError::Csv { line, source }))
            }
        }
    }

    fn check_header(&mut self) -> Result<(), RowError> {
        let header = self.csv.headers().map_err(|source| RowError::Csv { line: 1, source })?;
        let found: Vec<&str> = header.iter().map(|name| name.trim_start_matches('\u{feff}').trim()).collect();
        if found == DCGM_HEADER {
            return Ok(());
        }
        Err(RowError::Header { found: found.join(","), expected: DCGM_HEADER.join(",") })
    }
}

impl<R: Read> Iterator for DcgmReader<R> {
    type Item = Result<DcgmRow, RowError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_row()
    }
}

/// Parses one CSV row into a validated record.
pub fn parse_row(row: &csv::StringRecord, line: u64) -> Result<TelemetryRecord, RowError> {
    if row.len() != DCGM_HEADER.len() {
        return Err(RowError::ColumnCount { line, expected: DCGM_HEADER.len(), found: row.len() });
    }
    let field = |index: usize| row.get(index).unwrap_or_default();
    let invalid = |index: usize, reason: String| RowError::InvalidField {
        line,
        column: DCGM_HEADER[index],
        value: field(index).to_owned(),
        reason,
    };
    let required = |index: usize| {
        let value = field(index).trim();
        if value.is_empty() { Err(invalid(index, "must not be empty".into())) } else { Ok(value.to_owned()) }
    };

    let timestamp = parse_timestamp(field(0).trim())
        .map_err(|err| invalid(0, format!("{err}; use RFC 3339 such as 2025-07-18T20:42:34Z")))?;
    let metric_name = required(1)?;
    let gpu_id = field(2)
        .trim()
        .parse::<u32>()
        .map_err(|err| invalid(2, format!("{err}; use the GPU index, a non-negative integer")))?;
    let uuid = required(4)?;
    let value = field(10).trim().parse::<f64>().map_err(|err| invalid(10, format!("{err}; use a number")))?;
    if !value.is_finite() {
        return Err(invalid(10, "must be a finite number".into()));
    }
    let labels = parse_labels(field(11)).map_err(|err| invalid(11, err.to_string()))?;

    Ok(TelemetryRecord {
        timestamp,
        metric_name,
        gpu_id,
        device: field(3).trim().to_owned(),
        uuid,
        model_name: field(5).trim().to_owned(),
        hostname: field(6).trim().to_owned(),
        container: field(7).trim().to_owned(),
        pod: field(8).trim().to_owned(),
        namespace: field(9).trim().to_owned(),
        value,
        labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "timestamp,metric_name,gpu_id,device,uuid,modelName,Hostname,container,pod,namespace,value,labels_raw\n";
    const ROW: &str = r#""2025-07-18T20:42:34Z","DCGM_FI_DEV_GPU_UTIL","3","nvidia3","GPU-9ba418e1-59be-2f2e-6031-e3f6b7c64ad7","NVIDIA H100 80GB HBM3","host-031","","","","87.5","DCGM_FI_DRIVER_VERSION=""535.129.03"",note=""a, \""quoted\"" value"",gpu=""3""""#;

    fn read(text: &str) -> Vec<Result<DcgmRow, RowError>> {
        DcgmReader::new(text.as_bytes()).collect()
    }

    #[test]
    fn row_parsed_with_labels() {
        let rows = read(&format!("{HEADER}{ROW}\n"));
        assert_eq!(rows.len(), 1);
        let row = rows[0].as_ref().unwrap();
        assert_eq!(row.line, 2);
        assert_eq!(row.record.gpu_id, 3);
        assert_eq!(row.record.value, 87.5);
        assert_eq!(row.record.model_name, "NVIDIA H100 80GB HBM3");
        assert_eq!(row.record.labels["DCGM_FI_DRIVER_VERSION"], "535.129.03");
        assert_eq!(row.record.labels["note"], r#"a, "quoted" value"#);
        assert_eq!(row.record.labels["gpu"], "3");
    }

    #[test]
    fn bad_value_names_line_column_value() {
        let bad = ROW.replace(r#""87.5""#, r#""hot""#);
        let rows = read(&format!("{HEADER}{ROW}\n{bad}\n{ROW}\n"));
        assert_eq!(rows.len(), 3);
        assert!(rows[0].is_ok());
        let message = rows[1].as_ref().unwrap_err().to_string();
        assert!(message.starts_with("line 3: column `value` has invalid value \"hot\""), "{message}");
        assert!(rows[2].is_ok(), "reading goes on after a bad row");
    }

    #[test]
    fn bad_timestamp_rejected() {
        let bad = ROW.replace("2025-07-18T20:42:34Z", "18/07/2025 20:42");
        let err = read(&format!("{HEADER}{bad}\n")).remove(0).unwrap_err();
        assert!(matches!(err, RowError::InvalidField { column: "timestamp", line: 2, .. }), "{err}");
    }

    #[test]
    fn empty_uuid_rejected() {
        let bad = ROW.replace("GPU-9ba418e1-59be-2f2e-6031-e3f6b7c64ad7", "");
        let err = read(&format!("{HEADER}{bad}\n")).remove(0).unwrap_err();
        assert!(matches!(err, RowError::InvalidField { column: "uuid", .. }), "{err}");
    }

    #[test]
    fn non_finite_value_rejected() {
        let bad = ROW.replace(r#""87.5""#, r#""NaN""#);
        let err = read(&format!("{HEADER}{bad}\n")).remove(0).unwrap_err();
        assert!(matches!(err, RowError::InvalidField { column: "value", .. }), "{err}");
    }

    #[test]
    fn bad_labels_rejected() {
        let bad = ROW.replace(r#"gpu=""3"""#, r#"gpu=3"#);
        let err = read(&format!("{HEADER}{bad}\n")).remove(0).unwrap_err();
        assert!(matches!(err, RowError::InvalidField { column: "labels_raw", .. }), "{err}");
    }

    #[test]
    fn short_row_rejected() {
        let err = read(&format!("{HEADER}\"2025-07-18T20:42:34Z\",\"x\"\n")).remove(0).unwrap_err();
        assert!(matches!(err, RowError::ColumnCount { line: 2, expected: 12, found: 2 }), "{err}");
    }

    #[test]
    fn wrong_header_ends_file() {
        let rows = read(&format!("a,b,c\n{ROW}\n"));
        assert_eq!(rows.len(), 1);
        assert!(matches!(rows[0], Err(RowError::Header { .. })));
    }

    #[test]
    fn header_with_byte_order_mark() {
        let rows = read(&format!("\u{feff}{HEADER}{ROW}\n"));
        assert!(rows[0].is_ok());
    }

    #[test]
    fn crlf_line_endings() {
        let rows = read(&format!("{}{ROW}\r\n{ROW}\r\n", HEADER.replace('\n', "\r\n")));
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].as_ref().unwrap().line, 2);
        assert_eq!(rows[1].as_ref().unwrap().line, 3);
    }
}
