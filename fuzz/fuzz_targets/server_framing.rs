//! Bytes a client might send, cut into the pieces they arrive in, fed to one handle of the
//! driver through the server's framing: nothing panics, no kernel rule is broken, and the
//! handle's end and the unload leave nothing behind.
//!
//! The first byte picks the pieces' size (1 ..= 256); the rest is the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmap_core::Capacity;
use ringmap_usersim::server::{LoadedDriver, feed_connection};

fuzz_target!(|data: &[u8]| {
    let Some((&piece, stream)) = data.split_first() else {
        return;
    };
    let piece = usize::from(piece) + 1;
    let driver = LoadedDriver::load(Capacity::new(4 * 4096).unwrap()).expect("the driver loads");
    let chunks: Vec<&[u8]> = stream.chunks(piece).collect();
    feed_connection(&driver, &chunks).expect("a connection");
    let report = driver.unload();
    assert!(report.is_clean(), "{report}");
});
