//! Interop with the other side: the AOF written from Python must be exactly
//! what the engine writes, and the checked-in golden file must still be what
//! the engine's plain `bincode` + `crc32fast` produce.

#[path = "../examples/support/golden_ops.rs"]
mod golden_ops;

use openmatch_aof::{decode_all, encode_frame, DEFAULT_MAX_PAYLOAD_LEN};
use std::path::PathBuf;

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn engine_bytes() -> Vec<u8> {
    golden_ops::golden_ops()
        .iter()
        .flat_map(golden_ops::engine_frame)
        .collect()
}

#[test]
fn python_written_file_is_what_the_engine_writes() {
    let python = fixture("python_written.aof");
    assert_eq!(python, engine_bytes());
    assert_eq!(
        decode_all(&python, DEFAULT_MAX_PAYLOAD_LEN).unwrap(),
        golden_ops::golden_ops()
    );
}

#[test]
fn checked_in_golden_file_is_current() {
    assert_eq!(fixture("golden.aof"), engine_bytes());
    let jsonl = String::from_utf8(fixture("golden.jsonl")).unwrap();
    let expected: Vec<String> = golden_ops::golden_ops()
        .iter()
        .map(|op| serde_json::to_string(op).unwrap())
        .collect();
    assert_eq!(jsonl.lines().collect::<Vec<_>>(), expected);
}

#[test]
fn own_encoder_matches_plain_bincode() {
    for op in golden_ops::golden_ops() {
        assert_eq!(
            encode_frame(&op).unwrap(),
            golden_ops::engine_frame(&op),
            "{op:?}"
        );
    }
}
