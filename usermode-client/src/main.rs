fn main() {
    eprintln!("ringmap: the device and its commands are not built yet (issue 3)");
    std::process::exit(2);
}
