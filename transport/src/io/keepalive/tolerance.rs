//! Frames hashicorp/yamux tolerates and the `yamux` crate would not: what this layer changes so a Go peer keeps its
//! session, and what it deliberately leaves alone.
//!
//! Checked against hashicorp/yamux v0.1.2 (`session.go`: `recvLoop`, `handleStreamMessage`, `handlePing`,
//! `handleGoAway`, `incomingStream`; `stream.go`: `processFlags`, `incrSendWindow`, `readData`) and the crate 0.14.1
//! (`connection.rs`: `on_frame`, `on_data`, `on_window_update`, `on_ping`; `connection/rtt.rs`; `frame/io.rs`).
//!
//! **Changed here** (Ping frames; hashicorp's `handlePing` looks at SYN only and ignores the stream id):
//! - *Ping|ACK whose opaque matches no outstanding ping* (unsolicited, duplicate, late): hashicorp looks the id up
//!   in its ping map and ignores a miss. The crate's `Rtt::handle_pong` answers anything but the pong of its one
//!   outstanding ping with GoAway(1), and the session ends. This layer passes the crate only the pong it waits for:
//!   the crate does ping with our config (`Rtt::next_ping` is unconditional: ping 0 at once, the next 10 s after
//!   each pong), so the id of each Ping|SYN it writes is noted and only its first matching answer goes through.
//!   Our own keepalive pongs (top bit set) never reach it; any other answer is dropped.
//! - *Ping with neither SYN nor ACK*: hashicorp takes it as an answer (anything without SYN is); the crate takes it
//!   as a request (anything without ACK is) and answers. Handled as an answer, as above.
//! - *Ping with SYN and ACK*: hashicorp answers it (SYN wins); the crate takes it as a pong (ACK wins) and, unless
//!   it happens to match, sends GoAway(1). Passed to the crate as a plain Ping|SYN.
//! - *Ping|SYN on a stream id other than 0*: hashicorp answers on stream 0 whatever the id; the crate answers only
//!   for stream 0 or a live stream and stays silent otherwise, which a pinging peer takes for a dead session.
//!   Passed to the crate on stream 0.
//!
//! **Same in both, nothing to do**: version ≠ 0 and type > 3 end the session; a duplicate SYN → GoAway(1);
//! Data past the receive window (also on a SYN) → GoAway(1) (our windows are fixed at 256 KiB like Go's);
//! Data, WindowUpdate, ACK, FIN and RST for unknown or removed streams are ignored (Data bodies drained); Data after
//! the peer's FIN is queued and read; GoAway(1), GoAway(2) and unknown GoAway codes end the session.
//!
//! **Go is stricter, left alone**: a FIN on a stream already remote-closed (hashicorp `ErrUnexpectedFlag`, fatal;
//! the crate ignores it). We never send one.
//!
//! **Go tolerates, the crate refuses, kept on purpose** (each pinned by `transport/tests/bad_input.rs` as the
//! bad-input anchors ask; a hashicorp peer of the client role never sends them):
//! - GoAway(0): hashicorp only stops its own `Open`s and keeps the session; the crate ends it. Anchor §4.4 item 17
//!   wants a SYN after a client's GoAway refused, and a Go agent never sends GoAway (`Session.Close` just closes).
//! - SYN on stream 0 or on a server-parity (even) id: hashicorp does not check; the crate → GoAway(1). A hashicorp
//!   client numbers its streams 1, 3, 5…; serving other ids would mean renumbering streams in both directions.
//! - WindowUpdate whose delta overflows the send window (u32): hashicorp wraps around; the crate → GoAway(1)
//!   (CVE-2026-31814's fix). A Go peer never grants more than its 256 KiB receive window.
//! - Data longer than 1 MiB for an unknown stream: hashicorp drains it; the crate fails the session from the
//!   header alone, so a declared length up to 2^32−1 is never waited for. On a live stream both fail.
//! - A SYN past `max_streams`: hashicorp has no cap (it RSTs past a full 256-stream accept backlog); the crate
//!   → GoAway(2). The cap is ours to bound memory.
//! - Data after the peer's own RST on a stream the server still holds: hashicorp has dropped the stream and
//!   drains; the crate still counts it against the window (GoAway(1) only once past it).

use super::{FLAG_ACK, FLAG_SYN, HEADER_LEN, OUR_PING, TYPE_PING};

/// What becomes of an inbound frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Inbound {
    /// Goes to the crate (perhaps rewritten).
    Pass,
    /// The answer to one of our keepalive pings: taken out.
    OurPong(u32),
    /// An answer nobody waits for: taken out, as hashicorp ignores it.
    Drop,
}

/// The crate's round-trip ping, as seen in the bytes it writes.
#[derive(Debug, Default)]
pub(super) struct PingLedger {
    /// The opaque of the crate's last Ping|SYN, until its answer has been passed on.
    crate_ping: Option<u32>,
}

fn flags(header: &[u8; HEADER_LEN]) -> u16 {
    u16::from_be_bytes([header[2], header[3]])
}

fn opaque(header: &[u8; HEADER_LEN]) -> u32 {
    u32::from_be_bytes([header[8], header[9], header[10], header[11]])
}

/// Sets the flags and puts the frame on the session's stream id, 0.
fn rewrite(header: &mut [u8; HEADER_LEN], flags: u16) {
    header[2..4].copy_from_slice(&flags.to_be_bytes());
    header[4..8].fill(0);
}

impl PingLedger {
    /// A whole header the crate wrote.
    pub(super) fn outbound(&mut self, header: &[u8; HEADER_LEN]) {
        // The crate's answers to the peer's pings carry ACK only; its own pings SYN only.
        if header[1] == TYPE_PING && flags(header) & FLAG_SYN != 0 {
            self.crate_ping = Some(opaque(header));
        }
    }

    /// A whole header from the peer, before the crate sees it; Ping headers may be rewritten in place.
    pub(super) fn inbound(&mut self, header: &mut [u8; HEADER_LEN]) -> Inbound {
        if header[1] != TYPE_PING {
            return Inbound::Pass;
        }
        let opaque = opaque(header);
        if flags(header) & FLAG_SYN != 0 {
            rewrite(header, FLAG_SYN);
            return Inbound::Pass;
        }
        if self.crate_ping == Some(opaque) {
            self.crate_ping = None;
            rewrite(header, FLAG_ACK);
            return Inbound::Pass;
        }
        if opaque & OUR_PING != 0 {
            return Inbound::OurPong(opaque);
        }
        Inbound::Drop
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ping_frame, TYPE_DATA};
    use super::*;

    fn frame(kind: u8, flags: u16, stream: u32, opaque: u32) -> [u8; HEADER_LEN] {
        let mut h = ping_frame(flags, opaque);
        h[1] = kind;
        h[4..8].copy_from_slice(&stream.to_be_bytes());
        h
    }

    #[test]
    fn only_the_pong_the_crate_waits_for_reaches_it_once() {
        let mut ledger = PingLedger::default();
        // Before the crate pings, no answer is expected.
        assert_eq!(ledger.inbound(&mut ping_frame(FLAG_ACK, 0)), Inbound::Drop);
        ledger.outbound(&ping_frame(FLAG_SYN, 0));
        assert_eq!(ledger.inbound(&mut ping_frame(FLAG_ACK, 7)), Inbound::Drop);
        let mut pong = frame(TYPE_PING, FLAG_ACK | 0x8, 5, 0);
        assert_eq!(ledger.inbound(&mut pong), Inbound::Pass);
        assert_eq!(pong, ping_frame(FLAG_ACK, 0), "passed as a plain pong on stream 0");
        assert_eq!(ledger.inbound(&mut ping_frame(FLAG_ACK, 0)), Inbound::Drop, "a duplicate");
        // The crate's answer to a peer ping does not count as a ping of its own.
        ledger.outbound(&ping_frame(FLAG_ACK, 9));
        assert_eq!(ledger.inbound(&mut ping_frame(FLAG_ACK, 9)), Inbound::Drop);
        // A flagless Ping is an answer, as hashicorp reads it.
        ledger.outbound(&ping_frame(FLAG_SYN, 1));
        let mut flagless = ping_frame(0, 1);
        assert_eq!(ledger.inbound(&mut flagless), Inbound::Pass);
        assert_eq!(flagless, ping_frame(FLAG_ACK, 1));
    }

    #[test]
    fn our_pongs_are_taken_out_and_requests_always_pass_as_plain_pings() {
        let mut ledger = PingLedger::default();
        assert_eq!(ledger.inbound(&mut ping_frame(FLAG_ACK, OUR_PING | 3)), Inbound::OurPong(OUR_PING | 3));
        assert_eq!(ledger.inbound(&mut ping_frame(0, OUR_PING | 4)), Inbound::OurPong(OUR_PING | 4));
        for (flags, stream) in [(FLAG_SYN, 0), (FLAG_SYN | FLAG_ACK, 0), (FLAG_SYN, 9), (FLAG_SYN | 0xfff0, 2)] {
            let mut ping = frame(TYPE_PING, flags, stream, OUR_PING | 5);
            assert_eq!(ledger.inbound(&mut ping), Inbound::Pass);
            assert_eq!(ping, ping_frame(FLAG_SYN, OUR_PING | 5), "flags {flags:#x} stream {stream}");
        }
        let data = frame(TYPE_DATA, FLAG_ACK, 1, 0);
        let mut same = data;
        assert_eq!(ledger.inbound(&mut same), Inbound::Pass);
        assert_eq!(same, data);
    }
}
