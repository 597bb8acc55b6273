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

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use kappa_log::Log;
use tokio::sync::{watch, Notify};

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
}

impl Commits {
    /// `max_fsyncs_per_sec` 0: rounds follow each other without a pause.
    pub fn new(max_fsyncs_per_sec: u32) -> Arc<Commits> {
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
        })
    }

    fn request_sync(self: &Arc<Self>, partition: &Arc<Shared>) {
        self.task.get_or_init(|| {
            tokio::spawn(round_loop(Arc::downgrade(self), self.wake.clone())).abort_handle()
        });
        self.enqueue(partition);
        self.wake.notify_one();
    }

    fn enqueue(&self, partition: &Arc<Shared>) {
        let mut queued = self.queued.lock().unwrap_or_else(|e| e.into_inner());
        if !queued.iter().any(|q| Arc::ptr_eq(q, partition)) {
            queued.push(partition.clone());
        }
    }
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
    /// The fsync round writes what it syncs, so the write loop is left alone.
    pub async fn wait_durable(&self, offset: i64) -> Result<(), String> {
        if *self.shared.durable.borrow() < offset {
            self.shared.sync_wanted.fetch_max(offset, Ordering::AcqRel);
            self.commits.request_sync(&self.shared);
        }
        self.wait(&self.shared.durable, offset).await
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
                        if shared.log.flushes_always() {
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
            let round: Vec<Arc<Shared>> =
                std::mem::take(&mut *commits.queued.lock().unwrap_or_else(|e| e.into_inner()));
            next_round = Instant::now() + commits.per_fsync * round.len() as u32;
            // All partitions of the round fsync at once: the block layer merges their device
            // flushes.
            let syncs: Vec<_> = round
                .iter()
                .filter(|partition| !partition.failed())
                .map(|partition| {
                    let log = partition.log.clone();
                    let partition = partition.clone();
                    let job = tokio::task::spawn_blocking(move || {
                        let written = log.write_pending()?;
                        log.flush_to(written)?;
                        Ok::<_, kappa_log::LogError>(written)
                    });
                    (partition, job)
                })
                .collect();
            for (partition, job) in syncs {
                match job.await {
                    Ok(Ok(durable)) => {
                        if advance(&partition.written, durable) {
                            commits.data_arrived.notify_waiters();
                        }
                        advance(&partition.durable, durable);
                        // Appended (and waited for) while this round ran: the next round.
                        if partition.sync_wanted.load(Ordering::Acquire) > durable {
                            commits.enqueue(&partition);
                        }
                    }
                    Ok(Err(e)) => partition.fail(e.to_string()),
                    Err(e) => partition.fail(e.to_string()),
                }
            }
        }
    }
}
