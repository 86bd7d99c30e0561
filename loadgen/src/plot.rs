//! A hand-written SVG of the per-second series: throughput on top, p50 and p99 latency below (with the fixed-rate
//! mode's send lag p99 beside them), one point per second, the measured phase shaded. Not `plotters`: a few
//! polylines, two axes and their labels are a page of `write!`, and a charting library (with its text and colour
//! stacks) would weigh more than the chart it draws.

use std::fmt::Write as _;

use crate::report::Report;

const WIDTH: f64 = 960.0;
const PANEL_HEIGHT: f64 = 240.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 50.0;
const GAP: f64 = 60.0;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A ceiling for an axis: 1, 2 or 5 times a power of ten, at least `max`.
fn nice_ceiling(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|v| *v >= max).unwrap_or(10.0 * magnitude)
}

struct Panel {
    top: f64,
    x_max: f64,
    y_max: f64,
}

impl Panel {
    fn x(&self, t: f64) -> f64 {
        LEFT + (WIDTH - LEFT - RIGHT) * (t / self.x_max)
    }

    fn y(&self, v: f64) -> f64 {
        self.top + PANEL_HEIGHT * (1.0 - (v / self.y_max).clamp(0.0, 1.0))
    }

    fn frame(&self, out: &mut String, title: &str, unit: &str, shade: Option<(f64, f64)>) {
        if let Some((from, to)) = shade {
            let _ = writeln!(
                out,
                r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{PANEL_HEIGHT:.1}" fill="#eef4ff"/>"##,
                self.x(from),
                self.top,
                (self.x(to) - self.x(from)).max(0.0)
            );
        }
        let _ = writeln!(
            out,
            r##"<rect x="{LEFT:.1}" y="{:.1}" width="{:.1}" height="{PANEL_HEIGHT:.1}" fill="none" stroke="#888"/>"##,
            self.top,
            WIDTH - LEFT - RIGHT
        );
        let _ = writeln!(
            out,
            r#"<text x="{LEFT:.1}" y="{:.1}" font-size="14" font-weight="bold">{}</text>"#,
            self.top - 8.0,
            escape(title)
        );
        for i in 0..=4 {
            let v = self.y_max * i as f64 / 4.0;
            let y = self.y(v);
            let _ = writeln!(
                out,
                r##"<line x1="{LEFT:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{} {}</text>"##,
                WIDTH - RIGHT,
                LEFT - 6.0,
                y + 4.0,
                fmt_value(v),
                escape(unit)
            );
        }
        let step = nice_ceiling(self.x_max / 10.0).max(1.0);
        let mut t = 0.0;
        while t <= self.x_max + 1e-9 {
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}s</text>"#,
                self.x(t),
                self.top + PANEL_HEIGHT + 16.0,
                t as u64
            );
            t += step;
        }
    }

    fn line(&self, out: &mut String, points: &[(f64, f64)], color: &str, label: &str, legend_row: usize) {
        if !points.is_empty() {
            let coords: Vec<String> =
                points.iter().map(|(t, v)| format!("{:.1},{:.1}", self.x(*t), self.y(*v))).collect();
            let _ = writeln!(
                out,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
                coords.join(" ")
            );
        }
        let y = self.top + 14.0 + 16.0 * legend_row as f64;
        let x = WIDTH - RIGHT - 150.0;
        let _ = writeln!(
            out,
            r#"<line x1="{x:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="2"/><text x="{:.1}" y="{:.1}" font-size="12">{}</text>"#,
            y - 4.0,
            x + 20.0,
            y - 4.0,
            x + 26.0,
            y,
            escape(label)
        );
    }
}

fn fmt_value(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 100.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// The SVG document for `report`.
pub fn render(report: &Report) -> String {
    let series = &report.series;
    let x_max = series.last().map(|p| p.t as f64).unwrap_or(1.0).max(1.0);
    let shade = {
        let measured: Vec<f64> = series.iter().filter(|p| p.measured).map(|p| p.t as f64).collect();
        match (measured.first(), measured.last()) {
            (Some(first), Some(last)) => Some(((first - 1.0).max(0.0), *last)),
            _ => None,
        }
    };
    let throughput: Vec<(f64, f64)> = series.iter().map(|p| (p.t as f64, p.ok as f64)).collect();
    let p50: Vec<(f64, f64)> =
        series.iter().filter(|p| p.ok > 0).map(|p| (p.t as f64, p.p50_us as f64 / 1000.0)).collect();
    let p99: Vec<(f64, f64)> =
        series.iter().filter(|p| p.ok > 0).map(|p| (p.t as f64, p.p99_us as f64 / 1000.0)).collect();
    // Fixed-rate mode: the send lag beside the latencies it is part of.
    let lag: Vec<(f64, f64)> =
        series.iter().filter_map(|p| p.send_lag_p99_us.map(|us| (p.t as f64, us as f64 / 1000.0))).collect();
    let top = Panel { top: TOP, x_max, y_max: nice_ceiling(throughput.iter().map(|p| p.1).fold(0.0, f64::max)) };
    let bottom = Panel {
        top: TOP + PANEL_HEIGHT + GAP,
        x_max,
        y_max: nice_ceiling(p99.iter().chain(&p50).chain(&lag).map(|p| p.1).fold(0.0, f64::max)),
    };
    let height = TOP + 2.0 * PANEL_HEIGHT + GAP + 40.0;
    let c = &report.config;
    let title = format!(
        "agentwire loadgen: {:?} over {}, {} agents{}",
        c.mode,
        c.transport,
        c.agents,
        c.rpc.map(|r| format!(", {r:?}")).unwrap_or_default()
    );
    let mut out = String::new();
    let _ = writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH:.0}" height="{height:.0}" viewBox="0 0 {WIDTH:.0} {height:.0}" font-family="sans-serif">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(out, r#"<text x="{LEFT:.1}" y="22" font-size="16">{}</text>"#, escape(&title));
    top.frame(&mut out, "throughput (successful calls per second)", "/s", shade);
    top.line(&mut out, &throughput, "#1f77b4", "calls/s", 0);
    bottom.frame(&mut out, "latency per second", "ms", shade);
    bottom.line(&mut out, &p50, "#2ca02c", "p50", 0);
    bottom.line(&mut out, &p99, "#d62728", "p99", 1);
    if !lag.is_empty() {
        bottom.line(&mut out, &lag, "#7f7f7f", "send lag p99", 2);
    }
    let _ = writeln!(out, "</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_ceilings_are_round() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(1.5), 2.0);
        assert_eq!(nice_ceiling(31_000.0), 50_000.0);
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape("a<b&c>\""), "a&lt;b&amp;c&gt;&quot;");
    }
}
