//! The SHA-256 of an object's bytes, computed while its parts are handed to the upload, and
//! carried across processes in checkpoints.
//!
//! The hash state after a part is written down with the upload
//! ([`UploadState::sha256`](super::UploadState::sha256)) as the SHA-256 core's own serialised state (the eight
//! state words, the block count and the unhashed tail), so a resumed run goes on hashing
//! where the checkpoint's parts end and the digest at the end is that of the whole object.

use base64::Engine as _;
use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::{Digest as _, Sha256};

/// A running SHA-256 over an object's bytes.
#[derive(Clone, Default)]
pub struct StreamDigest(Sha256);

impl std::fmt::Debug for StreamDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamDigest")
    }
}

impl StreamDigest {
    /// Hashes `bytes`, next.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The state so far, as text (base64) for a checkpoint.
    pub fn save(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0.serialize())
    }

    /// The state [`save`](Self::save) wrote; `None` if `saved` is not one.
    pub fn restore(saved: &str) -> Option<Self> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(saved)
            .ok()?;
        let state = SerializedState::<Sha256>::try_from(bytes.as_slice()).ok()?;
        Sha256::deserialize(&state).ok().map(StreamDigest)
    }

    /// The digest of everything hashed, as 64 lowercase hex digits.
    pub fn hex(self) -> String {
        hex(&self.0.finalize())
    }
}

/// `bytes` as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_saved_midway_and_restored_ends_as_one_over_everything() {
        let data: Vec<u8> = (0..200_003u32).map(|i| (i * 7 % 251) as u8).collect();
        let whole = hex(&Sha256::digest(&data));
        // Cuts inside and at the edge of 64-byte blocks.
        for cut in [0, 1, 63, 64, 65, 100_000, 200_003] {
            let mut first = StreamDigest::default();
            first.update(&data[..cut]);
            let saved = first.save();
            let mut second = StreamDigest::restore(&saved).unwrap();
            second.update(&data[cut..]);
            assert_eq!(second.hex(), whole, "cut at {cut}");
        }
    }

    #[test]
    fn known_answer_and_garbage_refused() {
        assert_eq!(
            StreamDigest::default().hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(StreamDigest::restore("not base64!").is_none());
        assert!(StreamDigest::restore("AAAA").is_none());
    }
}
