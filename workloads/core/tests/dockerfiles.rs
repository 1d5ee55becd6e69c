//! Checks that the Dockerfiles, the Makefile and the Helm chart agree with `contract`: the ports
//! each image exposes, the sample export in the producer image, and the image names.
//!
//! The files are parsed as text; no Docker engine or Helm is needed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use telemetry_core::contract::{self, images};

/// One container image and what the contract says about it.
struct Image {
    component: &'static str,
    dockerfile: &'static str,
    /// Image name, which is also the Cargo package and binary it runs.
    name: &'static str,
    /// Ports the component serves, so exactly the ports its Dockerfile exposes.
    ports: &'static [u16],
}

const IMAGES: [Image; 5] = [
    Image {
        component: "broker",
        dockerfile: "workloads/broker/Dockerfile",
        name: images::BROKER,
        ports: &[contract::AMQP_PORT, contract::ADMIN_PORT],
    },
    Image {
        component: "producer",
        dockerfile: "workloads/producer/Dockerfile",
        name: images::PRODUCER,
        // A batch job: it serves no admin port.
        ports: &[],
    },
    Image {
        component: "consumer",
        dockerfile: "workloads/consumer/Dockerfile",
        name: images::CONSUMER,
        ports: &[contract::ADMIN_PORT],
    },
    Image {
        component: "metrics",
        dockerfile: "workloads/metrics/Dockerfile",
        name: images::METRICS,
        ports: &[contract::API_PORT, contract::ADMIN_PORT],
    },
    Image {
        component: "operator",
        dockerfile: "operator/Dockerfile",
        name: images::OPERATOR,
        ports: &[contract::ADMIN_PORT],
    },
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(relative: &str) -> String {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("failed to read {}: {err}", path.display()))
}

/// One Dockerfile instruction: the keyword in upper case and its arguments, with continuation
/// lines joined and comments dropped.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    arguments: String,
}

fn instructions(dockerfile: &str) -> Vec<Instruction> {
    let mut parsed = Vec::new();
    let mut pending = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_empty()) {
            continue;
        }
        if let Some(continued) = trimmed.strip_suffix('\\') {
            pending.push_str(continued);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let (keyword, arguments) = pending
            .trim()
            .split_once(char::is_whitespace)
            .unwrap_or((pending.trim(), ""));
        parsed.push(Instruction {
            keyword: keyword.to_ascii_uppercase(),
            arguments: arguments.trim().to_owned(),
        });
        pending.clear();
    }
    parsed
}

/// Instructions of the last build stage, the one that becomes the image.
fn final_stage(dockerfile: &str) -> Vec<Instruction> {
    let all = instructions(dockerfile);
    let start = all
        .iter()
        .rposition(|instruction| instruction.keyword == "FROM")
        .expect("Dockerfile has a FROM");
    all.into_iter().skip(start).collect()
}

fn exposed_ports(dockerfile: &str, path: &str) -> BTreeSet<u16> {
    final_stage(dockerfile)
        .iter()
        .filter(|instruction| instruction.keyword == "EXPOSE")
        .flat_map(|instruction| {
            instruction
                .arguments
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .map(|port| {
            let number = port.strip_suffix("/tcp").unwrap_or(&port);
            number.parse().unwrap_or_else(|err| {
                panic!("{path}: EXPOSE {port} is not a TCP port number: {err}")
            })
        })
        .collect()
}

#[test]
fn exposed_ports_match_contract() {
    for image in &IMAGES {
        let exposed = exposed_ports(&read(image.dockerfile), image.dockerfile);
        let expected: BTreeSet<u16> = image.ports.iter().copied().collect();
        assert_eq!(
            exposed, expected,
            "{} exposes {exposed:?}, but the {} serves {expected:?} (telemetry_core::contract)",
            image.dockerfile, image.component
        );
    }
}

#[test]
fn images_build_their_own_package() {
    for image in &IMAGES {
        let dockerfile = read(image.dockerfile);
        let build = format!(
            "--locked --release --target \"$triple\" -p {name} --bin {name}",
            name = image.name
        );
        assert!(
            dockerfile.contains(&build),
            "{} must build its component with `cargo build {build}`",
            image.dockerfile
        );
        let entrypoint = format!("[\"/usr/local/bin/{}\"]", image.name);
        let stage = final_stage(&dockerfile);
        assert!(
            stage
                .iter()
                .any(|instruction| instruction.keyword == "ENTRYPOINT"
                    && instruction.arguments == entrypoint),
            "{} must end with ENTRYPOINT {entrypoint}",
            image.dockerfile
        );
    }
}

#[test]
fn images_run_as_nonroot_without_healthcheck() {
    for image in &IMAGES {
        let stage = final_stage(&read(image.dockerfile));
        let user: Vec<&str> = stage
            .iter()
            .filter(|i| i.keyword == "USER")
            .map(|i| i.arguments.as_str())
            .collect();
        assert_eq!(
            user,
            ["65532:65532"],
            "{} must run as the distroless nonroot user",
            image.dockerfile
        );
        assert!(
            !stage.iter().any(|i| i.keyword == "HEALTHCHECK"),
            "{} has a HEALTHCHECK; Kubernetes probes check the admin port instead",
            image.dockerfile
        );
        for label in ["source", "revision", "version"] {
            let key = format!("org.opencontainers.image.{label}=");
            assert!(
                stage
                    .iter()
                    .any(|i| i.keyword == "LABEL" && i.arguments.contains(&key)),
                "{} lacks the OCI label {key}",
                image.dockerfile
            );
        }
    }
}

#[test]
fn producer_image_carries_sample_csv() {
    let path = "workloads/producer/Dockerfile";
    let stage = final_stage(&read(path));

    let copy = format!(
        "{} {}",
        contract::SAMPLE_CSV_PATH,
        contract::IMAGE_SAMPLE_CSV_PATH
    );
    assert!(
        stage
            .iter()
            .any(|i| i.keyword == "COPY" && i.arguments == copy),
        "{path} must `COPY {copy}` (contract::SAMPLE_CSV_PATH to contract::IMAGE_SAMPLE_CSV_PATH)"
    );
    let env = format!(
        "{}={}",
        contract::env::CSV_PATH,
        contract::IMAGE_SAMPLE_CSV_PATH
    );
    assert!(
        stage
            .iter()
            .any(|i| i.keyword == "ENV" && i.arguments == env),
        "{path} must set `ENV {env}` so the producer reads the sample by default"
    );
    let sample = repo_root().join(contract::SAMPLE_CSV_PATH);
    assert!(
        sample.is_file(),
        "{} is missing, so the producer image cannot be built",
        sample.display()
    );
}

/// `NAME := value` assignments of the Makefile whose name starts with `prefix`.
fn makefile_variables(makefile: &str, prefix: &str) -> Vec<(String, String)> {
    makefile
        .lines()
        .filter_map(|line| line.split_once(":="))
        .filter_map(|(name, value)| {
            let name = name.trim();
            name.strip_prefix(prefix)
                .map(|component| (component.to_owned(), value.trim().to_owned()))
        })
        .collect()
}

#[test]
fn makefile_image_names_match_contract() {
    let makefile = read("Makefile");
    let names = makefile_variables(&makefile, "IMAGE_");
    let dockerfiles = makefile_variables(&makefile, "DOCKERFILE_");

    for image in &IMAGES {
        let name = names
            .iter()
            .find(|(component, _)| component == image.component)
            .map(|(_, name)| name.as_str());
        assert_eq!(
            name,
            Some(image.name),
            "Makefile IMAGE_{} must equal contract::images",
            image.component
        );
        let dockerfile = dockerfiles
            .iter()
            .find(|(component, _)| component == image.component)
            .map(|(_, path)| path.as_str());
        assert_eq!(
            dockerfile,
            Some(image.dockerfile),
            "Makefile DOCKERFILE_{}",
            image.component
        );
    }
    assert_eq!(
        names.len(),
        IMAGES.len(),
        "Makefile names images this test does not know: {names:?}"
    );

    let registry = makefile
        .lines()
        .find_map(|line| line.strip_prefix("REGISTRY ?="))
        .map(str::trim)
        .expect("Makefile sets REGISTRY ?=");
    assert_eq!(
        registry,
        images::DEFAULT_REGISTRY,
        "Makefile REGISTRY default"
    );
}

/// Value of the top-level `key:` of a YAML file, or of `section.key` when a section is given.
/// Handles the flat layout of values.yaml and Chart.yaml only: a section's keys are indented by
/// two spaces.
fn yaml_value(yaml: &str, section: Option<&str>, key: &str) -> Option<String> {
    let unquote = |value: &str| value.trim().trim_matches('"').to_owned();
    let Some(section) = section else {
        return yaml
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{key}:")).map(unquote));
    };

    yaml.lines()
        .skip_while(|line| line.trim_end() != format!("{section}:"))
        .skip(1)
        .take_while(|line| line.is_empty() || line.starts_with(' ') || line.starts_with('#'))
        .find_map(|line| line.strip_prefix(&format!("  {key}:")).map(unquote))
}

#[test]
fn chart_defaults_match_contract() {
    let values = read("helm/telemetry-operator/values.yaml");
    assert_eq!(
        yaml_value(&values, Some("image"), "registry").as_deref(),
        Some(images::DEFAULT_REGISTRY)
    );
    assert_eq!(
        yaml_value(&values, Some("image"), "repository").as_deref(),
        Some(images::OPERATOR)
    );
    assert_eq!(
        yaml_value(&values, None, "adminPort"),
        Some(contract::ADMIN_PORT.to_string())
    );

    let chart = read("helm/telemetry-operator/Chart.yaml");
    assert_eq!(
        yaml_value(&chart, None, "appVersion").as_deref(),
        Some(images::DEFAULT_TAG),
        "Chart.yaml appVersion must equal the workspace version, the operator's default image tag"
    );
}
