//! Reads records from a ringmap device through the mapping, the way a libbpf user drives
//! `ring_buffer__poll`: `poll` waits (here at most a second) until the record at the
//! consumer's position is committed, then hands each committed record to the callback.
//! Stops after the number of records given as the first argument (default 10), or after a
//! second with nothing new. The space of every record handled goes back to the device.
//!
//! ```sh
//! ringmap serve &
//! cargo run -p ringmap-client --example producer -- a b c
//! cargo run -p ringmap-client --example consumer -- 3
//! ```

use std::ops::ControlFlow;
use std::time::Duration;

use ringmap_client::{Device, Error};

fn main() -> Result<(), Error> {
    let wanted: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("the number of records to read"))
        .unwrap_or(10);
    let device = Device::open()?;
    let mut mapping = device.map()?;
    let mut seen = 0;
    while seen < wanted {
        let handled = mapping.poll(Some(Duration::from_secs(1)), |record| {
            if seen == wanted {
                // Not handled: its space stays, and the next consumer gets it.
                return ControlFlow::Break(());
            }
            println!(
                "offset {}: {}",
                record.offset(),
                String::from_utf8_lossy(&record)
            );
            seen += 1;
            ControlFlow::Continue(())
        })?;
        if handled == 0 {
            break; // nothing for a second
        }
    }
    eprintln!("read {seen} records");
    Ok(())
}
