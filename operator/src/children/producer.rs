//! The producer CronJob: each run is an Indexed Job whose pods publish disjoint shards.

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, KeyToPath, PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use telemetry_core::contract::{self, env};

use super::{Component, RenderContext, broker, pod};
use crate::crd::ProducerSpec;

/// Pod annotation that the Job controller sets to the completion index of an Indexed Job.
const COMPLETION_INDEX_ANNOTATION: &str =
    "metadata.annotations['batch.kubernetes.io/job-completion-index']";
/// Pod label that the Job controller sets to the Job's name (Kubernetes 1.27 and later).
const JOB_NAME_LABEL: &str = "metadata.labels['batch.kubernetes.io/job-name']";
const DATASET_VOLUME: &str = "dataset";
const DATASET_DIR: &str = "/var/run/telemetry/dataset";

pub fn cron_job(ctx: &RenderContext, spec: &ProducerSpec) -> CronJob {
    let mut container = pod::container(
        ctx,
        Component::Producer,
        contract::images::PRODUCER,
        &spec.pod,
    );
    let (csv_path, dataset_volume) = dataset(spec);
    let mut vars = vec![
        broker::amqp_url_env(ctx),
        pod::env(env::CSV_PATH, csv_path),
        pod::env(env::SHARD_COUNT, spec.parallelism.to_string()),
        pod::env_from_field(env::SHARD_INDEX, COMPLETION_INDEX_ANNOTATION),
        pod::env_from_field(env::RUN_ID, JOB_NAME_LABEL),
    ];
    if let Some(rate) = spec.rate {
        vars.push(pod::env(env::PUBLISH_RATE, rate.to_string()));
    }
    vars.extend(pod::common_env());
    container.env = Some(vars);
    let mut volumes = vec![pod::tmp_volume()];
    if let Some(volume) = dataset_volume {
        if let Some(mounts) = container.volume_mounts.as_mut() {
            mounts.push(VolumeMount {
                name: DATASET_VOLUME.to_owned(),
                mount_path: DATASET_DIR.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            });
        }
        volumes.push(volume);
    }

    let pod_spec = PodSpec {
        containers: vec![container],
        volumes: Some(volumes),
        // A failed pod is replaced by a new one with the same index, and counts against
        // backoffLimit, so a run fails visibly instead of restarting in place forever.
        restart_policy: Some("Never".to_owned()),
        security_context: Some(pod::pod_security(
            pod::WORKLOAD_USER,
            spec.pod.pod_security_context.as_ref(),
        )),
        image_pull_secrets: pod::pull_secrets(ctx),
        ..PodSpec::default()
    };
    let job = JobSpec {
        completion_mode: Some("Indexed".to_owned()),
        completions: Some(spec.parallelism),
        parallelism: Some(spec.parallelism),
        backoff_limit: Some(spec.backoff_limit),
        active_deadline_seconds: spec.active_deadline_seconds,
        template: PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(ctx.labels(Component::Producer)),
                ..ObjectMeta::default()
            }),
            spec: Some(pod_spec),
        },
        ..JobSpec::default()
    };

    CronJob {
        metadata: ctx.metadata(
            Component::Producer,
            Component::Producer.object_name(&ctx.name),
        ),
        spec: Some(CronJobSpec {
            schedule: spec.schedule.clone(),
            concurrency_policy: Some(spec.concurrency_policy.as_str().to_owned()),
            successful_jobs_history_limit: Some(spec.successful_jobs_history_limit),
            failed_jobs_history_limit: Some(spec.failed_jobs_history_limit),
            suspend: Some(spec.suspend),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(ctx.labels(Component::Producer)),
                    ..ObjectMeta::default()
                }),
                spec: Some(job),
            },
            ..CronJobSpec::default()
        }),
        status: None,
    }
}

/// The CSV path the producer reads and the volume that carries it, if not the image.
fn dataset(spec: &ProducerSpec) -> (String, Option<Volume>) {
    if let Some(config_map) = &spec.dataset.config_map {
        let volume = Volume {
            name: DATASET_VOLUME.to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map.name.clone(),
                items: Some(vec![KeyToPath {
                    key: config_map.key.clone(),
                    path: config_map.key.clone(),
                    mode: None,
                }]),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        };
        return (format!("{DATASET_DIR}/{}", config_map.key), Some(volume));
    }
    if let Some(pvc) = &spec.dataset.pvc {
        let volume = Volume {
            name: DATASET_VOLUME.to_owned(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: pvc.claim_name.clone(),
                read_only: Some(true),
            }),
            ..Volume::default()
        };
        return (
            format!("{DATASET_DIR}/{}", pvc.path.trim_start_matches('/')),
            Some(volume),
        );
    }
    (contract::IMAGE_SAMPLE_CSV_PATH.to_owned(), None)
}
