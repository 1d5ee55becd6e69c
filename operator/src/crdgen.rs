//! Prints the TelemetryPipeline CustomResourceDefinition as YAML.
//!
//! `crds/telemetrypipelines.yaml` is this output: `make crds` regenerates it, and a test fails
//! when the two differ.

fn main() -> anyhow::Result<()> {
    print!("{}", telemetry_operator::crd::crd_yaml()?);
    Ok(())
}
