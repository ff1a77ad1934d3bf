//! The replay scanner against damaged files: truncation at every byte, bit
//! flips, zeroed tails, multi-segment directories, and arbitrary bytes.

use std::fs;
use std::path::{Path, PathBuf};

use bincode::Options;
use openmatch_aof::codec::{encode_frame_into, HEADER_LEN};
use openmatch_aof::scanner::{OutcomeKind, ScanOptions, ScanReport, Scanner, StopCause};
use openmatch_aof::segment::segment_file_name;
use openmatch_aof::types::*;
use proptest::prelude::*;

fn uuid(n: u128) -> uuid::Uuid {
    uuid::Uuid::from_u128(n)
}

fn sample_ops() -> Vec<AofOperation> {
    let ts: chrono::DateTime<chrono::Utc> = "2026-02-27T21:35:25.123456789Z".parse().unwrap();
    let order = Order {
        id: OrderId(uuid(1)),
        user_id: UserId(uuid(2)),
        market: MarketPair {
            base: "BTC".into(),
            quote: "USDT".into(),
        },
        side: OrderSide::Buy,
        order_type: OrderType::Limit,
        status: OrderStatus::Active,
        price: Some("50000.5".parse().unwrap()),
        quantity: "1.25".parse().unwrap(),
        remaining_qty: "1.25".parse().unwrap(),
        sr_id: SpendRightId(uuid(3)),
        epoch_id: Some(EpochId(7)),
        origin_node: NodeId([9; 32]),
        sequence: 3,
        created_at: ts,
        updated_at: ts,
    };
    let trade = Trade {
        id: TradeId(uuid(4)),
        epoch_id: EpochId(7),
        market: order.market.clone(),
        taker_order_id: OrderId(uuid(1)),
        taker_user_id: UserId(uuid(2)),
        maker_order_id: OrderId(uuid(5)),
        maker_user_id: UserId(uuid(6)),
        price: "50000".parse().unwrap(),
        quantity: "0.5".parse().unwrap(),
        quote_amount: "25000".parse().unwrap(),
        taker_side: OrderSide::Buy,
        matcher_node: NodeId([1; 32]),
        executed_at: ts,
    };
    vec![
        AofOperation::EpochAdvanced(EpochId(7), EpochPhase::Collect),
        AofOperation::OrderReceived(order),
        AofOperation::OrderCancelled(OrderId(uuid(8))),
        AofOperation::BufferSealed(EpochId(7), [3; 32]),
        AofOperation::TradeExecuted(trade),
        AofOperation::BalanceUpdated(
            UserId(uuid(2)),
            "USDT".into(),
            "1500.25".parse().unwrap(),
            "0".parse().unwrap(),
        ),
        AofOperation::EpochAdvanced(EpochId(8), EpochPhase::Seal),
    ]
}

/// The frames of `ops` and the end offset of each frame.
fn encode(ops: &[AofOperation]) -> (Vec<u8>, Vec<u64>) {
    let mut out = Vec::new();
    let mut ends = Vec::new();
    for op in ops {
        encode_frame_into(op, &mut out).unwrap();
        ends.push(out.len() as u64);
    }
    (out, ends)
}

fn small_chunks() -> ScanOptions {
    ScanOptions {
        chunk_size: 7,
        ..Default::default()
    }
}

fn scan_bytes(data: &[u8], opts: ScanOptions) -> (Vec<(u64, AofOperation)>, ScanReport) {
    let mut s = Scanner::from_bytes(data.to_vec(), 0, opts);
    let mut ops = Vec::new();
    s.next_batch(usize::MAX, &mut ops).unwrap();
    (ops, s.report().unwrap())
}

fn scan_path(path: &Path, start: Option<u64>) -> (Vec<(u64, AofOperation)>, ScanReport) {
    let mut s = Scanner::open(path, start, Default::default()).unwrap();
    let mut ops = Vec::new();
    s.next_batch(usize::MAX, &mut ops).unwrap();
    (ops, s.report().unwrap())
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p =
            std::env::temp_dir().join(format!("openmatch-scanner-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn truncation_at_every_byte_is_clean_or_torn_tail_never_a_wrong_op() {
    let ops = sample_ops();
    let (data, ends) = encode(&ops);
    for cut in 0..=data.len() {
        for opts in [ScanOptions::default(), small_chunks()] {
            let (got, report) = scan_bytes(&data[..cut], opts);
            let whole = ends.iter().filter(|&&e| e <= cut as u64).count();
            assert_eq!(got.len(), whole, "cut at {cut}");
            for (i, (pos, op)) in got.iter().enumerate() {
                assert_eq!(*op, ops[i]);
                assert_eq!(*pos, ends[i]);
            }
            let good_end = if whole == 0 { 0 } else { ends[whole - 1] };
            assert_eq!(report.outcome.position, good_end, "cut at {cut}");
            if good_end == cut as u64 {
                assert_eq!(report.outcome.kind, OutcomeKind::Clean, "cut at {cut}");
            } else {
                assert_eq!(report.outcome.kind, OutcomeKind::TornTail, "cut at {cut}");
                assert_eq!(report.outcome.tail_bytes, cut as u64 - good_end);
            }
        }
    }
}

#[test]
fn every_bit_flip_is_detected() {
    let ops = sample_ops();
    let (data, ends) = encode(&ops);
    let last_start = ends[ends.len() - 2] as usize;
    for byte in 0..data.len() {
        for bit in 0..8 {
            let mut bad = data.clone();
            bad[byte] ^= 1 << bit;
            let (got, report) = scan_bytes(&bad, ScanOptions::default());
            // Every op handed out is one that was written, in order.
            for (i, (_, op)) in got.iter().enumerate() {
                assert_eq!(*op, ops[i], "flip {byte}.{bit}");
            }
            // The one flip a scan cannot tell from a crash: the last frame's
            // length made longer than the file. Documented in recovery-rule.md.
            let in_last_length = (last_start..last_start + 4).contains(&byte);
            if in_last_length && report.outcome.kind == OutcomeKind::TornTail {
                assert_eq!(got.len(), ops.len() - 1);
                continue;
            }
            // A length flipped past the limit is reported as oversized (a
            // frame this reader does not accept), never as clean or torn.
            if report.outcome.kind == OutcomeKind::Oversized {
                assert_eq!(
                    report.outcome.cause.as_ref().unwrap().name(),
                    "oversized_length"
                );
                assert!(got.len() < ops.len());
                continue;
            }
            assert_eq!(
                report.outcome.kind,
                OutcomeKind::Corrupt,
                "flip of bit {bit} of byte {byte}: {}",
                report.outcome.describe()
            );
            assert!(got.len() < ops.len());
        }
    }
}

#[test]
fn a_damaged_length_that_hides_intact_frames_is_corrupt_not_torn() {
    let ops = sample_ops();
    let (mut data, ends) = encode(&ops);
    // Frame 2's length now claims past the end of the file.
    let at = ends[1] as usize;
    let claim = (data.len() - at) as u32;
    data[at..at + 4].copy_from_slice(&claim.to_le_bytes());
    let (got, report) = scan_bytes(&data, ScanOptions::default());
    assert_eq!(got.len(), 2);
    assert_eq!(report.outcome.kind, OutcomeKind::Corrupt);
    assert_eq!(
        report.outcome.cause.as_ref().unwrap().name(),
        "length_past_end"
    );
    assert_eq!(report.outcome.position, ends[1]);
}

#[test]
fn zeroed_tail_is_torn_zero_length_with_data_after_is_corrupt() {
    let (mut data, ends) = encode(&sample_ops());
    data.extend([0u8; 4096]);
    let (_, r) = scan_bytes(&data, small_chunks());
    assert_eq!(r.outcome.kind, OutcomeKind::TornTail);
    assert_eq!(r.outcome.cause, Some(StopCause::ZeroedTail));
    assert_eq!(r.outcome.position, *ends.last().unwrap());
    assert_eq!(r.outcome.tail_bytes, 4096);
    // Fewer zero bytes than a header: an ordinary torn tail.
    let (mut short, _) = encode(&sample_ops());
    short.extend([0u8; 5]);
    let (_, r) = scan_bytes(&short, Default::default());
    assert_eq!(r.outcome.kind, OutcomeKind::TornTail);
    assert_eq!(r.outcome.cause.as_ref().unwrap().name(), "torn");
    // Zeros, then anything else: not a zeroed tail.
    *data.last_mut().unwrap() = 1;
    let (_, r) = scan_bytes(&data, small_chunks());
    assert_eq!(r.outcome.kind, OutcomeKind::Corrupt);
    assert_eq!(r.outcome.cause.as_ref().unwrap().name(), "zero_length");
    assert_eq!(r.outcome.position, *ends.last().unwrap());
}

#[test]
fn oversized_length_allocates_nothing_of_that_size() {
    let (mut data, ends) = encode(&sample_ops());
    let mut huge = vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4];
    huge.extend([7u8; 64]);
    data.extend(huge);
    let opts = ScanOptions {
        max_payload: 1024,
        chunk_size: 64,
        ..Default::default()
    };
    let (got, r) = scan_bytes(&data, opts);
    assert_eq!(got.len(), sample_ops().len());
    assert_eq!(r.outcome.kind, OutcomeKind::Oversized);
    assert_eq!(r.outcome.kind.name(), "oversized");
    assert_eq!(r.outcome.cause.as_ref().unwrap().name(), "oversized_length");
    assert_eq!(r.outcome.oversized(), Some((u32::MAX, 1024)));
    assert_eq!(r.outcome.position, *ends.last().unwrap());
    assert_eq!(r.outcome.tail_bytes, 0);
}

/// A real frame longer than the limit stops the scan as oversized, naming
/// the limit and how to raise it, never as corruption; the same bytes scan
/// clean with the limit raised.
#[test]
fn a_frame_past_the_limit_is_oversized_and_reads_with_the_limit_raised() {
    let ops = sample_ops();
    let (data, ends) = encode(&ops);
    let longest = ends
        .iter()
        .scan(0u64, |prev, &end| {
            let len = end - *prev - HEADER_LEN as u64;
            *prev = end;
            Some(len)
        })
        .max()
        .unwrap() as u32;
    let limit = longest - 1;
    let opts = ScanOptions {
        max_payload: limit,
        ..Default::default()
    };
    let (got, r) = scan_bytes(&data, opts);
    assert_eq!(r.outcome.kind, OutcomeKind::Oversized);
    assert!(got.len() < ops.len());
    let message = r.outcome.describe();
    assert!(
        message.contains(&format!("oversized (limit {limit})")),
        "{message}"
    );
    assert!(message.contains("--max-payload"), "{message}");
    assert!(!message.contains("corrupt"), "{message}");
    let raised = ScanOptions {
        max_payload: longest,
        ..Default::default()
    };
    let (got, r) = scan_bytes(&data, raised);
    assert_eq!(r.outcome.kind, OutcomeKind::Clean);
    assert_eq!(got.into_iter().map(|x| x.1).collect::<Vec<_>>(), ops);
}

fn write_segments(dir: &Path, pieces: &[(u64, &[u8])]) {
    for (start, bytes) in pieces {
        fs::write(dir.join(segment_file_name(*start)), bytes).unwrap();
    }
}

#[test]
fn a_directory_is_one_log_across_segments() {
    let ops = sample_ops();
    let (a, _) = encode(&ops[..3]);
    let (b, _) = encode(&ops[3..]);
    let dir = TempDir::new("multi");
    write_segments(&dir.0, &[(0, &a), (a.len() as u64, &b)]);
    fs::write(dir.0.join("not-a-segment.aof.tmp"), b"junk").unwrap();
    let (got, r) = scan_path(&dir.0, None);
    assert_eq!(got.iter().map(|x| x.1.clone()).collect::<Vec<_>>(), ops);
    assert_eq!(r.outcome.kind, OutcomeKind::Clean);
    assert_eq!(r.outcome.position, (a.len() + b.len()) as u64);
    assert_eq!(r.stats.segments, 2);
    assert_eq!(r.stats.first_epoch, Some(7));
    assert_eq!(r.stats.last_epoch, Some(8));

    // Resuming from every position handed out gives the rest.
    for (i, (pos, _)) in got.iter().enumerate() {
        let (rest, r) = scan_path(&dir.0, Some(*pos));
        assert_eq!(rest.len(), ops.len() - i - 1);
        assert_eq!(r.outcome.kind, OutcomeKind::Clean);
    }
    // A position past the end, or before the first segment, is refused.
    assert!(Scanner::open(&dir.0, Some(10_000), Default::default()).is_err());

    // A segment file alone keeps its positions.
    let second = dir.0.join(segment_file_name(a.len() as u64));
    let (got2, r) = scan_path(&second, None);
    assert_eq!(got2[0].0, got[3].0);
    assert_eq!(r.outcome.position, (a.len() + b.len()) as u64);
}

#[test]
fn gap_overlap_and_torn_mid_log_are_corruption() {
    let ops = sample_ops();
    let (a, _) = encode(&ops[..3]);
    let (b, _) = encode(&ops[3..]);
    let n = a.len() as u64;
    for (name, second_start, cause) in [
        ("gap", n + 1, "segment_gap"),
        ("overlap", n - 1, "segment_overlap"),
    ] {
        let dir = TempDir::new(name);
        write_segments(&dir.0, &[(0, &a), (second_start, &b)]);
        let (got, r) = scan_path(&dir.0, None);
        assert_eq!(got.len(), 3, "{name}");
        assert_eq!(r.outcome.kind, OutcomeKind::Corrupt, "{name}");
        assert_eq!(r.outcome.cause.as_ref().unwrap().name(), cause);
        assert_eq!(r.outcome.position, n);
        assert_eq!(
            r.outcome.segment.as_deref(),
            Some(dir.0.join(segment_file_name(second_start)).as_path())
        );
    }
    // A torn frame at the end of a segment that is not the last.
    let dir = TempDir::new("tornmid");
    let torn = &a[..a.len() - 3];
    write_segments(&dir.0, &[(0, torn), (torn.len() as u64, &b)]);
    let (got, r) = scan_path(&dir.0, None);
    assert_eq!(got.len(), 2);
    assert_eq!(r.outcome.kind, OutcomeKind::Corrupt);
    assert_eq!(r.outcome.cause.as_ref().unwrap().name(), "torn_mid_log");
    // The same torn frame in the last segment is a torn tail.
    let dir = TempDir::new("tornlast");
    write_segments(&dir.0, &[(0, &b), (b.len() as u64, torn)]);
    let (got, r) = scan_path(&dir.0, None);
    assert_eq!(got.len(), ops.len() - 3 + 2);
    assert_eq!(r.outcome.kind, OutcomeKind::TornTail);
    let (_, ends_a) = encode(&ops[..3]);
    assert_eq!(r.outcome.offset, ends_a[1]);
    assert_eq!(r.outcome.position, b.len() as u64 + ends_a[1]);
}

#[test]
fn empty_directory_and_empty_file_are_clean() {
    let dir = TempDir::new("empty");
    let (got, r) = scan_path(&dir.0, None);
    assert!(got.is_empty());
    assert_eq!(r.outcome.kind, OutcomeKind::Clean);
    let f = dir.0.join("x.aof");
    fs::write(&f, b"").unwrap();
    let (_, r) = scan_path(&f, None);
    assert_eq!(r.outcome.kind, OutcomeKind::Clean);
    assert_eq!(r.outcome.position, 0);
}

#[test]
fn frames_only_verify_counts_like_full_verify() {
    let (data, _) = encode(&sample_ops());
    let full = Scanner::from_bytes(data.clone(), 0, Default::default())
        .verify()
        .unwrap();
    let fast = Scanner::from_bytes(data, 0, Default::default())
        .verify_frames()
        .unwrap();
    assert_eq!(full.stats.counts, fast.stats.counts);
    assert_eq!(full.stats.bytes, fast.stats.bytes);
    assert_eq!(full.outcome, fast.outcome);
    assert_eq!(fast.stats.first_epoch, None);
}

#[test]
fn a_start_past_the_log_says_where_the_log_ends_or_which_gap_it_is_in() {
    let ops = sample_ops();
    let (a, _) = encode(&ops[..3]);
    let (b, _) = encode(&ops[3..]);
    let dir = TempDir::new("past");
    let a_end = a.len() as u64;
    // A gap of 100 positions between the two segments.
    write_segments(&dir.0, &[(0, &a), (a_end + 100, &b)]);
    let end = a_end + 100 + b.len() as u64;
    let err = |at: u64| {
        Scanner::open(&dir.0, Some(at), ScanOptions::default())
            .err()
            .unwrap_or_else(|| panic!("{at} opened"))
            .to_string()
    };
    let past = err(end + 1);
    assert!(
        past.contains(&format!("the AOF ends at position {end}")),
        "{past}"
    );
    let gap = err(a_end + 50);
    assert!(
        gap.contains("lies in a gap after")
            && gap.contains(&format!("(which ends at position {a_end})")),
        "{gap}"
    );
}

#[test]
fn a_scanner_names_its_origin_and_position() {
    let ops = sample_ops();
    let (data, ends) = encode(&ops);
    let dir = TempDir::new("origin");
    let f = dir.0.join(segment_file_name(0));
    fs::write(&f, &data).unwrap();
    let mut scanner = Scanner::open(&f, None, ScanOptions::default()).unwrap();
    assert_eq!(scanner.origin(), f.display().to_string());
    assert_eq!(scanner.position(), 0);
    scanner.next_op().unwrap().unwrap();
    assert_eq!(scanner.position(), ends[0]);
    while scanner.next_op().unwrap().is_some() {}
    assert_eq!(scanner.position(), data.len() as u64);
}

#[test]
fn a_chunk_size_of_zero_reads_as_one() {
    let ops = sample_ops();
    let (data, _) = encode(&ops);
    let opts = ScanOptions {
        chunk_size: 0,
        read_ahead: false,
        ..ScanOptions::default()
    };
    let (got, r) = scan_bytes(&data, opts);
    assert_eq!(got.into_iter().map(|x| x.1).collect::<Vec<_>>(), ops);
    assert_eq!(r.outcome.kind, OutcomeKind::Clean);
}

#[test]
fn raw_frames_are_the_frames_with_their_positions_and_payloads() {
    let ops = sample_ops();
    let (data, ends) = encode(&ops);
    let mut s = Scanner::from_bytes(data.clone(), 1000, ScanOptions::default());
    let mut start = 0u64;
    for &end in &ends {
        let f = s.next_raw().unwrap().expect("a frame");
        assert_eq!((f.start, f.end), (1000 + start, 1000 + end));
        let header = openmatch_aof::codec::HEADER_LEN;
        assert_eq!(f.payload, &data[start as usize + header..end as usize]);
        start = end;
    }
    assert!(s.next_raw().unwrap().is_none());
}

#[test]
fn a_batch_appends_at_most_max_to_what_the_caller_holds() {
    let ops = sample_ops();
    let (data, _) = encode(&ops);
    let mut s = Scanner::from_bytes(data, 0, ScanOptions::default());
    let mut out = Vec::new();
    assert_eq!(s.next_batch(3, &mut out).unwrap(), 3);
    assert_eq!(s.next_batch(2, &mut out).unwrap(), 2);
    assert_eq!(out.len(), 5);
    let rest = ops.len() - 5;
    assert_eq!(s.next_batch(usize::MAX, &mut out).unwrap(), rest);
    assert_eq!(s.next_batch(usize::MAX, &mut out).unwrap(), 0);
    assert_eq!(out.into_iter().map(|x| x.1).collect::<Vec<_>>(), ops);
}

#[test]
fn a_verify_step_reads_up_to_its_byte_budget() {
    let ops = sample_ops();
    let (data, ends) = encode(&ops);
    for decode in [true, false] {
        let mut s = Scanner::from_bytes(data.clone(), 0, ScanOptions::default());
        assert!(!s.verify_step(0, decode).unwrap());
        assert_eq!(s.stats().frames, 0);
        // A budget of exactly one frame reads that frame and no more.
        assert!(!s.verify_step(ends[0], decode).unwrap());
        assert_eq!(s.stats().frames, 1);
        assert!(s.verify_step(u64::MAX, decode).unwrap());
        assert_eq!(s.stats().frames, ops.len() as u64);
    }
}

#[test]
fn a_frames_only_scan_stops_at_a_checksummed_payload_of_no_known_kind() {
    // A good checksum over a variant tag one past the last kind: what only
    // a buggy writer produces. The frames-only check reads the tag, and
    // must stop there as corrupt, not count (or index) a seventh kind.
    let (mut data, _) = encode(&sample_ops()[..2]);
    let good = data.len() as u64;
    let payload = [OPERATION_KINDS.len() as u8, 0, 0, 0, 1, 2, 3];
    data.extend((payload.len() as u32).to_le_bytes());
    data.extend(crc32fast::hash(&payload).to_le_bytes());
    data.extend(payload);
    let r = Scanner::from_bytes(data, 0, ScanOptions::default())
        .verify_frames()
        .unwrap();
    assert_eq!(r.outcome.kind, OutcomeKind::Corrupt);
    assert_eq!((r.outcome.position, r.stats.frames), (good, 2));
}

#[test]
fn stats_count_every_frame_byte_and_kind() {
    // Against the operations themselves, not one scan mode against another.
    let ops = sample_ops();
    let (data, _) = encode(&ops);
    let mut expected = [0u64; 6];
    for op in &ops {
        let i = OPERATION_KINDS
            .iter()
            .position(|&k| k == op.kind())
            .unwrap();
        expected[i] += 1;
    }
    assert!(
        expected.iter().filter(|&&n| n > 0).count() > 1,
        "a mixed log"
    );
    for frames_only in [false, true] {
        let scanner = Scanner::from_bytes(data.clone(), 0, Default::default());
        let r = if frames_only {
            scanner.verify_frames()
        } else {
            scanner.verify()
        }
        .unwrap();
        assert_eq!(r.stats.frames, ops.len() as u64);
        assert_eq!(r.stats.bytes, data.len() as u64);
        assert_eq!(r.stats.counts, expected);
        let named: Vec<(&str, u64)> = r.stats.kind_counts().collect();
        let want: Vec<(&str, u64)> = OPERATION_KINDS.iter().copied().zip(expected).collect();
        assert_eq!(named, want);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Arbitrary bytes: never a panic, never a hang; a stop is always typed
    /// and its position never past the input.
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048),
                                   chunk in 1usize..64) {
        let opts = ScanOptions { max_payload: 4096, chunk_size: chunk, ..Default::default() };
        let (ops, r) = scan_bytes(&data, opts);
        prop_assert!(r.outcome.position <= data.len() as u64);
        prop_assert_eq!(ops.len() as u64, r.stats.frames);
        if r.outcome.kind != OutcomeKind::Clean {
            prop_assert!(r.outcome.cause.is_some());
        }
    }

    /// Valid frames followed by arbitrary bytes: the valid prefix is always
    /// handed out intact, whatever follows.
    #[test]
    fn valid_prefix_survives_any_suffix(n in 0usize..7,
                                        tail in proptest::collection::vec(any::<u8>(), 0..512)) {
        let ops = sample_ops();
        let (mut data, ends) = encode(&ops[..n]);
        data.extend(&tail);
        let (got, r) = scan_bytes(&data, small_chunks());
        prop_assert!(got.len() >= n);
        for (i, (pos, op)) in got.iter().take(n).enumerate() {
            prop_assert_eq!(op, &ops[i]);
            prop_assert_eq!(*pos, ends[i]);
        }
        prop_assert!(r.outcome.position >= ends.last().copied().unwrap_or(0));
    }

    /// Valid frames, then arbitrary bytes, in a file: reading ahead on a
    /// second thread gives the same operations and report as reading on
    /// this one, whatever the chunk size and wherever the damage.
    #[test]
    fn read_ahead_agrees_on_any_file(n in 0usize..15,
                                     tail in proptest::collection::vec(any::<u8>(), 0..512),
                                     flip in proptest::option::of((any::<usize>(), 0u8..8)),
                                     chunk in 1usize..96) {
        let ops: Vec<AofOperation> = sample_ops().into_iter().cycle().take(n).collect();
        let (mut data, _) = encode(&ops);
        data.extend(&tail);
        if let (Some((at, bit)), false) = (flip, data.is_empty()) {
            let len = data.len();
            data[at % len] ^= 1 << bit;
        }
        let dir = TempDir::new(&format!("ra-prop-{chunk}-{}", data.len()));
        let path = dir.0.join("log.aof");
        fs::write(&path, &data).unwrap();
        assert_read_ahead_agrees(&path, None, chunk, "proptest");
    }

    /// The fast payload decoder agrees with the codec's on every input.
    #[test]
    fn codec_decoder_agrees_with_bincode_reference(idx in 0usize..7, flips in proptest::collection::vec((any::<usize>(), 0u8..8), 0..3),
                                      cut in any::<usize>(), extra in proptest::collection::vec(any::<u8>(), 0..3)) {
        let ops = sample_ops();
        let mut p = bincode::serialize(&ops[idx]).unwrap();
        for (at, bit) in flips {
            let n = p.len();
            p[at % n] ^= 1 << bit;
        }
        if cut % 3 == 0 {
            p.truncate(cut % (p.len() + 1));
        }
        p.extend(extra);
        // Reference: bincode's io::Read path, which counts what is left over.
        let mut rest = &p[..];
        let reference = bincode::DefaultOptions::new()
            .with_fixint_encoding()
            .allow_trailing_bytes()
            .with_limit(p.len() as u64)
            .deserialize_from::<_, openmatch_aof::AofOperation>(&mut rest);
        match reference {
            Ok(op) if rest.is_empty() => {
                prop_assert_eq!(openmatch_aof::codec::decode_payload(&p), Ok(op));
            }
            _ => prop_assert!(openmatch_aof::codec::decode_payload(&p).is_err()),
        }
    }

    /// Splicing a frame's header with random values never yields an op
    /// other than the ones written.
    #[test]
    fn random_headers_are_caught(idx in 0usize..7, len in any::<u32>(), crc in any::<u32>()) {
        let ops = sample_ops();
        let (mut data, ends) = encode(&ops);
        let at = if idx == 0 { 0 } else { ends[idx - 1] as usize };
        data[at..at + 4].copy_from_slice(&len.to_le_bytes());
        data[at + 4..at + HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
        let (got, _) = scan_bytes(&data, Default::default());
        for (i, (_, op)) in got.iter().enumerate() {
            prop_assert_eq!(op, &ops[i]);
        }
    }
}

/// The seed corpus that the Python fuzz tests mutate: each file's outcome,
/// cause and frame count as `tests/fuzz-corpus/expected.txt` records them.
#[test]
fn seed_corpus_outcomes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fuzz-corpus");
    let expected = fs::read_to_string(dir.join("expected.txt")).unwrap();
    for line in expected.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (name, outcome, cause, frames) = (f[0], f[1], f[2], f[3].parse::<u64>().unwrap());
        for opts in [ScanOptions::default(), small_chunks()] {
            let r = Scanner::open(&dir.join(name), None, opts)
                .unwrap()
                .verify()
                .unwrap();
            assert_eq!(r.outcome.kind.name(), outcome, "{name}");
            assert_eq!(
                r.outcome.cause.as_ref().map_or("-", |c| c.name()),
                cause,
                "{name}"
            );
            assert_eq!(r.stats.frames, frames, "{name}");
        }
    }
}

/// A scan of `path` to its end: every op with its position and the report,
/// then the frames-only report, and whether the first segment was read ahead
/// (`None` when the scan stopped at its first frame, which closes it).
fn scan_with(
    path: &Path,
    start: Option<u64>,
    opts: ScanOptions,
) -> (
    Vec<(u64, AofOperation)>,
    ScanReport,
    ScanReport,
    Option<bool>,
) {
    let mut s = Scanner::open(path, start, opts).unwrap();
    let mut ops = Vec::new();
    s.next_batch(1, &mut ops).unwrap();
    let ahead = s.outcome().is_none().then(|| s.is_reading_ahead());
    s.next_batch(usize::MAX, &mut ops).unwrap();
    let frames = Scanner::open(path, start, opts)
        .unwrap()
        .verify_frames()
        .unwrap();
    (ops, s.report().unwrap(), frames, ahead)
}

/// Asserts that reading ahead on a second thread changes nothing: the same
/// operations at the same positions and the same reports, at `chunk`.
fn assert_read_ahead_agrees(path: &Path, start: Option<u64>, chunk: usize, what: &str) {
    let opts = |read_ahead| ScanOptions {
        max_payload: 1 << 20,
        chunk_size: chunk,
        read_ahead,
    };
    let direct = scan_with(path, start, opts(false));
    let ahead = scan_with(path, start, opts(true));
    assert_ne!(
        direct.3,
        Some(true),
        "{what}, chunk {chunk}: read ahead though told not to"
    );
    let first_len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if !path.is_dir() && first_len > 2 * chunk as u64 && more_than_one_cpu() {
        assert_ne!(
            ahead.3,
            Some(false),
            "{what}, chunk {chunk}: not read ahead"
        );
    }
    assert_eq!(direct.0, ahead.0, "{what}, chunk {chunk}: operations");
    assert_eq!(direct.1, ahead.1, "{what}, chunk {chunk}: report");
    assert_eq!(
        direct.2, ahead.2,
        "{what}, chunk {chunk}: frames-only report"
    );
}

/// A log of the sample operations `times` over, with a frame larger than
/// the read-ahead headroom (64 KiB) in the middle when `big` is set.
fn long_log(times: usize, big: bool) -> (Vec<u8>, Vec<u64>) {
    let mut ops: Vec<AofOperation> = (0..times).flat_map(|_| sample_ops()).collect();
    if big {
        let asset = "X".repeat(100_000);
        let huge = AofOperation::BalanceUpdated(
            UserId(uuid(9)),
            asset,
            "1".parse().unwrap(),
            "0".parse().unwrap(),
        );
        ops.insert(ops.len() / 2, huge);
    }
    encode(&ops)
}

/// Damaged forms of a log: what a crash leaves and what it does not.
fn damaged(data: &[u8], ends: &[u64]) -> Vec<(&'static str, Vec<u8>)> {
    let mid = ends[ends.len() / 2] as usize;
    let mut flipped = data.to_vec();
    flipped[mid + HEADER_LEN + 5] ^= 0x10;
    let mut zeroed = data.to_vec();
    zeroed.extend(vec![0u8; 5000]);
    let mut zero_then_data = zeroed.clone();
    zero_then_data.push(1);
    let mut oversized = data[..mid].to_vec();
    oversized.extend([0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0]);
    oversized.extend(&data[mid..]);
    vec![
        ("clean", data.to_vec()),
        ("torn tail", data[..data.len() - 3].to_vec()),
        (
            "torn header",
            data[..ends[ends.len() - 2] as usize + 5].to_vec(),
        ),
        ("bit flip", flipped),
        ("zeroed tail", zeroed),
        ("zero length then data", zero_then_data),
        ("oversized length", oversized),
    ]
}

#[test]
fn read_ahead_scans_exactly_like_the_direct_read() {
    let dir = TempDir::new("read-ahead");
    let path = dir.0.join("log.aof");
    // Small frames at every chunk size from 1 byte up: frames cut at every
    // place, carried in the headroom.
    let (data, ends) = long_log(3, false);
    for (what, bytes) in damaged(&data, &ends) {
        fs::write(&path, &bytes).unwrap();
        for chunk in (1..=64).chain([127, 128, 129, 255, 256, 257, 1000]) {
            assert_read_ahead_agrees(&path, None, chunk, what);
        }
        assert_read_ahead_agrees(&path, Some(ends[4]), 5, what);
    }
    // A frame larger than the headroom takes the copying path.
    let (data, ends) = long_log(40, true);
    for (what, bytes) in damaged(&data, &ends) {
        fs::write(&path, &bytes).unwrap();
        for chunk in [997, 4096, 65_535, 65_536, 65_537, 70_000] {
            assert_read_ahead_agrees(&path, None, chunk, what);
        }
    }
}

#[test]
fn read_ahead_scans_a_directory_like_the_direct_read() {
    let (data, ends) = long_log(6, false);
    let cut = ends[ends.len() / 3] as usize;
    for (name, first, second) in [
        ("two segments", &data[..cut], &data[cut..]),
        ("torn mid-log", &data[..cut - 2], &data[cut..]),
    ] {
        let dir = TempDir::new(&format!("read-ahead-dir-{}", name.replace(' ', "-")));
        write_segments(&dir.0, &[(0, first), (first.len() as u64, second)]);
        for chunk in [1, 3, 64, 257] {
            assert_read_ahead_agrees(&dir.0, None, chunk, name);
            assert_read_ahead_agrees(&dir.0, Some(ends[2]), chunk, name);
        }
    }
}

/// A file of `long_log(times)` in a new directory, and a scan of it in
/// 512-byte chunks that has handed out its first operation.
fn started_scan(name: &str, times: usize) -> (TempDir, PathBuf, Scanner) {
    let dir = TempDir::new(name);
    let path = dir.0.join("log.aof");
    fs::write(&path, long_log(times, false).0).unwrap();
    let opts = ScanOptions {
        chunk_size: 512,
        ..Default::default()
    };
    let mut s = Scanner::open(&path, None, opts).unwrap();
    assert!(s.next_op().unwrap().is_some());
    (dir, path, s)
}

fn more_than_one_cpu() -> bool {
    std::thread::available_parallelism().map_or(1, |n| n.get()) > 1
}

#[test]
fn dropping_a_scan_midway_stops_its_reader() {
    let (_dir, path, s) = started_scan("read-ahead-drop", 200);
    assert_eq!(s.is_reading_ahead(), more_than_one_cpu());
    // Let the reader fill its ring and block on it.
    std::thread::sleep(std::time::Duration::from_millis(50));
    drop(s);
    // The reader thread held its own descriptor of the file: joined, so closed.
    let open: Vec<PathBuf> = fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .collect();
    assert!(!open.contains(&path), "{open:?}");
}

#[test]
fn one_cpu_reads_on_one_thread() {
    let reads_ahead = || started_scan("read-ahead-one-cpu", 20).2.is_reading_ahead();
    // On a thread of its own, since the affinity is the thread's.
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                if !more_than_one_cpu() {
                    return; // one CPU already: nothing to compare
                }
                let cpus = rustix::thread::sched_getaffinity(None).unwrap();
                assert!(reads_ahead());
                let first = (0..rustix::thread::CpuSet::MAX_CPU)
                    .find(|&c| cpus.is_set(c))
                    .unwrap();
                let mut one = rustix::thread::CpuSet::new();
                one.set(first);
                rustix::thread::sched_setaffinity(None, &one).unwrap();
                assert!(!reads_ahead());
            })
            .join()
            .unwrap();
    });
}
