//! A throwaway Samba Active Directory domain controller for the integration
//! tests: a domain `EXAMPLE.COM` (`DC=example,DC=com`) provisioned into its
//! own temp directory by `scripts/samba-ad.sh`, reachable over LDAPS on
//! 127.0.0.1 with a throwaway CA ([`SambaAd::ca_cert`]). Provisioning takes
//! 5–10 s, so tests share one per process ([`SambaAd::shared`]).
//!
//! Samba's LDAP ports are fixed (389/636), so it runs in a network
//! namespace of its own behind socat relays: that needs root. Simple binds
//! are accepted over TLS only, as on a hardened AD.
//!
//! Requires the Debian packages `samba samba-ad-provision
//! samba-dsdb-modules socat` (and `ldap-utils`, `openssl`, `iproute2`):
//! `scripts/install-deps.sh` installs them.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::daemon_config::{write_daemon_config, DaemonConfig};
use crate::scripted::{require, shared, Scripted, SharedResult};

const SCRIPT: &str = include_str!("../scripts/samba-ad.sh");
const INSTALL_HINT: &str = "Samba AD is not installed: run scripts/install-deps.sh \
     (apt-get install samba samba-ad-provision samba-dsdb-modules socat ldb-tools ldap-utils)";
const SUFFIX: &str = "DC=example,DC=com";
const REALM: &str = "EXAMPLE.COM";
const DOMAIN: &str = "EXAMPLE";
/// Meets AD's default complexity rules (3 of 4 classes, 7+ characters).
const PASSWORD: &str = "Passw0rd!Test";

/// A running Samba AD DC; dropping it stops samba and its relays and
/// removes its files.
#[derive(Debug)]
pub struct SambaAd {
    server: Scripted,
    port: u16,
    ldaps_port: u16,
}

impl SambaAd {
    /// Provisions a domain and starts it (5–10 s). `ErrorKind::NotFound`
    /// when Samba is not installed, `PermissionDenied` when not root.
    pub fn start() -> io::Result<SambaAd> {
        require(
            &[
                "samba",
                "samba-tool",
                "socat",
                "unshare",
                "ip",
                "openssl",
                "ldapsearch",
                "ldapadd",
                "/usr/share/samba/setup",
            ],
            INSTALL_HINT,
        )?;
        if !running_as_root() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the Samba AD fixture needs root (samba binds 389/636 inside a network namespace of its own, made with unshare -n)",
            ));
        }
        let (server, ports) = Scripted::start("samba-ad", SCRIPT, 2, &[PASSWORD, REALM, DOMAIN])?;
        Ok(SambaAd {
            server,
            port: ports[0],
            ldaps_port: ports[1],
        })
    }

    /// The one instance of this process, started by the first caller (the
    /// others wait for it); stopped by its watchdog when the process ends.
    pub fn shared() -> io::Result<&'static SambaAd> {
        static SHARED: OnceLock<SharedResult<SambaAd>> = OnceLock::new();
        shared(&SHARED, SambaAd::start)
    }

    /// `ldaps://127.0.0.1:PORT`; verify with [`SambaAd::ca_cert`].
    pub fn ldaps_uri(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.ldaps_port)
    }

    /// `ldap://127.0.0.1:PORT`: simple binds are refused here (strong
    /// authentication required), as on a hardened AD.
    pub fn uri(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// The CA that signed the server's certificate (SAN 127.0.0.1).
    pub fn ca_cert(&self) -> PathBuf {
        self.server.dir().join("tls").join("ca.crt")
    }

    pub fn suffix(&self) -> &str {
        SUFFIX
    }

    pub fn bind_dn(&self) -> String {
        format!("CN=Administrator,CN=Users,{SUFFIX}")
    }

    pub fn password(&self) -> &str {
        PASSWORD
    }

    pub fn people_dn(&self) -> String {
        format!("OU=people,{SUFFIX}")
    }

    pub fn groups_dn(&self) -> String {
        format!("OU=groups,{SUFFIX}")
    }

    /// The domain's files; samba's log is `log/samba.out`.
    pub fn dir(&self) -> &Path {
        self.server.dir()
    }

    /// PID of the root samba process.
    pub fn pid(&self) -> u32 {
        self.server.pid()
    }

    /// A scim2ldap config for this server over LDAPS with its CA and
    /// objectGUID as the stable id, `base_dn` as the naming context the
    /// daemon works in.
    pub fn daemon_config(&self, c: &DaemonConfig, base_dn: &str) -> String {
        write_daemon_config(
            c,
            &self.ldaps_uri(),
            &self.bind_dn(),
            PASSWORD,
            base_dn,
            &format!(
                "ca_file = \"{}\"\nuuid_attribute = \"objectGUID\"",
                self.ca_cert().display()
            ),
        )
    }
}

/// The effective uid from /proc/self/status is 0 (std has no geteuid
/// without `unsafe`).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}
