//! A state image: the whole state in one checksummed blob.
//!
//! The database keeps the state as rows (the engine's schema, for queries)
//! and, at each snapshot, also as an image: rebuilding a large state from
//! rows through Python objects costs tens of microseconds an entity, from
//! an image under one.
//!
//! ```text
//! offset  size  field
//! 0       4     magic  b"OMSI"
//! 4       4     format version, u32 LE (2: the hot state, `docs/state.md`)
//! 8       4     CRC-32 of the body, u32 LE
//! 12      ...   body: bincode 1.3 (`bincode::serialize`) of `Snapshot`
//! ```
//!
//! A damaged image is refused, never half-loaded; recovery then falls back
//! to the rows.

use bincode::Options;

use crate::state::Snapshot;

const MAGIC: &[u8; 4] = b"OMSI";
/// The body is a `Snapshot` of this layout version.
const VERSION: u32 = crate::state::SNAPSHOT_VERSION;
const HEADER_LEN: usize = 12;

/// Why bytes are not a state image this build can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// Not an image at all.
    #[error("not a state image (bad magic or shorter than its header)")]
    NotAnImage,
    #[error("state image format {0} is not supported (this build reads {VERSION})")]
    /// An image of another format version.
    Version(u32),
    #[error("state image checksum mismatch: stored {stored:#010x}, body has {computed:#010x}")]
    /// The body is damaged.
    Checksum {
        /// The CRC-32 in the header.
        stored: u32,
        /// The CRC-32 of the body.
        computed: u32,
    },
    #[error("state image body does not decode: {0}")]
    /// The checksum matches but the body is not a snapshot.
    Undecodable(String),
}

/// The image of `snapshot`.
pub fn encode_image(snapshot: &Snapshot) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + 256 * (snapshot.orders.len() + 16));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    bincode::serialize_into(&mut out, snapshot).expect("serializing into a Vec cannot fail");
    let crc = crc32fast::hash(&out[HEADER_LEN..]);
    out[8..12].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The snapshot in `data`, or why it is not a good image.
pub fn decode_image(data: &[u8]) -> Result<Snapshot, ImageError> {
    if data.len() < HEADER_LEN || &data[0..4] != MAGIC {
        return Err(ImageError::NotAnImage);
    }
    let version = u32::from_le_bytes(data[4..8].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(ImageError::Version(version));
    }
    let stored = u32::from_le_bytes(data[8..12].try_into().expect("4 bytes"));
    let body = &data[HEADER_LEN..];
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(ImageError::Checksum { stored, computed });
    }
    // The limit bounds every length inside the body by the body's size, so a
    // damaged count cannot become an allocation.
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .reject_trailing_bytes()
        .with_limit(body.len() as u64)
        .deserialize(body)
        .map_err(|e| ImageError::Undecodable(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::State;
    use crate::types::*;

    fn state() -> State {
        let mut s = State::new();
        s.apply(
            &AofOperation::EpochAdvanced(EpochId(1), EpochPhase::Collect),
            24,
        );
        s.apply(
            &AofOperation::BalanceUpdated(
                UserId(uuid::Uuid::from_u128(7)),
                "USDT".into(),
                rust_decimal::Decimal::new(150025, 2),
                rust_decimal::Decimal::ZERO,
            ),
            90,
        );
        s
    }

    #[test]
    fn image_round_trips_to_the_same_state() {
        let s = state();
        let image = encode_image(&s.export());
        let back = State::from_snapshot(decode_image(&image).unwrap()).unwrap();
        assert_eq!(back.digest(), s.digest());
    }

    #[test]
    fn damage_is_refused() {
        let image = encode_image(&state().export());
        for at in [0, 5, 9, image.len() - 1] {
            let mut bad = image.clone();
            bad[at] ^= 1;
            assert!(decode_image(&bad).is_err(), "flip at {at}");
        }
        assert_eq!(decode_image(&image[..11]), Err(ImageError::NotAnImage));
        assert!(decode_image(&image[..image.len() - 1]).is_err());
    }
}
