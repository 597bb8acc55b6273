//! The v2 runtime: a pipeline runs as tasks on threads. Source tasks (one per share of the
//! source partitions) decode records and run the operators before the first keyed one; a
//! keyed exchange routes rows by key hash to the keyed tasks (`parallelism` of them), which
//! run the stateful operators on their own RocksDB state and write to the sink. Channels are
//! bounded, so a slow sink slows the sources.
//!
//! The checkpoint is the Kafka transaction: the coordinator sends a barrier into every source;
//! each task snapshots its state when the barrier has arrived on all its inputs and tells the
//! coordinator; when every task has, the coordinator commits — with exactly-once, in one
//! transaction — the output written before the barrier, the state changelog, and the source
//! offsets (whose metadata names the checkpoint, the watermark and the changelog's offsets).
//! Until that commit, tasks past the barrier hold their writes back.

mod chain;
mod coordinator;
mod exchange;
mod kafka;
mod kafka_source;
mod keyed_task;
pub mod source;
mod source_task;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Result, StreamError};
use crate::operators::OpSpec;
use crate::pipeline::{PipelineControl, PipelineState, SinkSpec, SourceSpec};
use crate::state::StateConfig;

pub use coordinator::{CheckpointMeta, SavepointMeta};
pub use source::{Sink, Source, SplitBatch};

/// `'sink.delivery-guarantee'`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Delivery {
    ExactlyOnce,
    AtLeastOnce,
    None,
}

pub struct RunSettings {
    /// Keyed tasks (and at most this many source tasks).
    pub parallelism: usize,
    pub checkpoint_interval: Duration,
    pub delivery: Delivery,
    /// The pipeline's directory for task state and checkpoints.
    pub state_dir: PathBuf,
    pub state: StateConfig,
    /// Records per source poll.
    pub max_batch: usize,
    pub transactional_id: String,
    /// Start from this savepoint instead of the last committed checkpoint.
    pub from_savepoint: Option<PathBuf>,
}

pub struct RunSpec {
    pub id: String,
    pub group_id: String,
    pub sql: String,
    pub source: SourceSpec,
    /// The operator chain; the runtime cuts it before the first keyed operator.
    pub ops: Vec<OpSpec>,
    pub sink: SinkSpec,
    /// Use the group's committed checkpoint when there is one (a restart).
    pub resume: bool,
    pub settings: RunSettings,
}

/// Checkpoint figures, shown by the HTTP API and as metrics.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckpointStats {
    pub completed: u64,
    pub failed: u64,
    pub last_id: Option<u64>,
    pub last_completed_at_ms: Option<i64>,
    pub last_duration_ms: Option<u64>,
    pub last_alignment_ms: Option<u64>,
    /// Bytes of state files new in the last checkpoint (incremental size).
    pub last_size_bytes: Option<u64>,
    /// Bytes of all state files of the last checkpoint.
    pub last_full_size_bytes: Option<u64>,
    pub restored_from: Option<String>,
}

/// A request for a savepoint, answered with its directory.
pub struct SavepointRequest {
    pub dir: PathBuf,
    pub stop: bool,
    pub reply: std::sync::mpsc::Sender<Result<SavepointMeta, String>>,
}

/// What the runtime shares with the pipeline's owner beyond [`PipelineControl`].
#[derive(Default)]
pub struct RuntimeControl {
    pub checkpoints: Mutex<CheckpointStats>,
    pub savepoint: Mutex<Option<SavepointRequest>>,
    /// Nanoseconds source tasks spent waiting for room downstream.
    pub backpressure_nanos: AtomicU64,
    /// Batches queued between tasks now.
    pub queued_batches: AtomicI64,
    pub parallelism: AtomicU64,
    /// Stop now, without a final checkpoint (a stop that took too long).
    pub cancel: AtomicBool,
}

/// Holds back writes of tasks that passed barrier `n` until checkpoint `n` has committed.
pub(crate) struct Gate {
    enabled: bool,
    committed: Mutex<u64>,
    cv: Condvar,
    pub(crate) abort: AtomicBool,
}

impl Gate {
    fn new(enabled: bool) -> Self {
        Gate {
            enabled,
            committed: Mutex::new(0),
            cv: Condvar::new(),
            abort: AtomicBool::new(false),
        }
    }

    /// Waits until checkpoint `n` (the last barrier the caller passed) has committed.
    pub(crate) fn wait(&self, n: u64) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let mut committed = self
            .committed
            .lock()
            .map_err(|_| StreamError::Checkpoint("poisoned".into()))?;
        while *committed < n {
            if self.abort.load(Ordering::Relaxed) {
                return Err(StreamError::Checkpoint("the pipeline is failing".into()));
            }
            committed = self
                .cv
                .wait_timeout(committed, Duration::from_millis(100))
                .map_err(|_| StreamError::Checkpoint("poisoned".into()))?
                .0;
        }
        Ok(())
    }

    /// The last committed checkpoint.
    pub(crate) fn committed(&self) -> u64 {
        self.committed.lock().map(|c| *c).unwrap_or(0)
    }

    fn open(&self, n: u64) {
        if let Ok(mut c) = self.committed.lock() {
            *c = (*c).max(n);
        }
        self.cv.notify_all();
    }

    fn fail(&self) {
        self.abort.store(true, Ordering::Relaxed);
        self.cv.notify_all();
    }
}

/// The source tasks' watermarks: the pipeline's is the minimum over the tasks that are not
/// idle (the largest when all are), as a keyed task computes it from its inputs.
pub(crate) struct SharedWatermarks {
    marks: Vec<AtomicI64>,
    idle: Vec<AtomicBool>,
}

impl SharedWatermarks {
    fn new(n: usize) -> Self {
        SharedWatermarks {
            marks: (0..n).map(|_| AtomicI64::new(i64::MIN)).collect(),
            idle: (0..n).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    pub(crate) fn set(&self, task: usize, wm: i64, idle: bool) {
        if let (Some(m), Some(i)) = (self.marks.get(task), self.idle.get(task)) {
            m.fetch_max(wm, Ordering::Relaxed);
            i.store(idle, Ordering::Relaxed);
        }
    }

    pub(crate) fn global(&self) -> i64 {
        combine(
            self.marks
                .iter()
                .zip(&self.idle)
                .map(|(m, i)| (m.load(Ordering::Relaxed), i.load(Ordering::Relaxed))),
        )
    }
}

/// Minimum over inputs that are not idle; the largest when all are idle.
pub(crate) fn combine(inputs: impl Iterator<Item = (i64, bool)>) -> i64 {
    let mut min: Option<i64> = None;
    let mut max_idle: Option<i64> = None;
    for (w, idle) in inputs {
        if idle {
            max_idle = Some(max_idle.map_or(w, |m: i64| m.max(w)));
        } else {
            min = Some(min.map_or(w, |m: i64| m.min(w)));
        }
    }
    min.or(max_idle).unwrap_or(i64::MIN)
}

/// Starts the pipeline's coordinator thread (which starts the tasks).
pub fn spawn(
    run: RunSpec,
    control: Arc<PipelineControl>,
    runtime: Arc<RuntimeControl>,
) -> std::thread::JoinHandle<()> {
    let name = format!("pipeline-{}", run.id);
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let id = run.id.clone();
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                coordinator::run(run, &control, &runtime)
            }));
            // a savepoint asked for while the pipeline was ending gets an answer
            if let Some(req) = runtime.savepoint.lock().ok().and_then(|mut s| s.take()) {
                let _ = req
                    .reply
                    .send(Err("the pipeline stopped before the savepoint".into()));
            }
            match outcome {
                Ok(Ok(())) => control.set(PipelineState::Stopped, None),
                Ok(Err(e)) => {
                    tracing::error!(pipeline = %id, "pipeline failed: {e}");
                    control.set(PipelineState::Failed, Some(e.to_string()));
                }
                Err(panic) => {
                    let what = crate::pipeline::panic_message(&panic);
                    tracing::error!(pipeline = %id, "pipeline crashed: {what}");
                    control.set(
                        PipelineState::Failed,
                        Some(format!("internal error: {what}")),
                    );
                }
            }
        })
        .expect("spawning a pipeline thread")
}

/// Whether the state of a pipeline running `old` can start `new`: every stateful operator of
/// `old` must be in `new` with the same keys and aggregate calls.
pub fn check_upgrade(old: &[OpSpec], new: &[OpSpec]) -> std::result::Result<(), String> {
    let saved: Vec<(u32, String)> = coordinator::state_ids(old).into_iter().flatten().collect();
    coordinator::check_compatible(&saved, &coordinator::state_ids(new))
}

/// Time since `t` in whole milliseconds.
pub(crate) fn millis_since(t: Instant) -> u64 {
    t.elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_of_inputs_ignores_idle_ones_unless_all_are() {
        assert_eq!(combine([(5, false), (3, false)].into_iter()), 3);
        assert_eq!(combine([(5, false), (3, true)].into_iter()), 5);
        assert_eq!(combine([(5, true), (3, true)].into_iter()), 5);
        assert_eq!(combine(std::iter::empty()), i64::MIN);
        let s = SharedWatermarks::new(2);
        s.set(0, 10, false);
        assert_eq!(s.global(), i64::MIN, "task 1 has not reported");
        s.set(1, 20, false);
        s.set(1, 15, false);
        assert_eq!(s.global(), 10, "a task's watermark never goes back");
        s.set(0, 10, true);
        assert_eq!(s.global(), 20);
    }

    #[test]
    fn gate_holds_writes_until_the_checkpoint_commits() {
        let gate = Arc::new(Gate::new(true));
        gate.wait(0).unwrap();
        let g = gate.clone();
        let waiter = std::thread::spawn(move || {
            let t = Instant::now();
            g.wait(1).map(|_| t.elapsed())
        });
        std::thread::sleep(Duration::from_millis(50));
        gate.open(1);
        assert!(waiter.join().unwrap().unwrap() >= Duration::from_millis(40));
        let g = gate.clone();
        let waiter = std::thread::spawn(move || g.wait(2));
        gate.fail();
        assert!(waiter.join().unwrap().is_err());
        assert!(Gate::new(false).wait(100).is_ok());
    }
}
