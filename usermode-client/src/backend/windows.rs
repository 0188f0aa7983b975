//! The installed driver, `\\.\RingMap` (Windows): `CreateFileW` with `FILE_FLAG_OVERLAPPED`,
//! `DeviceIoControl` with the IOCTL codes of `ringmap_core::abi::Request::ioctl`, an
//! `OVERLAPPED` QUERY that a timeout cancels with `CancelIoEx`, and the consumer view mapped
//! from the three section handles of the MAP reply (the data twice back to back through
//! placeholders).

use std::ffi::c_void;
use std::io;
use std::path::PathBuf;
use std::ptr;
use std::time::Duration;

use ringmap_core::abi::{MapReply, Request, SetEventRequest, Status, WIN32_DEVICE_PATH, Wire};
use ringmap_core::{Capacity, PAGE_SIZE};
use windows_sys::Win32::Foundation::{
    CloseHandle, ERROR_ACCESS_DENIED, ERROR_BAD_COMMAND, ERROR_BUSY, ERROR_DEVICE_NOT_CONNECTED,
    ERROR_DEVICE_REMOVED, ERROR_FILE_NOT_FOUND, ERROR_INSUFFICIENT_BUFFER, ERROR_INVALID_FUNCTION,
    ERROR_INVALID_HANDLE, ERROR_INVALID_PARAMETER, ERROR_IO_PENDING, ERROR_NO_SYSTEM_RESOURCES,
    ERROR_OPERATION_ABORTED, ERROR_PATH_NOT_FOUND, ERROR_SHARING_VIOLATION, GENERIC_READ,
    GENERIC_WRITE, GetLastError, HANDLE, INVALID_HANDLE_VALUE, WAIT_OBJECT_0, WAIT_TIMEOUT,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, FILE_FLAG_OVERLAPPED, FILE_SHARE_READ, FILE_SHARE_WRITE, OPEN_EXISTING,
};
use windows_sys::Win32::System::IO::{
    CancelIoEx, DeviceIoControl, GetOverlappedResult, OVERLAPPED,
};
use windows_sys::Win32::System::Memory::{
    FILE_MAP_READ, FILE_MAP_WRITE, MEM_PRESERVE_PLACEHOLDER, MEM_RELEASE, MEM_REPLACE_PLACEHOLDER,
    MEM_RESERVE, MEM_RESERVE_PLACEHOLDER, MEMORY_MAPPED_VIEW_ADDRESS, MapViewOfFile,
    MapViewOfFile3, PAGE_NOACCESS, PAGE_READONLY, UnmapViewOfFile, VirtualAlloc2, VirtualFree,
};
use windows_sys::Win32::System::Performance::{QueryPerformanceCounter, QueryPerformanceFrequency};
use windows_sys::Win32::System::Threading::{
    CreateEventW, GetCurrentProcess, INFINITE, ResetEvent, WaitForMultipleObjects,
    WaitForSingleObject,
};

use crate::Error;

/// A mapping's event for SET_EVENT: a manual-reset event, closed when dropped (the driver
/// holds its own reference while it has it).
pub(crate) struct Event(HANDLE);

// SAFETY: a kernel handle, valid in every thread of the process.
unsafe impl Send for Event {}

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: our handle, closed once.
        unsafe { CloseHandle(self.0) };
    }
}

/// A new event for SET_EVENT.
pub(crate) fn new_event() -> Result<Event, Error> {
    // SAFETY: a new unnamed manual-reset event, initially not signalled.
    let event = unsafe { CreateEventW(ptr::null(), 1, 0, ptr::null()) };
    if event.is_null() {
        return Err(Error::Io(io::Error::last_os_error()));
    }
    Ok(Event(event))
}

pub(crate) fn monotonic_ns() -> u64 {
    let mut count = 0i64;
    let mut frequency = 0i64;
    // SAFETY: both calls write one `i64` each to the locals passed; they cannot fail on
    // Windows XP and later.
    unsafe {
        QueryPerformanceCounter(&mut count);
        QueryPerformanceFrequency(&mut frequency);
    }
    let frequency = frequency.max(1) as u128;
    (count.max(0) as u128 * 1_000_000_000 / frequency) as u64
}

/// The status a failed I/O control's Win32 error stands for (the driver completes with an
/// NTSTATUS, which Windows translates), or the error itself.
fn from_win32(error: u32) -> Result<Status, Error> {
    Ok(match error {
        ERROR_INVALID_PARAMETER => Status::InvalidParameter,
        ERROR_INVALID_FUNCTION => Status::InvalidDeviceRequest,
        ERROR_INSUFFICIENT_BUFFER => Status::BufferTooSmall,
        ERROR_SHARING_VIOLATION => Status::SharingViolation,
        ERROR_NO_SYSTEM_RESOURCES => Status::InsufficientResources,
        ERROR_OPERATION_ABORTED => Status::Cancelled,
        ERROR_BUSY => Status::DeviceBusy,
        ERROR_BAD_COMMAND => Status::InvalidDeviceState,
        ERROR_DEVICE_REMOVED | ERROR_DEVICE_NOT_CONNECTED | ERROR_INVALID_HANDLE => {
            return Err(Error::DeviceGone);
        }
        other => return Err(Error::Io(io::Error::from_raw_os_error(other as i32))),
    })
}

fn last_error() -> u32 {
    // SAFETY: reads the calling thread's last-error value.
    unsafe { GetLastError() }
}

/// An open handle of the driver, and the event its overlapped requests signal.
pub(crate) struct Handle {
    file: HANDLE,
    event: HANDLE,
    /// A manual-reset event that a mapping's readiness QUERY signals when it completes.
    ready: HANDLE,
    /// That QUERY while it is outstanding: its OVERLAPPED and buffers, on the heap so that
    /// they stay put until it completes.
    armed: std::cell::RefCell<Option<Box<Armed>>>,
}

/// An outstanding readiness QUERY.
struct Armed {
    overlapped: OVERLAPPED,
    input: [u8; 16],
    output: [u8; 32],
}

// SAFETY: kernel handles are process-wide; one request at a time runs on a `Handle`
// (`&self` methods are not called concurrently: `Device` is not `Sync`).
unsafe impl Send for Handle {}

impl Handle {
    pub(crate) fn open() -> Result<Handle, Error> {
        let path = PathBuf::from(WIN32_DEVICE_PATH);
        let wide: Vec<u16> = WIN32_DEVICE_PATH.encode_utf16().chain([0]).collect();
        // SAFETY: `wide` is a NUL-terminated UTF-16 string that outlives the call; no
        // security attributes, no template.
        let file = unsafe {
            CreateFileW(
                wide.as_ptr(),
                GENERIC_READ | GENERIC_WRITE,
                FILE_SHARE_READ | FILE_SHARE_WRITE,
                ptr::null(),
                OPEN_EXISTING,
                FILE_FLAG_OVERLAPPED,
                ptr::null_mut(),
            )
        };
        if file == INVALID_HANDLE_VALUE {
            return Err(match last_error() {
                ERROR_FILE_NOT_FOUND | ERROR_PATH_NOT_FOUND => Error::NoDevice { path },
                ERROR_ACCESS_DENIED => Error::AccessDenied { path },
                other => Error::Io(io::Error::from_raw_os_error(other as i32)),
            });
        }
        // SAFETY: a new unnamed manual-reset event, initially not signalled.
        let event = unsafe { CreateEventW(ptr::null(), 1, 0, ptr::null()) };
        if event.is_null() {
            let error = io::Error::last_os_error();
            // SAFETY: `file` was opened above and is closed once.
            unsafe { CloseHandle(file) };
            return Err(Error::Io(error));
        }
        // SAFETY: as for `event`.
        let ready = unsafe { CreateEventW(ptr::null(), 1, 0, ptr::null()) };
        if ready.is_null() {
            let error = io::Error::last_os_error();
            // SAFETY: both were opened above and are closed once.
            unsafe {
                CloseHandle(event);
                CloseHandle(file);
            }
            return Err(Error::Io(error));
        }
        Ok(Handle {
            file,
            event,
            ready,
            armed: std::cell::RefCell::new(None),
        })
    }

    /// Starts a QUERY with `input` that signals the readiness event when it completes, and
    /// does not wait. Nothing if one is outstanding.
    pub(crate) fn arm(&self, input: &[u8]) -> Result<(), Error> {
        let mut armed = self.armed.borrow_mut();
        if armed.is_some() {
            return Ok(());
        }
        let mut query = Box::new(Armed {
            // SAFETY: OVERLAPPED is plain data; all zero is its initial state.
            overlapped: unsafe { std::mem::zeroed() },
            input: input
                .try_into()
                .map_err(|_| Error::Protocol("a QUERY request is 16 bytes".into()))?,
            output: [0; 32],
        });
        query.overlapped.hEvent = self.ready;
        // SAFETY: our event; the QUERY below signals it again when it completes.
        unsafe { ResetEvent(self.ready) };
        // SAFETY: the boxed buffers and OVERLAPPED stay where they are until the request
        // completes: `wait_armed` and `disarm` wait for it before the box is dropped, and so
        // does `Drop for Handle`.
        let ok = unsafe {
            DeviceIoControl(
                self.file,
                Request::Query.ioctl(),
                query.input.as_ptr().cast::<c_void>(),
                16,
                query.output.as_mut_ptr().cast::<c_void>(),
                32,
                ptr::null_mut(),
                &mut query.overlapped,
            )
        };
        if ok == 0 {
            let error = last_error();
            if error != ERROR_IO_PENDING {
                return Err(match from_win32(error) {
                    Ok(status) => Error::Status(status),
                    Err(error) => error,
                });
            }
        }
        *armed = Some(query);
        Ok(())
    }

    /// Waits up to `timeout` (`None`: for ever) for the readiness QUERY; its reply's bytes if
    /// it completed, `None` if it still pends, was cancelled, or none is outstanding.
    pub(crate) fn wait_armed(&self, timeout: Option<Duration>) -> Result<Option<Vec<u8>>, Error> {
        if self.armed.borrow().is_none() {
            return Ok(None);
        }
        let ms = timeout.map_or(INFINITE, |timeout| {
            u32::try_from(timeout.as_millis())
                .unwrap_or(INFINITE - 1)
                .min(INFINITE - 1)
        });
        // SAFETY: waits on our event.
        if unsafe { WaitForSingleObject(self.ready, ms) } == WAIT_TIMEOUT {
            return Ok(None);
        }
        let query = self.armed.borrow_mut().take().expect("checked above");
        let mut bytes = 0u32;
        // SAFETY: the request described by `query.overlapped` completed (its event is
        // signalled); bWait makes sure of it before the box is dropped.
        let ok = unsafe { GetOverlappedResult(self.file, &query.overlapped, &mut bytes, 1) };
        if ok == 0 {
            return Ok(None);
        }
        Ok(Some(query.output[..bytes as usize].to_vec()))
    }

    /// Cancels the readiness QUERY, if one is outstanding, and waits for it to end.
    pub(crate) fn disarm(&self) -> Result<(), Error> {
        if let Some(query) = self.armed.borrow_mut().take() {
            let mut bytes = 0u32;
            // SAFETY: cancels that request only; GetOverlappedResult waits for it to end
            // before the box is dropped.
            unsafe {
                CancelIoEx(self.file, &query.overlapped);
                GetOverlappedResult(self.file, &query.overlapped, &mut bytes, 1);
            }
        }
        Ok(())
    }

    /// SET_EVENT: gives the driver `event` to set in the step that completes a QUERY of
    /// this handle's mapping (and when the mapping ends).
    pub(crate) fn set_event(&self, event: &Event) -> Result<Result<(), Status>, Error> {
        let input = SetEventRequest::new(event.0 as u64);
        Ok(self
            .ioctl(Request::SetEvent.ioctl(), input.as_bytes(), 0, None)?
            .map(|_| ()))
    }

    /// Starts a QUERY with `input` and waits up to `timeout` (`None`: for ever) for the
    /// first of `event` (set by the driver in the step that completes it) and the QUERY's
    /// own completion: `true` once the record is committed, `false` if the timeout passed
    /// (the QUERY is cancelled then). A QUERY whose event came first is left outstanding
    /// (it completed in that step) and collected by the next call.
    pub(crate) fn wait_event(
        &self,
        event: &Event,
        input: &[u8],
        timeout: Option<Duration>,
    ) -> Result<bool, Error> {
        // The QUERY an earlier wake-up on the event left: completed when its record was
        // committed (collected at once), or, if it still pends, cancelled.
        if self.armed.borrow().is_some() && self.wait_armed(Some(Duration::ZERO))?.is_none() {
            self.disarm()?;
        }
        // SAFETY: our event; the driver sets it again when the QUERY below completes.
        unsafe { ResetEvent(event.0) };
        self.arm(input)?;
        let ms = timeout.map_or(INFINITE, |timeout| {
            u32::try_from(timeout.as_millis())
                .unwrap_or(INFINITE - 1)
                .min(INFINITE - 1)
        });
        let handles = [event.0, self.ready];
        // SAFETY: waits on two events of ours, for either.
        let woke = unsafe { WaitForMultipleObjects(2, handles.as_ptr(), 0, ms) };
        if woke == WAIT_OBJECT_0 {
            return Ok(true);
        }
        if woke == WAIT_OBJECT_0 + 1 {
            // The QUERY ended first: its status says whether the record is committed.
            let query = self.armed.borrow_mut().take().expect("armed above");
            let mut bytes = 0u32;
            // SAFETY: the request described by `query.overlapped` completed (its event is
            // signalled); bWait makes sure of it before the box is dropped.
            let ok = unsafe { GetOverlappedResult(self.file, &query.overlapped, &mut bytes, 1) };
            if ok == 0 {
                return match from_win32(last_error())? {
                    Status::Cancelled => Ok(false),
                    status => Err(Error::Status(status)),
                };
            }
            return Ok(true);
        }
        if woke == WAIT_TIMEOUT {
            self.disarm()?;
            return Ok(false);
        }
        Err(Error::Io(io::Error::last_os_error()))
    }

    /// The event that is signalled while the readiness QUERY has completed and not been
    /// read (manual reset: level-triggered).
    pub(crate) fn readiness(&self) -> HANDLE {
        self.ready
    }

    /// One I/O control; with a timeout, cancelled when it passes.
    fn ioctl(
        &self,
        ioctl: u32,
        input: &[u8],
        output_len: usize,
        timeout: Option<Duration>,
    ) -> Result<Result<Vec<u8>, Status>, Error> {
        let input_len =
            u32::try_from(input.len()).map_err(|_| Error::Status(Status::InvalidParameter))?;
        let output_len = u32::try_from(output_len).unwrap_or(u32::MAX);
        let mut output = vec![0u8; output_len as usize];
        // SAFETY: OVERLAPPED is plain data; all zero is its initial state.
        let mut overlapped: OVERLAPPED = unsafe { std::mem::zeroed() };
        overlapped.hEvent = self.event;
        // SAFETY: the event is ours; the request below signals it again.
        unsafe { ResetEvent(self.event) };
        // SAFETY: the buffers and `overlapped` outlive the request: every path below waits
        // for its completion (GetOverlappedResult with bWait) before they are dropped.
        let ok = unsafe {
            DeviceIoControl(
                self.file,
                ioctl,
                input.as_ptr().cast::<c_void>(),
                input_len,
                output.as_mut_ptr().cast::<c_void>(),
                output_len,
                ptr::null_mut(),
                &mut overlapped,
            )
        };
        if ok == 0 {
            let error = last_error();
            if error != ERROR_IO_PENDING {
                return from_win32(error).map(Err);
            }
            if let Some(timeout) = timeout {
                let ms = u32::try_from(timeout.as_millis())
                    .unwrap_or(INFINITE - 1)
                    .min(INFINITE - 1);
                // SAFETY: waits on our event.
                if unsafe { WaitForSingleObject(self.event, ms) } == WAIT_TIMEOUT {
                    // SAFETY: cancels this request only; it completes (cancelled, or
                    // completed if it won the race) and GetOverlappedResult waits for that.
                    unsafe { CancelIoEx(self.file, &overlapped) };
                }
            }
        }
        let mut bytes = 0u32;
        // SAFETY: `overlapped` describes the request started above; bWait waits for it.
        let ok = unsafe { GetOverlappedResult(self.file, &overlapped, &mut bytes, 1) };
        if ok == 0 {
            return from_win32(last_error()).map(Err);
        }
        output.truncate(bytes as usize);
        Ok(Ok(output))
    }

    pub(crate) fn request(
        &self,
        _code: u32,
        ioctl: u32,
        input: &[u8],
        output_len: usize,
    ) -> Result<Result<Vec<u8>, Status>, Error> {
        let reply = self.ioctl(ioctl, input, output_len, None)?;
        if ioctl == Request::Map.ioctl() {
            // A MAP through `raw_request`: close the section handles it opened here.
            if let Ok(bytes) = &reply
                && let Ok(map) = MapReply::read_exact(bytes)
            {
                drop(PendingView::from_reply(&map));
            }
        }
        Ok(reply)
    }

    pub(crate) fn map(
        &self,
        input: &[u8],
        output_len: usize,
    ) -> Result<Result<(Vec<u8>, PendingView), Status>, Error> {
        Ok(self
            .ioctl(Request::Map.ioctl(), input, output_len, None)?
            .map(|bytes| {
                let pending = MapReply::read_exact(&bytes)
                    .map(|map| PendingView::from_reply(&map))
                    .unwrap_or_default();
                (bytes, pending)
            }))
    }

    pub(crate) fn query(
        &self,
        input: &[u8],
        output_len: usize,
        timeout: Option<Duration>,
    ) -> Result<Result<Vec<u8>, Status>, Error> {
        self.ioctl(Request::Query.ioctl(), input, output_len, timeout)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.disarm();
        // SAFETY: the handles were opened in `open` and are closed once.
        unsafe {
            CloseHandle(self.ready);
            CloseHandle(self.event);
            CloseHandle(self.file);
        }
    }
}

/// The section handles of a MAP reply, not yet mapped; closed when dropped.
#[derive(Default)]
pub(crate) struct PendingView {
    handles: [usize; 3],
}

impl PendingView {
    fn from_reply(reply: &MapReply) -> PendingView {
        PendingView {
            handles: [
                reply.consumer_page_handle as usize,
                reply.producer_page_handle as usize,
                reply.data_handle as usize,
            ],
        }
    }

    fn handle(&self, i: usize) -> HANDLE {
        self.handles[i] as HANDLE
    }

    pub(crate) fn map(self, _reply: &MapReply, capacity: Capacity) -> Result<View, Error> {
        let cap = capacity.bytes();
        let mut view = View {
            consumer_page: ptr::null_mut(),
            producer_page: ptr::null_mut(),
            data: ptr::null_mut(),
            data_views: 0,
            capacity: cap,
        };
        // SAFETY: each call maps a section handle the driver opened in this process; a
        // failure is checked, and `view` unmaps whatever was mapped if we return early.
        unsafe {
            view.consumer_page = MapViewOfFile(
                self.handle(0),
                FILE_MAP_READ | FILE_MAP_WRITE,
                0,
                0,
                PAGE_SIZE,
            )
            .Value
            .cast();
            if view.consumer_page.is_null() {
                return Err(io::Error::last_os_error().into());
            }
            view.producer_page = MapViewOfFile(self.handle(1), FILE_MAP_READ, 0, 0, PAGE_SIZE)
                .Value
                .cast();
            if view.producer_page.is_null() {
                return Err(io::Error::last_os_error().into());
            }
            let process = GetCurrentProcess();
            let base = VirtualAlloc2(
                process,
                ptr::null(),
                2 * cap,
                MEM_RESERVE | MEM_RESERVE_PLACEHOLDER,
                PAGE_NOACCESS,
                ptr::null_mut(),
                0,
            )
            .cast::<u8>();
            if base.is_null() {
                return Err(io::Error::last_os_error().into());
            }
            view.data = base;
            // Split the placeholder in two halves.
            if VirtualFree(base.cast(), cap, MEM_RELEASE | MEM_PRESERVE_PLACEHOLDER) == 0 {
                return Err(io::Error::last_os_error().into());
            }
            for half in 0..2 {
                let at = base.add(half * cap);
                let mapped = MapViewOfFile3(
                    self.handle(2),
                    process,
                    at.cast(),
                    0,
                    cap,
                    MEM_REPLACE_PLACEHOLDER,
                    PAGE_READONLY,
                    ptr::null_mut(),
                    0,
                );
                if mapped.Value.cast::<u8>() != at {
                    return Err(io::Error::last_os_error().into());
                }
                view.data_views += 1;
            }
        }
        Ok(view)
    }
}

impl Drop for PendingView {
    fn drop(&mut self) {
        for i in 0..3 {
            let handle = self.handle(i);
            if !handle.is_null() {
                // SAFETY: the driver opened these handles in this process for us; they are
                // closed once (mapped views keep their sections alive).
                unsafe { CloseHandle(handle) };
            }
        }
    }
}

/// The consumer view mapped in this process. Unmapped when dropped.
pub(crate) struct View {
    consumer_page: *mut u8,
    producer_page: *mut u8,
    /// The base of `2 * capacity` bytes: placeholders, then the two data views.
    data: *mut u8,
    /// How many halves of `data` are mapped views (the rest are placeholders).
    data_views: usize,
    capacity: usize,
}

// SAFETY: the views belong to this value alone and are process-wide memory; they may be
// used and unmapped from any thread.
unsafe impl Send for View {}

impl View {
    pub(crate) fn consumer_page(&self) -> *mut u8 {
        self.consumer_page
    }

    pub(crate) fn producer_page(&self) -> *mut u8 {
        self.producer_page
    }

    pub(crate) fn data(&self) -> *mut u8 {
        self.data
    }
}

fn unmap(at: *mut u8) {
    // SAFETY: `at` is the base of a view mapped by `PendingView::map`, unmapped once.
    unsafe {
        UnmapViewOfFile(MEMORY_MAPPED_VIEW_ADDRESS { Value: at.cast() });
    }
}

impl Drop for View {
    fn drop(&mut self) {
        if !self.consumer_page.is_null() {
            unmap(self.consumer_page);
        }
        if !self.producer_page.is_null() {
            unmap(self.producer_page);
        }
        if !self.data.is_null() {
            for half in 0..2 {
                let at = self.data.wrapping_add(half * self.capacity);
                if half < self.data_views {
                    unmap(at);
                } else {
                    // SAFETY: the rest of the reservation is placeholders of ours; each
                    // half (or the whole, if never split) is released once.
                    unsafe { VirtualFree(at.cast(), 0, MEM_RELEASE) };
                }
            }
        }
    }
}
