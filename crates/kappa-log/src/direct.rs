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

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Alignment of direct writes (offset, length and memory): the largest logical block size of
/// common devices, so it is valid on all of them.
pub(crate) const BLOCK: usize = 4096;

/// A byte buffer whose data starts on a `BLOCK` boundary in memory.
#[derive(Default)]
pub(crate) struct AlignedBuf {
    /// Over-allocated by a block so that an aligned region starts at `start`.
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

    /// Appends `data` and returns the copy, for the caller to stamp offsets into.
    pub fn extend_from_slice(&mut self, data: &[u8]) -> &mut [u8] {
        let at = self.len;
        self.reserve(at + data.len());
        let region = &mut self.raw[self.start + at..self.start + at + data.len()];
        region.copy_from_slice(data);
        self.len += data.len();
        region
    }

    /// The data followed by zeros up to the next block boundary: what a direct write takes.
    pub fn padded(&mut self) -> &[u8] {
        let padded = self.len.div_ceil(BLOCK) * BLOCK;
        self.reserve(padded);
        self.raw[self.start + self.len..self.start + padded].fill(0);
        &self.raw[self.start..self.start + padded]
    }

    /// Frees a buffer one large write grew, once it is empty again.
    pub fn shrink(&mut self, keep: usize) {
        if self.len == 0 && self.raw.len() > keep + BLOCK {
            *self = AlignedBuf::default();
        }
    }

    fn reserve(&mut self, len: usize) {
        if self.raw.len() >= self.start + len {
            return;
        }
        let capacity = len.max(2 * self.len).max(64 * 1024).div_ceil(BLOCK) * BLOCK;
        let mut raw = vec![0u8; capacity + BLOCK];
        let start = raw.as_ptr().align_offset(BLOCK);
        raw[start..start + self.len].copy_from_slice(self.as_slice());
        self.raw = raw;
        self.start = start;
    }
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
