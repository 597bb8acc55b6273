//! Writes that bypass the page cache (`O_DIRECT`).
//!
//! A buffered write must first find page-cache memory for the new bytes. Where that memory is
//! slow to get (on a VM whose balloon hands freed memory back to the host, every fresh page
//! faults on the host) the copy into the page cache dominated produce latency. The log instead
//! gathers appends in one reused, block-aligned buffer per partition and writes it directly:
//! the cost no longer depends on the state of the machine's memory, and the page cache is left
//! to readers.
//!
//! Direct writes must cover whole blocks, so the file's last, partial block is kept in the
//! buffer and written again, followed by the new bytes and zero padding up to the block's
//! end. The file can therefore end in up to `BLOCK - 1` zero bytes past the last batch; the
//! segment trims them when it stops taking appends, and recovery recognises them as padding.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

/// Alignment of direct writes (offset, length and memory): the largest logical block size of
/// common devices, so it is valid on all of them.
pub(crate) const BLOCK: usize = 4096;

/// A byte buffer whose data starts on a `BLOCK` boundary in memory.
#[derive(Default)]
pub(crate) struct AlignedBuf {
    /// Allocated a block larger than needed, so that an aligned region starts at `start`.
    /// Holds `start` bytes, the data, and after [`AlignedBuf::padded`] its zero padding; only
    /// what is written is initialized, so growing it costs no zero-filling.
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Bytes it can hold without growing.
    pub fn capacity(&self) -> usize {
        self.raw.capacity().saturating_sub(self.start)
    }

    /// An empty buffer that holds `capacity` bytes, padding included, without growing.
    pub fn with_capacity(capacity: usize) -> AlignedBuf {
        let mut buf = AlignedBuf::default();
        buf.reserve(capacity.div_ceil(BLOCK) * BLOCK);
        buf
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }

    /// The room after the data, for a reader to fill before [`AlignedBuf::assume_filled`].
    pub fn spare_capacity_mut(&mut self) -> &mut [std::mem::MaybeUninit<u8>] {
        self.raw.truncate(self.start + self.len);
        self.raw.spare_capacity_mut()
    }

    /// Counts the first `n` bytes of [`AlignedBuf::spare_capacity_mut`] as data.
    ///
    /// # Safety
    /// Those bytes must have been initialized.
    pub unsafe fn assume_filled(&mut self, n: usize) {
        assert!(n <= self.raw.capacity() - self.start - self.len);
        self.raw.truncate(self.start + self.len);
        // SAFETY: within capacity (asserted), and initialized as the caller promises.
        unsafe { self.raw.set_len(self.start + self.len + n) };
        self.len += n;
    }

    /// Whether `extra` more bytes, and the padding after them, fit without growing.
    pub fn has_room_for(&self, extra: usize) -> bool {
        (self.len + extra).div_ceil(BLOCK) * BLOCK <= self.capacity()
    }

    /// Appends `data` and returns the copy, for the caller to stamp offsets into.
    pub fn extend_from_slice(&mut self, data: &[u8]) -> &mut [u8] {
        self.reserve(self.len + data.len());
        let at = self.start + self.len;
        self.raw.truncate(at);
        self.raw.extend_from_slice(data);
        self.len += data.len();
        &mut self.raw[at..]
    }

    /// The data followed by zeros up to the next block boundary: what a direct write takes.
    pub fn padded(&mut self) -> &[u8] {
        let padded = self.len.div_ceil(BLOCK) * BLOCK;
        self.reserve(padded);
        self.raw.truncate(self.start + self.len);
        self.raw.resize(self.start + padded, 0);
        &self.raw[self.start..]
    }

    /// Frees an emptied buffer that is larger than `keep`, or that is over 4 MiB and was
    /// mostly idle in the write it just held (`used` bytes, under a 16th): the load went down.
    pub fn shrink(&mut self, used: usize, keep: usize) {
        let capacity = self.capacity();
        let idle = capacity > (4 << 20) && used < capacity / 16;
        if self.len == 0 && (capacity > keep || idle) {
            *self = AlignedBuf::default();
        }
    }

    /// Makes room for `len` bytes of data without moving the buffer later.
    fn reserve(&mut self, len: usize) {
        if self.raw.capacity() >= self.start + len {
            return;
        }
        let capacity = len.max(2 * self.len).max(64 * 1024).div_ceil(BLOCK) * BLOCK;
        let mut raw = Vec::<u8>::with_capacity(capacity + BLOCK);
        let start = raw.as_ptr().align_offset(BLOCK);
        raw.resize(start, 0);
        raw.extend_from_slice(self.as_slice());
        self.raw = raw;
        self.start = start;
    }
}

/// A produce request's record set, read from the network straight into block-aligned memory,
/// at the place within a block where its partition's file ends: the log can then write it to
/// the file as it is, without copying it (see `Log::append_owned`). The bytes before it take a
/// copy of the file's partial last block.
pub struct OwnedRecords {
    buf: AlignedBuf,
    prefix: usize,
}

impl OwnedRecords {
    /// Room for `len` bytes of records, placed at `placement` within a block (as
    /// `Log::records_placement` asks).
    pub fn new(placement: usize, len: usize) -> OwnedRecords {
        let prefix = placement % BLOCK;
        let mut buf = AlignedBuf::with_capacity(prefix + len);
        buf.extend_from_slice(&[0u8; BLOCK][..prefix]);
        OwnedRecords { buf, prefix }
    }

    pub fn len(&self) -> usize {
        self.buf.len() - self.prefix
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.buf.as_slice()[self.prefix..]
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.buf.as_mut_slice()[self.prefix..]
    }

    pub fn extend_from_slice(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The room after the records so far, for a reader to fill before
    /// [`OwnedRecords::assume_filled`].
    pub fn spare_capacity_mut(&mut self) -> &mut [std::mem::MaybeUninit<u8>] {
        self.buf.spare_capacity_mut()
    }

    /// Counts the first `n` bytes of [`OwnedRecords::spare_capacity_mut`] as records.
    ///
    /// # Safety
    /// Those bytes must have been initialized.
    pub unsafe fn assume_filled(&mut self, n: usize) {
        // SAFETY: passed on from the caller.
        unsafe { self.buf.assume_filled(n) }
    }

    /// The position within a block these records were placed at.
    pub fn prefix(&self) -> usize {
        self.prefix
    }

    /// The buffer, its first `prefix` bytes set to `tail` (the file's partial last block).
    pub(crate) fn into_block_aligned(mut self, tail: &[u8]) -> AlignedBuf {
        self.buf.as_mut_slice()[..self.prefix].copy_from_slice(tail);
        self.buf
    }
}

/// An [`AlignedBuf`] shared by the tail cache and the readers it handed slices to.
struct SharedBuf(Arc<AlignedBuf>);

impl AsRef<[u8]> for SharedBuf {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

/// One cached stretch of a segment: its file position, its bytes, and the write buffer they
/// are in, when the cache took the buffer itself rather than a copy.
struct CachedChunk {
    pos: u64,
    bytes: Bytes,
    buffer: Option<Arc<AlignedBuf>>,
}

/// The newest directly written bytes of a segment, for readers at the tail (direct writes
/// leave them out of the page cache): contiguous chunks, each with its file position.
///
/// The cache keeps the write buffers themselves, so the bytes are not copied a second time;
/// a buffer it lets go that no reader still holds goes back to the writer for reuse.
#[derive(Default)]
pub(crate) struct TailCache {
    chunks: VecDeque<CachedChunk>,
    len: u64,
}

impl TailCache {
    /// Adds the bytes of `buf` at `range`, written at file position `pos` (right after the
    /// cached ones, or after a `clear`), and drops the oldest chunks beyond `cap` bytes.
    /// Returns a buffer for the next write: one the cache let go, or `buf` when the cache
    /// took a copy of its bytes instead.
    pub fn push(
        &mut self,
        pos: u64,
        buf: AlignedBuf,
        range: std::ops::Range<usize>,
        cap: u64,
    ) -> Option<AlignedBuf> {
        debug_assert!(self.end().is_none_or(|end| end == pos));
        // Of a write larger than the cache, only its end can stay.
        // (Everything cached before it then goes in the loop below.)
        let skip = (range.len() as u64).saturating_sub(cap) as usize;
        let kept = range.start + skip..range.end;
        if kept.is_empty() {
            return Some(buf);
        }
        self.len += kept.len() as u64;
        let pos = pos + skip as u64;
        // A buffer mostly idle (grown by an earlier burst) would hold far more memory than the
        // bytes it caches: those bytes are copied instead.
        let mut spare = None;
        if kept.len() * 2 >= buf.capacity() {
            let buffer = Arc::new(buf);
            let bytes = Bytes::from_owner(SharedBuf(Arc::clone(&buffer))).slice(kept);
            self.chunks.push_back(CachedChunk {
                pos,
                bytes,
                buffer: Some(buffer),
            });
        } else {
            let bytes = Bytes::copy_from_slice(&buf.as_slice()[kept]);
            self.chunks.push_back(CachedChunk {
                pos,
                bytes,
                buffer: None,
            });
            spare = Some(buf);
        }
        while self.len > cap {
            let Some(oldest) = self.chunks.pop_front() else {
                break;
            };
            self.len -= oldest.bytes.len() as u64;
            drop(oldest.bytes);
            // Readers still sending its bytes keep it alive; then it is simply freed.
            if let Some(buf) = oldest.buffer.and_then(|b| Arc::try_unwrap(b).ok()) {
                spare.get_or_insert(buf);
            }
        }
        spare
    }

    pub fn clear(&mut self) {
        self.chunks.clear();
        self.len = 0;
    }

    fn start(&self) -> Option<u64> {
        self.chunks.front().map(|c| c.pos)
    }

    fn end(&self) -> Option<u64> {
        self.chunks.back().map(|c| c.pos + c.bytes.len() as u64)
    }

    /// The first file position the cache holds, clamped to `pos..end`: `end` when it holds
    /// nothing of that range.
    pub fn cached_from(&self, pos: u64, end: u64) -> u64 {
        match (self.start(), self.end()) {
            (Some(start), Some(cache_end)) if cache_end > pos => start.clamp(pos, end),
            _ => end,
        }
    }

    /// Index of the chunk holding `pos` (or the first after it).
    fn chunk_at(&self, pos: u64) -> usize {
        self.chunks
            .partition_point(|c| c.pos + c.bytes.len() as u64 <= pos)
    }

    /// Copies the cached bytes at `pos..pos + buf.len()`; false (and nothing copied) unless the
    /// cache holds all of them.
    pub fn read(&self, buf: &mut [u8], pos: u64) -> bool {
        let end = pos + buf.len() as u64;
        if self.cached_from(pos, end) != pos || self.end().is_none_or(|e| e < end) {
            return false;
        }
        let mut filled = 0;
        for CachedChunk {
            pos: start,
            bytes: chunk,
            ..
        } in self.chunks.range(self.chunk_at(pos)..)
        {
            let from = (pos + filled as u64 - start) as usize;
            let n = (chunk.len() - from).min(buf.len() - filled);
            buf[filled..filled + n].copy_from_slice(&chunk[from..from + n]);
            filled += n;
            if filled == buf.len() {
                break;
            }
        }
        true
    }

    /// The cached bytes at `from..end` (`from` as [`TailCache::cached_from`] gave it), as
    /// shared slices of the chunks.
    pub fn slices(&self, from: u64, end: u64, mut out: impl FnMut(Bytes)) {
        for CachedChunk {
            pos: start,
            bytes: chunk,
            ..
        } in self.chunks.range(self.chunk_at(from)..)
        {
            let chunk_end = start + chunk.len() as u64;
            let (a, b) = (from.max(*start), chunk_end.min(end));
            if a < b {
                out(chunk.slice((a - start) as usize..(b - start) as usize));
            }
            if chunk_end >= end {
                break;
            }
        }
    }
}

/// Writes `bufs` one after the other from `position`: when `overlapping`, all but the last up
/// to their last whole block (the next one starts with that block); the last padded to whole
/// blocks when `whole_blocks`, else as it is.
pub(crate) fn write_chain(
    file: &File,
    bufs: &mut [AlignedBuf],
    mut position: u64,
    (whole_blocks, overlapping): (bool, bool),
) -> io::Result<()> {
    let Some((last, earlier)) = bufs.split_last_mut() else {
        return Ok(());
    };
    let last = if whole_blocks {
        last.padded()
    } else {
        last.as_slice()
    };
    let mut slices: Vec<io::IoSlice<'_>> = earlier
        .iter()
        .map(|b| match overlapping {
            true => &b.as_slice()[..b.len() / BLOCK * BLOCK],
            false => b.as_slice(),
        })
        .filter(|s| !s.is_empty())
        .chain(std::iter::once(last))
        .map(io::IoSlice::new)
        .collect();
    // At most IOV_MAX (1024 on Linux) buffers per call.
    for group in slices.chunks_mut(512) {
        let mut group = group;
        while !group.is_empty() {
            match rustix::io::pwritev(file, group, position) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    position += n as u64;
                    io::IoSlice::advance_slices(&mut group, n);
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Opens `path` for direct writes; `None` where the file system refuses `O_DIRECT` (tmpfs,
/// some FUSE and network file systems): the log then writes through the page cache.
pub(crate) fn open(path: &Path) -> io::Result<Option<File>> {
    match OpenOptions::new()
        .write(true)
        .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
        .open(path)
    {
        Ok(f) => Ok(Some(f)),
        Err(e) if refused(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether an error means "this file system does not do direct I/O (here)": nothing was
/// written, and a buffered write can take its place.
pub(crate) fn refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == rustix::io::Errno::INVAL.raw_os_error()
            || code == rustix::io::Errno::OPNOTSUPP.raw_os_error()
    )
}

/// Whether the bytes of `file` from `pos` to `file_len` are the zero padding a direct write
/// leaves after the last batch: less than a block, all zero, ending on a block boundary.
pub(crate) fn is_padding(file: &File, pos: u64, file_len: u64) -> io::Result<bool> {
    let len = file_len.saturating_sub(pos);
    if len == 0 || len >= BLOCK as u64 || !file_len.is_multiple_of(BLOCK as u64) {
        return Ok(false);
    }
    let mut bytes = [0u8; BLOCK];
    file.read_exact_at(&mut bytes[..len as usize], pos)?;
    Ok(bytes[..len as usize].iter().all(|b| *b == 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A busy partition keeps its grown buffer; one whose writes became small, or that grew
    /// past the cap, gives the memory back.
    #[test]
    fn write_buffers_are_kept_while_busy_and_freed_when_load_drops() {
        let mut buf = AlignedBuf::default();
        buf.extend_from_slice(&vec![1u8; 6 << 20]);
        let grown = buf.capacity();
        assert!(grown >= 6 << 20);
        buf.clear();
        buf.shrink(6 << 20, 32 << 20);
        assert_eq!(buf.capacity(), grown, "busy: kept");
        buf.extend_from_slice(&vec![2u8; 1 << 20]);
        buf.clear();
        buf.shrink(1 << 20, 32 << 20);
        assert_eq!(buf.capacity(), grown, "a smaller write: kept");
        buf.extend_from_slice(&vec![2u8; 256 << 10]);
        buf.clear();
        buf.shrink(256 << 10, 32 << 20);
        assert_eq!(buf.capacity(), 0, "mostly idle: freed");
        buf.extend_from_slice(&vec![3u8; 6 << 20]);
        buf.clear();
        buf.shrink(6 << 20, 4 << 20);
        assert_eq!(buf.capacity(), 0, "over the cap: freed");
    }

    #[test]
    fn the_tail_cache_keeps_the_newest_bytes_and_reads_them_back_across_chunks() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let cap = 50_000u64;
        let mut cache = TailCache::default();
        let mut all: Vec<u8> = Vec::new();
        for _ in 0..400 {
            // Mostly small writes, sometimes one larger than the whole cache.
            let len = if rng.random_range(0..20) == 0 {
                rng.random_range(50_000..120_000)
            } else {
                rng.random_range(1..3_000)
            };
            let piece: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            // Bytes before the range, as the block a direct write starts with again.
            let lead = rng.random_range(0..100);
            let mut buf = AlignedBuf::default();
            buf.extend_from_slice(&vec![0xee; lead]);
            buf.extend_from_slice(&piece);
            cache.push(all.len() as u64, buf, lead..lead + len, cap);
            all.extend_from_slice(&piece);
            let end = all.len() as u64;
            let start = cache.cached_from(0, end);
            assert!(end - start <= cap && end - start >= cap.min(len as u64));
            for _ in 0..20 {
                let pos = rng.random_range(0..end);
                let to = rng.random_range(pos + 1..=end.min(pos + 70_000));
                let mut buf = vec![0u8; (to - pos) as usize];
                assert_eq!(cache.read(&mut buf, pos), pos >= start);
                if pos >= start {
                    assert_eq!(buf, all[pos as usize..to as usize]);
                }
                let from = cache.cached_from(pos, to);
                assert_eq!(from, start.clamp(pos, to));
                let mut got = Vec::new();
                cache.slices(from, to, |b| got.extend_from_slice(&b));
                assert_eq!(got, all[from as usize..to as usize]);
            }
        }
    }

    #[test]
    fn the_tail_cache_hands_back_buffers_no_reader_holds() {
        let cap = 100_000;
        let filled = |byte: u8, len: usize| {
            let mut buf = AlignedBuf::default();
            buf.extend_from_slice(&vec![byte; len]);
            buf
        };
        let mut cache = TailCache::default();
        // The cache keeps the buffers themselves: nothing to hand back while it fills.
        assert!(cache.push(0, filled(1, 40_000), 0..40_000, cap).is_none());
        let mut held = Vec::new();
        cache.slices(0, 40_000, |b| held.push(b));
        assert!(cache
            .push(40_000, filled(2, 40_000), 0..40_000, cap)
            .is_none());
        // The first buffer goes from the cache, but a reader still holds it.
        assert!(cache
            .push(80_000, filled(3, 40_000), 0..40_000, cap)
            .is_none());
        assert!(held.iter().all(|b| b.iter().all(|x| *x == 1)));
        assert_eq!(held.iter().map(|b| b.len()).sum::<usize>(), 40_000);
        // The second, which nobody holds, comes back whole.
        let back = cache
            .push(120_000, filled(4, 40_000), 0..40_000, cap)
            .expect("a free buffer");
        assert!(back.capacity() >= 40_000);
        // A mostly idle buffer is copied from and handed straight back.
        let mut big = filled(5, 200_000);
        big.truncate(100);
        let back = cache
            .push(160_000, big, 0..100, cap)
            .expect("the same buffer");
        assert!(back.capacity() >= 200_000);
        let mut newest = [0u8; 100];
        assert!(cache.read(&mut newest, 160_000));
        assert_eq!(newest, [5u8; 100]);
        // The cache holds the newest whole chunks within its cap.
        assert_eq!(cache.cached_from(0, 160_100), 80_000);
        let mut got = Vec::new();
        cache.slices(80_000, 160_100, |b| got.extend_from_slice(&b));
        let expected: Vec<u8> = [3u8, 4]
            .iter()
            .flat_map(|b| vec![*b; 40_000])
            .chain([5u8; 100])
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn aligned_buffers_keep_their_data_through_growth_and_pad_with_zeros() {
        let mut buf = AlignedBuf::default();
        let mut expected = Vec::new();
        for i in 1..200u32 {
            let piece: Vec<u8> = (0..(i * 37 % 5000)).map(|b| (b ^ i) as u8 | 1).collect();
            buf.extend_from_slice(&piece);
            expected.extend_from_slice(&piece);
            assert_eq!(buf.as_slice(), &expected[..]);
            assert_eq!(buf.as_slice().as_ptr() as usize % BLOCK, 0);
        }
        let padded = buf.padded().to_vec();
        assert_eq!(padded.len() % BLOCK, 0);
        assert_eq!(&padded[..expected.len()], &expected[..]);
        assert!(padded[expected.len()..].iter().all(|b| *b == 0));
        assert!(padded.len() - expected.len() < BLOCK);
    }
}
