//! openmatch-aof: the durable core of openmatch-persistence, free of Python.
//!
//! What the OpenMatch Rust engine itself could link: its types ([`types`]),
//! the frame codec ([`codec`]), the durable segment writer and the replay
//! scanner. The PyO3 binding lives in a separate crate.

#![warn(missing_docs)]

pub mod backup;
pub mod codec;
pub mod cut;
pub mod decimal_sign;
pub mod dir_fsync;
pub mod journal;
mod read_ahead;
pub mod repair;
pub mod rfc3339;
pub mod scanner;
pub mod segment;
pub mod spare;
pub mod state;
pub mod state_image;
pub mod store_fit;
pub mod tail;
pub mod types;
pub mod writer;

pub use codec::{
    decode_all, decode_frame, decode_one, encode_batch, encode_frame, encode_frame_into,
    EncodeError, FrameError, FrameErrorKind, FrameHeader, DEFAULT_MAX_PAYLOAD_LEN, HEADER_LEN,
};
pub use journal::{Journal, JournalError};
pub use scanner::{ScanOptions, Scanner};
pub use types::*;
pub use writer::{AofWriter, FsyncPolicy, WriterError, WriterOptions};
