//! The machine and software versions a run measured, for the report.

use std::path::Path;
use std::process::Command;

use crate::report::Table;
use crate::servers::MongoServerKind;

/// Describes cores, memory, CPU model, kernel and the versions of everything measured.
pub fn describe(mongo: &MongoServerKind, quick: bool, csv_path: &Path) -> Table {
    let mut table = Table::new("Machine and versions", &["item", "value"]);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| text.lines().find_map(|line| line.strip_prefix("MemTotal:")).map(str::to_owned))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or("unknown".into(), |kib| format!("{:.1} GiB", kib as f64 / 1_048_576.0));

    let rows = [
        ("CPU", cpu_model),
        ("cores available", cores.to_string()),
        ("memory", memory),
        ("kernel", command_output("uname", &["-r"])),
        ("rustc", command_output("rustc", &["--version"])),
        ("RabbitMQ", crate::rabbitmq::installed_version().unwrap_or_else(|| "not installed".into())),
        ("Erlang/OTP", erlang_release()),
        ("MongoDB-wire server", mongo.description.clone()),
        ("wrk", command_output("wrk", &["--version"]).lines().next().unwrap_or_default().to_owned()),
        ("mode", if quick { "--quick (smoke counts)".into() } else { "full".into() }),
        ("DCGM export", csv_path.display().to_string()),
    ];
    for (item, value) in rows {
        table.row(vec![item.to_owned(), value]);
    }
    table
}

fn command_output(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        // wrk prints its version to stdout with exit status 1.
        Ok(output) => {
            let text = if output.stdout.is_empty() { output.stderr } else { output.stdout };
            String::from_utf8_lossy(&text).trim().to_owned()
        }
        Err(_) => "not installed".into(),
    }
}

fn erlang_release() -> String {
    command_output("erl", &["-noshell", "-eval", "io:format(\"~s\", [erlang:system_info(otp_release)]), halt()."])
}
