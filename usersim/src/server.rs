//! The device in this process, serving requests on a Unix socket.
//!
//! One thread accepts connections; each connection is a handle ([`HandleId`] = connection
//! number) served by its own thread, which turns each request message into a call of
//! [`Device::request`]. Replies are written under the connection's writer lock, by its thread
//! or, for a pending QUERY, by whoever completes it (a producer, another connection's WRITE, a
//! CANCEL). A connection that ends (EOF, an error: the client died) is closed like a handle:
//! its mapping and its pending QUERY are cleaned up.

use std::collections::HashMap;
use std::io::{self, IoSlice, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use ringmap_core::Capacity;
use ringmap_core::abi::{QueryReply, Request, Status, Wire};
use ringmap_core::device::{Device, HandleId, NewMapping, Outcome, Platform, ViewHandles};
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

use crate::consumer_page::ConsumerPageMemory;
use crate::protocol::{CODE_CANCEL, MAX_OUTPUT, ReplyHeader, RequestHeader};
use crate::ring::RingMemory;

/// How long a reply may wait for a client that does not read its socket before the
/// connection is given up (so a stuck client cannot hold up a producer completing its QUERY).
const SEND_TIMEOUT: Duration = Duration::from_secs(2);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One client connection: its number and the writing side of its socket.
pub struct Connection {
    id: u64,
    writer: Mutex<UnixStream>,
}

impl Connection {
    /// Sends one reply; with `fds` for MAP. On failure the connection is shut down, so its
    /// thread sees the end and closes the handle.
    fn reply(&self, id: u64, status: Status, body: &[u8], fds: &[std::os::fd::BorrowedFd<'_>]) {
        let header = ReplyHeader {
            id,
            status: status.ntstatus(),
            len: body.len() as u32,
        };
        let mut message = Vec::with_capacity(ReplyHeader::SIZE + body.len());
        message.extend_from_slice(&header.to_bytes());
        message.extend_from_slice(body);
        let stream = lock(&self.writer);
        let sent = (|| -> io::Result<()> {
            let mut written = 0;
            if !fds.is_empty() {
                let mut space =
                    [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
                let mut control = SendAncillaryBuffer::new(&mut space);
                if !control.push(SendAncillaryMessage::ScmRights(fds)) {
                    return Err(io::Error::other("too many descriptors"));
                }
                written = rustix::net::sendmsg(
                    stream.as_fd(),
                    &[IoSlice::new(&message)],
                    &mut control,
                    SendFlags::NOSIGNAL,
                )?;
            }
            // `send` with MSG_NOSIGNAL: a client that went away must not raise SIGPIPE here.
            while written < message.len() {
                match rustix::net::send(&*stream, &message[written..], SendFlags::NOSIGNAL) {
                    Ok(n) => written += n,
                    Err(rustix::io::Errno::INTR) => {}
                    Err(errno) => return Err(errno.into()),
                }
            }
            Ok(())
        })();
        if sent.is_err() {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
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

    fn complete_query(&self, query: PendingQuery, reply: Result<QueryReply, Status>) {
        match reply {
            Ok(reply) => query
                .connection
                .reply(query.id, Status::Success, reply.as_bytes(), &[]),
            Err(status) => query.connection.reply(query.id, status, &[], &[]),
        }
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            socket_path: crate::protocol::default_socket_path(),
            capacity: Capacity::DEFAULT,
        }
    }
}

struct Shared {
    device: Arc<Device<Host>>,
    stopping: AtomicBool,
    next_connection: AtomicU64,
    connections: Mutex<HashMap<u64, (UnixStream, JoinHandle<()>)>>,
}

/// A usersim device listening on a Unix socket, served by background threads. Stops when
/// dropped.
pub struct Server {
    shared: Arc<Shared>,
    socket_path: PathBuf,
    listener: UnixListener,
    accept: Option<JoinHandle<()>>,
}

fn bind(path: &Path) -> io::Result<UnixListener> {
    match UnixListener::bind(path) {
        Ok(listener) => Ok(listener),
        Err(error) if error.kind() == io::ErrorKind::AddrInUse => {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("a ringmap device already listens at {}", path.display()),
                ));
            }
            // A socket left behind by a server that died: take its place.
            std::fs::remove_file(path)?;
            UnixListener::bind(path)
        }
        Err(error) => Err(error),
    }
}

impl Server {
    /// Makes the device and listens at `config.socket_path`; returns once listening.
    pub fn start(config: ServerConfig) -> io::Result<Server> {
        let device = new_device(config.capacity)?;
        let listener = bind(&config.socket_path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot listen at {}: {e}", config.socket_path.display()),
            )
        })?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&config.socket_path, std::fs::Permissions::from_mode(0o600))?;
        }
        let shared = Arc::new(Shared {
            device,
            stopping: AtomicBool::new(false),
            next_connection: AtomicU64::new(1),
            connections: Mutex::new(HashMap::new()),
        });
        let accept = {
            let shared = shared.clone();
            let listener = listener.try_clone()?;
            std::thread::Builder::new()
                .name("ringmap-accept".into())
                .spawn(move || accept_loop(&shared, &listener))?
        };
        Ok(Server {
            shared,
            socket_path: config.socket_path,
            listener,
            accept: Some(accept),
        })
    }

    /// Where it listens.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// The device (for tests).
    pub fn device(&self) -> &Arc<Device<Host>> {
        &self.shared.device
    }

    /// Stops listening, closes every connection (their handles are cleaned up), stops the
    /// generator and removes the socket.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        // SeqCst, as every access of `stopping`: a plain flag with no data behind it; the
        // strongest order costs nothing at shutdown and needs no pairing argument.
        self.shared.stopping.store(true, Ordering::SeqCst);
        // On Linux, shutting a listening socket down wakes its `accept` (EINVAL); a
        // connection of our own does too, should it not.
        let _ = rustix::net::shutdown(&self.listener, rustix::net::Shutdown::Both);
        let _ = UnixStream::connect(&self.socket_path);
        let _ = accept.join();
        let connections: Vec<_> = lock(&self.shared.connections).drain().collect();
        for (_, (stream, _)) in &connections {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        for (_, (_, thread)) in connections {
            let _ = thread.join();
        }
        self.shared.device.stop_generator();
        let _ = std::fs::remove_file(&self.socket_path);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Runs a device at `config.socket_path` until the process ends (`ringmap serve`).
pub fn serve_forever(config: ServerConfig) -> io::Result<()> {
    let server = Server::start(config)?;
    loop {
        std::thread::park();
        // SeqCst: see `shutdown`.
        if server.shared.stopping.load(Ordering::SeqCst) {
            return Ok(());
        }
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: &UnixListener) {
    loop {
        let accepted = listener.accept();
        // SeqCst: see `shutdown`.
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                // Out of descriptors or memory: wait a little rather than spin.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        // Relaxed: only uniqueness matters, which the read-modify-write gives.
        let id = shared.next_connection.fetch_add(1, Ordering::Relaxed);
        let started = (|| -> io::Result<()> {
            stream.set_write_timeout(Some(SEND_TIMEOUT))?;
            let connection = Arc::new(Connection {
                id,
                writer: Mutex::new(stream.try_clone()?),
            });
            let watcher = stream.try_clone()?;
            let thread = {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("ringmap-conn-{id}"))
                    .spawn(move || serve_connection(&shared, connection, stream))?
            };
            let mut connections = lock(&shared.connections);
            connections.retain(|_, (_, thread)| !thread.is_finished());
            connections.insert(id, (watcher, thread));
            Ok(())
        })();
        drop(started);
    }
}

/// Reads and drops `len` bytes.
fn skip(stream: &mut UnixStream, len: u64) -> io::Result<()> {
    let copied = io::copy(&mut Read::by_ref(stream).take(len), &mut io::sink())?;
    if copied != len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

fn serve_connection(shared: &Shared, connection: Arc<Connection>, mut stream: UnixStream) {
    let device = &shared.device;
    let handle = HandleId(connection.id);
    if let Ok(credentials) = rustix::net::sockopt::socket_peercred(&stream) {
        device.platform().set_peer(
            handle,
            Peer {
                pid: credentials.pid.as_raw_nonzero().get() as u64,
                uid: credentials.uid.as_raw(),
            },
        );
    }
    // WRITE's header and a payload as large as the ring; anything longer is refused.
    let max_input = 16 + device.ring().capacity().as_u64();
    let mut input = Vec::new();
    let mut output = vec![0u8; MAX_OUTPUT as usize];
    loop {
        let mut header = [0u8; RequestHeader::SIZE];
        if stream.read_exact(&mut header).is_err() {
            break;
        }
        let header = RequestHeader::from_bytes(&header);
        if header.code == CODE_CANCEL {
            let id = header.id;
            if header.input_len != 0 && skip(&mut stream, header.input_len.into()).is_err() {
                break;
            }
            let cancelled =
                device.cancel_query(|query| query.connection.id == connection.id && query.id == id);
            if let Some(query) = cancelled {
                device
                    .platform()
                    .complete_query(query, Err(Status::Cancelled));
            }
            continue;
        }
        if u64::from(header.input_len) > max_input {
            if skip(&mut stream, header.input_len.into()).is_err() {
                break;
            }
            connection.reply(header.id, Status::InvalidParameter, &[], &[]);
            continue;
        }
        input.resize(header.input_len as usize, 0);
        if stream.read_exact(&mut input).is_err() {
            break;
        }
        let Some(request) = Request::from_code(header.code) else {
            connection.reply(header.id, Status::InvalidDeviceRequest, &[], &[]);
            continue;
        };
        let output_len = header.output_len.min(MAX_OUTPUT) as usize;
        let id = header.id;
        let outcome = device.request(handle, request, &input, &mut output[..output_len], || {
            Ok(PendingQuery {
                connection: connection.clone(),
                id,
            })
        });
        match outcome {
            Ok(Outcome::Done(len)) if request == Request::Map => {
                match device.platform().take_map_fd(handle) {
                    Some(page) => {
                        let [producer_page, data] = device.platform().memory().client_fds();
                        let fds = [page.as_fd(), producer_page, data];
                        connection.reply(id, Status::Success, &output[..len], &fds);
                    }
                    None => connection.reply(id, Status::InsufficientResources, &[], &[]),
                }
            }
            Ok(Outcome::Done(len)) => {
                connection.reply(id, Status::Success, &output[..len], &[]);
            }
            Ok(Outcome::Pending) => {}
            Err(status) => connection.reply(id, status, &[], &[]),
        }
        if input.capacity() > 1 << 20 {
            input = Vec::new();
        }
    }
    device.close(handle);
    device.platform().forget_peer(handle);
    let _ = stream.shutdown(std::net::Shutdown::Both);
}
