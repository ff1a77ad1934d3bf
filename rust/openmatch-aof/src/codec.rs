//! The frame codec: `[length u32 LE][crc32 u32 LE][bincode 1.3 payload]`.
//!
//! `shared/aof-format.md` §1–2 is the normative description of these bytes.
//! The payload is exactly `bincode::serialize(&op)`; the header is computed
//! with `crc32fast` over the payload only.

use std::fmt;

use bincode::Options;

use crate::types::AofOperation;

/// Bytes of the frame header: length then checksum.
pub const HEADER_LEN: usize = 8;

/// Where the checksum field starts in the header (the length is at 0).
const CRC_AT: usize = 4;

/// A frame's header, `[length u32 LE][crc32 u32 LE]`: the one reading and
/// writing of its layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The payload's length.
    pub length: u32,
    /// The CRC-32 of the payload.
    pub crc: u32,
}

impl FrameHeader {
    /// The header at the start of `buf`, or None when `buf` is shorter
    /// than [`HEADER_LEN`].
    #[inline]
    pub fn read(buf: &[u8]) -> Option<Self> {
        buf.first_chunk().map(Self::from_bytes)
    }

    /// The header these bytes hold.
    #[inline]
    pub fn from_bytes(header: &[u8; HEADER_LEN]) -> Self {
        Self {
            length: u32_le_at(header, 0),
            crc: u32_le_at(header, CRC_AT),
        }
    }

    /// The length field at the start of `buf`, or None when `buf` is
    /// shorter than it: for a walk over frames that needs no checksum.
    #[inline]
    pub fn read_length(buf: &[u8]) -> Option<u32> {
        let field: &[u8; CRC_AT] = buf.first_chunk()?;
        Some(u32::from_le_bytes(*field))
    }

    /// The header's bytes.
    #[inline]
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..CRC_AT].copy_from_slice(&self.length.to_le_bytes());
        out[CRC_AT..].copy_from_slice(&self.crc.to_le_bytes());
        out
    }

    /// Header plus payload.
    #[inline]
    pub fn frame_len(self) -> usize {
        HEADER_LEN + self.length as usize
    }
}

#[inline]
fn u32_le_at(header: &[u8; HEADER_LEN], at: usize) -> u32 {
    u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
}

/// The default bound on a payload's length. An Order is about 400 bytes; a
/// length far past this is corruption, and must not become an allocation.
pub const DEFAULT_MAX_PAYLOAD_LEN: u32 = 16 * 1024 * 1024;

/// Why a frame could not be read. Each names its cause precisely because
/// recovery treats them differently: a torn tail is expected after a crash,
/// the rest are corruption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameErrorKind {
    /// The header or the payload runs past the end of the input.
    Torn {
        /// Bytes the frame needs.
        needed: u64,
        /// Bytes there are.
        available: u64,
    },
    /// The stored CRC-32 does not match the payload's.
    ChecksumMismatch {
        /// The CRC-32 in the header.
        stored: u32,
        /// The CRC-32 of the payload.
        computed: u32,
    },
    /// The length field exceeds the reader's bound: a damaged length, or a
    /// frame longer than this reader accepts (a limit to raise, not damage).
    Oversized {
        /// The length field.
        length: u32,
        /// The reader's limit.
        max: u32,
    },
    /// The length field is zero: no valid frame has an empty payload.
    ZeroLength,
    /// The checksum matched but the payload is not an `AofOperation`.
    Undecodable {
        /// The decoder's message.
        reason: String,
    },
    /// The payload decoded to one operation with bytes left over in it.
    TrailingBytes {
        /// How many bytes.
        left: u64,
    },
}

impl FrameErrorKind {
    /// A short stable name, used as the error's `cause` in Python and the CLI.
    pub fn name(&self) -> &'static str {
        match self {
            FrameErrorKind::Torn { .. } => "torn",
            FrameErrorKind::ChecksumMismatch { .. } => "checksum_mismatch",
            FrameErrorKind::Oversized { .. } => "oversized_length",
            FrameErrorKind::ZeroLength => "zero_length",
            FrameErrorKind::Undecodable { .. } => "undecodable_payload",
            FrameErrorKind::TrailingBytes { .. } => "trailing_bytes",
        }
    }

    /// Whether the frame runs past the end of the input.
    pub fn is_torn(&self) -> bool {
        matches!(self, FrameErrorKind::Torn { .. })
    }
}

impl fmt::Display for FrameErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameErrorKind::Torn { needed, available } => write!(
                f,
                "torn frame: needs {needed} bytes but only {available} remain"
            ),
            FrameErrorKind::ChecksumMismatch { stored, computed } => write!(
                f,
                "checksum mismatch: stored {stored:#010x}, payload has {computed:#010x}"
            ),
            FrameErrorKind::Oversized { length, max } => write!(
                f,
                "oversized (limit {max}): the length field says {length} bytes; if frames that \
                 long are real, raise the reader's limit (max_payload, --max-payload)"
            ),
            FrameErrorKind::ZeroLength => write!(f, "zero length: a payload is never empty"),
            FrameErrorKind::Undecodable { reason } => {
                write!(f, "undecodable payload: {reason}")
            }
            FrameErrorKind::TrailingBytes { left } => {
                write!(f, "bytes left over: {left} bytes after the operation")
            }
        }
    }
}

/// A frame that could not be read, at `offset` (the byte where the frame
/// starts, counted from the start of the input given to the decoder).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad frame at byte offset {offset}: {kind}")]
pub struct FrameError {
    /// Where the bad frame starts.
    pub offset: u64,
    /// What is wrong with it.
    pub kind: FrameErrorKind,
}

/// An operation that cannot be written as a frame.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("payload of {length} bytes exceeds the maximum frame payload of {max}")]
    /// The payload is longer than the frame limit.
    TooLarge {
        /// The payload's length.
        length: usize,
        /// The limit.
        max: u32,
    },
    #[error("cannot serialize operation: {0}")]
    /// serde refused the value.
    Serialize(String),
}

/// The bincode configuration of `bincode::serialize` (fixed-width integers,
/// little-endian), with a byte limit so that a corrupt string length inside a
/// payload fails instead of allocating.
fn payload_options(limit: u64) -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(limit)
}

/// Appends one frame for `op` to `out` and returns the frame's length in bytes.
/// On error, `out` is left as it was.
pub fn encode_frame_into(op: &AofOperation, out: &mut Vec<u8>) -> Result<usize, EncodeError> {
    encode_frame_into_bounded(op, out, DEFAULT_MAX_PAYLOAD_LEN)
}

/// Operations per encoding thread below which [`encode_batch`] uses one.
const PARALLEL_ENCODE_CHUNK: usize = 2048;

/// Frames of a batch, one after the other, and the length of each.
pub type EncodedBatch = (Vec<u8>, Vec<usize>);

/// Why [`encode_batch_checked`] refused an operation.
#[derive(Debug)]
pub enum BatchError<E> {
    /// The caller's check refused it.
    Check(E),
    /// It cannot be encoded.
    Encode(EncodeError),
}

/// The frames of `ops`, in order, and the length of each; the first that
/// cannot be encoded fails the call with its index. Large batches are split
/// over the cores (scoped threads: a thread start costs microseconds,
/// encoding 10,000 Orders milliseconds).
pub fn encode_batch(ops: &[AofOperation]) -> Result<EncodedBatch, (usize, EncodeError)> {
    encode_batch_bounded(ops, DEFAULT_MAX_PAYLOAD_LEN)
}

/// As [`encode_batch`], refusing payloads longer than `max_payload` (a
/// writer's own bound).
pub fn encode_batch_bounded(
    ops: &[AofOperation],
    max_payload: u32,
) -> Result<EncodedBatch, (usize, EncodeError)> {
    let (frames, lengths) = encode_batch_frames(ops, max_payload)?;
    Ok((frames.into_buffer(), lengths))
}

/// As [`encode_batch_bounded`], keeping the frames' bound with them: a
/// writer whose bound is at least `max_payload` takes them as they are
/// ([`crate::writer::AofWriter::submit_frames_owned`]).
pub fn encode_batch_frames(
    ops: &[AofOperation],
    max_payload: u32,
) -> Result<(BoundedFrames, Vec<usize>), (usize, EncodeError)> {
    encode_frames_checked(ops, max_payload, |_| Ok::<(), EncodeError>(()))
        .map_err(|(i, e)| match e {
            BatchError::Check(e) | BatchError::Encode(e) => (i, e),
        })
}

/// As [`encode_batch_bounded`], running `check` on each operation first
/// (on the same threads); the first operation refused by either fails the
/// call.
pub fn encode_batch_checked<E: Send>(
    ops: &[AofOperation],
    max_payload: u32,
    check: impl Fn(&AofOperation) -> Result<(), E> + Sync,
) -> Result<EncodedBatch, (usize, BatchError<E>)> {
    let (frames, lengths) = encode_frames_checked(ops, max_payload, check)?;
    Ok((frames.into_buffer(), lengths))
}

/// The encoding of [`encode_batch_checked`] and [`encode_batch_frames`]:
/// the frames with their bound.
fn encode_frames_checked<E: Send>(
    ops: &[AofOperation],
    max_payload: u32,
    check: impl Fn(&AofOperation) -> Result<(), E> + Sync,
) -> Result<(BoundedFrames, Vec<usize>), (usize, BatchError<E>)> {
    let encode_all = |ops: &[AofOperation], first: usize| {
        let mut out = BoundedFrames::in_buffer(Vec::with_capacity(ops.len() * 300), max_payload);
        let mut lengths = Vec::with_capacity(ops.len());
        encode_run_into(ops, &check, &mut out, &mut lengths).map_err(|(i, e)| (first + i, e))?;
        Ok((out, lengths))
    };
    if ops.len() < 2 * PARALLEL_ENCODE_CHUNK {
        // Before asking for the cores: on Linux that reads cgroup files,
        // tens of microseconds, more than a small batch takes to encode.
        return encode_all(ops, 0);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let parts = encode_parts(ops.len(), cores);
    if parts == 1 {
        return encode_all(ops, 0);
    }
    let chunk = ops.len().div_ceil(parts);
    let encode_all = &encode_all;
    type Part<E> = Result<(BoundedFrames, Vec<usize>), (usize, BatchError<E>)>;
    let encoded: Vec<Part<E>> = std::thread::scope(|scope| {
        let mut chunks = ops.chunks(chunk).enumerate();
        let first = chunks.next().map_or(&[][..], |(_, c)| c);
        let handles: Vec<_> = chunks
            .map(|(i, c)| (i, scope.spawn(move || encode_all(c, i * chunk))))
            .collect();
        let mut results = vec![encode_all(first, 0)];
        for (i, h) in handles {
            results.push(h.join().unwrap_or_else(|_| {
                Err((
                    i * chunk,
                    BatchError::Encode(EncodeError::Serialize("encoding thread panicked".into())),
                ))
            }));
        }
        results
    });
    let mut out = BoundedFrames::in_buffer(Vec::new(), max_payload);
    let mut lengths = Vec::with_capacity(ops.len());
    for part in encoded {
        let (frames, lens) = part?;
        out.append(frames);
        lengths.extend(lens);
    }
    Ok((out, lengths))
}

/// Whole frames, one after the other, each with a payload of at most
/// [`BoundedFrames::bound`] bytes. Only [`encode_run_into`] adds to them
/// (and [`BoundedFrames::append`], frames within the same bound),
/// so a writer whose own bound is at least that takes them without
/// reading every frame's header again (10,000 headers spread over
/// megabytes are 10,000 cache misses).
#[derive(Debug, Default)]
pub struct BoundedFrames {
    bytes: Vec<u8>,
    bound: u32,
}

impl BoundedFrames {
    /// No frames yet, in `buf`'s memory (emptied), for payloads of at
    /// most `bound` bytes.
    pub fn in_buffer(mut buf: Vec<u8>, bound: u32) -> Self {
        buf.clear();
        BoundedFrames { bytes: buf, bound }
    }

    /// The bound every frame's payload is within.
    pub fn bound(&self) -> u32 {
        self.bound
    }

    /// The frames.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// How many bytes of frames.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether there are no frames.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Swaps the frames for `other`'s bytes, which must be empty (a
    /// writer's queue taking them without a copy); returns whether it
    /// did. Frames are never swapped for bytes that hold anything.
    pub fn swap_out(&mut self, other: &mut Vec<u8>) -> bool {
        if !other.is_empty() {
            return false;
        }
        std::mem::swap(&mut self.bytes, other);
        true
    }

    /// Adds `other`'s frames after these; the bound becomes the larger of
    /// the two (which every frame is then within).
    pub fn append(&mut self, other: BoundedFrames) {
        self.bound = self.bound.max(other.bound);
        if self.bytes.is_empty() {
            self.bytes = other.bytes;
        } else {
            self.bytes.extend_from_slice(&other.bytes);
        }
    }

    /// Drops the frames, keeping the memory.
    pub fn clear(&mut self) {
        self.bytes.clear();
    }

    /// The memory, for reuse.
    pub fn into_buffer(self) -> Vec<u8> {
        self.bytes
    }
}

/// Encodes `ops`, in order, onto the end of `out`, within its bound,
/// pushing each frame's length onto `lengths`, after `check` on each. The
/// first operation refused by either stops it with its index in `ops`;
/// `out` and `lengths` then hold the frames of the ones before it, and
/// nothing of it.
pub fn encode_run_into<E>(
    ops: &[AofOperation],
    check: impl Fn(&AofOperation) -> Result<(), E>,
    out: &mut BoundedFrames,
    lengths: &mut Vec<usize>,
) -> Result<(), (usize, BatchError<E>)> {
    for (i, op) in ops.iter().enumerate() {
        check(op).map_err(|e| (i, BatchError::Check(e)))?;
        let len = encode_frame_into_bounded(op, &mut out.bytes, out.bound)
            .map_err(|e| (i, BatchError::Encode(e)))?;
        lengths.push(len);
    }
    Ok(())
}

/// How many parts (threads, the calling one included) a batch of `len`
/// operations is encoded in with `cores` CPUs: one per whole
/// [`PARALLEL_ENCODE_CHUNK`] of operations, at least one, at most one per
/// core.
fn encode_parts(len: usize, cores: usize) -> usize {
    (len / PARALLEL_ENCODE_CHUNK).clamp(1, cores)
}

/// As [`encode_frame_into`], refusing payloads longer than `max_payload`.
/// The one framing of the crate: any serde value is framed here, so a value
/// of the engine's own type that serializes as an [`AofOperation`] gets the
/// same bytes.
pub fn encode_frame_into_bounded<T: serde::Serialize + ?Sized>(
    op: &T,
    out: &mut Vec<u8>,
    max_payload: u32,
) -> Result<usize, EncodeError> {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    if let Err(e) = bincode::serialize_into(&mut *out, op) {
        out.truncate(start);
        return Err(EncodeError::Serialize(e.to_string()));
    }
    let payload_len = out.len() - start - HEADER_LEN;
    if payload_len > max_payload as usize {
        out.truncate(start);
        return Err(EncodeError::TooLarge {
            length: payload_len,
            max: max_payload,
        });
    }
    let header = FrameHeader {
        length: payload_len as u32,
        crc: crc32fast::hash(&out[start + HEADER_LEN..]),
    };
    out[start..start + HEADER_LEN].copy_from_slice(&header.to_bytes());
    Ok(HEADER_LEN + payload_len)
}

/// One frame for `op`, as a new buffer.
pub fn encode_frame(op: &AofOperation) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(512);
    encode_frame_into(op, &mut out)?;
    Ok(out)
}

/// Decodes a payload whose checksum has already been checked.
pub fn decode_payload(payload: &[u8]) -> Result<AofOperation, FrameErrorKind> {
    // Fast path: bincode's slice reader borrows strings in place. It cannot
    // say how many bytes a payload has left over, so any failure is decoded
    // again by the precise path below, which names the cause.
    let fast = bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .reject_trailing_bytes()
        .deserialize::<AofOperation>(payload);
    match fast {
        Ok(op) => Ok(op),
        Err(_) => Err(explain_bad_payload(payload)),
    }
}

/// Why a payload does not decode to exactly one operation.
#[cold]
fn explain_bad_payload(payload: &[u8]) -> FrameErrorKind {
    let mut rest = payload;
    match payload_options(payload.len() as u64).deserialize_from::<_, AofOperation>(&mut rest) {
        Err(e) => FrameErrorKind::Undecodable {
            reason: e.to_string(),
        },
        Ok(_) if !rest.is_empty() => FrameErrorKind::TrailingBytes {
            left: rest.len() as u64,
        },
        Ok(_) => FrameErrorKind::Undecodable {
            reason: "the decoders disagree on this payload".into(),
        },
    }
}

/// A frame whose header and checksum are good, located in its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawFrame<'a> {
    /// The payload, checksum checked.
    pub payload: &'a [u8],
    /// Header plus payload.
    pub frame_len: usize,
}

/// Checks the header and checksum of the frame starting at `buf[0]`, without
/// decoding the payload. Errors carry offsets relative to `buf` plus `base`.
pub fn check_frame(buf: &[u8], base: u64, max_payload: u32) -> Result<RawFrame<'_>, FrameError> {
    let err = |kind| FrameError { offset: base, kind };
    let Some(header) = FrameHeader::read(buf) else {
        return Err(err(FrameErrorKind::Torn {
            needed: HEADER_LEN as u64,
            available: buf.len() as u64,
        }));
    };
    let FrameHeader {
        length,
        crc: stored,
    } = header;
    if length == 0 {
        return Err(err(FrameErrorKind::ZeroLength));
    }
    if length > max_payload {
        return Err(err(FrameErrorKind::Oversized {
            length,
            max: max_payload,
        }));
    }
    let frame_len = header.frame_len();
    if buf.len() < frame_len {
        return Err(err(FrameErrorKind::Torn {
            needed: frame_len as u64,
            available: buf.len() as u64,
        }));
    }
    let payload = &buf[HEADER_LEN..frame_len];
    let computed = crc32fast::hash(payload);
    if computed != stored {
        return Err(err(FrameErrorKind::ChecksumMismatch { stored, computed }));
    }
    Ok(RawFrame { payload, frame_len })
}

/// Decodes the frame at the start of `buf`; returns the operation and the
/// frame's length. `base` is the offset of `buf[0]` in the caller's input.
pub fn decode_frame(
    buf: &[u8],
    base: u64,
    max_payload: u32,
) -> Result<(AofOperation, usize), FrameError> {
    let raw = check_frame(buf, base, max_payload)?;
    let op = decode_payload(raw.payload).map_err(|kind| FrameError { offset: base, kind })?;
    Ok((op, raw.frame_len))
}

/// Decodes a buffer that holds exactly one frame.
pub fn decode_one(buf: &[u8], max_payload: u32) -> Result<AofOperation, FrameError> {
    let (op, used) = decode_frame(buf, 0, max_payload)?;
    if used != buf.len() {
        return Err(FrameError {
            offset: used as u64,
            kind: FrameErrorKind::TrailingBytes {
                left: (buf.len() - used) as u64,
            },
        });
    }
    Ok(op)
}

/// Decodes a buffer that is a whole number of frames. The first bad frame
/// fails the call; nothing after it is looked at.
pub fn decode_all(buf: &[u8], max_payload: u32) -> Result<Vec<AofOperation>, FrameError> {
    let mut ops = Vec::new();
    let mut pos = 0usize;
    while pos < buf.len() {
        let (op, used) = decode_frame(&buf[pos..], pos as u64, max_payload)?;
        ops.push(op);
        pos += used;
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::*;
    use rust_decimal::Decimal;

    #[test]
    fn frame_header_is_length_then_crc_of_payload() {
        let op = AofOperation::EpochAdvanced(EpochId(7), EpochPhase::Seal);
        let frame = encode_frame(&op).unwrap();
        let payload = bincode::serialize(&op).unwrap();
        assert_eq!(payload, [5, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&frame[0..4], &(payload.len() as u32).to_le_bytes());
        assert_eq!(&frame[4..8], &crc32fast::hash(&payload).to_le_bytes());
        assert_eq!(&frame[8..], &payload[..]);
        assert_eq!(decode_one(&frame, DEFAULT_MAX_PAYLOAD_LEN).unwrap(), op);
    }

    #[test]
    fn a_header_reads_back_what_it_wrote_and_needs_its_bytes() {
        let header = FrameHeader {
            length: 0x0403_0201,
            crc: 0x0807_0605,
        };
        let bytes = header.to_bytes();
        assert_eq!(bytes, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(FrameHeader::read(&bytes), Some(header));
        assert_eq!(
            FrameHeader::read(&[bytes.as_slice(), b"payload"].concat()),
            Some(header)
        );
        assert_eq!(FrameHeader::read(&bytes[..HEADER_LEN - 1]), None);
        assert_eq!(FrameHeader::read_length(&bytes[..4]), Some(header.length));
        assert_eq!(FrameHeader::read_length(&bytes[..3]), None);
        assert_eq!(header.frame_len(), HEADER_LEN + 0x0403_0201);
    }

    #[test]
    fn errors_name_offset_and_cause() {
        let op = AofOperation::EpochAdvanced(EpochId(1), EpochPhase::Collect);
        let mut two = encode_frame(&op).unwrap();
        let first_len = two.len();
        two.extend(encode_frame(&op).unwrap());
        let last = two.len() - 1;
        two[last] ^= 1;
        let e = decode_all(&two, DEFAULT_MAX_PAYLOAD_LEN).unwrap_err();
        assert_eq!(e.offset, first_len as u64);
        assert_eq!(e.kind.name(), "checksum_mismatch");

        let e = decode_all(&two[..first_len + 3], DEFAULT_MAX_PAYLOAD_LEN).unwrap_err();
        assert_eq!(e.offset, first_len as u64);
        assert!(e.kind.is_torn());

        let mut huge = vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        huge.extend([0u8; 16]);
        let e = decode_all(&huge, DEFAULT_MAX_PAYLOAD_LEN).unwrap_err();
        assert_eq!(e.kind.name(), "oversized_length");
    }

    #[test]
    fn payload_with_bytes_left_over_is_corrupt() {
        let op = AofOperation::EpochAdvanced(EpochId(1), EpochPhase::Collect);
        let mut payload = bincode::serialize(&op).unwrap();
        payload.push(0);
        let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
        frame.extend(crc32fast::hash(&payload).to_le_bytes());
        frame.extend(&payload);
        let e = decode_one(&frame, DEFAULT_MAX_PAYLOAD_LEN).unwrap_err();
        assert_eq!(e.kind, FrameErrorKind::TrailingBytes { left: 1 });
    }

    #[test]
    fn corrupt_inner_string_length_does_not_allocate() {
        // OrderCancelled's uuid is `serialize_bytes`: a u64 length then bytes.
        let mut payload = vec![1, 0, 0, 0];
        payload.extend(u64::MAX.to_le_bytes());
        let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
        frame.extend(crc32fast::hash(&payload).to_le_bytes());
        frame.extend(&payload);
        let e = decode_one(&frame, DEFAULT_MAX_PAYLOAD_LEN).unwrap_err();
        assert_eq!(e.kind.name(), "undecodable_payload");
    }

    fn epoch_op(i: u64) -> AofOperation {
        AofOperation::EpochAdvanced(EpochId(i), EpochPhase::Seal)
    }

    /// An operation whose payload is just over 16 MiB.
    fn huge_op() -> AofOperation {
        let asset = "x".repeat(DEFAULT_MAX_PAYLOAD_LEN as usize);
        AofOperation::BalanceUpdated(
            UserId(uuid::Uuid::nil()),
            asset,
            Decimal::ZERO,
            Decimal::ZERO,
        )
    }

    #[test]
    fn the_default_payload_bound_is_16_mib() {
        // docs/format.md: readers bound the length at 16 MiB by default.
        assert_eq!(DEFAULT_MAX_PAYLOAD_LEN, 16 << 20);
        let mut out = vec![7u8];
        assert!(matches!(
            encode_frame_into(&huge_op(), &mut out),
            Err(EncodeError::TooLarge { max, .. }) if max == DEFAULT_MAX_PAYLOAD_LEN
        ));
        assert_eq!(out, [7], "nothing appended");
    }

    #[test]
    fn a_payload_exactly_at_the_bound_is_written_and_read() {
        let op = epoch_op(3);
        let len = bincode::serialize(&op).unwrap().len() as u32;
        let mut out = vec![0xee; 5];
        assert_eq!(
            encode_frame_into_bounded(&op, &mut out, len).unwrap(),
            HEADER_LEN + len as usize
        );
        assert_eq!(
            &out[5..],
            &encode_frame(&op).unwrap()[..],
            "framed after what was there"
        );
        assert_eq!(decode_one(&out[5..], len).unwrap(), op);
        let e = decode_one(&out[5..], len - 1).unwrap_err();
        assert_eq!(
            e.kind,
            FrameErrorKind::Oversized {
                length: len,
                max: len - 1
            }
        );
        assert!(matches!(
            encode_frame_into_bounded(&op, &mut out, len - 1),
            Err(EncodeError::TooLarge { length, max }) if length == len as usize && max == len - 1
        ));
        assert_eq!(
            out.len(),
            5 + HEADER_LEN + len as usize,
            "a refused frame leaves no bytes"
        );
    }

    #[test]
    fn torn_frames_say_how_many_bytes_they_need() {
        let frame = encode_frame(&epoch_op(1)).unwrap();
        let n = frame.len() as u64;
        for cut in [0, 3, HEADER_LEN, frame.len() - 1] {
            let e = decode_one(&frame[..cut], DEFAULT_MAX_PAYLOAD_LEN).unwrap_err();
            let needed = if cut < HEADER_LEN {
                HEADER_LEN as u64
            } else {
                n
            };
            assert_eq!(
                e.kind,
                FrameErrorKind::Torn {
                    needed,
                    available: cut as u64
                }
            );
            assert!(e.kind.is_torn());
        }
        let mut bad = frame.clone();
        bad[HEADER_LEN] ^= 1;
        let e = decode_one(&bad, DEFAULT_MAX_PAYLOAD_LEN).unwrap_err();
        assert!(!e.kind.is_torn());
    }

    #[test]
    fn one_frame_with_another_after_it_is_not_one_frame() {
        let first = encode_frame(&epoch_op(1)).unwrap();
        let second = encode_frame(&epoch_op(22)).unwrap();
        let both = [first.clone(), second.clone()].concat();
        let e = decode_one(&both, DEFAULT_MAX_PAYLOAD_LEN).unwrap_err();
        assert_eq!(e.offset, first.len() as u64);
        assert_eq!(
            e.kind,
            FrameErrorKind::TrailingBytes {
                left: second.len() as u64
            }
        );
        assert_eq!(
            decode_all(&both, DEFAULT_MAX_PAYLOAD_LEN).unwrap(),
            [epoch_op(1), epoch_op(22)]
        );
    }

    #[test]
    fn errors_read_as_what_went_wrong() {
        let cases = [
            (
                FrameErrorKind::Torn {
                    needed: 20,
                    available: 9,
                },
                "needs 20 bytes but only 9",
            ),
            (
                FrameErrorKind::ChecksumMismatch {
                    stored: 1,
                    computed: 2,
                },
                "stored 0x00000001, payload has 0x00000002",
            ),
            (
                FrameErrorKind::Oversized {
                    length: 99,
                    max: 10,
                },
                "limit 10): the length field says 99",
            ),
            (FrameErrorKind::ZeroLength, "zero length"),
            (
                FrameErrorKind::Undecodable {
                    reason: "boom".into(),
                },
                "undecodable payload: boom",
            ),
            (
                FrameErrorKind::TrailingBytes { left: 4 },
                "4 bytes after the operation",
            ),
        ];
        let mut names = std::collections::HashSet::new();
        for (kind, text) in cases {
            assert!(kind.to_string().contains(text), "{kind}");
            assert!(names.insert(kind.name()));
            let e = FrameError { offset: 7, kind };
            assert!(
                e.to_string().starts_with("bad frame at byte offset 7: "),
                "{e}"
            );
        }
    }

    /// Encodes the batch one operation at a time, as encode_batch must.
    fn one_by_one(ops: &[AofOperation]) -> EncodedBatch {
        let mut out = Vec::new();
        let lens = ops
            .iter()
            .map(|op| encode_frame_into(op, &mut out).unwrap())
            .collect();
        (out, lens)
    }

    /// The writer takes a batch's frames by swapping buffers: only with
    /// one that holds nothing (a pending buffer that holds frames is never
    /// dropped), and the frames then keep the memory they were given.
    #[test]
    fn bounded_frames_are_swapped_only_for_an_empty_buffer() {
        let mut frames = BoundedFrames::in_buffer(b"left over".to_vec(), 100);
        assert!(frames.is_empty(), "a given buffer's bytes are dropped");
        assert_eq!((frames.len(), frames.bound()), (0, 100));
        let ops: Vec<_> = (0..3).map(epoch_op).collect();
        let mut lengths = Vec::new();
        encode_run_into(&ops, |_| Ok::<(), ()>(()), &mut frames, &mut lengths).unwrap();
        let (bytes, lens) = one_by_one(&ops);
        assert_eq!((frames.as_bytes(), &lengths), (bytes.as_slice(), &lens));
        assert_eq!(frames.len(), bytes.len());
        assert!(!frames.is_empty());

        let mut busy = vec![7u8];
        assert!(!frames.swap_out(&mut busy));
        assert_eq!(busy, [7]);
        assert_eq!(frames.as_bytes(), bytes.as_slice());

        let mut empty = Vec::with_capacity(4096);
        assert!(frames.swap_out(&mut empty));
        assert_eq!(empty, bytes);
        assert!(frames.is_empty());
        let back = frames.into_buffer();
        assert!(
            back.is_empty() && back.capacity() >= 4096,
            "the empty one's memory"
        );

        let mut frames = BoundedFrames::in_buffer(back, 100);
        encode_run_into(&ops, |_| Ok::<(), ()>(()), &mut frames, &mut lengths).unwrap();
        frames.clear();
        assert!(frames.is_empty());
        assert!(
            frames.into_buffer().capacity() >= 4096,
            "cleared, the memory kept"
        );
    }

    /// Frames appended to frames follow them, and the bound is the larger
    /// of the two, so the writer reads frames again when one part was
    /// bounded past its own bound.
    #[test]
    fn appended_frames_follow_and_keep_the_larger_bound() {
        let ops: Vec<_> = (0..4).map(epoch_op).collect();
        let (bytes, _) = one_by_one(&ops);
        let mut lengths = Vec::new();
        let mut first = BoundedFrames::in_buffer(Vec::new(), 100);
        encode_run_into(&ops[..2], |_| Ok::<(), ()>(()), &mut first, &mut lengths).unwrap();
        let mut second = BoundedFrames::in_buffer(Vec::new(), 200);
        encode_run_into(&ops[2..], |_| Ok::<(), ()>(()), &mut second, &mut lengths).unwrap();
        first.append(second);
        assert_eq!((first.as_bytes(), first.bound()), (bytes.as_slice(), 200));

        let mut lower = BoundedFrames::in_buffer(Vec::new(), 50);
        encode_run_into(&ops, |_| Ok::<(), ()>(()), &mut lower, &mut lengths).unwrap();
        let mut empty = BoundedFrames::in_buffer(Vec::new(), 100);
        empty.append(lower);
        assert_eq!((empty.as_bytes(), empty.bound()), (bytes.as_slice(), 100));
    }

    /// A batch's frames keep the bound they were encoded with, over the
    /// threads of a large batch too.
    #[test]
    fn a_batch_of_frames_keeps_its_bound_whatever_its_size() {
        for n in [3, 3 * PARALLEL_ENCODE_CHUNK + 5] {
            let ops: Vec<_> = (0..n as u64).map(epoch_op).collect();
            let (frames, lengths) = encode_batch_frames(&ops, 1000).unwrap();
            assert_eq!(frames.bound(), 1000, "{n} operations");
            let (bytes, lens) = one_by_one(&ops);
            assert_eq!((frames.as_bytes(), lengths), (bytes.as_slice(), lens));
        }
    }

    #[test]
    fn a_batch_is_its_frames_in_order_whatever_its_size() {
        for n in [
            0,
            1,
            3,
            2 * PARALLEL_ENCODE_CHUNK,
            3 * PARALLEL_ENCODE_CHUNK + 5,
        ] {
            let ops: Vec<_> = (0..n as u64).map(epoch_op).collect();
            assert_eq!(
                encode_batch(&ops).unwrap(),
                one_by_one(&ops),
                "{n} operations"
            );
        }
    }

    /// One part per whole chunk of operations, at least one, at most one
    /// per core: on a machine of many cores a batch of two chunks is
    /// still encoded in two parts, not one per core.
    #[test]
    fn a_batch_is_split_in_one_part_per_whole_chunk_up_to_the_cores() {
        let c = PARALLEL_ENCODE_CHUNK;
        assert_eq!(encode_parts(2 * c, 8), 2);
        assert_eq!(encode_parts(3 * c - 1, 8), 2);
        assert_eq!(encode_parts(3 * c + 5, 8), 3);
        assert_eq!(encode_parts(100 * c, 8), 8);
        assert_eq!(encode_parts(c - 1, 8), 1);
        assert_eq!(encode_parts(2 * c, 1), 1);
    }

    #[test]
    fn a_refused_operation_fails_the_batch_with_its_index() {
        let n = 3 * PARALLEL_ENCODE_CHUNK + 5;
        let ops: Vec<_> = (0..n as u64).map(epoch_op).collect();
        for bad in [1, PARALLEL_ENCODE_CHUNK + 1, n - 1] {
            let check = |op: &AofOperation| match op {
                AofOperation::EpochAdvanced(EpochId(i), _) if *i as usize == bad => Err(*i),
                _ => Ok(()),
            };
            match encode_batch_checked(&ops, DEFAULT_MAX_PAYLOAD_LEN, check) {
                Err((i, BatchError::Check(id))) => assert_eq!((i, id as usize), (bad, bad)),
                other => panic!("operation {bad}: {:?}", other.map(|_| ())),
            }
        }
        let mut with_huge = ops[..5].to_vec();
        with_huge[3] = huge_op();
        match encode_batch(&with_huge) {
            Err((3, EncodeError::TooLarge { .. })) => {}
            other => panic!("{:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn a_panicking_encoder_thread_fails_the_batch_at_its_chunk() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cores < 2 {
            return; // one core: no thread is started
        }
        // Batches of two and three chunks' worth, split over the cores;
        // the last operation is in the last chunk, which runs on a thread.
        for n in [2 * PARALLEL_ENCODE_CHUNK, 3 * PARALLEL_ENCODE_CHUNK + 5] {
            let ops: Vec<_> = (0..n as u64).map(epoch_op).collect();
            let chunk = n.div_ceil((n / PARALLEL_ENCODE_CHUNK).min(cores));
            let bad = n - 1;
            let check = |op: &AofOperation| -> Result<(), ()> {
                assert!(*op != epoch_op(bad as u64), "a check that panics");
                Ok(())
            };
            match encode_batch_checked(&ops, DEFAULT_MAX_PAYLOAD_LEN, check) {
                Err((i, BatchError::Encode(EncodeError::Serialize(why)))) => {
                    assert_eq!(i, bad / chunk * chunk, "{n} operations");
                    assert!(why.contains("panicked"), "{why}");
                }
                other => panic!("{:?}", other.map(|_| ())),
            }
        }
    }
}
