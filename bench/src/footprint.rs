//! Per-process memory (idle and under load) and release binary sizes.

use std::path::Path;

use crate::process::{ManagedProcess, Memory};
use crate::report::{Table, mebibytes};

/// Memory of one component in one section.
#[derive(Debug, Clone)]
struct Entry {
    component: String,
    section: String,
    /// `VmRSS` after start-up, before any load.
    idle: Option<Memory>,
    /// `VmRSS` and `VmHWM` read right after the load ended; `VmHWM` is the peak under load.
    loaded: Option<Memory>,
}

/// Collects memory readings of the processes the sections start.
#[derive(Debug, Default)]
pub struct Footprint {
    entries: Vec<Entry>,
}

impl Footprint {
    /// Records the idle memory of `process`; call it after start-up and before load.
    pub fn idle(&mut self, process: &ManagedProcess) {
        self.entries.push(Entry {
            component: process.name().to_owned(),
            section: String::new(),
            idle: process.memory(),
            loaded: None,
        });
    }

    /// Records the memory of `process` after the load of `section`.
    pub fn loaded(&mut self, process: &ManagedProcess, section: &str) {
        self.loaded_reading(process.name(), section, process.memory());
    }

    /// Records a reading taken earlier, for a process that exits when its work is done.
    pub fn loaded_reading(&mut self, component: &str, section: &str, memory: Option<Memory>) {
        let open = self.entries.iter_mut().rev().find(|entry| entry.component == component && entry.loaded.is_none());
        match open {
            Some(entry) => {
                entry.loaded = memory;
                entry.section = section.to_owned();
            }
            None => self.entries.push(Entry {
                component: component.to_owned(),
                section: section.to_owned(),
                idle: None,
                loaded: memory,
            }),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn table(&self) -> Table {
        let mut table = Table::new(
            "Footprint: resident memory per process",
            &["process", "load", "idle VmRSS", "VmRSS after load", "peak VmHWM"],
        );
        let cell = |memory: Option<Memory>, pick: fn(Memory) -> u64| memory.map_or("-".into(), |m| mebibytes(pick(m)));
        for entry in &self.entries {
            table.row(vec![
                entry.component.clone(),
                if entry.section.is_empty() { "-".into() } else { entry.section.clone() },
                cell(entry.idle, |m| m.rss_kib),
                cell(entry.loaded, |m| m.rss_kib),
                cell(entry.loaded, |m| m.hwm_kib),
            ]);
        }
        table.note("From /proc/<pid>/status; each component runs as its own process from target/release. RabbitMQ is its Erlang VM (beam.smp), secantusd-py its Python interpreter.");
        table
    }
}

/// Sizes of the workspace's release binaries that exist in `dir`.
pub fn binary_sizes(dir: &Path) -> Table {
    use telemetry_core::contract::images;

    let mut table = Table::new("Release binary sizes", &["binary", "size"]);
    for name in [images::BROKER, images::PRODUCER, images::CONSUMER, images::METRICS, images::OPERATOR] {
        let size = std::fs::metadata(dir.join(name)).map(|meta| meta.len());
        let cell = size.map_or_else(|_| "not built".into(), |bytes| mebibytes(bytes / 1024));
        table.row(vec![name.to_owned(), cell]);
    }
    table.note(format!("Files in {}, as `cargo build --release` leaves them (not stripped).", dir.display()));
    table
}
