//! The one writer of a scim2ldap config (TOML) for a server started by this
//! crate: [`DaemonConfig`] (what the caller adds: comment, listen address,
//! token, extra lines) and [`write_daemon_config`], behind each server's
//! `daemon_config` (slapd, 389 DS, Samba AD).
//!
//! Knows the config file's layout only; nothing of any server, its
//! processes or its ports (each server passes its URL, bind DN, password
//! and its own `[ldap]` lines).

use std::fmt::Write as _;

/// What [`crate::Slapd::daemon_config`] needs besides the server itself.
/// `Default` gives a config listening on a free port (`127.0.0.1:0`).
#[derive(Debug, Clone, Copy)]
pub struct DaemonConfig<'a> {
    /// Comment lines at the top of the file (without `#`).
    pub comment: &'a str,
    /// `server.listen`.
    pub listen: &'a str,
    /// Name of the one `[[tokens]]` entry (shown in logs).
    pub token_name: &'a str,
    /// SHA-256 of the bearer token, hex (`TokenHash::to_hex`).
    pub token_sha256: &'a str,
    /// Extra `key = value` lines for `[server]`, `[store]` and `[ldap]`.
    pub server: &'a str,
    pub store: &'a str,
    pub ldap: &'a str,
}

impl Default for DaemonConfig<'_> {
    fn default() -> Self {
        DaemonConfig {
            comment: "",
            listen: "127.0.0.1:0",
            token_name: "test",
            token_sha256: "",
            server: "",
            store: "",
            ldap: "",
        }
    }
}

/// Extra config lines, each ending in a newline.
fn lines(extra: &str) -> String {
    extra
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The one writer of a daemon config (TOML) for a server started here:
/// the mapping in `mapping.toml` and the store in `state`, both beside the
/// config file, one bearer token given by its SHA-256 (hex). `ldap_extra`
/// are the server's own `[ldap]` lines (CA, stable id), before the caller's.
pub(crate) fn write_daemon_config(
    c: &DaemonConfig,
    url: &str,
    bind_dn: &str,
    password: &str,
    base_dn: &str,
    ldap_extra: &str,
) -> String {
    let mut t = String::new();
    if !c.comment.is_empty() {
        for line in c.comment.lines() {
            let _ = writeln!(t, "# {line}");
        }
    }
    let _ = write!(
        t,
        "mapping = \"mapping.toml\"\n\n[server]\nlisten = \"{}\"\n{}\n\
         [store]\npath = \"state\"\n{}\n\
         [ldap]\nurl = \"{}\"\nbind_dn = \"{}\"\nbind_password = \"{}\"\nbase_dn = \"{}\"\n{}{}\n\
         [[tokens]]\nname = \"{}\"\nsha256 = \"{}\"\n",
        c.listen,
        lines(c.server),
        lines(c.store),
        url,
        bind_dn,
        password,
        base_dn,
        lines(ldap_extra),
        lines(c.ldap),
        c.token_name,
        c.token_sha256,
    );
    t
}
