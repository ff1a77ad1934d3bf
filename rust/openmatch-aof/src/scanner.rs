//! The replay scanner: walks a segment file or an AOF directory from a
//! position, checks every frame, and says where and why it stopped.
//!
//! Reading is chunked (a buffer of [`ScanOptions::chunk_size`] that carries a
//! partial frame over to the next read), so scanning a file of any size holds
//! one buffer; a frame longer than the buffer grows it to exactly that frame,
//! and only after its length passed the `max_payload` bound.
//!
//! # The recovery rule (`docs/recovery-rule.md`)
//!
//! Decided by [`crate::tail::classify_stop`], at every bad frame. As Redis'
//! `aof-load-truncated`: damage at the very end of the *last* segment is
//! what a crash leaves behind, and is a [`OutcomeKind::TornTail`]
//! (a warning; the bytes may be cut off). That is
//!
//! * a frame whose header or payload runs past the end of the last segment
//!   (cause `torn`), or
//! * a zero length field where every byte from there to the end of the last
//!   segment is zero (cause `zeroed_tail`: a preallocated or zero-extended
//!   tail after a crash; no valid frame starts with a zero length).
//!
//! A length field above `max_payload` is [`OutcomeKind::Oversized`], wherever
//! it is (the live end of the last segment included): the frame may be real
//! and longer than this reader accepts, so it is reported with the limit to
//! raise, and never cut as a torn tail nor called corruption.
//!
//! Everything else is [`OutcomeKind::Corrupt`], named by segment, offset and
//! cause: a bad checksum, a zero length followed by non-zero bytes, an undecodable payload (anywhere, the last frame
//! included), a torn frame at the end of a segment that is not the last
//! (`torn_mid_log`: a later segment exists, so this one was complete once),
//! and a gap or an overlap between one segment's end and the next's start.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::codec::{check_frame, decode_payload, FrameErrorKind, DEFAULT_MAX_PAYLOAD_LEN};
use crate::read_ahead::{ReadAhead, HEADROOM};
use crate::segment::{list_segments, parse_segment_file_name, Segment};
use crate::tail::classify_stop;
use crate::types::{AofOperation, OPERATION_KINDS};

/// The default read size: large enough that `read(2)` and CRC dominate the
/// per-read costs, small enough that the read-ahead ring
/// (`read_ahead.rs`) stays a few megabytes and each chunk is still in
/// the shared cache when the scanning thread gets to it.
pub const DEFAULT_CHUNK_SIZE: usize = 1024 * 1024;

/// How a scan reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanOptions {
    /// Bound on a frame's length field, checked before any allocation.
    pub max_payload: u32,
    /// Bytes per read; the buffer grows past it only for a frame (bounded by
    /// `max_payload`) that does not fit.
    pub chunk_size: usize,
    /// Read a segment of more than two chunks on a second thread, ahead of
    /// the scan (`read_ahead.rs`). The outcome is the same either way.
    pub read_ahead: bool,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            max_payload: DEFAULT_MAX_PAYLOAD_LEN,
            chunk_size: DEFAULT_CHUNK_SIZE,
            read_ahead: true,
        }
    }
}

/// Why the scan stopped, in four classes that recovery treats differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeKind {
    /// Every byte up to the end was a good frame.
    Clean,
    /// The last segment ends in an interrupted append: expected after a crash.
    TornTail,
    /// A length field above the reader's `max_payload`: a frame longer than
    /// this reader accepts, or a damaged length; the reader cannot tell
    /// which, so nothing is cut and the data behind it is not read. A scan
    /// with a higher limit reads on.
    Oversized,
    /// Damage that a crash does not explain; the data behind it is not read.
    Corrupt,
}

impl OutcomeKind {
    /// A short stable name (the `outcome` in Python and the CLI).
    pub fn name(&self) -> &'static str {
        match self {
            OutcomeKind::Clean => "clean",
            OutcomeKind::TornTail => "torn_tail",
            OutcomeKind::Oversized => "oversized",
            OutcomeKind::Corrupt => "corrupt",
        }
    }
}

/// The precise cause of a stop that is not clean.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopCause {
    /// A frame error; `Torn` only at the end of the last segment.
    Frame(FrameErrorKind),
    /// A zero length field with only zero bytes after it, to the end of the
    /// last segment.
    ZeroedTail,
    /// A frame that runs past the end of a segment that is not the last.
    TornMidLog(FrameErrorKind),
    /// The next segment starts after the previous one ends.
    SegmentGap {
        /// Where the previous segment ends.
        expected: u64,
        /// Where the next one starts.
        found: u64,
    },
    /// A length field that runs past the end of the last segment, with an
    /// intact frame inside the bytes it claims (at `intact_frame_at`, an
    /// offset in the segment): a damaged length, not an interrupted append.
    LengthPastEnd {
        /// The intact frame's offset in the segment.
        intact_frame_at: u64,
    },
    /// The next segment starts before the previous one ends.
    SegmentOverlap {
        /// Where the previous segment ends.
        expected: u64,
        /// Where the next one starts.
        found: u64,
    },
}

impl StopCause {
    /// A short stable name (the `cause` in Python and the CLI).
    pub fn name(&self) -> &'static str {
        match self {
            StopCause::Frame(k) => k.name(),
            StopCause::ZeroedTail => "zeroed_tail",
            StopCause::TornMidLog(_) => "torn_mid_log",
            StopCause::LengthPastEnd { .. } => "length_past_end",
            StopCause::SegmentGap { .. } => "segment_gap",
            StopCause::SegmentOverlap { .. } => "segment_overlap",
        }
    }
}

impl fmt::Display for StopCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopCause::Frame(k) => write!(f, "{k}"),
            StopCause::ZeroedTail => write!(
                f,
                "zeroed tail: a zero length field and only zero bytes to the end of the last segment"
            ),
            StopCause::TornMidLog(k) => write!(
                f,
                "{k}, at the end of a segment that is not the last (a later segment exists, so this frame was complete once)"
            ),
            StopCause::LengthPastEnd { intact_frame_at } => write!(
                f,
                "the frame's length runs past the end of the last segment, but an intact frame starts inside it at offset {intact_frame_at}: a damaged length field, not an interrupted append"
            ),
            StopCause::SegmentGap { expected, found } => write!(
                f,
                "segment gap: the previous segment ends at position {expected} but the next starts at {found}"
            ),
            StopCause::SegmentOverlap { expected, found } => write!(
                f,
                "segment overlap: the previous segment ends at position {expected} but the next starts at {found}"
            ),
        }
    }
}

/// Where and why a scan stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanOutcome {
    /// Clean, torn tail, oversized or corrupt.
    pub kind: OutcomeKind,
    /// `None` when clean.
    pub cause: Option<StopCause>,
    /// The position just past the last good frame: where a resumed scan, an
    /// appender, or a repair's cut starts.
    pub position: u64,
    /// The segment holding `position` (or, for a gap or an overlap, the
    /// segment that starts wrongly); `None` for in-memory input and for an
    /// empty directory.
    pub segment: Option<PathBuf>,
    /// The position of the first byte of that segment.
    pub segment_start: u64,
    /// `position` as a byte offset inside that segment.
    pub offset: u64,
    /// For a torn tail: the bytes from `position` to the end of the last
    /// segment, which a repair would cut.
    pub tail_bytes: u64,
}

impl ScanOutcome {
    /// For an oversized stop, `(length field, limit)`: the length the frame
    /// claims and the `max_payload` it is over.
    pub fn oversized(&self) -> Option<(u32, u32)> {
        match (&self.kind, &self.cause) {
            (
                OutcomeKind::Oversized,
                Some(StopCause::Frame(FrameErrorKind::Oversized { length, max })),
            ) => Some((*length, *max)),
            _ => None,
        }
    }

    /// One line naming segment, offset and cause.
    pub fn describe(&self) -> String {
        let place = match &self.segment {
            Some(p) => format!("{}: offset {}", p.display(), self.offset),
            None => format!("offset {}", self.offset),
        };
        match (&self.kind, &self.cause) {
            (OutcomeKind::Clean, _) | (_, None) => {
                format!("clean end at position {}", self.position)
            }
            (OutcomeKind::TornTail, Some(c)) => format!(
                "{place} (position {}): torn tail of {} bytes: {c}",
                self.position, self.tail_bytes
            ),
            // Past the reader's limit is not proof of damage: the cause
            // names the limit and how to raise it.
            (OutcomeKind::Oversized, Some(c)) => {
                format!("{place} (position {}): {c}", self.position)
            }
            (OutcomeKind::Corrupt, Some(c)) => {
                format!("{place} (position {}): corrupt: {c}", self.position)
            }
        }
    }
}

/// What a scan saw of the frames it accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// The position the scan started at.
    pub start: u64,
    /// Good frames read.
    pub frames: u64,
    /// Bytes of those frames, headers included.
    pub bytes: u64,
    /// Good frames per operation kind, indexed as [`OPERATION_KINDS`].
    pub counts: [u64; 6],
    /// The epoch named by the first and last operation that names one
    /// ([`AofOperation::epoch`]).
    pub first_epoch: Option<u64>,
    /// See `first_epoch`.
    pub last_epoch: Option<u64>,
    /// Segment files opened.
    pub segments: u64,
}

impl ScanStats {
    fn record(&mut self, frame_len: usize, kind: usize, epoch: Option<u64>) {
        self.frames += 1;
        self.bytes += frame_len as u64;
        self.counts[kind] += 1;
        if let Some(e) = epoch {
            if self.first_epoch.is_none() {
                self.first_epoch = Some(e);
            }
            self.last_epoch = Some(e);
        }
    }

    /// `(kind name, count)` for every kind, in variant order.
    pub fn kind_counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        OPERATION_KINDS
            .iter()
            .copied()
            .zip(self.counts.iter().copied())
    }
}

/// A finished scan: its statistics and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanReport {
    /// What the scan saw.
    pub stats: ScanStats,
    /// Where and why it stopped.
    pub outcome: ScanOutcome,
}

/// A scan that could not run: the input cannot be read, or the start
/// position is not in it. Damage in the data is never this: it is the
/// [`ScanOutcome`].
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The input cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The start position is not in the input.
    #[error("{path}: cannot start at position {position}: {reason}")]
    BadStart {
        /// The file or directory.
        path: String,
        /// The position asked for.
        position: u64,
        /// Why it cannot start there.
        reason: String,
    },
    /// One of the scanner's own invariants does not hold: a bug, reported
    /// as an error rather than a panic (which would cross into Python).
    #[error("{path}: scanner invariant broken (a bug, please report it): {what}")]
    Broken {
        /// The file or directory.
        path: String,
        /// The invariant.
        what: &'static str,
    },
}

fn io_err(path: &Path, source: io::Error) -> ScanError {
    ScanError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A frame whose length and checksum are good, in the scanner's buffer.
#[derive(Debug, Clone, Copy)]
pub struct RawFrame<'a> {
    /// Position of the frame's first byte.
    pub start: u64,
    /// Position just past the frame: where a scan resumes after it.
    pub end: u64,
    /// The payload, checksum checked.
    pub payload: &'a [u8],
}

/// One input of the scan: a segment file, or bytes in memory.
struct Source {
    path: Option<PathBuf>,
    /// Position of the source's byte 0.
    start: u64,
    /// Where to begin reading inside it.
    offset: u64,
}

/// Where a cursor's bytes come from.
enum Input {
    /// Read into the cursor's buffer on the scanning thread: bytes in
    /// memory, and segments too small for a second thread to pay off.
    Direct(Box<dyn Read + Send + Sync>),
    /// Chunks read by another thread, scanned in place.
    ReadAhead(ReadAhead),
}

/// The bytes of a segment in memory: `buf[lo..hi]` are read and not yet
/// handed out.
struct Window {
    buf: Vec<u8>,
    lo: usize,
    hi: usize,
    /// Offset in the segment of `buf[0]`.
    buf_offset: u64,
}

impl Window {
    fn offset_of(&self, idx: usize) -> u64 {
        self.buf_offset + idx as u64
    }

    fn unread(&self) -> usize {
        self.hi - self.lo
    }

    /// Moves the unread bytes to the front of the buffer.
    fn compact(&mut self) {
        if self.lo > 0 {
            self.buf.copy_within(self.lo..self.hi, 0);
            self.buf_offset += self.lo as u64;
            self.hi -= self.lo;
            self.lo = 0;
        }
    }

    /// Takes the read-ahead chunk `chunk[HEADROOM..HEADROOM + len]` as the
    /// bytes that follow the unread ones; returns the buffer that is free
    /// now, for recycling.
    ///
    /// In place when the unread bytes (the start of a frame that the
    /// previous chunk cut) fit in the chunk's headroom: they are copied in
    /// front of the chunk, which becomes the buffer. Otherwise (a frame
    /// larger than the headroom, or the first chunk of a segment, where the
    /// headroom would lie before the segment's first byte) the chunk is
    /// appended to the buffer.
    fn take_chunk(&mut self, mut chunk: Vec<u8>, len: usize) -> Vec<u8> {
        let lo = HEADROOM.checked_sub(self.unread());
        let buf_offset = lo.and_then(|lo| self.offset_of(self.lo).checked_sub(lo as u64));
        if let (Some(lo), Some(buf_offset)) = (lo, buf_offset) {
            chunk[lo..HEADROOM].copy_from_slice(&self.buf[self.lo..self.hi]);
            self.lo = lo;
            self.hi = HEADROOM + len;
            self.buf_offset = buf_offset;
            return std::mem::replace(&mut self.buf, chunk);
        }
        self.compact();
        let end = self.hi + len;
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        self.buf[self.hi..end].copy_from_slice(&chunk[HEADROOM..HEADROOM + len]);
        self.hi = end;
        chunk
    }
}

/// The segment being read.
struct Cursor {
    input: Input,
    path: Option<PathBuf>,
    seg_start: u64,
    is_last: bool,
    win: Window,
    eof: bool,
    /// Bytes the segment had left when opened: a small segment gets a small
    /// buffer. Only a hint (a file may grow); reads go on to end of file.
    size_hint: u64,
}

impl Cursor {
    fn pos_of(&self, idx: usize) -> u64 {
        self.seg_start + self.win.offset_of(idx)
    }

    fn offset_of(&self, idx: usize) -> u64 {
        self.win.offset_of(idx)
    }

    /// Reads until the buffer holds at least `need` unread bytes (and, read
    /// on this thread, a chunk if the segment has one), or the segment ends.
    ///
    /// `need` is at most `HEADER_LEN + max_payload` (the length field was
    /// bounded before we got here), and the buffer grows towards it one
    /// chunk at a time, only as bytes actually arrive: a corrupt length at
    /// the end of a short file costs at most one chunk, never the length.
    fn fill(&mut self, need: usize, chunk: usize) -> io::Result<()> {
        let w = &mut self.win;
        match &mut self.input {
            Input::ReadAhead(ahead) => {
                while w.unread() < need && !self.eof {
                    match ahead.next()? {
                        None => self.eof = true,
                        Some(next) => ahead.recycle(w.take_chunk(next.buf, next.len)),
                    }
                }
            }
            Input::Direct(reader) => {
                w.compact();
                let hint = usize::try_from(self.size_hint.saturating_add(1)).unwrap_or(usize::MAX);
                let target = need.max(chunk.min(hint));
                while w.hi < target {
                    if w.hi == w.buf.len() {
                        let grown = w.buf.len().saturating_add(chunk).min(target);
                        w.buf.resize(grown, 0);
                    }
                    match reader.read(&mut w.buf[w.hi..]) {
                        Ok(0) => {
                            self.eof = true;
                            break;
                        }
                        Ok(n) => w.hi += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(())
    }
}

/// The unread bytes of a segment, from the cursor to the end of the file:
/// what the recovery rule reads after a bad frame.
struct Rest<'a> {
    c: &'a mut Cursor,
    chunk: usize,
}

impl Read for Rest<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.c.win.unread() == 0 && !self.c.eof {
            self.c.fill(1, self.chunk)?;
        }
        let w = &mut self.c.win;
        let n = out.len().min(w.unread());
        out[..n].copy_from_slice(&w.buf[w.lo..w.lo + n]);
        w.lo += n;
        Ok(n)
    }
}

/// The replay scanner. Pull frames with [`Scanner::next_raw`],
/// [`Scanner::next_op`] or [`Scanner::next_batch`]; after `None`,
/// [`Scanner::outcome`] says why it stopped.
pub struct Scanner {
    /// What the caller named, for messages.
    origin: String,
    opts: ScanOptions,
    pending: VecDeque<Source>,
    /// In-memory input, consumed when its cursor opens.
    bytes: Option<Vec<u8>>,
    cursor: Option<Cursor>,
    /// Where the current segment's successor must start.
    stats: ScanStats,
    outcome: Option<ScanOutcome>,
}

impl Scanner {
    /// Scans `path` (a segment file or an AOF directory) from `start`, or
    /// from the beginning of what is there when `None`.
    pub fn open(path: &Path, start: Option<u64>, opts: ScanOptions) -> Result<Self, ScanError> {
        let meta = std::fs::metadata(path).map_err(|e| io_err(path, e))?;
        let segments = if meta.is_dir() {
            list_segments(path).map_err(|e| io_err(path, e))?
        } else {
            // A file named like a segment keeps its positions; any other
            // file is a segment that starts at position 0.
            let seg_start = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(parse_segment_file_name)
                .unwrap_or(0);
            vec![Segment {
                start: seg_start,
                path: path.to_path_buf(),
                len: meta.len(),
            }]
        };
        let origin = path.display().to_string();
        let bad_start = |position: u64, reason: String| ScanError::BadStart {
            path: origin.clone(),
            position,
            reason,
        };
        let Some(first) = segments.first() else {
            // An empty directory: a clean, empty log.
            let position = start.unwrap_or(0);
            if position != 0 {
                return Err(bad_start(position, "the directory has no segments".into()));
            }
            let mut s = Self::with_sources(origin, opts, VecDeque::new(), None);
            s.stats.start = 0;
            return Ok(s);
        };
        let position = start.unwrap_or(first.start);
        if position < first.start {
            return Err(bad_start(
                position,
                format!(
                    "the first segment starts at position {} ({}); earlier positions are not here",
                    first.start,
                    first.path.display()
                ),
            ));
        }
        // The segment holding `position`: the last one starting at or before
        // it (the first one does, as checked above).
        let idx = segments
            .iter()
            .rposition(|s| s.start <= position)
            .unwrap_or(0);
        let seg = &segments[idx];
        if position > seg.end() {
            let reason = if idx + 1 == segments.len() {
                format!("the AOF ends at position {}", seg.end())
            } else {
                format!(
                    "it lies in a gap after {} (which ends at position {})",
                    seg.path.display(),
                    seg.end()
                )
            };
            return Err(bad_start(position, reason));
        }
        let mut pending: VecDeque<Source> = segments[idx..]
            .iter()
            .map(|s| Source {
                path: Some(s.path.clone()),
                start: s.start,
                offset: 0,
            })
            .collect();
        pending[0].offset = position - seg.start;
        let mut s = Self::with_sources(origin, opts, pending, None);
        s.stats.start = position;
        Ok(s)
    }

    /// Scans bytes in memory as one segment starting at position `base`.
    pub fn from_bytes(data: Vec<u8>, base: u64, opts: ScanOptions) -> Self {
        let mut pending = VecDeque::new();
        pending.push_back(Source {
            path: None,
            start: base,
            offset: 0,
        });
        let mut s = Self::with_sources("<bytes>".into(), opts, pending, Some(data));
        s.stats.start = base;
        s
    }

    fn with_sources(
        origin: String,
        opts: ScanOptions,
        pending: VecDeque<Source>,
        bytes: Option<Vec<u8>>,
    ) -> Self {
        let opts = ScanOptions {
            chunk_size: opts.chunk_size.max(1),
            ..opts
        };
        Scanner {
            origin,
            opts,
            pending,
            bytes,
            cursor: None,
            stats: ScanStats::default(),
            outcome: None,
        }
    }

    /// True while the segment being scanned is read on a second thread
    /// ([`ScanOptions::read_ahead`]).
    pub fn is_reading_ahead(&self) -> bool {
        matches!(
            self.cursor,
            Some(Cursor {
                input: Input::ReadAhead(_),
                ..
            })
        )
    }

    /// What the scan was opened on.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// What the scan has seen so far.
    pub fn stats(&self) -> &ScanStats {
        &self.stats
    }

    /// Why the scan stopped; `None` until it has.
    pub fn outcome(&self) -> Option<&ScanOutcome> {
        self.outcome.as_ref()
    }

    /// The position after the last good frame handed out so far.
    pub fn position(&self) -> u64 {
        match &self.cursor {
            Some(c) => c.pos_of(c.win.lo),
            None => self
                .outcome
                .as_ref()
                .map_or(self.stats.start, |o| o.position),
        }
    }

    /// The report once the scan has stopped.
    pub fn report(&self) -> Option<ScanReport> {
        self.outcome.clone().map(|outcome| ScanReport {
            stats: self.stats.clone(),
            outcome,
        })
    }

    fn stop(&mut self, kind: OutcomeKind, cause: Option<StopCause>, tail_bytes: u64) {
        let (segment, segment_start, offset, position) = match &self.cursor {
            Some(c) => (
                c.path.clone(),
                c.seg_start,
                c.offset_of(c.win.lo),
                c.pos_of(c.win.lo),
            ),
            None => (None, 0, 0, self.stats.start),
        };
        self.outcome = Some(ScanOutcome {
            kind,
            cause,
            position,
            segment,
            segment_start,
            offset,
            tail_bytes,
        });
        self.cursor = None;
        self.pending.clear();
    }

    /// Opens the next source; on a gap or an overlap, stops the scan.
    /// Returns false when there is nothing more to read.
    fn open_next(&mut self) -> Result<bool, ScanError> {
        let Some(src) = self.pending.pop_front() else {
            return Ok(false);
        };
        if let Some(prev) = &self.cursor {
            let expected = prev.pos_of(prev.win.lo);
            if src.start != expected {
                let cause = if src.start > expected {
                    StopCause::SegmentGap {
                        expected,
                        found: src.start,
                    }
                } else {
                    StopCause::SegmentOverlap {
                        expected,
                        found: src.start,
                    }
                };
                // Named by the segment that starts wrongly; the position is
                // the end of the last good data.
                self.outcome = Some(ScanOutcome {
                    kind: OutcomeKind::Corrupt,
                    cause: Some(cause),
                    position: expected,
                    segment: src.path.clone(),
                    segment_start: src.start,
                    offset: 0,
                    tail_bytes: 0,
                });
                self.cursor = None;
                self.pending.clear();
                return Ok(false);
            }
        }
        let (input, size_hint) = match &src.path {
            Some(p) => {
                let mut f = File::open(p).map_err(|e| io_err(p, e))?;
                if src.offset > 0 {
                    f.seek(SeekFrom::Start(src.offset))
                        .map_err(|e| io_err(p, e))?;
                }
                let left = f
                    .metadata()
                    .map_err(|e| io_err(p, e))?
                    .len()
                    .saturating_sub(src.offset);
                (self.file_input(f, left), left)
            }
            None => {
                let data = self.bytes.take().unwrap_or_default();
                let len = data.len() as u64;
                (Input::Direct(Box::new(io::Cursor::new(data))), len)
            }
        };
        // Reuse the previous segment's buffer.
        let buf = self.cursor.take().map(|c| c.win.buf).unwrap_or_default();
        self.stats.segments += u64::from(src.path.is_some());
        self.cursor = Some(Cursor {
            input,
            path: src.path,
            seg_start: src.start,
            is_last: self.pending.is_empty(),
            win: Window {
                buf,
                lo: 0,
                hi: 0,
                buf_offset: src.offset,
            },
            eof: false,
            size_hint,
        });
        Ok(true)
    }

    /// Reads a segment with `left` bytes to go on a second thread when that
    /// is asked for and can pay off, else on this one: not for a small
    /// segment, nor where this thread may use only one CPU (its affinity or
    /// a cgroup quota), since the two threads would then take turns on it.
    /// A thread that cannot be started is not an error: the scan then reads
    /// on this thread.
    fn file_input(&self, file: File, left: u64) -> Input {
        let chunk = self.opts.chunk_size;
        // Last: on Linux, asking for the CPUs reads cgroup files.
        let more_cpus = || std::thread::available_parallelism().is_ok_and(|n| n.get() > 1);
        if self.opts.read_ahead && left > 2 * chunk as u64 && more_cpus() {
            if let Ok(clone) = file.try_clone() {
                if let Ok(ahead) = ReadAhead::start(clone, chunk) {
                    return Input::ReadAhead(ahead);
                }
            }
        }
        Input::Direct(Box::new(file))
    }

    /// The open cursor, where [`Scanner::advance`] found a frame (it
    /// returns one only with the cursor open).
    fn frame_cursor(&mut self) -> Result<&mut Cursor, ScanError> {
        let origin = &self.origin;
        self.cursor.as_mut().ok_or_else(|| ScanError::Broken {
            path: origin.clone(),
            what: "a frame was found with no segment open",
        })
    }

    /// The report of a scan that has stopped.
    pub fn finished_report(&self) -> Result<ScanReport, ScanError> {
        self.report().ok_or_else(|| ScanError::Broken {
            path: self.origin.clone(),
            what: "the scan ended without an outcome",
        })
    }

    fn cursor_path(&self) -> PathBuf {
        self.cursor
            .as_ref()
            .and_then(|c| c.path.clone())
            .unwrap_or_else(|| PathBuf::from(&self.origin))
    }

    /// Finds the next good frame; returns `(lo, frame_len)` in the cursor's
    /// buffer without consuming it, or `None` once stopped.
    fn advance(&mut self) -> Result<Option<(usize, usize)>, ScanError> {
        loop {
            if self.outcome.is_some() {
                return Ok(None);
            }
            let Some(c) = self.cursor.as_mut() else {
                if !self.open_next()? {
                    if self.outcome.is_none() {
                        self.stop(OutcomeKind::Clean, None, 0);
                    }
                    return Ok(None);
                }
                continue;
            };
            let base = c.offset_of(c.win.lo);
            match check_frame(&c.win.buf[c.win.lo..c.win.hi], base, self.opts.max_payload) {
                Ok(raw) => return Ok(Some((c.win.lo, raw.frame_len))),
                Err(e) => match e.kind {
                    FrameErrorKind::Torn { needed, .. } if !c.eof => {
                        let need = needed as usize;
                        let chunk = self.opts.chunk_size;
                        if let Err(err) = c.fill(need, chunk) {
                            let p = self.cursor_path();
                            return Err(io_err(&p, err));
                        }
                    }
                    FrameErrorKind::Torn { .. } if c.win.lo == c.win.hi => {
                        // The segment ended on a frame boundary.
                        if self.pending.is_empty() {
                            self.stop(OutcomeKind::Clean, None, 0);
                            return Ok(None);
                        }
                        if !self.open_next()? {
                            return Ok(None);
                        }
                    }
                    kind => {
                        self.stop_at_bad_frame(&kind)?;
                        return Ok(None);
                    }
                },
            }
        }
    }

    /// Stops the scan at the bad frame at the cursor, as
    /// [`classify_stop`] (the recovery rule) decides.
    fn stop_at_bad_frame(&mut self, error: &FrameErrorKind) -> Result<(), ScanError> {
        let chunk = self.opts.chunk_size;
        let max_payload = self.opts.max_payload;
        let c = self.frame_cursor()?;
        let at = c.offset_of(c.win.lo);
        let is_last = c.is_last;
        let verdict = classify_stop(error, at, is_last, &mut Rest { c, chunk }, max_payload);
        let verdict = match verdict {
            Ok(v) => v,
            Err(err) => {
                let p = self.cursor_path();
                return Err(io_err(&p, err));
            }
        };
        // Reading the rest moved the window: report at the bad frame.
        let c = self.frame_cursor()?;
        c.win.buf_offset = at;
        c.win.lo = 0;
        c.win.hi = 0;
        self.stop(verdict.kind, Some(verdict.cause), verdict.tail_bytes);
        Ok(())
    }

    /// The next frame whose length and checksum are good, payload not
    /// decoded and not counted in the stats; `None` once the scan stopped.
    pub fn next_raw(&mut self) -> Result<Option<RawFrame<'_>>, ScanError> {
        let Some((lo, len)) = self.advance()? else {
            return Ok(None);
        };
        let c = self.frame_cursor()?;
        c.win.lo = lo + len;
        Ok(Some(RawFrame {
            start: c.pos_of(lo),
            end: c.pos_of(lo + len),
            payload: &c.win.buf[lo + crate::codec::HEADER_LEN..lo + len],
        }))
    }

    /// The next operation with the position just past its frame (where a
    /// scan resumes after it); `None` once the scan stopped. An undecodable
    /// payload stops the scan as corrupt at that frame.
    pub fn next_op(&mut self) -> Result<Option<(u64, AofOperation)>, ScanError> {
        let Some((lo, len)) = self.advance()? else {
            return Ok(None);
        };
        let c = self.frame_cursor()?;
        match decode_payload(&c.win.buf[lo + crate::codec::HEADER_LEN..lo + len]) {
            Ok(op) => {
                c.win.lo = lo + len;
                let end = c.pos_of(c.win.lo);
                self.stats.record(len, op.kind_index(), op.epoch());
                Ok(Some((end, op)))
            }
            Err(kind) => {
                self.stop_at_bad_frame(&kind)?;
                Ok(None)
            }
        }
    }

    /// Appends up to `max` operations to `out`; returns how many. Zero means
    /// the scan stopped.
    pub fn next_batch(
        &mut self,
        max: usize,
        out: &mut Vec<(u64, AofOperation)>,
    ) -> Result<usize, ScanError> {
        let before = out.len();
        while out.len() - before < max {
            match self.next_op()? {
                Some(item) => out.push(item),
                None => break,
            }
        }
        Ok(out.len() - before)
    }

    /// Reads to the end, decoding every payload, and reports.
    pub fn verify(mut self) -> Result<ScanReport, ScanError> {
        while !self.verify_step(u64::MAX, true)? {}
        self.finished_report()
    }

    /// Reads to the end checking lengths and checksums only, and reports.
    /// See [`Scanner::verify_step`] with `decode = false`.
    pub fn verify_frames(mut self) -> Result<ScanReport, ScanError> {
        while !self.verify_step(u64::MAX, false)? {}
        self.finished_report()
    }

    /// Verifies about `max_bytes` more bytes of frames (at least one frame),
    /// counting them in the stats; returns true once the scan stopped.
    ///
    /// With `decode = false` payloads are not decoded: the kind comes from
    /// the variant tag and epochs are not recorded. Faster; it misses a
    /// payload with a good checksum that does not decode (which only a
    /// buggy writer produces, never a crash or a flipped bit).
    pub fn verify_step(&mut self, max_bytes: u64, decode: bool) -> Result<bool, ScanError> {
        let until = self.stats.bytes.saturating_add(max_bytes);
        while self.stats.bytes < until {
            if decode {
                if self.next_op()?.is_none() {
                    return Ok(true);
                }
                continue;
            }
            let Some((lo, len)) = self.advance()? else {
                return Ok(true);
            };
            let c = self.frame_cursor()?;
            let payload = &c.win.buf[lo + crate::codec::HEADER_LEN..lo + len];
            let tag = payload
                .get(..4)
                .map(|t| u32::from_le_bytes([t[0], t[1], t[2], t[3]]) as usize)
                .filter(|&t| t < OPERATION_KINDS.len());
            match tag {
                Some(kind) => {
                    c.win.lo = lo + len;
                    self.stats.record(len, kind, None);
                }
                None => {
                    let reason = "unknown operation variant tag".to_string();
                    self.stop_at_bad_frame(&FrameErrorKind::Undecodable { reason })?;
                    return Ok(true);
                }
            }
        }
        Ok(self.outcome.is_some())
    }
}

/// Scans `path` from `start` to its end, decoding every payload.
pub fn verify_path(
    path: &Path,
    start: Option<u64>,
    opts: ScanOptions,
) -> Result<ScanReport, ScanError> {
    Scanner::open(path, start, opts)?.verify()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode_frame_into;
    use crate::types::*;

    fn ops(n: u64) -> Vec<AofOperation> {
        (0..n)
            .map(|i| AofOperation::EpochAdvanced(EpochId(i), EpochPhase::Match))
            .collect()
    }

    fn frames(ops: &[AofOperation]) -> Vec<u8> {
        let mut out = Vec::new();
        for op in ops {
            encode_frame_into(op, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn small_chunks_carry_partial_frames_over() {
        let ops = ops(500);
        let data = frames(&ops);
        let opts = ScanOptions {
            chunk_size: 1,
            ..Default::default()
        };
        let mut s = Scanner::from_bytes(data.clone(), 0, opts);
        let mut got = Vec::new();
        s.next_batch(usize::MAX, &mut got).unwrap();
        assert_eq!(got.into_iter().map(|x| x.1).collect::<Vec<_>>(), ops);
        let o = s.outcome().unwrap();
        assert_eq!(o.kind, OutcomeKind::Clean);
        assert_eq!(o.position, data.len() as u64);
        assert_eq!(s.stats().first_epoch, Some(0));
        assert_eq!(s.stats().last_epoch, Some(499));
    }

    #[test]
    fn zeroed_tail_is_torn_but_zero_then_data_is_corrupt() {
        let mut data = frames(&ops(3));
        let good = data.len() as u64;
        data.extend([0u8; 100]);
        let r = Scanner::from_bytes(data.clone(), 0, Default::default())
            .verify()
            .unwrap();
        assert_eq!(r.outcome.kind, OutcomeKind::TornTail);
        assert_eq!(r.outcome.cause, Some(StopCause::ZeroedTail));
        assert_eq!(r.outcome.position, good);
        assert_eq!(r.outcome.tail_bytes, 100);
        data.push(1);
        let r = Scanner::from_bytes(data, 0, Default::default())
            .verify()
            .unwrap();
        assert_eq!(r.outcome.kind, OutcomeKind::Corrupt);
        assert_eq!(r.outcome.position, good);
        assert_eq!(r.stats.frames, 3);
    }

    /// A reader that fails once, before its first read, then reads `inner`.
    struct FailsOnce {
        inner: Box<dyn Read + Send + Sync>,
        error: Option<io::Error>,
    }

    impl Read for FailsOnce {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            match self.error.take() {
                Some(e) => Err(e),
                None => self.inner.read(out),
            }
        }
    }

    /// A scan of `data` in 16-byte reads whose first read fails with `kind`:
    /// bytes in memory never fail, so the test puts its reader between
    /// them and the open cursor.
    fn scanner_whose_first_read_fails(data: Vec<u8>, kind: io::ErrorKind) -> Scanner {
        let opts = ScanOptions {
            chunk_size: 16,
            ..Default::default()
        };
        let mut s = Scanner::from_bytes(data, 0, opts);
        assert!(s.open_next().unwrap());
        let c = s.cursor.as_mut().unwrap();
        let Input::Direct(inner) =
            std::mem::replace(&mut c.input, Input::Direct(Box::new(io::empty())))
        else {
            panic!("bytes in memory are read on the scanning thread");
        };
        c.input = Input::Direct(Box::new(FailsOnce {
            inner,
            error: Some(io::Error::from(kind)),
        }));
        s
    }

    #[test]
    fn an_interrupted_read_is_retried_and_the_scan_is_whole() {
        let ops = ops(50);
        let data = frames(&ops);
        let mut s = scanner_whose_first_read_fails(data.clone(), io::ErrorKind::Interrupted);
        let mut got = Vec::new();
        s.next_batch(usize::MAX, &mut got).unwrap();
        assert_eq!(got.into_iter().map(|x| x.1).collect::<Vec<_>>(), ops);
        let o = s.outcome().unwrap();
        assert_eq!(
            (o.kind, o.position),
            (OutcomeKind::Clean, data.len() as u64)
        );
    }

    #[test]
    fn a_failed_read_fails_the_scan_naming_its_source() {
        let mut s =
            scanner_whose_first_read_fails(frames(&ops(3)), io::ErrorKind::PermissionDenied);
        let mut got = Vec::new();
        match s.next_batch(usize::MAX, &mut got) {
            Err(ScanError::Io { path, source }) => {
                assert_eq!(path, "<bytes>");
                assert_eq!(source.kind(), io::ErrorKind::PermissionDenied);
            }
            other => panic!("a failed read: {other:?}"),
        }
        assert!(got.is_empty(), "no frame past a failed read");
    }

    /// A reader that records how many bytes each read asked for.
    struct Recorded {
        inner: Box<dyn Read + Send + Sync>,
        asked: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
    }

    impl Read for Recorded {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            self.asked.lock().unwrap().push(out.len());
            self.inner.read(out)
        }
    }

    /// The default read size is 1 MiB (`docs/scanner.md`): a default scan
    /// of more than that asks for 1 MiB in its first read.
    #[test]
    fn a_default_scan_reads_a_mebibyte_at_a_time() {
        let ops = ops(50_000);
        let data = frames(&ops);
        assert!(data.len() > 1 << 20);
        let mut s = Scanner::from_bytes(data, 0, ScanOptions::default());
        assert!(s.open_next().unwrap());
        let asked = std::sync::Arc::default();
        let c = s.cursor.as_mut().unwrap();
        let inner = std::mem::replace(&mut c.input, Input::Direct(Box::new(io::empty())));
        let Input::Direct(inner) = inner else {
            panic!("bytes in memory are read on the scanning thread");
        };
        c.input = Input::Direct(Box::new(Recorded {
            inner,
            asked: std::sync::Arc::clone(&asked),
        }));
        let mut got = Vec::new();
        s.next_batch(usize::MAX, &mut got).unwrap();
        assert_eq!(got.len(), ops.len());
        assert_eq!(asked.lock().unwrap()[0], 1 << 20);
    }

    fn more_cpus() -> bool {
        std::thread::available_parallelism().is_ok_and(|n| n.get() > 1)
    }

    /// A segment file of `data`, in a directory the caller keeps.
    fn segment_file(data: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(crate::segment::segment_file_name(0));
        std::fs::write(&path, data).unwrap();
        (dir, path)
    }

    /// Read-ahead is for a segment of more than two chunks, when asked for
    /// and a second CPU can run it (`ScanOptions::read_ahead`).
    #[test]
    fn only_a_segment_of_more_than_two_chunks_is_read_ahead() {
        let (_dir, path) = segment_file(&[0u8; 100]);
        let ahead = |read_ahead: bool, left: u64| {
            let opts = ScanOptions {
                chunk_size: 16,
                read_ahead,
                ..Default::default()
            };
            let s = Scanner::from_bytes(Vec::new(), 0, opts);
            let input = s.file_input(File::open(&path).unwrap(), left);
            matches!(input, Input::ReadAhead(_))
        };
        assert!(!ahead(true, 32), "two chunks: read on this thread");
        assert_eq!(ahead(true, 33), more_cpus(), "more than two chunks");
        assert!(!ahead(false, 1000), "read-ahead not asked for");
    }

    /// Read ahead, the scan takes a chunk only when the bytes it holds are
    /// fewer than it needs: what the reader thread read beyond waits in
    /// the ring (bounded), not in the scanner's buffer.
    #[test]
    fn read_ahead_chunks_are_taken_only_as_the_scan_needs_them() {
        if !more_cpus() {
            return; // one CPU: no read-ahead
        }
        let (_dir, path) = segment_file(&frames(&ops(20)));
        let opts = ScanOptions {
            chunk_size: 48,
            ..Default::default()
        };
        let mut s = Scanner::open(&path, None, opts).unwrap();
        assert!(s.open_next().unwrap());
        let c = s.cursor.as_mut().unwrap();
        assert!(matches!(c.input, Input::ReadAhead(_)));
        let taken = |c: &Cursor| c.win.offset_of(c.win.hi);
        c.fill(48, 48).unwrap();
        assert_eq!(taken(c), 48, "one chunk holds what is needed");
        c.fill(8, 48).unwrap();
        assert_eq!(taken(c), 48);
        c.fill(49, 48).unwrap();
        assert_eq!(taken(c), 96);
    }

    /// The rest of a segment after a bad frame is read from the buffer
    /// first; the input is read again only once the buffer is empty.
    #[test]
    fn the_rest_comes_from_the_buffer_before_any_new_read() {
        let data: Vec<u8> = (0..64).collect();
        let opts = ScanOptions {
            chunk_size: 16,
            ..Default::default()
        };
        let mut s = Scanner::from_bytes(data.clone(), 0, opts);
        assert!(s.open_next().unwrap());
        let c = s.cursor.as_mut().unwrap();
        c.fill(16, 16).unwrap();
        let taken = |c: &Cursor| c.win.offset_of(c.win.hi);
        assert_eq!(taken(c), 16);
        let mut rest = Rest { c, chunk: 16 };
        let mut out = [0u8; 4];
        for at in (0..16).step_by(4) {
            assert_eq!(rest.read(&mut out).unwrap(), 4);
            assert_eq!(out[..], data[at..at + 4]);
            assert_eq!(taken(rest.c), 16, "no read while buffered bytes are left");
        }
        let mut all = Vec::new();
        rest.read_to_end(&mut all).unwrap();
        assert_eq!(all, data[16..]);
    }
}
