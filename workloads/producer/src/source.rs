//! Reads the DCGM CSV on a blocking thread and hands this shard's rows to the publisher.
//!
//! The file is read row by row, so memory stays flat however large the export is. A bounded
//! channel makes the reader wait while the publisher is at its in-flight limit.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

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
/// Opening happens before this returns, so an unreadable file is reported at once. A wrong
/// header is reported by the reader thread's result.
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

    let (sender, rows) = mpsc::channel(READ_AHEAD);
    let path = path.to_owned();
    let reader = tokio::task::spawn_blocking(move || {
        read_rows(file, path, shard_index, shard_count, sender)
    });
    Ok(Source { rows, reader })
}

fn read_rows(
    file: File,
    path: PathBuf,
    shard_index: u32,
    shard_count: u32,
    sender: mpsc::Sender<SourceItem>,
) -> Result<ReadStats> {
    let mut stats = ReadStats::default();
    let reader = DcgmReader::new(BufReader::with_capacity(1 << 16, file));

    for item in reader {
        if let Err(err @ RowError::Header { .. }) = item {
            return Err(Error::NotDcgm { path, source: err });
        }
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
