//! Writes the golden interop fixtures the way the OpenMatch engine writes its
//! AOF (plain `bincode::serialize` + `crc32fast`), with their JSON form:
//!
//!   cargo run -p openmatch-aof --example write_golden -- tests/fixtures
//!
//! Output: `golden.aof` (all frames), `golden.jsonl` (`serde_json` of each
//! operation, one per line). The Python tests read both.

#[path = "support/golden_ops.rs"]
mod golden_ops;

use std::io::Write;
use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("tests/fixtures"));
    std::fs::create_dir_all(&dir)?;
    let ops = golden_ops::golden_ops();
    let mut aof = Vec::new();
    let mut jsonl = String::new();
    for op in &ops {
        aof.extend(golden_ops::engine_frame(op));
        jsonl.push_str(&serde_json::to_string(op).expect("json"));
        jsonl.push('\n');
    }
    std::fs::File::create(dir.join("golden.aof"))?.write_all(&aof)?;
    std::fs::File::create(dir.join("golden.jsonl"))?.write_all(jsonl.as_bytes())?;
    println!(
        "wrote {} operations ({} bytes) to {}",
        ops.len(),
        aof.len(),
        dir.display()
    );
    Ok(())
}
