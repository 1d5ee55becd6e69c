//! The broker section: the built-in broker and a private RabbitMQ node, both started here on
//! loopback, measured in the same run with the same lapin harness.

use std::path::Path;
use std::time::Duration;

use crate::amqp::{self, Case, CaseResult, Paced};
use crate::error::{Error, Result};
use crate::footprint::Footprint;
use crate::rabbitmq::RabbitNode;
use crate::report::{Table, micros, per_second, ratio};
use crate::servers::{Binaries, BuiltinBroker};

/// Counts of one broker run.
#[derive(Debug, Clone, Copy)]
pub struct BrokerCounts {
    /// Messages per case, split evenly over the pairs.
    pub messages: u64,
    pub warmup: u64,
    pub timeout: Duration,
    /// Publish rate of the paced latency phase in messages per second over all pairs, the same
    /// for every system and configuration.
    pub paced_rate: u32,
    /// Messages per case in the paced phase, split evenly over the pairs.
    pub paced_messages: u64,
}

/// The three systems every configuration runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    Builtin,
    Rabbit,
    RabbitDurable,
}

impl System {
    fn label(self) -> &'static str {
        match self {
            System::Builtin => "built-in (in memory)",
            System::Rabbit => "RabbitMQ transient",
            System::RabbitDurable => "RabbitMQ durable+persistent",
        }
    }
}

/// Runs every configuration on every system and returns the throughput table and the paced
/// latency table.
pub async fn run(
    binaries: &Binaries,
    rabbit_script: &Path,
    work_dir: &Path,
    body: &[u8],
    counts: BrokerCounts,
    footprint: &mut Footprint,
) -> Result<Vec<Table>> {
    let mut table = Table::new(
        "Broker: 1 KiB telemetry messages, publisher confirms, manual acks",
        &["pairs", "prefetch", "system", "msgs/s", "p50", "p99", "built-in / RabbitMQ msgs/s"],
    );
    let mut paced_table = Table::new(
        &format!(
            "Broker: publish-to-delivery latency at a paced {} msgs/s",
            crate::report::group_thousands(u64::from(counts.paced_rate))
        ),
        &["pairs", "prefetch", "system", "delivered msgs/s", "p50", "p99", "max", "built-in / RabbitMQ p99"],
    );
    // A broken built-in broker still leaves the RabbitMQ rows worth having.
    let builtin = match BuiltinBroker::start(binaries, work_dir).await {
        Ok(builtin) => Some(builtin),
        Err(err) => {
            tracing::error!(cause = %err, "built-in broker did not start");
            table.note(format!("The built-in broker did not start: {err}"));
            None
        }
    };
    let rabbit = RabbitNode::start(rabbit_script, &work_dir.join("rabbitmq")).await?;
    if let Some(builtin) = &builtin {
        footprint.idle(&builtin.process);
    }
    footprint.idle(&rabbit.process);

    let mut run_index = 0;
    for pairs in [1usize, 4] {
        for prefetch in [100u16, 1000] {
            let mut builtin_rate = None;
            let mut builtin_p99 = None;
            for system in [System::Builtin, System::Rabbit, System::RabbitDurable] {
                run_index += 1;
                let case = Case {
                    pairs,
                    prefetch,
                    durable: system == System::RabbitDurable,
                    messages_per_pair: (counts.messages / pairs as u64).max(1),
                    warmup_per_pair: (counts.warmup / pairs as u64).max(1),
                    timeout: counts.timeout,
                    paced: Some(Paced {
                        total_rate: counts.paced_rate,
                        messages_per_pair: (counts.paced_messages / pairs as u64).max(1),
                    }),
                };
                let url = match (system, &builtin) {
                    (System::Builtin, Some(builtin)) => Some(builtin.amqp_url.as_str()),
                    (System::Builtin, None) => None,
                    _ => Some(rabbit.amqp_url.as_str()),
                };
                tracing::info!(pairs, prefetch, system = system.label(), "broker case");
                let outcome = match url {
                    Some(url) => amqp::run_case(url, &case, body, &format!("{run_index}")).await,
                    None => Err(Error::Check("the built-in broker is not running".into())),
                };
                let cells = match &outcome {
                    Ok(result) => result_cells(result),
                    Err(err) => {
                        tracing::error!(pairs, prefetch, system = system.label(), cause = %err, "case failed");
                        table.note(format!("{} / {pairs} pairs / prefetch {prefetch} failed: {err}", system.label()));
                        vec!["failed".into(), "-".into(), "-".into()]
                    }
                };
                let rate = outcome.as_ref().ok().map(|result| result.messages_per_second);
                if system == System::Builtin {
                    builtin_rate = rate;
                }
                let comparison = match (system, builtin_rate, rate) {
                    (System::Builtin, _, _) => String::new(),
                    (_, Some(builtin), Some(other)) => ratio(builtin, other),
                    _ => "n/a".into(),
                };
                let mut row = vec![pairs.to_string(), prefetch.to_string(), system.label().into()];
                row.extend(cells);
                row.push(comparison);
                table.row(row);

                let paced = outcome.as_ref().ok().and_then(|result| result.paced.as_ref());
                let p99 = paced.map(|paced| paced.latency.p99_us);
                if system == System::Builtin {
                    builtin_p99 = p99;
                }
                let mut row = vec![pairs.to_string(), prefetch.to_string(), system.label().into()];
                match paced {
                    Some(paced) => row.extend([
                        per_second(paced.achieved_rate),
                        micros(paced.latency.p50_us),
                        micros(paced.latency.p99_us),
                        micros(paced.latency.max_us),
                    ]),
                    None => row.extend(["failed".into(), "-".into(), "-".into(), "-".into()]),
                }
                row.push(match (system, builtin_p99, p99) {
                    (System::Builtin, _, _) => String::new(),
                    (_, Some(builtin), Some(other)) => ratio(builtin, other),
                    _ => "n/a".into(),
                });
                paced_table.row(row);
            }
        }
    }

    if let Some(builtin) = &builtin {
        footprint.loaded(&builtin.process, "broker section");
    }
    footprint.loaded(&rabbit.process, "broker section");
    table.note(format!(
        "{} messages per case split over the pairs, after {} warm-up messages; each pair has its own queue and two connections.",
        counts.messages, counts.warmup
    ));
    table.note("Latency: publish call to delivery in the consumer, one monotonic clock in the harness process.");
    table.note("The built-in broker keeps queues in memory only and has no durable variant; its ratio against the durable RabbitMQ row is for reference, not like for like.");
    table.note("At full speed a backlog builds in the queue, so these p50/p99 are mostly its age; the paced table below measures latency without it.");

    paced_table.note(format!(
        "Run on the same connections right after each throughput case, queues empty: {} messages per case at {} msgs/s in total, split evenly over the pairs, the same rate for every system.",
        counts.paced_messages,
        crate::report::group_thousands(u64::from(counts.paced_rate))
    ));
    paced_table.note("Each publisher wakes every 1 ms and sends the messages its schedule has made due, at most 8 at once when it fell behind; the send time is taken at the publish call, not at the tick.");
    paced_table.note("delivered msgs/s is the rate the consumers saw over the phase; it should be the paced rate on every row, or the broker did not keep up.");
    paced_table.note("A ratio below 1 means the built-in broker's p99 was lower than RabbitMQ's.");
    Ok(vec![table, paced_table])
}

fn result_cells(result: &CaseResult) -> Vec<String> {
    vec![per_second(result.messages_per_second), micros(result.latency.p50_us), micros(result.latency.p99_us)]
}
