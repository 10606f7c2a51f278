//! What a run prints and leaves behind: a readable report and a latency
//! plot (SVG) with the fault windows shaded, like Jepsen's graphs.

use std::fmt::Write as _;

use copycat_sim::history::{History, OperationStatus};

use crate::nemesis::FaultWindow;

/// One completed operation, for the plot and the latency figures.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Invocation time, ms since the run began.
    pub start_ms: u64,
    /// Latency in ms (to the completion, or the end of the run).
    pub latency_ms: u64,
    /// How it ended.
    pub status: OperationStatus,
    /// Its function.
    pub f: String,
}

/// The samples of a history (operations of the concurrent phase only:
/// those invoked before `until_ms`).
pub fn samples(history: &History, until_ms: u64) -> Vec<Sample> {
    history
        .operations()
        .iter()
        .filter(|op| op.invoke_time < until_ms)
        .map(|op| Sample {
            start_ms: op.invoke_time,
            latency_ms: op
                .complete_time
                .unwrap_or(until_ms)
                .saturating_sub(op.invoke_time),
            status: op.status,
            f: op.f.as_str().to_string(),
        })
        .collect()
}

/// Whether time `t` lies inside a fault window.
pub fn in_fault(windows: &[FaultWindow], t: u64) -> bool {
    windows.iter().any(|w| w.start_ms <= t && t <= w.end_ms)
}

/// `p`-th percentile of `values` (sorted in place).
fn percentile(values: &mut [u64], p: f64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = ((p / 100.0) * (values.len() - 1) as f64).round() as usize;
    Some(values[rank.min(values.len() - 1)])
}

/// "n ops, p50 X ms, p99 Y ms, max Z ms" over the successful operations
/// matching `during`.
pub fn latency_line(samples: &[Sample], windows: &[FaultWindow], during: bool) -> String {
    let mut latencies: Vec<u64> = samples
        .iter()
        .filter(|s| s.status == OperationStatus::Ok && in_fault(windows, s.start_ms) == during)
        .map(|s| s.latency_ms)
        .collect();
    let n = latencies.len();
    match (
        percentile(&mut latencies, 50.0),
        percentile(&mut latencies, 99.0),
        latencies.iter().max(),
    ) {
        (Some(p50), Some(p99), Some(max)) => {
            format!("{n} ok ops, p50 {p50} ms, p99 {p99} ms, max {max} ms")
        }
        _ => "no ok ops".to_string(),
    }
}

fn color(status: OperationStatus) -> &'static str {
    match status {
        OperationStatus::Ok => "#1f77b4",
        OperationStatus::Fail => "#d62728",
        OperationStatus::Info | OperationStatus::Pending => "#ff9f1c",
    }
}

/// An SVG with two panels: latency of every operation (log scale, by
/// outcome) and ok operations per second, over time, with the faults
/// shaded and named.
pub fn svg(title: &str, samples: &[Sample], windows: &[FaultWindow], duration_ms: u64) -> String {
    let (width, left, right) = (1000.0f64, 70.0f64, 20.0f64);
    let plot_w = width - left - right;
    let (lat_top, lat_h) = (40.0f64, 300.0f64);
    let (rate_top, rate_h) = (lat_top + lat_h + 50.0, 150.0f64);
    let height = rate_top + rate_h + 60.0;
    let duration = duration_ms.max(1) as f64;
    let x = |t: u64| left + plot_w * (t as f64 / duration).min(1.0);
    let max_latency = samples
        .iter()
        .map(|s| s.latency_ms)
        .max()
        .unwrap_or(1)
        .max(10) as f64;
    let log_max = max_latency.log10();
    let y_lat = |ms: u64| {
        let v = (ms.max(1) as f64).log10();
        lat_top + lat_h - lat_h * (v / log_max).min(1.0)
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{left}" y="20" font-size="14">{}</text>"#,
        escape(title)
    );
    for (i, w) in windows.iter().enumerate() {
        let (x0, x1) = (x(w.start_ms), x(w.end_ms));
        let _ = writeln!(
            out,
            r##"<rect x="{x0:.1}" y="{lat_top}" width="{:.1}" height="{:.1}" fill="#999" fill-opacity="0.18"><title>{}</title></rect>"##,
            (x1 - x0).max(1.0),
            rate_top + rate_h - lat_top,
            escape(&format!("{}: {}", w.nemesis, w.detail))
        );
        let _ = writeln!(
            out,
            r##"<text x="{x0:.1}" y="{:.1}" fill="#555" font-size="9">{}</text>"##,
            lat_top - 4.0 - (i % 2) as f64 * 10.0 + 10.0 * ((i % 2) as f64),
            escape(w.nemesis.name())
        );
    }
    // Latency axis: decades.
    let mut decade = 1u64;
    while (decade as f64) <= max_latency {
        let y = y_lat(decade);
        let _ = writeln!(
            out,
            r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{decade} ms</text>"##,
            left + plot_w,
            left - 6.0,
            y + 4.0
        );
        decade *= 10;
    }
    for s in samples {
        let _ = writeln!(
            out,
            r#"<circle cx="{:.1}" cy="{:.1}" r="1.6" fill="{}" fill-opacity="0.7"/>"#,
            x(s.start_ms),
            y_lat(s.latency_ms),
            color(s.status)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{left}" y="{:.1}">latency by invocation time (log scale); blue ok, red fail, orange unknown; grey: faults</text>"#,
        lat_top + lat_h + 16.0
    );
    // Rate: ok completions per second.
    let seconds = (duration_ms / 1000 + 1) as usize;
    let mut rate = vec![0u64; seconds];
    for s in samples.iter().filter(|s| s.status == OperationStatus::Ok) {
        let bucket = ((s.start_ms + s.latency_ms) / 1000) as usize;
        if bucket < seconds {
            rate[bucket] += 1;
        }
    }
    let max_rate = rate.iter().copied().max().unwrap_or(1).max(1) as f64;
    let y_rate = |r: u64| rate_top + rate_h - rate_h * (r as f64 / max_rate);
    let points: Vec<String> = rate
        .iter()
        .enumerate()
        .map(|(i, r)| format!("{:.1},{:.1}", x(i as u64 * 1000 + 500), y_rate(*r)))
        .collect();
    let _ = writeln!(
        out,
        r##"<polyline points="{}" fill="none" stroke="#2ca02c" stroke-width="1.5"/>"##,
        points.join(" ")
    );
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{max_rate:.0}/s</text><text x="{:.1}" y="{:.1}" text-anchor="end">0</text>"#,
        left - 6.0,
        rate_top + 4.0,
        left - 6.0,
        rate_top + rate_h
    );
    let _ = writeln!(
        out,
        r#"<text x="{left}" y="{:.1}">ok operations per second</text>"#,
        rate_top + rate_h + 16.0
    );
    // Time axis.
    let step = ((duration / 1000.0 / 10.0).ceil() as u64).max(1) * 1000;
    let mut t = 0;
    while t <= duration_ms {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{} s</text>"#,
            x(t),
            rate_top + rate_h + 34.0,
            t / 1000
        );
        t += step;
    }
    out.push_str("</svg>\n");
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nemesis::Nemesis;

    fn sample(start_ms: u64, latency_ms: u64) -> Sample {
        Sample {
            start_ms,
            latency_ms,
            status: OperationStatus::Ok,
            f: "read".into(),
        }
    }

    #[test]
    fn latency_splits_by_fault_windows() {
        let windows = [FaultWindow {
            nemesis: Nemesis::Kill,
            detail: "killed 1".into(),
            start_ms: 100,
            end_ms: 200,
        }];
        let samples = [sample(10, 5), sample(150, 900), sample(300, 7)];
        assert_eq!(
            latency_line(&samples, &windows, true),
            "1 ok ops, p50 900 ms, p99 900 ms, max 900 ms"
        );
        assert_eq!(
            latency_line(&samples, &windows, false),
            "2 ok ops, p50 7 ms, p99 7 ms, max 7 ms"
        );
    }

    #[test]
    fn the_plot_has_a_point_per_operation_and_a_band_per_fault() {
        let windows = [FaultWindow {
            nemesis: Nemesis::Pause,
            detail: "paused <2>".into(),
            start_ms: 100,
            end_ms: 200,
        }];
        let samples = [sample(10, 5), sample(150, 900), sample(300, 7)];
        let svg = svg("register", &samples, &windows, 1000);
        assert_eq!(svg.matches("<circle").count(), 3);
        assert!(svg.contains("pause: paused &lt;2&gt;"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
    }
}
