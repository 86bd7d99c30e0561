//! The live progress line on stderr: rewritten every second on a terminal, a plain line every few seconds
//! otherwise (logs, CI). Not `indicatif`: a run shows one line of figures, never a bar, and this is 60 lines of
//! `eprint!` with no terminal library under them.

use std::io::{IsTerminal, Write};

use crate::config::DEFAULT_PROGRESS_EVERY;

pub(crate) struct Progress {
    enabled: bool,
    tty: bool,
    printed: bool,
}

/// One second's figures, as the line shows them.
pub(crate) struct Line {
    pub t: u64,
    pub phase: &'static str,
    pub connected: usize,
    pub agents: usize,
    pub ok_per_s: u64,
    pub errors_per_s: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    /// Fixed-rate mode: printed beside the latencies.
    pub send_lag_p99_us: Option<u64>,
    pub total_ok: u64,
}

impl Progress {
    pub fn new(enabled: bool) -> Self {
        Progress { enabled, tty: std::io::stderr().is_terminal(), printed: false }
    }

    pub fn update(&mut self, line: &Line) {
        if !self.enabled || (!self.tty && !line.t.is_multiple_of(DEFAULT_PROGRESS_EVERY)) {
            return;
        }
        let text = format!(
            "{:>4}s {:<8} sessions {}/{}  {} rpc/s  {} err/s  p50 {:.2} ms  p99 {:.2} ms{}  total {}",
            line.t,
            line.phase,
            line.connected,
            line.agents,
            line.ok_per_s,
            line.errors_per_s,
            line.p50_us as f64 / 1000.0,
            line.p99_us as f64 / 1000.0,
            line.send_lag_p99_us.map(|us| format!(" (send lag p99 {:.2} ms)", us as f64 / 1000.0)).unwrap_or_default(),
            line.total_ok
        );
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[K{text}");
        } else {
            let _ = writeln!(err, "{text}");
        }
        let _ = err.flush();
        self.printed = true;
    }

    pub fn finish(&mut self) {
        if self.enabled && self.tty && self.printed {
            let _ = writeln!(std::io::stderr());
        }
    }
}
