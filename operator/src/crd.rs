//! The `TelemetryPipeline` custom resource (`gputelemetry.io/v1alpha1`).
//!
//! Doc comments on the spec fields become the `kubectl explain` text. Ranges and enums are
//! OpenAPI schema validation; rules that relate two fields are CEL rules
//! (`x-kubernetes-validations`) that the API server evaluates on every write.

use k8s_openapi::api::core::v1::{PodSecurityContext, ResourceRequirements, SecurityContext};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use telemetry_core::contract;

/// Upper bound of every replica count and autoscaler in a pipeline. Ten pods of one component
/// are far more than one DCGM export stream needs, and the cap keeps a typo from scheduling
/// hundreds of pods.
pub const MAX_REPLICAS: i32 = 10;

/// Desired state of one telemetry pipeline: a DCGM CSV producer on a schedule, an AMQP broker,
/// consumers that write to MongoDB and the REST API that reads from it.
// Clippy reads the repeated `type_` of the printcolumn attributes as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "gputelemetry.io",
    version = "v1alpha1",
    kind = "TelemetryPipeline",
    plural = "telemetrypipelines",
    shortname = "tp",
    namespaced,
    status = "TelemetryPipelineStatus",
    derive = "PartialEq",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Consumers",
        type_ = "string",
        json_path = ".status.consumers",
        description = "ready/desired consumer pods"
    ),
    printcolumn(name = "API", type_ = "string", json_path = ".status.endpoints.apiUrl"),
    printcolumn(
        name = "Last Run",
        type_ = "date",
        json_path = ".status.producer.lastScheduleTime"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct TelemetryPipelineSpec {
    /// Registry, tag and pull settings shared by the pipeline's images.
    #[serde(default)]
    pub images: ImagesSpec,
    /// The AMQP broker: the built-in one run by the operator, or an external one.
    #[serde(default)]
    pub broker: BrokerSpec,
    /// The CronJob that publishes the DCGM export to the broker.
    #[serde(default)]
    pub producer: ProducerSpec,
    /// The Deployment that consumes telemetry and writes it to MongoDB.
    #[serde(default)]
    pub consumer: ConsumerSpec,
    /// The REST API that serves the stored telemetry.
    #[serde(default)]
    pub metrics: MetricsSpec,
    /// The MongoDB database: a managed StatefulSet or an external deployment.
    #[serde(default)]
    pub mongodb: MongoDbSpec,
}

/// Image registry, tag and pull settings of the pipeline.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImagesSpec {
    /// Registry and path prefix; each image is `<registry>/<component image>:<tag>`.
    #[serde(default = "default_registry")]
    pub registry: String,
    /// Image tag of every component; defaults to the operator's release version.
    #[serde(default = "default_tag")]
    pub tag: String,
    /// Image pull policy of every container.
    #[serde(default)]
    pub pull_policy: PullPolicy,
    /// Names of Secrets of type kubernetes.io/dockerconfigjson used to pull the images.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pull_secrets: Vec<String>,
}

impl Default for ImagesSpec {
    fn default() -> Self {
        Self {
            registry: default_registry(),
            tag: default_tag(),
            pull_policy: PullPolicy::default(),
            pull_secrets: Vec::new(),
        }
    }
}

fn default_registry() -> String {
    contract::images::DEFAULT_REGISTRY.to_owned()
}

fn default_tag() -> String {
    contract::images::DEFAULT_TAG.to_owned()
}

/// Kubernetes image pull policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// Settings every workload pod accepts: image, resources, security contexts and probe tuning.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// Full image reference that replaces `<registry>/<component image>:<tag>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// CPU and memory requests and limits of the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Container security context, merged over the restricted-profile defaults
    /// (runAsNonRoot, readOnlyRootFilesystem, no privilege escalation, all capabilities dropped,
    /// RuntimeDefault seccomp profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
    /// Pod security context, merged over the defaults (runAsNonRoot, RuntimeDefault seccomp).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security_context: Option<PodSecurityContext>,
    /// Liveness probe timing.
    #[serde(default)]
    pub liveness_probe: ProbeTuning,
    /// Readiness probe timing.
    #[serde(default)]
    pub readiness_probe: ProbeTuning,
}

/// Probe timing; the probe paths and ports are fixed by the workloads.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeTuning {
    /// Seconds after the container starts before the first probe.
    #[serde(default)]
    #[schemars(range(min = 0, max = 3600))]
    pub initial_delay_seconds: i32,
    /// Seconds between probes.
    #[serde(default = "default_probe_period")]
    #[schemars(range(min = 1, max = 3600))]
    pub period_seconds: i32,
    /// Seconds after which one probe counts as failed.
    #[serde(default = "default_probe_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: i32,
    /// Consecutive failures before the container is restarted (liveness) or taken out of its
    /// Service (readiness).
    #[serde(default = "default_probe_failures")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_threshold: i32,
}

impl Default for ProbeTuning {
    fn default() -> Self {
        Self {
            initial_delay_seconds: 0,
            period_seconds: default_probe_period(),
            timeout_seconds: default_probe_timeout(),
            failure_threshold: default_probe_failures(),
        }
    }
}

fn default_probe_period() -> i32 {
    10
}

fn default_probe_timeout() -> i32 {
    2
}

fn default_probe_failures() -> i32 {
    3
}

/// The AMQP broker. Exactly one of `builtIn` and `external` is set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.builtIn) != has(self.external)")
    .message("set exactly one of broker.builtIn and broker.external"))]
pub struct BrokerSpec {
    /// Runs the telemetry broker as a Deployment and Service owned by the pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub built_in: Option<BuiltInBroker>,
    /// Uses an existing AMQP 0-9-1 broker, such as a RabbitMQ cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalBroker>,
}

impl Default for BrokerSpec {
    fn default() -> Self {
        Self {
            built_in: Some(BuiltInBroker::default()),
            external: None,
        }
    }
}

/// The built-in broker.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BuiltInBroker {
    /// AMQP listener port of the broker container and its Service.
    #[serde(default = "default_amqp_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Bytes of message bodies the broker holds in memory before it blocks publishers
    /// (default 536870912, 512 MiB). Keep it well below the container memory limit.
    #[serde(default = "default_memory_high_watermark")]
    #[schemars(range(min = 1048576))]
    pub memory_high_watermark: i64,
    /// Volume for the broker's data; without it the broker keeps its queues in an emptyDir.
    #[serde(default)]
    pub persistence: Persistence,
    /// Image, resources, security contexts and probes of the broker pod.
    #[serde(flatten)]
    pub pod: PodOverrides,
}

impl Default for BuiltInBroker {
    fn default() -> Self {
        Self {
            port: default_amqp_port(),
            memory_high_watermark: default_memory_high_watermark(),
            persistence: Persistence::default(),
            pod: PodOverrides::default(),
        }
    }
}

fn default_amqp_port() -> i32 {
    i32::from(contract::AMQP_PORT)
}

fn default_memory_high_watermark() -> i64 {
    512 * 1024 * 1024
}

/// A PersistentVolumeClaim request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Persistence {
    /// Whether to claim a volume.
    #[serde(default)]
    pub enabled: bool,
    /// Requested storage, as a Kubernetes quantity.
    #[serde(default = "default_broker_storage")]
    pub size: String,
    /// StorageClass of the claim; the cluster's default class when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

impl Default for Persistence {
    fn default() -> Self {
        Self {
            enabled: false,
            size: default_broker_storage(),
            storage_class_name: None,
        }
    }
}

fn default_broker_storage() -> String {
    "1Gi".to_owned()
}

/// An existing AMQP broker.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalBroker {
    /// Secret key whose value is the AMQP URI (`amqp://user:password@host:5672/vhost`).
    pub secret_ref: SecretKeyRef,
}

/// A key of a Secret in the pipeline's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// The producer CronJob. Each run is an Indexed Job of `parallelism` pods; pod `i` publishes
/// the rows of shard `i` of `parallelism`, so shards never overlap.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProducerSpec {
    /// Cron schedule of the runs, in the CronJob syntax (five fields, controller time zone).
    #[serde(default = "default_schedule")]
    #[schemars(length(min = 9, max = 100))]
    pub schedule: String,
    /// Pods per run, each publishing one shard of the dataset.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 10))]
    pub parallelism: i32,
    /// Policy for a run that is due while the previous one still runs.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// Finished successful Jobs kept for inspection.
    #[serde(default = "default_successful_history")]
    #[schemars(range(min = 0, max = 100))]
    pub successful_jobs_history_limit: i32,
    /// Finished failed Jobs kept for inspection.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 100))]
    pub failed_jobs_history_limit: i32,
    /// Suspends future runs; a run already started goes on.
    #[serde(default)]
    pub suspend: bool,
    /// The DCGM CSV export to publish.
    #[serde(default)]
    pub dataset: DatasetSource,
    /// Rows per second each pod publishes; unlimited when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub rate: Option<u32>,
    /// Pod failures a run may have before it fails.
    #[serde(default = "default_backoff_limit")]
    #[schemars(range(min = 0, max = 100))]
    pub backoff_limit: i32,
    /// Seconds a run may take before it is stopped; unlimited when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub active_deadline_seconds: Option<i64>,
    /// Image, resources, security contexts and probes of the producer pods.
    #[serde(flatten)]
    pub pod: PodOverrides,
}

impl Default for ProducerSpec {
    fn default() -> Self {
        Self {
            schedule: default_schedule(),
            parallelism: 1,
            concurrency_policy: ConcurrencyPolicy::default(),
            successful_jobs_history_limit: default_successful_history(),
            failed_jobs_history_limit: 1,
            suspend: false,
            dataset: DatasetSource::default(),
            rate: None,
            backoff_limit: default_backoff_limit(),
            active_deadline_seconds: None,
            pod: PodOverrides::default(),
        }
    }
}

fn default_schedule() -> String {
    "*/15 * * * *".to_owned()
}

fn one() -> i32 {
    1
}

fn default_successful_history() -> i32 {
    3
}

fn default_backoff_limit() -> i32 {
    3
}

/// CronJob concurrency policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ConcurrencyPolicy {
    Allow,
    #[default]
    Forbid,
    Replace,
}

impl ConcurrencyPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "Allow",
            Self::Forbid => "Forbid",
            Self::Replace => "Replace",
        }
    }
}

/// Source of the DCGM CSV export. With neither `configMap` nor `pvc` set it
/// reads the sample export carried in the producer image.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.configMap) && has(self.pvc))")
    .message("set at most one of dataset.configMap and dataset.pvc"))]
pub struct DatasetSource {
    /// A ConfigMap key holding the CSV export (exports up to about 1 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapDataset>,
    /// A file on a PersistentVolumeClaim, mounted read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<PvcDataset>,
}

/// A CSV export stored in a ConfigMap.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapDataset {
    /// Name of the ConfigMap.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key of the CSV file in the ConfigMap.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A CSV export stored on a PersistentVolumeClaim.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PvcDataset {
    /// Name of the claim in the pipeline's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub claim_name: String,
    /// Path of the CSV file relative to the volume root.
    #[schemars(length(min = 1, max = 4096))]
    pub path: String,
}

/// The consumer Deployment.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerSpec {
    /// Pods when autoscaling is off.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 10))]
    pub replicas: i32,
    /// `shared`: the consumers share one durable queue and each record is stored once.
    /// `broadcast`: each consumer binds its own queue and receives every record.
    #[serde(default)]
    pub mode: ConsumerMode,
    /// AMQP prefetch count (unacknowledged deliveries per consumer).
    #[serde(default = "default_prefetch")]
    #[schemars(range(min = 1, max = 65535))]
    pub prefetch: i32,
    /// Records per MongoDB insert.
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1, max = 10000))]
    pub batch_size: i32,
    /// HorizontalPodAutoscaler settings.
    #[serde(default)]
    pub autoscaling: AutoscalingSpec,
    /// Image, resources, security contexts and probes of the consumer pods.
    #[serde(flatten)]
    pub pod: PodOverrides,
}

impl Default for ConsumerSpec {
    fn default() -> Self {
        Self {
            replicas: default_replicas(),
            mode: ConsumerMode::default(),
            prefetch: default_prefetch(),
            batch_size: default_batch_size(),
            autoscaling: AutoscalingSpec::default(),
            pod: PodOverrides::default(),
        }
    }
}

fn default_replicas() -> i32 {
    2
}

fn default_prefetch() -> i32 {
    200
}

fn default_batch_size() -> i32 {
    500
}

/// Delivery mode of the telemetry stream to the consumers.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConsumerMode {
    #[default]
    Shared,
    Broadcast,
}

impl ConsumerMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shared => "shared",
            Self::Broadcast => "broadcast",
        }
    }
}

/// HorizontalPodAutoscaler (autoscaling/v2) settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas")
    .message("autoscaling.minReplicas must not exceed autoscaling.maxReplicas"))]
pub struct AutoscalingSpec {
    /// Creates the HorizontalPodAutoscaler; `replicas` is then only the starting size.
    #[serde(default)]
    pub enabled: bool,
    /// Lower bound of the replica count.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 10))]
    pub min_replicas: i32,
    /// Upper bound of the replica count (at most 10).
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1, max = 10))]
    pub max_replicas: i32,
    /// Average CPU utilization to keep, in percent of the CPU request.
    #[serde(
        rename = "targetCPUUtilizationPercentage",
        default = "default_cpu_target",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: Option<i32>,
    /// Average memory utilization to keep, in percent of the memory request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub target_memory_utilization_percentage: Option<i32>,
    /// An additional metric served by a metrics adapter, such as the broker's queue depth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_metric: Option<CustomMetric>,
}

impl Default for AutoscalingSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            min_replicas: 1,
            max_replicas: default_max_replicas(),
            target_cpu_utilization_percentage: default_cpu_target(),
            target_memory_utilization_percentage: None,
            custom_metric: None,
        }
    }
}

fn default_max_replicas() -> i32 {
    MAX_REPLICAS
}

fn default_cpu_target() -> Option<i32> {
    Some(80)
}

/// A Pods or External metric target of the HorizontalPodAutoscaler.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomMetric {
    /// `Pods`: a per-pod metric from the custom metrics API. `External`: a metric of something
    /// outside the cluster objects, such as a queue depth, from the external metrics API.
    #[serde(default, rename = "type")]
    pub type_: CustomMetricType,
    /// Metric name as the metrics adapter serves it.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Target average value per pod, as a Kubernetes quantity (for example `500`).
    pub target_average_value: String,
}

/// Source API of a custom autoscaling metric.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum CustomMetricType {
    Pods,
    #[default]
    External,
}

/// The REST API Deployment and Service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.pageSizeDefault <= self.pageSizeMax")
    .message("metrics.pageSizeDefault must not exceed metrics.pageSizeMax"))]
pub struct MetricsSpec {
    /// Runs the API; when false its Deployment, Service and autoscaler are deleted.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Pods when autoscaling is off.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 10))]
    pub replicas: i32,
    /// HorizontalPodAutoscaler settings.
    #[serde(default)]
    pub autoscaling: AutoscalingSpec,
    /// The Service in front of the API.
    #[serde(default)]
    pub service: ApiServiceSpec,
    /// Page size of list responses when the request names none.
    #[serde(default = "default_page_size")]
    #[schemars(range(min = 1, max = 10000))]
    pub page_size_default: i32,
    /// Largest page size a request may ask for.
    #[serde(default = "default_page_size_max")]
    #[schemars(range(min = 1, max = 10000))]
    pub page_size_max: i32,
    /// Secret key holding the API tokens file (one bearer token per line). The operator
    /// generates a Secret with one random token when this is unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret_ref: Option<SecretKeyRef>,
    /// Image, resources, security contexts and probes of the API pods.
    #[serde(flatten)]
    pub pod: PodOverrides,
}

impl Default for MetricsSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            replicas: default_replicas(),
            autoscaling: AutoscalingSpec::default(),
            service: ApiServiceSpec::default(),
            page_size_default: default_page_size(),
            page_size_max: default_page_size_max(),
            auth_secret_ref: None,
            pod: PodOverrides::default(),
        }
    }
}

fn yes() -> bool {
    true
}

fn default_page_size() -> i32 {
    100
}

fn default_page_size_max() -> i32 {
    1000
}

/// The API's Service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiServiceSpec {
    /// Service type.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Service port; the pods always listen on the API port of the workload.
    #[serde(default = "default_api_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

impl Default for ApiServiceSpec {
    fn default() -> Self {
        Self {
            type_: ServiceType::default(),
            port: default_api_port(),
        }
    }
}

fn default_api_port() -> i32 {
    i32::from(contract::API_PORT)
}

/// Kubernetes Service type.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIP => "ClusterIP",
            Self::NodePort => "NodePort",
            Self::LoadBalancer => "LoadBalancer",
        }
    }
}

/// MongoDB. Exactly one of `managed` and `external` is set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.managed) != has(self.external)")
    .message("set exactly one of mongodb.managed and mongodb.external"))]
pub struct MongoDbSpec {
    /// Runs a single-member MongoDB StatefulSet with a PersistentVolumeClaim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedMongoDb>,
    /// Uses an existing MongoDB deployment, such as a replica set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalMongoDb>,
    /// Database that contains the metrics collection.
    #[serde(default = "default_database")]
    #[schemars(length(min = 1, max = 63))]
    pub database: String,
}

impl Default for MongoDbSpec {
    fn default() -> Self {
        Self {
            managed: Some(ManagedMongoDb::default()),
            external: None,
            database: default_database(),
        }
    }
}

fn default_database() -> String {
    contract::DEFAULT_DATABASE.to_owned()
}

/// The managed MongoDB StatefulSet.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedMongoDb {
    /// MongoDB server image.
    #[serde(default = "default_mongo_image")]
    pub image: String,
    /// Size of the data volume claim, as a Kubernetes quantity.
    #[serde(default = "default_mongo_storage")]
    pub storage_size: String,
    /// StorageClass of the data volume claim; the cluster's default class when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// CPU and memory requests and limits of mongod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Container security context, merged over the restricted-profile defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
    /// Pod security context, merged over the defaults (user and group 999, the image's
    /// `mongodb` user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security_context: Option<PodSecurityContext>,
}

impl Default for ManagedMongoDb {
    fn default() -> Self {
        Self {
            image: default_mongo_image(),
            storage_size: default_mongo_storage(),
            storage_class_name: None,
            resources: None,
            security_context: None,
            pod_security_context: None,
        }
    }
}

fn default_mongo_image() -> String {
    "mongo:7.0".to_owned()
}

fn default_mongo_storage() -> String {
    "10Gi".to_owned()
}

/// An existing MongoDB deployment.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalMongoDb {
    /// Secret key whose value is the MongoDB connection string.
    pub secret_ref: SecretKeyRef,
}

/// Observed state, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TelemetryPipelineStatus {
    /// `metadata.generation` of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Summary: Pending, Progressing, Ready or Degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Ready, Progressing, Degraded and one condition per component.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Ready and desired pods per component that runs pods continuously.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<ComponentStatus>,
    /// Ready and desired consumer pods as `ready/desired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumers: Option<String>,
    /// Producer schedule state, copied from the CronJob status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer: Option<ProducerStatus>,
    /// In-cluster addresses of the pipeline's services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Endpoints>,
}

/// Summary of a pipeline's state.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    Pending,
    Progressing,
    Ready,
    Degraded,
}

/// Pod readiness of one component.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// Component name: broker, consumer, metrics or mongodb.
    pub name: String,
    /// Pods that pass their readiness probe.
    pub ready_replicas: i32,
    /// Pods the component should run.
    pub desired_replicas: i32,
}

/// Producer schedule state.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProducerStatus {
    /// When the last run was scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// When the last run completed successfully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Time>,
    /// Runs in progress.
    #[serde(default)]
    pub active_jobs: i32,
}

/// Addresses of the pipeline's services. They carry no credentials.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    /// AMQP address of the built-in broker, or `external` for an external broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amqp_url: Option<String>,
    /// Base URL of the REST API, when it is enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
}

/// Renders the CustomResourceDefinition as YAML, as stored in `crds/telemetrypipelines.yaml`.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;

    // Keys are sorted explicitly: serde_json keeps insertion order when any crate in the
    // build enables its `preserve_order` feature, and the output must not depend on that.
    let crd = serde_json::to_value(TelemetryPipeline::crd())
        .map_err(<serde_yaml::Error as serde::ser::Error>::custom)?;
    serde_yaml::to_string(&sort_keys(crd))
}

/// Returns `value` with the keys of every object in lexical order.
fn sort_keys(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|left, right| left.0.cmp(&right.0));
            serde_json::Value::Object(
                entries
                    .into_iter()
                    .map(|(key, item)| (key, sort_keys(item)))
                    .collect(),
            )
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(sort_keys).collect())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use kube::CustomResourceExt;
    use serde_json::{Value, json};

    use super::*;

    fn repo_path(relative: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(relative)
    }

    fn example(relative: &str) -> String {
        let path = repo_path(relative);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("failed to read {}: {err}", path.display()))
    }

    /// Parses a manifest and fills in the defaults, as the API server stores it.
    fn defaulted(manifest: &str) -> Value {
        let pipeline: TelemetryPipeline = serde_yaml::from_str(manifest).expect("manifest parses");
        serde_json::to_value(pipeline).expect("pipeline encodes")
    }

    /// Evaluates the CRD's `x-kubernetes-validations` rules, as the API server would on create.
    fn check_cel(object: &Value) -> Result<(), String> {
        let crd = TelemetryPipeline::crd();
        let schema = crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .unwrap();
        let schema = serde_json::to_value(schema).unwrap();
        kube::core::cel::Validator::new()
            .validate(&schema, object, None)
            .map_err(|errors| format!("{errors:?}"))
    }

    #[test]
    fn crd_file_is_current() {
        let generated = crd_yaml().expect("CRD encodes");
        let stored = example("crds/telemetrypipelines.yaml");
        assert!(
            generated == stored,
            "crds/telemetrypipelines.yaml is stale: run `make crds` \
             (cargo run -p telemetry-operator --bin crdgen > crds/telemetrypipelines.yaml)"
        );
    }

    #[test]
    fn examples_pass_cel_rules() {
        for name in ["minimal", "full", "external-engines"] {
            let object = defaulted(&example(&format!("operator/examples/{name}.yaml")));
            if let Err(errors) = check_cel(&object) {
                panic!("example {name} rejected: {errors}");
            }
        }
    }

    #[test]
    fn min_above_max_is_rejected() {
        let object = defaulted(&example(
            "operator/examples/invalid/min-replicas-above-max.yaml",
        ));
        let errors =
            check_cel(&object).expect_err("minReplicas 5 > maxReplicas 3 must be rejected");
        assert!(errors.contains("minReplicas must not exceed"), "{errors}");
    }

    #[test]
    fn unknown_consumer_mode_is_rejected() {
        let manifest = example("operator/examples/invalid/unknown-consumer-mode.yaml");
        let err =
            serde_yaml::from_str::<TelemetryPipeline>(&manifest).expect_err("mode roundrobin");
        assert!(err.to_string().contains("roundrobin"), "{err}");
    }

    #[test]
    fn exactly_one_engine_rules() {
        let mut both = defaulted(
            "apiVersion: gputelemetry.io/v1alpha1\nkind: TelemetryPipeline\nmetadata: {name: x}\nspec: {}\n",
        );
        both["spec"]["broker"]["external"] = json!({"secretRef": {"name": "rabbit", "key": "uri"}});
        let errors = check_cel(&both).expect_err("builtIn and external together");
        assert!(errors.contains("exactly one of broker.builtIn"), "{errors}");

        let mut neither = defaulted(
            "apiVersion: gputelemetry.io/v1alpha1\nkind: TelemetryPipeline\nmetadata: {name: x}\nspec: {}\n",
        );
        neither["spec"]["mongodb"] = json!({"database": "telemetry"});
        let errors = check_cel(&neither).expect_err("no MongoDB at all");
        assert!(
            errors.contains("exactly one of mongodb.managed"),
            "{errors}"
        );
    }

    #[test]
    fn schema_caps_replicas_at_ten() {
        let crd = serde_json::to_value(TelemetryPipeline::crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        for component in ["consumer", "metrics"] {
            let autoscaling = &spec[component]["properties"]["autoscaling"]["properties"];
            assert_eq!(
                autoscaling["maxReplicas"]["maximum"],
                json!(10.0),
                "{component}"
            );
            assert_eq!(
                spec[component]["properties"]["replicas"]["maximum"],
                json!(10.0),
                "{component}"
            );
        }
        assert_eq!(
            spec["producer"]["properties"]["parallelism"]["maximum"],
            json!(10.0)
        );
        assert_eq!(
            spec["consumer"]["properties"]["mode"]["enum"],
            json!(["shared", "broadcast"])
        );
    }
}
