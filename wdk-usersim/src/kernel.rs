//! The simulated kernel's state: objects, handles, memory, requests, violations.

use std::alloc::Layout;
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::sim::Violation;
use crate::types::*;

pub(crate) const PAGE: usize = 4096;

thread_local! {
    /// This thread's IRQL.
    pub(crate) static IRQL: Cell<u8> = const { Cell::new(0) };
    /// The user process whose context this thread runs in (`None`: a system thread, or a
    /// queue's callback in an arbitrary context).
    pub(crate) static PROCESS: Cell<Option<u64>> = const { Cell::new(None) };
    /// Set while this thread spins for a spin lock (what a schedule waits for).
    pub(crate) static SPINNING: std::cell::RefCell<Option<Arc<AtomicBool>>> =
        const { std::cell::RefCell::new(None) };
    /// A thread made by PsCreateSystemThread.
    pub(crate) static SYSTEM_THREAD: Cell<bool> = const { Cell::new(false) };
    /// This thread's number for spin-lock ownership ([`thread_number`]; 0: not given yet).
    static THREAD_NUMBER: Cell<u64> = const { Cell::new(0) };
    /// The simulated kernel this thread runs in (each [`crate::sim::Sim`] has its own; the
    /// threads the kernel starts inherit it).
    pub(crate) static CURRENT: Cell<Option<&'static Mutex<Kernel>>> = const { Cell::new(None) };
}

pub(crate) fn irql() -> u8 {
    IRQL.with(Cell::get)
}

pub(crate) fn set_irql(level: u8) {
    IRQL.with(|cell| cell.set(level));
}

/// Records an `IRQL` violation if this thread's IRQL is above `max` for `function`.
pub(crate) fn check_irql(function: &str, max: u32) {
    let current = irql();
    if u32::from(current) > max {
        violate(
            "IRQL",
            format!(
                "{function} called at IRQL {current}; its maximum is {max} ({})",
                level_name(max)
            ),
        );
    }
}

fn level_name(level: u32) -> &'static str {
    match level {
        0 => "PASSIVE_LEVEL",
        1 => "APC_LEVEL",
        2 => "DISPATCH_LEVEL",
        _ => "above DISPATCH_LEVEL",
    }
}

/// A WDF spin lock: raises to DISPATCH_LEVEL, must be released at it, by its owner.
pub(crate) struct SpinLock {
    pub(crate) locked: AtomicBool,
    pub(crate) old_irql: AtomicU8,
    /// The holder's [`thread_number`], 0 while free: an atomic, not a mutex, since every
    /// acquire and release reads it (the device's lock is on the wake-up's path).
    pub(crate) owner: AtomicU64,
}

/// The time slice of a system thread (PsCreateSystemThread), longer than a default thread's
/// (`sched_getattr` reads 1.4 ms for one on our 2-core machines): Linux's EEVDF scheduler
/// lets a woken thread with a shorter slice preempt the running one (its PREEMPT_SHORT
/// rule), so a consumer that a system thread wakes (KeSetEvent) runs at once, ahead of the
/// thread that woke it. (The driver sets events with no priority increment, so on Windows
/// the waiter does not preempt the setter either; the dispatcher runs it on an idle
/// processor when there is one, which Linux here does not: it wakes it onto the setter's.)
/// With equal slices a thread that has just woken from its timer mostly keeps the
/// processor until it sleeps again (measured during `ringmap bench`: the consumer ran first
/// on 222 of 500 of the generator's wake-ups; on 485 of 486 with a 10 ms slice, and on 499 of
/// 499 with this one). Not longer: a system thread that produces without pause (GENERATE at
/// no rate) keeps a processor for up to its slice when other threads want it.
pub(crate) const SYSTEM_THREAD_SLICE_NS: u64 = 3_000_000;

/// `struct sched_attr` as far as `sched_period` (SCHED_ATTR_SIZE_VER0, 48 bytes).
#[cfg(target_os = "linux")]
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

/// Gives the calling thread [`SYSTEM_THREAD_SLICE_NS`] (`sched_setattr`; Linux takes a
/// slice for an ordinary thread since 6.12). A kernel that refuses or ignores it leaves the
/// default slice, which changes only who runs first, so the outcome is not checked here.
pub(crate) fn schedule_as_system_thread() {
    #[cfg(target_os = "linux")]
    {
        let attr = SchedAttr {
            size: size_of::<SchedAttr>() as u32,
            // SCHED_OTHER at nice 0, what the thread has: only the slice changes.
            policy: libc::SCHED_OTHER as u32,
            runtime: SYSTEM_THREAD_SLICE_NS,
            ..SchedAttr::default()
        };
        // SAFETY: `attr` is a `sched_attr` of the size it gives, alive for the call; pid 0
        // is the calling thread; no flags.
        let _ = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &raw const attr, 0) };
    }
}

/// The calling thread's time slice as the kernel reports it (`sched_getattr`): what
/// [`schedule_as_system_thread`] set, or the default (0 on kernels without custom slices).
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn current_slice_ns() -> Option<u64> {
    let mut attr = SchedAttr::default();
    // SAFETY: room for the `size` bytes given, alive for the call; pid 0 is the calling
    // thread; no flags.
    let got = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            0,
            &raw mut attr,
            size_of::<SchedAttr>() as u32,
            0,
        )
    };
    (got == 0).then_some(attr.runtime)
}

/// A number for the calling thread, unique in this process and never 0.
pub(crate) fn thread_number() -> u64 {
    /// The last number given.
    static LAST: AtomicU64 = AtomicU64::new(0);
    THREAD_NUMBER.with(|number| {
        if number.get() == 0 {
            // Relaxed: only uniqueness matters, which the read-modify-write gives.
            number.set(LAST.fetch_add(1, Ordering::Relaxed) + 1);
        }
        number.get()
    })
}

/// Who may complete a request.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Cancel {
    /// The driver, once it has it.
    NotCancelable,
    /// The driver made it cancelable with this routine.
    Cancelable(PFN_WDF_REQUEST_CANCEL),
    /// Cancelled: the cancel routine was called (or is running) and owns the completion.
    RoutineOwns,
}

pub(crate) struct RequestState {
    pub(crate) file: u64,
    pub(crate) code: u32,
    pub(crate) input_len: usize,
    pub(crate) output_len: usize,
    /// The system buffer (METHOD_BUFFERED): max(input, output) bytes, input copied in.
    pub(crate) buffer: Box<[u8]>,
    pub(crate) queue: u64,
    pub(crate) cancel: Cancel,
    pub(crate) cancel_requested: bool,
    /// MarkCancelableEx returned STATUS_CANCELLED: the driver must complete it.
    pub(crate) refused_cancelable: bool,
    pub(crate) completed: Option<(NTSTATUS, Vec<u8>)>,
    /// The I/O manager's completion routine: told the status and output once, when the driver
    /// completes the request (on the completing thread, after the request's lock is dropped).
    pub(crate) on_complete: Option<Completion>,
    /// Threads blocked in [`crate::sim::Irp::wait`] for the completion: the completing
    /// thread wakes them only if there are any (a condition variable's notify is a system
    /// call even with no waiter, and the producer that completes a QUERY runs it before it
    /// sleeps, on the wake-up's path).
    pub(crate) waiters: u32,
}

/// What the I/O manager does when a request completes (see [`RequestState::on_complete`]).
pub(crate) type Completion = Box<dyn FnOnce(NTSTATUS, &[u8]) + Send>;

pub(crate) struct Request {
    pub(crate) state: Mutex<RequestState>,
    pub(crate) done: Condvar,
}

/// A system thread's end, as its object's waiters see it.
pub(crate) struct ThreadRecord {
    pub(crate) context: usize,
    pub(crate) ended: Mutex<bool>,
    pub(crate) ended_cv: Condvar,
    pub(crate) waited: AtomicBool,
}

pub(crate) enum Object {
    Driver {
        add: PFN_WDF_DRIVER_DEVICE_ADD,
        unload: PFN_WDF_DRIVER_UNLOAD,
    },
    DeviceInit(DeviceInit),
    Device(Device),
    Queue {
        device: u64,
        device_control: PFN_WDF_IO_QUEUE_IO_DEVICE_CONTROL,
    },
    SpinLock(Arc<SpinLock>),
    Key,
    Request(Arc<Request>),
    File {
        device: u64,
        /// The process that opened it (its requests run in that process's context).
        process: u64,
        cleaned_up: bool,
        /// The file object's context (WDF_FILEOBJECT_CONFIG's attributes), zeroed.
        context: *mut u8,
        context_layout: Layout,
        context_type: usize,
    },
    /// A kernel object: `refs` counts references and handles.
    Section {
        backing: u32,
        bytes: usize,
        refs: usize,
    },
    Thread {
        record: Arc<ThreadRecord>,
        refs: usize,
    },
    /// An event a user process made (an eventfd it passed in): setting it writes the
    /// eventfd.
    Event {
        fd: Arc<OwnedFd>,
        refs: usize,
    },
}

#[derive(Default)]
pub(crate) struct DeviceInit {
    pub(crate) named: bool,
    pub(crate) file_cleanup: PFN_WDF_FILE_CLEANUP,
    pub(crate) file_close: PFN_WDF_FILE_CLOSE,
    pub(crate) in_caller_context: PFN_WDF_IO_IN_CALLER_CONTEXT,
    /// The file objects' context type and size.
    pub(crate) file_context: (usize, usize),
}

pub(crate) struct Device {
    pub(crate) init: DeviceInit,
    pub(crate) context: *mut u8,
    pub(crate) context_layout: Layout,
    pub(crate) context_type: usize,
    pub(crate) cleanup: PFN_WDF_OBJECT_CONTEXT_CLEANUP,
    pub(crate) queue: u64,
}

/// What a range of system addresses is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum RegionKind {
    Pool {
        tag: u32,
    },
    /// MmMapViewInSystemSpace of a section object.
    View {
        section: u64,
    },
    /// MmMapLockedPagesSpecifyCache of an MDL.
    Locked {
        mdl: usize,
    },
}

pub(crate) struct Region {
    pub(crate) len: usize,
    /// (backing memfd, page index) of each page.
    pub(crate) pages: Vec<(u32, u64)>,
    pub(crate) kind: RegionKind,
}

pub(crate) struct MdlInfo {
    pub(crate) layout: Layout,
    pub(crate) pages: usize,
    pub(crate) probe_locked: bool,
}

/// The memfd behind a section or pool pages: its mode is cleared, so nobody (root aside) can
/// open it again by path (`/proc/<pid>/fd/N`), and for sections a read-only twin is opened
/// first, to hand out as read-only handles. The first read-only user handle seals it with
/// `F_SEAL_FUTURE_WRITE`: no descriptor of it, however reopened, maps it writable again.
pub(crate) struct Backing {
    pub(crate) fd: OwnedFd,
    pub(crate) read_only: Option<OwnedFd>,
}

pub(crate) struct UserHandle {
    pub(crate) fd: OwnedFd,
    pub(crate) object: u64,
    pub(crate) process: u64,
}

#[derive(Default)]
pub(crate) struct Kernel {
    pub(crate) next_id: u64,
    pub(crate) objects: HashMap<u64, Object>,
    /// Kernel handle -> object.
    pub(crate) kernel_handles: HashMap<u64, u64>,
    /// User handle (a descriptor number) -> its descriptor and object.
    pub(crate) user_handles: HashMap<i32, UserHandle>,
    pub(crate) backings: HashMap<u32, Arc<Backing>>,
    next_backing: u32,
    pub(crate) regions: BTreeMap<usize, Region>,
    pub(crate) mdls: HashMap<usize, MdlInfo>,
    pub(crate) threads: Vec<Arc<ThreadRecord>>,
    /// System threads whose start routine has not returned.
    pub(crate) running_threads: usize,
    pub(crate) joins: Vec<JoinHandle<()>>,
    pub(crate) violations: Vec<Violation>,
    pub(crate) driver: u64,
    pub(crate) devices: Vec<u64>,
    pub(crate) registry_capacity: Option<u32>,
    /// Requests whose cancel routine a schedule runs just before their next Unmark.
    pub(crate) cancel_before_unmark: HashSet<u64>,
    /// Fault injection: this many ObReferenceObjectByHandle calls on thread handles fail.
    pub(crate) fail_thread_references: u32,
    /// Random delays before request functions (Driver Verifier's way of widening races).
    pub(crate) jitter: bool,
    /// Requests completed and let go by the I/O manager, newest last (a bounded memory of
    /// them, so that a later use by the driver is named as a use after completion).
    pub(crate) retired: HashSet<u64>,
    pub(crate) retired_order: std::collections::VecDeque<u64>,
}

/// How many retired requests the kernel remembers.
const RETIRED_KEPT: usize = 1 << 16;

/// The kernel of this thread.
pub(crate) fn current() -> &'static Mutex<Kernel> {
    CURRENT.with(Cell::get).expect(
        "no simulated kernel on this thread: make a wdk_usersim::sim::Sim first (threads the \
         kernel starts inherit it)",
    )
}

pub(crate) fn kernel() -> MutexGuard<'static, Kernel> {
    current()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts a thread that runs in this thread's kernel.
pub(crate) fn spawn_in_kernel(f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    let kernel = current();
    std::thread::spawn(move || {
        CURRENT.with(|c| c.set(Some(kernel)));
        f();
    })
}

/// Records a violation of `rule`.
pub(crate) fn violate(rule: &'static str, message: String) {
    kernel().violate(rule, message);
}

impl Kernel {
    pub(crate) fn violate(&mut self, rule: &'static str, message: String) {
        std::eprintln!("wdk-usersim: {rule} violation: {message}");
        self.violations.push(Violation { rule, message });
    }

    /// A fresh id, shaped like an aligned pointer (never null).
    pub(crate) fn id(&mut self) -> u64 {
        self.next_id += 1;
        0x10_0000 + self.next_id * 16
    }

    pub(crate) fn insert(&mut self, object: Object) -> u64 {
        let id = self.id();
        self.objects.insert(id, object);
        id
    }

    /// New zeroed memory of `bytes` (see [`Backing`]); `section`: with a read-only twin.
    pub(crate) fn backing(&mut self, bytes: usize, section: bool) -> std::io::Result<u32> {
        use rustix::fs::{MemfdFlags, Mode, SealFlags};
        let fd = rustix::fs::memfd_create(
            "wdk-usersim",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )?;
        rustix::fs::ftruncate(&fd, bytes as u64)?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW)?;
        let read_only = if section {
            Some(reopen_read_only(&fd)?)
        } else {
            None
        };
        rustix::fs::fchmod(&fd, Mode::empty())?;
        self.next_backing += 1;
        self.backings
            .insert(self.next_backing, Arc::new(Backing { fd, read_only }));
        Ok(self.next_backing)
    }

    pub(crate) fn backing_fd(&self, backing: u32) -> Option<Arc<Backing>> {
        self.backings.get(&backing).cloned()
    }

    /// Lets go of a request the I/O manager is done with, remembering that it was one.
    pub(crate) fn retire(&mut self, id: u64) {
        if self.objects.remove(&id).is_none() {
            return;
        }
        self.retired.insert(id);
        self.retired_order.push_back(id);
        if self.retired_order.len() > RETIRED_KEPT
            && let Some(old) = self.retired_order.pop_front()
        {
            self.retired.remove(&old);
        }
    }

    /// The (backing, page) of a system address, if some region covers it.
    pub(crate) fn resolve(&self, address: usize) -> Option<((u32, u64), RegionKind)> {
        let (base, region) = self.regions.range(..=address).next_back()?;
        let offset = address - base;
        (offset < region.len).then(|| (region.pages[offset / PAGE], region.kind))
    }

    pub(crate) fn request(&mut self, id: u64, function: &str) -> Option<Arc<Request>> {
        match self.objects.get(&id) {
            Some(Object::Request(request)) => Some(request.clone()),
            _ if self.retired.contains(&id) => {
                self.violate(
                    "Request",
                    format!("{function} on request {id:#x} after it was completed: a completed request belongs to nobody"),
                );
                None
            }
            _ => {
                self.violate(
                    "Request",
                    format!("{function}: {id:#x} is not a request handle"),
                );
                None
            }
        }
    }

    /// Adds a reference to a kernel object.
    pub(crate) fn reference(&mut self, object: u64) -> bool {
        match self.objects.get_mut(&object) {
            Some(
                Object::Section { refs, .. }
                | Object::Thread { refs, .. }
                | Object::Event { refs, .. },
            ) => {
                *refs += 1;
                true
            }
            _ => false,
        }
    }

    /// Drops a reference; the object goes with its last one.
    pub(crate) fn dereference(&mut self, object: u64, function: &str) {
        let gone = match self.objects.get_mut(&object) {
            Some(
                Object::Section { refs, .. }
                | Object::Thread { refs, .. }
                | Object::Event { refs, .. },
            ) => {
                *refs -= 1;
                *refs == 0
            }
            _ => {
                self.violate(
                    "Reference",
                    format!("{function}: {object:#x} is no referenced kernel object (a reference dropped twice, or never taken)"),
                );
                false
            }
        };
        if gone && let Some(Object::Section { backing, .. }) = self.objects.remove(&object) {
            {
                let in_use = self
                    .regions
                    .values()
                    .any(|r| r.pages.iter().any(|p| p.0 == backing));
                if !in_use {
                    self.backings.remove(&backing);
                }
            }
        }
    }
}

/// Maps `pages` read-write at a fresh address range.
///
/// # Safety
///
/// The backings are memfds of at least the pages named.
pub(crate) unsafe fn map_pages(kernel: &Kernel, pages: &[(u32, u64)]) -> Option<usize> {
    use rustix::mm::{MapFlags, ProtFlags};
    let len = pages.len() * PAGE;
    // SAFETY: a fresh reservation, replacing nothing.
    let base = unsafe {
        rustix::mm::mmap_anonymous(
            core::ptr::null_mut(),
            len,
            ProtFlags::empty(),
            MapFlags::PRIVATE,
        )
    }
    .ok()? as usize;
    for (index, (backing, page)) in pages.iter().enumerate() {
        let backing = kernel.backing_fd(*backing)?;
        // SAFETY: replaces one page of the reservation just made, which nobody else uses.
        let mapped = unsafe {
            rustix::mm::mmap(
                (base + index * PAGE) as *mut _,
                PAGE,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED | MapFlags::FIXED,
                &backing.fd,
                page * PAGE as u64,
            )
        };
        if mapped.is_err() {
            // SAFETY: the reservation made above.
            let _ = unsafe { rustix::mm::munmap(base as *mut _, len) };
            return None;
        }
    }
    Some(base)
}

/// A read-only descriptor of a memfd (an open file description of its own, which no
/// `fcntl` can make writable), opened while its mode still allows it.
fn reopen_read_only(fd: &OwnedFd) -> std::io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    Ok(rustix::fs::open(
        format!("/proc/self/fd/{}", fd.as_raw_fd()),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// A descriptor of `backing` with exactly the access asked for: the read-write descriptor
/// duplicated, or the read-only twin duplicated (sealing the memory against new writable
/// mappings through any descriptor the first time).
pub(crate) fn user_descriptor(backing: &Backing, write: bool) -> std::io::Result<OwnedFd> {
    use rustix::fs::SealFlags;
    let seals = rustix::fs::fcntl_get_seals(&backing.fd)?;
    if write {
        // A writable descriptor could add seals of its own (F_SEAL_WRITE would make the
        // kernel's writes fail): F_SEAL_SEAL first, so that nobody changes them any more.
        if !seals.contains(SealFlags::SEAL) {
            rustix::fs::fcntl_add_seals(&backing.fd, SealFlags::SEAL)?;
        }
        return Ok(rustix::io::fcntl_dupfd_cloexec(&backing.fd, 3)?);
    }
    let Some(read_only) = &backing.read_only else {
        return Err(std::io::Error::other("pool memory has no read-only handle"));
    };
    // F_SEAL_SEAL with it keeps clients from changing the seals. The kernel's own mappings,
    // all made before, keep writing. (A section already handed out writable is sealed as it
    // is: it gets no read-only handle, and the sim says so by failing.)
    if seals.contains(SealFlags::SEAL) && !seals.contains(SealFlags::FUTURE_WRITE) {
        return Err(std::io::Error::other(
            "a section handed out writable cannot be handed out read-only too",
        ));
    }
    if !seals.contains(SealFlags::SEAL) {
        rustix::fs::fcntl_add_seals(&backing.fd, SealFlags::FUTURE_WRITE | SealFlags::SEAL)?;
    }
    Ok(rustix::io::fcntl_dupfd_cloexec(read_only, 3)?)
}

/// Relaxed is enough for the flag a schedule polls: it only decides when to stop waiting,
/// and the lock it reports on orders everything else.
pub(crate) fn set_spinning(on: bool) {
    SPINNING.with(|flag| {
        if let Some(flag) = &*flag.borrow() {
            flag.store(on, Ordering::Relaxed);
        }
    });
}

// SAFETY: the raw pointers in the kernel's tables (device contexts, callbacks) are the
// driver's to share between threads, as a kernel shares them; the table itself is behind a
// mutex.
unsafe impl Send for Kernel {}

thread_local! {
    static RANDOM: Cell<u64> = const { Cell::new(0x9e37_79b9_7f4a_7c15) };
}

/// How many kernels have jitter on ([`crate::sim::Sim::jitter`]): while none has, [`jitter`]
/// returns without taking the kernel's lock, which every request function would otherwise
/// take once more for it. This counter and the next are test knobs read with Relaxed loads:
/// a test sets one before it makes the request it is for, so the setting happens before the
/// read (through whatever hands the request over: a lock, a socket, a thread's start), and
/// a load that happens after a store cannot see an older value.
pub(crate) static KERNELS_WITH_JITTER: AtomicUsize = AtomicUsize::new(0);

/// How many requests, in any kernel, have a cancel scheduled before their next Unmark
/// ([`crate::sim::Sim::cancel_before_unmark`]): while none has, Unmark does not look. Both
/// counts go back down when a dropped `Sim`'s kernel is emptied; one that is not (a thread
/// still ran in it) only costs later calls the look.
pub(crate) static SCHEDULED_UNMARK_CANCELS: AtomicUsize = AtomicUsize::new(0);

/// Sleeps 0 to 63 microseconds, pseudo-randomly, if jitter is on.
pub(crate) fn jitter() {
    // Relaxed: see `KERNELS_WITH_JITTER`; the flag itself is read under the kernel's lock.
    if KERNELS_WITH_JITTER.load(Ordering::Relaxed) == 0 || !kernel().jitter {
        return;
    }
    let value = RANDOM.with(|r| {
        let mut x = r.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        r.set(x);
        x
    });
    std::thread::sleep(std::time::Duration::from_micros(value % 64));
}
