//! One DCGM sample and its JSON wire encoding.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// One DCGM sample: a metric value of one GPU at one instant.
///
/// The JSON encoding uses these field names in snake case and the timestamp as an RFC 3339
/// string in UTC. Producers publish it, the broker validates it and consumers store it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryRecord {
    /// When DCGM sampled the value.
    #[serde(with = "rfc3339")]
    pub timestamp: DateTime<Utc>,
    /// DCGM field name, for example `DCGM_FI_DEV_GPU_UTIL`.
    pub metric_name: String,
    /// GPU index on its host, as `nvidia-smi` numbers it.
    pub gpu_id: u32,
    /// Device node name, for example `nvidia0`.
    pub device: String,
    /// GPU UUID, for example `GPU-5fd4f087-86f3-7a43-b711-4771313afc50`.
    pub uuid: String,
    /// GPU model, for example `NVIDIA H100 80GB HBM3`.
    pub model_name: String,
    /// Host that carries the GPU.
    pub hostname: String,
    /// Kubernetes container using the GPU, empty when none.
    #[serde(default)]
    pub container: String,
    /// Kubernetes pod using the GPU, empty when none.
    #[serde(default)]
    pub pod: String,
    /// Kubernetes namespace of that pod, empty when none.
    #[serde(default)]
    pub namespace: String,
    /// Sampled value, in the unit of the DCGM field.
    pub value: f64,
    /// Exporter labels of the sample.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Broken invariant of a telemetry record.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidationError {
    #[error("field `{field}` is empty; every record needs a non-empty {field}")]
    Empty { field: &'static str },
    #[error("field `value` is {value}; DCGM values must be finite numbers")]
    NotFinite { value: f64 },
}

impl TelemetryRecord {
    /// Checks the invariants that JSON decoding alone does not enforce.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.uuid.trim().is_empty() {
            return Err(ValidationError::Empty { field: "uuid" });
        }
        if self.metric_name.trim().is_empty() {
            return Err(ValidationError::Empty { field: "metric_name" });
        }
        if !self.value.is_finite() {
            return Err(ValidationError::NotFinite { value: self.value });
        }
        Ok(())
    }

    /// Encodes the record as the JSON message body.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a record with finite value always encodes as JSON")
    }

    /// Decodes a JSON message body and validates it.
    pub fn from_json(body: &[u8]) -> Result<Self, DecodeError> {
        let record: TelemetryRecord = serde_json::from_slice(body)?;
        record.validate()?;
        Ok(record)
    }
}

/// Error from decoding a message body as a telemetry record.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("invalid telemetry JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid telemetry record: {0}")]
    Invalid(#[from] ValidationError),
}

/// Formats a timestamp the way DCGM exports do: UTC, whole seconds, `Z` suffix
/// (`2025-07-18T20:42:34Z`). Sub-second digits are kept only when present.
pub fn format_timestamp(timestamp: &DateTime<Utc>) -> String {
    timestamp.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Parses an RFC 3339 timestamp with any offset into UTC.
pub fn parse_timestamp(text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(text).map(|parsed| parsed.with_timezone(&Utc))
}

mod rfc3339 {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(value: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_timestamp(value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        super::parse_timestamp(&text).map_err(|err| {
            D::Error::custom(format!(
                "timestamp {text:?} is not RFC 3339 ({err}); use a form like 2025-07-18T20:42:34Z"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TelemetryRecord {
        TelemetryRecord {
            timestamp: parse_timestamp("2025-07-18T20:42:34Z").unwrap(),
            metric_name: "DCGM_FI_DEV_GPU_UTIL".into(),
            gpu_id: 0,
            device: "nvidia0".into(),
            uuid: "GPU-5fd4f087-86f3-7a43-b711-4771313afc50".into(),
            model_name: "NVIDIA H100 80GB HBM3".into(),
            hostname: "mtv5-dgx1-hgpu-031".into(),
            container: String::new(),
            pod: String::new(),
            namespace: String::new(),
            value: 42.5,
            labels: BTreeMap::from([("job".into(), "dgx_dcgm_exporter".into())]),
        }
    }

    #[test]
    fn json_round_trip() {
        let record = sample();
        let body = record.to_json();
        let text = String::from_utf8(body.clone()).unwrap();
        assert!(text.contains(r#""timestamp":"2025-07-18T20:42:34Z""#), "{text}");
        assert_eq!(TelemetryRecord::from_json(&body).unwrap(), record);
    }

    #[test]
    fn offset_timestamp_normalised_to_utc() {
        let body = sample().to_json();
        let text = String::from_utf8(body).unwrap().replace("2025-07-18T20:42:34Z", "2025-07-18T22:42:34+02:00");
        let record = TelemetryRecord::from_json(text.as_bytes()).unwrap();
        assert_eq!(format_timestamp(&record.timestamp), "2025-07-18T20:42:34Z");
    }

    #[test]
    fn empty_uuid_rejected() {
        let mut record = sample();
        record.uuid = " ".into();
        assert_eq!(record.validate(), Err(ValidationError::Empty { field: "uuid" }));
    }

    #[test]
    fn empty_metric_name_rejected() {
        let mut record = sample();
        record.metric_name.clear();
        assert_eq!(record.validate(), Err(ValidationError::Empty { field: "metric_name" }));
    }

    #[test]
    fn infinite_value_rejected() {
        let mut record = sample();
        record.value = f64::INFINITY;
        assert!(matches!(record.validate(), Err(ValidationError::NotFinite { .. })));
    }

    #[test]
    fn bad_timestamp_error_names_value() {
        let text = String::from_utf8(sample().to_json()).unwrap().replace("2025-07-18T20:42:34Z", "yesterday");
        let err = TelemetryRecord::from_json(text.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("\"yesterday\""), "{err}");
    }

    #[test]
    fn unknown_field_rejected() {
        let text = String::from_utf8(sample().to_json()).unwrap().replacen('{', r#"{"extra":1,"#, 1);
        assert!(TelemetryRecord::from_json(text.as_bytes()).is_err());
    }

    #[test]
    fn missing_uuid_rejected() {
        let mut value: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
        value.as_object_mut().unwrap().remove("uuid");
        let err = TelemetryRecord::from_json(value.to_string().as_bytes()).unwrap_err().to_string();
        assert!(err.contains("uuid"), "{err}");
    }
}
