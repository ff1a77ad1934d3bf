//! The recovery rule: is a bad frame a torn tail (cut it), a frame longer
//! than the reader's limit (refuse, name the limit) or corruption (refuse)? `docs/recovery-rule.md` states it; [`classify_stop`] is its one
//! implementation. The scanner calls it at every bad frame, and everything
//! else that must decide (the writer opening a directory, `aof verify`,
//! `aof repair`) gets the verdict from a scan, so no two tools can disagree
//! on the same bytes.

use std::io::{self, Read};

use crate::codec::{check_frame, FrameErrorKind, HEADER_LEN};
use crate::scanner::{OutcomeKind, StopCause};

/// What the bytes from a bad frame to the end of its segment are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailVerdict {
    /// [`OutcomeKind::TornTail`], [`OutcomeKind::Oversized`] or
    /// [`OutcomeKind::Corrupt`], never clean.
    pub kind: OutcomeKind,
    /// Why.
    pub cause: StopCause,
    /// For a torn tail, the bytes from the bad frame to the end of the
    /// segment (what a cut removes); 0 otherwise.
    pub tail_bytes: u64,
}

impl TailVerdict {
    fn oversized(cause: StopCause) -> Self {
        TailVerdict {
            kind: OutcomeKind::Oversized,
            cause,
            tail_bytes: 0,
        }
    }

    fn corrupt(cause: StopCause) -> Self {
        TailVerdict {
            kind: OutcomeKind::Corrupt,
            cause,
            tail_bytes: 0,
        }
    }

    fn torn(cause: StopCause, tail_bytes: u64) -> Self {
        TailVerdict {
            kind: OutcomeKind::TornTail,
            cause,
            tail_bytes,
        }
    }
}

/// Decides what the first bad frame of a segment means.
///
/// `error` is why the frame at offset `at` of the segment could not be read
/// (a `Torn` error only once the segment has no more bytes); `rest` reads
/// the segment from that frame's first byte to its end; `is_last` says
/// whether it is the log's last segment. Only the last segment can end in an
/// interrupted append: rotation makes a segment durable before its
/// successor exists.
///
/// * A torn frame at the end of the last segment is a torn tail, unless a
///   complete, checksummed frame starts inside the bytes it claims: then
///   its length field was damaged and the frames behind it are real
///   (`length_past_end`). Any checksummed frame counts, decodable or not:
///   the stricter test, so that a tail is cut only when it cannot hold one.
/// * A zero length field followed by nothing but zeros to the end of the
///   last segment is a torn tail (`zeroed_tail`): a file that grew without
///   its data reaching the disk. No valid frame has a zero length.
/// * A length field above `max_payload` is oversized, in any segment, the
///   live end of the last one included: a frame longer than this reader
///   accepts is not damage (a writer with a higher limit, or one being
///   appended now), and a damaged length is not told from it by its size,
///   so it is neither cut nor called corrupt; a reader with a higher limit
///   decides. `rest` is not read.
/// * Everything else is corruption; `rest` is not read.
pub fn classify_stop(
    error: &FrameErrorKind,
    at: u64,
    is_last: bool,
    rest: &mut dyn Read,
    max_payload: u32,
) -> io::Result<TailVerdict> {
    match error {
        FrameErrorKind::Oversized { .. } => {
            Ok(TailVerdict::oversized(StopCause::Frame(error.clone())))
        }
        FrameErrorKind::Torn { .. } if !is_last => {
            Ok(TailVerdict::corrupt(StopCause::TornMidLog(error.clone())))
        }
        FrameErrorKind::Torn { .. } => {
            // A torn frame is shorter than the longest frame; reading one
            // byte more than that would only matter to a caller that broke
            // the contract, and then the rest is not a torn frame.
            let limit = HEADER_LEN as u64 + u64::from(max_payload);
            let mut bytes = Vec::new();
            rest.take(limit + 1).read_to_end(&mut bytes)?;
            if bytes.len() as u64 > limit {
                return Ok(TailVerdict::corrupt(StopCause::Frame(error.clone())));
            }
            match (1..bytes.len()).find(|&i| check_frame(&bytes[i..], 0, max_payload).is_ok()) {
                Some(i) => Ok(TailVerdict::corrupt(StopCause::LengthPastEnd {
                    intact_frame_at: at + i as u64,
                })),
                None => Ok(TailVerdict::torn(
                    StopCause::Frame(error.clone()),
                    bytes.len() as u64,
                )),
            }
        }
        FrameErrorKind::ZeroLength if is_last => {
            let mut buf = vec![0u8; 64 << 10];
            let mut count = 0u64;
            loop {
                let n = match rest.read(&mut buf) {
                    Ok(0) => return Ok(TailVerdict::torn(StopCause::ZeroedTail, count)),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                if buf[..n].iter().any(|&b| b != 0) {
                    return Ok(TailVerdict::corrupt(StopCause::Frame(error.clone())));
                }
                count += n as u64;
            }
        }
        _ => Ok(TailVerdict::corrupt(StopCause::Frame(error.clone()))),
    }
}
