//! The relay's counters, rendered on `/metrics` with the tailnet service's.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Why a packet was not delivered; tailscale's drop reasons, under the same names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// No client has the destination key.
    UnknownDest,
    /// The destination left before the packet was written to it.
    GoneDisconnected,
    /// The destination's queue was full: its oldest packet made room.
    QueueHead,
    /// The relay's queued bytes were at their limit and the destination had nothing queued to drop.
    QueueTail,
    /// Writing to the destination failed.
    WriteError,
}

impl DropReason {
    const ALL: [DropReason; 5] = [
        DropReason::UnknownDest,
        DropReason::GoneDisconnected,
        DropReason::QueueHead,
        DropReason::QueueTail,
        DropReason::WriteError,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropReason::UnknownDest => "unknown_dest",
            DropReason::GoneDisconnected => "gone_disconnected",
            DropReason::QueueHead => "queue_head",
            DropReason::QueueTail => "queue_tail",
            DropReason::WriteError => "write_error",
        }
    }
}

#[derive(Debug, Default)]
pub struct RelayStats {
    /// Connections logged in now.
    pub connections: AtomicI64,
    /// Upgrades accepted (logged in or not).
    pub accepts: AtomicU64,
    /// Upgrades refused at the connection cap.
    pub refused: AtomicU64,
    /// Connections ended for a protocol error (bad login, a frame over its limit, a mesh frame).
    pub protocol_errors: AtomicU64,
    pub packets_received: AtomicU64,
    pub bytes_received: AtomicU64,
    pub packets_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub peer_gone_frames: AtomicU64,
    /// Bytes of packets queued to clients now, relay-wide.
    pub queued_bytes: AtomicI64,
    drops: [AtomicU64; 5],
}

impl RelayStats {
    pub fn record_drop(&self, reason: DropReason) {
        if let Some(i) = DropReason::ALL.iter().position(|r| *r == reason) {
            self.drops[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn drops(&self, reason: DropReason) -> u64 {
        DropReason::ALL.iter().position(|r| *r == reason).map_or(0, |i| self.drops[i].load(Ordering::Relaxed))
    }

    pub fn total_drops(&self) -> u64 {
        self.drops.iter().map(|d| d.load(Ordering::Relaxed)).sum()
    }

    pub fn render(&self, out: &mut String) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let series: [(&str, &str, &str, u64); 10] = [
            (
                "derp_connections",
                "gauge",
                "Clients logged in to the embedded DERP relay now.",
                self.connections.load(Ordering::Relaxed).max(0) as u64,
            ),
            ("derp_accepts_total", "counter", "DERP connections upgraded.", load(&self.accepts)),
            ("derp_refused_total", "counter", "DERP upgrades refused at the connection limit.", load(&self.refused)),
            (
                "derp_protocol_errors_total",
                "counter",
                "DERP connections ended for breaking the protocol or a limit.",
                load(&self.protocol_errors),
            ),
            (
                "derp_packets_received_total",
                "counter",
                "Packets clients sent to the relay.",
                load(&self.packets_received),
            ),
            (
                "derp_bytes_received_total",
                "counter",
                "Packet bytes clients sent to the relay.",
                load(&self.bytes_received),
            ),
            (
                "derp_packets_relayed_total",
                "counter",
                "Packets written to their destination.",
                load(&self.packets_sent),
            ),
            (
                "derp_bytes_relayed_total",
                "counter",
                "Packet bytes written to their destination.",
                load(&self.bytes_sent),
            ),
            (
                "derp_peer_gone_frames_total",
                "counter",
                "Peer-gone notices written to clients.",
                load(&self.peer_gone_frames),
            ),
            (
                "derp_queued_bytes",
                "gauge",
                "Packet bytes queued to clients now.",
                self.queued_bytes.load(Ordering::Relaxed).max(0) as u64,
            ),
        ];
        for (name, kind, help, value) in series {
            let _ = writeln!(out, "# HELP agentwire_{name} {help}");
            let _ = writeln!(out, "# TYPE agentwire_{name} {kind}");
            let _ = writeln!(out, "agentwire_{name} {value}");
        }
        let _ =
            writeln!(out, "# HELP agentwire_derp_packets_dropped_total Packets the relay did not deliver, by reason.");
        let _ = writeln!(out, "# TYPE agentwire_derp_packets_dropped_total counter");
        for reason in DropReason::ALL {
            let _ = writeln!(
                out,
                "agentwire_derp_packets_dropped_total{{reason=\"{}\"}} {}",
                reason.name(),
                self.drops(reason)
            );
        }
    }
}
