//! Integration tests: one binary (link time matters), one module per area.
//! Each test starts its own slapd and daemon through `harness`.

mod groups;
mod harness;
mod layering;
mod slapd;
mod users;
