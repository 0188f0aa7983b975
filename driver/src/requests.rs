//! The request callbacks: each turns a WDF request into one call of the core's device.
//!
//! METHOD_BUFFERED requests share one system buffer between input and output, so the core
//! writes its reply to a local buffer, copied out afterwards; small inputs are copied in too,
//! so that nothing the core holds points into a buffer that another thread may complete (and
//! free) while a QUERY pends. Only WRITE (which never pends) and inputs too long for any
//! fixed-size request (refused before anything pends) are read in place.

use core::ptr::null_mut;
use core::sync::atomic::Ordering;

use ringmap_core::abi::{
    EmptyRequest, GenerateReply, GenerateRequest, MapReply, QueryReply, QueryRequest, Request,
    SetEventRequest, StatsReply, Status, Wire, WriteReply,
};
use ringmap_core::device::{HandleId, Outcome};
use wdk_sys::{
    _MODE, _WDF_REQUEST_TYPE, KPROCESSOR_MODE, NTSTATUS, PVOID, STATUS_CANCELLED, STATUS_SUCCESS,
    ULONG_PTR, WDF_REQUEST_PARAMETERS, WDFDEVICE, WDFFILEOBJECT, WDFQUEUE, WDFREQUEST,
    call_unsafe_wdf_function_binding,
};

use crate::platform::PendingRequest;

const fn max(values: &[u32]) -> usize {
    let mut result = 0;
    let mut i = 0;
    while i < values.len() {
        if values[i] as usize > result {
            result = values[i] as usize;
        }
        i += 1;
    }
    result
}

/// The longest reply of any request.
const REPLY_MAX: usize = max(&[
    MapReply::SIZE,
    QueryReply::SIZE,
    WriteReply::SIZE,
    StatsReply::SIZE,
    GenerateReply::SIZE,
]);

/// The longest fixed-size request (every request but WRITE's payload).
const INPUT_MAX: usize = max(&[
    EmptyRequest::SIZE,
    QueryRequest::SIZE,
    GenerateRequest::SIZE,
    SetEventRequest::SIZE,
]);

/// Completes `request` with `status` and `information` bytes of output.
///
/// # Safety
///
/// `request` is a request this driver owns and has not completed, and is not cancelable.
pub unsafe fn complete(request: WDFREQUEST, status: NTSTATUS, information: usize) {
    // SAFETY: the caller's contract.
    unsafe {
        call_unsafe_wdf_function_binding!(
            WdfRequestCompleteWithInformation,
            request,
            status,
            information as ULONG_PTR
        )
    };
}

fn complete_status(request: WDFREQUEST, status: Status) {
    // SAFETY: every caller owns `request` and has not made it cancelable.
    unsafe { complete(request, status.ntstatus() as NTSTATUS, 0) };
}

/// The output buffer of `request`, at least `length` bytes; `None` if it has fewer.
///
/// # Safety
///
/// `request` is owned and not completed; the slice is not used after it is completed.
pub unsafe fn output_buffer<'a>(request: WDFREQUEST, length: usize) -> Option<&'a mut [u8]> {
    let mut buffer: PVOID = null_mut();
    let mut size: usize = 0;
    // SAFETY: out-parameters; the caller's contract.
    let status = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfRequestRetrieveOutputBuffer,
            request,
            length,
            &raw mut buffer,
            &raw mut size
        )
    };
    // SAFETY: WDF returned a buffer of `size` bytes (the system buffer: kernel memory the
    // requester cannot touch), valid until the request completes.
    wdk::nt_success(status).then(|| unsafe { core::slice::from_raw_parts_mut(buffer.cast(), size) })
}

/// The input buffer of `request` (`length` bytes), in place.
///
/// # Safety
///
/// As [`output_buffer`]; no output slice of the same request is alive at the same time.
unsafe fn input_buffer<'a>(request: WDFREQUEST, length: usize) -> Option<&'a [u8]> {
    if length == 0 {
        return Some(&[]);
    }
    let mut buffer: PVOID = null_mut();
    let mut size: usize = 0;
    // SAFETY: out-parameters; the caller's contract.
    let status = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfRequestRetrieveInputBuffer,
            request,
            length,
            &raw mut buffer,
            &raw mut size
        )
    };
    // SAFETY: as in `output_buffer`.
    wdk::nt_success(status).then(|| unsafe { core::slice::from_raw_parts(buffer.cast(), size) })
}

/// Makes a QUERY cancelable: the `pend` of `Device::request`.
fn pend(request: WDFREQUEST) -> Result<PendingRequest, Status> {
    // SAFETY: a request we own, not yet cancelable.
    let status = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfRequestMarkCancelableEx,
            request,
            Some(evt_request_cancel)
        )
    };
    if wdk::nt_success(status) {
        Ok(PendingRequest(request))
    } else {
        // STATUS_CANCELLED: already cancelled; the core fails the QUERY with it.
        Err(Status::from_ntstatus(status as u32).unwrap_or(Status::Cancelled))
    }
}

/// Runs one device-control request through the core and completes it unless it pends.
fn dispatch(
    device: WDFDEVICE,
    request: WDFREQUEST,
    code: u32,
    input_len: usize,
    output_len: usize,
) {
    let Some(kind) = Request::from_ioctl(code) else {
        return complete_status(request, Status::InvalidDeviceRequest);
    };
    // SAFETY: the device's context is initialised before its queue and symbolic link exist.
    let Some(ring) = (unsafe { crate::device::ring(device) }) else {
        return complete_status(request, Status::InvalidDeviceState);
    };
    let mut copied = [0u8; INPUT_MAX];
    // SAFETY: the request is ours; no output slice exists yet.
    let Some(in_place) = (unsafe { input_buffer(request, input_len) }) else {
        return complete_status(request, Status::InvalidParameter);
    };
    let input = if in_place.len() <= INPUT_MAX && kind != Request::Write {
        copied[..in_place.len()].copy_from_slice(in_place);
        &copied[..in_place.len()]
    } else {
        in_place
    };
    // The handle the request came through: its WDFFILEOBJECT (every request has one:
    // `WdfFileObjectWdfCannotUseFsContexts`).
    // SAFETY: a request we own.
    let file: WDFFILEOBJECT =
        unsafe { call_unsafe_wdf_function_binding!(WdfRequestGetFileObject, request) };
    let cleaned_up = &crate::device::file_context(file).cleaned_up;
    // Relaxed: a first refusal only; the check that matters is the one in `pend` below.
    if cleaned_up.load(Ordering::Relaxed) {
        return complete_status(request, Status::Cancelled);
    }
    let mut reply = [0u8; REPLY_MAX];
    let reply_len = output_len.min(REPLY_MAX);
    let outcome = ring.device.request(
        HandleId(file as usize as u64),
        kind,
        input,
        &mut reply[..reply_len],
        || {
            // Under the device lock. Relaxed: EvtFileCleanup sets the flag before its
            // `Device::close` takes this lock; if that close ran first, its release of the
            // lock and our acquire order the flag before this load, and if it runs later,
            // it takes the QUERY pended here and cancels it.
            if cleaned_up.load(Ordering::Relaxed) {
                return Err(Status::Cancelled);
            }
            pend(request)
        },
    );
    match outcome {
        // Completed elsewhere (producers, cancel, cleanup): the request is not ours any more.
        Ok(Outcome::Pending) => {}
        Ok(Outcome::Done(0)) => {
            // SAFETY: ours, never made cancelable on this path.
            unsafe { complete(request, STATUS_SUCCESS, 0) };
        }
        // SAFETY: ours; `input` (which may point into the same system buffer) is dead.
        Ok(Outcome::Done(written)) => match unsafe { output_buffer(request, written) } {
            Some(output) => {
                output[..written].copy_from_slice(&reply[..written]);
                // SAFETY: ours, never made cancelable on this path.
                unsafe { complete(request, STATUS_SUCCESS, written) };
            }
            None => complete_status(request, Status::BufferTooSmall),
        },
        Err(status) => complete_status(request, status),
    }
}

/// EvtIoDeviceControl of the default (parallel) queue.
pub unsafe extern "C" fn evt_io_device_control(
    queue: WDFQUEUE,
    request: WDFREQUEST,
    output_buffer_length: usize,
    input_buffer_length: usize,
    io_control_code: u32,
) {
    // SAFETY: the queue WDF presented the request on.
    let device = unsafe { call_unsafe_wdf_function_binding!(WdfIoQueueGetDevice, queue) };
    dispatch(
        device,
        request,
        io_control_code,
        input_buffer_length,
        output_buffer_length,
    );
}

/// EvtIoInCallerContext: MAP is handled here, in the requesting thread's process, so that the
/// section handles land in its handle table, and SET_EVENT, so that its event handle is
/// looked up in that table; everything else goes to the queue.
pub unsafe extern "C" fn evt_io_in_caller_context(device: WDFDEVICE, request: WDFREQUEST) {
    let mut parameters = WDF_REQUEST_PARAMETERS {
        Size: crate::wdf_size::<WDF_REQUEST_PARAMETERS>() as u16,
        ..WDF_REQUEST_PARAMETERS::default()
    };
    // SAFETY: a request presented to us; `parameters` is sized as WDF_REQUEST_PARAMETERS_INIT
    // sizes it.
    unsafe {
        call_unsafe_wdf_function_binding!(WdfRequestGetParameters, request, &raw mut parameters)
    };
    let is_device_control = parameters.Type == _WDF_REQUEST_TYPE::WdfRequestTypeDeviceControl;
    let ioctl = if is_device_control {
        // SAFETY: the DeviceIoControl member is the one in use for device-control requests.
        Some(unsafe { parameters.Parameters.DeviceIoControl })
    } else {
        None
    };
    match ioctl {
        // MAP opens handles in the caller's process, SET_EVENT references one of its handles:
        // both run in its context.
        Some(ioctl)
            if ioctl.IoControlCode == Request::Map.ioctl()
                || ioctl.IoControlCode == Request::SetEvent.ioctl() =>
        {
            // SAFETY: a request presented to us.
            let mode: KPROCESSOR_MODE =
                unsafe { call_unsafe_wdf_function_binding!(WdfRequestGetRequestorMode, request) };
            if mode != _MODE::UserMode as KPROCESSOR_MODE {
                // A kernel-mode requester has no process of its own to receive handles.
                return complete_status(request, Status::InvalidDeviceRequest);
            }
            dispatch(
                device,
                request,
                ioctl.IoControlCode,
                ioctl.InputBufferLength,
                ioctl.OutputBufferLength,
            );
        }
        _ => {
            // SAFETY: hands the request to the device's default queue.
            let status = unsafe {
                call_unsafe_wdf_function_binding!(WdfDeviceEnqueueRequest, device, request)
            };
            if !wdk::nt_success(status) {
                // SAFETY: not queued, so still ours.
                unsafe { complete(request, status, 0) };
            }
        }
    }
}

/// EvtRequestCancel of a pending QUERY: take it out of the core, then complete it (this routine
/// always completes the request it is given).
pub unsafe extern "C" fn evt_request_cancel(request: WDFREQUEST) {
    // SAFETY: a cancelable request of our queue.
    let queue = unsafe { call_unsafe_wdf_function_binding!(WdfRequestGetIoQueue, request) };
    // SAFETY: as above.
    let device = unsafe { call_unsafe_wdf_function_binding!(WdfIoQueueGetDevice, queue) };
    // SAFETY: the context is initialised (requests exist only after that).
    if let Some(ring) = unsafe { crate::device::ring(device) } {
        let _ = ring.device.cancel_query(|pending| pending.0 == request);
    }
    // SAFETY: the cancel routine owns the request's completion.
    unsafe { complete(request, STATUS_CANCELLED, 0) };
}

/// EvtFileCleanup: the handle is closed or its process died. Undo its mapping, cancel its
/// QUERY.
pub unsafe extern "C" fn evt_file_cleanup(file: WDFFILEOBJECT) {
    // Relaxed: read under the device lock, which `close` takes next (see `dispatch`).
    crate::device::file_context(file)
        .cleaned_up
        .store(true, Ordering::Relaxed);
    close(file);
}

/// EvtFileClose: the last reference is gone; cleanup did the work (this is a no-op then).
pub unsafe extern "C" fn evt_file_close(file: WDFFILEOBJECT) {
    close(file);
}

fn close(file: WDFFILEOBJECT) {
    // SAFETY: a file object WDF presented to us.
    let device = unsafe { call_unsafe_wdf_function_binding!(WdfFileObjectGetDevice, file) };
    // SAFETY: the context is initialised (files are opened only after that).
    if let Some(ring) = unsafe { crate::device::ring(device) } {
        ring.device.close(HandleId(file as usize as u64));
    }
}
