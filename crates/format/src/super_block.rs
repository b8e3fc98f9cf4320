//! The super block (a 4 KiB block at byte 64 KiB of both devices) and the
//! quorum configuration it carries.

use crate::alloc::{AllocListHead, AllocRoot};
use crate::block::{read_prefix, BlockHeader};
use crate::btree::BtreeRoot;
use crate::consts::*;
use crate::error::{check_zero, DecodeError, Result};
use zerocopy::little_endian::{U16, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

pub const AF_NONE: u16 = 0;
pub const AF_IPV4: u16 = 1;
pub const AF_IPV6: u16 = 2;

/// An IPv4 or IPv6 address and port; family NONE marks an unused slot.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C)]
pub struct InetAddr {
    pub family: U16,
    pub port: U16,
    pub pad: [u8; 4],
    /// IPv4 in the first four bytes (network order), IPv6 in all sixteen.
    pub addr: [u8; 16],
    pub pad2: [u8; 8],
}

impl InetAddr {
    pub fn from_socket(sa: std::net::SocketAddr) -> Self {
        let mut a = InetAddr {
            port: sa.port().into(),
            ..Default::default()
        };
        match sa.ip() {
            std::net::IpAddr::V4(v4) => {
                a.family = AF_IPV4.into();
                a.addr[..4].copy_from_slice(&v4.octets());
            }
            std::net::IpAddr::V6(v6) => {
                a.family = AF_IPV6.into();
                a.addr.copy_from_slice(&v6.octets());
            }
        }
        a
    }

    /// The socket address, or None for an unused slot.
    pub fn to_socket(&self) -> Option<std::net::SocketAddr> {
        let port = self.port.get();
        match self.family.get() {
            AF_IPV4 => {
                let ip =
                    std::net::Ipv4Addr::new(self.addr[0], self.addr[1], self.addr[2], self.addr[3]);
                Some(std::net::SocketAddr::new(ip.into(), port))
            }
            AF_IPV6 => Some(std::net::SocketAddr::new(
                std::net::Ipv6Addr::from(self.addr).into(),
                port,
            )),
            _ => None,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let what = "inet addr";
        check_zero(what, 4, &self.pad)?;
        check_zero(what, 24, &self.pad2)?;
        match self.family.get() {
            AF_NONE => check_zero(what, 2, &self.port.get().to_le_bytes())
                .and_then(|_| check_zero(what, 8, &self.addr)),
            AF_IPV4 => check_zero(what, 12, &self.addr[4..]),
            AF_IPV6 => Ok(()),
            f => Err(DecodeError::Field {
                what,
                field: "family",
                value: f as u64,
            }),
        }
    }
}

/// The quorum slots chosen at mkfs.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct QuorumConfig {
    pub version: U64,
    pub slots: [InetAddr; QUORUM_MAX_SLOTS],
}

impl Default for QuorumConfig {
    fn default() -> Self {
        QuorumConfig {
            version: 0.into(),
            slots: [InetAddr::default(); QUORUM_MAX_SLOTS],
        }
    }
}

/// Persistent volume options; bit N of `set_bits` says the Nth field is set.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct VolumeOptions {
    pub set_bits: U64,
    pub data_alloc_zone_blocks: U64,
    pub future: [U64; 63],
}

pub const VOLOPT_DATA_ALLOC_ZONE_BLOCKS_BIT: u64 = 1;

impl Default for VolumeOptions {
    fn default() -> Self {
        VolumeOptions {
            set_bits: 0.into(),
            data_alloc_zone_blocks: 0.into(),
            future: [U64::ZERO; 63],
        }
    }
}

/// The super block. The metadata device's copy is the filesystem's root of
/// trust; the data device's copy (without `FLAG_IS_META_BDEV`) proves that
/// the two devices belong together.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct SuperBlock {
    pub hdr: BlockHeader,
    pub id: U64,
    pub fmt_vers: U64,
    pub flags: U64,
    pub uuid: [u8; 16],
    /// The server's sequence counter: trans seqs, write seqs and more.
    pub seq: U64,
    pub next_ino: U64,
    pub inode_count: U64,
    /// Size of the metadata device in LG blocks.
    pub total_meta_blocks: U64,
    /// Size of the data device in SM blocks.
    pub total_data_blocks: U64,
    pub qconf: QuorumConfig,
    /// Free metadata extents: `[0]` "avail" and `[1]` "freed", swapped when low.
    pub meta_alloc: [AllocRoot; 2],
    pub data_alloc: AllocRoot,
    /// The server commit's metadata lists: `[0]` in use, `[1]` being refilled.
    pub server_meta_avail: [AllocListHead; 2],
    pub server_meta_freed: [AllocListHead; 2],
    pub fs_root: BtreeRoot,
    pub logs_root: BtreeRoot,
    pub log_merge: BtreeRoot,
    pub mounted_clients: BtreeRoot,
    pub srch_root: BtreeRoot,
    pub volopt: VolumeOptions,
    /// The secret that quorum messages and greetings are authenticated
    /// with, made at mkfs (format version 2 on). Only the metadata
    /// device's copy holds it; the data device's copy has zeros, so only
    /// holders of the metadata device can speak for the cluster. Zeros in
    /// version 1 (the bytes were the zero tail of the block then).
    pub cluster_key: [u8; CLUSTER_KEY_LEN],
}

pub const SUPER_BLOCK_SIZE: usize = core::mem::size_of::<SuperBlock>();

impl SuperBlock {
    /// A zeroed super block, filled in by mkfs.
    pub fn zeroed() -> Self {
        // All-zero bytes are a valid SuperBlock (every field is an integer).
        <SuperBlock as FromZeros>::new_zeroed()
    }

    /// Decodes and validates the fields of a super block. The header (magic,
    /// fsid, blkno, crc) is checked by the caller, which knows what to expect.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let what = "super block";
        if bytes.len() != BLOCK_SM_SIZE {
            return Err(DecodeError::Length {
                what,
                have: bytes.len(),
                expected: "4096".into(),
            });
        }
        let sb: SuperBlock = read_prefix(what, bytes)?;
        check_zero(what, SUPER_BLOCK_SIZE, &bytes[SUPER_BLOCK_SIZE..])?;
        sb.validate()?;
        Ok(sb)
    }

    pub fn validate(&self) -> Result<()> {
        let what = "super block";
        let field = |field, value| Err(DecodeError::Field { what, field, value });
        let v = self.fmt_vers.get();
        if !(FORMAT_VERSION_MIN..=FORMAT_VERSION_MAX).contains(&v) {
            return field("fmt_vers", v);
        }
        if self.flags.get() & !FLAG_IS_META_BDEV != 0 {
            return field("flags", self.flags.get());
        }
        if self.total_meta_blocks.get() <= META_DEV_START_BLKNO {
            return field("total_meta_blocks", self.total_meta_blocks.get());
        }
        if self.total_data_blocks.get() <= DATA_DEV_START_BLKNO {
            return field("total_data_blocks", self.total_data_blocks.get());
        }
        for s in &self.qconf.slots {
            s.validate()?;
        }
        for a in self.meta_alloc.iter().chain([&self.data_alloc]) {
            a.validate()?;
        }
        for h in self.server_meta_avail.iter().chain(&self.server_meta_freed) {
            h.validate()?;
        }
        for r in [
            &self.fs_root,
            &self.logs_root,
            &self.log_merge,
            &self.mounted_clients,
        ] {
            r.validate()?;
        }
        self.srch_root.validate()?;
        let bits = self.volopt.set_bits.get();
        if bits & !VOLOPT_DATA_ALLOC_ZONE_BLOCKS_BIT != 0 {
            return field("volopt set_bits", bits);
        }
        if bits == 0 && self.volopt.data_alloc_zone_blocks.get() != 0 {
            return field(
                "volopt data_alloc_zone_blocks",
                self.volopt.data_alloc_zone_blocks.get(),
            );
        }
        if let Some(i) = self.volopt.future.iter().position(|v| v.get() != 0) {
            return field("volopt reserved", i as u64);
        }
        // Version 1 has no key; from version 2 the metadata device's copy
        // must hold one and the data device's none.
        let keyed = self.cluster_key != [0; CLUSTER_KEY_LEN];
        let meta = self.flags.get() & FLAG_IS_META_BDEV != 0;
        if keyed != (meta && v >= FORMAT_VERSION_CLUSTER_KEY) {
            return field("cluster_key", keyed as u64);
        }
        Ok(())
    }

    /// Whether this filesystem's cluster traffic is authenticated with a
    /// secret key (format version 2 on).
    pub fn has_cluster_key(&self) -> bool {
        self.cluster_key != [0; CLUSTER_KEY_LEN]
    }

    /// The quorum slots that are configured, with their addresses.
    pub fn quorum_slots(&self) -> impl Iterator<Item = (usize, std::net::SocketAddr)> + '_ {
        self.qconf
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.to_socket().map(|s| (i, s)))
    }
}
