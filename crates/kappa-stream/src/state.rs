//! Keyed operator state of one pipeline task in RocksDB: keys are `(operator id, key)`, every
//! write also goes to the task's changelog (a compacted topic, written by the runtime inside
//! the checkpoint's transaction), and a checkpoint is a RocksDB checkpoint directory (hard
//! links to the immutable SST files, so only files new since the last one cost space).
//!
//! The local database is a working copy: it may hold writes of a checkpoint that never
//! committed. Restoring therefore starts from a checkpoint directory whose id the committed
//! source offsets name, or rebuilds the database from the changelog up to the committed
//! offsets.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rocksdb::checkpoint::Checkpoint;
use rocksdb::compaction_filter::Decision;
use rocksdb::{
    BlockBasedOptions, Cache, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB,
};
use serde::{Deserialize, Serialize};

use crate::error::{Result, StreamError};

/// How much memory a task's RocksDB may use, and how long state lives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateConfig {
    /// Block cache (Flink: `state.backend.rocksdb.block.cache-size`).
    pub block_cache_bytes: usize,
    /// Memtable size (Flink: `state.backend.rocksdb.writebuffer.size`).
    pub write_buffer_bytes: usize,
    /// Memtables per column family (Flink: `state.backend.rocksdb.writebuffer.count`).
    pub write_buffer_count: i32,
    /// Keys an updating aggregation keeps decoded in memory before writing them back.
    pub cache_keys: usize,
    /// `table.exec.state.ttl`: state not written for this long is dropped (0: never).
    pub ttl_ms: u64,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            block_cache_bytes: 64 << 20,
            write_buffer_bytes: 32 << 20,
            write_buffer_count: 2,
            cache_keys: 100_000,
            ttl_ms: 0,
        }
    }
}

/// Where a task's state writes go besides RocksDB: the changelog topic.
pub trait ChangelogWriter: Send {
    fn write(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<()>;
}

fn db_err(e: rocksdb::Error) -> StreamError {
    StreamError::State(e.to_string())
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> StreamError {
    StreamError::State(format!("{what} {}: {e}", path.display()))
}

/// Milliseconds since the epoch, the clock of state TTL.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Every value starts with a tag: `PLAIN`, or `EXPIRING` followed by the time it was
/// written (8 bytes), for state under `table.exec.state.ttl`.
const PLAIN: u8 = 0;
const EXPIRING: u8 = 1;
const EXPIRING_HEADER: usize = 9;

pub struct TaskState {
    db: DB,
    dir: PathBuf,
    write_options: WriteOptions,
    pending: WriteBatch,
    changelog: Option<Box<dyn ChangelogWriter>>,
    ttl_ms: u64,
    /// Bytes written since the task started (keys and values).
    pub bytes_written: u64,
}

fn options(config: &StateConfig) -> Options {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.set_write_buffer_size(config.write_buffer_bytes);
    opts.set_max_write_buffer_number(config.write_buffer_count.max(2));
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    let mut table = BlockBasedOptions::default();
    let cache = Cache::new_lru_cache(config.block_cache_bytes);
    table.set_block_cache(&cache);
    table.set_bloom_filter(10.0, false);
    table.set_cache_index_and_filter_blocks(true);
    opts.set_block_based_table_factory(&table);
    if config.ttl_ms > 0 {
        let ttl = config.ttl_ms;
        opts.set_compaction_filter("kappa-state-ttl", move |_level, _key, value| {
            if expired(value, ttl, now_ms()) {
                Decision::Remove
            } else {
                Decision::Keep
            }
        });
    }
    opts
}

fn expired(value: &[u8], ttl_ms: u64, now: u64) -> bool {
    if value.first() != Some(&EXPIRING) {
        return false;
    }
    match value.get(1..EXPIRING_HEADER) {
        Some(h) => {
            let written = u64::from_be_bytes(h.try_into().unwrap_or([0; 8]));
            written.saturating_add(ttl_ms) < now
        }
        None => false,
    }
}

/// The RocksDB key of `key` under operator `op`.
pub fn state_key(op: u32, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + key.len());
    k.extend_from_slice(&op.to_be_bytes());
    k.extend_from_slice(key);
    k
}

impl TaskState {
    /// Opens the working database in `dir/db`, first replacing it with a copy of `from`
    /// (a checkpoint directory) when given, or emptying it when `fresh`.
    pub fn open(
        dir: &Path,
        config: &StateConfig,
        from: Option<&Path>,
        fresh: bool,
    ) -> Result<Self> {
        let db_dir = dir.join("db");
        if (from.is_some() || fresh) && db_dir.exists() {
            std::fs::remove_dir_all(&db_dir).map_err(|e| io_err("removing", &db_dir, e))?;
        }
        std::fs::create_dir_all(dir).map_err(|e| io_err("creating", dir, e))?;
        if let Some(src) = from {
            copy_checkpoint(src, &db_dir)?;
        }
        let db = DB::open(&options(config), &db_dir).map_err(db_err)?;
        let mut write_options = WriteOptions::default();
        // durability comes from checkpoints and the changelog, not the WAL
        write_options.disable_wal(true);
        Ok(TaskState {
            db,
            dir: dir.to_path_buf(),
            write_options,
            pending: WriteBatch::default(),
            changelog: None,
            ttl_ms: config.ttl_ms,
            bytes_written: 0,
        })
    }

    pub fn set_changelog(&mut self, changelog: Option<Box<dyn ChangelogWriter>>) {
        self.changelog = changelog;
    }

    fn wrap(&self, value: &[u8], expiring: bool) -> Vec<u8> {
        let mut buf = Vec::with_capacity(value.len() + EXPIRING_HEADER);
        if expiring && self.ttl_ms > 0 {
            buf.push(EXPIRING);
            buf.extend_from_slice(&now_ms().to_be_bytes());
        } else {
            buf.push(PLAIN);
        }
        buf.extend_from_slice(value);
        buf
    }

    fn unwrap_value(&self, mut value: Vec<u8>) -> Option<Vec<u8>> {
        match value.first() {
            Some(&PLAIN) => {
                value.remove(0);
                Some(value)
            }
            Some(&EXPIRING) if value.len() >= EXPIRING_HEADER => {
                if self.ttl_ms > 0 && expired(&value, self.ttl_ms, now_ms()) {
                    return None;
                }
                value.drain(..EXPIRING_HEADER);
                Some(value)
            }
            _ => None,
        }
    }

    pub fn get(&self, op: u32, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let v = self.db.get(state_key(op, key)).map_err(db_err)?;
        Ok(v.and_then(|v| self.unwrap_value(v)))
    }

    pub fn multi_get<'k>(
        &self,
        op: u32,
        keys: impl IntoIterator<Item = &'k [u8]>,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let keys: Vec<Vec<u8>> = keys.into_iter().map(|k| state_key(op, k)).collect();
        self.db
            .multi_get(&keys)
            .into_iter()
            .map(|r| {
                r.map(|v| v.and_then(|v| self.unwrap_value(v)))
                    .map_err(db_err)
            })
            .collect()
    }

    /// Writes state that `table.exec.state.ttl` does not expire (windows, progress).
    pub fn put(&mut self, op: u32, key: &[u8], value: &[u8]) -> Result<()> {
        self.put_tagged(op, key, value, false)
    }

    /// Writes state that expires `table.exec.state.ttl` after this write.
    pub fn put_expiring(&mut self, op: u32, key: &[u8], value: &[u8]) -> Result<()> {
        self.put_tagged(op, key, value, true)
    }

    fn put_tagged(&mut self, op: u32, key: &[u8], value: &[u8], expiring: bool) -> Result<()> {
        let k = state_key(op, key);
        let v = self.wrap(value, expiring);
        self.bytes_written += (k.len() + v.len()) as u64;
        self.pending.put(&k, &v);
        if let Some(c) = self.changelog.as_mut() {
            c.write(&k, Some(&v))?;
        }
        Ok(())
    }

    pub fn delete(&mut self, op: u32, key: &[u8]) -> Result<()> {
        let k = state_key(op, key);
        self.pending.delete(&k);
        if let Some(c) = self.changelog.as_mut() {
            c.write(&k, None)?;
        }
        Ok(())
    }

    /// Applies a changelog record as it was written (tag included).
    pub fn apply_raw(&mut self, key: &[u8], value: Option<&[u8]>) {
        match value {
            Some(v) => self.pending.put(key, v),
            None => self.pending.delete(key),
        }
    }

    /// Writes every entry of the database to the changelog (after a restore from a savepoint,
    /// so that the changelog alone again describes the state).
    pub fn republish(&mut self) -> Result<u64> {
        let Some(c) = self.changelog.as_mut() else {
            return Ok(0);
        };
        let mut n = 0;
        for item in self.db.iterator(IteratorMode::Start) {
            let (k, v) = item.map_err(db_err)?;
            c.write(&k, Some(&v))?;
            n += 1;
        }
        Ok(n)
    }

    /// Writes the pending writes to the database.
    pub fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
        self.db
            .write_opt(batch, &self.write_options)
            .map_err(db_err)
    }

    /// Every live `(key, value)` of operator `op`, in key order.
    pub fn scan(&self, op: u32) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let prefix = op.to_be_bytes();
        let mut out = Vec::new();
        for item in self
            .db
            .iterator(IteratorMode::From(&prefix, Direction::Forward))
        {
            let (k, v) = item.map_err(db_err)?;
            if !k.starts_with(&prefix) {
                break;
            }
            if let Some(v) = self.unwrap_value(v.into_vec()) {
                out.push((k[4..].to_vec(), v));
            }
        }
        Ok(out)
    }

    /// The operator ids that hold state.
    pub fn operators(&self) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        let mut from = [0u8; 4];
        loop {
            let mut it = self
                .db
                .iterator(IteratorMode::From(&from, Direction::Forward));
            let Some(item) = it.next() else { break };
            let (k, _) = item.map_err(db_err)?;
            let Some(op) = k
                .get(..4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            else {
                break;
            };
            out.push(op);
            match op.checked_add(1) {
                Some(next) => from = next.to_be_bytes(),
                None => break,
            }
        }
        Ok(out)
    }

    /// Writes a checkpoint directory `chk-{id}` of the database; returns its size in bytes
    /// of files that are new (not shared with the previous checkpoint).
    pub fn checkpoint(&mut self, id: u64) -> Result<(PathBuf, u64)> {
        self.flush()?;
        let path = self.dir.join(format!("chk-{id}"));
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(|e| io_err("removing", &path, e))?;
        }
        Checkpoint::new(&self.db)
            .and_then(|c| c.create_checkpoint(&path))
            .map_err(db_err)?;
        let previous = self.latest_checkpoint_before(id);
        let size = new_bytes(&path, previous.as_deref())?;
        Ok((path, size))
    }

    fn latest_checkpoint_before(&self, id: u64) -> Option<PathBuf> {
        list_checkpoints(&self.dir)
            .into_iter()
            .filter(|(i, _)| *i < id)
            .max_by_key(|(i, _)| *i)
            .map(|(_, p)| p)
    }

    /// Removes checkpoint directories older than `keep_from`.
    pub fn prune(&self, keep_from: u64) {
        for (id, path) in list_checkpoints(&self.dir) {
            if id < keep_from {
                let _ = std::fs::remove_dir_all(path);
            }
        }
    }
}

/// `(id, path)` of the `chk-N` directories under a task directory.
pub fn list_checkpoints(dir: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let id = name.strip_prefix("chk-")?.parse().ok()?;
            Some((id, e.path()))
        })
        .collect()
}

/// Bytes of the SST files in `dir` that `previous` does not share (same inode).
fn new_bytes(dir: &Path, previous: Option<&Path>) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut old = std::collections::HashSet::new();
    if let Some(p) = previous {
        if let Ok(entries) = std::fs::read_dir(p) {
            for e in entries.flatten() {
                if let Ok(m) = e.metadata() {
                    old.insert(m.ino());
                }
            }
        }
    }
    let mut size = 0;
    for e in std::fs::read_dir(dir)
        .map_err(|e| io_err("reading", dir, e))?
        .flatten()
    {
        if let Ok(m) = e.metadata() {
            if !old.contains(&m.ino()) {
                size += m.len();
            }
        }
    }
    Ok(size)
}

/// Copies a checkpoint directory: SST files are hard links (immutable), the rest copied.
pub fn copy_checkpoint(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| io_err("creating", to, e))?;
    for e in std::fs::read_dir(from)
        .map_err(|e| io_err("reading", from, e))?
        .flatten()
    {
        let src = e.path();
        let dst = to.join(e.file_name());
        let is_sst = src.extension().is_some_and(|x| x == "sst");
        if is_sst && std::fs::hard_link(&src, &dst).is_ok() {
            continue;
        }
        std::fs::copy(&src, &dst).map_err(|e| io_err("copying", &src, e))?;
    }
    Ok(())
}

/// Copies a checkpoint directory as plain files (a savepoint must not share inodes).
pub fn copy_dir_plain(from: &Path, to: &Path) -> Result<u64> {
    std::fs::create_dir_all(to).map_err(|e| io_err("creating", to, e))?;
    let mut size = 0;
    for e in std::fs::read_dir(from)
        .map_err(|e| io_err("reading", from, e))?
        .flatten()
    {
        let src = e.path();
        size +=
            std::fs::copy(&src, to.join(e.file_name())).map_err(|e| io_err("copying", &src, e))?;
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Records = Vec<(Vec<u8>, Option<Vec<u8>>)>;
    struct Recorder(std::sync::Arc<std::sync::Mutex<Records>>);
    impl ChangelogWriter for Recorder {
        fn write(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<()> {
            self.0
                .lock()
                .unwrap()
                .push((key.to_vec(), value.map(<[u8]>::to_vec)));
            Ok(())
        }
    }

    #[test]
    fn writes_reach_db_and_changelog_and_checkpoints_restore() {
        let dir = tempfile::tempdir().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut s = TaskState::open(dir.path(), &StateConfig::default(), None, true).unwrap();
        s.set_changelog(Some(Box::new(Recorder(log.clone()))));
        s.put(1, b"a", b"1").unwrap();
        s.put(1, b"b", b"2").unwrap();
        s.put(2, b"a", b"x").unwrap();
        s.flush().unwrap();
        assert_eq!(s.get(1, b"a").unwrap().as_deref(), Some(&b"1"[..]));
        let (chk, size) = s.checkpoint(1).unwrap();
        assert!(size > 0);
        s.delete(1, b"a").unwrap();
        s.put(1, b"c", b"3").unwrap();
        s.flush().unwrap();
        assert_eq!(s.get(1, b"a").unwrap(), None);
        assert_eq!(s.operators().unwrap(), vec![1, 2]);
        assert_eq!(log.lock().unwrap().len(), 5);
        assert_eq!(log.lock().unwrap()[3], (state_key(1, b"a"), None));
        drop(s);

        // the checkpoint holds the state as it was at checkpoint 1
        let s = TaskState::open(dir.path(), &StateConfig::default(), Some(&chk), false).unwrap();
        let scan = s.scan(1).unwrap();
        assert_eq!(
            scan,
            vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"2".to_vec())
            ]
        );
        assert_eq!(
            s.multi_get(1, [&b"b"[..], &b"c"[..]]).unwrap(),
            vec![Some(b"2".to_vec()), None]
        );
    }

    #[test]
    fn expired_state_reads_as_missing() {
        let dir = tempfile::tempdir().unwrap();
        let config = StateConfig {
            ttl_ms: 1,
            ..StateConfig::default()
        };
        let mut s = TaskState::open(dir.path(), &config, None, true).unwrap();
        s.put_expiring(1, b"k", b"v").unwrap();
        s.put(1, b"window", b"w").unwrap();
        s.flush().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(s.get(1, b"k").unwrap(), None);
        assert_eq!(
            s.get(1, b"window").unwrap().as_deref(),
            Some(&b"w"[..]),
            "windows do not expire"
        );
        let tagged = |t: u64| [&[EXPIRING][..], &t.to_be_bytes()].concat();
        assert!(expired(&tagged(1), 10, 100));
        assert!(!expired(&tagged(95), 10, 100));
        assert!(!expired(&[PLAIN, 1, 2, 3], 10, 100));
    }
}
