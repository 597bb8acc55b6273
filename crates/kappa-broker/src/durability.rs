//! Writes and group commit. A produce request appends in memory and waits: acks=1 until its
//! records are written to the file (where consumers see them and a crash of the process cannot
//! take them back), acks=all until they are fsynced too.
//!
//! Each partition has a write loop: whatever arrives while a write runs goes out with the next
//! one, so a busy partition writes large blocks. Fsyncs are broker-wide rounds: every partition
//! that waits for one joins the next round, and the round fsyncs them all at once. The next
//! round starts no sooner than the fsyncs of this one allow under `max_fsyncs_per_sec`: one
//! fsync per partition per write is what made this machine's disk stall for hundreds of
//! milliseconds (docs/benchmarks.md). So the fsync rate stays bounded whatever the number of
//! partitions, while a lone producer waiting on one partition is held back only briefly.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use kappa_log::Log;
use prometheus_client::metrics::family::MetricConstructor;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{watch, Notify};

use crate::metrics::LatencyHistogram;

/// What the partitions' loops share: the fetch wake-up and the fsync rounds.
pub struct Commits {
    /// Woken whenever records become readable, so long-polling fetches can answer early.
    pub data_arrived: Arc<Notify>,
    /// Partitions waiting for the next fsync round.
    queued: Mutex<Vec<Arc<Shared>>>,
    wake: Arc<Notify>,
    /// Time from the start of a round to the start of the next, per partition fsynced in it.
    per_fsync: Duration,
    task: OnceLock<tokio::task::AbortHandle>,
    /// How long each partition's fsync in a round took: the disk's share of acks=all latency.
    pub fsync_duration: Histogram,
    /// A running average of the fsyncs' durations, in microseconds.
    usual_fsync_us: AtomicU64,
    /// How long a round waits for its fsyncs: at least the floor, and this many times the
    /// usual fsync.
    round_wait: (Duration, u32),
}

impl Commits {
    /// `max_fsyncs_per_sec` 0: rounds follow each other without a pause.
    pub fn new(max_fsyncs_per_sec: u32) -> Arc<Commits> {
        Commits::with_round_wait(max_fsyncs_per_sec, (Duration::from_millis(5), 8))
    }

    fn with_round_wait(max_fsyncs_per_sec: u32, round_wait: (Duration, u32)) -> Arc<Commits> {
        Arc::new(Commits {
            data_arrived: Arc::new(Notify::new()),
            queued: Mutex::new(Vec::new()),
            wake: Arc::new(Notify::new()),
            per_fsync: if max_fsyncs_per_sec == 0 {
                Duration::ZERO
            } else {
                Duration::from_secs(1) / max_fsyncs_per_sec
            },
            task: OnceLock::new(),
            fsync_duration: LatencyHistogram.new_metric(),
            usual_fsync_us: AtomicU64::new(0),
            round_wait,
        })
    }

    fn request_sync(self: &Arc<Self>, partition: &Arc<Shared>) {
        self.task.get_or_init(|| {
            tokio::spawn(round_loop(Arc::downgrade(self), self.wake.clone())).abort_handle()
        });
        push_once(
            &mut self.queued.lock().unwrap_or_else(|e| e.into_inner()),
            partition,
        );
        self.wake.notify_one();
    }

    /// Notes how long an fsync took, in the histogram and in the running average.
    fn record_fsync(&self, took: Duration) {
        self.fsync_duration.observe(took.as_secs_f64());
        let took_us = took.as_micros().min(u64::MAX as u128) as u64;
        let _ = self
            .usual_fsync_us
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |usual| {
                Some(usual - usual / 8 + took_us / 8)
            });
    }

    /// How long a round waits for its fsyncs before the next may start without the slow ones:
    /// several times the usual fsync (8), and never under a floor (5 ms).
    fn round_wait_limit(&self) -> Duration {
        let usual = Duration::from_micros(self.usual_fsync_us.load(Ordering::Acquire));
        let (floor, times) = self.round_wait;
        (usual * times).max(floor)
    }

    /// Takes the queued partitions that are not still syncing from an earlier round (those
    /// come back through `end_sync`) and marks them syncing.
    fn start_round(&self) -> Vec<Arc<Shared>> {
        let mut queued = self.queued.lock().unwrap_or_else(|e| e.into_inner());
        let mut round = std::mem::take(&mut *queued);
        round.retain(|partition| {
            !partition.failed() && !partition.syncing.swap(true, Ordering::AcqRel)
        });
        round
    }

    /// A partition's fsync is over: if requests appended and waited meanwhile, it joins the
    /// next round. Under the queue's lock, like `start_round`, so no wish is lost between them.
    fn end_sync(&self, partition: &Arc<Shared>) {
        let mut queued = self.queued.lock().unwrap_or_else(|e| e.into_inner());
        partition.syncing.store(false, Ordering::Release);
        if partition.sync_wanted.load(Ordering::Acquire) > *partition.durable.borrow()
            && !partition.failed()
            && push_once(&mut queued, partition)
        {
            drop(queued);
            self.wake.notify_one();
        }
    }
}

/// Queues a partition for the next round unless it is queued already; whether it was added.
fn push_once(queued: &mut Vec<Arc<Shared>>, partition: &Arc<Shared>) -> bool {
    let absent = !queued.iter().any(|q| Arc::ptr_eq(q, partition));
    if absent {
        queued.push(partition.clone());
    }
    absent
}

impl Drop for Commits {
    fn drop(&mut self) {
        if let Some(task) = self.task.get() {
            task.abort();
        }
    }
}

/// One partition's write loop and its place in the fsync rounds.
pub struct Syncer {
    shared: Arc<Shared>,
    commits: Arc<Commits>,
    task: OnceLock<tokio::task::AbortHandle>,
}

struct Shared {
    log: Arc<Log>,
    wanted: Notify,
    /// Offset below which records are in the file (the high watermark).
    written: watch::Sender<i64>,
    /// Offset below which records are on disk.
    durable: watch::Sender<i64>,
    /// The highest offset a request waits to see durable.
    sync_wanted: AtomicI64,
    /// In an fsync round now (changed under `Commits::queued`'s lock).
    syncing: AtomicBool,
    error: Mutex<Option<String>>,
}

impl Shared {
    fn fail(&self, failure: String) {
        tracing::error!(log = %self.log.dir().display(), error = %failure, "write or fsync failed");
        *self.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(failure);
        self.written.send_modify(|_| {});
        self.durable.send_modify(|_| {});
    }

    fn failed(&self) -> bool {
        self.error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }
}

impl Syncer {
    pub fn new(log: Arc<Log>, commits: &Arc<Commits>) -> Syncer {
        let written = log.high_watermark();
        Syncer {
            shared: Arc::new(Shared {
                log,
                wanted: Notify::new(),
                written: watch::channel(written).0,
                durable: watch::channel(written).0,
                sync_wanted: AtomicI64::new(0),
                syncing: AtomicBool::new(false),
                error: Mutex::new(None),
            }),
            commits: commits.clone(),
            task: OnceLock::new(),
        }
    }

    /// Has what was appended written soon, without waiting (acks=0).
    pub fn kick(&self) {
        self.task.get_or_init(|| {
            tokio::spawn(write_loop(self.shared.clone(), self.commits.clone())).abort_handle()
        });
        self.shared.wanted.notify_one();
    }

    /// Returns once everything below `offset` is on disk (or the disk failed).
    /// The fsync round writes what it syncs, so the write loop is left alone, unless the
    /// partition's fsync is running now: then the write loop copies the new appends into the
    /// file meanwhile, and the next round has only to fsync them.
    pub async fn wait_durable(&self, offset: i64) -> Result<(), String> {
        if *self.shared.durable.borrow() < offset {
            self.shared.sync_wanted.fetch_max(offset, Ordering::AcqRel);
            if self.shared.syncing.load(Ordering::Acquire) {
                self.kick();
            }
            self.commits.request_sync(&self.shared);
        }
        self.wait(&self.shared.durable, offset).await
    }

    /// Starts an fsync when the topic's `flush.messages` or `flush.ms` say one is due (the
    /// write loop checks after each write; the broker's flush ticker calls this for `flush.ms`
    /// when nothing is being written).
    pub fn flush_if_due(&self, now_ms: i64) {
        if self.shared.failed() || !self.shared.log.flush_due(now_ms) {
            return;
        }
        self.shared
            .sync_wanted
            .fetch_max(self.shared.log.end_offset(), Ordering::AcqRel);
        self.commits.request_sync(&self.shared);
    }

    /// Returns once everything below `offset` is in the file (or writing failed).
    pub async fn wait_written(&self, offset: i64) -> Result<(), String> {
        if *self.shared.written.borrow() < offset {
            self.kick();
        }
        self.wait(&self.shared.written, offset).await
    }

    async fn wait(&self, progress: &watch::Sender<i64>, offset: i64) -> Result<(), String> {
        let mut progress = progress.subscribe();
        loop {
            if let Some(e) = self
                .shared
                .error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
            {
                return Err(e);
            }
            if *progress.borrow_and_update() >= offset {
                return Ok(());
            }
            if progress.changed().await.is_err() {
                return Err("log closed".into());
            }
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        if let Some(task) = self.task.get() {
            task.abort();
        }
    }
}

async fn write_loop(shared: Arc<Shared>, commits: Arc<Commits>) {
    loop {
        shared.wanted.notified().await;
        // Keep going while appends keep coming: each pass writes all appended so far.
        loop {
            let written = *shared.written.borrow();
            if written >= shared.log.end_offset() {
                break;
            }
            let log = shared.log.clone();
            match tokio::task::spawn_blocking(move || log.write_pending()).await {
                Ok(Ok(now_written)) => {
                    if advance(&shared.written, now_written) {
                        commits.data_arrived.notify_waiters();
                        // flush = always, or the topic's flush.messages / flush.ms.
                        if shared.log.flushes_always()
                            || shared.log.flush_due(crate::topics::now_ms())
                        {
                            shared.sync_wanted.fetch_max(now_written, Ordering::AcqRel);
                            commits.request_sync(&shared);
                        }
                    }
                }
                Ok(Err(e)) => return shared.fail(e.to_string()),
                Err(e) => return shared.fail(e.to_string()),
            }
        }
    }
}

/// Moves `progress` up to `to` (never down: the write loop and the rounds both report);
/// whether it moved.
fn advance(progress: &watch::Sender<i64>, to: i64) -> bool {
    progress.send_if_modified(|at| {
        let moved = to > *at;
        *at = (*at).max(to);
        moved
    })
}

/// Holds the broker's `Commits` only during a round, so that dropping it ends the loop.
///
/// The next round waits for the fsyncs of this one, so that they stay together and their
/// device flushes merge (spreading them out stalled this machine's disk more often), but only
/// for so long: a partition whose fsync is far slower than usual (one in tens of thousands
/// here takes 50-100 ms) holds back only its own requests, and the next round goes ahead with
/// the others.
async fn round_loop(commits: Weak<Commits>, wake: Arc<Notify>) {
    let mut next_round = Instant::now();
    loop {
        wake.notified().await;
        let Some(commits) = commits.upgrade() else {
            return;
        };
        loop {
            if commits
                .queued
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
            {
                break;
            }
            let pause = next_round.saturating_duration_since(Instant::now());
            if !pause.is_zero() {
                // Usually well under the runtime timer's millisecond tick: sleep on a blocking
                // thread, which wakes on time. Whoever asks meanwhile joins this round.
                let _ = tokio::task::spawn_blocking(move || std::thread::sleep(pause)).await;
            }
            let round = commits.start_round();
            next_round = Instant::now() + commits.per_fsync * round.len() as u32;
            // All partitions of the round fsync at once: the block layer merges their device
            // flushes.
            let wait_limit = Instant::now() + commits.round_wait_limit();
            let (done, mut round_done) = tokio::sync::mpsc::channel::<()>(round.len().max(1));
            let fsyncs = round.len();
            for partition in round {
                let log = partition.log.clone();
                let timing = Arc::downgrade(&commits);
                let job = tokio::task::spawn_blocking(move || {
                    let written = log.write_pending()?;
                    let started = Instant::now();
                    if log.flush_to(written)? {
                        if let Some(commits) = timing.upgrade() {
                            commits.record_fsync(started.elapsed());
                        }
                    }
                    // An fsync may have covered more than was written here.
                    Ok::<_, kappa_log::LogError>(written.max(log.durable_offset()))
                });
                let commits = Arc::downgrade(&commits);
                let done = done.clone();
                tokio::spawn(async move {
                    let outcome = job.await;
                    let Some(commits) = commits.upgrade() else {
                        return;
                    };
                    match outcome {
                        Ok(Ok(durable)) => {
                            if advance(&partition.written, durable) {
                                commits.data_arrived.notify_waiters();
                            }
                            advance(&partition.durable, durable);
                        }
                        Ok(Err(e)) => partition.fail(e.to_string()),
                        Err(e) => partition.fail(e.to_string()),
                    }
                    commits.end_sync(&partition);
                    let _ = done.try_send(());
                });
            }
            for _ in 0..fsyncs {
                match tokio::time::timeout_at(wait_limit.into(), round_done.recv()).await {
                    Ok(Some(())) => {}
                    _ => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::records::Compression;
    use kappa_log::records::{encode_batch, plain_record};
    use kappa_log::LogConfig;

    /// Many acks=all producers over a few partitions, with and without pacing, with rounds
    /// that wait for their fsyncs and rounds that never do (so partitions are often still
    /// syncing when the next round starts): every wait ends, and ends with its records
    /// fsynced. A wish lost between rounds (a partition asked for while its previous fsync was
    /// still running, so left out of a round) would hang here.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_acks_all_wait_ends_with_its_records_fsynced() {
        let waiting = (Duration::from_millis(5), 8);
        let not_waiting = (Duration::ZERO, 0);
        for (max_fsyncs_per_sec, round_wait) in [
            (0, waiting),
            (3000, waiting),
            (0, not_waiting),
            (3000, not_waiting),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let commits = Commits::with_round_wait(max_fsyncs_per_sec, round_wait);
            let partitions: Vec<(Arc<Log>, Arc<Syncer>)> = (0..4)
                .map(|p| {
                    let log = Log::open(&dir.path().join(p.to_string()), LogConfig::default(), 0);
                    let log = Arc::new(log.unwrap());
                    (log.clone(), Arc::new(Syncer::new(log, &commits)))
                })
                .collect();
            let record = plain_record(0, 0, None, Some(Bytes::from_static(b"value")));
            let batch = encode_batch(&[record], Compression::None).unwrap();
            let producers: Vec<_> = (0..16)
                .map(|producer| {
                    let (log, syncer) = partitions[producer % partitions.len()].clone();
                    let batch = batch.clone();
                    tokio::spawn(async move {
                        for _ in 0..150 {
                            let appended = log.append_deferred(&batch, 0).unwrap();
                            syncer.wait_durable(appended.last_offset + 1).await.unwrap();
                            assert!(log.durable_offset() > appended.last_offset);
                        }
                    })
                })
                .collect();
            let all = futures::future::join_all(producers);
            let done = tokio::time::timeout(Duration::from_secs(60), all)
                .await
                .expect("an acks=all wait never ended");
            assert!(done.iter().all(|producer| producer.is_ok()));
            for (log, _) in &partitions {
                assert_eq!(log.end_offset(), 4 * 150);
                assert_eq!(log.durable_offset(), 4 * 150);
            }
        }
    }
}
