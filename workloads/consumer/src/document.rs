//! The MongoDB document of one telemetry message.
//!
//! The document contains the record only, under the record's JSON field names: `timestamp` as a
//! BSON date, `value` as a double, `gpu_id` as an int32, `labels` as a sub-document and the
//! other fields as strings. `_id` is the AMQP message id, so a redelivered message maps to the
//! same document and is stored once.

use mongodb::bson::{self, Document, doc};
use sha2::{Digest, Sha256};
use telemetry_core::TelemetryRecord;

/// Prefix of ids derived from the message body.
pub const BODY_HASH_ID_PREFIX: &str = "sha256:";

/// Error from turning a decoded record into a document.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DocumentError {
    #[error("gpu_id {0} does not fit the int32 the metrics collection stores")]
    GpuIdOutOfRange(u32),
}

/// Returns the document id of a message: its `message-id` property, or `sha256:<hex>` of the
/// body when the property is missing or empty. The flag is true when the id was derived.
pub fn document_id(message_id: Option<&str>, body: &[u8]) -> (String, bool) {
    match message_id {
        Some(id) if !id.trim().is_empty() => (id.to_owned(), false),
        _ => (body_hash_id(body), true),
    }
}

/// Returns `sha256:<hex digest of body>`: the same body always gets the same id.
pub fn body_hash_id(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let mut id = String::with_capacity(BODY_HASH_ID_PREFIX.len() + 64);
    id.push_str(BODY_HASH_ID_PREFIX);
    for byte in digest {
        id.push_str(&format!("{byte:02x}"));
    }
    id
}

/// Builds the document stored for `record` under `id`.
pub fn to_document(id: &str, record: &TelemetryRecord) -> Result<Document, DocumentError> {
    let gpu_id =
        i32::try_from(record.gpu_id).map_err(|_| DocumentError::GpuIdOutOfRange(record.gpu_id))?;
    let labels: Document = record
        .labels
        .iter()
        .map(|(key, value)| (key.clone(), bson::Bson::from(value.as_str())))
        .collect();

    Ok(doc! {
        "_id": id,
        "timestamp": bson::DateTime::from_millis(record.timestamp.timestamp_millis()),
        "metric_name": &record.metric_name,
        "gpu_id": gpu_id,
        "device": &record.device,
        "uuid": &record.uuid,
        "model_name": &record.model_name,
        "hostname": &record.hostname,
        "container": &record.container,
        "pod": &record.pod,
        "namespace": &record.namespace,
        "value": record.value,
        "labels": labels,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use mongodb::bson::Bson;
    use telemetry_core::record::parse_timestamp;

    use super::*;

    fn record() -> TelemetryRecord {
        TelemetryRecord {
            timestamp: parse_timestamp("2025-07-18T20:42:34Z").unwrap(),
            metric_name: "DCGM_FI_DEV_POWER_USAGE".into(),
            gpu_id: 3,
            device: "nvidia3".into(),
            uuid: "GPU-00000000-1111-2222-3333-444444444444".into(),
            model_name: "NVIDIA H100 80GB HBM3".into(),
            hostname: "node-007".into(),
            container: "trainer".into(),
            pod: "train-1-worker-3".into(),
            namespace: "ml".into(),
            value: 117.77,
            labels: BTreeMap::from([
                ("team".into(), "vision, speech".into()),
                ("gpu".into(), "3".into()),
            ]),
        }
    }

    #[test]
    fn document_has_typed_fields() {
        let document = to_document("run:7", &record()).unwrap();
        assert_eq!(document.get_str("_id").unwrap(), "run:7");
        let timestamp = document.get_datetime("timestamp").unwrap();
        assert_eq!(timestamp.timestamp_millis(), 1_752_871_354_000);
        assert_eq!(document.get_f64("value").unwrap(), 117.77);
        assert_eq!(document.get("gpu_id"), Some(&Bson::Int32(3)));
        assert_eq!(
            document.get_str("metric_name").unwrap(),
            "DCGM_FI_DEV_POWER_USAGE"
        );
        assert_eq!(
            document.get_str("uuid").unwrap(),
            "GPU-00000000-1111-2222-3333-444444444444"
        );
        assert_eq!(
            document.get_str("model_name").unwrap(),
            "NVIDIA H100 80GB HBM3"
        );
        assert_eq!(document.get_str("pod").unwrap(), "train-1-worker-3");
    }

    #[test]
    fn labels_nested_document() {
        let document = to_document("run:7", &record()).unwrap();
        let labels = document.get_document("labels").unwrap();
        assert_eq!(labels.get_str("team").unwrap(), "vision, speech");
        assert_eq!(labels.get_str("gpu").unwrap(), "3");
        assert_eq!(labels.len(), 2);
    }

    #[test]
    fn document_has_record_fields_only() {
        let document = to_document("run:7", &record()).unwrap();
        let keys: Vec<&str> = document.keys().map(String::as_str).collect();
        let expected = [
            "_id",
            "timestamp",
            "metric_name",
            "gpu_id",
            "device",
            "uuid",
            "model_name",
            "hostname",
            "container",
            "pod",
            "namespace",
            "value",
            "labels",
        ];
        assert_eq!(keys, expected);
    }

    #[test]
    fn gpu_id_beyond_int32_rejected() {
        let mut record = record();
        record.gpu_id = u32::MAX;
        assert_eq!(
            to_document("x", &record),
            Err(DocumentError::GpuIdOutOfRange(u32::MAX))
        );
    }

    #[test]
    fn message_id_used_as_is() {
        assert_eq!(
            document_id(Some("run-1:42"), b"{}"),
            ("run-1:42".to_owned(), false)
        );
    }

    #[test]
    fn missing_id_derived_from_body() {
        let (id, derived) = document_id(None, b"abc");
        assert!(derived);
        // SHA-256 of "abc" from FIPS 180-2, appendix B.1.
        assert_eq!(
            id,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            document_id(Some("  "), b"abc").0,
            id,
            "a blank id counts as missing"
        );
        assert_ne!(document_id(None, b"abd").0, id);
    }
}
