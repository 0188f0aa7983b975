//! Nothing but a home for the TLA+ model checks in `tests/tla_models.rs`: they check the
//! models in `models/ring_buffer/` with the `tla-checker` library. Run them with
//! `cargo test -p ringmap-models` (this crate is not a default member of the workspace, so
//! a plain `cargo test` does not build the checker).
