//! Integration tests: one binary (link time matters), one module per area.
//! Each test starts its own slapd and daemon through `harness`.

mod harness;
mod layering;
mod protocol;
mod slapd;
mod users;
