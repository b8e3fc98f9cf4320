//! POSIX ACLs in their xattr form, and the rules a filesystem keeps when
//! the kernel enforces them (FUSE_POSIX_ACL): the kernel checks access
//! from the ACLs it reads through getxattr, and leaves to us what a local
//! filesystem does itself:
//! - a new inode in a directory with a default ACL inherits it: the access
//!   ACL is the default ACL masked by the create mode (and the mode by it),
//!   a new directory also keeps the default ACL, and the umask is not
//!   applied; without a default ACL the umask is;
//! - setting an access ACL sets the mode's permission bits from it, and an
//!   ACL that says no more than the mode is not stored;
//! - chmod rewrites the access ACL's owner, mask (or group) and other
//!   entries from the new mode.
//!
//! The xattr form: a little-endian u32 version (2), then entries of
//! {tag u16, perm u16, id u32}, ordered USER_OBJ, USER (by id), GROUP_OBJ,
//! GROUP (by id), MASK, OTHER.

use super::{FsError, FsResult, EINVAL};

pub const ACCESS: &[u8] = b"system.posix_acl_access";
pub const DEFAULT: &[u8] = b"system.posix_acl_default";

const VERSION: u32 = 2;
const HEADER: usize = 4;
const ENTRY: usize = 8;

pub const USER_OBJ: u16 = 0x01;
pub const USER: u16 = 0x02;
pub const GROUP_OBJ: u16 = 0x04;
pub const GROUP: u16 = 0x08;
pub const MASK: u16 = 0x10;
pub const OTHER: u16 = 0x20;

/// One entry: a tag, permission bits (rwx = 4|2|1) and, for USER and
/// GROUP, the id it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub tag: u16,
    pub perm: u16,
    pub id: u32,
}

/// A valid ACL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acl(pub Vec<Entry>);

/// The rank of a tag in the required order.
fn rank(tag: u16) -> Option<u8> {
    Some(match tag {
        USER_OBJ => 0,
        USER => 1,
        GROUP_OBJ => 2,
        GROUP => 3,
        MASK => 4,
        OTHER => 5,
        _ => return None,
    })
}

impl Acl {
    /// Parses and validates an ACL xattr value: EINVAL for anything a
    /// valid ACL can't be (bad version or length, unknown tag or
    /// permission bits, entries out of order or repeated, a missing owner,
    /// group or other entry, named entries without a mask).
    pub fn parse(v: &[u8]) -> FsResult<Acl> {
        if v.len() < HEADER || !(v.len() - HEADER).is_multiple_of(ENTRY) {
            return Err(EINVAL);
        }
        if u32::from_le_bytes(v[..4].try_into().unwrap()) != VERSION {
            return Err(EINVAL);
        }
        let mut out = Vec::with_capacity((v.len() - HEADER) / ENTRY);
        let mut last: Option<(u8, u32)> = None;
        let mut counts = [0usize; 6];
        for e in v[HEADER..].chunks_exact(ENTRY) {
            let tag = u16::from_le_bytes([e[0], e[1]]);
            let perm = u16::from_le_bytes([e[2], e[3]]);
            let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            let r = rank(tag).ok_or(EINVAL)?;
            if perm & !7 != 0 {
                return Err(EINVAL);
            }
            let named = tag == USER || tag == GROUP;
            let order = (r, if named { id } else { 0 });
            if let Some(prev) = last {
                // Named entries ascend by id; every other tag appears once.
                if order <= prev {
                    return Err(EINVAL);
                }
            }
            last = Some(order);
            counts[r as usize] += 1;
            out.push(Entry {
                tag,
                perm,
                id: if named { id } else { u32::MAX },
            });
        }
        let [uo, u, go, g, m, o] = counts;
        if uo != 1 || go != 1 || o != 1 || ((u + g) > 0 && m != 1) {
            return Err(EINVAL);
        }
        Ok(Acl(out))
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER + ENTRY * self.0.len());
        v.extend_from_slice(&VERSION.to_le_bytes());
        for e in &self.0 {
            v.extend_from_slice(&e.tag.to_le_bytes());
            v.extend_from_slice(&e.perm.to_le_bytes());
            v.extend_from_slice(&e.id.to_le_bytes());
        }
        v
    }

    fn find(&mut self, tag: u16) -> Option<&mut Entry> {
        self.0.iter_mut().find(|e| e.tag == tag)
    }

    /// Masks a default ACL, inherited as a new inode's access ACL, by the
    /// create `mode`, and the mode's permission bits by the ACL. Returns
    /// the new mode and whether the ACL says more than the mode (and so
    /// must be stored).
    pub fn create_masq(&mut self, mode: u32) -> (u32, bool) {
        let mut m = mode & 0o777;
        let mut extended = false;
        for e in self.0.iter_mut() {
            match e.tag {
                USER_OBJ => {
                    e.perm &= ((m >> 6) & 7) as u16;
                    m = (m & !0o700) | ((e.perm as u32) << 6);
                }
                OTHER => {
                    e.perm &= (m & 7) as u16;
                    m = (m & !0o007) | e.perm as u32;
                }
                USER | GROUP | MASK => extended = true,
                _ => {}
            }
        }
        // The group class: the mask when there is one, else the group.
        let class = if self.0.iter().any(|e| e.tag == MASK) {
            MASK
        } else {
            GROUP_OBJ
        };
        if let Some(e) = self.find(class) {
            e.perm &= ((m >> 3) & 7) as u16;
            m = (m & !0o070) | ((e.perm as u32) << 3);
        }
        ((mode & !0o777) | m, extended)
    }

    /// The permission bits an access ACL gives the mode (owner, group
    /// class, other), and whether the ACL is fully expressed by them.
    pub fn mode_bits(&self) -> (u32, bool) {
        let mut m = 0;
        let mut equiv = true;
        let mut mask = None;
        for e in &self.0 {
            let p = e.perm as u32;
            match e.tag {
                USER_OBJ => m |= p << 6,
                GROUP_OBJ => m |= p << 3,
                OTHER => m |= p,
                MASK => {
                    mask = Some(p);
                    equiv = false;
                }
                _ => equiv = false,
            }
        }
        if let Some(p) = mask {
            m = (m & !0o070) | (p << 3);
        }
        (m, equiv)
    }

    /// Rewrites the owner, group class and other entries from a new mode
    /// (chmod of an inode with an access ACL).
    pub fn chmod(&mut self, mode: u32) {
        let class = if self.0.iter().any(|e| e.tag == MASK) {
            MASK
        } else {
            GROUP_OBJ
        };
        for e in self.0.iter_mut() {
            match e.tag {
                USER_OBJ => e.perm = ((mode >> 6) & 7) as u16,
                OTHER => e.perm = (mode & 7) as u16,
                t if t == class => e.perm = ((mode >> 3) & 7) as u16,
                _ => {}
            }
        }
    }
}

/// ACL xattrs to store with a new inode: (name, value).
pub type AclXattrs = Vec<(&'static [u8], Vec<u8>)>;

/// What a new inode gets from its parent's default ACL (`None` when the
/// parent has none): its mode, and the ACL xattrs to store with it.
pub fn inherit(
    parent_default: Option<&[u8]>,
    mode: u32,
    umask: u32,
    is_dir: bool,
) -> Result<(u32, AclXattrs), FsError> {
    let Some(raw) = parent_default else {
        return Ok((mode & !(umask & 0o777), Vec::new()));
    };
    let default = Acl::parse(raw)?;
    let mut access = default.clone();
    let (mode, extended) = access.create_masq(mode);
    let mut xattrs = Vec::new();
    if extended {
        xattrs.push((ACCESS, access.encode()));
    }
    if is_dir {
        xattrs.push((DEFAULT, default.encode()));
    }
    Ok((mode, xattrs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(e: &[(u16, u16, u32)]) -> Acl {
        Acl(e
            .iter()
            .map(|&(tag, perm, id)| Entry { tag, perm, id })
            .collect())
    }

    const X: u32 = u32::MAX;

    #[test]
    fn parse_accepts_valid_and_refuses_invalid() {
        let a = acl(&[
            (USER_OBJ, 7, X),
            (USER, 5, 1000),
            (USER, 4, 1001),
            (GROUP_OBJ, 5, X),
            (MASK, 5, X),
            (OTHER, 0, X),
        ]);
        assert_eq!(Acl::parse(&a.encode()).unwrap(), a);
        let bad = [
            // No mask with a named user.
            acl(&[
                (USER_OBJ, 7, X),
                (USER, 5, 3),
                (GROUP_OBJ, 5, X),
                (OTHER, 0, X),
            ]),
            // Named users out of order.
            acl(&[
                (USER_OBJ, 7, X),
                (USER, 5, 9),
                (USER, 5, 3),
                (GROUP_OBJ, 5, X),
                (MASK, 7, X),
                (OTHER, 0, X),
            ]),
            // No other entry.
            acl(&[(USER_OBJ, 7, X), (GROUP_OBJ, 5, X)]),
            // Bad permission bits.
            acl(&[(USER_OBJ, 8, X), (GROUP_OBJ, 5, X), (OTHER, 0, X)]),
            // Two owners.
            acl(&[
                (USER_OBJ, 7, X),
                (USER_OBJ, 7, X),
                (GROUP_OBJ, 5, X),
                (OTHER, 0, X),
            ]),
        ];
        for b in bad {
            assert_eq!(Acl::parse(&b.encode()), Err(EINVAL), "{b:?}");
        }
        assert_eq!(Acl::parse(&[2, 0, 0]), Err(EINVAL));
        assert_eq!(Acl::parse(&[1, 0, 0, 0]), Err(EINVAL), "version");
        let mut odd = a.encode();
        odd.push(0);
        assert_eq!(Acl::parse(&odd), Err(EINVAL));
    }

    #[test]
    fn inheritance_masks_acl_and_mode_like_a_local_filesystem() {
        // Default ACL: owner rwx, user 1000 rwx, group r-x, mask rwx, other ---.
        let d = acl(&[
            (USER_OBJ, 7, X),
            (USER, 7, 1000),
            (GROUP_OBJ, 5, X),
            (MASK, 7, X),
            (OTHER, 0, X),
        ])
        .encode();
        // A file created 0666 (umask ignored): the mask becomes rw-.
        let (mode, x) = inherit(Some(&d), 0o100666, 0o022, false).unwrap();
        assert_eq!(mode, 0o100660);
        assert_eq!(x.len(), 1);
        assert_eq!(x[0].0, ACCESS);
        let a = Acl::parse(&x[0].1).unwrap();
        assert_eq!(a.mode_bits(), (0o660, false));
        // A directory keeps the default ACL too.
        let (mode, x) = inherit(Some(&d), 0o40777, 0o022, true).unwrap();
        assert_eq!(mode, 0o40770);
        assert_eq!(x.iter().map(|x| x.0).collect::<Vec<_>>(), [ACCESS, DEFAULT]);
        assert_eq!(x[1].1, d);
        // A minimal default ACL gives no access ACL, only the mode.
        let m = acl(&[(USER_OBJ, 7, X), (GROUP_OBJ, 0, X), (OTHER, 0, X)]).encode();
        let (mode, x) = inherit(Some(&m), 0o100644, 0o022, false).unwrap();
        assert_eq!((mode, x.len()), (0o100600, 0));
        // No default ACL: the umask.
        assert_eq!(
            inherit(None, 0o100666, 0o027, false).unwrap(),
            (0o100640, vec![])
        );
    }

    #[test]
    fn chmod_and_mode_bits_follow_the_group_class() {
        let mut a = acl(&[
            (USER_OBJ, 7, X),
            (USER, 7, 5),
            (GROUP_OBJ, 7, X),
            (MASK, 7, X),
            (OTHER, 7, X),
        ]);
        a.chmod(0o751);
        assert_eq!(a.mode_bits(), (0o751, false));
        // The group entry is untouched; the mask took the group bits.
        assert_eq!(a.0[2].perm, 7);
        let mut b = acl(&[(USER_OBJ, 6, X), (GROUP_OBJ, 4, X), (OTHER, 4, X)]);
        assert_eq!(b.mode_bits(), (0o644, true));
        b.chmod(0o600);
        assert_eq!(b.mode_bits(), (0o600, true));
    }
}
