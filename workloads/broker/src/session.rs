//! One client connection: handshake, the event loop, heartbeats and clean-up.
//!
//! A session is one task. It reads frames, handles them against the shared state, receives
//! deliveries from other tasks through its outbox, and writes frames whenever the socket
//! accepts bytes. Method handlers live in `methods.rs`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use amq_protocol::frame::{AMQPFrame, ProtocolVersion};
use amq_protocol::protocol::{AMQPClass, AMQPHardError, AMQPSoftError, connection};
use amq_protocol::types::{AMQPValue, ChannelId, FieldTable};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::Instrument;

use crate::channel::{Channel, ChannelState};
use crate::config::MIN_FRAME_MAX;
use crate::connection::{FrameError, FrameReader, FrameWriter};
use crate::error::{Error, Exception, Result, Scope};
use crate::queue::{ConnectionId, Outbound};
use crate::shared::{Settled, Shared};

/// Largest channel number a client may open (RabbitMQ's default `channel_max`).
const CHANNEL_MAX: u16 = 2047;
/// Time a client has to complete the handshake (RabbitMQ's `handshake_timeout`).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to reply to connection.close with close-ok before the socket is closed.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a session waits for the client to close its socket after connection.close-ok.
const PEER_CLOSE_LINGER: Duration = Duration::from_secs(1);
/// Stop taking deliveries from the outbox while this many encoded bytes wait for the socket.
const WRITE_HIGH_WATER: usize = 1024 * 1024;
/// Deliveries taken from the outbox per wake-up before the loop checks the socket again.
const OUTBOX_BATCH: usize = 256;

/// Authentication and tuning fixed at start-up, shared by every session.
#[derive(Debug)]
pub(crate) struct SessionConfig {
    pub(crate) user: String,
    pub(crate) password: String,
    pub(crate) guest_loopback_only: bool,
    pub(crate) frame_max: u32,
    pub(crate) heartbeat: u16,
}

/// Feature flags a client announced in connection.start-ok `capabilities`.
#[derive(Debug, Default, Clone, Copy)]
struct ClientCapabilities {
    consumer_cancel_notify: bool,
    connection_blocked: bool,
}

/// State of one client connection.
pub(crate) struct Session {
    pub(crate) id: ConnectionId,
    peer: SocketAddr,
    pub(crate) shared: Arc<Shared>,
    config: Arc<SessionConfig>,
    reader: FrameReader,
    pub(crate) writer: FrameWriter,
    /// Negotiated maximum frame size, in bytes including the frame overhead.
    pub(crate) frame_max: usize,
    /// Negotiated heartbeat interval in seconds; 0 disables heartbeats.
    heartbeat: u16,
    channel_max: u16,
    capabilities: ClientCapabilities,
    pub(crate) channels: HashMap<ChannelId, Channel>,
    /// Sender half handed to this session's consumers in the queues.
    pub(crate) outbox_tx: mpsc::UnboundedSender<Outbound>,
    outbox_rx: mpsc::UnboundedReceiver<Outbound>,
    alarm: watch::Receiver<bool>,
    /// Set once the client published, which makes the connection subject to blocking.
    pub(crate) has_published: bool,
    /// Whether connection.blocked is in effect (and reads are paused).
    blocked: bool,
    /// Set when the broker sent connection.close and waits for close-ok, with the deadline.
    closing: Option<Instant>,
    /// Set when the session should end once the outgoing buffer is written.
    finished: bool,
    /// Set when this side sent connection.close-ok: the client closes the socket then
    /// (AMQP 0-9-1, connection.close-ok), so the session waits for that before dropping it.
    /// Closing first makes clients such as lapin report a broken connection.
    await_peer_close: bool,
    /// Some channel has publishes waiting for a confirm.
    pub(crate) confirms_pending: bool,
    /// Reused buffers of the publish and settle paths.
    pub(crate) route_scratch: Vec<Arc<str>>,
    pub(crate) settle_scratch: Vec<Settled>,
    /// Invalid telemetry messages seen, to rate-limit their warnings.
    pub(crate) invalid_count: u64,
}

/// What woke the event loop.
enum Event {
    Shutdown,
    Read(Result<bool>),
    Wrote(Result<()>),
    Outbound(Option<Outbound>),
    HeartbeatTick,
    AlarmChanged,
    CloseTimedOut,
}

impl Session {
    /// Serves one accepted socket until the client leaves, an error closes it or the broker
    /// shuts down.
    pub(crate) async fn serve(
        socket: TcpStream,
        peer: SocketAddr,
        shared: Arc<Shared>,
        config: Arc<SessionConfig>,
        mut shutdown: broadcast::Receiver<()>,
    ) {
        let id = shared.next_id();
        let span =
            tracing::info_span!("connection", id, peer = %peer, user = tracing::field::Empty);
        async move {
            if let Err(err) = socket.set_nodelay(true) {
                tracing::warn!(cause = %err, "failed to set TCP_NODELAY");
            }
            let (read_half, write_half) = socket.into_split();
            let (outbox_tx, outbox_rx) = mpsc::unbounded_channel();
            let alarm = shared.memory.subscribe();
            let mut session = Session {
                id,
                peer,
                reader: FrameReader::new(read_half, MIN_FRAME_MAX),
                writer: FrameWriter::new(write_half),
                frame_max: config.frame_max as usize,
                heartbeat: 0,
                channel_max: CHANNEL_MAX,
                capabilities: ClientCapabilities::default(),
                channels: HashMap::new(),
                outbox_tx,
                outbox_rx,
                alarm,
                has_published: false,
                blocked: false,
                closing: None,
                finished: false,
                await_peer_close: false,
                confirms_pending: false,
                route_scratch: Vec::new(),
                settle_scratch: Vec::new(),
                invalid_count: 0,
                shared,
                config,
            };

            let opened = tokio::select! {
                result = tokio::time::timeout(HANDSHAKE_TIMEOUT, session.handshake()) => match result {
                    Ok(Ok(opened)) => opened,
                    Ok(Err(err)) => {
                        tracing::info!(cause = %err, "connection failed during handshake");
                        false
                    }
                    Err(_) => {
                        tracing::info!(timeout_s = HANDSHAKE_TIMEOUT.as_secs(), "handshake timed out");
                        false
                    }
                },
                _ = shutdown.recv() => false,
            };
            if !opened {
                return;
            }

            session.shared.metrics.connections.inc();
            let reason = match session.run(&mut shutdown).await {
                Ok(()) => "closed".to_owned(),
                Err(err) => err.to_string(),
            };
            session.release_all();
            session.shared.metrics.connections.dec();
            tracing::info!(reason, "connection closed");
        }
        .instrument(span)
        .await;
    }

    /// Runs the handshake of AMQP 0-9-1 section 2.2.4: protocol header, start/start-ok,
    /// tune/tune-ok, open/open-ok. Returns `false` when the client was rejected.
    async fn handshake(&mut self) -> Result<bool> {
        match self.next_frame().await? {
            Some(AMQPFrame::ProtocolHeader(version))
                if version == ProtocolVersion::amqp_0_9_1() => {}
            _ => {
                // Section 4.2.2: reply to an unsupported header with the supported one and close.
                self.writer
                    .push(&AMQPFrame::ProtocolHeader(ProtocolVersion::amqp_0_9_1()));
                self.writer.flush_all().await?;
                tracing::info!("client sent no AMQP 0-9-1 protocol header");
                return Ok(false);
            }
        }

        self.writer.push_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Start(start_method())),
        );
        self.writer.flush_all().await?;
        let start_ok = match self.expect_connection_method().await? {
            connection::AMQPMethod::StartOk(start_ok) => start_ok,
            other => {
                return self
                    .reject_handshake(Exception::unexpected_frame(format!(
                        "expected connection.start-ok, got {other:?}"
                    )))
                    .await;
            }
        };
        self.capabilities = client_capabilities(&start_ok.client_properties);
        if let Err(exception) = self.authenticate(&start_ok) {
            return self.reject_handshake(exception).await;
        }

        let tune = connection::Tune {
            channel_max: CHANNEL_MAX,
            frame_max: self.config.frame_max,
            heartbeat: self.config.heartbeat,
        };
        self.writer
            .push_method(0, AMQPClass::Connection(connection::AMQPMethod::Tune(tune)));
        self.writer.flush_all().await?;
        let tune_ok = match self.expect_connection_method().await? {
            connection::AMQPMethod::TuneOk(tune_ok) => tune_ok,
            other => {
                return self
                    .reject_handshake(Exception::unexpected_frame(format!(
                        "expected connection.tune-ok, got {other:?}"
                    )))
                    .await;
            }
        };
        if let Err(exception) = self.apply_tuning(&tune_ok) {
            return self.reject_handshake(exception).await;
        }

        let open = match self.expect_connection_method().await? {
            connection::AMQPMethod::Open(open) => open,
            other => {
                return self
                    .reject_handshake(Exception::unexpected_frame(format!(
                        "expected connection.open, got {other:?}"
                    )))
                    .await;
            }
        };
        if open.virtual_host.as_str() != "/" {
            let exception = Exception::not_allowed(format!(
                "vhost '{}' not found; this broker serves only '/'",
                open.virtual_host
            ));
            return self.reject_handshake(exception).await;
        }
        self.writer.push_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::OpenOk(connection::OpenOk {})),
        );
        self.writer.flush_all().await?;
        tracing::info!(
            frame_max = self.frame_max,
            heartbeat_s = self.heartbeat,
            "connection opened"
        );
        Ok(true)
    }

    /// Checks the SASL response against the configured user (PLAIN or AMQPLAIN).
    fn authenticate(&self, start_ok: &connection::StartOk) -> Result<(), Exception> {
        let mechanism = start_ok.mechanism.as_str();
        let credentials = match mechanism {
            "PLAIN" => parse_plain(start_ok.response.as_bytes()),
            "AMQPLAIN" => parse_amqplain(start_ok.response.as_bytes()),
            other => {
                return Err(Exception::connection_with(
                    AMQPSoftError::ACCESSREFUSED,
                    format!(
                        "unsupported authentication mechanism '{other}'; use PLAIN or AMQPLAIN"
                    ),
                ));
            }
        };
        let rejected = || {
            Exception::connection_with(
                AMQPSoftError::ACCESSREFUSED,
                format!(
                    "Login was refused using authentication mechanism {mechanism}. For details see the broker logfile."
                ),
            )
        };
        let Some((user, password)) = credentials else {
            tracing::warn!(mechanism, "login rejected: malformed SASL response");
            return Err(rejected());
        };
        tracing::Span::current().record("user", user.as_str());
        if user != self.config.user || password != self.config.password {
            tracing::warn!(mechanism, "login rejected: invalid credentials");
            return Err(rejected());
        }
        if user == "guest" && self.config.guest_loopback_only && !self.peer.ip().is_loopback() {
            tracing::warn!("login rejected: user 'guest' may only connect from loopback");
            return Err(Exception::connection_with(
                AMQPSoftError::ACCESSREFUSED,
                "user 'guest' can only connect via localhost; configure another user or allow remote guest",
            ));
        }
        Ok(())
    }

    /// Takes the client's tune-ok values within the limits the broker offered.
    fn apply_tuning(&mut self, tune_ok: &connection::TuneOk) -> Result<(), Exception> {
        let offered = self.config.frame_max;
        let frame_max = if tune_ok.frame_max == 0 {
            offered
        } else {
            tune_ok.frame_max
        };
        if frame_max > offered || frame_max < MIN_FRAME_MAX {
            return Err(Exception::not_allowed(format!(
                "frame_max={} is outside the allowed range {MIN_FRAME_MAX}..={offered}",
                tune_ok.frame_max
            )));
        }
        self.frame_max = frame_max as usize;
        self.reader.set_frame_max(frame_max);
        self.channel_max = if tune_ok.channel_max == 0 {
            CHANNEL_MAX
        } else {
            tune_ok.channel_max.min(CHANNEL_MAX)
        };
        self.heartbeat = tune_ok.heartbeat;
        Ok(())
    }

    /// Sends connection.close during the handshake and ends the session.
    async fn reject_handshake(&mut self, exception: Exception) -> Result<bool> {
        tracing::info!(code = exception.code, text = %exception.text, "connection rejected");
        self.push_connection_close(&exception, 0, 0);
        self.writer.flush_all().await?;
        Ok(false)
    }

    async fn next_frame(&mut self) -> Result<Option<AMQPFrame>> {
        loop {
            match self.reader.parse_frame() {
                Ok(Some(frame)) => return Ok(Some(frame)),
                Ok(None) => {}
                Err(FrameError::TooLarge { size, max }) => {
                    return Err(Error::MalformedFrame(format!(
                        "frame of {size} bytes exceeds frame_max {max}"
                    )));
                }
                Err(FrameError::Malformed(detail)) => return Err(Error::MalformedFrame(detail)),
            }
            if !self.reader.read_more().await? {
                return Ok(None);
            }
        }
    }

    /// Reads the next connection-class method, skipping heartbeats.
    async fn expect_connection_method(&mut self) -> Result<connection::AMQPMethod> {
        loop {
            match self.next_frame().await? {
                Some(AMQPFrame::Method(0, AMQPClass::Connection(method))) => return Ok(method),
                Some(AMQPFrame::Heartbeat) => continue,
                Some(other) => {
                    return Err(Error::MalformedFrame(format!(
                        "unexpected frame during handshake: {other}"
                    )));
                }
                None => return Err(Error::Io(std::io::ErrorKind::UnexpectedEof.into())),
            }
        }
    }

    /// The event loop of an open connection.
    async fn run(&mut self, shutdown: &mut broadcast::Receiver<()>) -> Result<()> {
        let mut heartbeat = self.heartbeat_timer();
        loop {
            self.process_frames();
            self.flush_confirms();
            self.update_blocked();
            if self.finished {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.writer.flush_all()).await;
                if self.await_peer_close {
                    let peer_closed = async { while let Ok(true) = self.reader.read_more().await {} };
                    let _ = tokio::time::timeout(PEER_CLOSE_LINGER, peer_closed).await;
                }
                return Ok(());
            }

            let reading = !self.blocked;
            let can_take_outbound =
                self.writer.pending() < WRITE_HIGH_WATER && self.closing.is_none();
            let close_deadline = self.closing.unwrap_or_else(Instant::now);
            let event = tokio::select! {
                _ = shutdown.recv(), if self.closing.is_none() => Event::Shutdown,
                result = self.reader.read_more(), if reading => Event::Read(result),
                result = self.writer.write_some(), if self.writer.pending() > 0 => Event::Wrote(result),
                outbound = self.outbox_rx.recv(), if can_take_outbound => Event::Outbound(outbound),
                _ = tick(&mut heartbeat) => Event::HeartbeatTick,
                result = self.alarm.changed() => match result {
                    Ok(()) => Event::AlarmChanged,
                    Err(_) => Event::Shutdown,
                },
                _ = tokio::time::sleep_until(close_deadline), if self.closing.is_some() => Event::CloseTimedOut,
            };

            match event {
                Event::Shutdown => {
                    let exception =
                        Exception::connection(AMQPHardError::CONNECTIONFORCED, "broker shutdown");
                    self.close_connection(exception, 0, 0);
                }
                Event::Read(Ok(true)) => {}
                Event::Read(Ok(false)) => return Ok(()),
                Event::Read(Err(err)) | Event::Wrote(Err(err)) => return Err(err),
                Event::Wrote(Ok(())) => {}
                Event::Outbound(Some(outbound)) => {
                    self.handle_outbound(outbound);
                    self.drain_outbox();
                }
                Event::Outbound(None) => {}
                Event::HeartbeatTick => self.on_heartbeat_tick()?,
                Event::AlarmChanged => {}
                Event::CloseTimedOut => {
                    tracing::info!(
                        timeout_s = CLOSE_TIMEOUT.as_secs(),
                        "client did not reply to connection.close in time"
                    );
                    return Ok(());
                }
            }
        }
    }

    fn heartbeat_timer(&self) -> Option<tokio::time::Interval> {
        if self.heartbeat == 0 {
            return None;
        }
        // Ticking at half the interval sends heartbeats on time on an idle connection.
        let period = Duration::from_millis(u64::from(self.heartbeat) * 500);
        let mut timer = tokio::time::interval_at(Instant::now() + period, period);
        timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Some(timer)
    }

    /// Sends a heartbeat when nothing was written for half the interval, and ends the session
    /// when nothing was read for two intervals (AMQP 0-9-1 section 4.2.7).
    fn on_heartbeat_tick(&mut self) -> Result<()> {
        let interval = Duration::from_secs(u64::from(self.heartbeat));
        if self.writer.last_write.elapsed() >= interval / 2 && self.writer.pending() == 0 {
            self.writer.push(&AMQPFrame::Heartbeat);
        }
        // While blocked the broker does not read, so the client cannot be judged by silence.
        if !self.blocked && self.reader.last_read.elapsed() > interval * 2 {
            tracing::warn!(
                heartbeat_s = self.heartbeat,
                "missed heartbeats from client, closing connection"
            );
            return Err(Error::Io(std::io::ErrorKind::TimedOut.into()));
        }
        Ok(())
    }

    fn drain_outbox(&mut self) {
        for _ in 0..OUTBOX_BATCH {
            if self.writer.pending() >= WRITE_HIGH_WATER {
                return;
            }
            match self.outbox_rx.try_recv() {
                Ok(outbound) => self.handle_outbound(outbound),
                Err(_) => return,
            }
        }
    }

    /// Sends connection.blocked or connection.unblocked when the memory alarm changes for a
    /// connection that publishes, and pauses reading from it while blocked, as RabbitMQ does.
    fn update_blocked(&mut self) {
        let should_block = self.has_published && *self.alarm.borrow();
        if should_block == self.blocked {
            return;
        }
        self.blocked = should_block;
        if !should_block {
            self.reader.last_read = std::time::Instant::now();
        }
        tracing::info!(
            blocked = should_block,
            "publishing connection flow changed by memory alarm"
        );
        if self.capabilities.connection_blocked {
            let method = if should_block {
                connection::AMQPMethod::Blocked(connection::Blocked {
                    reason: "low on memory".into(),
                })
            } else {
                connection::AMQPMethod::Unblocked(connection::Unblocked {})
            };
            self.writer.push_method(0, AMQPClass::Connection(method));
        }
    }

    /// Handles every complete frame in the read buffer.
    fn process_frames(&mut self) {
        while !self.finished {
            let frame = match self.reader.parse_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(FrameError::TooLarge { size, max }) => {
                    let exception = Exception::frame_error(format!(
                        "frame of {size} bytes exceeds the negotiated frame_max {max}"
                    ));
                    self.close_connection(exception, 0, 0);
                    self.finished = true;
                    return;
                }
                Err(FrameError::Malformed(detail)) => {
                    let exception = Exception::frame_error(format!("malformed frame: {detail}"));
                    self.close_connection(exception, 0, 0);
                    self.finished = true;
                    return;
                }
            };
            self.handle_frame(frame);
        }
    }

    fn handle_frame(&mut self, frame: AMQPFrame) {
        if self.closing.is_some() {
            // After connection.close only close and close-ok count (section 2.2.4).
            if let AMQPFrame::Method(0, AMQPClass::Connection(method)) = frame {
                match method {
                    connection::AMQPMethod::CloseOk(_) => self.finished = true,
                    connection::AMQPMethod::Close(_) => {
                        self.writer.push_method(
                            0,
                            AMQPClass::Connection(connection::AMQPMethod::CloseOk(
                                connection::CloseOk {},
                            )),
                        );
                        self.finished = true;
                        self.await_peer_close = true;
                    }
                    _ => {}
                }
            }
            return;
        }

        match frame {
            AMQPFrame::Heartbeat => {}
            AMQPFrame::InvalidHeartbeat(channel) => {
                self.close_connection(
                    Exception::frame_error(format!(
                        "heartbeat frame on channel {channel}; heartbeats belong on channel 0"
                    )),
                    0,
                    0,
                );
            }
            AMQPFrame::ProtocolHeader(_) => {
                self.close_connection(
                    Exception::unexpected_frame("protocol header after the handshake"),
                    0,
                    0,
                );
            }
            AMQPFrame::Method(0, AMQPClass::Connection(method)) => {
                self.handle_connection_method(method)
            }
            AMQPFrame::Method(0, method) => {
                let (class_id, method_id) =
                    (method.get_amqp_class_id(), method.get_amqp_method_id());
                self.close_connection(
                    Exception::channel_error("channel 0 carries only connection methods"),
                    class_id,
                    method_id,
                );
            }
            AMQPFrame::Method(channel, method) => self.handle_channel_method(channel, method),
            AMQPFrame::Header(channel, header) => self.handle_content_header(channel, header),
            AMQPFrame::Body(channel, body) => self.handle_content_body(channel, body),
        }
    }

    fn handle_connection_method(&mut self, method: connection::AMQPMethod) {
        match method {
            connection::AMQPMethod::Close(close) => {
                tracing::debug!(code = close.reply_code, text = %close.reply_text, "client closed the connection");
                self.release_all();
                self.writer.push_method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
                );
                self.finished = true;
                self.await_peer_close = true;
            }
            connection::AMQPMethod::UpdateSecret(_) => {
                let ok = connection::AMQPMethod::UpdateSecretOk(connection::UpdateSecretOk {});
                self.writer.push_method(0, AMQPClass::Connection(ok));
            }
            connection::AMQPMethod::Blocked(_)
            | connection::AMQPMethod::Unblocked(_)
            | connection::AMQPMethod::CloseOk(_) => {}
            other => {
                let class = AMQPClass::Connection(other);
                let (class_id, method_id) = (class.get_amqp_class_id(), class.get_amqp_method_id());
                let exception = Exception::connection(
                    AMQPHardError::COMMANDINVALID,
                    "connection method not valid after the handshake",
                );
                self.close_connection(exception, class_id, method_id);
            }
        }
    }

    /// Raises an exception: a soft error closes its channel, a hard error the connection.
    pub(crate) fn raise(
        &mut self,
        channel: ChannelId,
        exception: Exception,
        class_id: u16,
        method_id: u16,
    ) {
        if exception.scope == Scope::Connection || channel == 0 {
            self.close_connection(exception, class_id, method_id);
            return;
        }
        tracing::info!(channel, code = exception.code, text = %exception.text, "closing channel on error");
        self.release_channel(channel);
        if let Some(state) = self.channels.get_mut(&channel) {
            state.state = ChannelState::Closing;
        }
        let close = amq_protocol::protocol::channel::Close {
            reply_code: exception.code,
            reply_text: exception.text.into(),
            class_id,
            method_id,
        };
        self.writer.push_method(
            channel,
            AMQPClass::Channel(amq_protocol::protocol::channel::AMQPMethod::Close(close)),
        );
    }

    /// Sends connection.close, releases every channel and waits for close-ok.
    pub(crate) fn close_connection(&mut self, exception: Exception, class_id: u16, method_id: u16) {
        if self.closing.is_some() {
            return;
        }
        tracing::info!(code = exception.code, text = %exception.text, "closing connection");
        self.release_all();
        self.push_connection_close(&exception, class_id, method_id);
        self.closing = Some(Instant::now() + CLOSE_TIMEOUT);
    }

    fn push_connection_close(&mut self, exception: &Exception, class_id: u16, method_id: u16) {
        let close = connection::Close {
            reply_code: exception.code,
            reply_text: exception.text.as_str().into(),
            class_id,
            method_id,
        };
        self.writer.push_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Close(close)),
        );
    }

    /// Cancels the consumers of a channel and requeues its unacknowledged deliveries, marked
    /// redelivered. The channel stays in the map until the close handshake ends.
    pub(crate) fn release_channel(&mut self, channel: ChannelId) {
        let Some(state) = self.channels.get_mut(&channel) else {
            return;
        };
        if state.state == ChannelState::Closing {
            return;
        }
        state.publish = None;
        state.consumer_queues.clear();
        for (consumer_id, consumer) in state.consumers.drain() {
            self.shared.cancel(&consumer.queue, consumer_id);
        }
        self.settle_scratch.clear();
        self.settle_scratch
            .extend(state.unacked.drain(..).map(|entry| entry.settle(true)));
        self.shared
            .settle(&mut self.settle_scratch, &state.credit, &[]);
        self.shared.metrics.channels.dec();
        state.state = ChannelState::Closing;
    }

    /// Releases every channel and the connection's exclusive queues; runs once per session.
    fn release_all(&mut self) {
        let ids: Vec<ChannelId> = self.channels.keys().copied().collect();
        for id in ids {
            self.release_channel(id);
        }
        self.channels.clear();
        // Deliveries still in the outbox never reached the client: put them back.
        self.outbox_rx.close();
        while let Ok(outbound) = self.outbox_rx.try_recv() {
            if let Outbound::Deliver {
                consumer_id,
                no_ack,
                queue,
                message,
                ..
            } = outbound
            {
                self.shared
                    .return_undelivered(&queue, consumer_id, no_ack, message, None);
            }
        }
        self.shared.drop_connection_queues(self.id);
    }

    /// Confirms every publish handled so far, with one multiple=true ack per channel.
    fn flush_confirms(&mut self) {
        if !self.confirms_pending {
            return;
        }
        self.confirms_pending = false;
        for (id, channel) in &mut self.channels {
            let Some(confirms) = channel.confirms.as_mut() else {
                continue;
            };
            if confirms.published > confirms.confirmed {
                let ack = amq_protocol::protocol::basic::Ack {
                    delivery_tag: confirms.published,
                    multiple: confirms.published - confirms.confirmed > 1,
                };
                confirms.confirmed = confirms.published;
                self.writer.push_method(
                    *id,
                    AMQPClass::Basic(amq_protocol::protocol::basic::AMQPMethod::Ack(ack)),
                );
            }
        }
    }

    pub(crate) fn can_notify_cancel(&self) -> bool {
        self.capabilities.consumer_cancel_notify
    }

    pub(crate) fn channel_max(&self) -> u16 {
        self.channel_max
    }
}

async fn tick(timer: &mut Option<tokio::time::Interval>) {
    match timer {
        Some(timer) => {
            timer.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The connection.start method: server identity, capabilities, mechanisms and locales.
fn start_method() -> connection::Start {
    let mut capabilities = FieldTable::default();
    for capability in [
        "publisher_confirms",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "authentication_failure_close",
        "per_consumer_qos",
    ] {
        capabilities.insert(capability.into(), AMQPValue::Boolean(true));
    }
    capabilities.insert(
        "exchange_exchange_bindings".into(),
        AMQPValue::Boolean(false),
    );

    let mut properties = FieldTable::default();
    properties.insert(
        "product".into(),
        AMQPValue::LongString(env!("CARGO_PKG_NAME").into()),
    );
    properties.insert(
        "version".into(),
        AMQPValue::LongString(env!("CARGO_PKG_VERSION").into()),
    );
    properties.insert("platform".into(), AMQPValue::LongString("Rust".into()));
    properties.insert("capabilities".into(), AMQPValue::FieldTable(capabilities));

    connection::Start {
        version_major: 0,
        version_minor: 9,
        server_properties: properties,
        mechanisms: "PLAIN AMQPLAIN".into(),
        locales: "en_US".into(),
    }
}

fn client_capabilities(properties: &FieldTable) -> ClientCapabilities {
    let Some(AMQPValue::FieldTable(capabilities)) = properties.inner().get("capabilities") else {
        return ClientCapabilities::default();
    };
    let flag = |name: &str| {
        matches!(
            capabilities.inner().get(name),
            Some(AMQPValue::Boolean(true))
        )
    };
    ClientCapabilities {
        consumer_cancel_notify: flag("consumer_cancel_notify"),
        connection_blocked: flag("connection.blocked"),
    }
}

/// Parses a SASL PLAIN response: `authzid NUL authcid NUL password` (RFC 4616).
fn parse_plain(response: &[u8]) -> Option<(String, String)> {
    let mut parts = response.split(|byte| *byte == 0);
    let _authzid = parts.next()?;
    let user = String::from_utf8(parts.next()?.to_vec()).ok()?;
    let password = String::from_utf8(parts.next()?.to_vec()).ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some((user, password))
}

/// Parses an AMQPLAIN response: a field table without its length prefix, with LOGIN and
/// PASSWORD entries.
fn parse_amqplain(response: &[u8]) -> Option<(String, String)> {
    let mut table_bytes = Vec::with_capacity(response.len() + 4);
    table_bytes.extend_from_slice(&u32::try_from(response.len()).ok()?.to_be_bytes());
    table_bytes.extend_from_slice(response);
    let (_, table) = amq_protocol::types::parsing::parse_field_table(&table_bytes[..]).ok()?;
    let text = |name: &str| match table.inner().get(name) {
        Some(AMQPValue::LongString(value)) => String::from_utf8(value.as_bytes().to_vec()).ok(),
        Some(AMQPValue::ShortString(value)) => Some(value.to_string()),
        _ => None,
    };
    Some((text("LOGIN")?, text("PASSWORD")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::auth::{Credentials, SASLMechanism};
    use amq_protocol::types::LongString;

    #[test]
    fn plain_response_parsed() {
        assert_eq!(
            parse_plain(b"\0guest\0secret"),
            Some(("guest".to_owned(), "secret".to_owned()))
        );
        assert_eq!(parse_plain(b"guest"), None);
    }

    #[test]
    fn amqplain_response_parsed() {
        let credentials = Credentials::new(LongString::from("user"), LongString::from("pw"));
        let response = credentials.sasl_auth_string(SASLMechanism::AMQPlain);
        assert_eq!(
            parse_amqplain(response.as_bytes()),
            Some(("user".to_owned(), "pw".to_owned()))
        );
    }
}
