//! Buffered frame I/O on one AMQP socket.
//!
//! The socket is split in two halves so that the session can wait for incoming bytes and for
//! the socket to accept outgoing bytes at the same time: a peer that stops reading while it
//! writes (as blocking clients do) can never deadlock the broker. Frames are encoded and decoded
//! by `amq_protocol::frame`.

use std::time::Instant;

use amq_protocol::frame::{AMQPFrame, WriteContext, gen_frame, parse_frame};
use amq_protocol::protocol::AMQPClass;
use amq_protocol::types::ChannelId;
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::error::{Error, Result};

/// Bytes in a frame header: type (1 octet), channel (2 octets), payload size (4 octets).
const FRAME_HEADER_SIZE: usize = 7;
/// Bytes that a frame adds around its payload: the header and the frame-end octet.
pub(crate) const FRAME_OVERHEAD: usize = FRAME_HEADER_SIZE + 1;
/// Initial capacity of the read buffer, in bytes.
const READ_BUFFER_CAPACITY: usize = 64 * 1024;

/// Reading half of a connection: buffers bytes and cuts them into frames.
#[derive(Debug)]
pub(crate) struct FrameReader {
    /// Reading half of the socket.
    socket: OwnedReadHalf,
    /// Bytes received but not yet parsed into a frame.
    buffer: BytesMut,
    /// Largest frame accepted, in bytes including the overhead; raised after connection.tune.
    frame_max: usize,
    /// When the last byte arrived, for the heartbeat timeout.
    pub(crate) last_read: Instant,
}

impl FrameReader {
    pub(crate) fn new(socket: OwnedReadHalf, frame_max: u32) -> Self {
        FrameReader {
            socket,
            buffer: BytesMut::with_capacity(READ_BUFFER_CAPACITY),
            frame_max: frame_max as usize,
            last_read: Instant::now(),
        }
    }

    pub(crate) fn set_frame_max(&mut self, frame_max: u32) {
        self.frame_max = frame_max as usize;
    }

    /// Parses the next complete frame from the buffer.
    ///
    /// Returns `Ok(None)` when more bytes are needed. A frame larger than `frame_max` is a
    /// FRAME_ERROR (501) and is rejected from its header, before its payload is buffered.
    pub(crate) fn parse_frame(&mut self) -> Result<Option<AMQPFrame>, FrameError> {
        if self.buffer.len() >= FRAME_HEADER_SIZE && self.buffer[0] != b'A' {
            let size = u32::from_be_bytes([
                self.buffer[3],
                self.buffer[4],
                self.buffer[5],
                self.buffer[6],
            ]);
            let frame_size = size as usize + FRAME_OVERHEAD;
            if frame_size > self.frame_max {
                return Err(FrameError::TooLarge {
                    size: frame_size,
                    max: self.frame_max,
                });
            }
        }

        let (consumed, frame) = match parse_frame(&self.buffer[..]) {
            Ok((rest, frame)) => (self.buffer.len() - rest.len(), frame),
            Err(err) if err.is_incomplete() => return Ok(None),
            Err(err) => return Err(FrameError::Malformed(err.to_string())),
        };
        self.buffer.advance(consumed);
        Ok(Some(frame))
    }

    /// Reads more bytes from the socket into the buffer. Returns `false` when the peer closed
    /// the connection between frames; a close in the middle of a frame is an error.
    pub(crate) async fn read_more(&mut self) -> Result<bool> {
        let read = self.socket.read_buf(&mut self.buffer).await?;
        if read == 0 {
            return if self.buffer.is_empty() {
                Ok(false)
            } else {
                Err(Error::TruncatedFrame)
            };
        }
        self.last_read = Instant::now();
        Ok(true)
    }
}

/// Error from cutting the received bytes into a frame.
#[derive(Debug)]
pub(crate) enum FrameError {
    TooLarge { size: usize, max: usize },
    Malformed(String),
}

/// Writing half of a connection: frames are encoded into one buffer, and the session writes
/// the buffer whenever the socket accepts bytes, so that many frames go out in one system call.
#[derive(Debug)]
pub(crate) struct FrameWriter {
    /// Writing half of the socket.
    socket: OwnedWriteHalf,
    /// Encoded frames; bytes before `written` have already been sent.
    buffer: Vec<u8>,
    /// How many bytes at the start of `buffer` have been sent.
    written: usize,
    /// Reused payload buffer for content body frames, which `AMQPFrame::Body` owns.
    body_scratch: Vec<u8>,
    /// When bytes were last sent, so that heartbeats are only sent on an idle connection.
    pub(crate) last_write: Instant,
}

impl FrameWriter {
    pub(crate) fn new(socket: OwnedWriteHalf) -> Self {
        FrameWriter {
            socket,
            buffer: Vec::with_capacity(READ_BUFFER_CAPACITY),
            written: 0,
            body_scratch: Vec::new(),
            last_write: Instant::now(),
        }
    }

    /// Bytes encoded but not yet sent.
    pub(crate) fn pending(&self) -> usize {
        self.buffer.len() - self.written
    }

    /// Appends one encoded frame to the outgoing buffer.
    pub(crate) fn push(&mut self, frame: &AMQPFrame) {
        self.compact();
        let buffer = std::mem::take(&mut self.buffer);
        let (buffer, _) = gen_frame(frame)(WriteContext::from(buffer))
            .expect("encoding a frame into a growable buffer")
            .into_inner();
        self.buffer = buffer;
    }

    /// Appends a method frame.
    pub(crate) fn push_method(&mut self, channel: ChannelId, method: AMQPClass) {
        self.push(&AMQPFrame::Method(channel, method));
    }

    /// Appends a content header frame that was encoded once for channel 0, with its channel
    /// field set to `channel` (octets 1 and 2 of the frame header, big-endian).
    pub(crate) fn push_encoded_header(&mut self, channel: ChannelId, encoded: &[u8]) {
        self.compact();
        let start = self.buffer.len();
        self.buffer.extend_from_slice(encoded);
        self.buffer[start + 1..start + 3].copy_from_slice(&channel.to_be_bytes());
    }

    /// Appends the content body frames of `body`, each at most `frame_max` bytes long.
    pub(crate) fn push_body(&mut self, channel: ChannelId, body: &[u8], frame_max: usize) {
        let chunk_size = frame_max - FRAME_OVERHEAD;
        for chunk in body.chunks(chunk_size) {
            let mut payload = std::mem::take(&mut self.body_scratch);
            payload.clear();
            payload.extend_from_slice(chunk);
            let frame = AMQPFrame::Body(channel, payload);
            self.push(&frame);
            if let AMQPFrame::Body(_, payload) = frame {
                self.body_scratch = payload;
            }
        }
    }

    /// Writes part of the outgoing buffer; cancel-safe, so it can race other events.
    pub(crate) async fn write_some(&mut self) -> Result<()> {
        let written = self.socket.write(&self.buffer[self.written..]).await?;
        if written == 0 {
            return Err(Error::Io(std::io::ErrorKind::WriteZero.into()));
        }
        self.written += written;
        self.last_write = Instant::now();
        if self.written == self.buffer.len() {
            self.buffer.clear();
            self.written = 0;
        }
        Ok(())
    }

    /// Writes everything buffered, then flushes the socket.
    pub(crate) async fn flush_all(&mut self) -> Result<()> {
        while self.pending() > 0 {
            self.write_some().await?;
        }
        self.socket.flush().await?;
        Ok(())
    }

    /// Drops already-sent bytes from the front once they make up most of the buffer.
    fn compact(&mut self) {
        if self.written > 0 && self.written >= self.buffer.len() / 2 {
            self.buffer.drain(..self.written);
            self.written = 0;
        }
    }
}
