//! `ringmap`: run, watch and measure a ringmap device (see `ringmap --help`).

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
