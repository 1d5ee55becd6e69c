//! What a producer run did: counts, and every row that was not delivered.

use std::fmt;

use telemetry_core::RowError;

/// Outcome of one producer run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSummary {
    /// Run id that prefixes every message id of this run.
    pub run_id: String,
    /// Data rows in the file, every shard's included (fewer when the run was interrupted).
    pub rows_total: u64,
    /// Rows of this shard that were read, valid or not.
    pub rows_read: u64,
    /// Rows published at least once.
    pub published: u64,
    /// Publishes repeated after a connection loss, with the same message id.
    pub republished: u64,
    /// Rows the broker confirmed with `basic.ack`.
    pub confirmed: u64,
    /// Connections re-established after a loss.
    pub reconnects: u32,
    /// Every row of this shard that was not delivered, in the order the failures happened.
    pub failures: Vec<RowFailure>,
    /// True when a shutdown signal stopped the run before the end of the file.
    pub interrupted: bool,
}

impl RunSummary {
    /// Number of rows that were not delivered.
    pub fn failed(&self) -> usize {
        self.failures.len()
    }

    /// Returns true when every row of this shard was read to the end and confirmed.
    pub fn is_complete(&self) -> bool {
        !self.interrupted && self.failures.is_empty() && self.confirmed == self.rows_read
    }
}

impl fmt::Display for RunSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "run {}: {} rows read, {} published, {} confirmed, {} failed",
            self.run_id,
            self.rows_read,
            self.published,
            self.confirmed,
            self.failed()
        )?;
        if self.interrupted {
            write!(f, ", interrupted by shutdown")?;
        }
        Ok(())
    }
}

/// A row of this shard that was not delivered.
#[derive(Debug, Clone, PartialEq)]
pub struct RowFailure {
    /// Line in the CSV where the row starts, counting the header as line 1.
    pub line: u64,
    /// Message id the row was published with; `None` when it was never published.
    pub message_id: Option<String>,
    pub reason: FailureReason,
}

/// Reason a row was not delivered.
#[derive(Debug, Clone, PartialEq)]
pub enum FailureReason {
    /// The row is not valid DCGM telemetry and was not published.
    InvalidRow {
        /// Column that contains the bad value, when the error concerns one column.
        column: Option<String>,
        /// The bad value, when the error concerns one column.
        value: Option<String>,
        /// Full message naming line, column, value and the fix.
        message: String,
    },
    /// The broker rejected the publish with `basic.nack`, as it does for invalid telemetry.
    Nacked,
    /// The broker returned the message because no queue is bound for its routing key.
    Unroutable { reply_code: u16, reply_text: String },
}

impl RowFailure {
    pub(crate) fn invalid(error: &RowError) -> Self {
        let (column, value) = match error {
            RowError::InvalidField { column, value, .. } => {
                (Some((*column).to_owned()), Some(value.clone()))
            }
            _ => (None, None),
        };
        RowFailure {
            line: error.line(),
            message_id: None,
            reason: FailureReason::InvalidRow {
                column,
                value,
                message: error.to_string(),
            },
        }
    }
}

impl fmt::Display for RowFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            FailureReason::InvalidRow { message, .. } => {
                write!(f, "invalid row, not published: {message}")
            }
            FailureReason::Nacked => write!(
                f,
                "line {}: broker rejected message {} (basic.nack); the broker's log or its invalid-telemetry queue says why",
                self.line,
                self.message_id.as_deref().unwrap_or("-")
            ),
            FailureReason::Unroutable {
                reply_code,
                reply_text,
            } => write!(
                f,
                "line {}: broker returned message {} ({reply_code} {reply_text}); no queue is bound \
                 for its metric, so start the consumers before the producer",
                self.line,
                self.message_id.as_deref().unwrap_or("-")
            ),
        }
    }
}
