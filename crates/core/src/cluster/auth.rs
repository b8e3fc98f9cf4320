//! Authentication of the cluster's own traffic.
//!
//! Anyone who can send a datagram to a quorum port or open a connection to
//! the server's port could otherwise speak for the cluster: a forged
//! heartbeat moves the server, a forged term is saved in every quorum
//! block. So every quorum message and every greeting (both ways) carries a
//! message authentication code: HMAC-SHA256 under the cluster key, cut to
//! its first [`MAC_LEN`] bytes. The key is 32 random bytes made at mkfs
//! and kept in the metadata device's super block, so only holders of that
//! device (the mounts, and root) can make a valid code. A message without
//! one is dropped and counted, never acted on.
//!
//! What a code covers: a quorum message's bytes before its code (fsid,
//! format version, term, type, slot, crc); a greeting's fields and the
//! greeting id of its frame, so a recorded greeting can't be replayed as a
//! newer one. Frames after the greeting carry only their crc: the code
//! keeps strangers out of the cluster, not a man in the middle of an
//! accepted connection (that needs an encrypted transport).
//!
//! Filesystems of format version 1 have no key; their members use a key of
//! zeros, which keeps the protocol one protocol but proves nothing, and
//! they say so when they mount.

use hmac::{Hmac, Mac};
use scoutfs_format::consts::{CLUSTER_KEY_LEN, MAC_LEN};
use scoutfs_format::SuperBlock;
use sha2::Sha256;

/// The secret of one filesystem's cluster traffic.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ClusterKey([u8; CLUSTER_KEY_LEN]);

impl std::fmt::Debug for ClusterKey {
    /// Never the key's bytes: it may be logged.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.is_secret() {
            true => write!(f, "ClusterKey(secret)"),
            false => write!(f, "ClusterKey(none)"),
        }
    }
}

impl ClusterKey {
    pub fn new(bytes: [u8; CLUSTER_KEY_LEN]) -> ClusterKey {
        ClusterKey(bytes)
    }

    /// The key of a filesystem, from its metadata device's super block
    /// (zeros for format version 1).
    pub fn of(sb: &SuperBlock) -> ClusterKey {
        ClusterKey(sb.cluster_key)
    }

    /// A new random key, for mkfs.
    pub fn random() -> std::io::Result<ClusterKey> {
        let mut k = [0u8; CLUSTER_KEY_LEN];
        getrandom::fill(&mut k).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(ClusterKey(k))
    }

    /// Whether the key is a secret (not version 1's zeros).
    pub fn is_secret(&self) -> bool {
        self.0 != [0; CLUSTER_KEY_LEN]
    }

    pub fn bytes(&self) -> [u8; CLUSTER_KEY_LEN] {
        self.0
    }

    /// The code of the concatenation of `parts`.
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; MAC_LEN] {
        let mut m =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        for p in parts {
            m.update(p);
        }
        let full = m.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }

    /// Whether `code` is the code of `parts`, compared in constant time.
    pub fn verify(&self, parts: &[&[u8]], code: &[u8]) -> bool {
        let want = self.mac(parts);
        code.len() == MAC_LEN && want.iter().zip(code).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_depend_on_the_key_and_every_byte() {
        let k = ClusterKey::new([7; CLUSTER_KEY_LEN]);
        let other = ClusterKey::new([8; CLUSTER_KEY_LEN]);
        let code = k.mac(&[b"abc", b"def"]);
        assert!(k.verify(&[b"abcdef"], &code), "the parts are concatenated");
        assert!(!other.verify(&[b"abcdef"], &code));
        assert!(!k.verify(&[b"abcdeg"], &code));
        assert!(!k.verify(&[b"abcdef"], &code[..MAC_LEN - 1]));
        let mut bad = code;
        bad[3] ^= 1;
        assert!(!k.verify(&[b"abcdef"], &bad));
        // RFC 4231 test case 2, first 16 bytes.
        let mut key = [0u8; CLUSTER_KEY_LEN];
        key[..4].copy_from_slice(b"Jefe");
        let rfc = ClusterKey::new(key);
        // The RFC's key is 4 bytes; HMAC pads keys with zeros to the block
        // size, so 32 bytes of "Jefe" and zeros is the same key.
        assert_eq!(
            rfc.mac(&[b"what do ya want for nothing?"]),
            [
                0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24, 0x26, 0x08, 0x95,
                0x75, 0xc7
            ]
        );
        assert!(ClusterKey::random().unwrap().is_secret());
        assert!(!ClusterKey::new([0; CLUSTER_KEY_LEN]).is_secret());
        assert_eq!(format!("{k:?}"), "ClusterKey(secret)");
    }
}
