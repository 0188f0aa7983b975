//! End-to-end tests of ringmap (in `tests/`): the harness that starts the device in another
//! process and opens handles to it.
//!
//! The backend is chosen at run time: by default each test starts its own usersim device,
//! `ringmap serve --socket <tmp>`, as a child process; `RINGMAP_BACKEND=driver` opens the
//! installed driver instead (Windows; run with `--test-threads=1`, the tests share the one
//! device). The `ringmap` binary is built on first use with `cargo build -p ringmap-client
//! --bin ringmap` into the target directory the tests run from (nothing to do when it is up
//! to date); `RINGMAP_BIN` names a binary to use instead.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use ringmap_client::{Device, Error, GenerateRequest, Mapping, Status};

/// Where the device runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A usersim device in a child process (the default).
    Usersim,
    /// The installed driver (`RINGMAP_BACKEND=driver`).
    Driver,
}

/// The backend `RINGMAP_BACKEND` selects.
pub fn backend() -> Backend {
    match std::env::var("RINGMAP_BACKEND").as_deref() {
        Ok("driver") => Backend::Driver,
        Ok("usersim") | Ok("") | Err(_) => Backend::Usersim,
        Ok(other) => panic!("RINGMAP_BACKEND={other}: use `usersim` or `driver`"),
    }
}

/// The `ringmap` command: `RINGMAP_BIN`, or built next to the test executable.
pub fn ringmap_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        if let Some(path) = std::env::var_os("RINGMAP_BIN") {
            return PathBuf::from(path);
        }
        build_client_target(&["--bin", "ringmap"], "ringmap")
    })
}

/// One of the client library's examples (`usermode-client/examples/<name>.rs`), built next to
/// the test executable.
pub fn example_binary(name: &str) -> PathBuf {
    build_client_target(&["--example", name], &format!("examples/{name}"))
}

/// Builds a target of `ringmap-client` into the target directory the tests run from (nothing
/// to do when it is up to date) and returns the path of `relative` in its profile directory.
fn build_client_target(target: &[&str], relative: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    // target/<profile>/deps/<test> → target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lies in target/<profile>/deps");
    let target_dir = profile_dir.parent().expect("target/<profile> has a parent");
    let binary = profile_dir.join(format!("{relative}{}", std::env::consts::EXE_SUFFIX));
    let cargo = std::env::var_os("CARGO")
        .or_else(|| option_env!("CARGO").map(Into::into))
        .unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args(["build", "--quiet", "-p", "ringmap-client"])
        .args(target)
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let status = build
        .status()
        .expect("cargo runs (set RINGMAP_BIN to a built `ringmap` otherwise)");
    assert!(
        status.success(),
        "cargo build -p ringmap-client {} failed",
        target.join(" ")
    );
    assert!(binary.exists(), "{} was not built", binary.display());
    binary
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ringmap-test-{what}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `ringmap serve` in a child process; killed on drop.
pub struct ServerProcess {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
    _dir: TempDir,
}

/// Starts `ringmap serve --socket <tmp> --capacity <capacity>` and waits until it listens.
pub fn spawn_server(capacity: u64) -> ServerProcess {
    let dir = TempDir::new("server");
    let socket = dir.path().join("ringmap.sock");
    let log = dir.path().join("server.log");
    let child = Command::new(ringmap_binary())
        .arg("serve")
        .arg("--socket")
        .arg(&socket)
        .arg("--capacity")
        .arg(capacity.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("create the server log"))
        .spawn()
        .expect("start `ringmap serve`");
    let mut server = ServerProcess {
        child,
        socket,
        log,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if server.socket.exists() {
            #[cfg(unix)]
            if Device::open_at(&server.socket).is_ok() {
                return server;
            }
        }
        if let Some(status) = server.child.try_wait().expect("poll the server") {
            panic!(
                "`ringmap serve` exited ({status}) before listening: {}",
                server.log_text()
            );
        }
        assert!(
            Instant::now() < deadline,
            "`ringmap serve` did not listen at {} within 20 s: {}",
            server.socket.display(),
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl ServerProcess {
    /// The socket it listens at.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills it now (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops it as Ctrl-C would (SIGTERM): the driver is unloaded and its report written to
    /// the log. Returns its exit status (`None`: it had already ended, or did not end within
    /// 20 s and was killed).
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        if !self.is_running() {
            return None;
        }
        // `kill -TERM`: no signal crate for one call.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.kill();
        None
    }

    /// What it wrote to standard error.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    /// Stops the server; if the driver broke a kernel rule or left something behind while it
    /// ran, the test that started it fails (unless it is failing already).
    fn drop(&mut self) {
        let status = self.stop();
        if std::thread::panicking() {
            return;
        }
        if let Some(status) = status
            && status.code() == Some(KERNEL_RULES_BROKEN)
        {
            panic!(
                "the driver broke kernel rules while this test ran: {}",
                self.log_text()
            );
        }
    }
}

/// `ringmap serve`'s exit status when the driver broke a kernel rule or left something behind.
pub const KERNEL_RULES_BROKEN: i32 = 70;

/// The device under test: its own usersim server, or the installed driver.
pub struct TestDevice {
    server: Option<ServerProcess>,
}

impl TestDevice {
    /// A device with a ring of `capacity` bytes (usersim); the driver's ring is whatever it
    /// was installed with, drained and with its generator stopped.
    pub fn start(capacity: u64) -> TestDevice {
        match backend() {
            Backend::Usersim => TestDevice {
                server: Some(spawn_server(capacity)),
            },
            Backend::Driver => {
                let device = TestDevice { server: None };
                let handle = device.open();
                let _ = handle.generate(GenerateRequest::stop());
                let mut mapping = handle.map().expect("map the driver's ring to drain it");
                loop {
                    let consumer = mapping.consumer();
                    if consumer.batch().is_empty() {
                        let position = consumer.position();
                        let _ = handle.wait(position, Some(Duration::from_millis(1)));
                        break;
                    }
                }
                device
            }
        }
    }

    /// A new handle.
    pub fn open(&self) -> Device {
        self.try_open().expect("open the device")
    }

    /// A new handle, or the error.
    pub fn try_open(&self) -> Result<Device, Error> {
        match &self.server {
            #[cfg(unix)]
            Some(server) => Device::open_at(server.socket()),
            _ => Device::open(),
        }
    }

    /// The usersim socket, if the device is a usersim one.
    pub fn socket(&self) -> Option<&Path> {
        self.server.as_ref().map(ServerProcess::socket)
    }

    /// The usersim server process, if any.
    pub fn server(&mut self) -> Option<&mut ServerProcess> {
        self.server.as_mut()
    }
}

/// The environment variable that tells a re-executed test binary which child role to play.
pub const ROLE_VAR: &str = "RINGMAP_TEST_ROLE";
/// The environment variable with the usersim socket for a child (absent for the driver).
pub const SOCKET_VAR: &str = "RINGMAP_TEST_SOCKET";

/// The role this process plays, when a test re-executed its binary.
pub fn child_role() -> Option<String> {
    std::env::var(ROLE_VAR).ok()
}

/// Opens the device a child was told about.
pub fn child_open() -> Device {
    match std::env::var_os(SOCKET_VAR) {
        #[cfg(unix)]
        Some(socket) => Device::open_at(Path::new(&socket)).expect("child: open the device"),
        _ => Device::open().expect("child: open the device"),
    }
}

/// Re-executes this test binary to run only `test` (whose body checks [`child_role`]) in the
/// role `role`, against `device`. Its standard output is piped.
pub fn spawn_child(test: &str, role: &str, device: &TestDevice) -> Child {
    let mut command = Command::new(std::env::current_exe().expect("the test executable"));
    command
        .args([test, "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(ROLE_VAR, role)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    match device.socket() {
        Some(socket) => command.env(SOCKET_VAR, socket),
        None => command.env_remove(SOCKET_VAR),
    };
    command.spawn().expect("re-execute the test binary")
}

/// Retries `attempt` until it returns `Some`, for up to `limit` (for clean-up the device does
/// asynchronously, like a dead client's handle).
pub fn eventually<T>(limit: Duration, mut attempt: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = attempt() {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Checks records by producer and sequence number: none lost, none twice, order kept per
/// producer.
#[derive(Debug, Default)]
pub struct SequenceCheck {
    next: Vec<u64>,
    /// Records seen.
    pub records: u64,
    /// Records whose sequence number was not the producer's next one, described.
    pub errors: Vec<String>,
}

impl SequenceCheck {
    pub fn new(producers: usize) -> SequenceCheck {
        SequenceCheck {
            next: vec![0; producers],
            ..SequenceCheck::default()
        }
    }

    /// Checks one generated-format record.
    pub fn record(&mut self, payload: &[u8]) {
        self.records += 1;
        let Some((producer, sequence, _)) = ringmap_core::abi::generated::parse(payload) else {
            self.errors.push(format!("a {}-byte record", payload.len()));
            return;
        };
        match self.next.get_mut(producer as usize) {
            Some(next) if *next == sequence => *next += 1,
            Some(next) => {
                if self.errors.len() < 20 {
                    self.errors.push(format!(
                        "producer {producer}: sequence {sequence}, expected {next}"
                    ));
                }
                *next = sequence + 1;
            }
            None => self.errors.push(format!("unknown producer {producer}")),
        }
    }

    /// Asserts that every producer delivered exactly `per_producer` records, in order.
    pub fn assert_complete(&self, per_producer: u64) {
        assert!(
            self.errors.is_empty(),
            "records out of sequence: {:?}",
            self.errors
        );
        for (producer, next) in self.next.iter().enumerate() {
            assert_eq!(
                *next, per_producer,
                "producer {producer} delivered {next} of {per_producer} records"
            );
        }
    }
}

/// A record in the generator's format: producer and sequence number, then filler up to
/// `len` bytes.
pub fn tagged_record(producer: u16, sequence: u64, len: usize) -> Vec<u8> {
    let mut payload = vec![0; len.max(8)];
    ringmap_core::abi::generated::fill(&mut payload, producer, sequence, 0);
    payload
}

/// Consumes through `mapping` until `records` records have been checked or `limit` passes,
/// waiting on `device` when the ring is empty. Returns the check.
pub fn consume(
    device: &Device,
    mapping: &mut Mapping,
    producers: usize,
    records: u64,
    limit: Duration,
) -> SequenceCheck {
    let mut check = SequenceCheck::new(producers);
    let deadline = Instant::now() + limit;
    while check.records < records {
        assert!(
            Instant::now() < deadline,
            "only {} of {records} records arrived",
            check.records
        );
        let consumer = mapping.consumer();
        let batch = consumer.batch();
        if batch.is_empty() {
            drop(batch);
            let position = consumer.position();
            device
                .wait(position, Some(Duration::from_millis(100)))
                .expect("wait");
            continue;
        }
        for payload in batch.iter() {
            check.record(&payload);
        }
    }
    // Return the space to the device.
    let position = mapping.consumer().position();
    let _ = device.wait(position, Some(Duration::from_millis(1)));
    check
}
