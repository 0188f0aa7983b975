//! Consistency of the Windows driver's files with each other and with `ringmap-core`, checked
//! on Linux (where the driver cannot be built): the INX, `Makefile.toml`, `driver/Cargo.toml`,
//! the driver's sources and `core/src/abi.rs` are read as text and must agree on the binary and
//! service names, the KMDF version, the device names, the interface GUID, the IOCTL codes, the
//! request and reply sizes, the device security and the ring capacity.

use std::fs;
use std::path::{Path, PathBuf};

use ringmap_core::abi::{
    self, EmptyRequest, GenerateReply, GenerateRequest, MapReply, QueryReply, QueryRequest,
    Request, StatsReply, Wire, WriteReply, WriteRequest,
};
use ringmap_core::layout::{Capacity, DEFAULT_CAPACITY};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    let path = root().join(path);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn toml_file(path: &str) -> toml::Table {
    read(path)
        .parse()
        .unwrap_or_else(|e| panic!("{path} is not valid TOML: {e}"))
}

fn get<'a>(table: &'a toml::Table, dotted: &str) -> &'a toml::Value {
    let mut keys = dotted.split('.');
    let first = keys.next().unwrap();
    let mut value = table
        .get(first)
        .unwrap_or_else(|| panic!("missing key {dotted}"));
    for key in keys {
        value = value
            .get(key)
            .unwrap_or_else(|| panic!("missing key {dotted} (at {key})"));
    }
    value
}

/// The INX as `(section, lines)`, comments and blank lines removed, section names lowercased.
fn inx() -> Vec<(String, Vec<String>)> {
    let mut sections: Vec<(String, Vec<String>)> = Vec::new();
    for line in read("driver/ringmap_driver.inx").lines() {
        let line = strip_inf_comment(line).trim().to_string();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') && line.ends_with(']') {
            sections.push((line[1..line.len() - 1].to_ascii_lowercase(), Vec::new()));
        } else if let Some((_, lines)) = sections.last_mut() {
            lines.push(line);
        }
    }
    sections
}

/// Removes an INF comment (`;` outside double quotes).
fn strip_inf_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ';' if !quoted => return &line[..i],
            _ => {}
        }
    }
    line
}

fn section(inx: &[(String, Vec<String>)], name: &str) -> Vec<String> {
    inx.iter()
        .find(|(n, _)| n == &name.to_ascii_lowercase())
        .map(|(_, lines)| lines.clone())
        .unwrap_or_else(|| panic!("INX has no [{name}] section"))
}

/// `key = value` in an INX section (first match, case-insensitive key).
fn directive(inx: &[(String, Vec<String>)], name: &str, key: &str) -> String {
    section(inx, name)
        .iter()
        .find_map(|line| {
            let (k, v) = line.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case(key)
                .then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("INX [{name}] has no {key}"))
}

/// The `HKR,,<name>,<flags>,<value>` lines of the INX, as name -> (flags, value).
fn hkr_values(inx: &[(String, Vec<String>)]) -> Vec<(String, String, String)> {
    inx.iter()
        .flat_map(|(_, lines)| lines.iter())
        .filter_map(|line| {
            let fields: Vec<&str> = line.splitn(5, ',').map(str::trim).collect();
            (fields.len() == 5 && fields[0].eq_ignore_ascii_case("HKR") && fields[1].is_empty())
                .then(|| {
                    (
                        fields[2].to_string(),
                        fields[3].to_string(),
                        fields[4].trim_matches('"').to_string(),
                    )
                })
        })
        .collect()
}

fn hkr(inx: &[(String, Vec<String>)], name: &str) -> (String, String) {
    hkr_values(inx)
        .into_iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, flags, value)| (flags, value))
        .unwrap_or_else(|| panic!("INX sets no HKR,,{name}"))
}

fn parse_number(text: &str) -> u64 {
    let text = text.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    }
    .unwrap_or_else(|e| panic!("{text:?} is not a number: {e}"))
}

/// Every `driver/src/*.rs`, as (file name, text without `//` comments).
fn driver_sources() -> Vec<(String, String)> {
    let dir = root().join("driver/src");
    let mut files: Vec<(String, String)> = fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "rs"))
        .map(|path| {
            let text = fs::read_to_string(&path).unwrap();
            let code: String = text
                .lines()
                .map(|line| match line.find("//") {
                    Some(i) => &line[..i],
                    None => line,
                })
                .collect::<Vec<_>>()
                .join("\n");
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                code,
            )
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 5,
        "driver/src should hold lib, device, memory, platform and requests"
    );
    files
}

fn driver_code() -> String {
    driver_sources()
        .into_iter()
        .map(|(_, code)| code)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value of `const NAME: &str = "...";` in the driver's sources.
fn driver_str_const(name: &str) -> String {
    let code = driver_code();
    let start = code
        .find(&format!("const {name}: &str = \""))
        .unwrap_or_else(|| panic!("driver/src has no `const {name}: &str`"));
    let rest = &code[start..];
    let value = &rest[rest.find('"').unwrap() + 1..];
    value[..value.find('"').unwrap()].to_string()
}

/// The crate's name as a file name (what wdk-build names the .sys, .inf, .cat and package).
fn driver_file_stem() -> String {
    let cargo = toml_file("driver/Cargo.toml");
    get(&cargo, "package.name")
        .as_str()
        .unwrap()
        .replace('-', "_")
}

#[test]
fn binary_and_package_names_agree() {
    let stem = driver_file_stem();
    assert_eq!(stem, "ringmap_driver");
    let cargo = toml_file("driver/Cargo.toml");
    let crate_types: Vec<&str> = get(&cargo, "lib.crate-type")
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        crate_types,
        ["cdylib"],
        "a driver is a cdylib (renamed .sys)"
    );
    // The usersim server links the very same sources, as a library.
    let usersim = toml_file("driver/usersim/Cargo.toml");
    assert_eq!(get(&usersim, "lib.path").as_str(), Some("../src/lib.rs"));
    assert_eq!(get(&usersim, "lib.name").as_str(), Some("ringmap_driver"));
    // The kernel has no unwinder: the profiles abort on panic, with the static C runtime
    // wdk-build demands.
    let workspace = toml_file("Cargo.toml");
    for profile in ["dev", "release"] {
        assert_eq!(
            get(&workspace, &format!("profile.{profile}.panic")).as_str(),
            Some("abort"),
            "{profile}"
        );
    }
    let config = toml_file(".cargo/config.toml");
    let flags: Vec<&str> =
        config["target"]["cfg(all(windows, target_env = \"msvc\"))"]["rustflags"]
            .as_array()
            .expect("rustflags for Windows MSVC targets")
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
    assert!(
        flags
            .windows(2)
            .any(|pair| pair == ["-C", "target-feature=+crt-static"]),
        "{flags:?}"
    );

    // wdk-build copies <crate dir>/<file stem>.inx: the INX must be named after the crate.
    assert!(root().join(format!("driver/{stem}.inx")).is_file());
    let inx = inx();
    let sys = format!("{stem}.sys");
    assert_eq!(
        directive(&inx, "Version", "CatalogFile"),
        format!("{stem}.cat")
    );
    assert!(
        section(&inx, "SourceDisksFiles")
            .iter()
            .any(|line| line.split('=').next().unwrap().trim() == sys),
        "[SourceDisksFiles] lists {sys}"
    );
    let install = directive(&inx, "RingMap_Device.NT", "CopyFiles");
    assert!(
        section(&inx, &install).iter().any(|line| line == &sys),
        "[{install}] copies {sys}"
    );

    // One service: the one AddService installs, the one KMDF binds, running our binary.
    let add_service = directive(&inx, "RingMap_Device.NT.Services", "AddService");
    let fields: Vec<&str> = add_service.split(',').map(str::trim).collect();
    let (service, service_section) = (fields[0], fields[2]);
    let kmdf_service = directive(&inx, "RingMap_Device.NT.Wdf", "KmdfService");
    assert_eq!(kmdf_service.split(',').next().unwrap().trim(), service);
    assert_eq!(
        directive(&inx, service_section, "ServiceBinary"),
        format!("%13%\\{sys}")
    );
    assert_eq!(
        parse_number(&directive(&inx, service_section, "ServiceType")),
        1,
        "SERVICE_KERNEL_DRIVER"
    );

    // The install script installs this package.
    let install_script = read("scripts/install.ps1");
    assert!(install_script.contains(&format!("'{stem}.inf'")));
    assert!(install_script.contains(&format!("{stem}_package")));
}

#[test]
fn kmdf_version_is_1_33_everywhere() {
    let cargo = toml_file("driver/Cargo.toml");
    let model = get(&cargo, "package.metadata.wdk.driver-model");
    assert_eq!(model.get("driver-type").unwrap().as_str(), Some("KMDF"));
    let major = model
        .get("kmdf-version-major")
        .unwrap()
        .as_integer()
        .unwrap();
    let minor = model
        .get("target-kmdf-version-minor")
        .unwrap()
        .as_integer()
        .unwrap();
    assert_eq!((major, minor), (1, 33));

    // stampinf replaces $KMDFVERSION$ with the Cargo metadata's version (wdk-build's
    // `stampinf -k`); a literal version must be the same one.
    let inx = inx();
    let section_name = directive(&inx, "RingMap_Device.NT.Wdf", "KmdfService")
        .split(',')
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    let library = directive(&inx, &section_name, "KmdfLibraryVersion");
    assert!(
        library == "$KMDFVERSION$" || library == format!("{major}.{minor}"),
        "KmdfLibraryVersion {library} disagrees with KMDF {major}.{minor}"
    );
    // KMDF 1.33 ships with Windows 10.0.20348 (Server 2022) / 10.0.22000 and later.
    let manufacturer = section(&inx, "Manufacturer").join("\n");
    assert!(manufacturer.contains("10.0...20348"), "{manufacturer}");
}

#[test]
fn makefile_and_cargo_use_one_wdk_build() {
    let makefile = toml_file("Makefile.toml");
    let members = get(&makefile, "env.CARGO_MAKE_WORKSPACE_INCLUDE_MEMBERS")
        .as_array()
        .unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].as_str(), Some("driver"));
    let extend = get(&makefile, "extend").as_array().unwrap();
    assert!(extend.iter().any(|e| {
        e.get("path").and_then(|p| p.as_str()) == Some("target/rust-driver-makefile.toml")
    }));

    // wdk-build's makefile refuses two wdk-build versions in one build: the load script's and
    // the driver's build dependency must be the same.
    let cargo = toml_file("driver/Cargo.toml");
    // Windows-only: on Linux the driver builds against wdk-usersim (driver/Cargo.toml).
    let windows = get(&cargo, "target.cfg(windows)").as_table().unwrap();
    let wdk_build = get(windows, "build-dependencies.wdk-build")
        .as_str()
        .unwrap();
    let script = get(&makefile, "config.windows_load_script")
        .as_str()
        .unwrap();
    assert!(
        script.contains(&format!("wdk-build = \"{wdk_build}\"")),
        "Makefile.toml's load script must use wdk-build {wdk_build}"
    );
    for krate in ["wdk", "wdk-sys", "wdk-alloc", "wdk-panic"] {
        assert!(
            get(windows, &format!("dependencies.{krate}")).is_str(),
            "driver depends on {krate}"
        );
    }
}

#[test]
fn names_and_guid_come_from_core() {
    assert_eq!(
        abi::NT_DEVICE_NAME,
        format!("\\Device\\{}", abi::DEVICE_NAME)
    );
    assert_eq!(
        abi::DOS_DEVICE_NAME,
        format!("\\DosDevices\\{}", abi::DEVICE_NAME)
    );
    assert_eq!(
        abi::WIN32_DEVICE_PATH,
        format!("\\\\.\\{}", abi::DEVICE_NAME)
    );

    let code = driver_code();
    for needle in [
        "abi::NT_DEVICE_NAME",
        "abi::DOS_DEVICE_NAME",
        "DEVICE_INTERFACE_GUID",
    ] {
        assert!(code.contains(needle), "driver/src must use {needle}");
    }
    let guid = abi::DEVICE_INTERFACE_GUID;
    for (file, code) in driver_sources() {
        let lower = code.to_ascii_lowercase();
        for literal in ["\\\\device\\\\", "\\\\dosdevices\\\\", "\\\\??\\\\"] {
            assert!(!lower.contains(literal), "{file}: a device path literal");
        }
        assert!(
            !code.contains(&format!("\"{}\"", abi::DEVICE_NAME)),
            "{file}: the device name as a literal"
        );
        let data1 = format!("{:x}", guid.data1);
        assert!(
            !lower.replace('_', "").contains(&data1),
            "{file}: a copy of the interface GUID"
        );
    }
}

/// `CTL_CODE` as devioctl.h defines it.
const fn ctl_code(device_type: u32, function: u32, method: u32, access: u32) -> u32 {
    (device_type << 16) | (access << 14) | (function << 2) | method
}

#[test]
fn ioctl_codes_follow_ctl_code() {
    const FILE_DEVICE_UNKNOWN: u32 = 0x22; // wdm.h / winioctl.h
    const METHOD_BUFFERED: u32 = 0;
    let mut seen = Vec::new();
    for (n, request) in Request::ALL.into_iter().enumerate() {
        let code = request.ioctl();
        let access = (code >> 14) & 3;
        assert!(access <= 2, "{request:?}: access {access}");
        assert_eq!(
            code,
            ctl_code(
                FILE_DEVICE_UNKNOWN,
                0x800 + n as u32,
                METHOD_BUFFERED,
                access
            ),
            "{request:?}"
        );
        assert_eq!(request as u32, n as u32);
        assert_eq!(Request::from_ioctl(code), Some(request));
        assert!(!seen.contains(&code));
        seen.push(code);
    }
    // Consuming needs read access, producing write access.
    assert_eq!((Request::Map.ioctl() >> 14) & 3, abi::FILE_READ_ACCESS);
    assert_eq!((Request::Query.ioctl() >> 14) & 3, abi::FILE_READ_ACCESS);
    assert_eq!((Request::Write.ioctl() >> 14) & 3, abi::FILE_WRITE_ACCESS);
    assert_eq!(Request::from_ioctl(ctl_code(0x22, 0x807, 0, 0)), None);

    // The INX's device type is the one in the codes.
    let (_, device_type) = hkr(&inx(), "DeviceType");
    assert_eq!(parse_number(&device_type) as u32, FILE_DEVICE_UNKNOWN);
    assert_eq!(abi::FILE_DEVICE_UNKNOWN, FILE_DEVICE_UNKNOWN);
}

/// Hex numbers in `text` that look like IOCTL codes of device type 0x22 (0x22xxxx).
fn ioctl_like_literals(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i + 2 < bytes.len() {
        if bytes[i] == b'0' && (bytes[i + 1] == b'x' || bytes[i + 1] == b'X') {
            let digits: String = text[i + 2..]
                .chars()
                .take_while(|c| c.is_ascii_hexdigit() || *c == '_')
                .filter(|c| *c != '_')
                .collect();
            if let Ok(value) = u64::from_str_radix(&digits, 16)
                && value >> 16 == 0x22
                && digits.len() >= 6
            {
                found.push(format!("0x{digits}"));
            }
            i += 2 + digits.len();
        } else {
            i += 1;
        }
    }
    found
}

#[test]
fn driver_and_client_take_ioctl_codes_from_core() {
    let code = driver_code();
    assert!(
        code.contains("Request::from_ioctl"),
        "driver decodes with abi"
    );
    assert!(
        code.contains("Request::Map.ioctl()"),
        "MAP is recognised by abi"
    );
    for (file, code) in driver_sources() {
        assert_eq!(ioctl_like_literals(&code), Vec::<String>::new(), "{file}");
        assert!(
            !code.contains("ctl_code("),
            "{file}: computes its own IOCTL codes"
        );
    }
    let client = read("usermode-client/src/backend/windows.rs");
    assert!(
        client.contains("ringmap_core::abi"),
        "client uses ringmap_core::abi"
    );
    assert!(
        client.contains(".ioctl()"),
        "client takes codes from Request::ioctl"
    );
    assert_eq!(ioctl_like_literals(&client), Vec::<String>::new());
    assert_eq!(
        ioctl_like_literals("0x0022_2000 0x222004 0x800"),
        ["0x00222000", "0x222004"]
    );
}

#[test]
fn request_and_reply_sizes_are_fixed() {
    fn check<T: Wire>(expected: u32) {
        assert_eq!(T::SIZE, expected, "{}", std::any::type_name::<T>());
        assert_eq!(size_of::<T>(), expected as usize);
        assert!(align_of::<T>() <= 8);
    }
    // The ABI between the driver and the client: changing a size is a breaking change.
    check::<EmptyRequest>(8);
    check::<MapReply>(48);
    check::<QueryRequest>(16);
    check::<QueryReply>(32);
    check::<WriteRequest>(16);
    check::<WriteReply>(16);
    check::<StatsReply>(120);
    check::<GenerateRequest>(32);
    check::<GenerateReply>(8);
    // The driver's local reply and input buffers are sized from these same structs.
    let code = driver_code();
    for name in [
        "MapReply::SIZE",
        "QueryReply::SIZE",
        "StatsReply::SIZE",
        "GenerateRequest::SIZE",
    ] {
        assert!(
            code.contains(name),
            "driver/src sizes its buffers with {name}"
        );
    }
}

#[test]
fn device_security_and_capacity_agree() {
    let inx = inx();
    // SYSTEM and Administrators only, in the INX and in WdfDeviceInitAssignSDDLString.
    let (_, security) = hkr(&inx, "Security");
    assert_eq!(security, "D:P(A;;GA;;;SY)(A;;GA;;;BA)");
    assert_eq!(driver_str_const("SDDL"), security);
    let (_, characteristics) = hkr(&inx, "DeviceCharacteristics");
    assert_eq!(
        parse_number(&characteristics),
        0x100,
        "FILE_DEVICE_SECURE_OPEN"
    );
    assert!(driver_code().contains("FILE_DEVICE_SECURE_OPEN"));

    // The capacity the INX writes is the value the driver reads, and a valid capacity.
    let value_name = driver_str_const("RING_CAPACITY_VALUE");
    let (flags, value) = hkr(&inx, &value_name);
    assert_eq!(
        parse_number(&flags) & 0x0001_0001,
        0x0001_0001,
        "FLG_ADDREG_TYPE_DWORD: read with WdfRegistryQueryULong"
    );
    let capacity = parse_number(&value);
    let valid =
        Capacity::new(capacity).unwrap_or_else(|e| panic!("INX RingCapacity {capacity}: {e}"));
    assert_eq!(
        valid.bytes(),
        DEFAULT_CAPACITY,
        "the INX default is core's default"
    );
    assert!(driver_code().contains("Capacity::new"));
    assert!(driver_code().contains("Capacity::DEFAULT"));
}

#[test]
fn every_unsafe_in_the_driver_says_why() {
    // Each `unsafe {` / `unsafe impl` in driver/src has a `// SAFETY:` comment on its line or in
    // the comment/code lines just above it (up to a blank line).
    let dir = root().join("driver/src");
    let mut missing = Vec::new();
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let code = line.split("//").next().unwrap();
            let opens = code.contains("unsafe {") || code.contains("unsafe impl");
            if !opens {
                continue;
            }
            let explained = (0..=i)
                .rev()
                .take(8)
                .take_while(|&j| j == i || !lines[j].trim().is_empty())
                .any(|j| lines[j].contains("SAFETY:"));
            if !explained {
                missing.push(format!("{}:{}", path.display(), i + 1));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "unsafe without a SAFETY comment: {missing:?}"
    );
}
