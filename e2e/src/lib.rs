//! End-to-end tests of the pipeline live in `tests/`; this crate has no code of its own.
//! It is the one place that depends on several workload crates, which never depend on
//! each other.
