//! The control protocol's frames on a socket, with the descriptors they
//! carry, and where a mount's socket is (see the module above).

use crate::mount::fs::archive::AttrX;
use scoutfs_format::control::*;
use scoutfs_format::Timespec;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use zerocopy::{FromBytes, IntoBytes};

/// How long the rest of a frame may take once its first byte arrived.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// The socket of the mount whose FUSE mount has device number `dev`
/// (`st_dev` of any file in it) in the run directory `run_dir`.
pub fn socket_path(run_dir: &Path, dev: u64) -> PathBuf {
    run_dir.join(format!("ctl.{}.{}", libc::major(dev), libc::minor(dev)))
}

/// Why a frame could not be read.
#[derive(Debug)]
pub enum FrameError {
    /// The peer closed the socket between frames.
    Closed,
    /// The socket failed, or the frame stopped arriving.
    Io(io::Error),
    /// The bytes are not a frame this side accepts: the errno to answer
    /// with and why.
    Bad(i32, String),
}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        FrameError::Io(e)
    }
}

/// A whole frame: its header, payload and the descriptors that came with
/// it.
pub struct Frame {
    pub hdr: ControlHeader,
    pub payload: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

/// A header with the magic and version filled in.
pub fn header(op: u16, id: u64, len: usize) -> ControlHeader {
    ControlHeader {
        magic: CONTROL_MAGIC.into(),
        version: CONTROL_VERSION.into(),
        op: op.into(),
        id: id.into(),
        len: (len as u32).into(),
        ..Default::default()
    }
}

/// Sends a header, its payload and `fds` (with the first byte) in one
/// `sendmsg`, then whatever of it that call did not take.
pub fn send_frame(
    sock: &UnixStream,
    hdr: &ControlHeader,
    payload: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(CONTROL_HEADER_LEN + payload.len());
    bytes.extend_from_slice(hdr.as_bytes());
    bytes.extend_from_slice(payload);
    let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let mut sent = sendmsg_fds(sock, &bytes, &raw)?;
    while sent < bytes.len() {
        sent += sendmsg_fds(sock, &bytes[sent..], &[])?;
    }
    Ok(())
}

fn sendmsg_fds(sock: &UnixStream, bytes: &[u8], fds: &[i32]) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE only computes a size.
    let space = if fds.is_empty() {
        0
    } else {
        unsafe { libc::CMSG_SPACE(fd_bytes as u32) as usize }
    };
    // u64 words keep the control buffer aligned for cmsghdr.
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    // SAFETY: a zeroed msghdr is valid; every pointer set below points into
    // a live local buffer of the stated length.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer holds one cmsg of `fd_bytes` data.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
            std::ptr::copy_nonoverlapping(fds.as_ptr() as *const u8, libc::CMSG_DATA(c), fd_bytes);
        }
    }
    loop {
        // SAFETY: msg describes valid buffers for the call's duration.
        let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// One `recvmsg` into `buf`, keeping any descriptors that came with it in
/// `fds`. More descriptors than [`CONTROL_FDS_MAX`] (the kernel closes what
/// does not fit) is an error.
fn recvmsg_fds(sock: &UnixStream, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let fd_bytes = CONTROL_FDS_MAX * std::mem::size_of::<i32>();
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) as usize };
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    // SAFETY: as in sendmsg_fds.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = space as _;
    let n = loop {
        // SAFETY: msg describes valid buffers for the call's duration.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    // SAFETY: the kernel filled msg's control buffer; the CMSG macros walk
    // it within msg_controllen. Each descriptor received is owned by us.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c);
                let len = (*c).cmsg_len as usize - (data as usize - c as usize);
                for i in 0..len / std::mem::size_of::<i32>() {
                    let fd = std::ptr::read_unaligned((data as *const i32).add(i));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 || fds.len() > CONTROL_FDS_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("more than {CONTROL_FDS_MAX} descriptors came with a frame"),
        ));
    }
    Ok(n)
}

/// Fills `buf`, collecting descriptors. `idle` is whether the caller waits
/// for a new frame: then a timeout before the first byte returns
/// `Ok(false)` (nothing read; ask again) and the peer closing returns
/// [`FrameError::Closed`]. Once a byte has arrived the whole must come
/// within [`FRAME_TIMEOUT`].
fn fill(
    sock: &UnixStream,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    idle: bool,
) -> Result<bool, FrameError> {
    let mut got = 0;
    let mut deadline: Option<Instant> = (!idle).then(|| Instant::now() + FRAME_TIMEOUT);
    while got < buf.len() {
        match recvmsg_fds(sock, &mut buf[got..], fds) {
            Ok(0) if got == 0 && idle => return Err(FrameError::Closed),
            Ok(0) => {
                return Err(FrameError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the socket within a frame",
                )))
            }
            Ok(n) => {
                got += n;
                deadline.get_or_insert_with(|| Instant::now() + FRAME_TIMEOUT);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                match deadline {
                    None => return Ok(false),
                    Some(d) if Instant::now() < d => continue,
                    Some(_) => {
                        return Err(FrameError::Io(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("a frame did not arrive whole within {FRAME_TIMEOUT:?}"),
                        )))
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(FrameError::Bad(libc::EINVAL, e.to_string()))
            }
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    Ok(true)
}

/// Reads one frame whose payload may be at most `max` bytes. With `idle`,
/// returns `Ok(None)` when the socket's read timeout passes before a frame
/// begins.
pub fn recv_frame(sock: &UnixStream, max: usize, idle: bool) -> Result<Option<Frame>, FrameError> {
    let mut fds = Vec::new();
    let mut hb = [0u8; CONTROL_HEADER_LEN];
    if !fill(sock, &mut hb, &mut fds, idle)? {
        return Ok(None);
    }
    let hdr = ControlHeader::read_from_bytes(&hb)
        .map_err(|_| FrameError::Bad(libc::EINVAL, "a short header".into()))?;
    if hdr.magic.get() != CONTROL_MAGIC {
        return Err(FrameError::Bad(
            libc::EINVAL,
            format!(
                "bad magic {:#010x}: not a scoutfs control frame",
                hdr.magic.get()
            ),
        ));
    }
    if hdr.version.get() != CONTROL_VERSION {
        return Err(FrameError::Bad(
            libc::EPROTONOSUPPORT,
            format!(
                "control protocol version {} is not spoken here (this side speaks {CONTROL_VERSION})",
                hdr.version.get()
            ),
        ));
    }
    let len = hdr.len.get() as usize;
    if len > max {
        return Err(FrameError::Bad(
            libc::EMSGSIZE,
            format!("a payload of {len} bytes is over the limit of {max}"),
        ));
    }
    let mut payload = vec![0u8; len];
    fill(sock, &mut payload, &mut fds, false)?;
    Ok(Some(Frame { hdr, payload, fds }))
}

/// Reads a fixed-size payload, refusing a shorter one (longer ones are a
/// later version's, their tail ignored).
pub fn payload_prefix<T: FromBytes>(op: u16, payload: &[u8]) -> Result<T, (i32, String)> {
    T::read_from_prefix(payload).map(|(t, _)| t).map_err(|_| {
        (
            libc::EINVAL,
            format!(
                "operation {op}: a payload of {} bytes is too short (at least {})",
                payload.len(),
                std::mem::size_of::<T>()
            ),
        )
    })
}

fn ts(sec: u64, nsec: u32) -> Timespec {
    Timespec::new(sec, nsec)
}

/// An inode's extended attributes as GET_ATTR_X and SET_ATTR_X carry them.
pub fn attr_x_to_wire(x: &AttrX) -> ControlAttrX {
    ControlAttrX {
        mask: x.mask.into(),
        flags: x.flags.into(),
        meta_seq: x.meta_seq.into(),
        data_seq: x.data_seq.into(),
        data_version: x.data_version.into(),
        online_blocks: x.online_blocks.into(),
        offline_blocks: x.offline_blocks.into(),
        ctime_sec: x.ctime.sec.get().into(),
        crtime_sec: x.crtime.sec.get().into(),
        ctime_nsec: x.ctime.nsec.get().into(),
        crtime_nsec: x.crtime.nsec.get().into(),
        size: x.size.into(),
        bits: x.bits.into(),
        project_id: x.project_id.into(),
    }
}

/// [`attr_x_to_wire`] read back.
pub fn attr_x_from_wire(w: &ControlAttrX) -> AttrX {
    AttrX {
        mask: w.mask.get(),
        flags: w.flags.get(),
        meta_seq: w.meta_seq.get(),
        data_seq: w.data_seq.get(),
        data_version: w.data_version.get(),
        online_blocks: w.online_blocks.get(),
        offline_blocks: w.offline_blocks.get(),
        ctime: ts(w.ctime_sec.get(), w.ctime_nsec.get()),
        crtime: ts(w.crtime_sec.get(), w.crtime_nsec.get()),
        size: w.size.get(),
        bits: w.bits.get(),
        project_id: w.project_id.get(),
    }
}
