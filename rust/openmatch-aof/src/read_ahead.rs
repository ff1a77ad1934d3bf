//! Reading a segment on a second thread, ahead of the scan.
//!
//! A verify-only scan does two things of about equal cost per byte: the
//! kernel's copy out of the page cache (`read(2)`) and the CRC-32 of every
//! payload. On one thread they add up, which holds the scan near half the
//! speed of a plain read (`docs/scanner-benchmark.md`). Here a reader thread
//! does the copies into a small ring of recycled buffers while the scanning
//! thread checks frames in place in the buffers it receives, so the two
//! overlap.
//!
//! Each buffer has [`HEADROOM`] free bytes in front of the data the reader
//! put there. A frame cut by a chunk boundary is completed by copying its
//! start (usually a few hundred bytes) into the next buffer's headroom, so
//! the chunk itself is never copied again. Memory is bounded by the ring:
//! [`DEPTH`] buffers of `HEADROOM + chunk` bytes, plus the scanner's own.
//!
//! No `unsafe` and no `mmap`: a file truncated under a mapping raises SIGBUS,
//! which a tool that repairs AOFs must not risk.

use std::fs::File;
use std::io::{self, Read};
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};

/// Free bytes in front of each chunk, where the scanner puts the start of a
/// frame that the previous chunk cut. Larger frames are rare (an Order is
/// about 300 bytes) and take the copying path.
pub(crate) const HEADROOM: usize = 64 * 1024;

/// Buffers in the ring: enough that neither thread waits for the other when
/// their speeds wobble, few enough to stay a few megabytes.
pub(crate) const DEPTH: usize = 4;

/// A buffer from the reader: the data is `buf[HEADROOM..HEADROOM + len]`.
pub(crate) struct Chunk {
    pub buf: Vec<u8>,
    pub len: usize,
}

/// What the reader sends: a chunk, the end of the file (`None`), or the
/// error of a read, after which it stops.
type Filled = io::Result<Option<Chunk>>;

/// The scanning thread's end of a reader thread.
pub(crate) struct ReadAhead {
    filled: Receiver<Filled>,
    recycle: Sender<Vec<u8>>,
    thread: Option<JoinHandle<()>>,
}

impl ReadAhead {
    /// Starts a thread that reads `file` from its current offset to its end
    /// in chunks of `chunk` bytes. Fails only if the thread cannot be
    /// started; the caller then reads on its own thread.
    pub(crate) fn start(file: File, chunk: usize) -> io::Result<ReadAhead> {
        let (filled_tx, filled) = bounded(DEPTH);
        let (recycle, recycle_rx) = bounded(DEPTH);
        for _ in 0..DEPTH {
            // Empty: the reader sizes each buffer when it first fills it.
            let _ = recycle.try_send(Vec::new());
        }
        let thread = std::thread::Builder::new()
            .name("aof-read-ahead".into())
            .spawn(move || read_chunks(file, chunk, &filled_tx, &recycle_rx))?;
        Ok(ReadAhead {
            filled,
            recycle,
            thread: Some(thread),
        })
    }

    /// The next chunk, in file order; `None` at the end of the file. Call
    /// no more after `None` or an error.
    pub(crate) fn next(&mut self) -> io::Result<Option<Chunk>> {
        match self.filled.recv() {
            Ok(filled) => filled,
            // The reader sends `None` or an error before it ends, so a
            // closed channel means it died (a panic): say so, do not hang.
            Err(_) => Err(io::Error::other("the read-ahead thread stopped")),
        }
    }

    /// Hands a buffer back for the reader to fill again. A buffer the ring
    /// has no room for (the scanner's first, say) is dropped, which keeps
    /// the ring at [`DEPTH`] buffers.
    pub(crate) fn recycle(&mut self, buf: Vec<u8>) {
        let _ = self.recycle.try_send(buf);
    }
}

impl Drop for ReadAhead {
    /// Stops the reader and waits for it, so that no thread or open file
    /// outlives the scan. Closing both channels wakes it wherever it waits;
    /// at worst it first finishes the one `read` it is in.
    fn drop(&mut self) {
        self.filled = crossbeam_channel::never();
        self.recycle = bounded(0).0;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The reader thread: fills recycled buffers until the end of the file, an
/// error, or the scanner going away.
fn read_chunks(
    mut file: File,
    chunk: usize,
    filled: &Sender<Filled>,
    recycled: &Receiver<Vec<u8>>,
) {
    let size = HEADROOM + chunk;
    while let Ok(mut buf) = recycled.recv() {
        // A buffer the scanner grew for a large frame goes back to size.
        buf.resize(size, 0);
        buf.shrink_to(size);
        let mut len = 0;
        let mut at_end = false;
        while len < chunk {
            match file.read(&mut buf[HEADROOM + len..]) {
                Ok(0) => {
                    at_end = true;
                    break;
                }
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Chunks before the error are already sent: the scanner
                    // checks them first, then sees the error where it was.
                    let _ = filled.send(Err(e));
                    return;
                }
            }
        }
        if len > 0 && filled.send(Ok(Some(Chunk { buf, len }))).is_err() {
            return;
        }
        if at_end {
            let _ = filled.send(Ok(None));
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp_file(name: &str, data: &[u8]) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("openmatch-ra-{}-{name}", std::process::id()));
        File::create(&p).unwrap().write_all(data).unwrap();
        p
    }

    #[test]
    fn chunks_come_in_file_order_then_the_end() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let p = temp_file("order", &data);
        for chunk in [1, 7, 4096, 99_999, 100_000, 1 << 20] {
            let mut ahead = ReadAhead::start(File::open(&p).unwrap(), chunk).unwrap();
            let mut got = Vec::new();
            while let Some(c) = ahead.next().unwrap() {
                assert!(c.len <= chunk && c.len > 0);
                got.extend_from_slice(&c.buf[HEADROOM..HEADROOM + c.len]);
                ahead.recycle(c.buf);
            }
            assert_eq!(got, data, "chunk {chunk}");
        }
        std::fs::remove_file(p).unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_read_error_comes_back_as_the_error() {
        // Byte 0 of this process's memory is never mapped: reading it fails
        // with EIO, an error that no retry fixes.
        let mem = File::open("/proc/self/mem").unwrap();
        let mut ahead = ReadAhead::start(mem, 4096).unwrap();
        let err = ahead.next().err().expect("an error, not data");
        assert_eq!(err.raw_os_error(), Some(5), "{err}");
    }
}
