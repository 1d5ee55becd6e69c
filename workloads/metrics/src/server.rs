//! Start-up and shutdown: configuration to state, listeners, both servers and readiness.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use telemetry_core::admin::{self, Readiness};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::{Auth, TokenSet};
use crate::http_metrics::HttpMetrics;
use crate::store::Store;
use crate::{AppState, Config, Error, Result, app};

/// How often the admin readiness flag is refreshed from a MongoDB ping.
const READINESS_INTERVAL: Duration = Duration::from_secs(10);

/// The service with both listeners bound and MongoDB's indexes ensured, ready to [`serve`].
///
/// Binding is separate from serving so that a caller that requested port 0 can read the
/// chosen ports before requests start.
///
/// [`serve`]: Server::serve
pub struct Server {
    /// Handlers' shared state, with the MongoDB client and the tokens.
    state: AppState,
    /// Metrics registry that the admin server exposes at `/metrics`.
    registry: Registry,
    /// Bound REST API listener.
    api: TcpListener,
    /// Bound admin listener.
    admin: TcpListener,
}

impl Server {
    /// Validates the configuration, reads the tokens file, connects to MongoDB, ensures the
    /// indexes and binds the API and admin listeners.
    pub async fn bind(config: &Config) -> Result<Self> {
        config.validate()?;
        let mut registry = Registry::default();
        let state = build_state(config, &mut registry).await?;
        state.store().ensure_indexes().await?;

        let api = bind_listener("API", config.api_addr()).await?;
        let admin = bind_listener("admin", config.admin_addr()).await?;
        Ok(Server {
            state,
            registry,
            api,
            admin,
        })
    }

    /// Address the REST API listens on.
    pub fn api_addr(&self) -> SocketAddr {
        self.api
            .local_addr()
            .expect("reading the address of a bound listener")
    }

    /// Address the admin server listens on.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("reading the address of a bound listener")
    }

    /// Serves the API and the admin routes until `shutdown` completes, then lets in-flight
    /// requests finish and returns.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let (api_addr, admin_addr) = (self.api_addr(), self.admin_addr());
        let readiness = Readiness::default();
        let (stop_sender, stop) = watch::channel(false);
        tokio::spawn({
            let readiness = readiness.clone();
            async move {
                shutdown.await;
                // Fail readiness first so that load balancers stop routing to this pod.
                readiness.set(false);
                tracing::info!("shutting down: no new connections, finishing in-flight requests");
                let _ = stop_sender.send(true);
            }
        });
        tokio::spawn(watch_readiness(
            self.state.store().clone(),
            readiness.clone(),
            stop.clone(),
        ));

        let api_router = app(self.state);
        let admin_router = admin::router(Arc::new(self.registry), readiness);
        tracing::info!(api = %api_addr, admin = %admin_addr, "telemetry-metrics listening");

        let api = axum::serve(self.api, api_router).with_graceful_shutdown(stopped(stop.clone()));
        let admin = axum::serve(self.admin, admin_router).with_graceful_shutdown(stopped(stop));
        let (api_result, admin_result) = tokio::join!(api, admin);
        api_result.map_err(|source| Error::Serve {
            server: "API",
            source,
        })?;
        admin_result.map_err(|source| Error::Serve {
            server: "admin",
            source,
        })?;
        tracing::info!("telemetry-metrics stopped");
        Ok(())
    }
}

/// Builds the application state from the configuration and registers its metrics.
/// Does not contact MongoDB: the driver connects on first use.
pub async fn build_state(config: &Config, registry: &mut Registry) -> Result<AppState> {
    let page_limits = config.page_limits()?;
    let auth = match &config.api_tokens_file {
        Some(path) => {
            let tokens = TokenSet::load(path)?;
            tracing::info!(path = %path.display(), tokens = tokens.len(), "API tokens loaded");
            Auth::Tokens(tokens)
        }
        None => {
            tracing::warn!("authentication is disabled: every client can read all telemetry");
            Auth::Disabled
        }
    };
    let store = Store::connect(&config.mongodb_uri, &config.mongodb_database).await?;
    let http_metrics = HttpMetrics::register(registry);
    Ok(AppState::new(store, auth, page_limits, http_metrics))
}

/// Binds the configuration, then serves until `shutdown` completes.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    Server::bind(&config).await?.serve(shutdown).await
}

async fn bind_listener(server: &'static str, addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|source| Error::Bind {
        server,
        addr,
        source,
    })
}

/// Completes once the shutdown flag is set (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Keeps the admin `/readyz` flag in step with MongoDB reachability until shutdown, logging
/// each change.
async fn watch_readiness(store: Store, readiness: Readiness, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(READINESS_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_ready = None;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        let result = store.ping().await;
        let ready = result.is_ok();
        if *stop.borrow() {
            return;
        }
        readiness.set(ready);
        if was_ready != Some(ready) {
            match result {
                Ok(()) => tracing::info!("MongoDB reachable; ready"),
                Err(err) => tracing::warn!(cause = %err, "MongoDB unreachable; not ready"),
            }
            was_ready = Some(ready);
        }
    }
}
