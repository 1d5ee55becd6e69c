//! `telemetry-operator render`: the children of a pipeline manifest as multi-document YAML.

use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::children::{self, SecretValues};
use crate::crd::TelemetryPipeline;
use crate::{Error, Result};

/// UID given to a manifest that has none, so owner references can be rendered.
const PLACEHOLDER_UID: &str = "00000000-0000-0000-0000-000000000000";

/// Parses a TelemetryPipeline manifest and renders what the reconciler would write for it.
/// A manifest without a namespace is rendered in `default`. Generated Secrets get fresh random
/// values, as the reconciler would give them on first creation.
pub fn render(manifest: &str) -> Result<String> {
    let mut pipeline: TelemetryPipeline = serde_yaml::from_str(manifest).map_err(|err| {
        Error::InvalidSpec(format!(
            "the manifest is not a valid TelemetryPipeline: {err}"
        ))
    })?;
    let expected = TelemetryPipeline::api_version(&());
    let api_version = serde_yaml::from_str::<serde_yaml::Value>(manifest)
        .ok()
        .and_then(|v| {
            v.get("apiVersion")
                .and_then(|a| a.as_str())
                .map(str::to_owned)
        });
    if api_version.as_deref() != Some(expected.as_ref()) {
        return Err(Error::InvalidSpec(format!(
            "apiVersion is {api_version:?}; expected {expected:?}"
        )));
    }
    let meta: &mut ObjectMeta = pipeline.meta_mut();
    meta.namespace.get_or_insert_with(|| "default".to_owned());
    meta.uid.get_or_insert_with(|| PLACEHOLDER_UID.to_owned());
    if pipeline.metadata.name.is_none() {
        return Err(Error::InvalidSpec("metadata.name is missing".to_owned()));
    }

    let children = children::desired(&pipeline, &SecretValues::random())?;
    let mut documents = Vec::new();
    for secret in &children.secrets {
        documents.push(to_yaml(secret, &secret.name_any())?);
    }
    for child in &children.applied {
        documents.push(to_yaml(&child.to_json()?, &child.name())?);
    }
    Ok(documents.join("---\n"))
}

fn to_yaml<T: serde::Serialize>(object: &T, name: &str) -> Result<String> {
    let value = serde_json::to_value(object).map_err(|source| Error::Encode {
        what: name.to_owned(),
        source,
    })?;
    serde_yaml::to_string(&value)
        .map_err(|err| Error::InvalidSpec(format!("failed to encode {name} as YAML: {err}")))
}
