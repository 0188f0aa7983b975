//! The `ringmap` command end to end, as a user (or a script) runs it: each test runs the
//! built binary against its own usersim device (`ringmap serve` in a child process) and
//! checks the exit status, standard output and standard error. Linux only (usersim); with
//! `RINGMAP_BACKEND=driver` these tests return at once. No timing assertions: deadlines only
//! turn a hang into a failure.

#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ringmap_tests::{Backend, Device, TempDir, TestDevice, backend, eventually, ringmap_binary};

const LIMIT: Duration = Duration::from_secs(30);

fn usersim() -> bool {
    if backend() == Backend::Driver {
        eprintln!("skipped: the `ringmap` command tests run against usersim only");
        return false;
    }
    true
}

/// `ringmap` with `args`, against the device at `socket` if given.
fn ringmap(socket: Option<&Path>, args: &[&str]) -> Command {
    let mut command = Command::new(ringmap_binary());
    if let Some(socket) = socket {
        command.arg("--socket").arg(socket);
    }
    command.args(args).stdin(Stdio::null());
    command
}

fn run(socket: Option<&Path>, args: &[&str]) -> Output {
    ringmap(socket, args).output().expect("run ringmap")
}

/// Runs `ringmap` with `input` on standard input.
fn run_with_input(socket: Option<&Path>, args: &[&str], input: &[u8]) -> Output {
    let mut child = ringmap(socket, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ringmap");
    let mut stdin = child.stdin.take().expect("piped");
    // A refusal may end the command before it reads everything: a broken pipe is fine.
    let _ = stdin.write_all(input);
    drop(stdin);
    child.wait_with_output().expect("ringmap")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn describe(output: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    )
}

/// Waits for `child` (a deadline only turns a hang into a failure).
fn wait(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(status) = child.try_wait().expect("poll ringmap") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ringmap did not exit within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn stderr_of(child: &mut Child) -> String {
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    stderr
}

/// The records in the ring, consumed through the mapping (and their space returned).
fn records(device: &Device) -> Vec<Vec<u8>> {
    let mut mapping = eventually(LIMIT, || device.map().ok()).expect("map");
    let consumer = mapping.consumer();
    let records: Vec<Vec<u8>> = consumer.batch().iter().map(|r| r.to_vec()).collect();
    mapping.unmap().expect("unmap");
    records
}

fn send_signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} failed");
}

// ---- Broken pipes and panics -----------------------------------------------------------

#[test]
fn stat_watch_into_a_closed_pipe_ends_quietly_with_status_0() {
    if !usersim() {
        return;
    }
    let server = TestDevice::start(64 << 10);
    let mut child = ringmap(server.socket(), &["stat", "--watch", "0.1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ringmap stat");
    // `| head -1`: read one line, then close the pipe.
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut line)
        .expect("read a line");
    assert!(line.starts_with("time: "), "{line}");
    let status = wait(&mut child);
    let stderr = stderr_of(&mut child);
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(stderr, "");
}

#[test]
fn every_subcommand_into_a_closed_pipe_ends_quietly_with_status_0() {
    if !usersim() {
        return;
    }
    let server = TestDevice::start(64 << 10);
    let socket = server.socket();
    assert!(
        run_with_input(socket, &["write"], b"a\nb\n")
            .status
            .success()
    );
    for args in [
        &["stat"][..],
        &["stat", "--json"],
        &["generate", "stop"],
        &["tail"],
        &[
            "demo",
            "--producers",
            "1",
            "--records",
            "100",
            "--capacity",
            "16K",
        ],
        &["help"],
    ] {
        // The demo starts its own device.
        let socket = if args[0] == "demo" { None } else { socket };
        let mut child = ringmap(socket, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ringmap");
        // Closed before the command writes anything.
        drop(child.stdout.take());
        let status = wait(&mut child);
        let stderr = stderr_of(&mut child);
        assert!(status.success(), "{args:?}: {status}: {stderr}");
        assert_eq!(stderr, "", "{args:?}");
    }
}

#[test]
fn tail_follow_into_a_closed_pipe_ends_quietly_with_status_0() {
    if !usersim() {
        return;
    }
    let server = TestDevice::start(64 << 10);
    let socket = server.socket();
    assert!(
        run_with_input(socket, &["write"], b"one\ntwo\nthree\n")
            .status
            .success()
    );
    let mut child = ringmap(socket, &["tail", "-f"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ringmap tail -f");
    // `| head -2`.
    let mut reader = BufReader::new(child.stdout.take().expect("piped"));
    let mut lines = String::new();
    for _ in 0..2 {
        reader.read_line(&mut lines).expect("read a line");
    }
    assert_eq!(lines, "one\ntwo\n");
    drop(reader);
    // A record after the pipe closed: tail finds out when it prints it (or when it flushes
    // while idle).
    assert!(
        run_with_input(socket, &["write"], b"four\n")
            .status
            .success()
    );
    let status = wait(&mut child);
    let stderr = stderr_of(&mut child);
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(stderr, "");
}

#[test]
fn stat_watch_out_of_range_is_a_usage_error_that_names_the_range() {
    if !usersim() {
        return;
    }
    let server = TestDevice::start(64 << 10);
    for watch in ["1e300", "0", "-1", "nan"] {
        let output = run(server.socket(), &["stat", "--watch", watch]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{watch}: {}",
            describe(&output)
        );
        let stderr = text(&output.stderr);
        assert!(stderr.contains("from 0.01 to 86400"), "{watch}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

// ---- Refusals are sentences that name the limit ----------------------------------------

#[test]
fn a_line_longer_than_the_ring_is_refused_with_the_largest_record_and_its_line() {
    if !usersim() {
        return;
    }
    let server = TestDevice::start(64 << 10);
    let mut input = b"short\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', 10 << 20));
    input.extend_from_slice(b"\nafter\n");
    let output = run_with_input(server.socket(), &["write"], &input);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("line 2 is longer than the largest record this ring holds: 65528 bytes"),
        "{stderr}"
    );
    assert!(stderr.contains("1 records written"), "{stderr}");
    assert!(!stderr.contains("STATUS_"), "{stderr}");
    assert_eq!(records(&server.open()), [b"short".to_vec()]);
}

#[test]
fn demo_and_generate_refuse_out_of_range_options_by_naming_the_limit() {
    if !usersim() {
        return;
    }
    let server = TestDevice::start(64 << 10);
    let range = "power of two from 4096 bytes (4K) to 1073741824 bytes (1G)";
    for (args, code, expected) in [
        (
            &["demo", "--producers", "65"][..],
            2,
            "1 to 64 producer threads",
        ),
        (&["demo", "--producers", "0"], 2, "1 to 64 producer threads"),
        (
            &["demo", "--payload", "2000000"],
            2,
            "a 1048576-byte ring holds records of at most 1048568 bytes",
        ),
        (&["demo", "--payload", "4"], 2, "8 bytes"),
        (&["demo", "--capacity", "2G"], 2, range),
        (&["demo", "--capacity", "1.5M"], 2, range),
        (
            &["demo", "--capacity", "1.1K"],
            2,
            "not a whole number of bytes",
        ),
        (
            &["demo", "--records", "9223372036854775808"],
            2,
            "1 to 288230376151711743 records per producer",
        ),
        (&["serve", "--capacity", "2G"], 2, range),
        (&["generate", "start", "--producers", "65"], 2, "1 to 64"),
        (
            &["generate", "start", "--payload", "100000"],
            1,
            "a 65536-byte ring holds records of at most 65528 bytes",
        ),
    ] {
        let output = run(server.socket(), args);
        let stderr = text(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(code),
            "{args:?}: {}",
            describe(&output)
        );
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("STATUS_") && !stderr.contains("0xC0"),
            "{stderr}"
        );
        assert_eq!(text(&output.stdout), "", "{args:?}");
    }
}

#[test]
fn the_exit_statuses_are_in_help_and_in_the_readme() {
    let output = run(None, &["help"]);
    assert!(output.status.success());
    let help = text(&output.stdout);
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("read README.md");
    let table: Vec<&str> = help
        .lines()
        .skip_while(|line| *line != "Exit status:")
        .skip(1)
        .take_while(|line| !line.is_empty())
        .collect();
    let codes: Vec<&str> = table
        .iter()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert_eq!(codes, ["0", "1", "2", "3", "70", "130"], "{help}");
    for line in table {
        assert!(
            readme.contains(line),
            "README.md lacks the exit status line `{line}`"
        );
    }
}

// ---- --socket and the generator ----------------------------------------------------------

#[test]
fn serve_unloads_the_driver_on_sigterm_and_reports_that_it_broke_no_rule() {
    if !usersim() {
        return;
    }
    let mut server = ringmap_tests::spawn_server(64 << 10);
    let device = Device::open_at(server.socket()).expect("open");
    let writer = Device::open_at(server.socket()).expect("open");
    writer.write(b"one").expect("write");
    // A mapping and a pending QUERY still held when the signal comes: the unload must clean
    // both up (EvtFileCleanup of every handle, then device cleanup and EvtDriverUnload).
    let mut mapping = device.map().expect("map");
    mapping
        .consumer()
        .consume_while(1, |_| std::ops::ControlFlow::Continue(()));
    mapping.notify().expect("a QUERY pends");
    let status = server.stop().expect("`ringmap serve` ends on SIGTERM");
    let log = server.log_text();
    assert!(status.success(), "{status}: {log}");
    assert!(
        log.contains("the driver broke no kernel rule and left nothing behind"),
        "{log}"
    );
    assert!(log.contains("SIGTERM received"), "{log}");
}

#[test]
fn demo_listens_at_socket_and_ctrl_c_prints_a_partial_summary_and_removes_it() {
    if !usersim() {
        return;
    }
    let dir = TempDir::new("demo-socket");
    let socket = dir.path().join("demo.sock");
    let mut child = ringmap(
        Some(&socket),
        &[
            "demo",
            "--producers",
            "1",
            "--records",
            "1000000",
            "--rate",
            "100",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("run ringmap demo");
    // The demo's device answers at --socket, mapped by the demo.
    let device = eventually(LIMIT, || Device::open_at(&socket).ok()).expect("open the demo");
    eventually(LIMIT, || (device.stats().ok()?.produced > 0).then_some(()))
        .expect("the demo's generator produces");
    drop(device);
    send_signal(&child, "INT");
    let status = wait(&mut child);
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut stdout)
        .expect("read stdout");
    let stderr = stderr_of(&mut child);
    assert_eq!(status.code(), Some(130), "{status}: {stdout}{stderr}");
    assert!(
        stdout.starts_with("interrupted: yes\nrecords: "),
        "{stdout}"
    );
    assert!(stdout.contains("\nlost: 0\n"), "{stdout}");
    assert!(stderr.contains("interrupted after"), "{stderr}");
    assert!(
        !socket.exists(),
        "the demo left {} behind",
        socket.display()
    );
}

/// The demo directories (`ringmap-demo-<pid>-...`) of process `pid` in the temp directory.
fn demo_dirs(pid: u32) -> Vec<PathBuf> {
    let prefix = format!("ringmap-demo-{pid}-");
    std::fs::read_dir(std::env::temp_dir())
        .expect("list the temp directory")
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(&prefix))
        .map(|entry| entry.path())
        .collect()
}

#[test]
fn ctrl_c_of_demo_removes_its_socket_directory() {
    if !usersim() {
        return;
    }
    let mut child = ringmap(
        None,
        &[
            "demo",
            "--producers",
            "1",
            "--records",
            "1000000",
            "--rate",
            "100",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("run ringmap demo");
    let pid = child.id();
    let dirs = eventually(LIMIT, || {
        let dirs = demo_dirs(pid);
        dirs.iter()
            .any(|dir| {
                Device::open_at(&dir.join("ringmap.sock"))
                    .and_then(|device| device.stats())
                    .is_ok_and(|stats| stats.produced > 0)
            })
            .then_some(dirs)
    })
    .expect("the demo's device runs");
    send_signal(&child, "INT");
    let status = wait(&mut child);
    assert_eq!(
        status.code(),
        Some(130),
        "{status}: {}",
        stderr_of(&mut child)
    );
    for dir in dirs {
        assert!(!dir.exists(), "the demo left {} behind", dir.display());
    }
}

#[test]
fn bench_refuses_a_socket_path_that_exists() {
    if !usersim() {
        return;
    }
    let dir = TempDir::new("bench-socket");
    let path = dir.path().join("precious");
    std::fs::write(&path, b"keep me").expect("write a file");
    let output = run(
        Some(&path),
        &["bench", "--records", "16", "--wakeups", "1", "--reps", "1"],
    );
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        text(&output.stderr).contains("exists already"),
        "{}",
        describe(&output)
    );
    assert_eq!(std::fs::read(&path).expect("still there"), b"keep me");
}

#[test]
fn demo_refuses_a_socket_path_that_is_not_a_socket() {
    if !usersim() {
        return;
    }
    let dir = TempDir::new("demo-file");
    let path = dir.path().join("precious");
    std::fs::write(&path, b"keep me").expect("write a file");
    let output = run(Some(&path), &["demo", "--records", "10"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        text(&output.stderr).contains("is not a socket"),
        "{}",
        describe(&output)
    );
    assert_eq!(std::fs::read(&path).expect("still there"), b"keep me");
}

#[test]
fn bench_listens_at_socket_and_removes_it() {
    if !usersim() {
        return;
    }
    let dir = TempDir::new("bench-listen");
    let socket = dir.path().join("bench.sock");
    let mut child = ringmap(
        Some(&socket),
        &[
            "bench",
            "--records",
            "1000000",
            "--wakeups",
            "1",
            "--reps",
            "1",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("run ringmap bench");
    let device = eventually(LIMIT, || Device::open_at(&socket).ok());
    let status = wait(&mut child);
    assert!(device.is_some(), "bench did not listen at --socket");
    assert!(status.success(), "{status}: {}", stderr_of(&mut child));
    assert!(!socket.exists(), "bench left {} behind", socket.display());
}

#[test]
fn generate_starts_after_a_counted_run_and_stop_is_idempotent() {
    if !usersim() {
        return;
    }
    let server = TestDevice::start(64 << 10);
    let socket = server.socket();
    for _ in 0..2 {
        let output = run(socket, &["generate", "stop"]);
        assert!(output.status.success(), "{}", describe(&output));
        assert_eq!(text(&output.stdout), "generator producers: 0\n");
    }
    let start = [
        "generate",
        "start",
        "--rate",
        "0",
        "--count",
        "10",
        "--payload",
        "16",
    ];
    let output = run(socket, &start);
    assert!(output.status.success(), "{}", describe(&output));
    let device = server.open();
    eventually(LIMIT, || {
        (device.stats().ok()?.generator_producers == 0).then_some(())
    })
    .expect("the counted run ends by itself");
    let output = run(socket, &start);
    assert!(output.status.success(), "{}", describe(&output));
    eventually(LIMIT, || {
        (device.stats().ok()?.produced == 20).then_some(())
    })
    .expect("both runs produce");
    for _ in 0..2 {
        let output = run(socket, &["generate", "stop"]);
        assert!(output.status.success(), "{}", describe(&output));
    }
}

// ---- write: standard input, NUL-separated records, CR ----------------------------------

#[test]
fn write_dash_reads_standard_input() {
    if !usersim() {
        return;
    }
    let server = TestDevice::start(64 << 10);
    let output = run_with_input(server.socket(), &["write", "-"], b"from stdin\n");
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(records(&server.open()), [b"from stdin".to_vec()]);
}

#[test]
fn write_splits_binary_input_on_lf_only_and_removes_only_a_crlf_cr() {
    if !usersim() {
        return;
    }
    let server = TestDevice::start(64 << 10);
    let input = b"a\rb\x00c\xff\r\nd\r\r\n\x1b[?25l";
    let output = run_with_input(server.socket(), &["write"], input);
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(
        records(&server.open()),
        [
            b"a\rb\x00c\xff".to_vec(),
            b"d\r".to_vec(),
            b"\x1b[?25l".to_vec()
        ]
    );
    let output = run_with_input(server.socket(), &["write", "--keep-cr"], b"crlf\r\nlf\n");
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(
        records(&server.open()),
        [b"crlf\r".to_vec(), b"lf".to_vec()]
    );
    let help = text(&run(None, &["write", "--help"]).stdout);
    assert!(help.contains("0x0a"), "{help}");
    assert!(help.contains("--keep-cr"), "{help}");
}

#[test]
fn write_raw_takes_nul_separated_records_byte_for_byte() {
    if !usersim() {
        return;
    }
    let server = TestDevice::start(64 << 10);
    for flag in ["--raw", "-0"] {
        let output = run_with_input(
            server.socket(),
            &["write", flag],
            b"two\nlines\r\n\x00\xff\xfe\x00last",
        );
        assert!(output.status.success(), "{flag}: {}", describe(&output));
        assert_eq!(
            records(&server.open()),
            [
                b"two\nlines\r\n".to_vec(),
                b"\xff\xfe".to_vec(),
                b"last".to_vec()
            ]
        );
    }
}

// ---- tail: text output ---------------------------------------------------------------------

#[test]
fn tail_text_keeps_every_record_on_one_line() {
    if !usersim() {
        return;
    }
    let server = TestDevice::start(64 << 10);
    let output = run_with_input(
        server.socket(),
        &["write", "-0"],
        b"one\ntwo\x00back\\slash",
    );
    assert!(output.status.success(), "{}", describe(&output));
    let output = run(server.socket(), &["tail", "--format", "text"]);
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(text(&output.stdout), "one\\ntwo\nback\\\\slash\n");
}

#[test]
fn tail_text_on_a_terminal_escapes_control_bytes() {
    if !usersim() {
        return;
    }
    // `script` runs the command with a pseudo-terminal as its standard output.
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: `script` (util-linux) is not installed, and it provides the terminal");
        return;
    }
    let server = TestDevice::start(64 << 10);
    let output = run_with_input(server.socket(), &["write"], b"hide\x1b[?25lcursor\x07\n");
    assert!(output.status.success(), "{}", describe(&output));
    let command = format!(
        "'{}' --socket '{}' tail --format text",
        ringmap_binary().display(),
        server.socket().expect("usersim").display()
    );
    let output = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("run script");
    assert!(output.status.success(), "{}", describe(&output));
    let shown = text(&output.stdout);
    assert!(
        !shown.contains('\x1b') && !shown.contains('\x07'),
        "{shown:?}"
    );
    assert!(shown.contains("hide\\x1b[?25lcursor\\x07"), "{shown:?}");
}

// ---- help, completions, the man page, JSON (issue 12) -----------------------------------

#[test]
fn short_help_describes_the_command_not_the_library() {
    let output = run(None, &["-h"]);
    assert!(output.status.success(), "{}", describe(&output));
    let help = text(&output.stdout);
    assert!(
        help.starts_with("Run, watch and measure a ringmap ring buffer map"),
        "{help}"
    );
    assert!(!help.contains("Client library"), "{help}");
}

#[test]
fn socket_help_names_the_environment_variable_and_the_default_path() {
    let output = ringmap(None, &["--help"])
        .env("RINGMAP_SOCKET", "/run/example/ringmap.sock")
        .output()
        .expect("run ringmap");
    assert!(output.status.success(), "{}", describe(&output));
    let help = text(&output.stdout);
    assert!(help.contains("$RINGMAP_SOCKET"), "{help}");
    assert!(help.contains("ringmap-$UID/ringmap.sock"), "{help}");
    assert!(
        help.contains("Here the default is /run/example/ringmap.sock."),
        "{help}"
    );
}

#[test]
fn ringmap_socket_in_the_environment_is_the_device_used() {
    if !usersim() {
        return;
    }
    let server = TestDevice::start(64 << 10);
    let socket = server.socket().expect("usersim");
    let output = ringmap(None, &["stat", "--json"])
        .env("RINGMAP_SOCKET", socket)
        .output()
        .expect("run ringmap");
    assert!(output.status.success(), "{}", describe(&output));
    let stats: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(stats["capacity"], 64 << 10);
}

#[test]
fn help_stat_explains_every_field_stat_prints() {
    if !usersim() {
        return;
    }
    let server = TestDevice::start(64 << 10);
    let output = run(server.socket(), &["stat"]);
    assert!(output.status.success(), "{}", describe(&output));
    let help = text(&run(None, &["help", "stat"]).stdout);
    for line in text(&output.stdout).lines() {
        let name = line.split(':').next().expect("name: value");
        assert!(
            help.lines()
                .any(|h| h.trim_start().starts_with(&format!("{name}  "))),
            "`ringmap help stat` does not explain `{name}`:\n{help}"
        );
    }
    assert!(help.contains("not lost records"), "{help}");
}

#[test]
fn completions_and_the_man_page_are_printed() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let output = run(None, &["completions", shell]);
        assert!(output.status.success(), "{shell}: {}", describe(&output));
        let script = text(&output.stdout);
        assert!(script.contains("ringmap"), "{shell}: {script}");
        assert!(
            script.contains("tail"),
            "{shell}: no subcommand in {script}"
        );
    }
    let refused = run(None, &["completions", "nosuchshell"]);
    assert_eq!(refused.status.code(), Some(2), "{}", describe(&refused));

    let output = run(None, &["man"]);
    assert!(output.status.success(), "{}", describe(&output));
    let page = text(&output.stdout);
    assert!(page.contains(".TH ringmap 1"), "{page}");
    assert!(page.contains("Run, watch and measure"), "{page}");
    assert!(page.contains("completions"), "{page}");
}

#[test]
fn stat_watch_json_has_a_time_and_rates_from_the_second_sample() {
    if !usersim() {
        return;
    }
    let server = TestDevice::start(64 << 10);
    let mut child = ringmap(server.socket(), &["stat", "--watch", "0.05", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ringmap stat");
    let mut reader = BufReader::new(child.stdout.take().expect("piped"));
    let mut samples = Vec::new();
    for _ in 0..2 {
        let mut line = String::new();
        reader.read_line(&mut line).expect("read a line");
        samples.push(serde_json::from_str::<serde_json::Value>(&line).expect("JSON"));
    }
    drop(reader);
    wait(&mut child);
    for sample in &samples {
        let time = sample["time"].as_str().expect("a time");
        assert!(time.ends_with('Z') && time.len() == 24, "{time}");
    }
    assert!(samples[0]["records_per_sec"].is_null());
    assert!(samples[0]["bytes_per_sec"].is_null());
    // Nothing is produced between the samples: a rate of exactly 0.
    assert_eq!(samples[1]["records_per_sec"], 0.0);
    assert_eq!(samples[1]["bytes_per_sec"], 0.0);
}

#[test]
fn stat_watch_text_starts_each_sample_with_its_time_and_rates() {
    if !usersim() {
        return;
    }
    let server = TestDevice::start(64 << 10);
    let mut child = ringmap(server.socket(), &["stat", "--watch", "0.05"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ringmap stat");
    let mut reader = BufReader::new(child.stdout.take().expect("piped"));
    let mut lines = Vec::new();
    while lines
        .iter()
        .filter(|l: &&String| l.starts_with("rates:"))
        .count()
        < 2
    {
        let mut line = String::new();
        reader.read_line(&mut line).expect("read a line");
        lines.push(line);
    }
    drop(reader);
    wait(&mut child);
    assert!(lines[0].starts_with("time: "), "{lines:?}");
    assert_eq!(lines[1], "rates: n/a (first sample)\n");
    assert_eq!(lines.last().unwrap(), "rates: 0 records/s, 0 bytes/s\n");
}

#[test]
fn demo_json_is_one_object_with_the_summary() {
    if !usersim() {
        return;
    }
    let output = run(
        None,
        &[
            "demo",
            "--records",
            "500",
            "--producers",
            "2",
            "--capacity",
            "64K",
            "--json",
        ],
    );
    assert!(output.status.success(), "{}", describe(&output));
    let summary: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert_eq!(summary["records"], 1000);
    assert_eq!(summary["bytes"], 1000 * 64);
    assert_eq!(summary["lost"], 0);
    assert_eq!(summary["duplicates"], 0);
    assert_eq!(summary["malformed"], 0);
    assert_eq!(summary["interrupted"], false);
    for key in ["seconds", "records_per_sec", "dropped", "wakeups"] {
        assert!(summary[key].is_number(), "{key}: {summary}");
    }
}

#[test]
fn bench_json_is_one_object_with_both_tables() {
    if !usersim() {
        return;
    }
    let output = run(
        None,
        &[
            "bench",
            "--records",
            "2000",
            "--wakeups",
            "20",
            "--reps",
            "3",
            "--capacity",
            "64K",
            "--idle-ms",
            "400",
            "--json",
        ],
    );
    assert!(output.status.success(), "{}", describe(&output));
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON object");
    // The idle goal (0% CPU with a consumer waiting and no producer) is measured over the
    // middle half of the wait, for the device's host and the consumer, and judged.
    let idle = &report["idle"];
    let seconds = idle["seconds"].as_f64().expect("the window's length");
    assert!((0.15..1.0).contains(&seconds), "{report}");
    for side in ["device", "consumer"] {
        assert!(idle[side]["cpu_us"].as_f64().is_some(), "{side}: {report}");
        assert!(idle[side]["wakeups"].as_u64().is_some(), "{side}: {report}");
    }
    let consumer_woke = idle["consumer"]["wakeups"].as_u64().unwrap();
    let device_woke = idle["device"]["wakeups"].as_u64().unwrap();
    assert_eq!(
        idle["goal_met"].as_bool(),
        Some(consumer_woke == 0 && device_woke <= 1),
        "{report}"
    );
    let throughput = report["throughput"].as_array().expect("throughput rows");
    assert_eq!(throughput.len(), 2);
    for row in throughput {
        let device = row["device_records_per_sec_sorted"]
            .as_array()
            .expect("reps");
        assert_eq!(device.len(), 3, "{row}");
        // The median shown is the middle rep.
        assert_eq!(row["device_records_per_sec_median"], device[1], "{row}");
        assert!(row["median_of_per_rep_ratios"].is_number(), "{row}");
    }
    for p in ["p50", "p99"] {
        assert!(
            report["wake_latency"]["percentiles"][p]["device_us"].is_number(),
            "{report}"
        );
    }
    // The wake-up is measured in interleaved reps too, each a p50 ratio, judged by the goal.
    let wake = &report["wake_latency"];
    assert_eq!(wake["reps"], 3, "{report}");
    assert_eq!(wake["samples"], 18, "{report}");
    let ratios = wake["p50_ratio_per_rep_sorted"].as_array().expect("ratios");
    assert_eq!(ratios.len(), 3, "{report}");
    assert_eq!(wake["p50_ratio_median"], ratios[1], "{report}");
    assert_eq!(wake["goal_max_p50_ratio"], 1.5, "{report}");
    // What each waiter spent of its own CPU per wake-up (the device's re-arm included), which
    // decides how often a shared core runs it at once: both sides, measured.
    for side in ["device", "peer"] {
        let cpu = &wake["waiter_cpu_us_per_wakeup"][side];
        assert!(cpu.as_f64().is_some_and(|us| us > 0.0), "{side}: {report}");
    }
    assert_eq!(
        wake["goal_met"].as_bool(),
        Some(ratios[1].as_f64().unwrap() <= 1.5),
        "{report}"
    );
}

#[test]
fn the_bench_table_labels_its_ratio_as_a_median_of_per_rep_ratios() {
    if !usersim() {
        return;
    }
    let output = run(
        None,
        &[
            "bench",
            "--records",
            "2000",
            "--wakeups",
            "10",
            "--reps",
            "1",
            "--capacity",
            "64K",
        ],
    );
    assert!(output.status.success(), "{}", describe(&output));
    let table = text(&output.stdout);
    assert!(table.contains("median ratio"), "{table}");
    assert!(
        table.contains(
            "the median of each rep's device/in-process ratio, not the ratio of the two medians"
        ),
        "{table}"
    );
}
