//! Opening a directory: find where the log ends, cut a torn tail, refuse
//! corruption.
//!
//! Only the last segment can end in a torn frame: rotation fsyncs a segment
//! before the next one exists. A torn tail (the header or payload of the
//! last frame runs past end-of-file) is what a crash during an append leaves;
//! it was never acknowledged under any policy, so it is cut. A tail of zero
//! bytes from a bad frame to end-of-file is also an interrupted append
//! (the file grew but its data blocks never reached the disk, as ext4 and
//! XFS can leave after a power loss) and is cut too. Anything else — a
//! complete frame with a bad checksum, a bad length followed by data — is
//! corruption: the writer refuses to open rather than silently cut records
//! that may have been acknowledged.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::codec::{check_frame, HEADER_LEN};

use super::WriterError;

/// Where the last segment's frames end.
#[derive(Debug)]
pub(crate) struct Tail {
    /// Length of the complete frames at the start of the file.
    pub valid_len: u64,
    /// Bytes after them, to be cut.
    pub torn_bytes: u64,
}

/// Reads as much as possible into `buf`; returns how many bytes it got
/// (fewer than `buf.len()` only at end-of-file).
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Walks the frames of `file` with [`check_frame`] and says where they end.
pub(crate) fn scan_tail(file: &File, path: &Path, max_payload: u32) -> Result<Tail, WriterError> {
    let io_err = |e| WriterError::io("read segment", path, e);
    let file_len = file.metadata().map_err(io_err)?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    reader.seek(SeekFrom::Start(0)).map_err(io_err)?;
    let mut frame = Vec::with_capacity(1024);
    let mut offset = 0u64;
    loop {
        if offset == file_len {
            return Ok(Tail {
                valid_len: offset,
                torn_bytes: 0,
            });
        }
        frame.resize(HEADER_LEN, 0);
        let got = read_full(&mut reader, &mut frame).map_err(io_err)?;
        frame.truncate(got);
        if got == HEADER_LEN {
            let length = u32::from_le_bytes(frame[0..4].try_into().expect("4 bytes"));
            if length > 0 && length <= max_payload {
                frame.resize(HEADER_LEN + length as usize, 0);
                let got = read_full(&mut reader, &mut frame[HEADER_LEN..]).map_err(io_err)?;
                frame.truncate(HEADER_LEN + got);
            }
        }
        match check_frame(&frame, offset, max_payload) {
            Ok(raw) => offset += raw.frame_len as u64,
            Err(e) if e.kind.is_torn() => {
                drop(reader);
                // A torn tail is the end of the log. A damaged length field
                // in the middle also "runs past the end", but then complete
                // frames follow it: that is corruption, not a tail. It is
                // reported as an oversized length, the bound being where
                // the next good frame starts.
                if let Some(at) = frame_inside(file, offset, max_payload).map_err(io_err)? {
                    return Err(WriterError::Corrupt {
                        path: path.to_owned(),
                        error: crate::codec::FrameError {
                            offset,
                            kind: crate::codec::FrameErrorKind::Oversized {
                                length: frame
                                    .get(0..4)
                                    .and_then(|b| b.try_into().ok())
                                    .map_or(0, u32::from_le_bytes),
                                max: (at - offset).saturating_sub(HEADER_LEN as u64) as u32,
                            },
                        },
                    });
                }
                return Ok(Tail {
                    valid_len: offset,
                    torn_bytes: file_len - offset,
                });
            }
            Err(e) => {
                drop(reader);
                if zeros_from(file, offset).map_err(io_err)? {
                    return Ok(Tail {
                        valid_len: offset,
                        torn_bytes: file_len - offset,
                    });
                }
                return Err(WriterError::Corrupt {
                    path: path.to_owned(),
                    error: e,
                });
            }
        }
    }
}

/// The offset of a complete, checksummed frame starting after `offset`
/// (which starts a torn frame), if there is one before end-of-file. The
/// region is short: a torn frame is at most one maximal frame long.
fn frame_inside(mut file: &File, offset: u64, max_payload: u32) -> io::Result<Option<u64>> {
    file.seek(SeekFrom::Start(offset))?;
    let mut region = Vec::new();
    file.take(u64::from(max_payload) + HEADER_LEN as u64)
        .read_to_end(&mut region)?;
    Ok((1..region.len())
        .find(|&i| check_frame(&region[i..], 0, max_payload).is_ok())
        .map(|i| offset + i as u64))
}

/// Whether every byte of `file` from `offset` to its end is zero.
fn zeros_from(mut file: &File, offset: u64) -> io::Result<bool> {
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = read_full(&mut file, &mut buf)?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        if n < buf.len() {
            return Ok(true);
        }
    }
}

/// Opens the last segment for writing, cutting its torn tail (durably).
pub(crate) fn open_last_segment(
    path: &Path,
    max_payload: u32,
) -> Result<(File, Tail), WriterError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| WriterError::io("open segment", path, e))?;
    let tail = scan_tail(&file, path, max_payload)?;
    if tail.torn_bytes > 0 {
        file.set_len(tail.valid_len)
            .map_err(|e| WriterError::io("truncate torn tail of", path, e))?;
        file.sync_all()
            .map_err(|e| WriterError::io("fsync truncated", path, e))?;
    }
    Ok((file, tail))
}

/// Creates an empty segment file (0600) and makes its name durable.
pub(crate) fn create_segment(dir: &Path, path: &Path) -> Result<File, WriterError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| WriterError::io("create segment", path, e))?;
    file.sync_all()
        .map_err(|e| WriterError::io("fsync new segment", path, e))?;
    fsync_dir(dir)?;
    Ok(file)
}

/// Makes the directory's entries (new files, renames, truncations' names)
/// durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), WriterError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| WriterError::io("fsync directory", dir, e))
}
