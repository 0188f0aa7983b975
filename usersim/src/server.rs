//! The driver's own code serving requests on a Unix socket: this is the I/O manager.
//!
//! [`Server::start`] loads `ringmap-driver` into a simulated kernel ([`wdk_usersim::sim`]):
//! DriverEntry, then device add. One thread runs an `epoll` loop over the listening socket and
//! every connection (one descriptor each, non-blocking). A connection is a file object opened
//! in its client's process (its `SO_PEERCRED` process id); its bytes are cut into requests by
//! a [`Framer`] as they arrive, and each request becomes an IRP (METHOD_BUFFERED: the input
//! copied into a system buffer) through the driver's `EvtIoInCallerContext`, in the client's
//! process context, and its queue. A [`CODE_CANCEL`](crate::protocol::CODE_CANCEL) message is
//! `CancelIoEx` of the request it names; a connection's end (EOF, an error: the client died)
//! is the last `CloseHandle`: `EvtFileCleanup`, then `EvtFileClose`. The section handles a MAP
//! opens in the client's process leave the kernel's handle table as descriptors with exactly
//! the access the driver asked for, sent with the reply (`SCM_RIGHTS`).
//!
//! When the driver completes an IRP, its completion is queued on the connection (whatever
//! thread completes it: the loop, a producer completing a pending QUERY, a cancel routine),
//! and the loop turns it into the reply and sends it without blocking: no client that stops
//! reading can hold up a producer or another client.
//!
//! What a client may cost is bounded: a request's input is buffered as it arrives (input
//! buffers past a small free allowance share one budget, and a connection that would exceed
//! it is not read until the budget frees); a connection whose outbox is full is not read
//! until it drains; connections are capped (with a refusal the client turns into a
//! sentence), and idle ones are closed.
//!
//! When the server stops, every connection is closed, the driver is unloaded (device
//! cleanup, EvtDriverUnload), and the [`Report`] says which kernel rules it broke and what it
//! left behind; both must be empty.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ringmap_core::Capacity;
use ringmap_core::abi::{EmptyRequest, MapReply, Request, SetEventRequest, Status, Wire};
use rustix::event::epoll;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use wdk_usersim::sim::{File, Irp, Sim, Violation};

use crate::framing::{Frame, Framer};
use crate::protocol::{GREETING_ID, MAX_OUTPUT, REFUSED_ACCESS, REFUSED_BUSY, ReplyHeader};

/// Input a connection may buffer outside the shared budget (every request but a large
/// WRITE fits).
const FREE_INPUT: usize = 64 << 10;

/// Reply bytes a connection may have waiting before it is no longer read.
const OUTBOX_LIMIT: usize = 64 << 10;

/// Bytes read from one connection before the loop turns to the others.
const READ_TURN: usize = 1 << 20;

/// Descriptors kept free for the server's own use (the listener, the epoll and wake
/// descriptors, the simulated kernel's memfds, MAP's descriptors, standard streams) when the
/// connection cap is derived from the descriptor limit.
const RESERVED_FDS: u64 = 20;

thread_local! {
    /// Set on the loop's thread: a completion there needs no wake-up.
    static ON_LOOP: Cell<bool> = const { Cell::new(false) };
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Wakes the loop from another thread: an eventfd, and the connections with new replies.
struct Waker {
    eventfd: OwnedFd,
    ready: Mutex<Vec<u64>>,
    /// Connections with an event set (SET_EVENT): their QUERY replies may wait for the loop's
    /// next turn ([`Connection::on_complete`]), so while there are any, and a system thread
    /// runs that could complete one, the loop turns at least every [`EVENT_REPLY_DELAY`].
    with_event: AtomicUsize,
}

/// The longest a QUERY's reply waits for the loop once the connection's event is set.
const EVENT_REPLY_DELAY: Duration = Duration::from_millis(10);

impl Waker {
    fn new() -> io::Result<Waker> {
        Ok(Waker {
            eventfd: rustix::event::eventfd(
                0,
                rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
            )?,
            ready: Mutex::new(Vec::new()),
            with_event: AtomicUsize::new(0),
        })
    }

    /// Tells the loop that `connection` has completions (or, with `None`, to look at its
    /// flags). On the loop's own thread only the list is written: the loop looks at it
    /// before it waits again.
    fn wake(&self, connection: Option<u64>) {
        if let Some(id) = connection {
            lock(&self.ready).push(id);
        }
        if !ON_LOOP.with(Cell::get) {
            // Non-blocking: if the counter is somehow full the loop is awake anyway.
            let _ = rustix::io::write(&self.eventfd, &1u64.to_ne_bytes());
        }
    }

    /// Notes that `connection` has completions for the loop's next turn, without waking it.
    fn note(&self, connection: u64) {
        lock(&self.ready).push(connection);
    }

    /// The connections with completions, without reading the eventfd (the loop's own).
    fn take_ready(&self) -> Vec<u64> {
        std::mem::take(&mut *lock(&self.ready))
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
}

/// An IRP the driver completed: the request's id on the wire, whether it was a MAP, and the
/// completion's status and output.
struct Completed {
    id: u64,
    request: Request,
    status: i32,
    output: Vec<u8>,
    /// Its reply is sent already (by the thread that completed it): only the IRP is let go.
    replied: bool,
}

/// One client connection, as other threads see it: its number, its outbox, and the
/// completions waiting to become replies.
struct Connection {
    id: u64,
    outbox: Mutex<Outbox>,
    completed: Mutex<Vec<Completed>>,
    waker: Arc<Waker>,
    /// The socket, for a completion that may send its reply itself (`None`: fuzzing).
    stream: Option<Arc<UnixStream>>,
    /// The client has an event set (SET_EVENT): it wakes on that, not on a QUERY's reply.
    /// Written by the loop only.
    event_set: AtomicBool,
}

/// A reply's bytes on the wire: its header, then its body.
fn reply_bytes(id: u64, status: u32, body: &[u8]) -> Vec<u8> {
    let header = ReplyHeader {
        id,
        status,
        len: body.len() as u32,
    };
    let mut bytes = Vec::with_capacity(ReplyHeader::SIZE + body.len());
    bytes.extend_from_slice(&header.to_bytes());
    bytes.extend_from_slice(body);
    bytes
}

impl Connection {
    /// Queues one reply (with `fds` for MAP); never blocks on the socket.
    fn queue(&self, id: u64, status: u32, body: &[u8], fds: Vec<OwnedFd>) {
        let bytes = reply_bytes(id, status, body);
        let mut outbox = lock(&self.outbox);
        outbox.bytes += bytes.len();
        outbox.queue.push_back(Outgoing {
            bytes,
            fds,
            sent: 0,
        });
    }

    /// The I/O manager's completion routine of an IRP of this connection.
    ///
    /// A QUERY completed on another thread (a producer's wake-up) of a connection with an
    /// event set is queued for the loop's next turn, without waking it: the driver set the
    /// client's event in the same step, which is what the client waits on, and anything more
    /// the producer's thread does before it sleeps, or any other thread it wakes, delays that
    /// client (on two cores it is woken onto the producer's core; `ringmap bench`, interleaved
    /// against the build before: the p50 ratio to an eventfd wake-up fell from 3.5x to 2.7x
    /// on a loaded machine, 1.25x to 1.15x on a quieter one). The loop
    /// sends it when it next turns: at the client's next message, or within
    /// [`EVENT_REPLY_DELAY`] (see [`Loop::run`]). A QUERY of a connection without an event
    /// sends its reply from the completing thread, without blocking, if nothing is queued
    /// before it (the loop lets the IRP go when it next serves the connection). Anything
    /// else, or a reply the socket does not take whole, goes through the loop, woken.
    fn on_complete(self: &Arc<Self>, id: u64, request: Request) -> wdk_usersim::sim::OnComplete {
        let connection = self.clone();
        Box::new(move |status, output| {
            let off_loop = request == Request::Query && !ON_LOOP.with(Cell::get);
            // Relaxed: written by the loop, which also sent the QUERY; a stale answer only
            // picks the other, equally correct, way of delivering the reply.
            let lazy = off_loop && connection.event_set.load(Ordering::Relaxed);
            let replied = off_loop && !lazy && connection.send_now(id, status as u32, output);
            lock(&connection.completed).push(Completed {
                id,
                request,
                status,
                output: if replied { Vec::new() } else { output.to_vec() },
                replied,
            });
            if replied || lazy {
                connection.waker.note(connection.id);
            } else {
                connection.waker.wake(Some(connection.id));
            }
        })
    }

    /// Notes whether the client has an event set now (SET_EVENT succeeded), for the loop's
    /// count of such connections.
    fn note_event(&self, set: bool) {
        // Relaxed: the flag and the count are read as hints (see `on_complete`, `Loop::run`).
        if self.event_set.swap(set, Ordering::Relaxed) != set {
            if set {
                self.waker.with_event.fetch_add(1, Ordering::Relaxed);
            } else {
                self.waker.with_event.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Sends a reply at once if the outbox is empty: `true` if the socket took some of it
    /// (the rest, if any, is queued for the loop, which is woken), `false` if it is the
    /// caller's to queue.
    fn send_now(&self, id: u64, status: u32, body: &[u8]) -> bool {
        let Some(stream) = &self.stream else {
            return false;
        };
        let mut outbox = lock(&self.outbox);
        if !outbox.queue.is_empty() {
            return false;
        }
        let bytes = reply_bytes(id, status, body);
        let mut message = Outgoing {
            bytes,
            fds: Vec::new(),
            sent: 0,
        };
        match send_some(stream, &message) {
            Ok(n) if n == message.bytes.len() => true,
            Ok(0) | Err(_) => false,
            Ok(n) => {
                message.sent = n;
                outbox.bytes += message.bytes.len();
                outbox.queue.push_back(message);
                drop(outbox);
                self.waker.wake(None);
                true
            }
        }
    }
}

/// A handle on the device, as the I/O manager keeps it: the file object, the process it
/// belongs to, the IRPs the driver has not completed, whether it holds the mapping.
struct Handle {
    file: File,
    process: u64,
    shared: Arc<Connection>,
    /// Pending IRPs by their id on the wire.
    pending: HashMap<u64, Irp>,
    mapped: bool,
    /// Descriptors the client sent (`SCM_RIGHTS`), oldest first, for the SET_EVENT that
    /// names them.
    incoming: VecDeque<OwnedFd>,
}

/// The most descriptors a client may have sent ahead of the requests that use them.
const MAX_INCOMING_FDS: usize = 4;

/// Whether `fd` is an eventfd (what SET_EVENT takes on Linux).
fn is_eventfd(fd: &OwnedFd) -> bool {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .is_ok_and(|target| target.as_os_str() == "anon_inode:[eventfd]")
}

impl Handle {
    fn open(sim: &Sim, process: u64, shared: Arc<Connection>) -> Handle {
        Handle {
            file: sim.open_in(process),
            process,
            shared,
            pending: HashMap::new(),
            mapped: false,
            incoming: VecDeque::new(),
        }
    }

    /// Sends one message to the driver as an IRP (or, for CANCEL, cancels one).
    fn serve(&mut self, sim: &Sim, frame: Frame<'_>) {
        match frame {
            Frame::Refused { id, status } => {
                self.shared.queue(id, status.ntstatus(), &[], Vec::new());
            }
            Frame::Cancel { id } => {
                // CancelIoEx: the cancel routine completes it (through `on_complete`), unless
                // the completion won the race.
                if let Some(irp) = self.pending.get(&id) {
                    sim.cancel_id(irp.id());
                }
            }
            Frame::Request {
                header,
                request,
                input,
            } => {
                let output_len = header.output_len.min(MAX_OUTPUT) as usize;
                let id = header.id;
                if self.pending.contains_key(&id) {
                    // Two outstanding requests with one id: their replies could not be told
                    // apart.
                    self.shared
                        .queue(id, Status::InvalidParameter.ntstatus(), &[], Vec::new());
                    return;
                }
                if request == Request::SetEvent {
                    return self.set_event(sim, id, input);
                }
                let irp = sim.ioctl_then(
                    self.file,
                    request.ioctl(),
                    input,
                    output_len,
                    self.shared.on_complete(id, request),
                );
                if irp.result().is_none() {
                    self.pending.insert(id, irp);
                }
            }
        }
    }

    /// SET_EVENT: `event_handle` 1 names the descriptor that came with the message (an
    /// eventfd), which enters the client's handle table as an event; its handle goes to the
    /// driver in the request, and is closed once the driver has its own reference (the
    /// client keeps its descriptor). 0 takes the event away. Anything else names nothing
    /// this client could have.
    fn set_event(&mut self, sim: &Sim, id: u64, input: &[u8]) {
        let refuse = |shared: &Connection| {
            shared.queue(id, Status::InvalidParameter.ntstatus(), &[], Vec::new());
        };
        let Ok(mut request) = SetEventRequest::read_exact(input) else {
            return refuse(&self.shared);
        };
        let handle = match request.event_handle {
            0 => None,
            1 => {
                let Some(fd) = self.incoming.pop_front() else {
                    return refuse(&self.shared);
                };
                if !is_eventfd(&fd) {
                    return refuse(&self.shared);
                }
                Some(sim.insert_user_event(self.process, fd))
            }
            _ => return refuse(&self.shared),
        };
        request.event_handle = handle.unwrap_or(0);
        let mut bytes = [0u8; SetEventRequest::SIZE as usize];
        if request.write_to(&mut bytes).is_err() {
            return refuse(&self.shared);
        }
        let irp = sim.ioctl_then(
            self.file,
            Request::SetEvent.ioctl(),
            &bytes,
            0,
            self.shared.on_complete(id, Request::SetEvent),
        );
        debug_assert!(irp.result().is_some(), "SET_EVENT never pends");
        if irp.result().is_some_and(|(status, _)| status >= 0) {
            self.shared.note_event(handle.is_some());
        }
        if let Some(handle) = handle {
            sim.close_user_handle(handle);
        }
    }

    /// Takes the descriptors a client sent; `false` if it sent more than it may have
    /// waiting (the connection is then closed).
    fn receive_fds(&mut self, fds: impl Iterator<Item = OwnedFd>) -> bool {
        self.incoming.extend(fds);
        self.incoming.len() <= MAX_INCOMING_FDS
    }

    /// Turns the driver's completions into replies: a MAP's handles, taken out of the
    /// process's handle table, travel with it as descriptors.
    fn finish(&mut self, sim: &Sim) {
        let completed = std::mem::take(&mut *lock(&self.shared.completed));
        for done in completed {
            // The IRP is let go (retired in the kernel).
            drop(self.pending.remove(&done.id));
            if done.replied {
                continue;
            }
            let mut output = done.output;
            let mut fds = Vec::new();
            let mut status = done.status as u32;
            if status == Status::Success.ntstatus() {
                match done.request {
                    Request::Map => match self.hand_over(sim, &mut output) {
                        Some(descriptors) => {
                            fds = descriptors;
                            self.mapped = true;
                        }
                        None => {
                            status = Status::InsufficientResources.ntstatus();
                            output.clear();
                            self.undo_map(sim);
                        }
                    },
                    Request::Unmap => self.mapped = false,
                    _ => {}
                }
            }
            self.shared.queue(done.id, status, &output, fds);
        }
    }

    /// The three handles of a MAP reply, as descriptors in the reply's order; the reply
    /// then names them by index (0, 1, 2), as the protocol says.
    fn hand_over(&self, sim: &Sim, output: &mut [u8]) -> Option<Vec<OwnedFd>> {
        let mut reply = MapReply::read_exact(output).ok()?;
        let handles = [
            reply.consumer_page_handle,
            reply.producer_page_handle,
            reply.data_handle,
        ];
        let fds: Vec<OwnedFd> = handles
            .iter()
            .filter_map(|&handle| sim.take_user_handle(self.process, handle))
            .collect();
        if fds.len() != handles.len() {
            return None;
        }
        reply.consumer_page_handle = 0;
        reply.producer_page_handle = 1;
        reply.data_handle = 2;
        reply.write_to(output).ok()?;
        Some(fds)
    }

    /// A MAP whose reply cannot be delivered is undone with an UNMAP.
    fn undo_map(&self, sim: &Sim) {
        let mut input = [0u8; EmptyRequest::SIZE as usize];
        if EmptyRequest::new().write_to(&mut input).is_ok() {
            let _ = sim
                .ioctl(self.file, Request::Unmap.ioctl(), &input, 0)
                .result();
        }
    }

    /// The last CloseHandle: EvtFileCleanup (which completes what is pending), EvtFileClose.
    fn close(self, sim: &Sim) {
        sim.close(self.file);
        drop(self.pending);
    }

    /// Whether the handle holds something a client may wait on for long (a mapping, a
    /// pending QUERY).
    fn holds_something(&self) -> bool {
        self.mapped || !self.pending.is_empty()
    }
}

/// What a driver run left: the kernel rules it broke, and what it had not freed when it
/// was unloaded. Both empty for a correct driver.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Rules broken while it ran.
    pub violations: Vec<Violation>,
    /// What the leak report found after the unload.
    pub leaks: Vec<String>,
}

impl Report {
    /// No rule broken and nothing left behind.
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty() && self.leaks.is_empty()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_clean() {
            return write!(f, "the driver broke no kernel rule and left nothing behind");
        }
        write!(
            f,
            "the driver broke {} kernel rule(s) and left {} thing(s) behind",
            self.violations.len(),
            self.leaks.len()
        )?;
        for violation in &self.violations {
            write!(f, "\n  {violation}")?;
        }
        for leak in &self.leaks {
            write!(f, "\n  leak: {leak}")?;
        }
        Ok(())
    }
}

/// The driver (`ringmap-driver`), loaded into a simulated kernel of its own.
pub struct LoadedDriver {
    sim: Sim,
    capacity: Capacity,
}

impl LoadedDriver {
    /// DriverEntry and device add, with the registry's RingCapacity set to `capacity`.
    pub fn load(capacity: Capacity) -> io::Result<LoadedDriver> {
        let sim = Sim::new();
        let registry = u32::try_from(capacity.as_u64())
            .map_err(|_| io::Error::other("the capacity does not fit the registry's DWORD"))?;
        sim.set_ring_capacity(Some(registry));
        sim.load(ringmap_driver::driver_entry).map_err(|status| {
            io::Error::other(format!(
                "the driver did not load: DriverEntry or device add failed with NTSTATUS \
                 {status:#010x}"
            ))
        })?;
        Ok(LoadedDriver { sim, capacity })
    }

    /// The ring's capacity.
    pub fn capacity(&self) -> Capacity {
        self.capacity
    }

    /// The simulated kernel it runs in (fuzzing and tests send IRPs through it directly).
    pub fn sim(&self) -> &Sim {
        &self.sim
    }

    /// Unloads the driver (device cleanup, EvtDriverUnload) and reports.
    pub fn unload(&self) -> Report {
        let leaks = self.sim.unload();
        Report {
            violations: self.sim.violations(),
            leaks,
        }
    }
}

/// Feeds `chunks` to a new handle of `driver` as if a client sent them, serves what they
/// ask, and closes the handle; returns the reply bytes it would have sent (fuzzing).
#[doc(hidden)]
pub fn feed_connection(driver: &LoadedDriver, chunks: &[&[u8]]) -> io::Result<usize> {
    let shared = Arc::new(Connection {
        id: 0,
        outbox: Mutex::new(Outbox::default()),
        completed: Mutex::new(Vec::new()),
        waker: Arc::new(Waker::new()?),
        stream: None,
        event_set: AtomicBool::new(false),
    });
    let mut handle = Handle::open(&driver.sim, u64::from(std::process::id()), shared.clone());
    let mut framer = Framer::new(16 + driver.capacity.as_u64());
    for chunk in chunks {
        framer.push(chunk, usize::MAX, |frame| handle.serve(&driver.sim, frame));
        handle.finish(&driver.sim);
    }
    handle.close(&driver.sim);
    let replies = lock(&shared.outbox).bytes;
    Ok(replies)
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

/// The driver listening on a Unix socket, served by a background thread. Stops when dropped
/// (printing its [`Report`] to standard error unless it is clean); [`Server::stop`] returns
/// the report.
pub struct Server {
    driver: Arc<LoadedDriver>,
    socket_path: PathBuf,
    /// The bound socket's device and inode: only that file is removed at the end.
    socket_id: (u64, u64),
    stopping: Arc<AtomicBool>,
    waker: Arc<Waker>,
    serve: Option<JoinHandle<()>>,
    report: Option<Report>,
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
    /// Loads the driver and listens at `config.socket_path`; returns once listening.
    pub fn start(config: ServerConfig) -> io::Result<Server> {
        let driver = Arc::new(LoadedDriver::load(config.capacity)?);
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
        let max_input = 16 + config.capacity.as_u64();
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
            driver: driver.clone(),
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
            driver,
            socket_path: config.socket_path,
            socket_id,
            stopping,
            waker,
            serve: Some(serve),
            report: None,
        })
    }

    /// Where it listens.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// Stops listening, closes every connection (their handles are cleaned up), unloads the
    /// driver (which stops its generator) and removes the socket (if it is still the one this
    /// server made). The report says what rules the driver broke and what it left behind.
    pub fn stop(mut self) -> Report {
        self.shutdown();
        self.report.take().unwrap_or_default()
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
        self.report = Some(self.driver.unload());
        if file_id(&self.socket_path) == Some(self.socket_id) {
            let _ = std::fs::remove_file(&self.socket_path);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
        if let Some(report) = self.report.take()
            && !report.is_clean()
        {
            eprintln!("ringmap serve: {report}");
        }
    }
}

/// Runs the driver at `config.socket_path` for ever, if the caller handles no signals:
/// `ringmap serve` handles them itself and stops the [`Server`].
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
    handle: Handle,
    /// Shared with [`Connection::stream`]: one descriptor per connection.
    stream: Arc<UnixStream>,
    framer: Framer,
    /// The framer's buffer beyond the free allowance, counted in the loop's budget.
    charged: usize,
    /// When it last sent a byte or took one of its replies.
    last_active: Instant,
    /// Not read until the input budget frees.
    starved: bool,
    interest: epoll::EventFlags,
}

struct Loop {
    epoll: OwnedFd,
    listener: UnixListener,
    waker: Arc<Waker>,
    driver: Arc<LoadedDriver>,
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
        let event_reply_timeout = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: EVENT_REPLY_DELAY.as_nanos() as i64,
        };
        let mut last_sweep = Instant::now();
        ON_LOOP.with(|on| on.set(true));
        loop {
            // SeqCst: see `Server::shutdown`.
            if self.stopping.load(Ordering::SeqCst) {
                break;
            }
            events.clear();
            // A QUERY completed by a system thread for a connection with an event set waits
            // for this loop's next turn (`Connection::on_complete`): while that can happen,
            // turn at least every EVENT_REPLY_DELAY. Relaxed: a hint; a connection whose
            // event was set just now has a QUERY in this loop's hands, not yet pended.
            let prompt = self.waker.with_event.load(Ordering::Relaxed) > 0
                && self.driver.sim.system_threads_running();
            match epoll::wait(
                &self.epoll,
                rustix::buffer::spare_capacity(&mut events),
                Some(if prompt {
                    &event_reply_timeout
                } else {
                    &timeout
                }),
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
                            self.finish(id);
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
            // Completions that came on this thread (a WRITE completing another handle's
            // QUERY, a cancel routine run here).
            for id in self.waker.take_ready() {
                self.finish(id);
                self.flush(id);
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
            let stream = Arc::new(stream);
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
            // The file object is opened in the client's process: the handles a MAP opens
            // land in its handle table, and STATS names it as the mapping's process.
            let process = rustix::net::sockopt::socket_peercred(&*stream)
                .map_or(0, |credentials| {
                    credentials.pid.as_raw_nonzero().get() as u64
                });
            let shared = Arc::new(Connection {
                id,
                outbox: Mutex::new(Outbox::default()),
                completed: Mutex::new(Vec::new()),
                waker: self.waker.clone(),
                stream: Some(stream.clone()),
                event_set: AtomicBool::new(false),
            });
            shared.queue(GREETING_ID, 0, &[], Vec::new());
            self.connections.insert(
                id,
                Client {
                    handle: Handle::open(&self.driver.sim, process, shared),
                    stream,
                    framer: Framer::new(self.max_input),
                    charged: 0,
                    last_active: Instant::now(),
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
        let mut ended = false;
        while read < READ_TURN {
            let Some(client) = self.connections.get_mut(&id) else {
                return;
            };
            if lock(&client.handle.shared.outbox).bytes > OUTBOX_LIMIT {
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
            let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let received = rustix::net::recvmsg(
                &*client.stream,
                &mut [IoSliceMut::new(&mut staging[..room])],
                &mut control,
                RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT,
            );
            let mut fds = Vec::new();
            for message in control.drain() {
                if let RecvAncillaryMessage::ScmRights(rights) = message {
                    fds.extend(rights);
                }
            }
            // More descriptors at once than any request takes (the kernel dropped the rest:
            // the control data was truncated), or more waiting than requests use: the
            // connection ends.
            let truncated = received
                .as_ref()
                .is_ok_and(|r| r.flags.contains(rustix::net::ReturnFlags::CTRUNC));
            if truncated || !client.handle.receive_fds(fds.into_iter()) {
                ended = true;
                break;
            }
            let n = match received.map(|r| r.bytes) {
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
            let sim = &self.driver.sim;
            let handle = &mut client.handle;
            client
                .framer
                .push(&staging[..n], limit, |frame| handle.serve(sim, frame));
            handle.finish(sim);
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

    /// Turns `id`'s completed IRPs into replies.
    fn finish(&mut self, id: u64) {
        if let Some(client) = self.connections.get_mut(&id) {
            client.handle.finish(&self.driver.sim);
        }
    }

    /// Sends what `id`'s outbox holds, as far as the socket takes it now.
    fn flush(&mut self, id: u64) {
        let Some(client) = self.connections.get_mut(&id) else {
            return;
        };
        let mut failed = false;
        {
            let mut outbox = lock(&client.handle.shared.outbox);
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
        let waiting = lock(&client.handle.shared.outbox).bytes;
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
                let outbox = lock(&client.handle.shared.outbox);
                let waiting_on_client = client.framer.mid_message() || outbox.bytes > 0;
                let holds_something = client.handle.holds_something();
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
        // Its mapping and pending QUERY go (the QUERY's completion lands in a connection
        // nobody serves any more).
        client.handle.shared.note_event(false);
        client.handle.close(&self.driver.sim);
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
