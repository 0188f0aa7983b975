//! A hostile client against a usersim server: the descriptors it is given, the socket's
//! framing, what it may make the server hold. The unprivileged cases run as `nobody` in a
//! child process when the tests run as root, and say they were skipped otherwise.

use std::io::{IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use ringmap_core::Capacity;
use ringmap_core::abi::Request;
use ringmap_usersim::protocol::{MAP_FDS, ReplyHeader, RequestHeader};
use ringmap_usersim::{Server, ServerConfig};
use rustix::fs::{Mode, OFlags};
use rustix::mm::{MapFlags, MprotectFlags, ProtFlags};
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};

const NOBODY: u32 = 65534;

fn socket_path(name: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "ringmap-hostile-{name}-{}-{}.sock",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

fn server(name: &str, capacity: u64) -> Server {
    Server::start(ServerConfig {
        socket_path: socket_path(name),
        capacity: Capacity::new(capacity).unwrap(),
        ..ServerConfig::default()
    })
    .unwrap()
}

/// A client speaking the wire protocol by hand.
struct Raw {
    stream: UnixStream,
}

impl Raw {
    fn connect(server: &Server) -> Raw {
        let stream = UnixStream::connect(server.socket_path()).unwrap();
        Raw { stream }
    }

    fn send(&mut self, header: RequestHeader, input: &[u8]) {
        self.stream.write_all(&header.to_bytes()).unwrap();
        self.stream.write_all(input).unwrap();
    }

    fn request(&mut self, code: Request, id: u64, input: &[u8], output_len: u32) {
        self.send(
            RequestHeader {
                code: code as u32,
                input_len: input.len() as u32,
                id,
                output_len,
                reserved: 0,
            },
            input,
        );
    }

    /// One reply: header, body, descriptors.
    fn receive(&mut self) -> (ReplyHeader, Vec<u8>, Vec<OwnedFd>) {
        let mut fds = Vec::new();
        let mut header = [0u8; ReplyHeader::SIZE];
        self.receive_exact(&mut header, &mut fds);
        let header = ReplyHeader::from_bytes(&header);
        let mut body = vec![0u8; header.len as usize];
        self.receive_exact(&mut body, &mut fds);
        (header, body, fds)
    }

    fn receive_exact(&mut self, buf: &mut [u8], fds: &mut Vec<OwnedFd>) {
        let mut got = 0;
        while got < buf.len() {
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAP_FDS))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let received = rustix::net::recvmsg(
                &self.stream,
                &mut [IoSliceMut::new(&mut buf[got..])],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            )
            .unwrap();
            for message in control.drain() {
                if let RecvAncillaryMessage::ScmRights(rights) = message {
                    fds.extend(rights);
                }
            }
            assert!(received.bytes > 0, "the server closed the connection");
            got += received.bytes;
        }
    }
}

fn empty_request() -> Vec<u8> {
    8u32.to_le_bytes().into_iter().chain([0; 4]).collect()
}

/// The ways a client might get write access to a read-only descriptor of the ring: each
/// must fail. `Err` names the one that worked.
fn try_to_write(fd: &OwnedFd, len: usize) -> Result<(), String> {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let reopened = rustix::fs::open(path.as_str(), OFlags::RDWR, Mode::empty());
    let mut candidates = vec![("the descriptor itself", fd.try_clone().unwrap())];
    if let Ok(rw) = reopened {
        candidates.push(("a reopen with O_RDWR", rw));
    }
    for (what, fd) in &candidates {
        // SAFETY: a new shared mapping at an address the kernel picks; unmapped at once.
        if let Ok(at) = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                0,
            )
        } {
            // SAFETY: the mapping just made.
            let _ = unsafe { rustix::mm::munmap(at, len) };
            return Err(format!("{what}: mmap(PROT_WRITE, MAP_SHARED) worked"));
        }
        if rustix::io::pwrite(fd, b"forged", 0).is_ok() {
            return Err(format!("{what}: pwrite worked"));
        }
        if rustix::io::write(fd, b"forged").is_ok() {
            return Err(format!("{what}: write worked"));
        }
        // SAFETY: a new shared read-only mapping at an address the kernel picks.
        let at = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ,
                MapFlags::SHARED,
                fd,
                0,
            )
        }
        .map_err(|e| format!("{what}: a read-only mapping failed: {e}"))?;
        // SAFETY: the mapping just made, nothing references it.
        let upgraded =
            unsafe { rustix::mm::mprotect(at, len, MprotectFlags::READ | MprotectFlags::WRITE) };
        // SAFETY: as above.
        let _ = unsafe { rustix::mm::munmap(at, len) };
        if upgraded.is_ok() {
            return Err(format!(
                "{what}: mprotect(PROT_WRITE) of a read-only mapping worked"
            ));
        }
        if rustix::fs::ftruncate(fd, 0).is_ok() {
            return Err(format!("{what}: ftruncate worked"));
        }
    }
    Ok(())
}

/// The child's half of the unprivileged cases: the descriptor is its standard input.
fn as_child() -> bool {
    let Ok(len) = std::env::var("RINGMAP_HOSTILE_CHILD_LEN") else {
        return false;
    };
    let fd = std::io::stdin().as_fd().try_clone_to_owned().unwrap();
    if let Err(what) = try_to_write(&fd, len.parse().unwrap()) {
        eprintln!("as uid {}: {what}", rustix::process::getuid().as_raw());
        std::process::exit(1);
    }
    true
}

fn run_as_nobody(test: &str, fd: OwnedFd, len: usize) -> Option<bool> {
    if !rustix::process::getuid().is_root() {
        println!("skipped: the unprivileged case of {test} needs root to run as nobody");
        return None;
    }
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env("RINGMAP_HOSTILE_CHILD_LEN", len.to_string())
        .stdin(Stdio::from(fd))
        .uid(NOBODY)
        .gid(NOBODY)
        .status()
        .unwrap();
    Some(status.success())
}

#[test]
fn read_only_descriptors_stay_read_only() {
    if as_child() {
        return;
    }
    let capacity = 1 << 16;
    let server = server("readonly", capacity);
    let mut raw = Raw::connect(&server);
    raw.request(Request::Map, 1, &empty_request(), 4096);
    let (header, _, fds) = raw.receive();
    assert_eq!(header.status, 0);
    assert_eq!(fds.len(), MAP_FDS);
    let lens = [ringmap_core::PAGE_SIZE, capacity as usize];
    for (fd, len) in fds[1..].iter().zip(lens) {
        assert_eq!(try_to_write(fd, len), Ok(()));
    }
    for (fd, len) in fds.into_iter().skip(1).zip(lens) {
        if let Some(ok) = run_as_nobody("read_only_descriptors_stay_read_only", fd, len) {
            assert!(ok, "as nobody, a read-only descriptor became writable");
        }
    }
}
