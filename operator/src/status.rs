//! The pipeline status, computed from the children as the API server returned them.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::children::{Child, Component};
use crate::crd::{
    ComponentStatus, Endpoints, Phase, ProducerStatus, TelemetryPipeline, TelemetryPipelineStatus,
};

/// Children after apply, with the status fields the API server filled in.
#[derive(Default)]
pub struct Observed {
    pub broker: Option<Deployment>,
    pub consumer: Option<Deployment>,
    pub metrics: Option<Deployment>,
    pub mongodb: Option<StatefulSet>,
    pub producer: Option<CronJob>,
}

impl Observed {
    /// Sorts applied children by component, using their names.
    pub fn from_applied(pipeline: &str, applied: Vec<Child>) -> Self {
        let mut observed = Self::default();
        for child in applied {
            match child {
                Child::Deployment(d)
                    if d.metadata.name == Some(Component::Broker.object_name(pipeline)) =>
                {
                    observed.broker = Some(d)
                }
                Child::Deployment(d)
                    if d.metadata.name == Some(Component::Consumer.object_name(pipeline)) =>
                {
                    observed.consumer = Some(d)
                }
                Child::Deployment(d) => observed.metrics = Some(d),
                Child::StatefulSet(s) => observed.mongodb = Some(s),
                Child::CronJob(c) => observed.producer = Some(c),
                _ => {}
            }
        }
        observed
    }
}

fn deployment_counts(deployment: &Deployment) -> (i32, i32) {
    // With an autoscaler the spec has no replica count, and the status has the current one.
    let desired = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .or_else(|| deployment.status.as_ref().and_then(|s| s.replicas))
        .unwrap_or(1);
    let ready = deployment
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    (ready, desired)
}

fn stateful_set_counts(set: &StatefulSet) -> (i32, i32) {
    let desired = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let ready = set
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    (ready, desired)
}

/// One condition before its transition time is settled.
struct Check {
    type_: &'static str,
    ok: bool,
    reason: &'static str,
    message: String,
}

fn readiness(
    type_: &'static str,
    name: &str,
    counts: Option<(i32, i32)>,
    absent_reason: &'static str,
) -> Check {
    match counts {
        Some((ready, desired)) if ready >= desired => Check {
            type_,
            ok: true,
            reason: "Available",
            message: format!("{ready}/{desired} {name} pods ready"),
        },
        Some((ready, desired)) => Check {
            type_,
            ok: false,
            reason: "PodsNotReady",
            message: format!("{ready}/{desired} {name} pods ready"),
        },
        None => Check {
            type_,
            ok: true,
            reason: absent_reason,
            message: format!("{name} is not run by the operator"),
        },
    }
}

/// Builds the status. `error` is the message of a failed reconcile, which makes the pipeline
/// Degraded; conditions keep their `lastTransitionTime` while their status does not change.
pub fn compute(
    pipeline: &TelemetryPipeline,
    observed: &Observed,
    error: Option<&str>,
) -> TelemetryPipelineStatus {
    let spec = &pipeline.spec;
    let name = pipeline.metadata.name.clone().unwrap_or_default();
    let namespace = pipeline.metadata.namespace.clone().unwrap_or_default();
    let mut components = Vec::new();
    let mut record = |component: Component, counts: Option<(i32, i32)>| {
        if let Some((ready, desired)) = counts {
            components.push(ComponentStatus {
                name: component.as_str().to_owned(),
                ready_replicas: ready,
                desired_replicas: desired,
            });
        }
        counts
    };

    let broker = record(
        Component::Broker,
        observed.broker.as_ref().map(deployment_counts),
    );
    let consumer = record(
        Component::Consumer,
        observed.consumer.as_ref().map(deployment_counts),
    );
    let metrics = record(
        Component::Metrics,
        observed.metrics.as_ref().map(deployment_counts),
    );
    let mongodb = record(
        Component::MongoDb,
        observed.mongodb.as_ref().map(stateful_set_counts),
    );

    let producer_status = observed
        .producer
        .as_ref()
        .and_then(|c| c.status.as_ref())
        .map(|s| ProducerStatus {
            last_schedule_time: s.last_schedule_time.clone(),
            last_successful_time: s.last_successful_time.clone(),
            active_jobs: s
                .active
                .as_ref()
                .map_or(0, |jobs| i32::try_from(jobs.len()).unwrap_or(i32::MAX)),
        });
    let producer_check = match &observed.producer {
        Some(_) if spec.producer.suspend => Check {
            type_: "ProducerScheduled",
            ok: false,
            reason: "Suspended",
            message: "producer.suspend is true".into(),
        },
        Some(_) => Check {
            type_: "ProducerScheduled",
            ok: true,
            reason: "Scheduled",
            message: format!("runs on schedule {:?}", spec.producer.schedule),
        },
        None => Check {
            type_: "ProducerScheduled",
            ok: false,
            reason: "NotApplied",
            message: "CronJob not applied".into(),
        },
    };

    let component_checks = [
        readiness("BrokerReady", "broker", broker, "External"),
        readiness("ConsumerReady", "consumer", consumer, "NotApplied"),
        readiness("MetricsReady", "metrics API", metrics, "Disabled"),
        readiness("MongoDBReady", "MongoDB", mongodb, "External"),
    ];
    let waiting: Vec<&str> = component_checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| c.type_)
        .collect();
    let all_ready = waiting.is_empty() && error.is_none();

    let phase = match (error, all_ready) {
        (Some(_), _) => Phase::Degraded,
        (None, true) => Phase::Ready,
        (None, false) => Phase::Progressing,
    };
    let waiting_message = format!("waiting for {}", waiting.join(", "));
    let mut checks = vec![
        Check {
            type_: "Ready",
            ok: all_ready,
            reason: if all_ready {
                "AllComponentsReady"
            } else {
                "ComponentsNotReady"
            },
            message: if all_ready {
                "every component is ready".into()
            } else {
                waiting_message.clone()
            },
        },
        Check {
            type_: "Progressing",
            ok: !all_ready && error.is_none(),
            reason: if all_ready { "Stable" } else { "RollingOut" },
            message: if all_ready {
                "nothing to roll out".into()
            } else {
                waiting_message
            },
        },
        Check {
            type_: "Degraded",
            ok: error.is_some(),
            reason: if error.is_some() {
                "ReconcileFailed"
            } else {
                "ReconcileSucceeded"
            },
            message: error.unwrap_or("last reconcile succeeded").to_owned(),
        },
    ];
    checks.extend(component_checks);
    checks.push(producer_check);

    let previous = pipeline
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let generation = pipeline.metadata.generation;
    let conditions = checks
        .into_iter()
        .map(|check| condition(check, previous, generation))
        .collect();

    let endpoints = Endpoints {
        amqp_url: Some(match &spec.broker.built_in {
            Some(built_in) => format!("amqp://{}-broker.{namespace}.svc:{}", name, built_in.port),
            None => "external".to_owned(),
        }),
        api_url: spec.metrics.enabled.then(|| {
            format!(
                "http://{}-metrics.{namespace}.svc:{}",
                name, spec.metrics.service.port
            )
        }),
    };

    TelemetryPipelineStatus {
        observed_generation: generation,
        phase: Some(phase),
        conditions,
        consumers: consumer.map(|(ready, desired)| format!("{ready}/{desired}")),
        components,
        producer: producer_status,
        endpoints: Some(endpoints),
    }
}

fn condition(check: Check, previous: &[Condition], generation: Option<i64>) -> Condition {
    let status = if check.ok { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == check.type_ && c.status == status)
        .map_or_else(
            || Time(Timestamp::now()),
            |c| c.last_transition_time.clone(),
        );
    Condition {
        type_: check.type_.to_owned(),
        status: status.to_owned(),
        reason: check.reason.to_owned(),
        message: check.message,
        observed_generation: generation,
        last_transition_time,
    }
}
