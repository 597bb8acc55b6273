//! Per-pipeline counters, shared between a pipeline's thread and whoever reports them
//! (the HTTP API and `/metrics`).

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// Upper bounds (seconds) of the end-to-end latency histogram.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

#[derive(Debug, Default)]
pub struct PipelineMetrics {
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
    pub late_records_dropped: AtomicU64,
    pub bad_records: AtomicU64,
    pub watermark_ms: AtomicI64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
    /// (operator name, busy nanoseconds), in chain order.
    pub operators: Mutex<Vec<(String, u64)>>,
}

impl PipelineMetrics {
    pub fn new() -> Self {
        let m = PipelineMetrics::default();
        m.watermark_ms.store(i64::MIN, Relaxed);
        m
    }

    pub fn observe_latency_ms(&self, ms: i64) {
        let secs = ms.max(0) as f64 / 1000.0;
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.latency_buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_micros
            .fetch_add((ms.max(0) as u64).saturating_mul(1000), Relaxed);
    }

    pub fn watermark(&self) -> Option<i64> {
        let w = self.watermark_ms.load(Relaxed);
        (w != i64::MIN).then_some(w)
    }

    pub fn snapshot_json(&self) -> serde_json::Value {
        let ops = self.operators.lock().map(|o| o.clone()).unwrap_or_default();
        serde_json::json!({
            "records_in": self.records_in.load(Relaxed),
            "records_out": self.records_out.load(Relaxed),
            "late_records_dropped": self.late_records_dropped.load(Relaxed),
            "bad_records": self.bad_records.load(Relaxed),
            "watermark_ms": self.watermark(),
            "operators": ops.iter().map(|(n, ns)| serde_json::json!({"name": n, "busy_seconds": *ns as f64 / 1e9})).collect::<Vec<_>>(),
            "latency_count": self.latency_count.load(Relaxed),
        })
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

type CounterFamily = (&'static str, &'static str, fn(&PipelineMetrics) -> u64);

/// Prometheus text for a set of pipelines.
pub fn render(pipelines: &[(String, std::sync::Arc<PipelineMetrics>)], out: &mut String) {
    let counters: [CounterFamily; 4] = [
        (
            "kappa_pipeline_records_in_total",
            "Records read by the pipeline.",
            |m| m.records_in.load(Relaxed),
        ),
        (
            "kappa_pipeline_records_out_total",
            "Records written by the pipeline.",
            |m| m.records_out.load(Relaxed),
        ),
        (
            "kappa_pipeline_late_records_dropped_total",
            "Records dropped because their window had fired (numLateRecordsDropped).",
            |m| m.late_records_dropped.load(Relaxed),
        ),
        (
            "kappa_pipeline_bad_records_total",
            "Records that did not match the table's columns.",
            |m| m.bad_records.load(Relaxed),
        ),
    ];
    for (name, help, get) in counters {
        // OpenMetrics names a counter family without its `_total` sample suffix
        let family = name.trim_end_matches("_total");
        let _ = writeln!(out, "# HELP {family} {help}\n# TYPE {family} counter");
        for (id, m) in pipelines {
            let _ = writeln!(out, "{name}{{pipeline=\"{}\"}} {}", escape(id), get(m));
        }
    }
    let _ = writeln!(
        out,
        "# HELP kappa_pipeline_watermark_ms The pipeline's current event-time watermark.\n# TYPE kappa_pipeline_watermark_ms gauge"
    );
    for (id, m) in pipelines {
        if let Some(w) = m.watermark() {
            let _ = writeln!(
                out,
                "kappa_pipeline_watermark_ms{{pipeline=\"{}\"}} {w}",
                escape(id)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP kappa_pipeline_operator_seconds Processing time per operator.\n# TYPE kappa_pipeline_operator_seconds counter"
    );
    for (id, m) in pipelines {
        let ops = m.operators.lock().map(|o| o.clone()).unwrap_or_default();
        for (i, (op, ns)) in ops.iter().enumerate() {
            let _ = writeln!(
                out,
                "kappa_pipeline_operator_seconds_total{{pipeline=\"{}\",operator=\"{i}_{}\"}} {}",
                escape(id),
                escape(op),
                *ns as f64 / 1e9
            );
        }
    }
    let name = "kappa_pipeline_latency_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} End-to-end latency at the sink: now minus the record's event time.\n# TYPE {name} histogram"
    );
    for (id, m) in pipelines {
        let id = escape(id);
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{pipeline=\"{id}\",le=\"{bound}\"}} {}",
                m.latency_buckets[i].load(Relaxed)
            );
        }
        let count = m.latency_count.load(Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{pipeline=\"{id}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "{name}_sum{{pipeline=\"{id}\"}} {}",
            m.latency_sum_micros.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{{pipeline=\"{id}\"}} {count}");
    }
}

/// Prometheus text for the v2 runtime's checkpoints and backpressure.
pub fn render_runtime(
    pipelines: &[(String, std::sync::Arc<crate::runtime::RuntimeControl>)],
    out: &mut String,
) {
    type Gauge = (
        &'static str,
        &'static str,
        &'static str,
        fn(&crate::runtime::CheckpointStats) -> Option<f64>,
    );
    let families: [Gauge; 6] = [
        (
            "kappa_pipeline_checkpoints_completed_total",
            "counter",
            "Checkpoints completed (committed).",
            |c| Some(c.completed as f64),
        ),
        (
            "kappa_pipeline_checkpoints_failed_total",
            "counter",
            "Checkpoints that failed.",
            |c| Some(c.failed as f64),
        ),
        (
            "kappa_pipeline_last_checkpoint_duration_seconds",
            "gauge",
            "From the barrier's injection to the commit, of the last completed checkpoint.",
            |c| c.last_duration_ms.map(|v| v as f64 / 1000.0),
        ),
        (
            "kappa_pipeline_last_checkpoint_alignment_seconds",
            "gauge",
            "Longest barrier alignment of a task in the last completed checkpoint.",
            |c| c.last_alignment_ms.map(|v| v as f64 / 1000.0),
        ),
        (
            "kappa_pipeline_last_checkpoint_size_bytes",
            "gauge",
            "State files new in the last completed checkpoint (incremental size).",
            |c| c.last_size_bytes.map(|v| v as f64),
        ),
        (
            "kappa_pipeline_last_checkpoint_timestamp_seconds",
            "gauge",
            "When the last checkpoint completed (Unix time).",
            |c| c.last_completed_at_ms.map(|v| v as f64 / 1000.0),
        ),
    ];
    for (name, kind, help, get) in families {
        let family = if kind == "counter" {
            name.trim_end_matches("_total")
        } else {
            name
        };
        let _ = writeln!(out, "# HELP {family} {help}\n# TYPE {family} {kind}");
        for (id, rt) in pipelines {
            let Ok(c) = rt.checkpoints.lock() else {
                continue;
            };
            if let Some(v) = get(&c) {
                let _ = writeln!(out, "{name}{{pipeline=\"{}\"}} {v}", escape(id));
            }
        }
    }
    let family = "kappa_pipeline_backpressure_seconds";
    let _ = writeln!(
        out,
        "# HELP {family} Time source tasks waited for room in a downstream task's queue.\n# TYPE {family} counter"
    );
    for (id, rt) in pipelines {
        let _ = writeln!(
            out,
            "{family}_total{{pipeline=\"{}\"}} {}",
            escape(id),
            rt.backpressure_nanos.load(Relaxed) as f64 / 1e9
        );
    }
}
