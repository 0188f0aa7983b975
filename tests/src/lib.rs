//! End-to-end tests of ringmap (in `tests/`).
