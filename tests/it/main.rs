//! Integration tests: one binary (link time matters), one module per area.
//! Each test starts its own slapd and daemon through `harness`.

mod adopt;
mod bounded;
mod coalesce;
mod concurrency;
mod crash;
mod crash_windows;
mod directories;
mod documented;
mod edge;
mod groups;
mod harness;
mod journal;
mod layering;
mod loud;
mod mixed;
mod ops;
mod passwords;
mod patch_trust;
mod presets;
mod protocol;
mod safety;
mod service;
mod slapd;
mod status;
mod users;
mod wire;
