//! A throwaway 389 Directory Server for the integration tests: one
//! instance in its own temp directory, listening on 127.0.0.1 only,
//! created with `dscreate` by `scripts/dirsrv.sh` (see there for what is
//! set up). Creating an instance takes about 4 s on a quiet machine, so
//! tests share one per process ([`Dirsrv::shared`]) and keep apart by the
//! entries they create.
//!
//! Requires the Debian package `389-ds-base` (and `ldap-utils`, `python3`):
//! `scripts/install-deps.sh` installs them.

use std::io;
use std::path::Path;
use std::sync::OnceLock;

use crate::daemon_config::{write_daemon_config, DaemonConfig};
use crate::scripted::{require, shared, Scripted, SharedResult};

const SCRIPT: &str = include_str!("../scripts/dirsrv.sh");
const INSTALL_HINT: &str =
    "389 DS is not installed: run scripts/install-deps.sh (apt-get install 389-ds-base ldap-utils)";
const SUFFIX: &str = "dc=example,dc=com";
/// 389 DS wants at least 8 characters for the Directory Manager.
const PASSWORD: &str = "secret123";

/// A running 389 DS; dropping it stops the server and removes its files.
#[derive(Debug)]
pub struct Dirsrv {
    server: Scripted,
    port: u16,
}

impl Dirsrv {
    /// Creates and starts a new instance (about 4 s).
    pub fn start() -> io::Result<Dirsrv> {
        require(
            &[
                "/usr/sbin/ns-slapd",
                "dscreate",
                "ldapsearch",
                "ldapadd",
                "/usr/bin/python3",
            ],
            INSTALL_HINT,
        )?;
        let (server, ports) = Scripted::start("dirsrv", SCRIPT, 1, &[PASSWORD, SUFFIX])?;
        Ok(Dirsrv {
            server,
            port: ports[0],
        })
    }

    /// The one instance of this process, started by the first caller (the
    /// others wait for it). It is never dropped: its watchdog stops it and
    /// removes its files when the process ends. `ErrorKind::NotFound` when
    /// 389 DS is not installed (the message says how to install it).
    pub fn shared() -> io::Result<&'static Dirsrv> {
        static SHARED: OnceLock<SharedResult<Dirsrv>> = OnceLock::new();
        shared(&SHARED, Dirsrv::start)
    }

    /// `ldap://127.0.0.1:PORT`
    pub fn uri(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn suffix(&self) -> &str {
        SUFFIX
    }

    pub fn bind_dn(&self) -> String {
        "cn=Directory Manager".to_string()
    }

    pub fn password(&self) -> &str {
        PASSWORD
    }

    pub fn people_dn(&self) -> String {
        format!("ou=people,{SUFFIX}")
    }

    pub fn groups_dn(&self) -> String {
        format!("ou=groups,{SUFFIX}")
    }

    /// The instance's files: `log/slapd-test/{errors,access}` for its logs.
    pub fn dir(&self) -> &Path {
        self.server.dir()
    }

    /// PID of ns-slapd.
    pub fn pid(&self) -> u32 {
        self.server.pid()
    }

    /// A scim2ldap config for this server (see [`crate::Slapd::daemon_config`]),
    /// with `base_dn` as the naming context the daemon works in.
    pub fn daemon_config(&self, c: &DaemonConfig, base_dn: &str) -> String {
        write_daemon_config(
            c,
            &self.uri(),
            &self.bind_dn(),
            PASSWORD,
            base_dn,
            "uuid_attribute = \"entryUUID\"",
        )
    }
}
