//! Errors of the broker process and AMQP exceptions sent to peers.

use std::net::SocketAddr;

use amq_protocol::protocol::{AMQPHardError, AMQPSoftError};

/// Failures that stop a listener or a connection.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to bind {what} listener on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("admin server failed: {0}")]
    Admin(#[source] std::io::Error),
    #[error("socket I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("peer sent a malformed frame: {0}")]
    MalformedFrame(String),
    #[error("peer closed the connection in the middle of a frame")]
    TruncatedFrame,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether an exception closes one channel (soft error) or the whole connection (hard error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    Channel,
    Connection,
}

/// An AMQP exception: a reply code from the AMQP 0-9-1 spec and the text sent with
/// channel.close or connection.close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Exception {
    pub(crate) scope: Scope,
    pub(crate) code: u16,
    pub(crate) text: String,
}

impl Exception {
    /// A soft error that closes the channel.
    pub(crate) fn channel(kind: AMQPSoftError, text: impl Into<String>) -> Self {
        Exception {
            scope: Scope::Channel,
            code: kind.get_id(),
            text: prefixed(&kind.to_string(), text),
        }
    }

    /// A hard error that closes the connection.
    pub(crate) fn connection(kind: AMQPHardError, text: impl Into<String>) -> Self {
        Exception {
            scope: Scope::Connection,
            code: kind.get_id(),
            text: prefixed(&kind.to_string(), text),
        }
    }

    /// A connection close with a soft-error code, as RabbitMQ sends 403 for a refused login.
    pub(crate) fn connection_with(kind: AMQPSoftError, text: impl Into<String>) -> Self {
        Exception {
            scope: Scope::Connection,
            code: kind.get_id(),
            text: prefixed(&kind.to_string(), text),
        }
    }

    pub(crate) fn not_found(text: impl Into<String>) -> Self {
        Self::channel(AMQPSoftError::NOTFOUND, text)
    }

    pub(crate) fn precondition_failed(text: impl Into<String>) -> Self {
        Self::channel(AMQPSoftError::PRECONDITIONFAILED, text)
    }

    pub(crate) fn access_refused(text: impl Into<String>) -> Self {
        Self::channel(AMQPSoftError::ACCESSREFUSED, text)
    }

    pub(crate) fn resource_locked(text: impl Into<String>) -> Self {
        Self::channel(AMQPSoftError::RESOURCELOCKED, text)
    }

    pub(crate) fn not_implemented(text: impl Into<String>) -> Self {
        Self::connection(AMQPHardError::NOTIMPLEMENTED, text)
    }

    pub(crate) fn unexpected_frame(text: impl Into<String>) -> Self {
        Self::connection(AMQPHardError::UNEXPECTEDFRAME, text)
    }

    pub(crate) fn channel_error(text: impl Into<String>) -> Self {
        Self::connection(AMQPHardError::CHANNELERROR, text)
    }

    pub(crate) fn frame_error(text: impl Into<String>) -> Self {
        Self::connection(AMQPHardError::FRAMEERROR, text)
    }

    pub(crate) fn not_allowed(text: impl Into<String>) -> Self {
        Self::connection(AMQPHardError::NOTALLOWED, text)
    }
}

/// Formats the reply text the way RabbitMQ does (`NOT_FOUND - no queue 'x'`), cut to the
/// 255 bytes that a short string can carry.
fn prefixed(kind: &str, text: impl Into<String>) -> String {
    let mut reply = kind.replace('-', "_");
    reply.push_str(" - ");
    reply.push_str(&text.into());
    truncate_short(&mut reply);
    reply
}

/// Cuts `text` to at most 255 bytes at a character boundary.
pub(crate) fn truncate_short(text: &mut String) {
    const SHORT_STRING_MAX: usize = 255;
    if text.len() > SHORT_STRING_MAX {
        let mut end = SHORT_STRING_MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_text_names_kind() {
        let exception = Exception::not_found("no queue 'jobs' in vhost '/'");
        assert_eq!(exception.code, 404);
        assert_eq!(exception.scope, Scope::Channel);
        assert_eq!(exception.text, "NOT_FOUND - no queue 'jobs' in vhost '/'");
    }

    #[test]
    fn long_reply_text_truncated_at_char_boundary() {
        let exception = Exception::precondition_failed("é".repeat(300));
        assert!(exception.text.len() <= 255);
        assert!(exception.text.starts_with("PRECONDITION_FAILED - é"));
    }
}
