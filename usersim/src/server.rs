//! The device in this process, serving requests on a Unix socket.
//!
//! One thread runs an `epoll` loop over the listening socket and every connection (one
//! descriptor each, non-blocking). Each connection is a handle ([`HandleId`] = connection
//! number); its bytes are cut into requests by a [`Framer`] as they arrive, and each request
//! becomes a call of [`Device::request`]. Replies go into the connection's outbox and are
//! sent, without blocking, by the loop: a completion from another thread (a producer
//! completing a pending QUERY) only queues the reply and wakes the loop, so no client that
//! stops reading can hold up a producer or another client.
//!
//! What a client may cost is bounded: a request's input is buffered as it arrives (input
//! buffers past a small free allowance share one budget, and a connection that would exceed
//! it is not read until the budget frees); a connection whose outbox is full is not read
//! until it drains; connections are capped (with a refusal the client turns into a
//! sentence), and idle ones are closed. A connection that ends (EOF, an error: the client
//! died) is closed like a handle: its mapping and its pending QUERY are cleaned up.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ringmap_core::Capacity;
use ringmap_core::abi::{QueryReply, Request, Status, Wire};
use ringmap_core::device::{Device, HandleId, NewMapping, Outcome, Platform, ViewHandles};
use rustix::event::epoll;
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

use crate::consumer_page::ConsumerPageMemory;
use crate::framing::{Frame, Framer};
use crate::protocol::{GREETING_ID, MAX_OUTPUT, REFUSED_ACCESS, REFUSED_BUSY, ReplyHeader};
use crate::ring::RingMemory;

/// Input a connection may buffer outside the shared budget (every request but a large
/// WRITE fits).
const FREE_INPUT: usize = 64 << 10;

/// Reply bytes a connection may have waiting before it is no longer read.
const OUTBOX_LIMIT: usize = 64 << 10;

/// Bytes read from one connection before the loop turns to the others.
const READ_TURN: usize = 1 << 20;

/// Descriptors kept free for the server's own use (the listener, the epoll and wake
/// descriptors, the ring's memfds, MAP's duplicates, standard streams) when the connection
/// cap is derived from the descriptor limit.
const RESERVED_FDS: u64 = 20;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Wakes the loop from another thread: an eventfd, and the connections with new replies.
struct Waker {
    eventfd: OwnedFd,
    ready: Mutex<Vec<u64>>,
}

impl Waker {
    fn new() -> io::Result<Waker> {
        Ok(Waker {
            eventfd: rustix::event::eventfd(
                0,
                rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
            )?,
            ready: Mutex::new(Vec::new()),
        })
    }

    fn wake(&self, connection: Option<u64>) {
        if let Some(id) = connection {
            lock(&self.ready).push(id);
        }
        // Non-blocking: if the counter is somehow full the loop is awake anyway.
        let _ = rustix::io::write(&self.eventfd, &1u64.to_ne_bytes());
    }

    fn take(&self) -> Vec<u64> {
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&self.eventfd, &mut buf);
        std::mem::take(&mut *lock(&self.ready))
    }
}

/// A reply waiting to be sent.
struct Outgoing {
    bytes: Vec<u8>,
    fds: Vec<OwnedFd>,
    sent: usize,
}

#[derive(Default)]
struct Outbox {
    queue: VecDeque<Outgoing>,
    bytes: usize,
    /// A QUERY of this connection is pending (its reply not yet queued).
    query_pending: bool,
}

/// One client connection, as other threads see it: its number and its outbox.
pub struct Connection {
    id: u64,
    outbox: Mutex<Outbox>,
    waker: Arc<Waker>,
}

impl Connection {
    /// Queues one reply (with `fds` for MAP). Called by the loop, or by whoever completes a
    /// pending QUERY; never blocks on the socket.
    fn queue(&self, id: u64, status: u32, body: &[u8], fds: Vec<OwnedFd>, from_loop: bool) {
        let header = ReplyHeader {
            id,
            status,
            len: body.len() as u32,
        };
        let mut bytes = Vec::with_capacity(ReplyHeader::SIZE + body.len());
        bytes.extend_from_slice(&header.to_bytes());
        bytes.extend_from_slice(body);
        {
            let mut outbox = lock(&self.outbox);
            outbox.bytes += bytes.len();
            outbox.queue.push_back(Outgoing {
                bytes,
                fds,
                sent: 0,
            });
        }
        if !from_loop {
            self.waker.wake(Some(self.id));
        }
    }

    fn reply(&self, id: u64, status: Status, body: &[u8], fds: Vec<OwnedFd>) {
        self.queue(id, status.ntstatus(), body, fds, true);
    }
}

/// A QUERY whose reply comes later: its connection and request id.
pub struct PendingQuery {
    connection: Arc<Connection>,
    id: u64,
}

/// The process and user at the other end of a connection.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    /// Its process id.
    pub pid: u64,
    /// Its user id.
    pub uid: u32,
}

/// The usersim [`Platform`]: the ring's memory, a std mutex, threads for the generator.
pub struct Host {
    memory: RingMemory,
    /// The consumer page descriptor of a MAP whose reply is not sent yet, by handle.
    map_fds: Mutex<HashMap<HandleId, OwnedFd>>,
    /// Who is at the other end of each connection (SO_PEERCRED when it was accepted).
    peers: Mutex<HashMap<HandleId, Peer>>,
    lock: Mutex<()>,
    device: OnceLock<Weak<Device<Host>>>,
    producers: Mutex<Vec<JoinHandle<()>>>,
}

impl Host {
    /// The ring's memory.
    pub fn memory(&self) -> &RingMemory {
        &self.memory
    }

    /// Records who is at the other end of `handle`'s connection (at accept).
    pub fn set_peer(&self, handle: HandleId, peer: Peer) {
        lock(&self.peers).insert(handle, peer);
    }

    /// Forgets `handle`'s peer (its connection closed).
    pub fn forget_peer(&self, handle: HandleId) {
        lock(&self.peers).remove(&handle);
    }

    /// The consumer page descriptor of `handle`'s MAP that just succeeded, for its reply.
    pub fn take_map_fd(&self, handle: HandleId) -> Option<OwnedFd> {
        lock(&self.map_fds).remove(&handle)
    }
}

/// The monotonic clock, in nanoseconds (`CLOCK_MONOTONIC`, as the generator stamps records).
pub fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

// SAFETY: `with_lock` runs its closure under a std mutex held for the whole call.
unsafe impl Platform for Host {
    type PendingQuery = PendingQuery;
    type ConsumerPage = ConsumerPageMemory;

    fn with_lock<R>(&self, f: impl FnOnce() -> R) -> R {
        let _guard = lock(&self.lock);
        f()
    }

    fn take_query(&self, query: PendingQuery) -> Option<PendingQuery> {
        // A CANCEL message takes its QUERY through `cancel_query`, under the same lock, so a
        // QUERY taken here is this caller's to complete.
        Some(query)
    }

    fn complete_query(&self, query: PendingQuery, reply: Result<QueryReply, Status>) {
        lock(&query.connection.outbox).query_pending = false;
        // Queued, not sent: a producer completing the QUERY never waits on the client.
        let (status, body) = match &reply {
            Ok(reply) => (Status::Success, reply.as_bytes()),
            Err(status) => (*status, &[][..]),
        };
        query
            .connection
            .queue(query.id, status.ntstatus(), body, Vec::new(), false);
    }

    fn map_view(&self, handle: HandleId) -> Result<NewMapping<ConsumerPageMemory>, Status> {
        let page = ConsumerPageMemory::new().map_err(|_| Status::InsufficientResources)?;
        let fd = page
            .fd()
            .try_clone_to_owned()
            .map_err(|_| Status::InsufficientResources)?;
        // The MAP reply takes it (`take_map_fd`) and sends it with the producer page's and
        // the data's read-only descriptors, in this order.
        lock(&self.map_fds).insert(handle, fd);
        Ok(NewMapping {
            handles: ViewHandles {
                consumer_page: 0,
                producer_page: 1,
                data: 2,
            },
            page_address: page.address(),
            page,
            process_id: lock(&self.peers).get(&handle).map_or(0, |peer| peer.pid),
        })
    }

    fn unmap_view(&self, handle: HandleId, page: ConsumerPageMemory) {
        // Nothing reads the page any more: the host's side goes (the client keeps its own
        // mapping, which reaches nobody now).
        lock(&self.map_fds).remove(&handle);
        drop(page);
    }

    /// The server's own user, or root: the user who ran `ringmap serve` owns the device.
    fn is_privileged(&self, handle: HandleId) -> bool {
        lock(&self.peers)
            .get(&handle)
            .is_some_and(|peer| peer.uid == 0 || peer.uid == rustix::process::geteuid().as_raw())
    }

    fn now_ns(&self) -> u64 {
        now_ns()
    }

    fn start_producers(&self, producers: u32) -> Result<(), Status> {
        let device = self
            .device
            .get()
            .and_then(Weak::upgrade)
            .ok_or(Status::InvalidDeviceState)?;
        let mut threads = lock(&self.producers);
        for i in 0..producers {
            let producer = device.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("ringmap-producer-{i}"))
                .spawn(move || producer.run_producer(i));
            match spawned {
                Ok(thread) => threads.push(thread),
                Err(_) => {
                    drop(threads);
                    device.stop_generator();
                    return Err(Status::InsufficientResources);
                }
            }
        }
        Ok(())
    }

    fn join_producers(&self) {
        let threads = std::mem::take(&mut *lock(&self.producers));
        for thread in threads {
            let _ = thread.join();
        }
    }

    fn sleep_ns(&self, ns: u64) {
        std::thread::sleep(Duration::from_nanos(ns));
    }

    /// A few spins, then yield: generator threads may outnumber the processors, and the
    /// producer waited for may be preempted (in user mode nothing keeps it on its processor).
    fn relax(&self, spins: u32) {
        if spins < 16 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

/// Makes a device with an empty ring of `capacity` bytes in memfd memory.
pub fn new_device(capacity: Capacity) -> io::Result<Arc<Device<Host>>> {
    let host = Host {
        memory: RingMemory::new(capacity)?,
        map_fds: Mutex::new(HashMap::new()),
        peers: Mutex::new(HashMap::new()),
        lock: Mutex::new(()),
        device: OnceLock::new(),
        producers: Mutex::new(Vec::new()),
    };
    // SAFETY: the placement's memory belongs to the host, which the device owns, so it
    // lives as long as the device; this device is the only ring placed in it.
    let placement = unsafe { host.memory.placement() };
    // SAFETY: as above.
    let device = Arc::new(unsafe { Device::new(placement, host) });
    let _ = device.platform().device.set(Arc::downgrade(&device));
    Ok(device)
}

/// How to start a server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where to listen.
    pub socket_path: PathBuf,
    /// The ring's capacity.
    pub capacity: Capacity,
    /// Besides the server's own user and root, the members of this group (by id) may
    /// connect; the socket is then made group-accessible (mode 0660, this group).
    pub group: Option<u32>,
    /// The most connections served at once; more are refused with a sentence. Also bounded
    /// by the descriptor limit (less a few the server needs itself).
    pub max_connections: usize,
    /// A connection with nothing pending (no mapping, no pending QUERY) that sends nothing
    /// for this long is closed; so is one in the middle of a request, or with replies it
    /// does not read, for this long.
    pub idle_timeout: Duration,
    /// The request input all connections together may buffer beyond a small allowance
    /// each (at least one WRITE as large as the ring is always allowed).
    pub max_buffered: usize,
}

impl ServerConfig {
    /// The defaults, listening at `socket_path`.
    pub fn new(socket_path: PathBuf) -> ServerConfig {
        ServerConfig {
            socket_path,
            capacity: Capacity::DEFAULT,
            group: None,
            max_connections: 4096,
            idle_timeout: Duration::from_secs(600),
            max_buffered: 64 << 20,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig::new(crate::protocol::default_socket_path())
    }
}

/// A usersim device listening on a Unix socket, served by a background thread. Stops when
/// dropped.
pub struct Server {
    device: Arc<Device<Host>>,
    socket_path: PathBuf,
    /// The bound socket's device and inode: only that file is removed at the end.
    socket_id: (u64, u64),
    stopping: Arc<AtomicBool>,
    waker: Arc<Waker>,
    serve: Option<JoinHandle<()>>,
}

fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|meta| (meta.dev(), meta.ino()))
}

/// Binds at `path`, taking the place only of a stale socket of this user's (nobody
/// listening): anything else there is refused with a sentence, never removed.
fn bind(path: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    match UnixListener::bind(path) {
        Ok(listener) => Ok(listener),
        Err(error) if error.kind() == io::ErrorKind::AddrInUse => {
            let meta = std::fs::symlink_metadata(path)?;
            if !meta.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "{} exists and is not a socket: refusing to replace it (remove it or \
                         choose another --socket)",
                        path.display()
                    ),
                ));
            }
            let me = rustix::process::geteuid().as_raw();
            if meta.uid() != me {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "permission denied: the socket {} belongs to uid {}, not to you (uid \
                         {me}); refusing to replace it",
                        path.display(),
                        meta.uid()
                    ),
                ));
            }
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("a ringmap device already listens at {}", path.display()),
                ));
            }
            // A socket of ours left behind by a server that died: take its place.
            std::fs::remove_file(path)?;
            UnixListener::bind(path)
        }
        Err(error) => Err(error),
    }
}

/// The gid of the group `name` (a name from the group database, or a number).
pub fn group_id(name: &str) -> io::Result<u32> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    let c_name = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a group name has no NUL"))?;
    let mut buf = vec![0u8; 16 << 10];
    // SAFETY: a zeroed `group` is a valid out-parameter (plain integers and pointers).
    let mut group: libc::group = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: the name is NUL-terminated, `buf` has
    // `buf.len()` bytes, `group` and `found` are locals.
    let error = unsafe {
        libc::getgrnam_r(
            c_name.as_ptr(),
            &mut group,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut found,
        )
    };
    if error != 0 {
        return Err(io::Error::from_raw_os_error(error));
    }
    if found.is_null() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no group named {name}"),
        ));
    }
    Ok(group.gr_gid)
}

/// The supplementary groups of the process at the other end of `stream` (`SO_PEERGROUPS`).
fn peer_groups(stream: BorrowedFd<'_>) -> Vec<u32> {
    use std::os::fd::AsRawFd;
    let mut groups = vec![0u32; 64];
    loop {
        let mut len = (groups.len() * size_of::<u32>()) as libc::socklen_t;
        // SAFETY: `groups` has room for `len` bytes; `len` is a local.
        let got = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if got == 0 {
            groups.truncate(len as usize / size_of::<u32>());
            return groups;
        }
        if io::Error::last_os_error().raw_os_error() == Some(libc::ERANGE)
            && (len as usize) > groups.len() * size_of::<u32>()
        {
            groups.resize(len as usize / size_of::<u32>(), 0);
            continue;
        }
        return Vec::new();
    }
}

/// Whether the process at the other end of `stream` may use the device: the server's own
/// user, root, or (with `group`) a member of it. `Err` is the refusal's sentence.
fn check_peer(stream: &UnixStream, group: Option<u32>) -> Result<(), String> {
    let me = rustix::process::geteuid().as_raw();
    let cred = rustix::net::sockopt::socket_peercred(stream)
        .map_err(|e| format!("cannot read the client's credentials: {e}"))?;
    let uid = cred.uid.as_raw();
    if uid == me || uid == 0 {
        return Ok(());
    }
    if let Some(gid) = group
        && (cred.gid.as_raw() == gid || peer_groups(stream.as_fd()).contains(&gid))
    {
        return Ok(());
    }
    Err(match group {
        Some(gid) => format!(
            "permission denied: this ringmap device serves uid {me}, root and the members of \
             group {gid}; uid {uid} is none of them"
        ),
        None if me == 0 => format!(
            "permission denied: this ringmap device serves root only, not uid {uid} (its owner \
             can allow a group with `ringmap serve --group`)"
        ),
        None => format!(
            "permission denied: this ringmap device serves uid {me} and root only, not uid \
             {uid} (its owner can allow a group with `ringmap serve --group`)"
        ),
    })
}

impl Server {
    /// Makes the device and listens at `config.socket_path`; returns once listening.
    pub fn start(config: ServerConfig) -> io::Result<Server> {
        let device = new_device(config.capacity)?;
        let path = &config.socket_path;
        let context = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("cannot listen at {}: {e}", path.display()),
            )
        };
        if let Some(dir) = path.parent()
            && dir == crate::protocol::private_dir()
        {
            crate::protocol::ensure_private_dir(dir)?;
        }
        let listener = bind(path).map_err(context)?;
        let socket_id = file_id(path).unwrap_or_default();
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = if config.group.is_some() { 0o660 } else { 0o600 };
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
            if let Some(gid) = config.group {
                std::os::unix::fs::chown(path, None, Some(gid)).map_err(context)?;
            }
        }
        listener.set_nonblocking(true)?;
        let soft_limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        let max_connections = config
            .max_connections
            .min(soft_limit.saturating_sub(RESERVED_FDS).max(1) as usize);
        let max_input = 16 + device.ring().capacity().as_u64();
        let waker = Arc::new(Waker::new()?);
        let stopping = Arc::new(AtomicBool::new(false));
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        epoll::add(
            &epoll,
            &listener,
            epoll::EventData::new_u64(LISTENER),
            epoll::EventFlags::IN,
        )?;
        epoll::add(
            &epoll,
            &waker.eventfd,
            epoll::EventData::new_u64(WAKER),
            epoll::EventFlags::IN,
        )?;
        let mut event_loop = Loop {
            epoll,
            listener,
            waker: waker.clone(),
            device: device.clone(),
            stopping: stopping.clone(),
            connections: HashMap::new(),
            next_id: FIRST_CONNECTION,
            group: config.group,
            max_connections,
            idle_timeout: config.idle_timeout,
            budget: config.max_buffered.max(max_input as usize),
            budget_used: 0,
            starved: Vec::new(),
            spare: open_spare(),
            max_input,
        };
        let serve = std::thread::Builder::new()
            .name("ringmap-serve".into())
            .spawn(move || event_loop.run())?;
        Ok(Server {
            device,
            socket_path: config.socket_path,
            socket_id,
            stopping,
            waker,
            serve: Some(serve),
        })
    }

    /// Where it listens.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// The device (for tests).
    pub fn device(&self) -> &Arc<Device<Host>> {
        &self.device
    }

    /// Stops listening, closes every connection (their handles are cleaned up), stops the
    /// generator and removes the socket (if it is still the one this server made).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(serve) = self.serve.take() else {
            return;
        };
        // SeqCst, as every access of `stopping`: a plain flag with no data behind it; the
        // strongest order costs nothing at shutdown and needs no pairing argument (the wake
        // that follows makes the loop look at it).
        self.stopping.store(true, Ordering::SeqCst);
        self.waker.wake(None);
        let _ = serve.join();
        self.device.stop_generator();
        if file_id(&self.socket_path) == Some(self.socket_id) {
            let _ = std::fs::remove_file(&self.socket_path);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Runs a device at `config.socket_path` until SIGINT or SIGTERM... or for ever, if the
/// caller handles no signals: `ringmap serve` handles them itself and drops the [`Server`].
pub fn serve_forever(config: ServerConfig) -> io::Result<()> {
    let server = Server::start(config)?;
    loop {
        std::thread::park();
        // SeqCst: see `shutdown`.
        if server.stopping.load(Ordering::SeqCst) {
            return Ok(());
        }
    }
}

const LISTENER: u64 = 0;
const WAKER: u64 = 1;
const FIRST_CONNECTION: u64 = 2;

/// A descriptor held in reserve: when `accept` fails for want of descriptors, it is closed
/// to accept and refuse one client (rather than leave the listener readable for ever).
fn open_spare() -> Option<OwnedFd> {
    rustix::fs::open(
        "/dev/null",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .ok()
}

/// A connection as the loop sees it.
struct Client {
    shared: Arc<Connection>,
    stream: UnixStream,
    framer: Framer,
    /// The framer's buffer beyond the free allowance, counted in the loop's budget.
    charged: usize,
    /// When it last sent a byte or took one of its replies.
    last_active: Instant,
    mapped: bool,
    /// Not read until the input budget frees.
    starved: bool,
    interest: epoll::EventFlags,
}

struct Loop {
    epoll: OwnedFd,
    listener: UnixListener,
    waker: Arc<Waker>,
    device: Arc<Device<Host>>,
    stopping: Arc<AtomicBool>,
    connections: HashMap<u64, Client>,
    next_id: u64,
    group: Option<u32>,
    max_connections: usize,
    idle_timeout: Duration,
    budget: usize,
    budget_used: usize,
    starved: Vec<u64>,
    spare: Option<OwnedFd>,
    max_input: u64,
}

/// Sends a refusal greeting on a new connection and lets it go (non-blocking: a few bytes
/// into an empty socket buffer).
fn refuse(stream: &UnixStream, status: u32, sentence: &str) {
    let header = ReplyHeader {
        id: GREETING_ID,
        status,
        len: sentence.len() as u32,
    };
    let mut bytes = header.to_bytes().to_vec();
    bytes.extend_from_slice(sentence.as_bytes());
    let _ = rustix::net::send(stream, &bytes, SendFlags::NOSIGNAL | SendFlags::DONTWAIT);
}

impl Loop {
    fn run(&mut self) {
        let mut events = Vec::with_capacity(256);
        let tick = (self.idle_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let timeout = rustix::time::Timespec {
            tv_sec: tick.as_secs() as i64,
            tv_nsec: tick.subsec_nanos().into(),
        };
        let mut last_sweep = Instant::now();
        loop {
            // SeqCst: see `Server::shutdown`.
            if self.stopping.load(Ordering::SeqCst) {
                break;
            }
            events.clear();
            match epoll::wait(
                &self.epoll,
                rustix::buffer::spare_capacity(&mut events),
                Some(&timeout),
            ) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
            for event in events.drain(..) {
                let (flags, key) = (event.flags, event.data.u64());
                match key {
                    LISTENER => self.accept(),
                    WAKER => {
                        for id in self.waker.take() {
                            self.flush(id);
                        }
                    }
                    id => {
                        // Input first, even with a hang-up: what the client sent before it
                        // went is served (the read sees the end and closes the connection).
                        if flags.contains(epoll::EventFlags::IN) {
                            self.read(id);
                        } else if flags.intersects(epoll::EventFlags::ERR | epoll::EventFlags::HUP)
                        {
                            self.close(id);
                            continue;
                        }
                        if flags.contains(epoll::EventFlags::OUT) {
                            self.flush(id);
                        }
                    }
                }
            }
            if last_sweep.elapsed() >= tick {
                last_sweep = Instant::now();
                self.sweep();
            }
        }
        let ids: Vec<u64> = self.connections.keys().copied().collect();
        for id in ids {
            self.close(id);
        }
    }

    fn accept(&mut self) {
        for _ in 0..64 {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error)
                    if matches!(
                        error.raw_os_error(),
                        Some(libc::EMFILE) | Some(libc::ENFILE)
                    ) =>
                {
                    // Out of descriptors: free the spare to refuse this client, not leave it
                    // waiting (and the listener readable) for ever.
                    self.spare = None;
                    if let Ok((stream, _)) = self.listener.accept() {
                        refuse(
                            &stream,
                            REFUSED_BUSY,
                            "the ringmap device is out of file descriptors: it serves as many \
                             connections as its descriptor limit allows; close some clients or \
                             raise its limit (ulimit -n) and try again",
                        );
                    }
                    self.spare = open_spare();
                    return;
                }
                Err(_) => return,
            };
            if let Err(sentence) = check_peer(&stream, self.group) {
                refuse(&stream, REFUSED_ACCESS, &sentence);
                continue;
            }
            if self.connections.len() >= self.max_connections {
                refuse(
                    &stream,
                    REFUSED_BUSY,
                    &format!(
                        "the ringmap device serves {} connections, its limit: close some \
                         clients and try again",
                        self.max_connections
                    ),
                );
                continue;
            }
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            let interest = epoll::EventFlags::IN;
            if epoll::add(
                &self.epoll,
                &stream,
                epoll::EventData::new_u64(id),
                interest,
            )
            .is_err()
            {
                continue;
            }
            if let Ok(credentials) = rustix::net::sockopt::socket_peercred(&stream) {
                // Who holds a mapping (STATS) and who may REVOKE it.
                self.device.platform().set_peer(
                    HandleId(id),
                    Peer {
                        pid: credentials.pid.as_raw_nonzero().get() as u64,
                        uid: credentials.uid.as_raw(),
                    },
                );
            }
            let shared = Arc::new(Connection {
                id,
                outbox: Mutex::new(Outbox::default()),
                waker: self.waker.clone(),
            });
            shared.queue(GREETING_ID, 0, &[], Vec::new(), true);
            self.connections.insert(
                id,
                Client {
                    shared,
                    stream,
                    framer: Framer::new(self.max_input),
                    charged: 0,
                    last_active: Instant::now(),
                    mapped: false,
                    starved: false,
                    interest,
                },
            );
            self.flush(id);
        }
    }

    /// Reads what `id` has sent (up to its turn, its input budget) and serves the requests.
    fn read(&mut self, id: u64) {
        let mut staging = [0u8; 16 << 10];
        let mut read = 0;
        let mut output = [0u8; MAX_OUTPUT as usize];
        let mut ended = false;
        while read < READ_TURN {
            let Some(client) = self.connections.get_mut(&id) else {
                return;
            };
            if lock(&client.shared.outbox).bytes > OUTBOX_LIMIT {
                break;
            }
            let mut room = staging.len();
            let mut limit = usize::MAX;
            if let Some(remaining) = client.framer.body_remaining() {
                // What the buffer may grow to: the free allowance, plus what is charged to
                // it already, plus what is left of the budget.
                limit = FREE_INPUT + client.charged + self.budget.saturating_sub(self.budget_used);
                let may_take = limit.saturating_sub(client.framer.body_len());
                if may_take == 0 {
                    if !client.starved {
                        client.starved = true;
                        self.starved.push(id);
                    }
                    break;
                }
                room = room.min(remaining).min(may_take);
            }
            let n = match rustix::io::read(&client.stream, &mut staging[..room]) {
                Ok(0) => {
                    ended = true;
                    break;
                }
                Ok(n) => n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::AGAIN) => break,
                Err(_) => {
                    ended = true;
                    break;
                }
            };
            read += n;
            client.last_active = Instant::now();
            let device = &self.device;
            let shared = &client.shared;
            let mapped = &mut client.mapped;
            client.framer.push(&staging[..n], limit, |frame| {
                serve_frame(device, shared, mapped, frame, &mut output);
            });
            client.framer.shrink(FREE_INPUT);
            let charge = client.framer.buffered().saturating_sub(FREE_INPUT);
            let freed = charge < client.charged;
            self.budget_used = self.budget_used - client.charged + charge;
            client.charged = charge;
            if freed {
                self.feed_starved();
            }
        }
        if ended {
            self.close(id);
            return;
        }
        self.flush(id);
    }

    /// The budget freed: read the connections that waited for it again.
    fn feed_starved(&mut self) {
        for id in std::mem::take(&mut self.starved) {
            if let Some(client) = self.connections.get_mut(&id) {
                client.starved = false;
                self.update_interest(id);
            }
        }
    }

    /// Sends what `id`'s outbox holds, as far as the socket takes it now.
    fn flush(&mut self, id: u64) {
        let Some(client) = self.connections.get_mut(&id) else {
            return;
        };
        let mut failed = false;
        {
            let mut outbox = lock(&client.shared.outbox);
            while let Some(message) = outbox.queue.front_mut() {
                match send_some(&client.stream, message) {
                    Ok(0) => break,
                    Ok(n) => {
                        message.sent += n;
                        client.last_active = Instant::now();
                        if message.sent == message.bytes.len() {
                            let done = outbox.queue.pop_front().expect("a front");
                            outbox.bytes -= done.bytes.len();
                        }
                    }
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
        }
        if failed {
            self.close(id);
        } else {
            self.update_interest(id);
        }
    }

    fn update_interest(&mut self, id: u64) {
        let Some(client) = self.connections.get_mut(&id) else {
            return;
        };
        let waiting = lock(&client.shared.outbox).bytes;
        let mut interest = epoll::EventFlags::empty();
        if !client.starved && waiting <= OUTBOX_LIMIT {
            interest |= epoll::EventFlags::IN;
        }
        if waiting > 0 {
            interest |= epoll::EventFlags::OUT;
        }
        if interest != client.interest {
            client.interest = interest;
            let _ = epoll::modify(
                &self.epoll,
                &client.stream,
                epoll::EventData::new_u64(id),
                interest,
            );
        }
        // Anything read but unanswered because the outbox was full is read again once it
        // drains (level-triggered input).
    }

    /// Closes connections idle for too long.
    fn sweep(&mut self) {
        let now = Instant::now();
        let idle: Vec<u64> = self
            .connections
            .iter()
            .filter(|(_, client)| {
                let outbox = lock(&client.shared.outbox);
                let waiting_on_client = client.framer.mid_message() || outbox.bytes > 0;
                let holds_something = client.mapped || outbox.query_pending;
                (waiting_on_client || !holds_something)
                    && now.duration_since(client.last_active) >= self.idle_timeout
            })
            .map(|(id, _)| *id)
            .collect();
        for id in idle {
            self.close(id);
        }
    }

    fn close(&mut self, id: u64) {
        let Some(client) = self.connections.remove(&id) else {
            return;
        };
        let _ = epoll::delete(&self.epoll, &client.stream);
        self.budget_used -= client.charged;
        if client.charged > 0 {
            self.feed_starved();
        }
        // Its mapping and pending QUERY go (the QUERY's reply lands in an outbox nobody
        // sends any more).
        self.device.close(HandleId(id));
        self.device.platform().forget_peer(HandleId(id));
        let _ = client.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// Sends what the socket takes of `message` without blocking; its descriptors with its first
/// byte. `Ok(0)`: the socket is full.
fn send_some(stream: &UnixStream, message: &Outgoing) -> io::Result<usize> {
    let flags = SendFlags::NOSIGNAL | SendFlags::DONTWAIT;
    loop {
        let rest = &message.bytes[message.sent..];
        let sent = if message.sent == 0 && !message.fds.is_empty() {
            let fds: Vec<BorrowedFd<'_>> = message.fds.iter().map(AsFd::as_fd).collect();
            let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
                return Err(io::Error::other("too many descriptors"));
            }
            rustix::net::sendmsg(stream, &[IoSlice::new(rest)], &mut control, flags)
        } else {
            rustix::net::send(stream, rest, flags)
        };
        match sent {
            Ok(n) => return Ok(n),
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::AGAIN) => return Ok(0),
            Err(errno) => return Err(errno.into()),
        }
    }
}

/// Serves one message of `connection`: the device's reply, if any, goes into its outbox.
fn serve_frame(
    device: &Device<Host>,
    connection: &Arc<Connection>,
    mapped: &mut bool,
    frame: Frame<'_>,
    output: &mut [u8; MAX_OUTPUT as usize],
) {
    let handle = HandleId(connection.id);
    let (header, request, input) = match frame {
        Frame::Refused { id, status } => {
            connection.reply(id, status, &[], Vec::new());
            return;
        }
        Frame::Cancel { id } => {
            let cancelled =
                device.cancel_query(|query| query.connection.id == connection.id && query.id == id);
            if let Some(query) = cancelled {
                device
                    .platform()
                    .complete_query(query, Err(Status::Cancelled));
            }
            return;
        }
        Frame::Request {
            header,
            request,
            input,
        } => (header, request, input),
    };
    let output_len = header.output_len.min(MAX_OUTPUT) as usize;
    let id = header.id;
    let outcome = device.request(handle, request, input, &mut output[..output_len], || {
        lock(&connection.outbox).query_pending = true;
        Ok(PendingQuery {
            connection: connection.clone(),
            id,
        })
    });
    match outcome {
        Ok(Outcome::Done(len)) => {
            let mut fds = Vec::new();
            match request {
                Request::Map => {
                    *mapped = true;
                    // The consumer page's descriptor (`map_view` made it), and duplicates of
                    // the read-only ones: the reply owns them until it is sent.
                    let page = device.platform().take_map_fd(handle);
                    let [producer_page, data] = device.platform().memory().client_fds();
                    let shared = producer_page
                        .try_clone_to_owned()
                        .and_then(|p| Ok((p, data.try_clone_to_owned()?)));
                    match (page, shared) {
                        (Some(page), Ok((producer_page, data))) => {
                            fds = vec![page, producer_page, data];
                        }
                        _ => {
                            // Out of descriptors: undo the mapping, refuse.
                            let _ = device.request(
                                handle,
                                Request::Unmap,
                                &unmap_input(),
                                &mut [],
                                || Err(Status::InvalidDeviceState),
                            );
                            *mapped = false;
                            connection.reply(id, Status::InsufficientResources, &[], Vec::new());
                            return;
                        }
                    }
                }
                Request::Unmap => *mapped = false,
                _ => {}
            }
            connection.reply(id, Status::Success, &output[..len], fds);
        }
        Ok(Outcome::Pending) => {}
        Err(status) => connection.reply(id, status, &[], Vec::new()),
    }
}

/// An UNMAP request's input (an empty request struct).
fn unmap_input() -> [u8; 8] {
    let mut input = [0u8; 8];
    input[..4].copy_from_slice(&8u32.to_le_bytes());
    input
}

/// Feeds `chunks` to a new connection of `device` as if a client sent them, serves what they
/// ask, and closes the connection; returns the reply bytes it would have sent (fuzzing).
#[doc(hidden)]
pub fn feed_connection(device: &Arc<Device<Host>>, chunks: &[&[u8]]) -> io::Result<usize> {
    let waker = Arc::new(Waker::new()?);
    // Well above any id the server's own loop hands out, so they cannot meet.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1 << 62);
    // Relaxed: only uniqueness matters, which the read-modify-write gives.
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    let connection = Arc::new(Connection {
        id,
        outbox: Mutex::new(Outbox::default()),
        waker,
    });
    let mut framer = Framer::new(16 + device.ring().capacity().as_u64());
    let mut output = [0u8; MAX_OUTPUT as usize];
    let mut mapped = false;
    for chunk in chunks {
        framer.push(chunk, usize::MAX, |frame| {
            serve_frame(device, &connection, &mut mapped, frame, &mut output);
        });
    }
    device.close(HandleId(id));
    let replies = lock(&connection.outbox).bytes;
    Ok(replies)
}
