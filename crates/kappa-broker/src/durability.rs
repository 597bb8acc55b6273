//! Group commit for acks=all: one fsync loop per partition. Produce requests that need their
//! data on disk wait on a watch of the durable offset instead of each calling fsync, so every
//! request that arrives while an fsync runs is covered by the next one, and waiting costs no
//! thread.

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
    durable: watch::Sender<i64>,
    error: Mutex<Option<String>>,
}

impl Syncer {
    pub fn new(log: Arc<Log>) -> Syncer {
        let end = log.end_offset();
        Syncer {
            shared: Arc::new(Shared {
                log,
                wanted: Notify::new(),
                durable: watch::channel(end).0,
                error: Mutex::new(None),
            }),
            task: OnceLock::new(),
        }
    }

    /// Returns once everything below `offset` is on disk (or the disk failed).
    pub async fn wait_durable(&self, offset: i64) -> Result<(), String> {
        let mut durable = self.shared.durable.subscribe();
        if *durable.borrow() >= offset {
            return Ok(());
        }
        self.task
            .get_or_init(|| tokio::spawn(sync_loop(self.shared.clone())).abort_handle());
        self.shared.wanted.notify_one();
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
            if *durable.borrow_and_update() >= offset {
                return Ok(());
            }
            if durable.changed().await.is_err() {
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
        // Keep syncing while appends keep coming: each pass covers all written so far.
        loop {
            let end = shared.log.end_offset();
            if *shared.durable.borrow() >= end {
                break;
            }
            let log = shared.log.clone();
            match tokio::task::spawn_blocking(move || log.flush_to(end)).await {
                Ok(Ok(())) => {
                    shared.durable.send_replace(end);
                }
                Ok(Err(e)) => {
                    tracing::error!(log = %shared.log.dir().display(), error = %e, "fsync failed");
                    *shared.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                    shared.durable.send_modify(|_| {});
                    return;
                }
                Err(e) => {
                    *shared.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                    shared.durable.send_modify(|_| {});
                    return;
                }
            }
        }
    }
}
