//! The publish loop: read this shard's rows, publish each one with a publisher confirm, keep at
//! most `max_in_flight` unconfirmed, and republish the unconfirmed ones after a reconnect.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use chrono::{SubsecRound, Utc};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use lapin::Confirmation;
use telemetry_core::dcgm::DcgmRow;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::amqp::{Outgoing, Session, message_id, redact_url, stopped};
use crate::config::ProducerConfig;
use crate::error::{Error, Result};
use crate::source::{self, Source, SourceItem};
use crate::summary::{FailureReason, RowFailure, RunSummary};

/// How long a run stopped by a shutdown signal waits for the confirms of rows already published.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

type PendingConfirm = BoxFuture<'static, (u64, lapin::Result<Confirmation>)>;

/// Publishes this shard's rows of `config.csv_path` and returns what happened to them.
///
/// Returns `Err` when the run cannot start (invalid configuration, unreadable file, not a DCGM
/// export, unreachable broker) or when the broker stays unreachable after a connection loss.
/// Bad rows and rejected messages do not stop the run: they are logged as they happen and listed
/// in [`RunSummary::failures`]. When `shutdown` completes, the run stops reading, waits up to
/// 10 s for outstanding confirms and returns a summary with `interrupted` set.
pub async fn run(
    config: ProducerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RunSummary> {
    config.validate()?;
    let source = source::open(&config.csv_path, config.shard_index, config.shard_count)?;
    tracing::info!(
        run_id = %config.run_id,
        csv_path = %config.csv_path.display(),
        shard_index = config.shard_index,
        shard_count = config.shard_count,
        max_in_flight = config.max_in_flight,
        rate = ?config.rate,
        "producer starting"
    );

    let (stop_sender, stop) = watch::channel(false);
    let watcher = tokio::spawn(async move {
        shutdown.await;
        let _ = stop_sender.send(true);
    });
    let result = Publisher::new(&config, stop).execute(source).await;
    watcher.abort();

    if let Ok(summary) = &result {
        tracing::info!(
            run_id = %summary.run_id,
            rows_total = summary.rows_total,
            rows_read = summary.rows_read,
            published = summary.published,
            republished = summary.republished,
            confirmed = summary.confirmed,
            failed = summary.failed(),
            reconnects = summary.reconnects,
            interrupted = summary.interrupted,
            "producer finished"
        );
    }
    result
}

struct Publisher<'a> {
    config: &'a ProducerConfig,
    /// Broker URL without its password.
    url: String,
    session: Option<Session>,
    /// Published rows awaiting a confirm, by line, so they can be republished in file order.
    in_flight: BTreeMap<u64, Outgoing>,
    confirms: FuturesUnordered<PendingConfirm>,
    /// Reconnects since the last confirm; bounds a broker that accepts connections but keeps
    /// closing them.
    reconnects_without_progress: u32,
    stop: watch::Receiver<bool>,
    summary: RunSummary,
}

impl<'a> Publisher<'a> {
    fn new(config: &'a ProducerConfig, stop: watch::Receiver<bool>) -> Self {
        Publisher {
            config,
            url: redact_url(&config.amqp_url),
            session: None,
            in_flight: BTreeMap::new(),
            confirms: FuturesUnordered::new(),
            reconnects_without_progress: 0,
            stop,
            summary: RunSummary {
                run_id: config.run_id.clone(),
                ..RunSummary::default()
            },
        }
    }

    async fn execute(mut self, mut source: Source) -> Result<RunSummary> {
        self.session = Session::connect(self.config, &mut self.stop).await?;
        if self.session.is_none() {
            self.summary.interrupted = true;
            return Ok(self.summary);
        }

        let started = Instant::now();
        let mut next_slot = started;
        let mut progress = tokio::time::interval_at(
            started + self.config.progress_interval,
            self.config.progress_interval,
        );
        let mut stop = self.stop.clone();
        let mut reading = true;

        while reading || !self.in_flight.is_empty() {
            let window_open = reading && self.in_flight.len() < self.config.max_in_flight;
            let paced = Instant::now() >= next_slot;

            tokio::select! {
                biased;

                () = stopped(&mut stop) => {
                    self.summary.interrupted = true;
                    break;
                }
                Some((line, result)) = self.confirms.next(), if !self.confirms.is_empty() => {
                    self.on_confirm(line, result).await?;
                }
                item = source.rows.recv(), if window_open && paced => match item {
                    Some(SourceItem::Row(row)) => {
                        self.summary.rows_read += 1;
                        self.publish_row(row).await?;
                        if let Some(rate) = self.config.rate {
                            next_slot = started + Duration::from_secs_f64(self.summary.published as f64 / rate);
                        }
                    }
                    Some(SourceItem::Invalid(err)) => {
                        self.summary.rows_read += 1;
                        self.record_failure(RowFailure::invalid(&err));
                    }
                    None => reading = false,
                },
                () = tokio::time::sleep_until(next_slot), if window_open && !paced => {}
                _ = progress.tick() => self.log_progress(started),
            }

            if self.session.is_none() {
                // A shutdown signal arrived while reconnecting.
                self.summary.interrupted = true;
                break;
            }
        }

        if self.summary.interrupted {
            self.drain_confirms().await;
        }
        if let Some(session) = self.session.take() {
            session.close().await;
        }

        // Dropping the receiver ends a reader that is still going (after an interruption).
        drop(source.rows);
        let stats = source
            .reader
            .await
            .expect("the CSV reader thread panicked")?;
        self.summary.rows_total = stats.rows_total;
        Ok(self.summary)
    }

    /// Stamps the row with the current time, publishes it and registers its confirm.
    async fn publish_row(&mut self, row: DcgmRow) -> Result<()> {
        let DcgmRow { line, mut record } = row;
        let now = Utc::now().trunc_subsecs(0);
        record.timestamp = now;

        let outgoing = Outgoing {
            message_id: message_id(&self.config.run_id, line),
            routing_key: record.metric_name.clone(),
            timestamp: u64::try_from(now.timestamp()).expect("the clock is after 1970"),
            body: record.to_json(),
        };
        self.in_flight.insert(line, outgoing);
        self.summary.published += 1;
        self.send(line).await
    }

    /// Publishes the in-flight row on `line`, reconnecting (and republishing) on a lost connection.
    async fn send(&mut self, line: u64) -> Result<()> {
        let session = self
            .session
            .as_ref()
            .expect("a session exists while publishing");
        let outgoing = &self.in_flight[&line];
        match session
            .publish(&self.config.exchange, &self.config.app_id, outgoing)
            .await
        {
            Ok(confirm) => {
                self.confirms
                    .push(Box::pin(async move { (line, confirm.await) }));
                Ok(())
            }
            Err(err) => self.recover(err).await,
        }
    }

    async fn on_confirm(&mut self, line: u64, result: lapin::Result<Confirmation>) -> Result<()> {
        let confirmation = match result {
            Ok(confirmation) => confirmation,
            Err(err) => return self.recover(err).await,
        };
        let Some(outgoing) = self.in_flight.remove(&line) else {
            // A confirm from before a reconnect for a row that was confirmed since.
            return Ok(());
        };
        self.reconnects_without_progress = 0;

        let reason = match confirmation {
            Confirmation::Ack(None) => {
                self.summary.confirmed += 1;
                return Ok(());
            }
            Confirmation::Ack(Some(returned)) => FailureReason::Unroutable {
                reply_code: returned.reply_code,
                reply_text: returned.reply_text.to_string(),
            },
            Confirmation::Nack(_) => FailureReason::Nacked,
            Confirmation::NotRequested => unreachable!("the channel is in confirm mode"),
        };
        self.record_failure(RowFailure {
            line,
            message_id: Some(outgoing.message_id),
            reason,
        });
        Ok(())
    }

    /// Reconnects after `cause` ended the session and republishes every unconfirmed row with
    /// its original message id. Leaves `session` empty when a shutdown signal arrives meanwhile.
    async fn recover(&mut self, mut cause: lapin::Error) -> Result<()> {
        loop {
            self.confirms = FuturesUnordered::new();
            self.session = None;
            self.reconnects_without_progress += 1;
            let attempts = self.config.connect_retries.saturating_add(1);
            if self.reconnects_without_progress > attempts {
                return Err(self.connection_lost(attempts, cause));
            }
            tracing::warn!(url = %self.url, cause = %cause, unconfirmed = self.in_flight.len(),
                "lost the broker connection; reconnecting to republish unconfirmed rows");

            self.session = match Session::connect(self.config, &mut self.stop).await {
                Ok(Some(session)) => Some(session),
                Ok(None) => return Ok(()),
                Err(Error::Connect {
                    attempts, source, ..
                }) => return Err(self.connection_lost(attempts, source)),
                Err(other) => return Err(other),
            };
            self.summary.reconnects += 1;

            match self.republish().await {
                Ok(()) => return Ok(()),
                Err(err) => cause = err,
            }
        }
    }

    async fn republish(&mut self) -> lapin::Result<()> {
        let session = self
            .session
            .as_ref()
            .expect("republish runs right after a reconnect");
        for (&line, outgoing) in &self.in_flight {
            let confirm = session
                .publish(&self.config.exchange, &self.config.app_id, outgoing)
                .await?;
            self.confirms
                .push(Box::pin(async move { (line, confirm.await) }));
            self.summary.republished += 1;
        }
        tracing::info!(url = %self.url, republished = self.in_flight.len(), "republished unconfirmed rows");
        Ok(())
    }

    fn connection_lost(&self, attempts: u32, source: lapin::Error) -> Error {
        Error::ConnectionLost {
            url: self.url.clone(),
            attempts,
            confirmed: self.summary.confirmed,
            unconfirmed: self.in_flight.len(),
            source,
        }
    }

    /// Waits up to [`DRAIN_TIMEOUT`] for the confirms of rows already published.
    async fn drain_confirms(&mut self) {
        let deadline = tokio::time::sleep(DRAIN_TIMEOUT);
        tokio::pin!(deadline);
        while !self.confirms.is_empty() {
            tokio::select! {
                Some((line, result)) = self.confirms.next() => {
                    if result.is_err() {
                        break;
                    }
                    // Without a connection loss on_confirm cannot fail.
                    let _ = self.on_confirm(line, result).await;
                }
                () = &mut deadline => break,
            }
        }
        if !self.in_flight.is_empty() {
            tracing::warn!(
                unconfirmed = self.in_flight.len(),
                "stopping with unconfirmed rows; rerun with the same run id"
            );
        }
    }

    fn record_failure(&mut self, failure: RowFailure) {
        tracing::warn!(
            line = failure.line,
            message_id = failure.message_id.as_deref().unwrap_or(""),
            "{failure}"
        );
        self.summary.failures.push(failure);
    }

    fn log_progress(&self, started: Instant) {
        let elapsed = started.elapsed().as_secs_f64();
        let rate = if elapsed > 0.0 {
            self.summary.confirmed as f64 / elapsed
        } else {
            0.0
        };
        tracing::info!(
            rows_read = self.summary.rows_read,
            published = self.summary.published,
            confirmed = self.summary.confirmed,
            failed = self.summary.failed(),
            in_flight = self.in_flight.len(),
            confirmed_per_second = rate.round() as u64,
            "progress"
        );
    }
}
