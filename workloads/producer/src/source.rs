//! Reads the DCGM CSV on a blocking thread and hands this shard's rows to the publisher.
//!
//! The file is read row by row, so memory stays flat however large the export is. A bounded
//! channel makes the reader wait while the publisher is at its in-flight limit.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use telemetry_core::dcgm::DcgmRow;
use telemetry_core::{DcgmReader, RowError};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// Rows read ahead of the publisher.
const READ_AHEAD: usize = 1024;

/// One row of this producer's shard.
#[derive(Debug)]
pub(crate) enum SourceItem {
    /// A row that parsed into a valid record.
    Row(DcgmRow),
    /// A row that did not; it is reported and not published.
    Invalid(RowError),
}

/// Counts kept by the reader thread, returned when it finishes.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ReadStats {
    /// Data rows in the file, every shard's included.
    pub rows_total: u64,
}

/// Reader thread and the receiving end of its rows.
pub(crate) struct Source {
    pub rows: mpsc::Receiver<SourceItem>,
    pub reader: JoinHandle<Result<ReadStats>>,
}

/// Opens `path` and starts reading the rows that belong to shard `shard_index` of `shard_count`.
///
/// The header and the first row are read before this returns, so an unreadable file or one
/// that is not a DCGM export is reported before the producer connects to the broker.
pub(crate) fn open(path: &Path, shard_index: u32, shard_count: u32) -> Result<Source> {
    let file = File::open(path).map_err(|source| Error::OpenCsv {
        path: path.to_owned(),
        source,
    })?;
    if file.metadata().is_ok_and(|metadata| metadata.is_dir()) {
        let source = std::io::Error::new(std::io::ErrorKind::IsADirectory, "is a directory");
        return Err(Error::OpenCsv {
            path: path.to_owned(),
            source,
        });
    }

    let mut reader = DcgmReader::new(BufReader::with_capacity(1 << 16, file));
    let first = match reader.next_row() {
        Some(Err(err @ RowError::Header { .. })) => {
            return Err(Error::NotDcgm {
                path: path.to_owned(),
                source: err,
            });
        }
        Some(Err(RowError::Csv { source, .. })) if source.is_io_error() => {
            let csv::ErrorKind::Io(source) = source.into_kind() else {
                unreachable!("checked by is_io_error")
            };
            return Err(Error::OpenCsv {
                path: path.to_owned(),
                source,
            });
        }
        first => first,
    };

    let (sender, rows) = mpsc::channel(READ_AHEAD);
    let reader = tokio::task::spawn_blocking(move || {
        read_rows(first, reader, shard_index, shard_count, sender)
    });
    Ok(Source { rows, reader })
}

fn read_rows(
    first: Option<std::result::Result<DcgmRow, RowError>>,
    reader: DcgmReader<BufReader<File>>,
    shard_index: u32,
    shard_count: u32,
    sender: mpsc::Sender<SourceItem>,
) -> Result<ReadStats> {
    let mut stats = ReadStats::default();

    for item in first.into_iter().chain(reader) {
        let index = stats.rows_total;
        stats.rows_total += 1;
        if crate::config::shard_of(index, shard_count) != shard_index {
            continue;
        }

        let item = match item {
            Ok(row) => SourceItem::Row(row),
            Err(err) => SourceItem::Invalid(err),
        };
        if sender.blocking_send(item).is_err() {
            // The publisher stopped early (shutdown or a fatal error) and dropped the receiver.
            break;
        }
    }
    Ok(stats)
}
