//! The operator process: runs the controller, or renders a manifest with `render`.
#![deny(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use futures::FutureExt;
use prometheus_client::registry::Registry;
use telemetry_core::admin::{self, Readiness};
use telemetry_core::runtime::{init_logging, shutdown_signal};
use telemetry_operator::config::{Cli, Command, RunConfig};
use telemetry_operator::leader::LeaseLock;
use telemetry_operator::metrics::Metrics;
use telemetry_operator::{Context, controller, render};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Render { file }) = cli.command {
        let manifest = if file.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin())
                .context("failed to read the manifest from standard input")?
        } else {
            std::fs::read_to_string(&file)
                .with_context(|| format!("failed to read {}", file.display()))?
        };
        print!(
            "{}",
            render::render(&manifest)
                .with_context(|| format!("failed to render {}", file.display()))?
        );
        return Ok(());
    }
    init_logging();
    run(cli.run).await
}

async fn run(config: RunConfig) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("failed to create a Kubernetes client")?;
    let mut registry = Registry::default();
    let metrics = Metrics::default().register(&mut registry);
    let readiness = Readiness::default();
    let shutdown = shutdown_signal().shared();

    let admin = tokio::spawn(admin::serve(
        config.admin_addr(),
        Arc::new(registry),
        readiness.clone(),
        shutdown.clone(),
    ));
    let ctx = Arc::new(Context::new(client.clone(), metrics));
    tracing::info!(
        leader_election = config.leader_election,
        "starting telemetry-operator"
    );

    if config.leader_election {
        let namespace = match &config.lease_namespace {
            Some(namespace) => namespace.clone(),
            None => client.default_namespace().to_owned(),
        };
        let identity = config
            .lease_identity
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .context("no lease identity: set --lease-identity (POD_NAME) or HOSTNAME")?;
        let duration = Duration::from_secs(config.lease_duration_seconds);
        let lock = Arc::new(LeaseLock::new(
            client,
            &namespace,
            &config.lease_name,
            &identity,
            duration,
        ));
        readiness.set(true);
        let acquired = tokio::select! {
            acquired = acquire(&lock, Duration::from_secs(config.lease_retry_seconds)) => acquired,
            () = shutdown.clone() => false,
        };
        if acquired {
            tracing::info!(lease = %config.lease_name, identity = %lock.identity(), "became leader");
            // The controller's shutdown future must be Sync, so the renew loop runs in its own
            // task and reports through a channel.
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let holder = Arc::clone(&lock);
            let renew = Duration::from_secs(config.lease_renew_seconds);
            let watchdog = tokio::spawn(async move {
                tokio::select! {
                    () = shutdown => {}
                    () = holder.hold(renew) => tracing::error!("lost leadership, stopping the controller"),
                }
                let _ = stop_tx.send(());
            });
            controller::run(ctx, async move {
                let _ = stop_rx.await;
            })
            .await;
            watchdog.abort();
            if let Err(err) = lock.step_down().await {
                tracing::warn!(cause = %err, "failed to release the lease");
            }
        }
    } else {
        readiness.set(true);
        controller::run(ctx, shutdown).await;
    }

    readiness.set(false);
    admin.abort();
    tracing::info!("telemetry-operator stopped");
    Ok(())
}

async fn acquire(lock: &LeaseLock, retry: Duration) -> bool {
    loop {
        match lock.try_acquire_or_renew().await {
            Ok(true) => return true,
            Ok(false) => {
                tracing::debug!(identity = %lock.identity(), "lease held by another replica")
            }
            Err(err) => tracing::warn!(cause = %err, "failed to acquire the lease"),
        }
        tokio::time::sleep(retry).await;
    }
}
