//! A usersim device through its Unix socket (see `ringmap_usersim::protocol`).

use std::cell::Cell;
use std::io::{self, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use ringmap_core::abi::{MapReply, QueryReply, Request, SetEventRequest, Status, Wire};
use ringmap_core::{Capacity, PAGE_SIZE};
use ringmap_usersim::protocol::{
    CODE_CANCEL, GREETING_ID, MAP_FDS, REFUSED_ACCESS, REFUSED_BUSY, ReplyHeader, RequestHeader,
};
use rustix::event::{PollFd, PollFlags};
use rustix::mm::ProtFlags;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use crate::Error;

pub(crate) fn monotonic_ns() -> u64 {
    ringmap_usersim::protocol::now_ns()
}

/// How long a new connection waits for the server's greeting.
const GREETING_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to a usersim device: one handle.
pub(crate) struct Handle {
    stream: UnixStream,
    next_id: Cell<u64>,
    /// A QUERY sent without waiting for its reply (a mapping's readiness descriptor): its id
    /// and its input. Its reply makes the socket readable.
    armed: Cell<Option<(u64, [u8; QUERY_INPUT])>>,
}

/// The bytes of a QUERY request.
const QUERY_INPUT: usize = 16;

fn transport_error(error: io::Error) -> Error {
    match error.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::NotConnected => Error::DeviceGone,
        _ => Error::Io(error),
    }
}

/// A reply: its header, its bytes and the descriptors that came with it.
struct Reply {
    header: ReplyHeader,
    body: Vec<u8>,
    fds: Vec<OwnedFd>,
}

impl Handle {
    pub(crate) fn open() -> Result<Handle, Error> {
        Handle::open_at(&ringmap_usersim::default_socket_path())
    }

    /// Connects to the device at `path`: checks that the server runs as this user or root
    /// (`SO_PEERCRED`) before sending anything, then reads its greeting (a refusal: too
    /// many connections, or this user not allowed).
    pub(crate) fn open_at(path: &Path) -> Result<Handle, Error> {
        let stream = UnixStream::connect(path).map_err(|error| match error.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => Error::NoDevice {
                path: path.to_path_buf(),
            },
            io::ErrorKind::PermissionDenied => Error::AccessDenied {
                path: path.to_path_buf(),
            },
            _ => Error::Io(io::Error::new(
                error.kind(),
                format!("cannot connect to {}: {error}", path.display()),
            )),
        })?;
        let server = rustix::net::sockopt::socket_peercred(&stream).map_err(|errno| {
            Error::Io(io::Error::new(
                io::Error::from(errno).kind(),
                format!(
                    "cannot read the credentials of the server at {}: {errno}",
                    path.display()
                ),
            ))
        })?;
        let me = rustix::process::geteuid();
        if server.uid != me && !server.uid.is_root() {
            // Someone else listens there (a squatter): tell it nothing.
            return Err(Error::Refused(format!(
                "permission denied: the server at {} runs as uid {}, neither you (uid {}) nor \
                 root; refusing to talk to it",
                path.display(),
                server.uid.as_raw(),
                me.as_raw()
            )));
        }
        let handle = Handle {
            stream,
            next_id: Cell::new(1),
            armed: Cell::new(None),
        };
        if !handle.readable_within(GREETING_TIMEOUT)? {
            return Err(Error::Protocol(format!(
                "the server at {} sent no greeting within {} s",
                path.display(),
                GREETING_TIMEOUT.as_secs()
            )));
        }
        let greeting = handle.receive()?;
        if greeting.header.id != GREETING_ID {
            return Err(Error::Protocol(format!(
                "the server at {} began with a reply to request {}, not its greeting",
                path.display(),
                greeting.header.id
            )));
        }
        let why = String::from_utf8_lossy(&greeting.body).into_owned();
        match greeting.header.status {
            0 => Ok(handle),
            REFUSED_ACCESS | REFUSED_BUSY => Err(Error::Refused(format!(
                "the device at {} refused the connection: {why}",
                path.display()
            ))),
            status => Err(Error::Protocol(format!(
                "the server at {} refused the connection with status 0x{status:08X}: {why}",
                path.display()
            ))),
        }
    }

    fn send(&self, code: u32, id: u64, input: &[u8], output_len: usize) -> Result<(), Error> {
        let header = RequestHeader {
            code,
            input_len: u32::try_from(input.len())
                .map_err(|_| Error::Status(Status::InvalidParameter))?,
            id,
            output_len: u32::try_from(output_len).unwrap_or(u32::MAX),
            reserved: 0,
        };
        let mut message = Vec::with_capacity(RequestHeader::SIZE + input.len());
        message.extend_from_slice(&header.to_bytes());
        message.extend_from_slice(input);
        let mut sent = 0;
        while sent < message.len() {
            match rustix::net::send(&self.stream, &message[sent..], SendFlags::NOSIGNAL) {
                Ok(n) => sent += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(errno) => return Err(transport_error(errno.into())),
            }
        }
        Ok(())
    }

    /// Reads exactly `buf.len()` bytes, keeping any descriptors that come along.
    fn receive_exact(&self, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> Result<(), Error> {
        let mut got = 0;
        while got < buf.len() {
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAP_FDS))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let received = rustix::net::recvmsg(
                &self.stream,
                &mut [IoSliceMut::new(&mut buf[got..])],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            );
            let received = match received {
                Ok(received) => received,
                Err(rustix::io::Errno::INTR) => continue,
                Err(errno) => return Err(transport_error(errno.into())),
            };
            for message in control.drain() {
                if let RecvAncillaryMessage::ScmRights(rights) = message {
                    fds.extend(rights);
                }
            }
            if received.bytes == 0 {
                return Err(Error::DeviceGone);
            }
            got += received.bytes;
        }
        Ok(())
    }

    fn receive(&self) -> Result<Reply, Error> {
        let mut fds = Vec::new();
        let mut header = [0u8; ReplyHeader::SIZE];
        self.receive_exact(&mut header, &mut fds)?;
        let header = ReplyHeader::from_bytes(&header);
        if header.len > ringmap_usersim::protocol::MAX_OUTPUT {
            return Err(Error::Protocol(format!(
                "a reply of {} bytes is longer than any",
                header.len
            )));
        }
        let mut body = vec![0u8; header.len as usize];
        self.receive_exact(&mut body, &mut fds)?;
        Ok(Reply { header, body, fds })
    }

    /// Waits for the reply to `id`; replies to earlier requests that nobody waits for any
    /// more are dropped.
    fn receive_for(&self, id: u64) -> Result<Reply, Error> {
        loop {
            let reply = self.receive()?;
            if reply.header.id == id {
                return Ok(reply);
            }
            self.armed_reply_read_early(&reply)?;
        }
    }

    /// The armed QUERY's reply was read by someone waiting for another one: send the QUERY
    /// again, so that the socket becomes readable again (it completes at once if the record
    /// is still committed): readiness stays level-triggered.
    fn armed_reply_read_early(&self, reply: &Reply) -> Result<(), Error> {
        let Some((armed, input)) = self.armed.get() else {
            return Ok(());
        };
        if reply.header.id != armed {
            return Ok(());
        }
        self.armed.set(None);
        if check_status(reply.header.status)?.is_ok() {
            self.arm(&input)?;
        }
        Ok(())
    }

    /// Sends a QUERY with `input` and does not wait: its reply makes the socket readable.
    /// Nothing if one is armed already.
    pub(crate) fn arm(&self, input: &[u8]) -> Result<(), Error> {
        if self.armed.get().is_some() {
            return Ok(());
        }
        let input: [u8; QUERY_INPUT] = input
            .try_into()
            .map_err(|_| Error::Protocol("a QUERY request is 16 bytes".into()))?;
        let id = self.new_id();
        self.send(Request::Query as u32, id, &input, QueryReply::SIZE as usize)?;
        self.armed.set(Some((id, input)));
        Ok(())
    }

    /// Waits up to `timeout` for the armed QUERY to complete; its reply's bytes if it
    /// completed (read: the socket is no longer readable for it), `None` if it still pends,
    /// was cancelled, or none is armed.
    /// `timeout` `None`: for ever.
    pub(crate) fn wait_armed(&self, timeout: Option<Duration>) -> Result<Option<Vec<u8>>, Error> {
        let deadline = timeout.and_then(|timeout| Instant::now().checked_add(timeout));
        while let Some((armed, _)) = self.armed.get() {
            let ready = match deadline {
                Some(deadline) => {
                    self.readable_within(deadline.saturating_duration_since(Instant::now()))?
                }
                None => true, // `receive` blocks until the reply comes
            };
            if !ready {
                return Ok(None);
            }
            let reply = self.receive()?;
            if reply.header.id == armed {
                self.armed.set(None);
                return Ok(check_status(reply.header.status)?.ok().map(|()| reply.body));
            }
        }
        Ok(None)
    }

    /// Cancels the armed QUERY, if any; its one reply is dropped when it comes.
    pub(crate) fn disarm(&self) -> Result<(), Error> {
        if let Some((armed, _)) = self.armed.take() {
            self.send(CODE_CANCEL, armed, &[], 0)?;
        }
        Ok(())
    }

    /// The descriptor that becomes readable when the armed QUERY completes.
    pub(crate) fn readiness(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }

    fn new_id(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1));
        id
    }

    fn call(&self, code: u32, input: &[u8], output_len: usize) -> Result<Reply, Error> {
        let id = self.new_id();
        self.send(code, id, input, output_len)?;
        self.receive_for(id)
    }

    pub(crate) fn request(
        &self,
        code: u32,
        _ioctl: u32,
        input: &[u8],
        output_len: usize,
    ) -> Result<Result<Vec<u8>, Status>, Error> {
        let reply = self.call(code, input, output_len)?;
        Ok(check_status(reply.header.status)?.map(|()| reply.body))
    }

    pub(crate) fn map(
        &self,
        input: &[u8],
        output_len: usize,
    ) -> Result<Result<(Vec<u8>, PendingView), Status>, Error> {
        let reply = self.call(Request::Map as u32, input, output_len)?;
        Ok(check_status(reply.header.status)?
            .map(|()| (reply.body, PendingView { fds: reply.fds })))
    }

    pub(crate) fn query(
        &self,
        input: &[u8],
        output_len: usize,
        timeout: Option<Duration>,
    ) -> Result<Result<Vec<u8>, Status>, Error> {
        let id = self.new_id();
        self.send(Request::Query as u32, id, input, output_len)?;
        let reply = match timeout {
            None => self.receive_for(id)?,
            Some(timeout) => {
                let deadline = Instant::now() + timeout;
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if !self.readable_within(left)? {
                        // Timed out: cancel; the one reply comes at once (the completion, if
                        // it won the race, or STATUS_CANCELLED).
                        self.send(CODE_CANCEL, id, &[], 0)?;
                        break self.receive_for(id)?;
                    }
                    let reply = self.receive()?;
                    if reply.header.id == id {
                        break reply;
                    }
                    self.armed_reply_read_early(&reply)?;
                }
            }
        };
        Ok(check_status(reply.header.status)?.map(|()| reply.body))
    }

    /// SET_EVENT with `event` (an eventfd), which travels with the message (`SCM_RIGHTS`);
    /// `Ok(Err(status))` if the device refused it.
    pub(crate) fn set_event(&self, event: &Event) -> Result<Result<(), Status>, Error> {
        let event = event.as_fd();
        let id = self.new_id();
        let input = SetEventRequest::new(1);
        let header = RequestHeader {
            code: Request::SetEvent as u32,
            input_len: SetEventRequest::SIZE,
            id,
            output_len: 0,
            reserved: 0,
        };
        let mut message = header.to_bytes().to_vec();
        message.extend_from_slice(input.as_bytes());
        let mut sent = 0;
        while sent < message.len() {
            let rest = &message[sent..];
            let result = if sent == 0 {
                let fds = [event];
                let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
                let mut control = SendAncillaryBuffer::new(&mut space);
                if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
                    return Err(Error::Protocol("no room for a descriptor".into()));
                }
                rustix::net::sendmsg(
                    &self.stream,
                    &[io::IoSlice::new(rest)],
                    &mut control,
                    SendFlags::NOSIGNAL,
                )
            } else {
                rustix::net::send(&self.stream, rest, SendFlags::NOSIGNAL)
            };
            match result {
                Ok(n) => sent += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(errno) => return Err(transport_error(errno.into())),
            }
        }
        let reply = self.receive_for(id)?;
        check_status(reply.header.status)
    }

    /// QUERY with `input` (the consumer's position), waiting on `event` — set by the device
    /// in the same step that completes the QUERY — rather than on the reply, which follows
    /// it and is dropped when it comes. `Ok(true)` once the record at the position is
    /// committed, `Ok(false)` if `timeout` passed first (the QUERY is then cancelled),
    /// `Err` if the device refused the QUERY.
    pub(crate) fn wait_event(
        &self,
        event: &Event,
        input: &[u8],
        timeout: Option<Duration>,
    ) -> Result<bool, Error> {
        let event = event.as_fd();
        // The processor first, once: the producer that set the event last time has usually
        // woken this thread onto its own core and is still runnable there, on its way to
        // sleep. Sending the QUERY now would run this thread's re-arm (and the server
        // thread it wakes) against that producer, and Linux runs a woken thread at once,
        // ahead of its waker, only while it has not used more than its share of the core:
        // a thread that re-arms under contention every time is then woken late every other
        // time (README, "Performance": `ringmap bench`'s `cpu/wake`). The re-arm is not on
        // any wake-up's path (a record committed before the QUERY completes it at once).
        std::thread::yield_now();
        // A setting left over (an earlier QUERY's, or a mapping's end) is not this one's.
        drain_eventfd(event);
        let id = self.new_id();
        self.send(Request::Query as u32, id, input, QueryReply::SIZE as usize)?;
        let deadline = timeout.and_then(|timeout| Instant::now().checked_add(timeout));
        loop {
            let left = deadline.map(|deadline| deadline.saturating_duration_since(Instant::now()));
            let (event_ready, reply_ready) = self.poll_two(event, left)?;
            if event_ready {
                // Not drained here: a read is a system call on the wake-up's path, and the
                // next wait drains the counter before it sends its QUERY.
                return Ok(true);
            }
            if reply_ready {
                let reply = self.receive()?;
                if reply.header.id == id {
                    return match check_status(reply.header.status)? {
                        Ok(()) => Ok(true),
                        Err(status) => Err(crate::status_error(Request::Query, status)),
                    };
                }
                self.armed_reply_read_early(&reply)?;
                continue;
            }
            // Timed out: cancel; its one reply comes at once (the completion, if it won).
            self.send(CODE_CANCEL, id, &[], 0)?;
            let reply = self.receive_for(id)?;
            return match check_status(reply.header.status)? {
                Ok(()) => Ok(true),
                Err(Status::Cancelled) => Ok(false),
                Err(status) => Err(crate::status_error(Request::Query, status)),
            };
        }
    }

    /// Polls `event` and the socket for up to `timeout` (`None`: for ever): which is readable.
    fn poll_two(
        &self,
        event: BorrowedFd<'_>,
        timeout: Option<Duration>,
    ) -> Result<(bool, bool), Error> {
        let timeout = timeout.map(|timeout| rustix::time::Timespec {
            tv_sec: timeout.as_secs().try_into().unwrap_or(i64::MAX),
            tv_nsec: timeout.subsec_nanos().into(),
        });
        loop {
            let mut fds = [
                PollFd::new(&event, PollFlags::IN),
                PollFd::new(&self.stream, PollFlags::IN),
            ];
            match rustix::event::poll(&mut fds, timeout.as_ref()) {
                Ok(_) => {
                    let ready = |fd: &PollFd<'_>| !fd.revents().is_empty();
                    return Ok((ready(&fds[0]), ready(&fds[1])));
                }
                Err(rustix::io::Errno::INTR) => continue,
                Err(errno) => return Err(Error::Io(errno.into())),
            }
        }
    }

    fn readable_within(&self, timeout: Duration) -> Result<bool, Error> {
        let timeout = rustix::time::Timespec {
            tv_sec: timeout.as_secs().try_into().unwrap_or(i64::MAX),
            tv_nsec: timeout.subsec_nanos().into(),
        };
        loop {
            let mut fds = [PollFd::new(&self.stream, PollFlags::IN)];
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(n) => return Ok(n > 0),
                Err(rustix::io::Errno::INTR) => continue,
                Err(errno) => return Err(Error::Io(errno.into())),
            }
        }
    }
}

/// Resets an eventfd (non-blocking: nothing to read is fine).
fn drain_eventfd(event: BorrowedFd<'_>) {
    let mut count = [0u8; 8];
    let _ = rustix::io::read(event, &mut count);
}

/// A mapping's event for SET_EVENT: an eventfd (the Windows backend's is an event object).
pub(crate) type Event = OwnedFd;

/// A new eventfd for SET_EVENT (non-blocking, so that draining it never waits).
pub(crate) fn new_event() -> Result<Event, Error> {
    rustix::event::eventfd(
        0,
        rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
    )
    .map_err(|errno| Error::Io(errno.into()))
}

/// The descriptors of a MAP reply, not yet mapped.
pub(crate) struct PendingView {
    fds: Vec<OwnedFd>,
}

impl PendingView {
    pub(crate) fn map(self, reply: &MapReply, capacity: Capacity) -> Result<View, Error> {
        if self.fds.len() != MAP_FDS
            || (
                reply.consumer_page_handle,
                reply.producer_page_handle,
                reply.data_handle,
            ) != (0, 1, 2)
        {
            return Err(Error::Protocol(format!(
                "a MAP reply came with {} descriptors and indexes {}, {}, {}",
                self.fds.len(),
                reply.consumer_page_handle,
                reply.producer_page_handle,
                reply.data_handle
            )));
        }
        // SAFETY: `map_view` makes a new reservation and replaces nothing else.
        let (base, len) = unsafe {
            ringmap_usersim::view::map_view(
                capacity,
                Some((self.fds[0].as_fd(), ProtFlags::READ | ProtFlags::WRITE)),
                self.fds[1].as_fd(),
                self.fds[2].as_fd(),
                ProtFlags::READ,
            )?
        };
        // The descriptors close here; the mappings stay.
        Ok(View { base, len })
    }
}

/// The consumer view mapped in this process: `[consumer page | producer page | data |
/// data]`. Unmapped when dropped.
pub(crate) struct View {
    base: *mut u8,
    len: usize,
}

// SAFETY: the mapping belongs to this value alone and is process-wide memory; it may be used
// and unmapped from any thread.
unsafe impl Send for View {}

impl View {
    pub(crate) fn consumer_page(&self) -> *mut u8 {
        self.base
    }

    pub(crate) fn producer_page(&self) -> *mut u8 {
        self.base.wrapping_add(PAGE_SIZE)
    }

    pub(crate) fn data(&self) -> *mut u8 {
        self.base.wrapping_add(2 * PAGE_SIZE)
    }
}

impl Drop for View {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `PendingView::map` and is unmapped once; the
        // consumer that read it is dropped before (field order of `Mapping`).
        let _ = unsafe { rustix::mm::munmap(self.base.cast(), self.len) };
    }
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("stream", &self.stream)
            .finish()
    }
}

/// A reply status as the device sent it: `Ok` for success, the status otherwise.
pub(crate) fn check_status(value: u32) -> Result<Result<(), Status>, Error> {
    match Status::from_ntstatus(value) {
        Some(Status::Success) => Ok(Ok(())),
        Some(Status::Pending) | None => Err(Error::Protocol(format!(
            "the device completed a request with status 0x{value:08X}"
        ))),
        Some(status) => Ok(Err(status)),
    }
}
