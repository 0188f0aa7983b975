//! Client library for ringmap devices: open a device, map its ring and consume records in
//! batches, wait for records with QUERY, write records, read the counters, drive the
//! built-in generator.
//!
//! On Linux the device is a usersim host (`ringmap serve`, or [`ringmap_usersim::Server`] in
//! a test) reached through a Unix socket; on Windows it is the installed driver,
//! `\\.\RingMap`. The API is the same on both.
//!
//! ```no_run
//! # fn main() -> Result<(), ringmap_client::Error> {
//! let device = ringmap_client::Device::open()?;
//! let mut mapping = device.map()?;
//! loop {
//!     mapping.wait(None)?;
//!     mapping.consumer().consume(|record| {
//!         println!("{} bytes at offset {}", record.len(), record.offset())
//!     });
//! }
//! # }
//! ```
//!
//! A [`Mapping`] borrows its [`Device`]: it cannot outlive it, so safe code holds at most one
//! consumer per handle, and dropping it ends the mapping on the device (UNMAP) before it
//! returns, so the next [`Device::map`] anywhere succeeds. This does not compile:
//!
//! ```compile_fail
//! # fn main() -> Result<(), ringmap_client::Error> {
//! let mapping = ringmap_client::Device::open()?.map()?; // the Device is dropped at once
//! # drop(mapping);
//! # Ok(())
//! # }
//! ```
//!
//! Delivery across a consumer's end is at-least-once: a new mapping starts where the last one
//! returned space (the MAP reply says where), so records a consumer had read but not returned
//! when it crashed are delivered again (STATS counts them as `redelivered`). A former
//! consumer's process may still read the data it had mapped, as with a Linux BPF ringbuf
//! mapping, but nothing it writes reaches the ring or the next consumer.

use std::ops::ControlFlow;
use std::time::Duration;

use ringmap_core::abi::{
    EmptyRequest, GenerateReply, MapReply, QueryRequest, Request, Wire, WriteReply, WriteRequest,
};
pub use ringmap_core::abi::{GenerateRequest, QueryReply, StatsReply, Status};
pub use ringmap_core::{Batch, Consumer, Record, Records};
use ringmap_core::{Capacity, SharedView};

mod backend;

#[cfg(target_os = "linux")]
pub use ringmap_usersim::default_socket_path;

/// What went wrong, as a sentence that says what to do.
///
/// ```no_run
/// match ringmap_client::Device::open().and_then(|device| device.write(b"x")) {
///     Ok(offset) => println!("at {offset}"),
///     Err(ringmap_client::Error::RingFull) => eprintln!("full: retry later"),
///     Err(error) => eprintln!("ringmap: {error}"),
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// There is no device to open.
    #[cfg_attr(
        unix,
        error(
            "no ringmap device at {}: start one with `ringmap serve` (or use `ringmap demo`)",
            path.display()
        )
    )]
    #[cfg_attr(
        not(unix),
        error(
            "the ringmap driver is not installed ({} does not exist): run scripts/install.ps1 as Administrator",
            path.display()
        )
    )]
    NoDevice {
        /// The socket (Linux) or device path (Windows) that was tried.
        path: std::path::PathBuf,
    },
    /// The device exists but this user may not open it.
    #[cfg_attr(
        unix,
        error(
            "not allowed to open the ringmap device at {}: check the socket's permissions (it belongs to the user who ran `ringmap serve`)",
            path.display()
        )
    )]
    #[cfg_attr(
        not(unix),
        error("not allowed to open {}: run as Administrator", path.display())
    )]
    AccessDenied {
        /// The socket or device path.
        path: std::path::PathBuf,
    },
    /// The device (or what listens where it should be) refused to talk: the sentence says
    /// why and what to do.
    #[error("{0}")]
    Refused(String),
    /// MAP refused: another handle has the ring mapped.
    #[error("the ring is already mapped by another process: stop the other consumer first")]
    AlreadyMapped,
    /// The connection to the device ended.
    #[error(
        "the device went away (server stopped or driver unloaded): start it again and reconnect"
    )]
    DeviceGone,
    /// WRITE refused: no room in the ring.
    #[error(
        "the ring is full: the consumer is behind; consume records (or retry later) and write again"
    )]
    RingFull,
    /// The device refused the request with this status.
    #[error("the device refused the request: {0}")]
    Status(Status),
    /// An operating-system call failed.
    #[error("a system call failed: {0}")]
    Io(#[from] std::io::Error),
    /// The device answered something this client does not understand.
    #[error("the device broke the protocol: {0}; client and device versions may differ")]
    Protocol(String),
}

/// The monotonic clock in nanoseconds: the clock the generator stamps records with
/// (`CLOCK_MONOTONIC` on Linux, `QueryPerformanceCounter`-based on Windows).
///
/// ```
/// let before = ringmap_client::monotonic_ns();
/// assert!(ringmap_client::monotonic_ns() >= before);
/// ```
pub fn monotonic_ns() -> u64 {
    backend::monotonic_ns()
}

/// One open handle of the device. One request at a time per `Device` (open one per thread).
pub struct Device {
    handle: backend::Handle,
}

fn status_error(request: Request, status: Status) -> Error {
    match (request, status) {
        (Request::Map, Status::SharingViolation) => Error::AlreadyMapped,
        (Request::Write, Status::InsufficientResources) => Error::RingFull,
        _ => Error::Status(status),
    }
}

fn parse_reply<T: Wire>(request: Request, bytes: &[u8]) -> Result<T, Error> {
    T::read_exact(bytes).map_err(|status| {
        Error::Protocol(format!(
            "a {} reply of {} bytes is malformed ({status})",
            request.name(),
            bytes.len()
        ))
    })
}

impl Device {
    /// Opens the device: on Linux a usersim device at [`default_socket_path`]; on Windows the
    /// installed driver, `\\.\RingMap`.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), ringmap_client::Error> {
    /// let device = ringmap_client::Device::open()?;
    /// println!("{} bytes of ring", device.stats()?.capacity);
    /// # Ok(())
    /// # }
    /// ```
    pub fn open() -> Result<Device, Error> {
        Ok(Device {
            handle: backend::Handle::open()?,
        })
    }

    /// Opens the usersim device listening at `socket`.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), ringmap_client::Error> {
    /// let device = ringmap_client::Device::open_at("/run/user/1000/ringmap.sock".as_ref())?;
    /// # let _ = device;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(unix)]
    pub fn open_at(socket: &std::path::Path) -> Result<Device, Error> {
        Ok(Device {
            handle: backend::Handle::open_at(socket)?,
        })
    }

    fn call(&self, request: Request, input: &[u8], output_len: usize) -> Result<Vec<u8>, Error> {
        self.handle
            .request(request as u32, request.ioctl(), input, output_len)?
            .map_err(|status| status_error(request, status))
    }

    /// MAP: maps this mapping's own consumer page read-write, the producer page read-only
    /// and the data read-only twice back to back, and makes the ring's one consumer over
    /// them, starting where the MAP reply says (where the previous consumer returned space).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), ringmap_client::Error> {
    /// let device = ringmap_client::Device::open()?;
    /// let mut mapping = device.map()?;
    /// println!("starting at offset {}", mapping.consumer().position());
    /// # Ok(())
    /// # }
    /// ```
    pub fn map(&self) -> Result<Mapping<'_>, Error> {
        let (bytes, view) = self
            .handle
            .map(EmptyRequest::new().as_bytes(), MapReply::SIZE as usize)?
            .map_err(|status| status_error(Request::Map, status))?;
        // From here on the device holds a mapping for this handle: undo it on any error.
        let unmap = |error: Error| {
            let _ = self.call(Request::Unmap, EmptyRequest::new().as_bytes(), 0);
            error
        };
        let reply: MapReply = parse_reply(Request::Map, &bytes).map_err(unmap)?;
        let capacity = Capacity::new(reply.capacity).map_err(|_| {
            unmap(Error::Protocol(format!(
                "capacity {} is not one",
                reply.capacity
            )))
        })?;
        let view = view.map(&reply, capacity).map_err(unmap)?;
        // SAFETY: the view's mappings live as long as the `Mapping`, which drops the consumer
        // first; they are this mapping's own consumer page (read-write), the producer page
        // and the data twice back to back, as the device sent them; the device hands out
        // one mapping at a time and a `Mapping` borrows its `Device`, so this is the ring's
        // one consumer, and this process writes the consumer page only through it.
        let consumer = unsafe {
            SharedView::new(
                view.consumer_page(),
                view.producer_page(),
                view.data(),
                capacity,
            )
            .map(|shared| Consumer::new(shared))
        }
        .map_err(|e| unmap(Error::Protocol(e.to_string())))?;
        if consumer.position() != reply.consumer_offset {
            return Err(unmap(Error::Protocol(format!(
                "the new consumer page says {} but the MAP reply {}",
                consumer.position(),
                reply.consumer_offset
            ))));
        }
        Ok(Mapping {
            consumer,
            capacity,
            view: Some(view),
            device: self,
            #[cfg(any(target_os = "linux", windows))]
            notifying: false,
            #[cfg(any(target_os = "linux", windows))]
            event: None,
        })
    }

    /// QUERY: returns the space up to `consumer_offset`, then waits until the head record is
    /// committed. `None` if `timeout` passed first (the QUERY is cancelled then).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), ringmap_client::Error> {
    /// let device = ringmap_client::Device::open()?;
    /// let mut mapping = device.map()?;
    /// let position = mapping.consumer().position();
    /// if let Some(reply) = device.wait(position, Some(std::time::Duration::from_secs(1)))? {
    ///     println!("producer offset {}", reply.producer_offset);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait(
        &self,
        consumer_offset: u64,
        timeout: Option<Duration>,
    ) -> Result<Option<QueryReply>, Error> {
        let input = QueryRequest::new(consumer_offset);
        match self
            .handle
            .query(input.as_bytes(), QueryReply::SIZE as usize, timeout)?
        {
            Ok(bytes) => Ok(Some(parse_reply(Request::Query, &bytes)?)),
            Err(Status::Cancelled) if timeout.is_some() => Ok(None),
            Err(status) => Err(status_error(Request::Query, status)),
        }
    }

    /// WRITE: one record with `payload`; returns its offset. [`Error::RingFull`] when the
    /// ring has no room.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), ringmap_client::Error> {
    /// let device = ringmap_client::Device::open()?;
    /// let offset = device.write(b"hello")?;
    /// println!("written at {offset}");
    /// # Ok(())
    /// # }
    /// ```
    pub fn write(&self, payload: &[u8]) -> Result<u64, Error> {
        let length =
            u32::try_from(payload.len()).map_err(|_| Error::Status(Status::InvalidParameter))?;
        let mut input = Vec::with_capacity(WriteRequest::SIZE as usize + payload.len());
        input.extend_from_slice(WriteRequest::new(length).as_bytes());
        input.extend_from_slice(payload);
        let bytes = self.call(Request::Write, &input, WriteReply::SIZE as usize)?;
        Ok(parse_reply::<WriteReply>(Request::Write, &bytes)?.offset)
    }

    /// STATS: offsets, capacity and counters.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), ringmap_client::Error> {
    /// let stats = ringmap_client::Device::open()?.stats()?;
    /// println!("produced {} consumed {} dropped {}", stats.produced, stats.consumed, stats.dropped);
    /// # Ok(())
    /// # }
    /// ```
    pub fn stats(&self) -> Result<StatsReply, Error> {
        let bytes = self.call(
            Request::Stats,
            EmptyRequest::new().as_bytes(),
            StatsReply::SIZE as usize,
        )?;
        parse_reply(Request::Stats, &bytes)
    }

    /// GENERATE: starts or stops the built-in producer; returns the producer threads running
    /// afterwards.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), ringmap_client::Error> {
    /// use ringmap_client::GenerateRequest;
    /// let device = ringmap_client::Device::open()?;
    /// device.generate(GenerateRequest::start(2, 64, 1000, 10_000))?; // 2 producers, 64 B, 1000/s each
    /// device.generate(GenerateRequest::stop())?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn generate(&self, request: GenerateRequest) -> Result<u32, Error> {
        let bytes = self.call(
            Request::Generate,
            request.as_bytes(),
            GenerateReply::SIZE as usize,
        )?;
        Ok(parse_reply::<GenerateReply>(Request::Generate, &bytes)?.producers)
    }

    /// REVOKE: takes the ring's mapping away from whichever handle holds it (a stopped
    /// consumer would otherwise block every other), as if it had unmapped; the next MAP then
    /// works. Only an administrator may (on Linux: the user who runs the device, or root).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), ringmap_client::Error> {
    /// let admin = ringmap_client::Device::open()?;
    /// admin.revoke()?; // the stopped holder's mapping ends
    /// let mapping = admin.map()?; // and the ring is free
    /// # drop(mapping);
    /// # Ok(())
    /// # }
    /// ```
    pub fn revoke(&self) -> Result<(), Error> {
        self.call(Request::Revoke, EmptyRequest::new().as_bytes(), 0)
            .map(drop)
    }

    /// Sends any request code with any input, for hostile-input tests: the reply's bytes, or
    /// [`Error::Status`] with the status the device answered. A MAP through here maps
    /// nothing (descriptors that come with it are closed).
    #[doc(hidden)]
    pub fn raw_request(
        &self,
        code: u32,
        input: &[u8],
        output_len: usize,
    ) -> Result<Vec<u8>, Error> {
        let ioctl = Request::from_code(code).map_or(code, Request::ioctl);
        self.handle
            .request(code, ioctl, input, output_len)?
            .map_err(Error::Status)
    }
}

/// The consumer view mapped into this process and the ring's one consumer over it. It
/// borrows the [`Device`] whose handle holds the mapping; dropping it (or
/// [`unmap`](Mapping::unmap)) ends the mapping on the device before it returns, then unmaps
/// the memory here.
pub struct Mapping<'d> {
    // Declared before `view`: dropped before the memory it reads goes away.
    consumer: Consumer,
    capacity: Capacity,
    view: Option<backend::View>,
    device: &'d Device,
    /// Readiness for event loops is on ([`Mapping::notify`]): a QUERY stays armed.
    #[cfg(any(target_os = "linux", windows))]
    notifying: bool,
    /// The mapping's event (SET_EVENT: an eventfd on Linux, an event object on Windows),
    /// made at the first [`Mapping::wait_ready`].
    #[cfg(any(target_os = "linux", windows))]
    event: Option<backend::Event>,
}

impl Mapping<'_> {
    /// The ring's consumer: batches of borrowed records.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), ringmap_client::Error> {
    /// let device = ringmap_client::Device::open()?;
    /// let mut mapping = device.map()?;
    /// let batch = mapping.consumer().batch();
    /// for record in &batch {
    ///     println!("{:?}", &record[..]);
    /// } // dropping the batch returns its space
    /// # Ok(())
    /// # }
    /// ```
    pub fn consumer(&mut self) -> &mut Consumer {
        &mut self.consumer
    }

    /// QUERY: returns the space this consumer has handled, then waits until the record at
    /// its position is committed. `None` if `timeout` passed first (the QUERY is cancelled
    /// then).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), ringmap_client::Error> {
    /// let device = ringmap_client::Device::open()?;
    /// let mut mapping = device.map()?;
    /// if mapping.wait(Some(std::time::Duration::from_secs(1)))?.is_some() {
    ///     mapping.consumer().consume(|record| println!("{} bytes", record.len()));
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait(&self, timeout: Option<Duration>) -> Result<Option<QueryReply>, Error> {
        #[cfg(any(target_os = "linux", windows))]
        if self.notifying {
            // The armed QUERY is the one pending: wait for it (a second would be busy).
            self.arm()?;
            let body = self.device.handle.wait_armed(timeout)?;
            return body
                .map(|body| parse_reply(Request::Query, &body))
                .transpose();
        }
        self.device.wait(self.consumer.position(), timeout)
    }

    /// Returns the space this consumer has handled, then waits up to `timeout` (`None`: for
    /// ever) until the record at its position is committed: `true` once it is, `false` if
    /// the timeout passed first. Unlike [`wait`](Self::wait) it waits on the mapping's event
    /// (SET_EVENT, made on first use), which the device sets in the same step that
    /// completes the QUERY, so the wake-up does not wait for the request's completion to
    /// travel back.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), ringmap_client::Error> {
    /// let device = ringmap_client::Device::open()?;
    /// let mut mapping = device.map()?;
    /// if mapping.wait_ready(Some(std::time::Duration::from_secs(1)))? {
    ///     mapping.consumer().consume(|record| println!("{} bytes", record.len()));
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_ready(&mut self, timeout: Option<Duration>) -> Result<bool, Error> {
        #[cfg(any(target_os = "linux", windows))]
        if !self.notifying {
            if self.event.is_none() {
                let event = backend::new_event()?;
                match self.device.handle.set_event(&event)? {
                    Ok(()) => self.event = Some(event),
                    Err(status) => return Err(status_error(Request::SetEvent, status)),
                }
            }
            if let Some(event) = &self.event {
                let input = QueryRequest::new(self.consumer.position());
                return self
                    .device
                    .handle
                    .wait_event(event, input.as_bytes(), timeout);
            }
        }
        Ok(self.wait(timeout)?.is_some())
    }

    /// Hands every committed record, in order, to `each` until it breaks or none is left,
    /// and returns the space of the records it handled (not of the one it broke on, which
    /// the next call hands out again). Never waits. Returns how many records were handled:
    /// libbpf's `ring_buffer__consume`.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), ringmap_client::Error> {
    /// use std::ops::ControlFlow;
    /// let device = ringmap_client::Device::open()?;
    /// let mut mapping = device.map()?;
    /// let handled = mapping.consume(|record| {
    ///     println!("{} bytes at {}", record.len(), record.offset());
    ///     ControlFlow::Continue(())
    /// });
    /// # let _ = handled;
    /// # Ok(())
    /// # }
    /// ```
    pub fn consume(
        &mut self,
        each: impl FnMut(Record<'_>) -> ControlFlow<()>,
    ) -> Result<usize, Error> {
        self.consume_n(usize::MAX, each)
    }

    /// As [`consume`](Self::consume), with at most `max` records (libbpf's
    /// `ring_buffer__consume_n`).
    pub fn consume_n(
        &mut self,
        max: usize,
        mut each: impl FnMut(Record<'_>) -> ControlFlow<()>,
    ) -> Result<usize, Error> {
        #[cfg(any(target_os = "linux", windows))]
        if self.notifying {
            // A completed readiness QUERY is read now, so the descriptor is not readable
            // for records this call hands out.
            self.device.handle.wait_armed(Some(Duration::ZERO))?;
        }
        let mut handled = 0;
        while handled < max {
            let mut stopped = false;
            let n = self.consumer.consume_while(max - handled, |record| {
                let flow = each(record);
                stopped = flow.is_break();
                flow
            });
            handled += n;
            if stopped || n == 0 {
                break;
            }
        }
        #[cfg(any(target_os = "linux", windows))]
        if self.notifying {
            self.arm()?;
        }
        Ok(handled)
    }

    /// Turns on readiness for event loops (Linux): from now on the descriptor
    /// ([`AsFd`](std::os::fd::AsFd)) becomes readable when the record at this consumer's
    /// position is committed, and stays readable until [`consume`](Self::consume),
    /// [`consume_n`](Self::consume_n) or [`poll`](Self::poll) runs (level-triggered, as
    /// libbpf's `ring_buffer__epoll_fd`); each of them arms it again for the new position,
    /// so a record committed meanwhile is never missed. Register the descriptor for
    /// readability (`EPOLLIN`).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), ringmap_client::Error> {
    /// use std::ops::ControlFlow;
    /// use std::os::fd::AsFd;
    /// let device = ringmap_client::Device::open()?;
    /// let mut mapping = device.map()?;
    /// mapping.notify()?;
    /// let ready = mapping.as_fd(); // give this to epoll / mio / tokio's AsyncFd
    /// # let _ = ready;
    /// // ... when it is readable:
    /// mapping.consume(|record| {
    ///     println!("{} bytes", record.len());
    ///     ControlFlow::Continue(())
    /// })?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// On Windows the same readiness is a manual-reset event ([`AsRawHandle`]: wait on it
    /// with `WaitForMultipleObjects` or register it with a thread pool wait).
    ///
    /// [`AsRawHandle`]: https://doc.rust-lang.org/std/os/windows/io/trait.AsRawHandle.html
    #[cfg(any(target_os = "linux", windows))]
    pub fn notify(&mut self) -> Result<(), Error> {
        // A QUERY that `wait_ready` left outstanding (its event came first) is not the
        // readiness QUERY of this position.
        #[cfg(windows)]
        if !self.notifying && self.event.is_some() {
            self.device.handle.disarm()?;
        }
        self.notifying = true;
        self.arm()
    }

    #[cfg(any(target_os = "linux", windows))]
    fn arm(&self) -> Result<(), Error> {
        self.device
            .handle
            .arm(QueryRequest::new(self.consumer.position()).as_bytes())
    }

    /// Waits up to `timeout` (`None`: for ever) until a record is committed at this
    /// consumer's position, then consumes as [`consume`](Self::consume) does. Returns how
    /// many records were handled, 0 if the timeout passed first (libbpf's
    /// `ring_buffer__poll`). Returns the space handled so far to the device before it
    /// waits, so producers never wait for a consumer that waits.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), ringmap_client::Error> {
    /// use std::ops::ControlFlow;
    /// use std::time::Duration;
    /// let device = ringmap_client::Device::open()?;
    /// let mut mapping = device.map()?;
    /// loop {
    ///     mapping.poll(Some(Duration::from_millis(100)), |record| {
    ///         println!("{:?}", &record[..]);
    ///         ControlFlow::Continue(())
    ///     })?;
    /// }
    /// # }
    /// ```
    pub fn poll(
        &mut self,
        timeout: Option<Duration>,
        mut each: impl FnMut(Record<'_>) -> ControlFlow<()>,
    ) -> Result<usize, Error> {
        let handled = self.consume(&mut each)?;
        if handled != 0 {
            return Ok(handled);
        }
        if self.wait_ready(timeout)? {
            self.consume(each)
        } else {
            Ok(0)
        }
    }

    /// The device this mapping belongs to.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), ringmap_client::Error> {
    /// let device = ringmap_client::Device::open()?;
    /// let mapping = device.map()?;
    /// assert_eq!(mapping.device().stats()?.mapped, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn device(&self) -> &Device {
        self.device
    }

    /// The data capacity in bytes.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), ringmap_client::Error> {
    /// let device = ringmap_client::Device::open()?;
    /// println!("{} bytes", device.map()?.capacity());
    /// # Ok(())
    /// # }
    /// ```
    pub fn capacity(&self) -> u64 {
        self.capacity.as_u64()
    }

    /// The consumer page as mapped (read-write): its first `u64` is the consumer offset.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), ringmap_client::Error> {
    /// let device = ringmap_client::Device::open()?;
    /// let mapping = device.map()?;
    /// let (_page, _producer, _data) = (mapping.consumer_page_ptr(), mapping.producer_page_ptr(), mapping.data_ptr());
    /// # Ok(())
    /// # }
    /// ```
    pub fn consumer_page_ptr(&self) -> *mut u64 {
        self.view().consumer_page().cast()
    }

    /// The producer page as mapped (read-only).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), ringmap_client::Error> {
    /// let device = ringmap_client::Device::open()?;
    /// let producer_page = device.map()?.producer_page_ptr();
    /// # let _ = producer_page;
    /// # Ok(())
    /// # }
    /// ```
    pub fn producer_page_ptr(&self) -> *const u8 {
        self.view().producer_page()
    }

    /// The data as mapped (read-only, `2 * capacity` bytes: the data twice).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), ringmap_client::Error> {
    /// let device = ringmap_client::Device::open()?;
    /// let data = device.map()?.data_ptr();
    /// # let _ = data;
    /// # Ok(())
    /// # }
    /// ```
    pub fn data_ptr(&self) -> *const u8 {
        self.view().data()
    }

    fn view(&self) -> &backend::View {
        self.view
            .as_ref()
            .expect("the view lives until the mapping is dropped")
    }

    /// UNMAP: ends the mapping on the device (what the consumer returned counts; the next
    /// MAP starts there) and unmaps the memory here. Dropping the mapping does the same and
    /// ignores errors; this says whether the device agreed.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), ringmap_client::Error> {
    /// let device = ringmap_client::Device::open()?;
    /// let mapping = device.map()?;
    /// mapping.unmap()?; // the next consumer starts where this one returned space
    /// # Ok(())
    /// # }
    /// ```
    pub fn unmap(mut self) -> Result<(), Error> {
        let result = self
            .device
            .call(Request::Unmap, EmptyRequest::new().as_bytes(), 0);
        self.view = None;
        std::mem::forget(self);
        result.map(drop)
    }

    /// Keeps the memory mapped but ends the mapping on the device, as a process that
    /// closed its handle keeps its views: for tests of a former consumer. Returns the
    /// consumer page, which stays writable and reaches nobody.
    #[doc(hidden)]
    pub fn unmap_keeping_views(mut self) -> Result<*mut u64, Error> {
        let page = self.consumer_page_ptr();
        let result = self
            .device
            .call(Request::Unmap, EmptyRequest::new().as_bytes(), 0);
        // The views stay mapped for the rest of the process (leaked on purpose).
        std::mem::forget(self.view.take());
        std::mem::forget(self);
        result.map(|_| page)
    }
}

impl Mapping<'_> {
    fn stop_notifying(&mut self) {
        #[cfg(any(target_os = "linux", windows))]
        if std::mem::take(&mut self.notifying) {
            let _ = self.device.handle.disarm();
        }
    }
}

/// The mapping's readiness descriptor as tokio wants it (it does not own the descriptor).
#[cfg(all(feature = "tokio", target_os = "linux"))]
struct ReadinessFd(std::os::fd::RawFd);

#[cfg(all(feature = "tokio", target_os = "linux"))]
impl std::os::fd::AsRawFd for ReadinessFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0
    }
}

#[cfg(all(feature = "tokio", target_os = "linux"))]
impl<'d> Mapping<'d> {
    /// Waits, without blocking the tokio runtime, until a record is committed at this
    /// consumer's position, then returns the batch of committed records (feature `tokio`,
    /// Linux). Dropping the batch returns its space, as with [`Consumer::batch`]. Turns
    /// readiness on ([`notify`](Self::notify)). A `Mapping` borrows its `Device`, which is
    /// not `Sync`: run this on a current-thread runtime or a `LocalSet`.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), ringmap_client::Error> {
    /// let device = ringmap_client::Device::open()?;
    /// let mut mapping = device.map()?;
    /// loop {
    ///     let batch = mapping.next_batch().await?;
    ///     for record in &batch {
    ///         println!("{} bytes at {}", record.len(), record.offset());
    ///     }
    /// }
    /// # }
    /// ```
    pub async fn next_batch(&mut self) -> Result<Batch<'_>, Error> {
        use std::os::fd::{AsFd, AsRawFd};
        self.notify()?;
        // SAFETY: the descriptor is the device handle's socket, which `self` borrows: it stays
        // open, and the same, until `fd` is dropped at the end of this function.
        let fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(
                ReadinessFd(self.as_fd().as_raw_fd()),
                tokio::io::Interest::READABLE,
            )
        }
        .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
        loop {
            if self.consumer.has_records() {
                break;
            }
            let mut ready = fd.readable().await?;
            // Read the readiness reply (if that is what came), then look again: arm anew.
            self.device.handle.wait_armed(Some(Duration::ZERO))?;
            ready.clear_ready();
            self.arm()?;
        }
        drop(fd);
        Ok(self.consumer.batch())
    }
}

/// The descriptor that becomes readable when a record is committed at the consumer's
/// position, once [`Mapping::notify`] turned readiness on.
#[cfg(target_os = "linux")]
impl std::os::fd::AsFd for Mapping<'_> {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.device.handle.readiness()
    }
}

/// The event that is signalled when a record is committed at the consumer's position, once
/// [`Mapping::notify`] turned readiness on (Windows; manual reset, so level-triggered).
#[cfg(windows)]
impl std::os::windows::io::AsRawHandle for Mapping<'_> {
    fn as_raw_handle(&self) -> std::os::windows::io::RawHandle {
        self.device.handle.readiness()
    }
}

impl Drop for Mapping<'_> {
    fn drop(&mut self) {
        self.stop_notifying();
        // The QUERY `wait_ready` may have left outstanding (Windows) ends with the mapping.
        #[cfg(windows)]
        if self.event.is_some() {
            let _ = self.device.handle.disarm();
        }
        // UNMAP first, while the consumer page still says what was returned; then the views.
        let _ = self
            .device
            .call(Request::Unmap, EmptyRequest::new().as_bytes(), 0);
        self.view = None;
    }
}

impl std::fmt::Debug for Mapping<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping")
            .field("capacity", &self.capacity.as_u64())
            .field("consumer", &self.consumer)
            .finish()
    }
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device").finish_non_exhaustive()
    }
}

// A `Device` moves between threads (one request at a time per `Device`); a `Mapping` stays
// with the thread that holds its `Device`.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<Device>();
};
