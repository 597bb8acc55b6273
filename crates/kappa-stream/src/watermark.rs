//! Event-time progress: each source partition's watermark is the largest value of the
//! table's `WATERMARK FOR` expression seen on it; the pipeline's watermark is the minimum
//! over partitions that are not idle, and never goes back.

use std::time::{Duration, Instant};

#[derive(Debug)]
struct PartitionWatermark {
    watermark: i64,
    last_record: Instant,
}

#[derive(Debug)]
pub struct WatermarkTracker {
    partitions: Vec<PartitionWatermark>,
    idle_timeout: Option<Duration>,
    current: i64,
}

impl WatermarkTracker {
    pub fn new(partitions: usize, idle_timeout: Option<Duration>) -> Self {
        let now = Instant::now();
        WatermarkTracker {
            partitions: (0..partitions)
                .map(|_| PartitionWatermark {
                    watermark: i64::MIN,
                    last_record: now,
                })
                .collect(),
            idle_timeout,
            current: i64::MIN,
        }
    }

    /// Resumes from a watermark committed before a restart.
    pub fn restore(&mut self, watermark: i64) {
        self.current = self.current.max(watermark);
        for p in &mut self.partitions {
            p.watermark = p.watermark.max(watermark);
        }
    }

    pub fn current(&self) -> i64 {
        self.current
    }

    pub fn partition_watermark(&self, partition: usize) -> i64 {
        self.partitions
            .get(partition)
            .map_or(i64::MIN, |p| p.watermark)
    }

    /// Records that `partition` delivered records whose watermark expression reached `candidate`.
    pub fn observe(&mut self, partition: usize, candidate: Option<i64>, now: Instant) {
        if let Some(p) = self.partitions.get_mut(partition) {
            p.last_record = now;
            if let Some(c) = candidate {
                p.watermark = p.watermark.max(c);
            }
        }
    }

    /// True when every partition is idle (or there is none).
    pub fn all_idle(&self, now: Instant) -> bool {
        self.idle_timeout.is_some_and(|t| {
            self.partitions
                .iter()
                .all(|p| now.saturating_duration_since(p.last_record) >= t)
        })
    }

    /// Recomputes the pipeline's watermark; returns it when it advanced.
    pub fn advance(&mut self, now: Instant) -> Option<i64> {
        let mut min: Option<i64> = None;
        let mut max_idle: Option<i64> = None;
        for p in &self.partitions {
            let idle = self
                .idle_timeout
                .is_some_and(|t| now.saturating_duration_since(p.last_record) >= t);
            if idle {
                max_idle = Some(max_idle.map_or(p.watermark, |m| m.max(p.watermark)));
            } else {
                min = Some(min.map_or(p.watermark, |m| m.min(p.watermark)));
            }
        }
        // all idle: the largest watermark stands (as Flink's watermark valve does), so the
        // last windows of a stream that has gone quiet still fire
        let min = min.or(max_idle);
        match min {
            Some(m) if m > self.current => {
                self.current = m;
                Some(m)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimum_over_partitions_and_idle_partitions_stop_holding_back() {
        let start = Instant::now();
        let mut w = WatermarkTracker::new(2, Some(Duration::from_secs(5)));
        w.observe(0, Some(100), start);
        assert_eq!(w.advance(start), None, "partition 1 has not reported");
        w.observe(1, Some(50), start);
        assert_eq!(w.advance(start), Some(50));
        w.observe(1, Some(40), start);
        assert_eq!(
            w.advance(start),
            None,
            "a partition's watermark never goes back"
        );
        w.observe(0, Some(300), start + Duration::from_secs(6));
        assert_eq!(
            w.advance(start + Duration::from_secs(6)),
            Some(300),
            "partition 1 idle"
        );
        w.observe(1, Some(400), start + Duration::from_secs(7));
        assert_eq!(
            w.advance(start + Duration::from_secs(20)),
            Some(400),
            "all idle: the largest"
        );
        let mut strict = WatermarkTracker::new(2, None);
        strict.observe(0, Some(100), start);
        assert_eq!(strict.advance(start + Duration::from_secs(3600)), None);
    }
}
