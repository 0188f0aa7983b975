//! The harness: a PnP manager and an I/O manager for one driver, and the checks' results.
//!
//! [`Sim::load`] runs DriverEntry and EvtDriverDeviceAdd; [`Sim::open`] makes a file object;
//! [`Sim::ioctl`] sends a METHOD_BUFFERED device-control IRP through EvtIoInCallerContext (in
//! the caller's process) and the default queue (in an arbitrary context); [`Sim::cancel`] is
//! CancelIoEx (the cancel routine runs on the cancelling thread, at DISPATCH_LEVEL);
//! [`Sim::close`] is the last CloseHandle (EvtFileCleanup, then EvtFileClose);
//! [`Sim::unload`] ends the process, removes the device and returns the leak report.
//!
//! Each `Sim` is a kernel of its own (several may run in one process, one per test or per
//! server); its methods may be called from any thread, and the threads it starts (system
//! threads, cancel routines) run in it.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::kernel::{
    CURRENT, Cancel, DeviceInit, Kernel, Object, PROCESS, RegionKind, Request, RequestState,
    SPINNING, kernel, set_irql, spawn_in_kernel,
};
use crate::types::*;

/// A rule broken while the driver ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The rule's name: `IRQL`, `Request`, `Reference`, `Handle`, `Thread`, `MDL`, `Pool`,
    /// `Section`, `WDF`.
    pub rule: &'static str,
    /// What happened, in a sentence.
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} rule: {}", self.rule, self.message)
    }
}

/// DriverEntry's shape.
pub type DriverEntry = unsafe extern "system" fn(&mut DRIVER_OBJECT, PCUNICODE_STRING) -> NTSTATUS;

/// A loaded-driver simulation; see the module comment.
pub struct Sim {
    kernel: &'static Mutex<Kernel>,
}

/// The process id of the simulated process that [`Sim::open`] opens handles for.
pub const TEST_PROCESS: u64 = 1001;

/// A file object (a handle a user process opened on the device).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct File(u64);

/// An IRP sent to the driver. Dropping it, once completed, lets the request go (the kernel
/// remembers that it was one, to name a later use as a use after completion).
pub struct Irp {
    id: u64,
    request: Arc<Request>,
    kernel: &'static Mutex<Kernel>,
}

impl Drop for Irp {
    fn drop(&mut self) {
        let completed = self
            .request
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .completed
            .is_some();
        if completed {
            self.kernel
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retire(self.id);
        }
    }
}

/// What the I/O manager is told when a request completes: its status and output bytes.
pub type OnComplete = Box<dyn FnOnce(NTSTATUS, &[u8]) + Send>;

impl Irp {
    /// The request's number (what [`Sim::cancel`] names).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The completion (status, output bytes), if the driver completed it.
    pub fn result(&self) -> Option<(NTSTATUS, Vec<u8>)> {
        self.request
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .completed
            .clone()
    }

    /// Waits for the completion; panics if the driver does not complete it within a minute
    /// (a request that is never completed hangs its thread on Windows).
    pub fn wait(&self) -> (NTSTATUS, Vec<u8>) {
        let mut state = self.request.state.lock().unwrap_or_else(|e| e.into_inner());
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while state.completed.is_none() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(
                !left.is_zero(),
                "request {:#x} was never completed",
                self.id
            );
            // Counted under the request's lock, which the completion holds when it looks.
            state.waiters += 1;
            state = self
                .request
                .done
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            state.waiters -= 1;
        }
        state.completed.clone().expect("completed")
    }
}

/// Runs a queue's EvtIoDeviceControl at PASSIVE_LEVEL in an arbitrary context (no user
/// process: a queue callback may run in any thread).
pub(crate) fn present(
    queue: u64,
    request: WDFREQUEST,
    callback: PFN_WDF_IO_QUEUE_IO_DEVICE_CONTROL,
    output: usize,
    input: usize,
    code: u32,
) {
    let Some(callback) = callback else {
        // SAFETY: completes a request the driver handed to a queue with no such callback.
        unsafe {
            crate::wdf::WdfRequestCompleteWithInformation(request, STATUS_INVALID_DEVICE_REQUEST, 0)
        };
        return;
    };
    let process = PROCESS.with(|p| p.replace(None));
    // SAFETY: the driver's callback with a request presented to it.
    unsafe { callback(queue as WDFQUEUE, request, output, input, code) };
    PROCESS.with(|p| p.set(process));
}

/// CancelIoEx on one request: marks it cancelled and, if it is cancelable, calls its cancel
/// routine on this thread at DISPATCH_LEVEL.
fn cancel_request(id: u64) {
    let Some(Object::Request(request)) = kernel().objects.get(&id).map(|o| match o {
        Object::Request(r) => Object::Request(r.clone()),
        _ => Object::Key,
    }) else {
        return;
    };
    let routine = {
        let mut s = request.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.completed.is_some() {
            return;
        }
        s.cancel_requested = true;
        match s.cancel {
            Cancel::Cancelable(routine) => {
                s.cancel = Cancel::RoutineOwns;
                routine
            }
            _ => None,
        }
    };
    if let Some(routine) = routine {
        let before = crate::kernel::irql();
        set_irql(DISPATCH_LEVEL as u8);
        // SAFETY: the driver's cancel routine for its cancelable request.
        unsafe { routine(id as WDFREQUEST) };
        set_irql(before);
    }
}

/// Cancels `id` on another thread and waits until its cancel routine has returned or is
/// spinning for a spin lock (which this thread may hold).
pub(crate) fn cancel_now_and_wait(id: u64) {
    let spinning = Arc::new(AtomicBool::new(false));
    let flag = spinning.clone();
    let thread = spawn_in_kernel(move || {
        SPINNING.with(|s| *s.borrow_mut() = Some(flag));
        cancel_request(id);
    });
    // Relaxed: see `kernel::set_spinning`.
    while !thread.is_finished() && !spinning.load(Ordering::Relaxed) {
        std::thread::yield_now();
    }
    kernel().joins.push(thread);
}

impl Drop for Sim {
    /// The kernel itself stays (threads and IRPs may still name it), but once nothing runs in
    /// it any more its tables are emptied, so that a process making many kernels (a fuzzer)
    /// keeps only their empty shells.
    fn drop(&mut self) {
        let mut k = self.kernel.lock().unwrap_or_else(|e| e.into_inner());
        let idle = k.joins.iter().all(JoinHandle::is_finished)
            && k.threads
                .iter()
                .all(|t| *t.ended.lock().unwrap_or_else(|e| e.into_inner()));
        if idle {
            // Ids go on growing, so that a stale IRP of the old run names nothing in the next.
            let next_id = k.next_id;
            let old = std::mem::take(&mut *k);
            k.next_id = next_id;
            // The emptied kernel has no jitter and no scheduled cancel: give back the counts
            // that let request functions skip its lock (Relaxed: see `KERNELS_WITH_JITTER`).
            if old.jitter {
                crate::kernel::KERNELS_WITH_JITTER.fetch_sub(1, Ordering::Relaxed);
            }
            crate::kernel::SCHEDULED_UNMARK_CANCELS
                .fetch_sub(old.cancel_before_unmark.len(), Ordering::Relaxed);
            drop(k);
            drop(old);
            FREE_KERNELS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(self.kernel);
        }
    }
}

/// Kernels nothing runs in any more, for the next [`Sim::new`].
static FREE_KERNELS: Mutex<Vec<&'static Mutex<Kernel>>> = Mutex::new(Vec::new());

/// Every kernel made (so that a leak checker, LeakSanitizer under `cargo fuzz`, finds them
/// reachable: they are kept on purpose).
static ALL_KERNELS: Mutex<Vec<&'static Mutex<Kernel>>> = Mutex::new(Vec::new());

impl Default for Sim {
    fn default() -> Self {
        Sim::new()
    }
}

/// Makes a `Sim`'s kernel this thread's until dropped (the previous one comes back).
struct Entered(Option<&'static Mutex<Kernel>>);

impl Drop for Entered {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.0));
    }
}

impl Sim {
    /// A fresh kernel with nothing loaded; it becomes this thread's kernel too (so that a test
    /// may call the kernel's functions directly).
    pub fn new() -> Sim {
        // Never freed: a kernel outlives whatever a driver left running in it (a test that
        // fails may leave threads behind); one that nothing runs in is used again.
        let free = FREE_KERNELS.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let kernel: &'static Mutex<Kernel> = free.unwrap_or_else(|| {
            let made = Box::leak(Box::default());
            ALL_KERNELS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(made);
            made
        });
        CURRENT.with(|c| c.set(Some(kernel)));
        Sim { kernel }
    }

    fn enter(&self) -> Entered {
        Entered(CURRENT.with(|c| c.replace(Some(self.kernel))))
    }

    /// The device's "RingCapacity" registry value (`None`: absent).
    pub fn set_ring_capacity(&self, capacity: Option<u32>) {
        let _in = self.enter();
        kernel().registry_capacity = capacity;
    }

    /// Fault injection: the next `count` ObReferenceObjectByHandle calls on thread handles fail.
    pub fn fail_thread_references(&self, count: u32) {
        let _in = self.enter();
        kernel().fail_thread_references = count;
    }

    /// DriverEntry, then EvtDriverDeviceAdd of one device (the PnP manager's part).
    pub fn load(&self, entry: DriverEntry) -> Result<(), NTSTATUS> {
        let _in = self.enter();
        set_irql(0);
        let mut driver = DRIVER_OBJECT::default();
        let registry = UNICODE_STRING::default();
        // SAFETY: the driver's entry point with a driver object and a registry path.
        let status = unsafe { entry(&mut driver, &registry) };
        if status < 0 {
            return Err(status);
        }
        let (driver, add) = {
            let k = kernel();
            match k.objects.get(&k.driver) {
                Some(Object::Driver { add, .. }) => (k.driver, *add),
                _ => return Err(STATUS_INVALID_DEVICE_REQUEST),
            }
        };
        let init = kernel().insert(Object::DeviceInit(DeviceInit::default()));
        let Some(add) = add else {
            return Err(STATUS_INVALID_DEVICE_REQUEST);
        };
        // SAFETY: the driver's EvtDriverDeviceAdd with a fresh WDFDEVICE_INIT.
        let status = unsafe { add(driver as WDFDRIVER, init as PWDFDEVICE_INIT) };
        kernel().objects.remove(&init);
        if status < 0 {
            // WDF deletes a device whose EvtDriverDeviceAdd failed.
            let devices = std::mem::take(&mut kernel().devices);
            for device in devices {
                remove_device(device);
            }
            return Err(status);
        }
        Ok(())
    }

    fn device(&self) -> u64 {
        *kernel()
            .devices
            .first()
            .expect("a device: load the driver first")
    }

    /// Opens the device for the test process ([`TEST_PROCESS`]): a new file object (no
    /// EvtDeviceFileCreate in ringmap).
    pub fn open(&self) -> File {
        self.open_in(TEST_PROCESS)
    }

    /// Opens the device for the process `process` (its id): its requests run in its context,
    /// and the user handles the driver opens for them land in its handle table.
    pub fn open_in(&self, process: u64) -> File {
        let _in = self.enter();
        let device = self.device();
        let mut k = kernel();
        let (context_type, size) = match k.objects.get(&device) {
            Some(Object::Device(d)) => d.init.file_context,
            _ => (0, 0),
        };
        let layout =
            std::alloc::Layout::from_size_align(size.max(1), 16).expect("a context layout");
        // SAFETY: a non-zero size; WDF zeroes context memory.
        let context = unsafe { std::alloc::alloc_zeroed(layout) };
        File(k.insert(Object::File {
            device,
            process,
            cleaned_up: false,
            context,
            context_layout: layout,
            context_type,
        }))
    }

    /// DeviceIoControl(METHOD_BUFFERED) from the simulated process on `file`: the request goes
    /// to EvtIoInCallerContext on this thread, in the process's context.
    pub fn ioctl(&self, file: File, code: u32, input: &[u8], output_len: usize) -> Irp {
        self.send(file, code, input, output_len, false, None)
    }

    /// As [`Sim::ioctl`], and `on_complete` is called with the status and output when the
    /// driver completes the request (on the thread that completes it: maybe this one, before
    /// this returns; maybe a producer's or a cancel routine's, later).
    pub fn ioctl_then(
        &self,
        file: File,
        code: u32,
        input: &[u8],
        output_len: usize,
        on_complete: OnComplete,
    ) -> Irp {
        self.send(file, code, input, output_len, false, Some(on_complete))
    }

    /// As [`Sim::ioctl`], but the request is cancelled before the driver sees it (CancelIoEx
    /// that won the race against dispatch): WdfRequestMarkCancelableEx must return
    /// STATUS_CANCELLED, and the driver must complete the request itself.
    pub fn ioctl_cancelled(&self, file: File, code: u32, input: &[u8], output_len: usize) -> Irp {
        self.send(file, code, input, output_len, true, None)
    }

    fn send(
        &self,
        file: File,
        code: u32,
        input: &[u8],
        output_len: usize,
        cancelled: bool,
        on_complete: Option<OnComplete>,
    ) -> Irp {
        let _in = self.enter();
        let device = self.device();
        let mut buffer = vec![0u8; input.len().max(output_len)].into_boxed_slice();
        buffer[..input.len()].copy_from_slice(input);
        let request = Arc::new(Request {
            state: Mutex::new(RequestState {
                file: file.0,
                code,
                input_len: input.len(),
                output_len,
                buffer,
                queue: 0,
                cancel: Cancel::NotCancelable,
                cancel_requested: cancelled,
                refused_cancelable: false,
                completed: None,
                on_complete,
                waiters: 0,
            }),
            done: Condvar::new(),
        });
        let (id, callback, process) = {
            let mut k = kernel();
            let id = k.insert(Object::Request(request.clone()));
            let callback = match k.objects.get(&device) {
                Some(Object::Device(device)) => device.init.in_caller_context,
                _ => None,
            };
            let process = match k.objects.get(&file.0) {
                Some(Object::File { process, .. }) => *process,
                _ => TEST_PROCESS,
            };
            (id, callback, process)
        };
        set_irql(0);
        PROCESS.with(|p| p.set(Some(process)));
        match callback {
            // SAFETY: the driver's callback with a request presented to it.
            Some(callback) => unsafe { callback(device as WDFDEVICE, id as WDFREQUEST) },
            // SAFETY: a request of ours.
            None => unsafe {
                crate::wdf::WdfDeviceEnqueueRequest(device as WDFDEVICE, id as WDFREQUEST);
            },
        }
        PROCESS.with(|p| p.set(None));
        Irp {
            id,
            request,
            kernel: self.kernel,
        }
    }

    /// CancelIoEx: the cancel routine runs on this thread, before this returns, as the I/O
    /// manager calls it from IoCancelIrp in the canceller's context. (The cancel routine on
    /// another thread, racing the driver, is [`Sim::cancel_later`] and
    /// [`Sim::cancel_before_unmark`].)
    pub fn cancel(&self, irp: &Irp) {
        self.cancel_id(irp.id);
    }

    /// CancelIoEx of the request numbered `id` ([`Irp::id`]); nothing if it is completed.
    /// On this thread: a server that cancels a client's request on its loop starts no thread
    /// for it.
    pub fn cancel_id(&self, id: u64) {
        let _in = self.enter();
        cancel_request(id);
    }

    /// Random delays (0 to 63 µs) before every request function, as Driver Verifier
    /// widens race windows.
    pub fn jitter(&self, on: bool) {
        let _in = self.enter();
        let mut k = kernel();
        if k.jitter != on {
            k.jitter = on;
            // Relaxed: read by `jitter` after whatever makes the request that it is for,
            // which this call happens before (module `kernel`, `KERNELS_WITH_JITTER`).
            if on {
                crate::kernel::KERNELS_WITH_JITTER.fetch_add(1, Ordering::Relaxed);
            } else {
                crate::kernel::KERNELS_WITH_JITTER.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// CancelIoEx from another thread after `delay` (a test varies it to move the cancel
    /// routine across the driver's windows); join the handle before checking.
    pub fn cancel_later(&self, irp: &Irp, delay: Duration) -> std::thread::JoinHandle<()> {
        let _in = self.enter();
        let id = irp.id;
        spawn_in_kernel(move || {
            std::thread::sleep(delay);
            cancel_request(id);
        })
    }

    /// A schedule: `irp` is cancelled on another thread right before the driver's next
    /// WdfRequestUnmarkCancelable of it (the window the cancel routine can hit).
    pub fn cancel_before_unmark(&self, irp: &Irp) {
        self.cancel_before_unmark_of(irp.id);
    }

    /// [`Sim::cancel_before_unmark`] of the request with id `id`.
    fn cancel_before_unmark_of(&self, id: u64) {
        let _in = self.enter();
        if kernel().cancel_before_unmark.insert(id) {
            // Relaxed: the Unmark it is for comes after this call (module `kernel`,
            // `SCHEDULED_UNMARK_CANCELS`).
            crate::kernel::SCHEDULED_UNMARK_CANCELS.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The last handle to `file` is closed: EvtFileCleanup, then EvtFileClose.
    pub fn cleanup(&self, file: File) {
        let _in = self.enter();
        let callback = file_callbacks(file.0).0;
        if let Some(Object::File { cleaned_up, .. }) = kernel().objects.get_mut(&file.0) {
            *cleaned_up = true;
        }
        set_irql(0);
        if let Some(callback) = callback {
            // SAFETY: the driver's callback with its file object.
            unsafe { callback(file.0 as WDFFILEOBJECT) };
        }
    }

    /// EvtFileClose, once every request on the file has completed.
    pub fn close_file(&self, file: File) {
        let _in = self.enter();
        let callback = file_callbacks(file.0).1;
        // As the I/O manager does, EvtFileClose waits for the requests still in flight: one
        // that another thread has taken to complete (a producer's wake-up, between its
        // unmark and its completion) completes within microseconds. One still pending after
        // the grace period is one that nobody completes.
        let grace = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            let mut k = kernel();
            let pending = k.objects.values().any(|o| match o {
                Object::Request(r) => {
                    let s = r.state.lock().unwrap_or_else(|e| e.into_inner());
                    s.file == file.0 && s.completed.is_none()
                }
                _ => false,
            });
            if !pending {
                break;
            }
            if std::time::Instant::now() >= grace {
                k.violate("Request", "a request is still pending on a file object after its cleanup: on Windows EvtFileClose never comes and the handle's process cannot exit".into());
                break;
            }
            drop(k);
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        set_irql(0);
        if let Some(callback) = callback {
            // SAFETY: the driver's callback with its file object.
            unsafe { callback(file.0 as WDFFILEOBJECT) };
        }
        let removed = kernel().objects.remove(&file.0);
        if let Some(Object::File {
            context,
            context_layout,
            ..
        }) = removed
        {
            // SAFETY: allocated in `open` with this layout; the file object is gone.
            unsafe { std::alloc::dealloc(context, context_layout) };
        }
    }

    /// CloseHandle of the device handle: cleanup then close.
    pub fn close(&self, file: File) {
        self.cleanup(file);
        self.close_file(file);
    }

    /// The simulated process closes one of its handles (a section handle MAP gave it).
    pub fn close_user_handle(&self, handle: u64) -> bool {
        let _in = self.enter();
        let mut k = kernel();
        match k.user_handles.remove(&(handle as i32)) {
            Some(h) => {
                k.dereference(h.object, "CloseHandle");
                true
            }
            None => false,
        }
    }

    /// Whether `handle` is a user handle of the process, and whether it allows writing.
    pub fn user_handle_writable(&self, handle: u64) -> Option<bool> {
        let _in = self.enter();
        let k = kernel();
        let h = k.user_handles.get(&(handle as i32))?;
        let flags = rustix::fs::fcntl_getfl(&h.fd).ok()?;
        Some(flags.contains(rustix::fs::OFlags::RDWR) || flags.contains(rustix::fs::OFlags::WRONLY))
    }

    /// The user handle `handle` of `process` leaves the kernel's handle table and arrives in
    /// that process as a descriptor with exactly the handle's access (the socket front end
    /// sends it with `SCM_RIGHTS`). `None` if `process` has no such handle.
    pub fn take_user_handle(&self, process: u64, handle: u64) -> Option<OwnedFd> {
        let _in = self.enter();
        let mut k = kernel();
        let number = i32::try_from(handle).ok()?;
        if k.user_handles.get(&number)?.process != process {
            return None;
        }
        let h = k.user_handles.remove(&number)?;
        // The descriptor now keeps the memory alive, as the handle in the process would.
        k.dereference(h.object, "the handle's transfer to its process");
        Some(h.fd)
    }

    /// An event of `process` arrives in the kernel: `fd` (an eventfd it passed in) becomes
    /// an event object and a user handle of that process, whose number is returned (the
    /// socket front end puts it in the request, as a Windows client puts its event's
    /// handle). The handle is the process's: [`Sim::close_user_handle`] closes it.
    pub fn insert_user_event(&self, process: u64, fd: OwnedFd) -> u64 {
        let _in = self.enter();
        let mut k = kernel();
        let object = k.insert(Object::Event {
            fd: Arc::new(fd),
            refs: 1,
        });
        // The handle is a descriptor number of this process, as section handles are: a dup
        // of the event's, so that it is unique while it is open.
        let Some(Object::Event { fd, .. }) = k.objects.get(&object) else {
            unreachable!("just inserted")
        };
        let Ok(handle_fd) = rustix::io::fcntl_dupfd_cloexec(&**fd, 3) else {
            k.objects.remove(&object);
            return 0;
        };
        let number = std::os::fd::AsRawFd::as_raw_fd(&handle_fd);
        k.user_handles.insert(
            number,
            crate::kernel::UserHandle {
                fd: handle_fd,
                object,
                process,
            },
        );
        number as u64
    }

    /// Whether a system thread (`PsCreateSystemThread`) of this kernel is still running.
    pub fn system_threads_running(&self) -> bool {
        // A count, not a walk of every thread the kernel made: the loop asks at every turn.
        self.kernel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .running_threads
            > 0
    }

    /// How many system threads the kernel still keeps a record of (running, or ended and
    /// not yet waited for, or not yet let go).
    pub fn system_thread_records(&self) -> usize {
        self.kernel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .threads
            .len()
    }

    /// The violations so far.
    pub fn violations(&self) -> Vec<Violation> {
        let _in = self.enter();
        kernel().violations.clone()
    }

    /// The violations so far, by rule name.
    pub fn violated(&self, rule: &str) -> bool {
        let _in = self.enter();
        kernel().violations.iter().any(|v| v.rule == rule)
    }

    /// Ends the process (its handles close), closes its open files, removes the device
    /// (EvtCleanupCallback, then the context is freed), and returns the leak report: what
    /// the driver left behind. Violations stay in [`Sim::violations`].
    pub fn unload(&self) -> Vec<String> {
        let _in = self.enter();
        let handles: Vec<i32> = kernel().user_handles.keys().copied().collect();
        for handle in handles {
            self.close_user_handle(handle as u64);
        }
        let files: Vec<u64> = kernel()
            .objects
            .iter()
            .filter(|(_, o)| matches!(o, Object::File { .. }))
            .map(|(id, _)| *id)
            .collect();
        for file in files {
            let cleaned = matches!(
                kernel().objects.get(&file),
                Some(Object::File {
                    cleaned_up: true,
                    ..
                })
            );
            if !cleaned {
                self.cleanup(File(file));
            }
            self.close_file(File(file));
        }
        let devices = std::mem::take(&mut kernel().devices);
        for device in devices {
            remove_device(device);
        }
        let unload = {
            let k = kernel();
            match k.objects.get(&k.driver) {
                Some(Object::Driver { unload, .. }) => (*unload).map(|u| (u, k.driver)),
                _ => None,
            }
        };
        if let Some((unload, driver)) = unload {
            // SAFETY: the driver's EvtDriverUnload.
            unsafe { unload(driver as WDFDRIVER) };
        }
        // Threads whose work has ended (a system thread that said so, a cancel routine) may
        // still be returning: give them a moment, join them; one that runs on is in the
        // leak report.
        let joins = std::mem::take(&mut kernel().joins);
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while joins.iter().any(|j| !j.is_finished()) && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        let (finished, running): (Vec<_>, Vec<_>) =
            joins.into_iter().partition(|j| j.is_finished());
        for join in finished {
            let _ = join.join();
        }
        kernel().joins = running;
        leak_report(&kernel())
    }

    /// Asserts that no rule was broken and nothing leaked (unloading the driver).
    pub fn assert_clean_unload(&self) {
        let leaks = self.unload();
        let violations = self.violations();
        assert!(
            violations.is_empty() && leaks.is_empty(),
            "the driver broke rules: {}; leak report: {}",
            list(violations.iter().map(ToString::to_string)),
            list(leaks.into_iter())
        );
    }
}

fn list(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    if items.is_empty() {
        "none".into()
    } else {
        items.join("; ")
    }
}

fn file_callbacks(file: u64) -> (PFN_WDF_FILE_CLEANUP, PFN_WDF_FILE_CLOSE) {
    let k = kernel();
    let device = match k.objects.get(&file) {
        Some(Object::File { device, .. }) => *device,
        _ => return (None, None),
    };
    match k.objects.get(&device) {
        Some(Object::Device(d)) => (d.init.file_cleanup, d.init.file_close),
        _ => (None, None),
    }
}

/// Device removal: EvtCleanupCallback at PASSIVE_LEVEL, then the context is freed, which
/// no system thread may still use.
fn remove_device(device: u64) {
    let cleanup = match kernel().objects.get(&device) {
        Some(Object::Device(d)) => d.cleanup,
        _ => return,
    };
    set_irql(0);
    if let Some(cleanup) = cleanup {
        // SAFETY: the driver's cleanup callback for its device.
        unsafe { cleanup(device as WDFOBJECT) };
    }
    let mut k = kernel();
    let Some(Object::Device(d)) = k.objects.remove(&device) else {
        return;
    };
    let range = d.context as usize..d.context as usize + d.context_layout.size();
    let threads: Vec<_> = k
        .threads
        .iter()
        .filter(|t| range.contains(&t.context))
        .cloned()
        .collect();
    for thread in threads {
        let ended = *thread.ended.lock().unwrap_or_else(|e| e.into_inner());
        // Relaxed: see KeWaitForSingleObject.
        let waited = thread.waited.load(Ordering::Relaxed);
        if !ended {
            k.violate("Thread", "the device context was freed while a system thread that uses it still runs (its start context points into it)".into());
        } else if !waited {
            k.violate("Thread", "the device context was freed, and a system thread that used it was never waited for (KeWaitForSingleObject): it may still have been running".into());
        }
    }
    // SAFETY: allocated by WdfDeviceCreate with this layout; the device is gone.
    unsafe { std::alloc::dealloc(d.context, d.context_layout) };
}

fn leak_report(k: &Kernel) -> Vec<String> {
    let mut leaks = Vec::new();
    for object in k.objects.values() {
        match object {
            Object::Section { refs, bytes, .. } => leaks.push(format!(
                "a section of {bytes} bytes still has {refs} references or handles"
            )),
            Object::Event { refs, .. } => leaks.push(format!(
                "an event object still has {refs} references or handles"
            )),
            Object::Thread { record, refs } => {
                let ended = *record.ended.lock().unwrap_or_else(|e| e.into_inner());
                leaks.push(format!(
                    "a thread object still has {refs} references (thread ended: {ended})"
                ));
            }
            Object::Request(r) => {
                let s = r.state.lock().unwrap_or_else(|e| e.into_inner());
                if s.completed.is_none() {
                    if s.refused_cancelable {
                        leaks.push("a request whose WdfRequestMarkCancelableEx returned STATUS_CANCELLED was never completed".into());
                    } else {
                        leaks.push("a request was never completed".into());
                    }
                }
            }
            Object::SpinLock(_) => leaks.push("a spin lock was never deleted".into()),
            Object::Key => leaks.push("a registry key was never closed".into()),
            Object::DeviceInit(_) => leaks.push("a WDFDEVICE_INIT was never used".into()),
            _ => {}
        }
    }
    for handle in k.kernel_handles.keys() {
        leaks.push(format!("kernel handle {handle:#x} was never closed"));
    }
    for (base, region) in &k.regions {
        leaks.push(match region.kind {
            RegionKind::Pool { tag } => format!(
                "pool allocation {base:#x} ({} bytes, tag {:?}) was never freed",
                region.len,
                String::from_utf8_lossy(&tag.to_le_bytes())
            ),
            RegionKind::View { .. } => format!("system-space view {base:#x} was never unmapped"),
            RegionKind::Locked { .. } => format!("MDL mapping {base:#x} was never unmapped"),
        });
    }
    for info in k.mdls.values() {
        leaks.push(format!("an MDL of {} pages was never freed", info.pages));
    }
    for thread in &k.threads {
        if !*thread.ended.lock().unwrap_or_else(|e| e.into_inner()) {
            leaks.push("a system thread is still running".into());
        }
    }
    leaks
}

#[cfg(test)]
mod tests {
    use super::Sim;
    use crate::types::*;

    #[test]
    fn a_passive_only_call_at_dispatch_breaks_the_irql_rule() {
        let sim = Sim::new();
        let mut lock: WDFSPINLOCK = core::ptr::null_mut();
        // SAFETY: the simulated kernel's functions with valid out-parameters; the lock is
        // released and deleted below.
        unsafe {
            crate::wdf::WdfSpinLockCreate(WDF_NO_OBJECT_ATTRIBUTES, &raw mut lock);
            crate::wdf::WdfSpinLockAcquire(lock);
            assert_eq!(u32::from(crate::ntddk::KeGetCurrentIrql()), DISPATCH_LEVEL);
            let _ = crate::ntddk::ZwClose(core::ptr::null_mut());
            crate::wdf::WdfSpinLockRelease(lock);
            assert_eq!(crate::ntddk::KeGetCurrentIrql(), 0);
            crate::wdf::WdfObjectDelete(lock.cast());
        }
        assert!(sim.violated("IRQL"), "{:?}", sim.violations());
        assert!(sim.unload().is_empty());
    }

    /// A system thread runs with the long slice that lets the threads it wakes run first
    /// (`kernel::SYSTEM_THREAD_SLICE_NS`); other threads keep theirs.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_system_thread_runs_with_the_long_slice() {
        use crate::kernel::{SYSTEM_THREAD_SLICE_NS, current_slice_ns};
        use std::sync::atomic::{AtomicU64, Ordering};
        /// The slice the system thread found it had (u64::MAX: it could not tell).
        static SEEN: AtomicU64 = AtomicU64::new(0);
        unsafe extern "C" fn start(_context: PVOID) {
            // Relaxed: read after the thread is waited for, which orders it.
            SEEN.store(current_slice_ns().unwrap_or(u64::MAX), Ordering::Relaxed);
        }
        // Custom slices for ordinary threads came with Linux 6.12; before, none is taken.
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut numbers = release
            .split(|c: char| !c.is_ascii_digit())
            .map(|n| n.parse::<u32>());
        let version = (
            numbers.next().and_then(Result::ok).unwrap_or(0),
            numbers.next().and_then(Result::ok).unwrap_or(0),
        );
        let sim = Sim::new();
        let mut handle: HANDLE = core::ptr::null_mut();
        let mut attributes = OBJECT_ATTRIBUTES {
            Attributes: OBJ_KERNEL_HANDLE,
            ..OBJECT_ATTRIBUTES::default()
        };
        // SAFETY: the simulated kernel's functions with valid arguments; the thread is
        // waited for and its handle closed.
        unsafe {
            use crate::ntddk::*;
            assert_eq!(
                PsCreateSystemThread(
                    &raw mut handle,
                    0,
                    &raw mut attributes,
                    core::ptr::null_mut(),
                    core::ptr::null_mut(),
                    Some(start),
                    core::ptr::null_mut(),
                ),
                0
            );
            assert_eq!(ZwWaitForSingleObject(handle, 0, core::ptr::null_mut()), 0);
            assert_eq!(ZwClose(handle), 0);
        }
        assert!(sim.violations().is_empty(), "{:?}", sim.violations());
        assert!(sim.unload().is_empty());
        let seen = SEEN.load(Ordering::Relaxed);
        let mine = current_slice_ns();
        if version >= (6, 12) {
            assert_eq!(seen, SYSTEM_THREAD_SLICE_NS, "the system thread's slice");
            assert_ne!(
                mine,
                Some(SYSTEM_THREAD_SLICE_NS),
                "the test thread keeps its own"
            );
        } else {
            assert_ne!(seen, 0, "the system thread ran");
        }
    }

    /// A kernel emptied when its `Sim` is dropped takes its test knobs with it: the counts
    /// that let request functions skip the kernel's lock go back down.
    #[test]
    fn a_dropped_kernel_gives_back_its_jitter_and_scheduled_cancels() {
        use crate::kernel::{KERNELS_WITH_JITTER, SCHEDULED_UNMARK_CANCELS};
        use std::sync::atomic::Ordering;
        // Relaxed: this thread's own stores and loads (no other test here sets either).
        let jitter_before = KERNELS_WITH_JITTER.load(Ordering::Relaxed);
        let cancels_before = SCHEDULED_UNMARK_CANCELS.load(Ordering::Relaxed);
        let sim = Sim::new();
        sim.jitter(true);
        sim.cancel_before_unmark_of(1 << 40);
        assert_eq!(
            KERNELS_WITH_JITTER.load(Ordering::Relaxed),
            jitter_before + 1
        );
        assert_eq!(
            SCHEDULED_UNMARK_CANCELS.load(Ordering::Relaxed),
            cancels_before + 1
        );
        drop(sim);
        assert_eq!(KERNELS_WITH_JITTER.load(Ordering::Relaxed), jitter_before);
        assert_eq!(
            SCHEDULED_UNMARK_CANCELS.load(Ordering::Relaxed),
            cancels_before
        );
    }

    #[test]
    fn pool_and_mdls_left_behind_are_in_the_leak_report() {
        let sim = Sim::new();
        // SAFETY: the simulated kernel's functions; nothing is freed on purpose.
        unsafe {
            let page = crate::ntddk::ExAllocatePool2(POOL_FLAG_NON_PAGED, 4096, 7);
            let mdl = crate::ntddk::IoAllocateMdl(page, 4096, 0, 0, core::ptr::null_mut());
            crate::ntddk::MmBuildMdlForNonPagedPool(mdl);
        }
        let leaks = sim.unload();
        assert_eq!(leaks.len(), 2, "{leaks:?}");
        assert!(sim.violations().is_empty());
    }

    #[test]
    fn a_user_handle_closed_with_zwclose_breaks_the_handle_rule() {
        let sim = Sim::new();
        let mut section: HANDLE = core::ptr::null_mut();
        let mut object: PVOID = core::ptr::null_mut();
        let mut user: HANDLE = core::ptr::null_mut();
        let mut attributes = OBJECT_ATTRIBUTES {
            Attributes: OBJ_KERNEL_HANDLE,
            ..OBJECT_ATTRIBUTES::default()
        };
        let mut size = LARGE_INTEGER { QuadPart: 4096 };
        super::PROCESS.with(|p| p.set(Some(1)));
        // SAFETY: the simulated kernel's functions with valid arguments.
        unsafe {
            use crate::ntddk::*;
            assert_eq!(
                ZwCreateSection(
                    &raw mut section,
                    0,
                    &raw mut attributes,
                    &raw mut size,
                    PAGE_READWRITE,
                    SEC_COMMIT,
                    core::ptr::null_mut()
                ),
                0
            );
            assert_eq!(
                ObReferenceObjectByHandle(
                    section,
                    0,
                    core::ptr::null_mut(),
                    0,
                    &raw mut object,
                    core::ptr::null_mut()
                ),
                0
            );
            assert_eq!(ZwClose(section), 0);
            assert_eq!(
                ObOpenObjectByPointer(
                    object,
                    0,
                    core::ptr::null_mut(),
                    SECTION_MAP_READ,
                    core::ptr::null_mut(),
                    0,
                    &raw mut user
                ),
                0
            );
            assert_eq!(sim.user_handle_writable(user as u64), Some(false));
            let _ = ZwClose(user);
            assert_eq!(ObCloseHandle(user, _MODE::UserMode as KPROCESSOR_MODE), 0);
            ObfDereferenceObject(object);
        }
        super::PROCESS.with(|p| p.set(None));
        assert!(sim.violated("Handle"), "{:?}", sim.violations());
        assert!(sim.unload().is_empty());
    }
}
