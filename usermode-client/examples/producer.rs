//! Writes records to a ringmap device: each argument is one record (or `hello` and `world` if
//! there are none). On Linux the device is the usersim one at `$RINGMAP_SOCKET` (or the
//! default path, see `ringmap help`); on Windows the installed driver.
//!
//! ```sh
//! ringmap serve &
//! cargo run -p ringmap-client --example producer -- one two three
//! ```

use ringmap_client::{Device, Error};

fn main() -> Result<(), Error> {
    let device = Device::open()?;
    let mut records: Vec<String> = std::env::args().skip(1).collect();
    if records.is_empty() {
        records = vec!["hello".into(), "world".into()];
    }
    for record in &records {
        let offset = device.write(record.as_bytes())?;
        println!("wrote {} bytes at offset {offset}", record.len());
    }
    Ok(())
}
