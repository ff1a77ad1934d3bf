//! One recovery rule: the writer opening a directory and the scanner reach
//! the same verdict, at the same offset, on the same tail; and what the
//! writer cuts is first saved, byte for byte.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use openmatch_aof::codec::{encode_frame_into, HEADER_LEN};
use openmatch_aof::journal::{Journal, JournalError};
use openmatch_aof::scanner::{OutcomeKind, ScanOptions, Scanner};
use openmatch_aof::segment::segment_file_name;
use openmatch_aof::state::State;
use openmatch_aof::writer::{AofWriter, WriterError, WriterOptions};
use openmatch_aof::{AofOperation, EpochId, EpochPhase, UserId};
use proptest::prelude::*;

fn op(i: u64) -> AofOperation {
    AofOperation::EpochAdvanced(EpochId(i), EpochPhase::Match)
}

fn frames(from: u64, n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for i in from..from + n {
        encode_frame_into(&op(i), &mut out).unwrap();
    }
    out
}

/// A frame around `payload`, with a correct checksum.
fn raw_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_le_bytes().to_vec();
    out.extend(crc32fast::hash(payload).to_le_bytes());
    out.extend(payload);
    out
}

/// What a tool decided: the outcome and the offset of the last good byte.
type Verdict = (OutcomeKind, u64);

/// The scanner's verdict on the frames (lengths and checksums), which is
/// what decides torn or corrupt; a payload that does not decode is the
/// replay's to refuse (`payloads_are_the_replays_to_refuse`).
fn scanner_verdict(data: &[u8]) -> Verdict {
    let r = Scanner::from_bytes(data.to_vec(), 0, ScanOptions::default())
        .verify_frames()
        .unwrap();
    (r.outcome.kind, r.outcome.offset)
}

/// Opens a writer on a directory whose one segment holds `data`; checks
/// that what it cut is in its backup, and nothing else changed.
fn writer_verdict(data: &[u8]) -> Verdict {
    let dir = tempfile::tempdir().unwrap();
    let seg = dir.path().join(segment_file_name(0));
    fs::write(&seg, data).unwrap();
    match AofWriter::open(dir.path(), WriterOptions::default()) {
        Ok(w) => {
            let report = w.open_report().clone();
            drop(w);
            let end = report.end as usize;
            assert_eq!(fs::read(&seg).unwrap(), data[..end], "the good frames stay");
            if report.truncated_bytes == 0 {
                assert_eq!(report.torn_tail_backup, None);
                return (OutcomeKind::Clean, report.end);
            }
            let backup = report.torn_tail_backup.expect("a cut is backed up");
            assert_eq!(backup.parent(), Some(dir.path()));
            assert_eq!(
                fs::read(&backup).unwrap(),
                data[end..],
                "the backup is the cut"
            );
            let mode = fs::metadata(&backup).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            (OutcomeKind::TornTail, report.end)
        }
        Err(WriterError::Corrupt { offset, .. }) => {
            assert_eq!(fs::read(&seg).unwrap(), data, "corruption is not cut");
            (OutcomeKind::Corrupt, offset)
        }
        Err(WriterError::Oversized { offset, .. }) => {
            assert_eq!(
                fs::read(&seg).unwrap(),
                data,
                "an oversized frame is not cut"
            );
            (OutcomeKind::Oversized, offset)
        }
        Err(e) => panic!("unexpected error opening the writer: {e}"),
    }
}

fn assert_same_verdict(data: &[u8], what: &str) -> Verdict {
    let scanned = scanner_verdict(data);
    assert_eq!(writer_verdict(data), scanned, "{what}");
    scanned
}

#[test]
fn writer_and_scanner_agree_on_every_kind_of_tail() {
    let good = frames(0, 3);
    let next = frames(3, 1);
    let g = good.len() as u64;
    let mut bad_crc = next.clone();
    *bad_crc.last_mut().unwrap() ^= 1;
    let mut hides_frame = (10_000u32).to_le_bytes().to_vec();
    hides_frame.extend([0u8; 4]);
    hides_frame.extend(frames(3, 2));
    let mut zero_then_data = vec![0u8; 50];
    zero_then_data.push(7);
    let mut oversized_then_frames = (u32::MAX).to_le_bytes().to_vec();
    oversized_then_frames.extend([0u8; 4]);
    oversized_then_frames.extend(frames(3, 2));
    let cases: Vec<(&str, Vec<u8>, Verdict)> = vec![
        ("clean", vec![], (OutcomeKind::Clean, g)),
        (
            "torn header",
            next[..5].to_vec(),
            (OutcomeKind::TornTail, g),
        ),
        (
            "torn payload",
            next[..next.len() - 1].to_vec(),
            (OutcomeKind::TornTail, g),
        ),
        ("zeroed tail", vec![0u8; 100], (OutcomeKind::TornTail, g)),
        (
            "short zeroed tail",
            vec![0u8; 3],
            (OutcomeKind::TornTail, g),
        ),
        ("zeros then data", zero_then_data, (OutcomeKind::Corrupt, g)),
        (
            "bad checksum, last frame",
            bad_crc,
            (OutcomeKind::Corrupt, g),
        ),
        // A length over the limit at the live end (a long frame being
        // appended): oversized, not a torn tail to cut.
        (
            "oversized length, payload partly there",
            vec![0xff; 12],
            (OutcomeKind::Oversized, g),
        ),
        (
            "oversized length, header only",
            vec![0xff; HEADER_LEN],
            (OutcomeKind::Oversized, g),
        ),
        (
            "oversized length, frames after it",
            oversized_then_frames,
            (OutcomeKind::Oversized, g),
        ),
        (
            "length past end hiding frames",
            hides_frame,
            (OutcomeKind::Corrupt, g),
        ),
    ];
    for (what, tail, expected) in cases {
        let mut data = good.clone();
        data.extend(&tail);
        assert_eq!(assert_same_verdict(&data, what), expected, "{what}");
    }
}

/// A real frame longer than the reader's limit, still being appended at
/// the live end of the last segment: oversized for the scanner and the
/// writer alike, named with its limit, and nothing is cut; at a limit that
/// admits it, it is the torn tail it is.
#[test]
fn a_frame_past_the_limit_at_the_live_end_is_oversized_not_a_torn_tail() {
    let good = frames(0, 3);
    // Longer than the frames before it, which the lower limit still admits.
    let long = AofOperation::BalanceUpdated(
        UserId(uuid::Uuid::from_u128(9)),
        "X".repeat(1000),
        "1".parse().unwrap(),
        "0".parse().unwrap(),
    );
    let mut next = Vec::new();
    encode_frame_into(&long, &mut next).unwrap();
    let payload = (next.len() - HEADER_LEN) as u32;
    let mut data = good.clone();
    data.extend(&next[..next.len() - 2]);
    let small = payload - 1;
    let r = Scanner::from_bytes(
        data.clone(),
        0,
        ScanOptions {
            max_payload: small,
            ..ScanOptions::default()
        },
    )
    .verify_frames()
    .unwrap();
    assert_eq!(r.outcome.kind, OutcomeKind::Oversized);
    assert_eq!(r.outcome.offset, good.len() as u64);
    assert_eq!(r.outcome.tail_bytes, 0);
    assert_eq!(r.outcome.oversized(), Some((payload, small)));
    let message = r.outcome.describe();
    assert!(
        message.contains(&format!("oversized (limit {small})")),
        "{message}"
    );
    assert!(
        message.contains("max_payload") && message.contains("--max-payload"),
        "{message}"
    );
    assert!(!message.contains("corrupt"), "{message}");

    let dir = tempfile::tempdir().unwrap();
    let seg = dir.path().join(segment_file_name(0));
    fs::write(&seg, &data).unwrap();
    let opts = WriterOptions {
        max_payload: small,
        ..WriterOptions::default()
    };
    match AofWriter::open(dir.path(), opts) {
        Err(e @ WriterError::Oversized { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains(&format!("oversized (limit {small})")),
                "{text}"
            );
            assert!(
                text.contains("max_payload") && !text.contains("corrupt"),
                "{text}"
            );
            match e {
                WriterError::Oversized {
                    path,
                    offset,
                    length,
                    limit,
                } => assert_eq!(
                    (path, offset, length, limit),
                    (seg.clone(), good.len() as u64, payload, small)
                ),
                _ => unreachable!(),
            }
        }
        other => panic!("expected an oversized refusal, got {other:?}"),
    }
    assert_eq!(fs::read(&seg).unwrap(), data, "nothing was cut");
    let backups = fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".torn-")
        })
        .count();
    assert_eq!(backups, 0, "no backup either: nothing was to be cut");
    // At the default limit the same bytes are an interrupted append.
    assert_eq!(
        assert_same_verdict(&data, "torn at the default limit"),
        (OutcomeKind::TornTail, good.len() as u64)
    );
}

fn tail_strategy() -> impl Strategy<Value = Vec<u8>> {
    let next = frames(100, 2);
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        (0..next.len()).prop_map(move |cut| next[..cut].to_vec()),
        (1usize..200).prop_map(|n| vec![0u8; n]),
        (1usize..64, any::<u8>(), 0usize..8).prop_map(|(zeros, b, at)| {
            let mut v = vec![0u8; zeros];
            let at = at.min(zeros - 1);
            v[at] = b;
            v
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn writer_and_scanner_agree_on_any_tail(n in 0u64..4, tail in tail_strategy(), flip in proptest::option::of(0usize..400)) {
        let mut data = frames(0, n);
        data.extend(&tail);
        if let Some(at) = flip.filter(|&at| at < data.len()) {
            data[at] ^= 0x10;
        }
        assert_same_verdict(&data, "generated");
    }
}

/// A complete frame with a good checksum whose payload is not an operation
/// (a writer's bug, never a crash): whole as a frame, so the writer cuts
/// nothing, and refused by the replay, so the journal does not open on it.
#[test]
fn payloads_are_the_replays_to_refuse() {
    let good = frames(0, 3);
    let next = frames(3, 1);
    let mut trailing = next[HEADER_LEN..].to_vec();
    trailing.push(0);
    // A known variant tag (0: OrderReceived) over bytes that are no order.
    let mut undecodable = 0u32.to_le_bytes().to_vec();
    undecodable.extend([0xee; 9]);
    for (what, frame) in [
        ("undecodable", raw_frame(&undecodable)),
        ("trailing bytes", raw_frame(&trailing)),
    ] {
        let mut data = good.clone();
        data.extend(&frame);
        let whole = data.len() as u64;
        assert_eq!(
            assert_same_verdict(&data, what),
            (OutcomeKind::Clean, whole),
            "{what}"
        );
        let decoded = Scanner::from_bytes(data.clone(), 0, ScanOptions::default())
            .verify()
            .unwrap();
        assert_eq!(
            (decoded.outcome.kind, decoded.outcome.offset),
            (OutcomeKind::Corrupt, good.len() as u64),
            "{what}"
        );
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(segment_file_name(0)), &data).unwrap();
        let err = Journal::open(dir.path(), WriterOptions::default(), State::new()).unwrap_err();
        assert!(
            matches!(err, JournalError::Unrecoverable { .. }),
            "{what}: {err}"
        );
        assert_eq!(
            fs::read(dir.path().join(segment_file_name(0))).unwrap(),
            data
        );
    }
}
