//! `include/ringmap.h` is exactly what cbindgen makes of `src/lib.rs` with `cbindgen.toml`:
//! the header cannot drift from the code. `RINGMAP_BLESS=1` rewrites it.

use std::path::Path;

#[test]
fn the_header_is_generated_from_the_code() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_config(config)
        .with_src(crate_dir.join("src/lib.rs"))
        .generate()
        .expect("cbindgen reads src/lib.rs")
        .write(&mut generated);
    let generated = String::from_utf8(generated).expect("a UTF-8 header");
    let path = crate_dir.join("include/ringmap.h");
    if std::env::var_os("RINGMAP_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write include/ringmap.h");
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "include/ringmap.h is not what cbindgen makes of src/lib.rs: run \
         `RINGMAP_BLESS=1 cargo test -p ringmap-capi --test header` and commit it"
    );
}
