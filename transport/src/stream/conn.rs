//! One dRPC connection (one yamux stream) as a sans-IO state machine: Go drpc's `drpcmanager` plus the stream
//! bookkeeping of `drpcstream`, without threads, timers or sockets.
//!
//! Call order, for a driver:
//! 1. feed whatever the transport delivered with [`Connection::handle_input`];
//! 2. take events with [`Connection::poll_event`] until it returns `Ok(None)` ("need more bytes"). Parsing happens
//!    here, lazily, so a driver that stops polling events stops buffering: that is the back-pressure Go gets from
//!    holding at most one undelivered message;
//! 3. act on events, calling the `send_*` methods, and write out [`Connection::poll_transmit`] and flush.
//!
//! A connection carries one stream at a time, and stream ids only go up: a packet for an older stream is dropped,
//! an Invoke for a newer one supersedes the current stream (Go cancels it locally; so do we, with
//! [`Event::Superseded`]). Coder opens one connection per call, so in practice every stream id is 1.
//!
//! ```text
//!              send Invoke (client) / recv Invoke (server)
//!   (none) ───────────────────────────────────────────────▶ Open
//!   Open ── send CloseSend ──▶ half-closed (local)  ── recv CloseSend ─▶ Finished
//!   Open ── recv CloseSend ──▶ half-closed (remote) ── send CloseSend ─▶ Finished
//!   any  ── send/recv Error, Close, Cancel; a newer stream's Invoke ───▶ Finished
//! ```

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::limits::Limits;
use crate::wire::frame::peek_header;
use crate::wire::{
    decode_metadata, encode_metadata, encode_packet, ErrorBody, Frame, FrameError, Id, Kind, Metadata, MetadataError,
    Packet, PacketAssembler, PacketError,
};

/// The most an empty input buffer keeps of the capacity it grew to.
const RETAINED_INPUT_CAPACITY: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Starts calls (Coder's agent side).
    Client,
    /// Answers calls (coderd's side).
    Server,
}

/// What the peer did, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Server only: a call starts. `metadata` is what the InvokeMetadata packet of the same stream carried.
    Invoke {
        stream: u64,
        method: String,
        metadata: Metadata,
    },
    Message {
        stream: u64,
        data: Bytes,
    },
    /// The peer will send nothing more on this stream (Go's `io.EOF` from `MsgRecv`).
    CloseSend {
        stream: u64,
    },
    /// The peer closed the stream ("remote closed the stream"); nothing more may be sent.
    Close {
        stream: u64,
    },
    /// The peer soft-cancelled the stream.
    Cancel {
        stream: u64,
    },
    /// The peer ended the stream with an error.
    Error {
        stream: u64,
        error: ErrorBody,
    },
    /// A newer stream started before this one finished; Go cancels the old one locally, without a packet.
    Superseded {
        stream: u64,
    },
}

/// Protocol errors. Every one of them ends the whole connection, as in Go drpc; the text is Go's where Go has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnError {
    #[error("protocol error: {0}")]
    Frame(#[from] FrameError),
    #[error("protocol error: {0}")]
    Packet(#[from] PacketError),
    #[error("internal error: unknown packet kind {0}")]
    UnknownKind(u8),
    #[error("protocol error: invoke on existing stream {stream}")]
    InvokeOnExistingStream { stream: u64 },
    #[error("protocol error: invoke sent to a client")]
    InvokeToClient,
    #[error("protocol error: {kind:?} for stream {stream} before its invoke")]
    PacketBeforeInvoke { stream: u64, kind: Kind },
    #[error("protocol error: {0}")]
    Metadata(#[from] MetadataError),
    #[error("protocol error: metadata of {len} bytes exceeds {max}")]
    MetadataTooLarge { len: usize, max: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("no such stream, or it has finished")]
    StreamFinished,
    #[error("the send side of the stream is closed")]
    SendClosed,
    #[error("only a client starts calls")]
    NotAClient,
}

#[derive(Debug)]
struct StreamState {
    id: u64,
    /// The message id of our next packet on this stream; each side counts from 1.
    next_send: u64,
    sent_close_send: bool,
    recv_close_send: bool,
    finished: bool,
}

impl StreamState {
    fn new(id: u64) -> Self {
        StreamState { id, next_send: 1, sent_close_send: false, recv_close_send: false, finished: false }
    }
}

#[derive(Debug)]
pub struct Connection {
    role: Role,
    limits: Limits,
    inbound: BytesMut,
    assembler: PacketAssembler,
    outbound: BytesMut,
    stream: Option<StreamState>,
    /// InvokeMetadata waiting for the Invoke of the same stream.
    pending_metadata: Option<(u64, Metadata)>,
    events: VecDeque<Event>,
    /// Once set, every later `poll_event` returns it again: the connection is dead.
    failed: Option<ConnError>,
}

impl Connection {
    pub fn new(role: Role, limits: Limits) -> Self {
        Connection {
            role,
            limits,
            inbound: BytesMut::new(),
            assembler: PacketAssembler::new(limits.max_packet_size),
            outbound: BytesMut::new(),
            stream: None,
            pending_metadata: None,
            events: VecDeque::new(),
            failed: None,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Input after a protocol error is dropped: the connection is dead and must not keep growing.
    pub fn handle_input(&mut self, data: &[u8]) {
        if self.failed.is_none() {
            self.inbound.extend_from_slice(data);
        }
    }

    /// Bytes received but not yet turned into events: at most the packet cap plus one frame header once events
    /// are polled, plus what the driver fed since.
    pub fn buffered_input(&self) -> usize {
        self.inbound.len() + self.assembler.buffered()
    }

    /// Memory the connection holds for input not yet turned into events: its buffers' capacities, which is what a
    /// memory budget has to count (growth can take a buffer's capacity up to twice what arrived).
    pub fn buffered_capacity(&self) -> usize {
        self.inbound.capacity() + self.assembler.buffered_capacity()
    }

    /// Whether anything received waits to be turned into events (or the connection has failed, which
    /// [`Connection::poll_event`] reports).
    pub fn has_pending_input(&self) -> bool {
        !self.events.is_empty() || !self.inbound.is_empty() || self.assembler.buffered() > 0 || self.failed.is_some()
    }

    /// The id of the stream in progress, if it has not finished.
    pub fn active_stream(&self) -> Option<u64> {
        self.stream.as_ref().filter(|s| !s.finished).map(|s| s.id)
    }

    pub fn poll_event(&mut self) -> Result<Option<Event>, ConnError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        loop {
            if let Some(event) = self.events.pop_front() {
                return Ok(Some(event));
            }
            match self.next_packet() {
                Ok(Some(packet)) => {
                    if let Err(err) = self.on_packet(packet) {
                        return Err(self.fail(err));
                    }
                }
                Ok(None) => return Ok(None),
                Err(err) => return Err(self.fail(err)),
            }
        }
    }

    /// Marks the connection dead and frees what it held for packets that will never be delivered.
    fn fail(&mut self, err: ConnError) -> ConnError {
        self.failed = Some(err.clone());
        self.inbound = BytesMut::new();
        self.assembler = PacketAssembler::new(self.limits.max_packet_size);
        err
    }

    fn next_packet(&mut self) -> Result<Option<Packet>, ConnError> {
        let max = self.limits.max_packet_size;
        while let Some(frame) = Frame::decode(&mut self.inbound, max)? {
            if let Some(packet) = self.assembler.push(frame)? {
                return Ok(Some(packet));
            }
        }
        // The frame at the front is incomplete. Check it against its packet now: otherwise a packet just under the
        // cap and a next frame just under the cap would both be held until that frame completes.
        if let Some((id, data_len)) = peek_header(&self.inbound, max)? {
            self.assembler.admit(id, data_len)?;
        }
        // A buffer a large message grew is not kept for the small ones that follow.
        if self.inbound.is_empty() && self.inbound.capacity() > RETAINED_INPUT_CAPACITY {
            self.inbound = BytesMut::new();
        }
        Ok(None)
    }

    fn current_id(&self) -> Option<u64> {
        self.stream.as_ref().map(|s| s.id)
    }

    /// A newer stream is starting: the current one, if unfinished, is cancelled locally.
    fn supersede(&mut self, newer: u64) {
        if let Some(stream) = self.stream.as_mut() {
            if stream.id < newer && !stream.finished {
                stream.finished = true;
                self.events.push_back(Event::Superseded { stream: stream.id });
            }
        }
    }

    fn on_packet(&mut self, packet: Packet) -> Result<(), ConnError> {
        let stream = packet.id.stream;
        if let Kind::Unknown(code) = packet.kind {
            // The Control flag asks receivers that do not understand a packet to ignore it.
            return if packet.control { Ok(()) } else { Err(ConnError::UnknownKind(code)) };
        }
        if matches!(self.current_id(), Some(current) if stream < current) {
            // A late packet of an older stream: harmless, dropped as Go's manager does.
            return Ok(());
        }
        match packet.kind {
            Kind::Invoke | Kind::InvokeMetadata if self.role == Role::Client => Err(ConnError::InvokeToClient),
            Kind::InvokeMetadata => {
                if self.current_id() == Some(stream) {
                    return Err(ConnError::InvokeOnExistingStream { stream });
                }
                if packet.data.len() > self.limits.max_metadata_size {
                    return Err(ConnError::MetadataTooLarge {
                        len: packet.data.len(),
                        max: self.limits.max_metadata_size,
                    });
                }
                self.supersede(stream);
                self.pending_metadata = Some((stream, decode_metadata(&packet.data)?));
                Ok(())
            }
            Kind::Invoke => {
                if self.current_id() == Some(stream) {
                    return Err(ConnError::InvokeOnExistingStream { stream });
                }
                self.supersede(stream);
                let metadata = match self.pending_metadata.take() {
                    Some((id, metadata)) if id == stream => metadata,
                    _ => Metadata::new(),
                };
                self.stream = Some(StreamState::new(stream));
                self.events.push_back(Event::Invoke {
                    stream,
                    method: String::from_utf8_lossy(&packet.data).into_owned(),
                    metadata,
                });
                Ok(())
            }
            kind => self.on_stream_packet(stream, kind, packet.data),
        }
    }

    fn on_stream_packet(&mut self, stream: u64, kind: Kind, data: Bytes) -> Result<(), ConnError> {
        let Some(state) = self.stream.as_mut().filter(|s| s.id == stream) else {
            if kind == Kind::Message {
                // Go would wait for an Invoke that never comes; a defined end is kinder to both sides.
                return Err(ConnError::PacketBeforeInvoke { stream, kind });
            }
            // Go cancels the current stream when a newer id shows up, then drops what it cannot deliver.
            self.supersede(stream);
            return Ok(());
        };
        if state.finished {
            return Ok(());
        }
        let event = match kind {
            Kind::Message if state.recv_close_send => return Ok(()),
            // A repeated CloseSend changes nothing: the reader saw its one EOF (Go treats it the same).
            Kind::CloseSend if state.recv_close_send => return Ok(()),
            Kind::Message => Event::Message { stream, data },
            Kind::CloseSend => {
                state.recv_close_send = true;
                state.finished = state.sent_close_send;
                Event::CloseSend { stream }
            }
            Kind::Close => {
                state.finished = true;
                Event::Close { stream }
            }
            Kind::Cancel => {
                state.finished = true;
                Event::Cancel { stream }
            }
            Kind::Error => {
                state.finished = true;
                Event::Error { stream, error: ErrorBody::decode(&data) }
            }
            Kind::Invoke | Kind::InvokeMetadata | Kind::Unknown(_) => {
                unreachable!("handled by on_packet")
            }
        };
        self.events.push_back(event);
        Ok(())
    }

    /// Client: starts a call on a new stream. Invoke (and InvokeMetadata when there is any) are queued but, as in
    /// Go, left for the caller to flush together with the first message.
    pub fn start_call(&mut self, method: &str, metadata: &Metadata) -> Result<u64, SendError> {
        if self.role != Role::Client {
            return Err(SendError::NotAClient);
        }
        let id = self.current_id().map_or(1, |id| id + 1);
        if let Some(old) = self.stream.as_mut() {
            old.finished = true;
        }
        let mut state = StreamState::new(id);
        if !metadata.is_empty() {
            let body = encode_metadata(metadata);
            encode_packet(
                &mut self.outbound,
                Id::new(id, state.next_send),
                Kind::InvokeMetadata,
                &body,
                self.limits.split_size,
            );
            state.next_send += 1;
        }
        encode_packet(
            &mut self.outbound,
            Id::new(id, state.next_send),
            Kind::Invoke,
            method.as_bytes(),
            self.limits.split_size,
        );
        state.next_send += 1;
        self.stream = Some(state);
        Ok(id)
    }

    fn sendable(&mut self, stream: u64) -> Result<&mut StreamState, SendError> {
        self.stream.as_mut().filter(|s| s.id == stream && !s.finished).ok_or(SendError::StreamFinished)
    }

    fn queue(&mut self, stream: u64, kind: Kind, data: &[u8]) -> Result<(), SendError> {
        let split = self.limits.split_size;
        let state = self.sendable(stream)?;
        if state.sent_close_send && matches!(kind, Kind::Message | Kind::CloseSend) {
            return Err(SendError::SendClosed);
        }
        let id = Id::new(stream, state.next_send);
        state.next_send += 1;
        match kind {
            Kind::CloseSend => {
                state.sent_close_send = true;
                state.finished = state.recv_close_send;
            }
            Kind::Error | Kind::Close | Kind::Cancel => state.finished = true,
            _ => {}
        }
        encode_packet(&mut self.outbound, id, kind, data, split);
        Ok(())
    }

    pub fn send_message(&mut self, stream: u64, data: &[u8]) -> Result<(), SendError> {
        self.queue(stream, Kind::Message, data)
    }

    pub fn send_close_send(&mut self, stream: u64) -> Result<(), SendError> {
        self.queue(stream, Kind::CloseSend, &[])
    }

    pub fn send_error(&mut self, stream: u64, code: u64, message: &str) -> Result<(), SendError> {
        self.queue(stream, Kind::Error, &ErrorBody::encode(code, message))
    }

    pub fn send_close(&mut self, stream: u64) -> Result<(), SendError> {
        self.queue(stream, Kind::Close, &[])
    }

    pub fn send_cancel(&mut self, stream: u64) -> Result<(), SendError> {
        self.queue(stream, Kind::Cancel, &[])
    }

    /// Whether the stream has ended both ways, or was ended by Error, Close or Cancel.
    pub fn is_finished(&self, stream: u64) -> bool {
        self.stream.as_ref().is_none_or(|s| s.id != stream || s.finished)
    }

    /// Bytes waiting to be written to the transport.
    pub fn pending_transmit(&self) -> usize {
        self.outbound.len()
    }

    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        if self.outbound.is_empty() {
            None
        } else {
            Some(self.outbound.split().freeze())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET_MANIFEST: &[u8] = b"/coder.agent.v2.Agent/GetManifest";

    fn client_request() -> Vec<u8> {
        let mut client = Connection::new(Role::Client, Limits::default());
        let id = client.start_call(std::str::from_utf8(GET_MANIFEST).unwrap(), &Metadata::new()).unwrap();
        client.send_message(id, b"").unwrap();
        client.send_close_send(id).unwrap();
        client.poll_transmit().unwrap().to_vec()
    }

    #[test]
    fn client_writes_the_captured_45_bytes() {
        let bytes = client_request();
        assert_eq!(bytes.len(), 45);
        assert_eq!(&bytes[..4], &[0x03, 0x01, 0x01, 0x21]);
        assert_eq!(&bytes[37..], &[0x05, 0x01, 0x02, 0x00, 0x0d, 0x01, 0x03, 0x00]);
    }

    #[test]
    fn server_sees_a_unary_call_and_answers_like_go() {
        let mut server = Connection::new(Role::Server, Limits::default());
        server.handle_input(&client_request());
        assert_eq!(
            server.poll_event().unwrap(),
            Some(Event::Invoke {
                stream: 1,
                method: "/coder.agent.v2.Agent/GetManifest".into(),
                metadata: Metadata::new()
            })
        );
        assert_eq!(server.poll_event().unwrap(), Some(Event::Message { stream: 1, data: Bytes::new() }));
        assert_eq!(server.poll_event().unwrap(), Some(Event::CloseSend { stream: 1 }));
        assert_eq!(server.poll_event().unwrap(), None);
        server.send_message(1, &[0x7a, 0x04, b'm', b'a', b'i', b'n']).unwrap();
        server.send_close_send(1).unwrap();
        assert!(server.is_finished(1));
        assert_eq!(
            &server.poll_transmit().unwrap()[..],
            &[0x05, 0x01, 0x01, 0x06, 0x7a, 0x04, b'm', b'a', b'i', b'n', 0x0d, 0x01, 0x02, 0x00]
        );
        // The client's trailing Close for a finished stream is dropped quietly.
        server.handle_input(&[0x0b, 0x01, 0x04, 0x00]);
        assert_eq!(server.poll_event().unwrap(), None);
    }

    #[test]
    fn metadata_rides_with_its_invoke() {
        let mut client = Connection::new(Role::Client, Limits::default());
        let md: Metadata = [("k".to_string(), "v".to_string())].into();
        let id = client.start_call("/a.B/C", &md).unwrap();
        client.send_message(id, b"x").unwrap();
        let bytes = client.poll_transmit().unwrap();
        assert_eq!(&bytes[..12], &[0x0f, 0x01, 0x01, 0x08, 0x0a, 0x06, 0x0a, 0x01, b'k', 0x12, 0x01, b'v']);
        let mut server = Connection::new(Role::Server, Limits::default());
        server.handle_input(&bytes);
        match server.poll_event().unwrap() {
            Some(Event::Invoke { metadata, .. }) => assert_eq!(metadata, md),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_newer_invoke_supersedes_and_older_packets_are_dropped() {
        let mut server = Connection::new(Role::Server, Limits::default());
        server.handle_input(&[0x03, 0x01, 0x01, 0x02, b'/', b'a']);
        server.handle_input(&[0x03, 0x02, 0x01, 0x02, b'/', b'b']);
        assert!(matches!(server.poll_event().unwrap(), Some(Event::Invoke { stream: 1, .. })));
        assert_eq!(server.poll_event().unwrap(), Some(Event::Superseded { stream: 1 }));
        assert!(matches!(server.poll_event().unwrap(), Some(Event::Invoke { stream: 2, .. })));
        // An answer for stream 1 can no longer be sent.
        assert_eq!(server.send_message(1, b""), Err(SendError::StreamFinished));
    }

    #[test]
    fn protocol_violations_end_the_connection_and_stay_ended() {
        let cases: &[(&[u8], &str)] = &[
            (&[0x05, 0x01, 0x01, 0x00], "before its invoke"),
            (&[0x03, 0x01, 0x01, 0x00, 0x03, 0x01, 0x02, 0x00], "invoke on existing stream"),
            (&[0x11, 0x01, 0x01, 0x00], "unknown packet kind 8"),
            (&[0x03, 0x00, 0x01, 0x00], "id monotonicity violation"),
            (&[0x04, 0x01, 0x01, 0x01, b'a', 0x03, 0x01, 0x01, 0x00], "packet kind change"),
        ];
        for (bytes, text) in cases {
            let mut server = Connection::new(Role::Server, Limits::default());
            server.handle_input(bytes);
            let err = loop {
                match server.poll_event() {
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("no error for {bytes:02x?}"),
                    Err(err) => break err,
                }
            };
            assert!(err.to_string().contains(text), "{err} for {bytes:02x?}");
            assert_eq!(server.poll_event(), Err(err));
        }
    }

    #[test]
    fn control_packets_of_unknown_kind_are_ignored() {
        let mut server = Connection::new(Role::Server, Limits::default());
        // kind 9 with Control, then a normal invoke
        server.handle_input(&[0x80 | (9 << 1) | 1, 0x01, 0x01, 0x00, 0x03, 0x01, 0x02, 0x02, b'/', b'a']);
        assert!(matches!(server.poll_event().unwrap(), Some(Event::Invoke { stream: 1, .. })));
    }

    #[test]
    fn error_and_cancel_finish_the_stream() {
        let mut client = Connection::new(Role::Client, Limits::default());
        let id = client.start_call("/a.B/C", &Metadata::new()).unwrap();
        client.handle_input(&[0x07, 0x01, 0x01, 0x09, 0, 0, 0, 0, 0, 0, 0, 12, b'x']);
        assert_eq!(
            client.poll_event().unwrap(),
            Some(Event::Error { stream: id, error: ErrorBody { code: 12, message: "x".into() } })
        );
        assert!(client.is_finished(id));
        let mut server = Connection::new(Role::Server, Limits::default());
        server.handle_input(&[0x03, 0x01, 0x01, 0x00, 0x89, 0x01, 0x02, 0x00]);
        assert!(matches!(server.poll_event().unwrap(), Some(Event::Invoke { .. })));
        assert_eq!(server.poll_event().unwrap(), Some(Event::Cancel { stream: 1 }));
    }

    #[test]
    fn invoke_from_a_server_is_refused_by_a_client() {
        let mut client = Connection::new(Role::Client, Limits::default());
        client.handle_input(&[0x03, 0x01, 0x01, 0x00]);
        assert_eq!(client.poll_event(), Err(ConnError::InvokeToClient));
    }
}
