//! One segment: a `.log` file of whole record batches plus its sparse `.index`
//! (relative offset -> file position) and `.timeindex` (max timestamp so far -> relative offset).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::{self, BatchHeader, HEADER_LEN};
use crate::direct::{self, AlignedBuf, OwnedRecords, TailCache, BLOCK};
use crate::log::{FileSlice, LogSlice};
use crate::txn_index::TxnIndex;
use crate::Result;

/// Sparse offset index: (offset relative to the base, file position).
type OffsetIndex = Vec<(u32, u32)>;
/// Time index: (largest timestamp so far, relative offset of its batch).
type TimeIndex = Vec<(i64, u32)>;

const OFFSET_ENTRY: usize = 8;
/// Suffix of a retired segment's files, removed after `file.delete.delay.ms`.
pub(crate) const DELETED_SUFFIX: &str = ".deleted";
const TIME_ENTRY: usize = 12;

pub(crate) fn log_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}
fn index_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.index"))
}
fn time_index_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.timeindex"))
}
/// Marks a segment whose file was an expired segment's, until it is trimmed to its batches.
fn reused_marker_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.reused"))
}

pub(crate) struct Segment {
    pub base_offset: i64,
    pub file: Arc<File>,
    /// Bytes of whole batches appended, including those still waiting in `pending`.
    pub size: u64,
    /// Offset after the last record of the segment (== base_offset when empty).
    pub next_offset: i64,
    /// Bytes of whole batches in the file: readers see no further.
    pub written: u64,
    /// Offset after the last record in the file.
    pub written_next_offset: i64,
    /// Appended bytes not yet in the file, to be written at `pending_from`. With direct writes
    /// the buffer starts with the file's partial last block, which is written again with them.
    pending: AlignedBuf,
    /// Where the first pending buffer is to be written: `sealed[0]`'s, or else `pending`'s.
    pending_from: u64,
    /// Earlier pending buffers, oldest first. With whole-block writes each ends in the partial
    /// block the next one starts with; else each starts where the previous one ends. A buffer
    /// of records taken without a copy ([`Segment::stage_owned`]) starts a new one.
    sealed: Vec<AlignedBuf>,
    /// File position up to which the kernel was asked to start writing back (buffered writes).
    writeback_from: u64,
    /// The newest directly written bytes, ending at `written`.
    recent: TailCache,
    /// Largest batch max-timestamp in the segment; -1 when empty.
    pub max_timestamp: i64,
    /// Wall-clock time of the first append (or file mtime on reopen), for `segment.ms`.
    pub created_ms: i64,
    offset_index: OffsetIndex,
    time_index: TimeIndex,
    index_file: File,
    time_index_file: File,
    bytes_since_index: u64,
    /// Offset (relative to the base) of the last batch, for the seal entry of the time index.
    last_batch_rel: u32,
    dir: PathBuf,
    direct: Direct,
    /// The file was an expired segment's (see [`Segment::reuse`]): past `size` it holds that
    /// segment's bytes, until [`Segment::trim`].
    reused: bool,
    /// The aborted transactions whose ABORT marker is in this segment.
    pub(crate) txn_index: TxnIndex,
}

/// How appends reach the file.
#[derive(Clone)]
enum Direct {
    /// Not decided yet: segments that never take an append never open a second handle.
    Untried,
    On(Arc<File>),
    /// Through the page cache, in whole blocks as direct writes would be: in a reused file a
    /// write that ends inside a page would first read that page's old bytes from the disk.
    Blocks,
    /// The file system refuses direct I/O: appends go through the page cache.
    Off,
}

/// Appended bytes taken from a segment to be written to its file (see [`Segment::take_pending`]).
pub(crate) struct PendingWrite {
    pub base_offset: i64,
    /// Written one after the other from `position`; when `overlapping`, all but the last up
    /// to their last whole block, as the next one starts with that block.
    bufs: Vec<AlignedBuf>,
    overlapping: bool,
    position: u64,
    file: Arc<File>,
    /// How the segment writes, when these bytes were taken.
    mode: Direct,
    /// Where the segment's writeback stands; moved on by [`PendingWrite::write`].
    writeback_from: u64,
    /// The segment's size and next offset once these bytes are in the file.
    pub end: u64,
    pub next_offset: i64,
}

impl PendingWrite {
    /// Writes the bytes. A direct write the file system refuses is done buffered instead;
    /// `Ok(false)` then tells the segment to stop trying direct writes.
    pub fn write(&mut self) -> Result<bool> {
        match &self.mode {
            Direct::On(direct) => {
                match direct::write_chain(
                    direct,
                    &mut self.bufs,
                    self.position,
                    (true, self.overlapping),
                ) {
                    Ok(()) => return Ok(true),
                    Err(e) if direct::refused(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Direct::Blocks => {
                direct::write_chain(&self.file, &mut self.bufs, self.position, (true, true))?;
                self.start_writeback();
                return Ok(true);
            }
            Direct::Untried | Direct::Off => {}
        }
        direct::write_chain(
            &self.file,
            &mut self.bufs,
            self.position,
            (false, self.overlapping),
        )?;
        self.start_writeback();
        Ok(!matches!(self.mode, Direct::On(_)))
    }

    /// Whether these bytes bypass the page cache, so the tail cache should keep them.
    fn is_direct(&self) -> bool {
        matches!(self.mode, Direct::On(_))
    }

    /// Asks the kernel to start writing back the buffered bytes once `WRITEBACK_AFTER_BYTES`
    /// have gathered, without waiting for it (as RocksDB's `bytes_per_sync`). Otherwise dirty
    /// pages pile up to the kernel's background threshold (gigabytes on a large machine), and
    /// its flusher then writes them in a burst that stalls appends and fsyncs for tens of ms.
    fn start_writeback(&mut self) {
        let end = self.end;
        if end < self.writeback_from + WRITEBACK_AFTER_BYTES {
            return;
        }
        if let Err(e) = start_writeback(&self.file, self.writeback_from, end - self.writeback_from)
        {
            // Only a hint: a failed write-out still fails the next fsync.
            tracing::debug!(error = %e, "sync_file_range");
        }
        self.writeback_from = end;
    }

    /// The emptied buffer, for the next write.
    pub fn into_buffer(mut self) -> AlignedBuf {
        let buf = self.bufs.pop().unwrap_or_default();
        let used = buf.len();
        emptied(buf, used)
    }
}

/// `buf` emptied for the next write, and freed if a write of `used` bytes left it mostly idle.
fn emptied(mut buf: AlignedBuf, used: usize) -> AlignedBuf {
    buf.clear();
    buf.shrink(used, PENDING_KEEP_BYTES);
    buf
}

/// Buffered bytes written before the log asks the kernel to write them back.
const WRITEBACK_AFTER_BYTES: u64 = 1 << 20;

/// `sync_file_range(SYNC_FILE_RANGE_WRITE)`: starts write-out of the dirty pages in the range
/// and returns without waiting (neither rustix nor nix offers it).
fn start_writeback(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on a file descriptor `file` keeps open for the call; it reads
    // no memory of this process.
    let r = unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Largest write buffer a partition keeps between writes.
/// Growing a buffer costs zero-filling or faulting in fresh memory, more than the copy into it,
/// so a partition under heavy load keeps its buffers (two) up to this size; see
/// [`AlignedBuf::shrink`] for when they go.
const PENDING_KEEP_BYTES: usize = 32 << 20;

/// Least room of a pending buffer started because the current one is full.
const PENDING_GROWTH: usize = 1 << 20;

/// What opening a segment found.
pub(crate) struct Opened {
    pub segment: Segment,
    /// Bytes cut from a torn or corrupt tail (0 when the file was whole).
    pub truncated_bytes: u64,
    pub truncation_reason: Option<String>,
}

impl Segment {
    pub fn create(dir: &Path, base_offset: i64, now_ms: i64) -> Result<Segment> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(log_path(dir, base_offset))?;
        Segment::empty(dir, base_offset, now_ms, Arc::new(file), false)
    }

    /// A new segment in the file of `expired`, a segment retention is deleting, whose blocks
    /// are then overwritten in place. Appending to a fresh file makes every fsync also commit
    /// the file system's journal (new blocks, a new size); overwriting written blocks of a file
    /// whose size does not change needs only the data written and the device cache flushed
    /// (docs/benchmarks.md, session 8). Nothing may read `expired` any more.
    pub fn reuse(expired: Segment, dir: &Path, base_offset: i64, now_ms: i64) -> Result<Segment> {
        expired.delete_indexes()?;
        expired.txn_index.delete()?;
        // The marker first: a crash after the rename must find it, to expect stale bytes.
        File::create(reused_marker_path(dir, base_offset))?;
        std::fs::rename(
            log_path(dir, expired.base_offset),
            log_path(dir, base_offset),
        )?;
        remove_if_present(&reused_marker_path(dir, expired.base_offset))?;
        Segment::empty(dir, base_offset, now_ms, expired.file, true)
    }

    fn empty(
        dir: &Path,
        base_offset: i64,
        now_ms: i64,
        file: Arc<File>,
        reused: bool,
    ) -> Result<Segment> {
        let (index_file, time_index_file) = open_index_files(dir, base_offset, true)?;
        Ok(Segment {
            base_offset,
            file,
            size: 0,
            next_offset: base_offset,
            written: 0,
            written_next_offset: base_offset,
            pending: AlignedBuf::default(),
            pending_from: 0,
            sealed: Vec::new(),
            writeback_from: 0,
            recent: TailCache::default(),
            max_timestamp: -1,
            created_ms: now_ms,
            offset_index: Vec::new(),
            time_index: Vec::new(),
            index_file,
            time_index_file,
            bytes_since_index: 0,
            last_batch_rel: 0,
            dir: dir.to_path_buf(),
            direct: Direct::Untried,
            reused,
            txn_index: TxnIndex::create(dir, base_offset)?,
        })
    }

    /// Opens an existing segment. With `recover`, every batch is read and CRC-checked and a bad
    /// tail is cut; otherwise the indexes are loaded and trusted when they are consistent.
    pub fn open(
        dir: &Path,
        base_offset: i64,
        recover: bool,
        index_interval: u64,
    ) -> Result<Opened> {
        let path = log_path(dir, base_offset);
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        let meta = file.metadata()?;
        let file_len = meta.len();
        let created_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let mut segment = Segment {
            base_offset,
            file: Arc::new(file),
            size: file_len,
            next_offset: base_offset,
            written: 0,
            written_next_offset: base_offset,
            pending: AlignedBuf::default(),
            pending_from: 0,
            sealed: Vec::new(),
            writeback_from: file_len,
            recent: TailCache::default(),
            max_timestamp: -1,
            created_ms,
            offset_index: Vec::new(),
            time_index: Vec::new(),
            index_file: File::open("/dev/null")?,
            time_index_file: File::open("/dev/null")?,
            bytes_since_index: 0,
            last_batch_rel: 0,
            dir: dir.to_path_buf(),
            direct: Direct::Untried,
            reused: reused_marker_path(dir, base_offset).exists(),
            txn_index: TxnIndex::open(dir, base_offset)?,
        };
        if !recover {
            if let Some((offset_index, time_index)) = segment.load_indexes(file_len)? {
                segment.offset_index = offset_index;
                segment.time_index = time_index;
                let (index_file, time_index_file) = open_index_files(dir, base_offset, false)?;
                segment.index_file = index_file;
                segment.time_index_file = time_index_file;
                // Only the tail after the last index entry needs reading to learn the end.
                let from = segment.offset_index.last().map(|e| e.1 as u64).unwrap_or(0);
                match segment.scan_tail(from)? {
                    None => {
                        segment.max_timestamp = segment
                            .max_timestamp
                            .max(segment.time_index.last().map(|e| e.0).unwrap_or(-1));
                        segment.all_written();
                        return Ok(Opened {
                            segment,
                            truncated_bytes: 0,
                            truncation_reason: None,
                        });
                    }
                    // The marker said clean, the file disagrees (a power loss can do that):
                    // recover it like any unclean segment rather than refuse to start.
                    Some(cut) => {
                        tracing::warn!(segment = %path.display(), problem = %cut, "tail inconsistent after a clean shutdown; recovering");
                        segment.next_offset = base_offset;
                        segment.max_timestamp = -1;
                        segment.offset_index.clear();
                        segment.time_index.clear();
                    }
                }
            } else {
                tracing::warn!(segment = %path.display(), "index missing or inconsistent, rebuilding");
            }
        }
        // Full scan: rebuild both indexes, validate every batch, cut a bad tail.
        let (index_file, time_index_file) = open_index_files(dir, base_offset, true)?;
        segment.index_file = index_file;
        segment.time_index_file = time_index_file;
        segment.size = 0;
        let mut reason = segment.scan_rebuild(file_len, index_interval)?;
        if segment.reused {
            // The expired segment's bytes follow the last batch; a torn write may come first.
            reason = reason.map(|r| {
                format!("{r} (in a reused file: the bytes of the expired segment it replaced, and any write the crash tore)")
            });
        }
        if file_len > segment.size {
            segment.file.set_len(segment.size)?;
            segment.file.sync_all()?;
        }
        segment.unmark_reused()?;
        // Padding after the last batch is not data: trimming it is no loss worth a warning.
        let truncated_bytes = if reason.is_some() {
            file_len - segment.size
        } else {
            0
        };
        segment.all_written();
        Ok(Opened {
            segment,
            truncated_bytes,
            truncation_reason: reason,
        })
    }

    fn load_indexes(&self, file_len: u64) -> Result<Option<(OffsetIndex, TimeIndex)>> {
        let (Ok(raw), Ok(raw_time)) = (
            std::fs::read(index_path(&self.dir, self.base_offset)),
            std::fs::read(time_index_path(&self.dir, self.base_offset)),
        ) else {
            return Ok(None);
        };
        if raw.len() % OFFSET_ENTRY != 0 || raw_time.len() % TIME_ENTRY != 0 {
            return Ok(None);
        }
        let offsets: OffsetIndex = raw
            .chunks_exact(OFFSET_ENTRY)
            .map(|c| {
                (
                    u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                    u32::from_be_bytes([c[4], c[5], c[6], c[7]]),
                )
            })
            .collect();
        let times: TimeIndex = raw_time
            .chunks_exact(TIME_ENTRY)
            .map(|c| {
                let mut ts = [0u8; 8];
                ts.copy_from_slice(&c[..8]);
                (
                    i64::from_be_bytes(ts),
                    u32::from_be_bytes([c[8], c[9], c[10], c[11]]),
                )
            })
            .collect();
        let offsets_ok = offsets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1)
            && offsets.last().is_none_or(|e| (e.1 as u64) < file_len)
            && (file_len == 0 || offsets.first().is_some_and(|e| e.1 == 0));
        // The seal entry written at roll or close may name a batch past the last offset entry.
        let times_ok = times
            .windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1)
            && (times.is_empty() || !offsets.is_empty());
        Ok((offsets_ok && times_ok).then_some((offsets, times)))
    }

    /// Reads batch headers from `from` to the end of the file, updating `size`, `next_offset`
    /// and `max_timestamp`. Returns a description of the first inconsistency, if any.
    fn scan_tail(&mut self, from: u64) -> Result<Option<String>> {
        let file_len = self.size;
        let mut pos = from;
        let mut header_buf = [0u8; HEADER_LEN];
        while pos < file_len {
            if file_len - pos < HEADER_LEN as u64 {
                return Ok(Some(format!("{} stray bytes at {pos}", file_len - pos)));
            }
            self.file.read_exact_at(&mut header_buf, pos)?;
            let header = match BatchHeader::parse(&header_buf) {
                Ok(h) => h,
                Err(e) => return Ok(Some(e.to_string())),
            };
            if pos + header.size as u64 > file_len {
                return Ok(Some(format!("batch at {pos} runs past the end")));
            }
            self.next_offset = header.last_offset() + 1;
            self.max_timestamp = self.max_timestamp.max(header.max_timestamp);
            self.last_batch_rel = (header.base_offset - self.base_offset) as u32;
            pos += header.size as u64;
        }
        Ok(None)
    }

    /// Reads and validates every batch, rebuilding the indexes; stops at the first bad batch.
    fn scan_rebuild(&mut self, file_len: u64, index_interval: u64) -> Result<Option<String>> {
        let mut pos = 0u64;
        let mut buf = Vec::new();
        let mut header_buf = [0u8; HEADER_LEN];
        let mut expected_base = self.base_offset;
        while pos < file_len {
            if direct::is_padding(&self.file, pos, file_len)? {
                return Ok(None);
            }
            if file_len - pos < HEADER_LEN as u64 {
                return Ok(Some(format!(
                    "{} trailing bytes hold no whole batch header",
                    file_len - pos
                )));
            }
            self.file.read_exact_at(&mut header_buf, pos)?;
            let header = match BatchHeader::parse(&header_buf) {
                Ok(h) => h,
                Err(e) => return Ok(Some(e.to_string())),
            };
            if pos + header.size as u64 > file_len {
                return Ok(Some(format!(
                    "batch at position {pos} declares {} bytes, only {} remain",
                    header.size,
                    file_len - pos
                )));
            }
            if header.base_offset < expected_base {
                return Ok(Some(format!(
                    "batch at position {pos} has offset {} below {expected_base}",
                    header.base_offset
                )));
            }
            buf.resize(header.size, 0);
            self.file.read_exact_at(&mut buf, pos)?;
            if let Err(e) = batch::validate_stored(&buf) {
                return Ok(Some(e.to_string()));
            }
            self.index_batch(&header, index_interval)?;
            self.size = pos + header.size as u64;
            expected_base = header.last_offset() + 1;
            pos = self.size;
        }
        Ok(None)
    }

    /// Copies batches into the segment's pending bytes and returns the copy, for the caller
    /// to stamp offsets into before calling [`Segment::appended`].
    pub fn stage(&mut self, data: &[u8], direct_writes: bool) -> Result<&mut [u8]> {
        if let Direct::Untried = self.direct {
            self.choose_direct(direct_writes)?;
        }
        let carried = self.carried();
        if self.pending.len() > carried && !self.pending.has_room_for(data.len()) {
            // Growing would copy what is pending (a request's records, taken without a copy):
            // the bytes go into a new buffer instead.
            let mut next = AlignedBuf::with_capacity((carried + data.len()).max(PENDING_GROWTH));
            next.extend_from_slice(&self.pending.as_slice()[self.pending.len() - carried..]);
            self.seal_pending(next);
        }
        Ok(self.pending.extend_from_slice(data))
    }

    /// Takes `records`, already stamped, as the next bytes of the segment. When they sit in
    /// memory where [`Segment::placement`] asked, their buffer becomes the pending one, without
    /// a copy (true); else they are copied.
    pub fn stage_owned(&mut self, records: OwnedRecords, direct_writes: bool) -> Result<bool> {
        if let Direct::Untried = self.direct {
            self.choose_direct(direct_writes)?;
        }
        let carried = self.carried();
        if records.prefix() != carried {
            self.stage(records.as_slice(), direct_writes)?;
            return Ok(false);
        }
        let buf =
            records.into_block_aligned(&self.pending.as_slice()[self.pending.len() - carried..]);
        self.seal_pending(buf);
        Ok(true)
    }

    /// Where within a block records should sit in memory for [`Segment::stage_owned`] to take
    /// them without a copy: where the file ends within its last block when the segment writes
    /// whole blocks, else at a block's start.
    pub fn placement(&self, direct_writes: bool) -> usize {
        match self.direct {
            // Decided at the first append, as the configuration and a reused file will have it.
            Direct::Untried if direct_writes || self.reused => (self.size % BLOCK as u64) as usize,
            Direct::Untried => 0,
            _ => self.carried(),
        }
    }

    /// Whether pending bytes start at a block boundary, with the file's partial last block.
    fn writes_blocks(&self) -> bool {
        matches!(self.direct, Direct::On(_) | Direct::Blocks)
    }

    /// How many bytes a new pending buffer starts with, copied from the end of the previous
    /// one: the file's partial last block when the segment writes whole blocks.
    fn carried(&self) -> usize {
        if self.writes_blocks() {
            (self.size % BLOCK as u64) as usize
        } else {
            0
        }
    }

    /// Makes `next` (which starts with the [`Segment::carried`] bytes `pending` ends in) the
    /// pending buffer; `pending` is kept for the next write unless those are all it holds.
    fn seal_pending(&mut self, next: AlignedBuf) {
        let carried = self.carried();
        let previous = std::mem::replace(&mut self.pending, next);
        if previous.len() > carried {
            self.sealed.push(previous);
        } else if self.sealed.is_empty() {
            // The dropped buffer held only what `next` starts with, at the same position.
            debug_assert_eq!(self.pending_from, self.size - carried as u64);
        }
    }

    /// Drops the last `len` staged bytes: an append that failed after [`Segment::stage`].
    pub fn unstage(&mut self, len: usize) {
        debug_assert!(self.pending.len() >= len);
        self.pending.truncate(self.pending.len() - len);
    }

    /// Indexes batches [`Segment::stage`] took, now stamped: they count as appended (and
    /// readers find them once written).
    pub fn appended(&mut self, headers: &[BatchHeader], index_interval: u64) -> Result<()> {
        for header in headers {
            self.index_batch(header, index_interval)?;
            self.size += header.size as u64;
        }
        Ok(())
    }

    /// Bytes appended but not yet written.
    pub fn pending_bytes(&self) -> u64 {
        self.size - self.written
    }

    /// Decides, at the first append, how this segment's appends reach its file.
    fn choose_direct(&mut self, direct_writes: bool) -> Result<()> {
        debug_assert_eq!(self.size, self.written);
        self.pending.clear();
        self.sealed.clear();
        let path = log_path(&self.dir, self.base_offset);
        let direct_file = if direct_writes {
            direct::open(&path)?
        } else {
            None
        };
        self.direct = match direct_file {
            Some(file) => Direct::On(Arc::new(file)),
            None if self.reused => Direct::Blocks,
            None => {
                self.pending_from = self.written;
                self.direct = Direct::Off;
                return Ok(());
            }
        };
        // The partial last block is written again with the next bytes.
        let tail = self.written % BLOCK as u64;
        let mut block = [0u8; BLOCK];
        self.file
            .read_exact_at(&mut block[..tail as usize], self.written - tail)?;
        self.pending.extend_from_slice(&block[..tail as usize]);
        self.pending_from = self.written - tail;
        Ok(())
    }

    /// Takes the pending bytes for writing, leaving `spare` (emptied) to gather the next ones.
    /// `None` when everything appended is written.
    pub fn take_pending(&mut self, spare: &mut AlignedBuf) -> Option<PendingWrite> {
        if self.size == self.written {
            return None;
        }
        let last = std::mem::replace(&mut self.pending, std::mem::take(spare));
        let position = self.pending_from;
        self.pending.clear();
        let mode = self.direct.clone();
        if let Direct::Untried | Direct::Off = mode {
            self.pending_from = self.size;
        } else {
            // The next write starts again at the block this one ends in.
            let tail = (self.size % BLOCK as u64) as usize;
            self.pending
                .extend_from_slice(&last.as_slice()[last.len() - tail..]);
            self.pending_from = self.size - tail as u64;
        }
        let mut bufs = std::mem::take(&mut self.sealed);
        bufs.push(last);
        Some(PendingWrite {
            base_offset: self.base_offset,
            bufs,
            overlapping: !matches!(mode, Direct::Untried | Direct::Off),
            position,
            file: Arc::clone(&self.file),
            mode,
            writeback_from: self.writeback_from,
            end: self.size,
            next_offset: self.next_offset,
        })
    }

    /// Records that a [`PendingWrite`] reached the file; `direct_ok` false stops direct writes.
    /// Directly written bytes are kept for tail readers, up to `cache_bytes`. Returns an empty
    /// buffer for the next write.
    pub fn written_through(
        &mut self,
        job: PendingWrite,
        direct_ok: bool,
        cache_bytes: u64,
    ) -> AlignedBuf {
        self.writeback_from = self.writeback_from.max(job.writeback_from);
        if !direct_ok {
            if let Direct::On(_) = self.direct {
                tracing::info!(segment = %log_path(&self.dir, self.base_offset).display(), "direct I/O refused; writing through the page cache");
                self.direct = Direct::Off;
                // What is pending still starts at a block boundary: a buffered write of it
                // rewrites the block's first bytes unchanged. Buffers that overlap by a block
                // become one, as buffered appends do not overlap.
                if !self.sealed.is_empty() {
                    let mut flat = AlignedBuf::default();
                    for buf in self.sealed.drain(..) {
                        flat.extend_from_slice(&buf.as_slice()[..buf.len() / BLOCK * BLOCK]);
                    }
                    flat.extend_from_slice(self.pending.as_slice());
                    self.pending = flat;
                }
            }
        }
        if job.end <= self.written {
            return job.into_buffer();
        }
        let from = self.written;
        self.written = job.end;
        self.written_next_offset = job.next_offset;
        if !(direct_ok && job.is_direct() && cache_bytes > 0) {
            self.recent.clear();
            return job.into_buffer();
        }
        // Each buffer's bytes from `from` on, up to where the next one starts.
        let PendingWrite {
            bufs,
            position,
            end,
            ..
        } = job;
        let count = bufs.len();
        let mut spare: Option<AlignedBuf> = None;
        let mut at = position;
        for (i, buf) in bufs.into_iter().enumerate() {
            let used = buf.len();
            let until = if i + 1 == count {
                end
            } else {
                at + (used / BLOCK * BLOCK) as u64
            };
            let start = from.max(at);
            let handed_back = if start < until {
                let range = (start - at) as usize..(until - at) as usize;
                self.recent.push(start, buf, range, cache_bytes)
            } else {
                Some(buf)
            };
            if let (None, Some(buf)) = (&spare, handed_back) {
                spare = Some(emptied(buf, used));
            }
            at = until;
        }
        spare.unwrap_or_default()
    }

    /// Reads `buf.len()` bytes at `pos` (below `written`), from the tail cache when it holds them.
    fn read_at(&self, buf: &mut [u8], pos: u64) -> Result<()> {
        if !self.recent.read(buf, pos) {
            self.file.read_exact_at(buf, pos)?;
        }
        Ok(())
    }

    /// The batches at `pos..end` (below `written`) as slices: of the file, and of the tail
    /// cache for the part it holds.
    pub fn slices(&self, pos: u64, end: u64, out: &mut Vec<LogSlice>) {
        let cached_from = self.recent.cached_from(pos, end);
        if pos < cached_from {
            out.push(LogSlice::File(FileSlice {
                file: Arc::clone(&self.file),
                position: pos,
                len: cached_from - pos,
            }));
        }
        self.recent
            .slices(cached_from, end, |bytes| out.push(LogSlice::Memory(bytes)));
    }

    fn all_written(&mut self) {
        self.written = self.size;
        self.written_next_offset = self.next_offset;
        self.pending_from = self.size;
        self.sealed.clear();
        // A cut tail's bytes are gone: write-back hints start from the end of the batches.
        self.writeback_from = self.size;
    }

    /// Cuts the zero padding direct writes leave after the last batch, once the segment takes
    /// no more appends (roll, close) and everything is written, so its file holds exactly its
    /// batches.
    pub fn trim(&mut self) -> Result<()> {
        debug_assert_eq!(self.size, self.written);
        self.recent.clear();
        // Frees the write buffer and closes the direct handle: neither is needed any more.
        self.pending = AlignedBuf::default();
        self.sealed = Vec::new();
        self.direct = Direct::Untried;
        // Padding also stays after a fallback from direct to buffered writes.
        if self.file.metadata()?.len() > self.size {
            self.file.set_len(self.size)?;
        }
        self.unmark_reused()
    }

    /// Once the file holds only this segment's batches (trimmed), it is an ordinary segment.
    fn unmark_reused(&mut self) -> Result<()> {
        if self.reused {
            remove_if_present(&reused_marker_path(&self.dir, self.base_offset))?;
            self.reused = false;
        }
        Ok(())
    }

    /// Updates in-memory state and the indexes for a batch written at `self.size`.
    fn index_batch(&mut self, header: &BatchHeader, index_interval: u64) -> Result<()> {
        let rel = (header.base_offset - self.base_offset) as u32;
        let pos = self.size as u32;
        if self.offset_index.is_empty() || self.bytes_since_index >= index_interval {
            self.offset_index.push((rel, pos));
            let mut entry = [0u8; OFFSET_ENTRY];
            entry[..4].copy_from_slice(&rel.to_be_bytes());
            entry[4..].copy_from_slice(&pos.to_be_bytes());
            let at = ((self.offset_index.len() - 1) * OFFSET_ENTRY) as u64;
            self.index_file.write_all_at(&entry, at)?;
            self.bytes_since_index = 0;
            if header.max_timestamp > self.time_index.last().map(|e| e.0).unwrap_or(-1)
                && header.max_timestamp > self.max_timestamp
            {
                // Time entries mark indexed batches whose max timestamp is a new high.
                self.time_index.push((header.max_timestamp, rel));
                let mut entry = [0u8; TIME_ENTRY];
                entry[..8].copy_from_slice(&header.max_timestamp.to_be_bytes());
                entry[8..].copy_from_slice(&rel.to_be_bytes());
                let at = ((self.time_index.len() - 1) * TIME_ENTRY) as u64;
                self.time_index_file.write_all_at(&entry, at)?;
            }
        }
        self.bytes_since_index += header.size as u64;
        self.last_batch_rel = rel;
        self.next_offset = header.last_offset() + 1;
        self.max_timestamp = self.max_timestamp.max(header.max_timestamp);
        Ok(())
    }

    /// File position of the batch that holds `offset` (or the first batch after it).
    /// `None` when the segment holds nothing at or after `offset`.
    pub fn position_of(&self, offset: i64) -> Result<Option<u64>> {
        if offset >= self.written_next_offset {
            return Ok(None);
        }
        let rel = (offset.max(self.base_offset) - self.base_offset) as u32;
        let idx = self.offset_index.partition_point(|e| e.0 <= rel);
        let start = if idx == 0 {
            0
        } else {
            self.offset_index[idx - 1].1 as u64
        };
        self.scan_headers(start, |h| h.last_offset() >= offset)
    }

    /// Whether the pages where finding the batches from `offset` up to `max_bytes` further on
    /// reads headers (the index entries before each end) are in the page cache, and how many
    /// of the `max_bytes` this segment holds (the rest is in the next one).
    pub fn headers_cached(&self, offset: i64, max_bytes: u64) -> (bool, u64) {
        if offset >= self.written_next_offset {
            return (true, 0);
        }
        let rel = (offset.max(self.base_offset) - self.base_offset) as u32;
        let idx = self.offset_index.partition_point(|e| e.0 <= rel);
        let start = idx
            .checked_sub(1)
            .map_or(0, |i| self.offset_index[i].1 as u64);
        let limit = start.saturating_add(max_bytes);
        if limit >= self.written {
            return (
                crate::log::page_cached(&self.file, start),
                self.written - start,
            );
        }
        // Where `batches_within` starts reading headers.
        let last = self.offset_index.partition_point(|e| e.1 as u64 <= limit);
        let scan_from = last
            .checked_sub(1)
            .map_or(start, |i| (self.offset_index[i].1 as u64).max(start));
        let cached = crate::log::page_cached(&self.file, start)
            && crate::log::page_cached(&self.file, scan_from);
        (cached, max_bytes)
    }

    /// The end of the whole batches from `pos` (a batch start) that fit before `limit`, and
    /// the offset after the last of them (`None` when not even the first fits). Starts from
    /// the last indexed batch before `limit`, so it reads at most an index interval of headers.
    pub fn batches_within(&self, pos: u64, limit: u64) -> Result<(u64, Option<i64>)> {
        if limit >= self.written {
            return Ok((
                self.written,
                (pos < self.written).then_some(self.written_next_offset),
            ));
        }
        let idx = self.offset_index.partition_point(|e| e.1 as u64 <= limit);
        let (start, mut next) = match idx.checked_sub(1).map(|i| self.offset_index[i]) {
            Some((rel, indexed)) if indexed as u64 > pos => {
                (indexed as u64, Some(self.base_offset + rel as i64))
            }
            _ => (pos, None),
        };
        let mut end = start;
        // Stops at the first batch that does not fit, which is where `end` then stands.
        self.scan_headers(start, |header| {
            if end + header.size as u64 > limit {
                return true;
            }
            end += header.size as u64;
            next = Some(header.last_offset() + 1);
            false
        })?;
        Ok((end, next))
    }

    /// The header of the batch at `pos`.
    pub fn batch_at(&self, pos: u64) -> Result<BatchHeader> {
        let mut header_buf = [0u8; HEADER_LEN];
        self.read_at(&mut header_buf, pos)?;
        BatchHeader::parse(&header_buf)
    }

    /// Position of the first batch whose max timestamp is at least `ts`.
    /// Position of the first batch at or after `from_offset` whose max timestamp is at least `ts`.
    pub fn position_of_time(&self, ts: i64, from_offset: i64) -> Result<Option<u64>> {
        if self.max_timestamp < ts {
            return Ok(None);
        }
        let Some(from) = self.position_of(from_offset)? else {
            return Ok(None);
        };
        // The last time entry below `ts` marks a batch that (with all before it) is too early.
        let idx = self.time_index.partition_point(|e| e.0 < ts);
        let start = if idx == 0 {
            0
        } else {
            let rel = self.time_index[idx - 1].1;
            let i = self.offset_index.partition_point(|e| e.0 <= rel);
            if i == 0 {
                0
            } else {
                self.offset_index[i - 1].1 as u64
            }
        };
        self.scan_headers(start.max(from), |h| h.max_timestamp >= ts)
    }

    /// Calls `f` with every batch header from `pos` to the end of the segment; for a control
    /// batch, also with its marker kind.
    pub fn for_each_header(
        &self,
        pos: u64,
        mut f: impl FnMut(&BatchHeader, Option<batch::ControlType>),
    ) -> Result<()> {
        let mut at = pos;
        let mut failed = None;
        self.scan_headers(pos, |h| {
            let mut kind = None;
            if h.is_control() {
                let mut prefix = [0u8; batch::CONTROL_PREFIX_LEN];
                let len = (h.size).min(prefix.len());
                match self.read_at(&mut prefix[..len], at) {
                    Ok(()) => kind = batch::control_type(&prefix[..len]),
                    Err(e) => {
                        failed = Some(e);
                        return true;
                    }
                }
            }
            f(h, kind);
            at += h.size as u64;
            false
        })?;
        failed.map_or(Ok(()), Err)
    }

    fn scan_headers(
        &self,
        mut pos: u64,
        mut found: impl FnMut(&BatchHeader) -> bool,
    ) -> Result<Option<u64>> {
        // Readers see only what is in the file.
        while pos + HEADER_LEN as u64 <= self.written {
            let header = self.batch_at(pos)?;
            if found(&header) {
                return Ok(Some(pos));
            }
            pos += header.size as u64;
        }
        Ok(None)
    }

    /// Records the segment's true max timestamp in the time index (entries are sparse, so a
    /// higher timestamp between index points would otherwise be lost on reopen). Done when the
    /// segment stops taking appends: at roll and at close.
    pub fn seal_time_index(&mut self) -> Result<()> {
        if self.max_timestamp <= self.time_index.last().map(|e| e.0).unwrap_or(-1) || self.size == 0
        {
            return Ok(());
        }
        self.time_index
            .push((self.max_timestamp, self.last_batch_rel));
        let mut entry = [0u8; TIME_ENTRY];
        entry[..8].copy_from_slice(&self.max_timestamp.to_be_bytes());
        entry[8..].copy_from_slice(&self.last_batch_rel.to_be_bytes());
        let at = ((self.time_index.len() - 1) * TIME_ENTRY) as u64;
        self.time_index_file.write_all_at(&entry, at)?;
        Ok(())
    }

    pub fn flush(&self) -> Result<()> {
        self.file.sync_data()?;
        self.index_file.sync_data()?;
        self.time_index_file.sync_data()?;
        self.txn_index.flush()
    }

    /// Removes this segment's index files (before its log file is replaced).
    pub fn delete_indexes(&self) -> Result<()> {
        remove_if_present(&index_path(&self.dir, self.base_offset))?;
        remove_if_present(&time_index_path(&self.dir, self.base_offset))
    }

    /// Whether an index holds as many entries as `max_bytes` allows (`segment.index.bytes`):
    /// the segment must roll before it takes another batch.
    pub fn index_full(&self, max_bytes: u64) -> bool {
        let max = max_bytes as usize;
        self.offset_index.len() >= max / OFFSET_ENTRY || self.time_index.len() >= max / TIME_ENTRY
    }

    /// Entries of the offset index.
    #[cfg(test)]
    pub fn index_entries(&self) -> usize {
        self.offset_index.len()
    }

    /// The timestamp of the segment's first indexed batch (about its oldest record); the
    /// largest timestamp when the index has none; -1 when it holds no timestamps.
    pub fn first_timestamp(&self) -> i64 {
        self.time_index
            .first()
            .map(|e| e.0)
            .unwrap_or(self.max_timestamp)
    }

    /// Takes the segment out of use without removing its files yet: they are renamed
    /// `<name>.deleted` (readers holding them open are not disturbed) and returned, for the
    /// log to remove after `file.delete.delay.ms`.
    pub fn retire(self) -> Result<Vec<PathBuf>> {
        remove_if_present(&reused_marker_path(&self.dir, self.base_offset))?;
        let mut renamed = Vec::new();
        for path in [
            log_path(&self.dir, self.base_offset),
            index_path(&self.dir, self.base_offset),
            time_index_path(&self.dir, self.base_offset),
            crate::txn_index::txn_index_path(&self.dir, self.base_offset),
        ] {
            let mut to = path.clone().into_os_string();
            to.push(DELETED_SUFFIX);
            match std::fs::rename(&path, &to) {
                Ok(()) => renamed.push(PathBuf::from(to)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(renamed)
    }

    pub fn delete(self) -> Result<()> {
        remove_if_present(&log_path(&self.dir, self.base_offset))?;
        remove_if_present(&reused_marker_path(&self.dir, self.base_offset))?;
        self.txn_index.delete()?;
        self.delete_indexes()
    }
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

fn open_index_files(dir: &Path, base: i64, truncate: bool) -> Result<(File, File)> {
    let open = |p: PathBuf| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(truncate)
            .open(p)
    };
    Ok((
        open(index_path(dir, base))?,
        open(time_index_path(dir, base))?,
    ))
}

/// Reads up to `max` bytes of whole batches from `pos` (never past `end`, the segment size when
/// the read was planned); at least one whole batch when `at_least_one`, as Kafka returns an
/// oversized first batch rather than nothing. Runs without the log's lock: the file handle
/// stays valid even if retention deletes the segment meanwhile.
pub(crate) fn read_batches(
    file: &File,
    pos: u64,
    end: u64,
    max: usize,
    at_least_one: bool,
) -> Result<Vec<u8>> {
    let available = end.saturating_sub(pos) as usize;
    let mut len = available.min(max);
    if at_least_one && len < HEADER_LEN.min(available) {
        len = HEADER_LEN.min(available);
    }
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, pos)?;
    let mut whole = batch::whole_batches_len(&buf);
    if whole == 0 && at_least_one && len >= HEADER_LEN {
        let header = BatchHeader::parse(&buf)?;
        buf.resize(header.size.min(available), 0);
        file.read_exact_at(&mut buf, pos)?;
        whole = buf.len();
    }
    buf.truncate(whole);
    Ok(buf)
}
