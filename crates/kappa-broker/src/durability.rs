//! Writes and group commit, one loop per partition. A produce request appends in memory and
//! waits: acks=1 until its records are written to the file (where consumers see them and a
//! crash of the process cannot take them back), acks=all until they are fsynced too. Whatever
//! arrives while a write or an fsync runs is covered by the next one, so a busy partition
//! writes large blocks and shares fsyncs, and waiting costs no thread.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use kappa_log::Log;
use tokio::sync::{watch, Notify};

pub struct Syncer {
    shared: Arc<Shared>,
    task: OnceLock<tokio::task::AbortHandle>,
}

struct Shared {
    log: Arc<Log>,
    wanted: Notify,
    /// Offset below which records are in the file (the high watermark).
    written: watch::Sender<i64>,
    /// Offset below which records are on disk.
    durable: watch::Sender<i64>,
    /// The highest offset an acks=all request waits to see durable.
    sync_wanted: AtomicI64,
    error: Mutex<Option<String>>,
    /// The broker's wake-up for long-polling fetches: new records became readable.
    data_arrived: Arc<Notify>,
}

impl Syncer {
    pub fn new(log: Arc<Log>, data_arrived: Arc<Notify>) -> Syncer {
        let written = log.high_watermark();
        Syncer {
            shared: Arc::new(Shared {
                log,
                wanted: Notify::new(),
                written: watch::channel(written).0,
                durable: watch::channel(written).0,
                sync_wanted: AtomicI64::new(0),
                error: Mutex::new(None),
                data_arrived,
            }),
            task: OnceLock::new(),
        }
    }

    /// Has what was appended written soon, without waiting (acks=0).
    pub fn kick(&self) {
        self.task
            .get_or_init(|| tokio::spawn(sync_loop(self.shared.clone())).abort_handle());
        self.shared.wanted.notify_one();
    }

    /// Returns once everything below `offset` is in the file (or writing failed).
    pub async fn wait_written(&self, offset: i64) -> Result<(), String> {
        self.wait(&self.shared.written, offset).await
    }

    /// Returns once everything below `offset` is on disk (or the disk failed).
    pub async fn wait_durable(&self, offset: i64) -> Result<(), String> {
        self.shared.sync_wanted.fetch_max(offset, Ordering::AcqRel);
        self.wait(&self.shared.durable, offset).await
    }

    async fn wait(&self, progress: &watch::Sender<i64>, offset: i64) -> Result<(), String> {
        let mut progress = progress.subscribe();
        if *progress.borrow() >= offset {
            return Ok(());
        }
        self.kick();
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

async fn sync_loop(shared: Arc<Shared>) {
    loop {
        shared.wanted.notified().await;
        // Keep going while appends keep coming: each pass writes all appended so far.
        loop {
            let end = shared.log.end_offset();
            let written = *shared.written.borrow();
            let durable = *shared.durable.borrow();
            let sync = shared.sync_wanted.load(Ordering::Acquire) > durable
                || (end > durable && shared.log.flushes_always());
            if written >= end && !sync {
                break;
            }
            let log = shared.log.clone();
            let pass = tokio::task::spawn_blocking(move || {
                let written = log.write_pending()?;
                if sync {
                    log.flush_to(written)?;
                }
                Ok::<_, kappa_log::LogError>(written)
            })
            .await;
            let failure = match pass {
                Ok(Ok(now_written)) => {
                    if now_written > written {
                        shared.written.send_replace(now_written);
                        shared.data_arrived.notify_waiters();
                    }
                    if sync {
                        shared.durable.send_replace(now_written);
                    }
                    continue;
                }
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            };
            tracing::error!(log = %shared.log.dir().display(), error = %failure, "write or fsync failed");
            *shared.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(failure);
            shared.written.send_modify(|_| {});
            shared.durable.send_modify(|_| {});
            return;
        }
    }
}
