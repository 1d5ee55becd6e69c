//! Generator of synthetic DCGM CSV exports for tests, demos and benchmarks.
//!
//! The output has the header and quoting of a `dcgm-exporter` export and the ten fields such
//! an export of H100 GPUs carries, with values in the ranges those GPUs report. Hosts, UUIDs
//! and the value sequences come from the seed alone, so a seed names one export. Rows are
//! written as they are generated, so the output size does not bound memory.
//!
//! Each sample (one scrape of every GPU) writes one row per field, GPU and host, ordered by
//! field, then host, then GPU, as the exporter does. GPU 0 of host 0 always runs a pod whose
//! labels include a comma and an escaped quote, so every export exercises label parsing.

use std::io::{self, Write};

use chrono::{DateTime, Duration as TimeDelta, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use telemetry_core::dcgm::DCGM_HEADER;
use telemetry_core::format_timestamp;

/// GPU model of every generated GPU.
pub const MODEL_NAME: &str = "NVIDIA H100 80GB HBM3";
/// Driver version label of every generated GPU.
pub const DRIVER_VERSION: &str = "535.129.03";
/// Frame buffer an H100 80GB reports as used plus free, in MiB (the rest is reserved).
const FB_USABLE_MIB: f64 = 81_007.0;
/// Memory clock of an H100 HBM3, in MHz; DCGM reports it constant.
const MEM_CLOCK_MHZ: f64 = 2_619.0;
/// SM clock of an idle H100, in MHz.
const SM_CLOCK_IDLE_MHZ: f64 = 345.0;
/// Boost SM clock of a busy H100, in MHz.
const SM_CLOCK_BOOST_MHZ: f64 = 1_980.0;
/// SM clock of a busy H100 that is holding back for heat, in MHz.
const SM_CLOCK_THROTTLED_MHZ: f64 = 1_965.0;

/// The DCGM fields a `dcgm-exporter` export carries, in its order.
pub const DCGM_FIELDS: [&str; 10] = [
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_MEM_COPY_UTIL",
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_DEC_UTIL",
    "DCGM_FI_DEV_ENC_UTIL",
    "DCGM_FI_DEV_SM_CLOCK",
    "DCGM_FI_DEV_MEM_CLOCK",
];

/// Shape of a generated export.
#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    pub hosts: u32,
    pub gpus_per_host: u32,
    /// Scrapes of every GPU; consecutive samples are `interval` apart.
    pub samples: u32,
    pub seed: u64,
    /// Timestamp of the first sample.
    pub start: DateTime<Utc>,
    pub interval: TimeDelta,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            hosts: 8,
            gpus_per_host: 8,
            samples: 1,
            seed: 1,
            start: DateTime::from_timestamp(1_751_328_000, 0)
                .expect("2025-07-01T00:00:00Z is a valid time"),
            interval: TimeDelta::seconds(10),
        }
    }
}

impl GeneratorConfig {
    /// Number of data rows the export will have.
    pub fn row_count(&self) -> u64 {
        u64::from(self.hosts)
            * u64::from(self.gpus_per_host)
            * u64::from(self.samples)
            * DCGM_FIELDS.len() as u64
    }
}

/// One generated GPU and the state its next sample evolves from.
struct Gpu {
    index: u32,
    uuid: String,
    pod: Option<Pod>,
    /// Load between 0 (idle) and 1 (saturated).
    load: f64,
    busy: bool,
    fb_used_mib: f64,
    temp_c: f64,
}

struct Pod {
    namespace: String,
    name: String,
    container: String,
    /// Extra exporter labels; some values contain commas and quotes.
    labels: Vec<(String, String)>,
}

struct Host {
    name: String,
    gpus: Vec<Gpu>,
}

/// One sample of one GPU: the ten field values in [`DCGM_FIELDS`] order.
type Sample = [f64; 10];

/// Writes a DCGM CSV export to `out` and returns the number of data rows written.
pub fn write_dcgm_csv<W: Write>(config: &GeneratorConfig, out: W) -> io::Result<u64> {
    let mut out = io::BufWriter::with_capacity(1 << 16, out);
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut hosts = make_hosts(config, &mut rng);
    let mut rows = 0;

    writeln!(out, "{}", DCGM_HEADER.join(","))?;
    let mut samples: Vec<Vec<Sample>> = Vec::new();
    for sample_index in 0..config.samples {
        let timestamp = format_timestamp(
            &(config.start + config.interval * i32::try_from(sample_index).unwrap_or(i32::MAX)),
        );
        samples.clear();
        for host in &mut hosts {
            samples.push(
                host.gpus
                    .iter_mut()
                    .map(|gpu| advance(gpu, &mut rng))
                    .collect(),
            );
        }
        for (field_index, field) in DCGM_FIELDS.iter().enumerate() {
            for (host, host_samples) in hosts.iter().zip(&samples) {
                for (gpu, sample) in host.gpus.iter().zip(host_samples) {
                    write_row(&mut out, &timestamp, field, host, gpu, sample[field_index])?;
                    rows += 1;
                }
            }
        }
    }
    out.flush()?;
    Ok(rows)
}

fn make_hosts(config: &GeneratorConfig, rng: &mut ChaCha8Rng) -> Vec<Host> {
    const SITES: [&str; 6] = ["sjc4", "ams2", "nrt1", "iad7", "fra3", "syd2"];
    let site = SITES[rng.random_range(0..SITES.len())];
    let rack: u32 = rng.random_range(10..90);

    (0..config.hosts)
        .map(|host_index| {
            let name = format!("{site}-r{rack}-h100-{:03}", host_index + 1);
            let gpus = (0..config.gpus_per_host)
                .map(|gpu_index| make_gpu(host_index, gpu_index, rng))
                .collect();
            Host { name, gpus }
        })
        .collect()
}

fn make_gpu(host_index: u32, gpu_index: u32, rng: &mut ChaCha8Rng) -> Gpu {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes);
    let uuid = format!(
        "GPU-{}",
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .hyphenated()
    );

    let first = host_index == 0 && gpu_index == 0;
    let pod = (first || rng.random_bool(0.3)).then(|| make_pod(host_index, gpu_index, rng));
    let busy = pod.is_some() || rng.random_bool(0.2);
    Gpu {
        index: gpu_index,
        uuid,
        pod,
        load: if busy {
            rng.random_range(0.4..1.0)
        } else {
            0.0
        },
        busy,
        fb_used_mib: if busy {
            rng.random_range(2_000.0..77_000.0f64).round()
        } else {
            4.0
        },
        temp_c: rng.random_range(26.0..34.0),
    }
}

fn make_pod(host_index: u32, gpu_index: u32, rng: &mut ChaCha8Rng) -> Pod {
    const TEAMS: [&str; 4] = ["vision, speech", "llm-pretrain", "recsys, ads", "research"];
    let job: u32 = rng.random_range(1000..9999);
    let mut labels = vec![(
        "team".to_owned(),
        TEAMS[rng.random_range(0..TEAMS.len())].to_owned(),
    )];
    if host_index == 0 && gpu_index == 0 {
        // Guarantees one comma and one escaped quote in every export.
        labels[0].1 = "vision, speech".to_owned();
        labels.push((
            "maintenance_note".to_owned(),
            r#"drained by "ops", back after RMA"#.to_owned(),
        ));
    }
    Pod {
        namespace: "ml-training".to_owned(),
        name: format!("train-{job}-worker-{gpu_index}"),
        container: "trainer".to_owned(),
        labels,
    }
}

/// Moves the GPU one sample forward and returns its field values.
fn advance(gpu: &mut Gpu, rng: &mut ChaCha8Rng) -> Sample {
    // Idle GPUs without a pod start jobs now and then, and busy ones finish them.
    if gpu.pod.is_none() && rng.random_bool(0.05) {
        gpu.busy = !gpu.busy;
        gpu.load = if gpu.busy {
            rng.random_range(0.4..1.0)
        } else {
            0.0
        };
        gpu.fb_used_mib = if gpu.busy {
            rng.random_range(2_000.0..77_000.0f64).round()
        } else {
            4.0
        };
    }
    if gpu.busy {
        gpu.load = (gpu.load + rng.random_range(-0.08..0.08)).clamp(0.05, 1.0);
    }

    // Temperature follows the load with a lag, between 26 and 80 °C.
    let target_temp = 28.0 + 52.0 * gpu.load;
    gpu.temp_c = (gpu.temp_c + 0.3 * (target_temp - gpu.temp_c) + rng.random_range(-1.0..1.0))
        .clamp(26.0, 80.0);

    let util = if gpu.busy {
        (gpu.load * 100.0 + rng.random_range(-5.0..5.0))
            .clamp(0.0, 100.0)
            .round()
    } else {
        0.0
    };
    let mem_copy = if gpu.busy {
        (util * rng.random_range(0.2..0.8)).round()
    } else {
        0.0
    };
    let power = if gpu.busy {
        70.0 + 620.0 * gpu.load
    } else {
        rng.random_range(66.5..72.0)
    };
    let power = ((power + rng.random_range(-3.0..3.0f64)) * 1000.0).round() / 1000.0;
    let fb_used = gpu.fb_used_mib;
    let fb_free = FB_USABLE_MIB - fb_used;
    // Video engines are idle on training nodes, except for the odd decode job.
    let dec = if gpu.busy && rng.random_bool(0.02) {
        rng.random_range(1.0..30.0f64).round()
    } else {
        0.0
    };
    let sm_clock = match (gpu.busy, gpu.temp_c > 75.0) {
        (false, _) => SM_CLOCK_IDLE_MHZ,
        (true, false) => SM_CLOCK_BOOST_MHZ,
        (true, true) => SM_CLOCK_THROTTLED_MHZ,
    };

    [
        util,
        mem_copy,
        power,
        gpu.temp_c.round(),
        fb_used,
        fb_free,
        dec,
        0.0,
        sm_clock,
        MEM_CLOCK_MHZ,
    ]
}

fn write_row<W: Write>(
    out: &mut W,
    timestamp: &str,
    field: &str,
    host: &Host,
    gpu: &Gpu,
    value: f64,
) -> io::Result<()> {
    let device = format!("nvidia{}", gpu.index);
    let (container, pod, namespace) = match &gpu.pod {
        Some(pod) => (
            pod.container.as_str(),
            pod.name.as_str(),
            pod.namespace.as_str(),
        ),
        None => ("", "", ""),
    };

    let mut labels = vec![
        ("DCGM_FI_DRIVER_VERSION", DRIVER_VERSION.to_owned()),
        ("Hostname", host.name.clone()),
        ("UUID", gpu.uuid.clone()),
        ("__name__", field.to_owned()),
    ];
    if let Some(pod) = &gpu.pod {
        labels.push(("container", pod.container.clone()));
    }
    labels.push(("device", device.clone()));
    labels.push(("gpu", gpu.index.to_string()));
    labels.push(("instance", format!("{}:9400", host.name)));
    labels.push(("job", "dcgm-exporter".to_owned()));
    labels.push(("modelName", MODEL_NAME.to_owned()));
    if let Some(pod) = &gpu.pod {
        labels.push(("namespace", pod.namespace.clone()));
        labels.push(("pod", pod.name.clone()));
        labels.extend(
            pod.labels
                .iter()
                .map(|(key, value)| (key.as_str(), value.clone())),
        );
    }
    let labels_raw = labels
        .iter()
        .map(|(key, value)| format!("{key}=\"{}\"", escape_label_value(value)))
        .collect::<Vec<_>>()
        .join(",");

    let gpu_id = gpu.index.to_string();
    // Rust prints whole floats without a fraction and others in their shortest form, as the
    // exporter does (`0`, `100`, `117.77`).
    let value = value.to_string();
    let fields = [
        timestamp,
        field,
        &gpu_id,
        &device,
        &gpu.uuid,
        MODEL_NAME,
        &host.name,
        container,
        pod,
        namespace,
        &value,
        &labels_raw,
    ];
    for (index, field) in fields.iter().enumerate() {
        if index > 0 {
            out.write_all(b",")?;
        }
        write_quoted(out, field)?;
    }
    out.write_all(b"\n")
}

/// Escapes a label value as the Prometheus text format does: `\` as `\\`, `"` as `\"`, newline as `\n`.
fn escape_label_value(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// Writes `field` as a quoted CSV field, doubling the quotes inside.
fn write_quoted<W: Write>(out: &mut W, field: &str) -> io::Result<()> {
    out.write_all(b"\"")?;
    out.write_all(field.replace('"', "\"\"").as_bytes())?;
    out.write_all(b"\"")
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use telemetry_core::DcgmReader;

    use super::*;

    fn generate(config: &GeneratorConfig) -> Vec<u8> {
        let mut out = Vec::new();
        let rows = write_dcgm_csv(config, &mut out).unwrap();
        assert_eq!(rows, config.row_count());
        out
    }

    fn config(hosts: u32, gpus: u32, samples: u32, seed: u64) -> GeneratorConfig {
        GeneratorConfig {
            hosts,
            gpus_per_host: gpus,
            samples,
            seed,
            ..GeneratorConfig::default()
        }
    }

    #[test]
    fn output_parses_with_expected_counts() {
        let config = config(3, 4, 2, 7);
        let csv = generate(&config);
        let records: Vec<_> = DcgmReader::new(csv.as_slice())
            .map(|row| row.unwrap().record)
            .collect();

        assert_eq!(records.len(), 3 * 4 * 2 * 10);
        let gpus: HashSet<&str> = records.iter().map(|record| record.uuid.as_str()).collect();
        assert_eq!(gpus.len(), 12);
        let hosts: HashSet<&str> = records
            .iter()
            .map(|record| record.hostname.as_str())
            .collect();
        assert_eq!(hosts.len(), 3);
        let fields: HashSet<&str> = records
            .iter()
            .map(|record| record.metric_name.as_str())
            .collect();
        assert_eq!(fields, DCGM_FIELDS.into_iter().collect());
        let timestamps: HashSet<_> = records.iter().map(|record| record.timestamp).collect();
        assert_eq!(timestamps.len(), 2);
    }

    #[test]
    fn tricky_labels_survive_parsing() {
        let csv = generate(&config(1, 1, 1, 3));
        let record = DcgmReader::new(csv.as_slice())
            .next()
            .unwrap()
            .unwrap()
            .record;
        assert_eq!(record.labels["team"], "vision, speech");
        assert_eq!(
            record.labels["maintenance_note"],
            r#"drained by "ops", back after RMA"#
        );
        assert_eq!(record.labels["UUID"], record.uuid);
        assert_eq!(record.labels["gpu"], "0");
        assert!(!record.pod.is_empty());
        assert_eq!(record.labels["pod"], record.pod);

        let text = String::from_utf8(csv).unwrap();
        assert!(
            text.contains(r#"maintenance_note=""drained by \""ops\"", back after RMA"""#),
            "{text}"
        );
    }

    #[test]
    fn values_in_dcgm_ranges() {
        let csv = generate(&config(4, 8, 5, 11));
        for row in DcgmReader::new(csv.as_slice()) {
            let record = row.unwrap().record;
            let value = record.value;
            let range = match record.metric_name.as_str() {
                "DCGM_FI_DEV_GPU_UTIL"
                | "DCGM_FI_DEV_MEM_COPY_UTIL"
                | "DCGM_FI_DEV_DEC_UTIL"
                | "DCGM_FI_DEV_ENC_UTIL" => 0.0..=100.0,
                "DCGM_FI_DEV_POWER_USAGE" => 60.0..=700.0,
                "DCGM_FI_DEV_GPU_TEMP" => 26.0..=80.0,
                "DCGM_FI_DEV_FB_USED" | "DCGM_FI_DEV_FB_FREE" => 0.0..=FB_USABLE_MIB,
                "DCGM_FI_DEV_SM_CLOCK" => SM_CLOCK_IDLE_MHZ..=SM_CLOCK_BOOST_MHZ,
                "DCGM_FI_DEV_MEM_CLOCK" => MEM_CLOCK_MHZ..=MEM_CLOCK_MHZ,
                other => panic!("unexpected field {other}"),
            };
            assert!(range.contains(&value), "{} = {value}", record.metric_name);
        }
    }

    #[test]
    fn same_seed_same_output() {
        assert_eq!(
            generate(&config(2, 2, 3, 42)),
            generate(&config(2, 2, 3, 42))
        );
        assert_ne!(
            generate(&config(2, 2, 3, 42)),
            generate(&config(2, 2, 3, 43))
        );
    }

    #[test]
    fn gpu_uuids_are_well_formed() {
        let csv = generate(&config(2, 8, 1, 5));
        for row in DcgmReader::new(csv.as_slice()) {
            let uuid = row.unwrap().record.uuid;
            let rest = uuid.strip_prefix("GPU-").expect("UUID starts with GPU-");
            assert!(uuid::Uuid::parse_str(rest).is_ok(), "{uuid}");
        }
    }
}
