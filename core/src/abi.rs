//! The request ABI shared by the driver, usersim and the client: request codes, the
//! `#[repr(C)]` request and reply structs, statuses, and the checks every request passes
//! before it changes anything.
//!
//! Every struct starts with `size: u32`, which must equal the struct's size exactly, and a
//! `reserved: u32` (or more reserved fields) that must be zero: a request that fails either
//! check gets [`Status::InvalidParameter`] and changes nothing. Windows sends them with
//! `DeviceIoControl` (`METHOD_BUFFERED`); usersim sends the same bytes over a Unix socket.
//! Replies never carry an address of the ring: MAP replies with handles (Windows: section
//! handles opened in the caller's process; usersim: indexes of the file descriptors that
//! travel with the reply).

use core::mem::size_of;

/// The device name: `\\.\RingMap` on Windows (symbolic link `\DosDevices\RingMap`).
pub const DEVICE_NAME: &str = "RingMap";
/// The kernel device object name.
pub const NT_DEVICE_NAME: &str = "\\Device\\RingMap";
/// The symbolic link the driver creates.
pub const DOS_DEVICE_NAME: &str = "\\DosDevices\\RingMap";
/// The Win32 path the client opens.
pub const WIN32_DEVICE_PATH: &str = "\\\\.\\RingMap";
/// The device interface GUID, `{6f1c7a52-3b0e-4d8a-9c4e-2a5b7e11c0de}`, as its fields.
pub const DEVICE_INTERFACE_GUID: Guid = Guid {
    data1: 0x6f1c_7a52,
    data2: 0x3b0e,
    data3: 0x4d8a,
    data4: [0x9c, 0x4e, 0x2a, 0x5b, 0x7e, 0x11, 0xc0, 0xde],
};

/// A GUID, laid out as Windows lays it out.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Guid {
    /// First 32 bits.
    pub data1: u32,
    /// Next 16 bits.
    pub data2: u16,
    /// Next 16 bits.
    pub data3: u16,
    /// Last 64 bits, as bytes.
    pub data4: [u8; 8],
}

/// `FILE_DEVICE_UNKNOWN`.
pub const FILE_DEVICE_UNKNOWN: u32 = 0x22;
/// `METHOD_BUFFERED`.
pub const METHOD_BUFFERED: u32 = 0;
/// `FILE_ANY_ACCESS`.
pub const FILE_ANY_ACCESS: u32 = 0;
/// `FILE_READ_ACCESS`.
pub const FILE_READ_ACCESS: u32 = 1;
/// `FILE_WRITE_ACCESS`.
pub const FILE_WRITE_ACCESS: u32 = 2;

/// `CTL_CODE(device_type, function, method, access)`, as `winioctl.h` defines it.
pub const fn ctl_code(device_type: u32, function: u32, method: u32, access: u32) -> u32 {
    (device_type << 16) | (access << 14) | (function << 2) | method
}

/// The requests a handle can send.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Request {
    /// Map the consumer view into the caller.
    Map = 0,
    /// Undo MAP.
    Unmap = 1,
    /// Return space, then wait until the head record is committed.
    Query = 2,
    /// Produce one record from the caller's bytes.
    Write = 3,
    /// Offsets, capacity and counters.
    Stats = 4,
    /// Start or stop the built-in producer.
    Generate = 5,
    /// Take the mapping away from whoever holds it (administrators only).
    Revoke = 6,
    /// Give the mapping an event that its QUERYs set when they complete (eBPF for Windows'
    /// ring buffer wait handle): the consumer waits on the event, not on the request.
    SetEvent = 7,
}

impl Request {
    /// Every request, in code order.
    pub const ALL: [Request; 8] = [
        Request::Map,
        Request::Unmap,
        Request::Query,
        Request::Write,
        Request::Stats,
        Request::Generate,
        Request::Revoke,
        Request::SetEvent,
    ];

    /// The Windows I/O control code: `CTL_CODE(FILE_DEVICE_UNKNOWN, 0x800 + n,
    /// METHOD_BUFFERED, access)`, read access to consume, write access to produce.
    pub const fn ioctl(self) -> u32 {
        let access = match self {
            Request::Map | Request::Unmap | Request::Query | Request::SetEvent => FILE_READ_ACCESS,
            Request::Write | Request::Generate | Request::Revoke => FILE_WRITE_ACCESS,
            Request::Stats => FILE_ANY_ACCESS,
        };
        ctl_code(
            FILE_DEVICE_UNKNOWN,
            0x800 + self as u32,
            METHOD_BUFFERED,
            access,
        )
    }

    /// The request an I/O control code names, if any.
    pub fn from_ioctl(code: u32) -> Option<Request> {
        Request::ALL.into_iter().find(|r| r.ioctl() == code)
    }

    /// The request a usersim message code names, if any (the same numbers as `n` above).
    pub fn from_code(code: u32) -> Option<Request> {
        Request::ALL.into_iter().find(|r| *r as u32 == code)
    }

    /// The request's name, as the command line and errors say it.
    pub const fn name(self) -> &'static str {
        match self {
            Request::Map => "MAP",
            Request::Unmap => "UNMAP",
            Request::Query => "QUERY",
            Request::Write => "WRITE",
            Request::Stats => "STATS",
            Request::Generate => "GENERATE",
            Request::Revoke => "REVOKE",
            Request::SetEvent => "SET_EVENT",
        }
    }
}

/// How a request ended: the NTSTATUS values the driver completes with, and usersim replies
/// with.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// `STATUS_SUCCESS`.
    Success = 0,
    /// `STATUS_PENDING`: the reply comes later.
    Pending = 0x0000_0103,
    /// `STATUS_DEVICE_BUSY`: another QUERY is pending on the ring, or GENERATE stop while
    /// a start or another stop is under way.
    DeviceBusy = 0x8000_0011,
    /// `STATUS_ACCESS_DENIED`: a QUERY from a handle that does not hold the ring's mapping
    /// (only the mapping may move the consumer position). Nothing changed.
    AccessDenied = 0xC000_0022,
    /// `STATUS_INVALID_PARAMETER`: a size, a reserved field or a value is wrong.
    InvalidParameter = 0xC000_000D,
    /// `STATUS_INVALID_DEVICE_REQUEST`: an unknown request code.
    InvalidDeviceRequest = 0xC000_0010,
    /// `STATUS_BUFFER_TOO_SMALL`: the output buffer cannot hold the reply.
    BufferTooSmall = 0xC000_0023,
    /// `STATUS_SHARING_VIOLATION`: the ring is mapped by another handle already.
    SharingViolation = 0xC000_0043,
    /// `STATUS_INSUFFICIENT_RESOURCES`: the ring is full (WRITE), or memory ran out.
    InsufficientResources = 0xC000_009A,
    /// `STATUS_CANCELLED`: the pending QUERY was cancelled or its handle closed.
    Cancelled = 0xC000_0120,
    /// `STATUS_INVALID_DEVICE_STATE`: UNMAP without a mapping, GENERATE start while the
    /// generator runs or is being stopped.
    InvalidDeviceState = 0xC000_0184,
}

impl Status {
    const ALL: [Status; 11] = [
        Status::Success,
        Status::Pending,
        Status::DeviceBusy,
        Status::AccessDenied,
        Status::InvalidParameter,
        Status::InvalidDeviceRequest,
        Status::BufferTooSmall,
        Status::SharingViolation,
        Status::InsufficientResources,
        Status::Cancelled,
        Status::InvalidDeviceState,
    ];

    /// The status an NTSTATUS value names, if it is one of ours.
    pub fn from_ntstatus(value: u32) -> Option<Status> {
        Status::ALL.into_iter().find(|s| *s as u32 == value)
    }

    /// The NTSTATUS value.
    pub const fn ntstatus(self) -> u32 {
        self as u32
    }

    /// The NTSTATUS name.
    pub const fn name(self) -> &'static str {
        match self {
            Status::Success => "STATUS_SUCCESS",
            Status::Pending => "STATUS_PENDING",
            Status::DeviceBusy => "STATUS_DEVICE_BUSY",
            Status::AccessDenied => "STATUS_ACCESS_DENIED",
            Status::InvalidParameter => "STATUS_INVALID_PARAMETER",
            Status::InvalidDeviceRequest => "STATUS_INVALID_DEVICE_REQUEST",
            Status::BufferTooSmall => "STATUS_BUFFER_TOO_SMALL",
            Status::SharingViolation => "STATUS_SHARING_VIOLATION",
            Status::InsufficientResources => "STATUS_INSUFFICIENT_RESOURCES",
            Status::Cancelled => "STATUS_CANCELLED",
            Status::InvalidDeviceState => "STATUS_INVALID_DEVICE_STATE",
        }
    }
}

impl core::fmt::Display for Status {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} (0x{:08X})", self.name(), self.ntstatus())
    }
}

/// A struct of this ABI: plain old data whose every bit pattern is valid, starting with its
/// own size.
///
/// # Safety
///
/// Implementors are `#[repr(C)]`, contain only integers (no padding, no invalid bit
/// patterns), and begin with `size: u32`.
pub unsafe trait Wire: Copy + Default {
    /// `size_of::<Self>()` as the `size` field holds it.
    const SIZE: u32 = size_of::<Self>() as u32;

    /// Reads the struct from exactly `bytes`: [`Status::InvalidParameter`] unless
    /// `bytes.len()` and the `size` field both equal the struct's size and
    /// [`check`](Wire::check) passes.
    fn read_exact(bytes: &[u8]) -> Result<Self, Status> {
        let value = Self::read_prefix(bytes)?;
        if bytes.len() != size_of::<Self>() {
            return Err(Status::InvalidParameter);
        }
        Ok(value)
    }

    /// Reads the struct from the start of `bytes` (which may go on: WRITE's payload).
    fn read_prefix(bytes: &[u8]) -> Result<Self, Status> {
        if bytes.len() < size_of::<Self>() {
            return Err(Status::InvalidParameter);
        }
        let mut value = Self::default();
        // SAFETY: `Self` is plain old data (the trait's contract), so any bytes make a valid
        // value; the source holds at least `size_of::<Self>()` bytes and the destination is
        // a distinct local.
        unsafe {
            core::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                (&mut value as *mut Self).cast::<u8>(),
                size_of::<Self>(),
            );
        }
        if value.size() != Self::SIZE {
            return Err(Status::InvalidParameter);
        }
        value.check()?;
        Ok(value)
    }

    /// Writes the struct to the start of `out`; [`Status::BufferTooSmall`] if it does not fit.
    /// Returns the number of bytes written.
    fn write_to(&self, out: &mut [u8]) -> Result<usize, Status> {
        let bytes = self.as_bytes();
        out.get_mut(..bytes.len())
            .ok_or(Status::BufferTooSmall)?
            .copy_from_slice(bytes);
        Ok(bytes.len())
    }

    /// The struct's bytes.
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: `Self` is plain old data without padding (the trait's contract): every
        // byte is initialised.
        unsafe {
            core::slice::from_raw_parts((self as *const Self).cast::<u8>(), size_of::<Self>())
        }
    }

    /// The `size` field.
    fn size(&self) -> u32;

    /// Checks the reserved fields and values; [`Status::InvalidParameter`] if one is wrong.
    fn check(&self) -> Result<(), Status> {
        Ok(())
    }
}

macro_rules! wire {
    ($($name:ident),*) => {$(
        // SAFETY: `#[repr(C)]`, integer fields only, laid out without padding (the size
        // assertions below check it), `size: u32` first.
        unsafe impl Wire for $name {
            fn size(&self) -> u32 {
                self.size
            }
            fn check(&self) -> Result<(), Status> {
                self.check_fields()
            }
        }
    )*};
}

/// The request of MAP, UNMAP and STATS: nothing but its size.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EmptyRequest {
    /// `size_of::<EmptyRequest>()`.
    pub size: u32,
    /// Zero.
    pub reserved: u32,
}

impl EmptyRequest {
    /// A well-formed request.
    pub fn new() -> EmptyRequest {
        EmptyRequest {
            size: Self::SIZE,
            reserved: 0,
        }
    }
    fn check_fields(&self) -> Result<(), Status> {
        zero(self.reserved)
    }
}

/// The reply to MAP: where the consumer view is, as handles in the caller's process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapReply {
    /// `size_of::<MapReply>()`.
    pub size: u32,
    /// Zero.
    pub reserved: u32,
    /// The data capacity in bytes.
    pub capacity: u64,
    /// The consumer offset the consumer starts from (the consumer page says the same).
    pub consumer_offset: u64,
    /// The consumer page, to map read-write (one page).
    pub consumer_page_handle: u64,
    /// The producer page, to map read-only (one page).
    pub producer_page_handle: u64,
    /// The data, to map read-only twice back to back (`capacity` bytes).
    pub data_handle: u64,
}

impl MapReply {
    fn check_fields(&self) -> Result<(), Status> {
        zero(self.reserved)?;
        crate::layout::Capacity::new(self.capacity).map_err(|_| Status::InvalidParameter)?;
        Ok(())
    }
}

/// The request of QUERY: the consumer offset the consumer has read up to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueryRequest {
    /// `size_of::<QueryRequest>()`.
    pub size: u32,
    /// Zero.
    pub reserved: u32,
    /// How far the consumer has read; validated before it returns any space.
    pub consumer_offset: u64,
}

impl QueryRequest {
    /// A well-formed request.
    pub fn new(consumer_offset: u64) -> QueryRequest {
        QueryRequest {
            size: Self::SIZE,
            reserved: 0,
            consumer_offset,
        }
    }
    fn check_fields(&self) -> Result<(), Status> {
        zero(self.reserved)
    }
}

/// The request of SET_EVENT: an event the mapping's QUERYs set when they complete.
///
/// Windows: a handle, in the caller's process, to an event it created (`CreateEventW`;
/// auto-reset suits a single waiter), opened with `EVENT_MODIFY_STATE` at least. Linux
/// (usersim): the message carries an eventfd with `SCM_RIGHTS` and `event_handle` is 1; the
/// server puts the descriptor into the caller's handle table and passes its handle on.
/// 0 takes the mapping's event away. The event stays the mapping's until it ends, and is
/// set once more when it ends, so that a waiter learns of it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetEventRequest {
    /// `size_of::<SetEventRequest>()`.
    pub size: u32,
    /// Zero.
    pub reserved: u32,
    /// The event's handle in the caller's process; 0: none.
    pub event_handle: u64,
}

impl SetEventRequest {
    /// A well-formed request.
    pub fn new(event_handle: u64) -> SetEventRequest {
        SetEventRequest {
            size: Self::SIZE,
            reserved: 0,
            event_handle,
        }
    }
    fn check_fields(&self) -> Result<(), Status> {
        zero(self.reserved)
    }
}

/// The reply to QUERY, sent once the head record is committed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueryReply {
    /// `size_of::<QueryReply>()`.
    pub size: u32,
    /// Zero.
    pub reserved: u32,
    /// The producer offset.
    pub producer_offset: u64,
    /// The validated consumer offset.
    pub consumer_offset: u64,
    /// Reservations refused so far because the ring was full (STATS `dropped`; a producer
    /// that retries, as the generator does, loses nothing).
    pub dropped: u64,
}

impl QueryReply {
    fn check_fields(&self) -> Result<(), Status> {
        zero(self.reserved)
    }
}

/// The request of WRITE: this header, then exactly `length` payload bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteRequest {
    /// `size_of::<WriteRequest>()` (the header only).
    pub size: u32,
    /// Zero.
    pub reserved: u32,
    /// The payload length: 1 ..= 2^30 - 1, and the record must fit in the ring.
    pub length: u32,
    /// Zero.
    pub reserved2: u32,
}

impl WriteRequest {
    /// A well-formed header for `length` payload bytes.
    pub fn new(length: u32) -> WriteRequest {
        WriteRequest {
            size: Self::SIZE,
            reserved: 0,
            length,
            reserved2: 0,
        }
    }
    fn check_fields(&self) -> Result<(), Status> {
        zero(self.reserved)?;
        zero(self.reserved2)?;
        if self.length == 0 || self.length > crate::record::MAX_PAYLOAD {
            return Err(Status::InvalidParameter);
        }
        Ok(())
    }

    /// Splits a WRITE input into its header and payload, checking that the payload is
    /// exactly `length` bytes.
    pub fn parse(input: &[u8]) -> Result<(WriteRequest, &[u8]), Status> {
        let header = WriteRequest::read_prefix(input)?;
        let payload = &input[size_of::<WriteRequest>()..];
        if payload.len() != header.length as usize {
            return Err(Status::InvalidParameter);
        }
        Ok((header, payload))
    }
}

/// The reply to WRITE.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteReply {
    /// `size_of::<WriteReply>()`.
    pub size: u32,
    /// Zero.
    pub reserved: u32,
    /// The record's offset.
    pub offset: u64,
}

impl WriteReply {
    fn check_fields(&self) -> Result<(), Status> {
        zero(self.reserved)
    }
}

/// The reply to STATS.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsReply {
    /// `size_of::<StatsReply>()`.
    pub size: u32,
    /// Non-zero while a handle has the ring mapped.
    pub mapped: u32,
    /// The data capacity in bytes.
    pub capacity: u64,
    /// The producer offset.
    pub producer_offset: u64,
    /// The reserve offset.
    pub reserve_offset: u64,
    /// The validated consumer offset.
    pub consumer_offset: u64,
    /// What the consumer page says (untrusted).
    pub consumer_page_offset: u64,
    /// Records submitted (WRITE and the generator).
    pub produced: u64,
    /// Records discarded.
    pub discarded: u64,
    /// Reservations refused because the ring was full.
    pub dropped: u64,
    /// QUERY requests received.
    pub queries: u64,
    /// QUERY requests completed by a producer (not at once).
    pub wakeups: u64,
    /// Generator producer threads still producing (a counted run ends by itself; GENERATE
    /// stop is still needed before the next start).
    pub generator_producers: u32,
    /// Zero.
    pub reserved: u32,
    /// Submitted records that were published but not returned when a mapping ended (UNMAP,
    /// handle closed, process died): the next consumer receives them, again if the one that
    /// ended had read them. Delivery across a consumer's end is at-least-once.
    pub redelivered: u64,
    /// Submitted records whose space the consumers returned (read and done with), since the
    /// ring started: what the validated consumer offset has passed, discarded ones not
    /// counted.
    pub consumed: u64,
    /// The process id of the handle that holds the mapping; 0 while none does.
    pub mapping_process: u64,
}

impl StatsReply {
    fn check_fields(&self) -> Result<(), Status> {
        zero(self.reserved)
    }
}

/// GENERATE's actions.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GenerateAction {
    /// Stop the generator (it must be running).
    Stop = 0,
    /// Start it (it must be stopped).
    Start = 1,
}

/// The most producer threads GENERATE starts.
pub const MAX_GENERATOR_PRODUCERS: u32 = 64;
/// The smallest generated payload: it carries the producer and the sequence number.
pub const MIN_GENERATED_PAYLOAD: u32 = 8;

/// The request of GENERATE.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GenerateRequest {
    /// `size_of::<GenerateRequest>()`.
    pub size: u32,
    /// A [`GenerateAction`].
    pub action: u32,
    /// Producer threads: 1 ..= [`MAX_GENERATOR_PRODUCERS`] to start, 0 to stop.
    pub producers: u32,
    /// Payload bytes of each record: [`MIN_GENERATED_PAYLOAD`] ..= what fits the ring; 0 to
    /// stop.
    pub payload_size: u32,
    /// Records per second for each producer; 0 for flat out.
    pub records_per_second: u64,
    /// Records each producer submits before it stops; 0 for no limit.
    pub count: u64,
}

impl GenerateRequest {
    /// A request to start `producers` producers.
    pub fn start(producers: u32, payload_size: u32, records_per_second: u64, count: u64) -> Self {
        GenerateRequest {
            size: Self::SIZE,
            action: GenerateAction::Start as u32,
            producers,
            payload_size,
            records_per_second,
            count,
        }
    }

    /// A request to stop.
    pub fn stop() -> Self {
        GenerateRequest {
            size: Self::SIZE,
            action: GenerateAction::Stop as u32,
            ..GenerateRequest::default()
        }
    }

    /// The action.
    pub fn action(&self) -> GenerateAction {
        if self.action == GenerateAction::Start as u32 {
            GenerateAction::Start
        } else {
            GenerateAction::Stop
        }
    }

    fn check_fields(&self) -> Result<(), Status> {
        match self.action {
            a if a == GenerateAction::Stop as u32 => {
                if self.producers != 0
                    || self.payload_size != 0
                    || self.records_per_second != 0
                    || self.count != 0
                {
                    return Err(Status::InvalidParameter);
                }
            }
            a if a == GenerateAction::Start as u32 => {
                if !(1..=MAX_GENERATOR_PRODUCERS).contains(&self.producers)
                    || !(MIN_GENERATED_PAYLOAD..=crate::record::MAX_PAYLOAD)
                        .contains(&self.payload_size)
                {
                    return Err(Status::InvalidParameter);
                }
            }
            _ => return Err(Status::InvalidParameter),
        }
        Ok(())
    }
}

/// The reply to GENERATE.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GenerateReply {
    /// `size_of::<GenerateReply>()`.
    pub size: u32,
    /// Producer threads running after the request.
    pub producers: u32,
}

impl GenerateReply {
    fn check_fields(&self) -> Result<(), Status> {
        Ok(())
    }
}

wire!(
    EmptyRequest,
    MapReply,
    QueryRequest,
    SetEventRequest,
    QueryReply,
    WriteRequest,
    WriteReply,
    StatsReply,
    GenerateRequest,
    GenerateReply
);

const _: () = {
    assert!(size_of::<EmptyRequest>() == 8);
    assert!(size_of::<MapReply>() == 48);
    assert!(size_of::<QueryRequest>() == 16);
    assert!(size_of::<SetEventRequest>() == 16);
    assert!(size_of::<QueryReply>() == 32);
    assert!(size_of::<WriteRequest>() == 16);
    assert!(size_of::<WriteReply>() == 16);
    assert!(size_of::<StatsReply>() == 120);
    assert!(size_of::<GenerateRequest>() == 32);
    assert!(size_of::<GenerateReply>() == 8);
};

fn zero(field: u32) -> Result<(), Status> {
    if field == 0 {
        Ok(())
    } else {
        Err(Status::InvalidParameter)
    }
}

/// The record the generator writes: the producer's index in the top 16 bits and its
/// sequence number in the low 48 bits of the first 8 bytes (little-endian); when the payload
/// has room, the next 8 bytes are the submit time in nanoseconds of the host's monotonic
/// clock; the rest is the byte `0xA5`.
pub mod generated {
    /// Filler byte after the fields.
    pub const FILL: u8 = 0xA5;

    /// The first 8 bytes of a generated record.
    pub const fn tag(producer: u16, sequence: u64) -> u64 {
        ((producer as u64) << 48) | (sequence & ((1 << 48) - 1))
    }

    /// Splits a record's tag into producer and sequence number.
    pub fn parse(payload: &[u8]) -> Option<(u16, u64, Option<u64>)> {
        let tag = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
        let time = payload
            .get(8..16)
            .map(|t| u64::from_le_bytes(t.try_into().expect("8 bytes")));
        Some(((tag >> 48) as u16, tag & ((1 << 48) - 1), time))
    }

    /// Fills `payload` as the generator does.
    pub fn fill(payload: &mut [u8], producer: u16, sequence: u64, now_ns: u64) {
        payload[..8].copy_from_slice(&tag(producer, sequence).to_le_bytes());
        if payload.len() >= 16 {
            payload[8..16].copy_from_slice(&now_ns.to_le_bytes());
            payload[16..].fill(FILL);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn ioctl_codes_are_ctl_codes() {
        // CTL_CODE(FILE_DEVICE_UNKNOWN, 0x800, METHOD_BUFFERED, FILE_READ_ACCESS)
        assert_eq!(Request::Map.ioctl(), 0x0022_6000);
        assert_eq!(Request::Write.ioctl(), 0x0022_A00C);
        assert_eq!(Request::Stats.ioctl(), 0x0022_2010);
        for r in Request::ALL {
            assert_eq!(Request::from_ioctl(r.ioctl()), Some(r));
            assert_eq!(Request::from_code(r as u32), Some(r));
        }
        assert_eq!(Request::from_ioctl(0x0022_6001), None);
        // CTL_CODE(FILE_DEVICE_UNKNOWN, 0x807, METHOD_BUFFERED, FILE_READ_ACCESS)
        assert_eq!(Request::SetEvent.ioctl(), 0x0022_601C);
        assert_eq!(Request::from_code(8), None);
    }

    #[test]
    fn exact_sizes_and_reserved_fields_are_checked() {
        let q = QueryRequest::new(42);
        assert_eq!(QueryRequest::read_exact(q.as_bytes()), Ok(q));
        assert_eq!(
            QueryRequest::read_exact(&q.as_bytes()[..15]),
            Err(Status::InvalidParameter)
        );
        let mut long = q.as_bytes().to_vec();
        long.push(0);
        assert_eq!(
            QueryRequest::read_exact(&long),
            Err(Status::InvalidParameter)
        );
        let mut bad = q;
        bad.size = 24;
        assert_eq!(
            QueryRequest::read_exact(bad.as_bytes()),
            Err(Status::InvalidParameter)
        );
        let mut bad = q;
        bad.reserved = 1;
        assert_eq!(
            QueryRequest::read_exact(bad.as_bytes()),
            Err(Status::InvalidParameter)
        );
    }

    #[test]
    fn write_requests_carry_exactly_their_payload() {
        let mut input = WriteRequest::new(3).as_bytes().to_vec();
        input.extend_from_slice(b"abc");
        let (header, payload) = WriteRequest::parse(&input).unwrap();
        assert_eq!((header.length, payload), (3, &b"abc"[..]));
        input.push(b'd');
        assert_eq!(WriteRequest::parse(&input), Err(Status::InvalidParameter));
        let zero = WriteRequest::new(0);
        assert_eq!(
            WriteRequest::parse(zero.as_bytes()),
            Err(Status::InvalidParameter)
        );
    }

    #[test]
    fn generate_requests_are_checked() {
        let ok = GenerateRequest::start(2, 64, 0, 10);
        assert_eq!(GenerateRequest::read_exact(ok.as_bytes()), Ok(ok));
        for bad in [
            GenerateRequest::start(0, 64, 0, 0),
            GenerateRequest::start(65, 64, 0, 0),
            GenerateRequest::start(1, 7, 0, 0),
            GenerateRequest {
                action: 2,
                ..GenerateRequest::stop()
            },
            GenerateRequest {
                count: 1,
                ..GenerateRequest::stop()
            },
        ] {
            assert_eq!(
                GenerateRequest::read_exact(bad.as_bytes()),
                Err(Status::InvalidParameter),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn replies_that_do_not_fit_are_refused() {
        let reply = QueryReply {
            size: QueryReply::SIZE,
            ..QueryReply::default()
        };
        let mut small = [0u8; 31];
        assert_eq!(reply.write_to(&mut small), Err(Status::BufferTooSmall));
        let mut out = [0u8; 40];
        assert_eq!(reply.write_to(&mut out), Ok(32));
    }

    #[test]
    fn generated_records_round_trip() {
        let mut payload = [0u8; 24];
        generated::fill(&mut payload, 3, 77, 1234);
        assert_eq!(generated::parse(&payload), Some((3, 77, Some(1234))));
        assert_eq!(&payload[16..], &[generated::FILL; 8]);
        let mut small = [0u8; 8];
        generated::fill(&mut small, 1, 2, 3);
        assert_eq!(generated::parse(&small), Some((1, 2, None)));
    }

    #[test]
    fn statuses_are_ntstatus_values() {
        assert_eq!(Status::InvalidParameter.ntstatus(), 0xC000_000D);
        assert_eq!(Status::from_ntstatus(0xC000_0120), Some(Status::Cancelled));
        assert!(
            Status::SharingViolation
                .to_string()
                .contains("STATUS_SHARING_VIOLATION")
        );
    }
}
