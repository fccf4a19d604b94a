//! A throwaway OpenLDAP server (`slapd`) for the integration tests, the
//! benchmark and `scim2ldap dev`. Not part of the daemon: the daemon links
//! it only for `dev` (its cargo feature of that name), and
//! [`Slapd::daemon_config`] is the one place that writes a scim2ldap config
//! pointing at a server started here.
//!
//! Everything one server needs (config, mdb data, TLS material, logs) lives in
//! one directory, and it listens on 127.0.0.1 only. slapd runs in the
//! foreground as a direct child of this process: its PID cannot be recycled
//! before we reap it, so signals always reach the right process.
//!
//! Requires the Debian packages `slapd` (and `openssl` for LDAPS). Readiness is
//! checked with a raw LDAP bind, so the harness itself does not need
//! `ldap-utils`, but tests usually do.
//!
//! The modules:
//! - `slapd`: [`Slapd`], the server's lifetime (start, readiness, stop,
//!   restart).
//! - `config`: [`SlapdOptions`], slapd.conf, schemas, the rootpw hash, the
//!   base entries.
//! - `daemon_config`: [`DaemonConfig`] and the one writer of a scim2ldap
//!   config for any server here.
//! - `tls`: the throwaway CA and server certificate for LDAPS.
//! - `probe`: readiness by an anonymous LDAP bind (raw BER).
//! - `process`: watchdog, signals, free ports, temp dirs, file helpers.
//! - [`dirsrv`], [`samba`]: 389 DS and Samba AD, set up by scripts
//!   (`scripted`: what those two share).

mod config;
mod daemon_config;
pub mod dirsrv;
mod probe;
mod process;
pub mod samba;
mod scripted;
mod slapd;
mod tls;

pub use config::SlapdOptions;
pub use daemon_config::DaemonConfig;
pub use dirsrv::Dirsrv;
pub use samba::SambaAd;
pub use slapd::Slapd;
