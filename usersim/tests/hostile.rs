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
use ringmap_core::abi::{Request, Status, Wire};
use ringmap_usersim::protocol::{GREETING_ID, MAP_FDS, ReplyHeader, RequestHeader};
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
        capacity: Capacity::new(capacity).unwrap(),
        ..ServerConfig::new(socket_path(name))
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

    /// One reply (the greeting skipped): header, body, descriptors.
    fn receive(&mut self) -> (ReplyHeader, Vec<u8>, Vec<OwnedFd>) {
        loop {
            let reply = self.receive_any();
            if reply.0.id != GREETING_ID {
                return reply;
            }
            assert_eq!(
                reply.0.status,
                0,
                "refused: {}",
                String::from_utf8_lossy(&reply.1)
            );
        }
    }

    /// One message: header, body, descriptors.
    fn receive_any(&mut self) -> (ReplyHeader, Vec<u8>, Vec<OwnedFd>) {
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

impl Raw {
    /// Sends `bytes` with `fds` attached (`SCM_RIGHTS`).
    fn send_with_fds(&mut self, bytes: &[u8], fds: &[std::os::fd::BorrowedFd<'_>]) {
        use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(8))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
        let sent = rustix::net::sendmsg(
            &self.stream,
            &[std::io::IoSlice::new(bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        )
        .unwrap();
        assert_eq!(sent, bytes.len());
    }

    /// A SET_EVENT message naming `event_handle`, with `fds` attached.
    fn set_event(&mut self, id: u64, event_handle: u64, fds: &[std::os::fd::BorrowedFd<'_>]) {
        let input = ringmap_core::abi::SetEventRequest::new(event_handle);
        let header = RequestHeader {
            code: Request::SetEvent as u32,
            input_len: input.as_bytes().len() as u32,
            id,
            output_len: 0,
            reserved: 0,
        };
        let mut bytes = header.to_bytes().to_vec();
        bytes.extend_from_slice(input.as_bytes());
        self.send_with_fds(&bytes, fds);
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

/// This test executable, copied where `nobody` can run it: the checkout (and so the target
/// directory) may lie in a directory only its owner can enter, such as one `mktemp -d` made.
fn executable_for_nobody() -> PathBuf {
    static COPY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    COPY.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ringmap-hostile-exe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let copy = dir.join("hostile");
        std::fs::copy(std::env::current_exe().unwrap(), &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        copy
    })
    .clone()
}

fn run_as_nobody(test: &str, fd: OwnedFd, len: usize) -> Option<bool> {
    if !rustix::process::getuid().is_root() {
        println!("skipped: the unprivileged case of {test} needs root to run as nobody");
        return None;
    }
    let status = Command::new(executable_for_nobody())
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

#[test]
fn a_client_cannot_seal_or_resize_the_pages_it_was_given() {
    if as_child() {
        return;
    }
    use rustix::fs::SealFlags;
    let capacity = 1 << 16;
    let server = server("seals", capacity);
    let mut raw = Raw::connect(&server);
    raw.request(Request::Map, 1, &empty_request(), 4096);
    let (header, _, fds) = raw.receive();
    assert_eq!(header.status, 0);
    // F_SEAL_WRITE on the writable consumer page would make the driver's writes to it fail;
    // growing or shrinking any of them would make its mappings fault.
    for (index, fd) in fds.iter().enumerate() {
        assert!(
            rustix::fs::fcntl_add_seals(fd, SealFlags::WRITE).is_err(),
            "descriptor {index} took a seal"
        );
        assert!(
            rustix::fs::ftruncate(fd, 0).is_err(),
            "descriptor {index} shrank"
        );
        assert!(
            rustix::fs::ftruncate(fd, 1 << 30).is_err(),
            "descriptor {index} grew"
        );
    }
    // And the ring still works.
    raw.request(Request::Stats, 2, &empty_request(), 4096);
    assert_eq!(raw.receive().0.status, 0);
    let report = server.stop();
    assert!(report.is_clean(), "{report}");
}

#[test]
fn set_event_takes_only_an_eventfd_the_client_sent_and_a_flood_of_descriptors_ends_the_connection()
{
    if as_child() {
        return;
    }
    use std::os::fd::AsFd;
    let server = server("set-event", 1 << 16);
    let status = |raw: &mut Raw| raw.receive().0.status;
    let invalid = Status::InvalidParameter.ntstatus();
    let mut raw = Raw::connect(&server);
    raw.request(Request::Map, 1, &empty_request(), 4096);
    assert_eq!(status(&mut raw), 0);
    // Handle 1 with no descriptor; a handle number of the server's; something else than
    // an eventfd: refused, nothing set.
    raw.set_event(2, 1, &[]);
    assert_eq!(status(&mut raw), invalid);
    raw.set_event(3, 5, &[]);
    assert_eq!(status(&mut raw), invalid);
    let memfd = rustix::fs::memfd_create("not-an-event", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    raw.set_event(4, 1, &[memfd.as_fd()]);
    assert_eq!(status(&mut raw), invalid);
    // An eventfd: taken, and set when a QUERY completes.
    let event = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
    raw.set_event(5, 1, &[event.as_fd()]);
    assert_eq!(status(&mut raw), 0);
    let mut writer = Raw::connect(&server);
    writer.request(Request::Write, 1, &write_request(b"wake"), 64);
    assert_eq!(status(&mut writer), 0);
    raw.request(
        Request::Query,
        6,
        ringmap_core::abi::QueryRequest::new(0).as_bytes(),
        64,
    );
    assert_eq!(status(&mut raw), 0);
    let mut count = [0u8; 8];
    assert_eq!(rustix::io::read(&event, &mut count).unwrap(), 8);
    assert_eq!(u64::from_ne_bytes(count), 1, "the completing QUERY set it");
    // Descriptors with no request to take them: past a few, the connection is closed (it
    // holds its mapping no longer), and the server goes on serving others.
    let mut flooder = Raw::connect(&server);
    let fds: Vec<OwnedFd> = (0..8)
        .map(|_| rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap())
        .collect();
    let borrowed: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
    flooder.send_with_fds(&[0u8], &borrowed);
    let mut byte = [0u8; 64];
    let mut ended = false;
    for _ in 0..2 {
        match std::io::Read::read(&mut flooder.stream, &mut byte) {
            Ok(0) | Err(_) => {
                ended = true;
                break;
            }
            Ok(_) => {} // the greeting
        }
    }
    assert!(ended, "a client flooding descriptors is disconnected");
    writer.request(Request::Stats, 2, &empty_request(), 4096);
    assert_eq!(status(&mut writer), 0);
    drop((raw, writer, flooder));
    let report = server.stop();
    assert!(report.is_clean(), "{report}");
}

/// A QUERY completed by a producer of the driver (a generator thread) for a connection with
/// an event set waits for the loop's next turn instead of being sent from the producer's
/// thread; a client that waits on the socket alone still gets it, though it sends nothing.
#[test]
fn a_query_completed_by_a_producer_reaches_a_client_with_an_event_that_waits_on_the_socket() {
    if as_child() {
        return;
    }
    use ringmap_core::abi::{GenerateRequest, QueryReply, QueryRequest};
    use std::os::fd::AsFd;
    let server = server("event-reply", 1 << 16);
    let mut raw = Raw::connect(&server);
    raw.request(Request::Map, 1, &empty_request(), 4096);
    assert_eq!(raw.receive().0.status, 0);
    let event = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
    raw.set_event(2, 1, &[event.as_fd()]);
    assert_eq!(raw.receive().0.status, 0);
    for round in 0..3u64 {
        let id = 10 + 2 * round;
        // The ring is empty at the consumer's position: the QUERY pends.
        let position = round * ringmap_core::record::padded_size(16);
        raw.request(
            Request::Query,
            id,
            QueryRequest::new(position).as_bytes(),
            QueryReply::SIZE,
        );
        // One record, from a generator thread of the driver's: its commit completes the
        // QUERY on that thread.
        let mut control = Raw::connect(&server);
        control.request(
            Request::Generate,
            1,
            GenerateRequest::start(1, 16, 0, 1).as_bytes(),
            64,
        );
        assert_eq!(control.receive().0.status, 0);
        // Nothing more is sent on this connection: the reply must come by itself.
        raw.stream
            .set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        let (header, body, _) = raw.receive();
        assert_eq!((header.id, header.status), (id, 0), "round {round}");
        let reply = QueryReply::read_exact(&body).unwrap();
        assert!(reply.producer_offset > position, "round {round}: {reply:?}");
        let mut count = [0u8; 8];
        assert_eq!(rustix::io::read(&event, &mut count).unwrap(), 8);
        assert_eq!(
            u64::from_ne_bytes(count),
            1,
            "round {round}: the completion set it"
        );
        // The counted run is over; stop it so that the next round may start one.
        control.request(Request::Generate, 2, GenerateRequest::stop().as_bytes(), 64);
        assert_eq!(control.receive().0.status, 0);
    }
    drop(raw);
    let report = server.stop();
    assert!(report.is_clean(), "{report}");
}

/// A server in a child process (this test binary again, running `test` in the child role),
/// so that its descriptors and memory are its own.
struct ChildServer {
    child: std::process::Child,
    path: PathBuf,
}

impl ChildServer {
    fn start(test: &str, capacity: u64, nofile: u64) -> ChildServer {
        let path = socket_path("child");
        let mut child = Command::new(executable_for_nobody())
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env("RINGMAP_HOSTILE_SERVE", &path)
            .env("RINGMAP_HOSTILE_CAPACITY", capacity.to_string())
            .env("RINGMAP_HOSTILE_NOFILE", nofile.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                std::io::BufRead::read_line(&mut stdout, &mut line).unwrap() > 0,
                "the child server ended before it was ready"
            );
            if line.contains("RINGMAP-CHILD-READY") {
                break;
            }
        }
        // Keep reading what the child prints, so it never writes into a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        ChildServer { child, path }
    }

    /// Its resident memory, in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    fn connect(&self) -> Raw {
        Raw {
            stream: UnixStream::connect(&self.path).unwrap(),
        }
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// The child's half of [`ChildServer`]: serves until its standard input ends.
fn as_server_child() -> bool {
    let Some(path) = std::env::var_os("RINGMAP_HOSTILE_SERVE") else {
        return false;
    };
    let nofile: u64 = std::env::var("RINGMAP_HOSTILE_NOFILE")
        .unwrap()
        .parse()
        .unwrap();
    let capacity: u64 = std::env::var("RINGMAP_HOSTILE_CAPACITY")
        .unwrap()
        .parse()
        .unwrap();
    rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(nofile),
            maximum: Some(nofile),
        },
    )
    .unwrap();
    let server = server_at(PathBuf::from(path), capacity);
    println!("\nRINGMAP-CHILD-READY");
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
    drop(server);
    true
}

fn server_at(path: PathBuf, capacity: u64) -> Server {
    Server::start(ServerConfig {
        capacity: Capacity::new(capacity).unwrap(),
        ..ServerConfig::new(path)
    })
    .unwrap()
}

fn stats_produced(raw: &mut Raw, id: u64) -> (u32, u64) {
    raw.request(Request::Stats, id, &empty_request(), 4096);
    let (header, body, _) = raw.receive();
    assert_eq!(header.id, id);
    let produced = if header.status == 0 {
        let stats = ringmap_core::abi::StatsReply::read_prefix(&body).unwrap();
        stats.produced
    } else {
        u64::MAX
    };
    (header.status, produced)
}

fn write_request(payload: &[u8]) -> Vec<u8> {
    let mut input = Vec::new();
    input.extend_from_slice(&16u32.to_le_bytes());
    input.extend_from_slice(&0u32.to_le_bytes());
    input.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    input.extend_from_slice(payload);
    input
}

#[test]
fn a_non_zero_reserved_field_is_refused_and_nothing_stored() {
    let server = server("reserved", 1 << 16);
    let mut raw = Raw::connect(&server);
    let input = write_request(b"forged");
    raw.send(
        RequestHeader {
            code: Request::Write as u32,
            input_len: input.len() as u32,
            id: 5,
            output_len: 64,
            reserved: 0xFFFF_FFFF,
        },
        &input,
    );
    let (header, _, _) = raw.receive();
    assert_eq!(header.id, 5);
    assert_eq!(header.status, Status::InvalidParameter.ntstatus());
    assert_eq!(stats_produced(&mut raw, 6), (0, 0));
    // The same request with reserved = 0 is stored: only the field made the difference.
    raw.request(Request::Write, 7, &input, 64);
    assert_eq!(raw.receive().0.status, 0);
    assert_eq!(stats_produced(&mut raw, 8), (0, 1));
}

#[test]
fn a_client_that_does_not_read_loses_nothing_and_holds_up_no_one() {
    let server = server("stuck", 1 << 16);
    let mut stuck = Raw::connect(&server);
    // The consumer (only the mapping's handle may QUERY)...
    stuck.request(Request::Map, 50, &empty_request(), 4096);
    let (header, _, fds) = stuck.receive();
    assert_eq!((header.id, header.status, fds.len()), (50, 0, MAP_FDS));
    // ...a QUERY that pends (nothing written yet)...
    let mut query = Vec::new();
    query.extend_from_slice(&16u32.to_le_bytes());
    query.extend_from_slice(&0u32.to_le_bytes());
    query.extend_from_slice(&0u64.to_le_bytes());
    stuck.request(Request::Query, 1, &query, 4096);
    // ...then far more STATS replies than its socket holds, none of them read yet.
    const FLOOD: u64 = 20_000;
    let mut flood = Vec::new();
    for id in 0..FLOOD {
        flood.extend_from_slice(
            &RequestHeader {
                code: Request::Stats as u32,
                input_len: 8,
                id: 100 + id,
                output_len: 4096,
                reserved: 0,
            }
            .to_bytes(),
        );
        flood.extend_from_slice(&empty_request());
    }
    let mut writer = stuck.stream.try_clone().unwrap();
    let flooding = std::thread::spawn(move || writer.write_all(&flood).unwrap());
    std::thread::sleep(std::time::Duration::from_millis(300));
    // Another client's WRITE completes the stuck client's QUERY: it returns, and more
    // requests of others are served meanwhile.
    let started = std::time::Instant::now();
    let mut other = Raw::connect(&server);
    other.request(Request::Write, 1, &write_request(b"wake"), 64);
    assert_eq!(other.receive().0.status, 0);
    for id in 2..10 {
        assert_eq!(stats_produced(&mut other, id).0, 0);
    }
    println!(
        "another client's WRITE and 8 STATS took {:?} while one client read nothing",
        started.elapsed()
    );
    // Now the stuck client reads: every reply is there, the QUERY's among them.
    let (mut stats, mut query_status) = (0, None);
    while stats < FLOOD || query_status.is_none() {
        let (header, _, _) = stuck.receive();
        if header.id == 1 {
            query_status = Some(header.status);
        } else {
            assert_eq!(header.status, 0);
            stats += 1;
        }
    }
    flooding.join().unwrap();
    assert_eq!(query_status, Some(0));
}

#[test]
fn half_sent_writes_do_not_grow_the_server() {
    if as_server_child() {
        return;
    }
    const ANNOUNCED: u32 = 32 << 20;
    let server = ChildServer::start("half_sent_writes_do_not_grow_the_server", 32 << 20, 1024);
    let before = server.rss_kib();
    let mut clients = Vec::new();
    for id in 0..8 {
        let mut raw = server.connect();
        raw.send(
            RequestHeader {
                code: Request::Write as u32,
                input_len: ANNOUNCED,
                id,
                output_len: 64,
                reserved: 0,
            },
            &write_request(&[7; 1000])[..1016],
        );
        clients.push(raw);
    }
    // The server is still there and answers others.
    let mut other = server.connect();
    assert_eq!(stats_produced(&mut other, 1), (0, 0));
    std::thread::sleep(std::time::Duration::from_millis(500));
    let grown = server.rss_kib().saturating_sub(before);
    println!("8 half-sent WRITEs announcing 32 MiB each grew the server by {grown} KiB");
    assert!(grown < 32 << 10, "the server grew by {grown} KiB");
}

#[test]
fn a_thousand_idle_connections_at_1024_descriptors_leave_room_for_one_more() {
    if as_server_child() {
        return;
    }
    let want = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    if want.maximum.is_some_and(|max| max < 1100) {
        println!("skipped: this test needs 1,100 descriptors of its own");
        return;
    }
    rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: want.maximum,
            maximum: want.maximum,
        },
    )
    .unwrap();
    let server = ChildServer::start(
        "a_thousand_idle_connections_at_1024_descriptors_leave_room_for_one_more",
        1 << 16,
        1024,
    );
    let idle: Vec<Raw> = (0..1000).map(|_| server.connect()).collect();
    let mut one_more = server.connect();
    one_more
        .stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    assert_eq!(stats_produced(&mut one_more, 1), (0, 0));
    // And the idle ones were all let in.
    let mut last = idle.into_iter().last().unwrap();
    assert_eq!(stats_produced(&mut last, 1), (0, 0));
}

fn config(name: &str) -> ServerConfig {
    ServerConfig {
        capacity: Capacity::new(1 << 16).unwrap(),
        ..ServerConfig::new(socket_path(name))
    }
}

#[test]
fn connections_beyond_the_cap_are_refused_with_a_sentence() {
    let server = Server::start(ServerConfig {
        max_connections: 2,
        ..config("cap")
    })
    .unwrap();
    let first = ringmap_client::Device::open_at(server.socket_path()).unwrap();
    let _second = ringmap_client::Device::open_at(server.socket_path()).unwrap();
    let refused = ringmap_client::Device::open_at(server.socket_path()).unwrap_err();
    let sentence = refused.to_string();
    println!("{sentence}");
    assert!(
        sentence.contains("serves 2 connections, its limit"),
        "{sentence}"
    );
    // The connections in are served as before.
    assert_eq!(first.stats().unwrap().produced, 0);
}

#[test]
fn idle_connections_are_closed() {
    let server = Server::start(ServerConfig {
        idle_timeout: std::time::Duration::from_millis(100),
        ..config("idle")
    })
    .unwrap();
    let mut idle = Raw::connect(&server);
    // The greeting, then the end (no timing asserted: only that it ends).
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut idle.stream, &mut got).unwrap();
    assert_eq!(got.len(), ReplyHeader::SIZE);
    // A half-sent request is no shield.
    let mut half = Raw::connect(&server);
    half.stream.write_all(&[1, 0, 0]).unwrap();
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut half.stream, &mut got).unwrap();
    assert_eq!(got.len(), ReplyHeader::SIZE);
}

/// Runs `test` again as nobody, in the child role `role`; `None` if not root (skipped).
fn as_nobody(test: &str, role: &str, env: &[(&str, &str)]) -> Option<std::process::Output> {
    if !rustix::process::getuid().is_root() {
        println!("skipped: {test} needs root to run a client as nobody");
        return None;
    }
    let mut command = Command::new(executable_for_nobody());
    command
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env("RINGMAP_HOSTILE_ROLE", role)
        .uid(NOBODY)
        .gid(NOBODY);
    for (key, value) in env {
        command.env(key, value);
    }
    Some(command.output().unwrap())
}

fn role() -> Option<String> {
    std::env::var("RINGMAP_HOSTILE_ROLE").ok()
}

/// A directory nobody may enter (mode 0755), for sockets an unprivileged child reaches.
fn open_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringmap-hostile-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&dir).unwrap().permissions(),
        0o755,
    );
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    dir
}

#[test]
fn other_users_are_refused_unless_in_the_group() {
    const TEST: &str = "other_users_are_refused_unless_in_the_group";
    if role().as_deref() == Some("client") {
        let path = std::env::var("RINGMAP_HOSTILE_PATH").unwrap();
        match ringmap_client::Device::open_at(std::path::Path::new(&path)) {
            Ok(device) => {
                let produced = device.stats().unwrap().produced;
                println!("RINGMAP-CHILD: admitted, produced {produced}");
            }
            Err(error) => println!("RINGMAP-CHILD: refused: {error}"),
        }
        return;
    }
    let dir = open_dir("group");
    for (group, admitted) in [(None, false), (Some(NOBODY), true)] {
        let server = Server::start(ServerConfig {
            group,
            ..config("group")
        })
        .unwrap();
        let path = dir.join(if admitted { "in.sock" } else { "out.sock" });
        std::fs::rename(server.socket_path(), &path).unwrap();
        // Anyone may reach the socket: only the server's own check stands in the way.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .unwrap();
        let Some(output) = as_nobody(
            TEST,
            "client",
            &[("RINGMAP_HOSTILE_PATH", path.to_str().unwrap())],
        ) else {
            return;
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        println!("group {group:?}: {stdout}");
        if admitted {
            assert!(stdout.contains("RINGMAP-CHILD: admitted"), "{stdout}");
        } else {
            assert!(
                stdout.contains("RINGMAP-CHILD: refused") && stdout.contains("permission denied"),
                "{stdout}"
            );
        }
        std::fs::rename(&path, server.socket_path()).unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_client_tells_a_server_of_another_user_nothing() {
    const TEST: &str = "the_client_tells_a_server_of_another_user_nothing";
    if role().as_deref() == Some("squatter") {
        // Listens where the victim looks, and reports what it hears.
        let path = std::env::var("RINGMAP_HOSTILE_PATH").unwrap();
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .unwrap();
        println!("RINGMAP-CHILD-READY");
        let (mut stream, _) = listener.accept().unwrap();
        // Greets like a server would, then listens.
        // (The client may have gone already.)
        let _ = stream.write_all(&ReplyHeader::default().to_bytes());
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut heard = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stream, &mut heard);
        println!("RINGMAP-CHILD: heard {} bytes", heard.len());
        return;
    }
    if !rustix::process::getuid().is_root() {
        println!("skipped: {TEST} needs root to run a squatter as nobody");
        return;
    }
    let dir = open_dir("squat");
    let path = dir.join("ringmap.sock");
    let mut squatter = Command::new(executable_for_nobody())
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env("RINGMAP_HOSTILE_ROLE", "squatter")
        .env("RINGMAP_HOSTILE_PATH", &path)
        .uid(NOBODY)
        .gid(NOBODY)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(squatter.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("RINGMAP-CHILD-READY") {
        line.clear();
        assert!(std::io::BufRead::read_line(&mut stdout, &mut line).unwrap() > 0);
    }
    let result = ringmap_client::Device::open_at(&path).and_then(|device| device.write(b"secret"));
    let error = result
        .expect_err("the client talked to a squatter")
        .to_string();
    println!("{error}");
    assert!(
        error.contains("permission denied") && error.contains("uid 65534"),
        "{error}"
    );
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    squatter.wait().unwrap();
    assert!(rest.contains("RINGMAP-CHILD: heard 0 bytes"), "{rest}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_existing_file_is_never_replaced() {
    let path = socket_path("file");
    std::fs::write(&path, b"precious").unwrap();
    let error = Server::start(ServerConfig::new(path.clone()))
        .err()
        .expect("a server replaced a regular file");
    println!("{error}");
    assert!(error.to_string().contains("is not a socket"), "{error}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn the_default_socket_lies_in_a_private_directory() {
    const TEST: &str = "the_default_socket_lies_in_a_private_directory";
    if role().as_deref() == Some("default") {
        let path = ringmap_usersim::default_socket_path();
        match Server::start(ServerConfig::default()) {
            Ok(server) => {
                use std::os::unix::fs::PermissionsExt;
                let dir = path.parent().unwrap();
                let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
                println!(
                    "RINGMAP-CHILD: listening at {}, directory mode {mode:o}",
                    path.display()
                );
                drop(server);
            }
            Err(error) => println!("RINGMAP-CHILD: refused: {error}"),
        }
        return;
    }
    let tmp = open_dir("default");
    let run = || {
        let output = Command::new(executable_for_nobody())
            .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
            .env("RINGMAP_HOSTILE_ROLE", "default")
            .env("TMPDIR", &tmp)
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("RINGMAP_SOCKET")
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let uid = rustix::process::geteuid().as_raw();
    let private = tmp.join(format!("ringmap-{uid}"));
    let out = run();
    println!("{out}");
    assert!(
        out.contains(&format!(
            "listening at {}, directory mode 700",
            private.join("ringmap.sock").display()
        )),
        "{out}"
    );
    // A directory others may enter, or someone else's, is refused.
    std::fs::set_permissions(
        &private,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let out = run();
    println!("{out}");
    assert!(
        out.contains("refused") && out.contains("mode 0777"),
        "{out}"
    );
    if rustix::process::getuid().is_root() {
        std::fs::set_permissions(
            &private,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        std::os::unix::fs::chown(&private, Some(NOBODY), Some(NOBODY)).unwrap();
        let out = run();
        println!("{out}");
        assert!(
            out.contains("refused") && out.contains("belongs to uid 65534"),
            "{out}"
        );
    }
    std::fs::remove_dir_all(&tmp).unwrap();
}
