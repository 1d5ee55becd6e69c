//! The listener: binds the AMQP and admin sockets, accepts clients, and shuts down cleanly.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use telemetry_core::admin::{self, Readiness};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::session::{Session, SessionConfig};
use crate::shared::Shared;

/// Time that sessions get to finish the close handshake with their clients at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Maximum pause between retries when accepting a socket fails (for example on EMFILE).
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(5);

/// Entry point of the broker library.
#[derive(Debug)]
pub struct Broker;

impl Broker {
    /// Binds the AMQP and admin listeners and creates the broker state. Port 0 in `config`
    /// picks a free port; [`BoundBroker::local_addr`] and [`BoundBroker::admin_addr`] report it.
    pub async fn bind(config: Config) -> Result<BoundBroker> {
        let amqp_addr = SocketAddr::new(config.bind_address, config.broker_port);
        let listener = TcpListener::bind(amqp_addr)
            .await
            .map_err(|source| Error::Bind {
                what: "AMQP",
                addr: amqp_addr,
                source,
            })?;
        let admin_addr = SocketAddr::new(config.bind_address, config.admin_port);
        let admin_listener = TcpListener::bind(admin_addr)
            .await
            .map_err(|source| Error::Bind {
                what: "admin",
                addr: admin_addr,
                source,
            })?;

        let shared = Arc::new(Shared::new(config.memory_high_watermark));
        let mut registry = Registry::default();
        shared.metrics.register(&mut registry, Arc::clone(&shared));

        let session_config = SessionConfig {
            user: config.broker_user.clone(),
            password: config.broker_password.clone(),
            guest_loopback_only: config.guest_loopback_only,
            frame_max: config.frame_max,
            heartbeat: config.heartbeat,
        };
        Ok(BoundBroker {
            local_addr: listener.local_addr()?,
            admin_addr: admin_listener.local_addr()?,
            listener,
            admin_listener,
            shared,
            registry: Arc::new(registry),
            readiness: Readiness::default(),
            session_config: Arc::new(session_config),
            max_connections: config.max_connections.max(1),
        })
    }
}

/// A broker whose sockets are bound; [`BoundBroker::run`] serves them.
#[derive(Debug)]
pub struct BoundBroker {
    local_addr: SocketAddr,
    admin_addr: SocketAddr,
    listener: TcpListener,
    admin_listener: TcpListener,
    shared: Arc<Shared>,
    registry: Arc<Registry>,
    readiness: Readiness,
    session_config: Arc<SessionConfig>,
    /// Limit on sessions served at once; further clients wait in the listen backlog.
    max_connections: usize,
}

impl BoundBroker {
    /// Address of the AMQP listener.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Address of the admin HTTP server.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Serves clients until `shutdown` completes, then stops accepting, closes every
    /// connection with CONNECTION_FORCED (320), waits for the sessions to end and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let BoundBroker {
            local_addr,
            admin_addr,
            listener,
            admin_listener,
            shared,
            registry,
            readiness,
            session_config,
            max_connections,
        } = self;

        let (stop_admin, admin_stopped) = oneshot::channel::<()>();
        let admin_app = admin::router(registry, readiness.clone());
        let admin_task = tokio::spawn(async move {
            axum::serve(admin_listener, admin_app)
                .with_graceful_shutdown(async move {
                    let _ = admin_stopped.await;
                })
                .await
        });

        let (notify_shutdown, _) = broadcast::channel(1);
        let (sessions_done_tx, mut sessions_done_rx) = mpsc::channel::<()>(1);
        let mut accept = Acceptor {
            listener,
            limit: Arc::new(Semaphore::new(max_connections)),
            shared,
            session_config,
            notify_shutdown: notify_shutdown.clone(),
            sessions_done: sessions_done_tx,
        };

        readiness.set(true);
        tracing::info!(amqp = %local_addr, admin = %admin_addr, max_connections, "broker listening");
        let outcome = tokio::select! {
            result = accept.run() => result,
            () = shutdown => {
                tracing::info!("shutting down: closing client connections");
                Ok(())
            }
        };
        readiness.set(false);

        // Dropping the broadcast sender tells every session to close; each holds a clone of
        // `sessions_done`, so the receiver completes when the last session has ended.
        drop(accept);
        drop(notify_shutdown);
        if tokio::time::timeout(SHUTDOWN_GRACE, sessions_done_rx.recv())
            .await
            .is_err()
        {
            tracing::warn!(
                grace_s = SHUTDOWN_GRACE.as_secs(),
                "sessions still open after the shutdown grace period"
            );
        }

        let _ = stop_admin.send(());
        match admin_task.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => return Err(Error::Admin(err)),
            Err(err) => tracing::error!(cause = %err, "admin server task failed"),
        }
        tracing::info!("broker stopped");
        outcome
    }
}

/// The accept loop and what each session needs.
struct Acceptor {
    listener: TcpListener,
    /// Permits for concurrent sessions; a session returns its permit when it ends.
    limit: Arc<Semaphore>,
    shared: Arc<Shared>,
    session_config: Arc<SessionConfig>,
    /// Sessions subscribe to learn about shutdown.
    notify_shutdown: broadcast::Sender<()>,
    /// Each session holds a clone; shutdown waits until all are dropped.
    sessions_done: mpsc::Sender<()>,
}

impl Acceptor {
    async fn run(&mut self) -> Result<()> {
        loop {
            let permit = Arc::clone(&self.limit)
                .acquire_owned()
                .await
                .expect("the connection semaphore is never closed");
            let (socket, peer) = self.accept().await;

            let shared = Arc::clone(&self.shared);
            let config = Arc::clone(&self.session_config);
            let shutdown = self.notify_shutdown.subscribe();
            let done = self.sessions_done.clone();
            tokio::spawn(async move {
                Session::serve(socket, peer, shared, config, shutdown).await;
                drop(permit);
                drop(done);
            });
        }
    }

    /// Accepts one socket, retrying with exponential backoff on errors such as running out
    /// of file descriptors.
    async fn accept(&mut self) -> (tokio::net::TcpStream, SocketAddr) {
        let mut backoff = Duration::from_millis(10);
        loop {
            match self.listener.accept().await {
                Ok(accepted) => return accepted,
                Err(err) => {
                    tracing::warn!(cause = %err, retry_in_ms = backoff.as_millis() as u64, "failed to accept a connection");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                }
            }
        }
    }
}
