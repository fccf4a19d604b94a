//! The daemon's configuration file (`config.toml`): where to listen, where
//! the store lives, how to reach the directory, which tokens are accepted
//! and where the mapping file is.
//!
//! Raw serde structs (unknown keys rejected) are kept apart from the
//! validated [`Config`] the rest of the daemon uses. Secrets never appear in
//! `Debug` output. Errors name the file, the line and the key.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::token::TokenHash;

/// A configuration problem, phrased for the administrator who must fix it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// A string that must not be logged: `Debug` prints `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What to do with a write while the directory cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WhenDirectoryDown {
    /// Acknowledge from the journal and deliver later (the default).
    Queue,
    /// Answer 503 with Retry-After, so the IdP retries.
    Reject,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from; relative paths inside it are resolved
    /// against its directory.
    pub file: PathBuf,
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub ldap: LdapConfig,
    pub mapping_file: PathBuf,
    pub tokens: Vec<TokenConfig>,
    pub log: LogConfig,
    /// The operational listener (`[operations]`).
    pub operations: OperationsConfig,
}

/// The operational listener: `/metrics`, `/readyz`, `/healthz` (and the
/// status page) on an address of their own, loopback by default, so that
/// nobody who reaches the SCIM port can read them.
#[derive(Debug, Clone)]
pub struct OperationsConfig {
    /// `None`: no operational listener (`listen = "off"`).
    pub listen: Option<SocketAddr>,
    /// True when the file set `listen`: failing to bind it stops the
    /// start-up. The default address (no `[operations]` section) is bound
    /// if free, with a warning otherwise.
    pub explicit: bool,
    /// A bearer token every operational endpoint but `/healthz` requires;
    /// mandatory when `listen` is not a loopback address.
    pub token: Option<TokenHash>,
}

/// The operational listener's address when the file names none (9464 is
/// the port commonly given to exporters of this kind).
pub const DEFAULT_OPERATIONS_LISTEN: &str = "127.0.0.1:9464";

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Prefix of every SCIM route, e.g. `/scim/v2`; no trailing slash.
    pub base_path: String,
    /// Absolute URL prefix (scheme, host, port; no path) used in
    /// `Location` and `meta.location`. The request's Host header is never
    /// used. `None` only when `listen` is a loopback address: the URL is
    /// then `http(s)://` and the address actually bound (see
    /// [`ServerConfig::public_url_for`]).
    pub public_url: Option<String>,
    /// Connections one peer address may hold open before any request on
    /// them carried a valid token (`/healthz` needs none, so a connection
    /// used only for it stays unauthenticated).
    pub max_unauthenticated_per_peer: usize,
    pub max_body_bytes: usize,
    /// How long a client may take to send its request headers.
    pub header_read_timeout: Duration,
    /// How long a client may take to send its request body.
    pub body_read_timeout: Duration,
    pub max_connections: usize,
    /// Most members one request may name (a group's POST / PUT body, or
    /// the member operations of one PATCH); more is 400 invalidValue.
    pub max_members_per_request: usize,
    /// Serve HTTPS with this PEM certificate chain and key (re-read on
    /// reload). `None`: plain HTTP, for use behind a TLS proxy.
    pub tls: Option<TlsFiles>,
}

/// Where the HTTPS certificate chain and private key are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub path: PathBuf,
    /// Applied journal entries older than this are compacted away (the
    /// latest snapshot of each resource is kept). `None`: keep everything.
    pub retention: Option<Duration>,
    /// Memory for the store's page cache, in bytes.
    pub cache_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct LdapConfig {
    pub url: String,
    pub bind_dn: String,
    pub bind_password: Secret,
    pub base_dn: String,
    pub timeout: Duration,
    pub when_down: WhenDirectoryDown,
    /// The directory's stable per-entry identifier: `entryUUID` (OpenLDAP,
    /// 389 DS), `objectGUID` (Active Directory), `ipaUniqueID` (FreeIPA).
    pub uuid_attribute: String,
    /// LDAP connections the writer applies changes over, in parallel
    /// across resources (each resource's changes stay in order).
    pub connections: usize,
    /// PEM file of the CA certificates that sign the directory's
    /// certificate; `None`: the system's trust store.
    pub ca_file: Option<PathBuf>,
    /// Upgrade an `ldap://` connection with StartTLS.
    pub starttls: bool,
    /// Set by `serve --dry-run`, never by the file: log writes as LDIF
    /// instead of sending them.
    pub dry_run: bool,
}

#[derive(Debug, Clone)]
pub struct TokenConfig {
    /// Shown in logs so an administrator knows which client made a request.
    pub name: String,
    pub hash: TokenHash,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A `tracing` level or target list, e.g. `info` or `scim2ldap=debug,info`.
    pub level: String,
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable; without colours and timestamps under systemd.
    Text,
    /// One JSON object per line.
    Json,
}

// ---- raw structs: exactly the file's shape --------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: RawServer,
    store: RawStore,
    ldap: RawLdap,
    mapping: String,
    #[serde(default)]
    tokens: Vec<RawToken>,
    tokens_file: Option<String>,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    operations: RawOperations,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOperations {
    listen: Option<String>,
    token_sha256: Option<String>,
}

/// A file of `[[tokens]]` tables only (`tokens_file`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTokensFile {
    #[serde(default)]
    tokens: Vec<RawToken>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: String,
    #[serde(default = "default_base_path")]
    base_path: String,
    public_url: Option<String>,
    #[serde(default = "default_max_body")]
    max_body_bytes: usize,
    #[serde(default = "default_header_timeout")]
    header_read_timeout_secs: u64,
    #[serde(default = "default_body_timeout")]
    body_read_timeout_secs: u64,
    #[serde(default = "default_max_connections")]
    max_connections: usize,
    #[serde(default = "default_max_unauthenticated_per_peer")]
    max_unauthenticated_per_peer: usize,
    #[serde(default = "default_max_members")]
    max_members_per_request: usize,
    tls_cert: Option<String>,
    tls_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    path: String,
    #[serde(default = "default_retention")]
    retention_secs: u64,
    #[serde(default = "default_cache_mib")]
    cache_mib: u64,
}

fn default_cache_mib() -> u64 {
    crate::store::DEFAULT_CACHE_BYTES / (1024 * 1024)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLdap {
    url: String,
    bind_dn: String,
    bind_password: Option<String>,
    bind_password_file: Option<String>,
    base_dn: String,
    #[serde(default = "default_ldap_timeout")]
    timeout_secs: u64,
    #[serde(default = "default_when_down")]
    when_down: WhenDirectoryDown,
    #[serde(default = "default_uuid_attribute")]
    uuid_attribute: String,
    #[serde(default = "default_connections")]
    connections: usize,
    ca_file: Option<String>,
    #[serde(default)]
    starttls: bool,
    #[serde(default)]
    allow_plaintext: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: String,
    sha256: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: Option<String>,
    format: Option<LogFormat>,
}

fn default_base_path() -> String {
    "/scim/v2".into()
}
fn default_max_members() -> usize {
    20_000
}
fn default_max_body() -> usize {
    1024 * 1024
}
fn default_header_timeout() -> u64 {
    10
}
fn default_body_timeout() -> u64 {
    30
}
fn default_max_connections() -> usize {
    512
}
fn default_max_unauthenticated_per_peer() -> usize {
    32
}
fn default_retention() -> u64 {
    7 * 24 * 3600
}
fn default_ldap_timeout() -> u64 {
    10
}
fn default_connections() -> usize {
    4
}
fn default_uuid_attribute() -> String {
    "entryUUID".into()
}
fn default_when_down() -> WhenDirectoryDown {
    WhenDirectoryDown::Queue
}

impl Config {
    /// Reads and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: cannot read: {e}", path.display())))?;
        Config::parse(&text, path)
    }

    /// Validates configuration text; `path` names the file in errors and is
    /// the base for relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError(toml_error(&file, text, &e)))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let at = |key: &str, msg: String| {
            ConfigError(format!("{}: {key}: {msg}", locate(&file, text, key)))
        };

        let listen: SocketAddr = raw.server.listen.parse().map_err(|_| {
            at(
                "listen",
                format!(
                    "{:?} is not an address:port such as 0.0.0.0:8443",
                    raw.server.listen
                ),
            )
        })?;
        let base_path = raw.server.base_path.trim_end_matches('/').to_string();
        if !base_path.is_empty() && !base_path.starts_with('/') {
            return Err(at(
                "base_path",
                format!("{base_path:?} must start with '/'"),
            ));
        }
        if raw.server.max_body_bytes < 1024 {
            return Err(at("max_body_bytes", "must be at least 1024".into()));
        }
        if raw.server.max_members_per_request == 0 {
            return Err(at("max_members_per_request", "must be at least 1".into()));
        }
        if raw.server.max_connections == 0 {
            return Err(at("max_connections", "must be at least 1".into()));
        }
        if raw.server.max_unauthenticated_per_peer == 0 {
            return Err(at(
                "max_unauthenticated_per_peer",
                "must be at least 1".into(),
            ));
        }
        let public_url = match raw.server.public_url.as_deref() {
            Some(u) => Some(parse_public_url(u).map_err(|e| at("public_url", e))?),
            None if listen.ip().is_loopback() => None,
            None => {
                return Err(ConfigError(format!(
                    "{}: server.listen: {}",
                    locate_in(&file, text, "server", "listen"),
                    format_args!(
                        "server.public_url is not set: Location headers and meta.location need the \
                         URL clients use to reach this daemon (e.g. public_url = \"https://scim.example.com\"); \
                         without it only a loopback listen address is accepted (the URL is then \
                         derived from it), and the request's Host header is never used"
                    )
                )))
            }
        };
        let operations = operations_config(&raw.operations, &|key: &str, msg: String| {
            ConfigError(format!(
                "{}: operations.{key}: {msg}",
                locate_in(&file, text, "operations", key)
            ))
        })?;

        let bind_password = match (raw.ldap.bind_password, raw.ldap.bind_password_file) {
            (Some(p), None) => Secret::new(p),
            (None, Some(f)) => {
                let p = file_ref(&dir, &f).map_err(|e| at("bind_password_file", e))?;
                let s = std::fs::read_to_string(&p).map_err(|e| {
                    at(
                        "bind_password_file",
                        format!("cannot read {}: {e}", p.display()),
                    )
                })?;
                Secret::new(s.trim_end_matches(['\r', '\n']))
            }
            (Some(_), Some(_)) => {
                return Err(at(
                    "bind_password_file",
                    "set bind_password or bind_password_file, not both".into(),
                ))
            }
            (None, None) => Secret::new(""),
        };
        let url = raw.ldap.url.as_str();
        if !(url.starts_with("ldap://") || url.starts_with("ldaps://")) {
            return Err(at(
                "url",
                format!("{url:?} must start with ldap:// or ldaps://"),
            ));
        }
        if url.starts_with("ldaps://") && raw.ldap.starttls {
            return Err(at(
                "starttls",
                "ldaps:// is already TLS; StartTLS is for ldap:// URLs".into(),
            ));
        }
        if url.starts_with("ldap://")
            && !raw.ldap.starttls
            && !raw.ldap.allow_plaintext
            && !is_loopback_url(url)
        {
            return Err(at(
                "url",
                format!(
                    "{url:?} would send the bind password unencrypted: use ldaps://, \
                     or set starttls = true, or (on a trusted network only) allow_plaintext = true"
                ),
            ));
        }
        let ca_file = match &raw.ldap.ca_file {
            Some(f) => Some(file_ref(&dir, f).map_err(|e| at("ca_file", e))?),
            None => None,
        };
        let tls = match (&raw.server.tls_cert, &raw.server.tls_key) {
            (Some(c), Some(k)) => Some(TlsFiles {
                cert: file_ref(&dir, c).map_err(|e| at("tls_cert", e))?,
                key: file_ref(&dir, k).map_err(|e| at("tls_key", e))?,
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(at(
                    "tls_cert",
                    "tls_key must be set too (the certificate's private key)".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(at(
                    "tls_key",
                    "tls_cert must be set too (the certificate chain)".into(),
                ))
            }
        };

        let mut tokens = Vec::new();
        let mut add_token = |t: RawToken, at: &dyn Fn(&str, String) -> ConfigError| {
            let hash = TokenHash::parse(&t.sha256).map_err(|e| at("sha256", e))?;
            if tokens.iter().any(|o: &TokenConfig| o.name == t.name) {
                return Err(at("name", format!("token name {:?} is used twice", t.name)));
            }
            tokens.push(TokenConfig { name: t.name, hash });
            Ok(())
        };
        for t in raw.tokens {
            add_token(t, &at)?;
        }
        if let Some(f) = &raw.tokens_file {
            let p = file_ref(&dir, f).map_err(|e| at("tokens_file", e))?;
            let text = std::fs::read_to_string(&p)
                .map_err(|e| at("tokens_file", format!("cannot read {}: {e}", p.display())))?;
            let tfile = p.display().to_string();
            let raw: RawTokensFile =
                toml::from_str(&text).map_err(|e| ConfigError(toml_error(&tfile, &text, &e)))?;
            let at_t = |key: &str, msg: String| {
                ConfigError(format!("{}: {key}: {msg}", locate(&tfile, &text, key)))
            };
            for t in raw.tokens {
                add_token(t, &at_t)?;
            }
        }

        Ok(Config {
            file: path.to_path_buf(),
            server: ServerConfig {
                listen,
                base_path,
                public_url,
                max_unauthenticated_per_peer: raw.server.max_unauthenticated_per_peer,
                max_body_bytes: raw.server.max_body_bytes,
                header_read_timeout: Duration::from_secs(raw.server.header_read_timeout_secs),
                body_read_timeout: Duration::from_secs(raw.server.body_read_timeout_secs),
                max_connections: raw.server.max_connections,
                max_members_per_request: raw.server.max_members_per_request,
                tls,
            },
            store: StoreConfig {
                path: resolve(&dir, &raw.store.path),
                retention: (raw.store.retention_secs > 0)
                    .then(|| Duration::from_secs(raw.store.retention_secs)),
                cache_bytes: raw.store.cache_mib.max(1) * 1024 * 1024,
            },
            ldap: LdapConfig {
                url: raw.ldap.url,
                bind_dn: raw.ldap.bind_dn,
                bind_password,
                base_dn: raw.ldap.base_dn,
                timeout: Duration::from_secs(raw.ldap.timeout_secs.max(1)),
                when_down: raw.ldap.when_down,
                uuid_attribute: raw.ldap.uuid_attribute,
                connections: raw.ldap.connections.clamp(1, 64),
                ca_file,
                starttls: raw.ldap.starttls,
                dry_run: false,
            },
            mapping_file: resolve(&dir, &raw.mapping),
            tokens,
            log: LogConfig {
                level: raw.log.level.unwrap_or_else(|| "info".into()),
                format: raw.log.format.unwrap_or(LogFormat::Text),
            },
            operations,
        })
    }
}

impl ServerConfig {
    /// The absolute URL prefix of the SCIM endpoints (public URL and base
    /// path) for a daemon bound to `bound`: `public_url` when set, else
    /// derived from the (loopback) address actually bound.
    pub fn public_url_for(&self, bound: SocketAddr) -> String {
        match &self.public_url {
            Some(u) => format!("{u}{}", self.base_path),
            None => {
                let scheme = if self.tls.is_some() { "https" } else { "http" };
                format!("{scheme}://{bound}{}", self.base_path)
            }
        }
    }
}

/// Checks `server.public_url`: `http://` or `https://`, a host, no path,
/// query or fragment (the base path is `base_path`). Returns it without a
/// trailing slash.
fn parse_public_url(u: &str) -> Result<String, String> {
    let u = u.trim().trim_end_matches('/');
    let Some(rest) = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"))
    else {
        return Err(format!("{u:?} must start with https:// (or http://)"));
    };
    if rest.is_empty() {
        return Err(format!("{u:?} names no host"));
    }
    if rest.contains(['/', '?', '#', ' ', '@']) {
        return Err(format!(
            "{u:?}: give only the scheme, host and port (e.g. https://scim.example.com); \
             the path is server.base_path"
        ));
    }
    Ok(u.to_string())
}

fn operations_config(
    raw: &RawOperations,
    at: &dyn Fn(&str, String) -> ConfigError,
) -> Result<OperationsConfig, ConfigError> {
    let token = match &raw.token_sha256 {
        Some(h) => Some(TokenHash::parse(h).map_err(|e| at("token_sha256", e))?),
        None => None,
    };
    let (listen, explicit) = match raw.listen.as_deref() {
        Some("off") => (None, true),
        Some(l) => (
            Some(l.parse::<SocketAddr>().map_err(|_| {
                at(
                    "listen",
                    format!("{l:?} is not an address:port such as 127.0.0.1:9464 (or \"off\")"),
                )
            })?),
            true,
        ),
        None => (DEFAULT_OPERATIONS_LISTEN.parse().ok(), false),
    };
    if let Some(addr) = listen {
        if !addr.ip().is_loopback() && token.is_none() {
            return Err(at(
                "listen",
                format!(
                    "{addr} is not a loopback address: set operations.token_sha256 too \
                     (`scim2ldap token --name metrics` prints one), so that only your \
                     monitoring can read the metrics and the status"
                ),
            ));
        }
    }
    Ok(OperationsConfig {
        listen,
        explicit,
        token,
    })
}

/// A key naming a file: a path (relative to the config's folder), or
/// `credential:NAME`, a systemd credential (`LoadCredential=NAME:...`),
/// read from `$CREDENTIALS_DIRECTORY/NAME`.
fn file_ref(dir: &Path, value: &str) -> Result<PathBuf, String> {
    let Some(name) = value.strip_prefix("credential:") else {
        return Ok(resolve(dir, value));
    };
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(format!("{value:?}: a credential name is a plain file name"));
    }
    match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(d) => Ok(Path::new(&d).join(name)),
        None => Err(format!(
            "{value:?} names a systemd credential, but CREDENTIALS_DIRECTORY is not set \
             (run under systemd with LoadCredential={name}:FILE, or give a path)"
        )),
    }
}

/// Whether an `ldap://` URL points at this machine (127.0.0.0/8, ::1,
/// localhost), where an unencrypted connection never crosses a network.
fn is_loopback_url(url: &str) -> bool {
    let rest = url.trim_start_matches("ldap://");
    let hostport = rest.split('/').next().unwrap_or_default();
    let host = if let Some(v6) = hostport.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        hostport.rsplit_once(':').map_or(hostport, |(h, _)| h)
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn resolve(dir: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

/// `file:line:col: message` from a toml error, which carries the byte span
/// of the offending key or value.
pub fn toml_error(file: &str, text: &str, err: &toml::de::Error) -> String {
    match err.span() {
        Some(span) => {
            let (line, col) = line_col(text, span.start);
            format!("{file}:{line}:{col}: {}", err.message())
        }
        None => format!("{file}: {}", err.message()),
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// `file:line` of the first line that sets `key`, for errors found after
/// parsing (the raw structs do not keep spans for every key).
fn locate(file: &str, text: &str, key: &str) -> String {
    for (i, line) in text.lines().enumerate() {
        let l = line.trim_start();
        if let Some(rest) = l.strip_prefix(key) {
            if rest.trim_start().starts_with('=') {
                return format!("{file}:{}", i + 1);
            }
        }
    }
    file.to_string()
}

/// [`locate`] within one `[section]` of the file.
fn locate_in(file: &str, text: &str, section: &str, key: &str) -> String {
    let header = format!("[{section}]");
    let mut inside = false;
    for (i, line) in text.lines().enumerate() {
        let l = line.trim_start();
        if l.starts_with('[') {
            inside = l.trim_end() == header;
            continue;
        }
        if let Some(rest) = l.strip_prefix(key).filter(|_| inside) {
            if rest.trim_start().starts_with('=') {
                return format!("{file}:{}", i + 1);
            }
        }
    }
    file.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
mapping = "mapping.toml"
[server]
listen = "127.0.0.1:8080"
[store]
path = "state"
[ldap]
url = "ldap://127.0.0.1:389"
bind_dn = "cn=admin,dc=example,dc=com"
bind_password = "secret"
base_dn = "dc=example,dc=com"
"#;

    #[test]
    fn minimal_config_gets_defaults_and_relative_paths() {
        let c = Config::parse(MINIMAL, Path::new("/etc/scim2ldap/config.toml")).unwrap();
        assert_eq!(c.server.base_path, "/scim/v2");
        assert_eq!(c.store.path, Path::new("/etc/scim2ldap/state"));
        assert_eq!(c.mapping_file, Path::new("/etc/scim2ldap/mapping.toml"));
        assert_eq!(c.ldap.when_down, WhenDirectoryDown::Queue);
        assert_eq!(format!("{:?}", c.ldap.bind_password), "<redacted>");
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let text = MINIMAL.replace("[store]\n", "[store]\npaht = \"x\"\n");
        let e = Config::parse(&text, Path::new("c.toml")).unwrap_err().0;
        assert!(e.starts_with("c.toml:6:1:"), "{e}");
        assert!(e.contains("paht"), "{e}");
    }

    #[test]
    fn bad_listen_address_names_line() {
        let text = MINIMAL.replace("127.0.0.1:8080", "localhost");
        let e = Config::parse(&text, Path::new("c.toml")).unwrap_err().0;
        assert!(e.starts_with("c.toml:4: listen:"), "{e}");
    }

    #[test]
    fn retention_defaults_to_a_week_and_zero_keeps_everything() {
        let c = Config::parse(MINIMAL, Path::new("c.toml")).unwrap();
        assert_eq!(c.store.retention, Some(Duration::from_secs(7 * 24 * 3600)));
        let text = MINIMAL.replace("path = \"state\"", "path = \"state\"\nretention_secs = 0");
        let c = Config::parse(&text, Path::new("c.toml")).unwrap();
        assert_eq!(c.store.retention, None);
    }

    #[test]
    fn the_shipped_example_parses() {
        let text = include_str!("../config.example.toml");
        let c = Config::parse(text, Path::new("/etc/scim2ldap/config.toml")).unwrap();
        assert_eq!(c.store.retention, Some(Duration::from_secs(604800)));
    }

    #[test]
    fn debug_output_never_shows_the_password() {
        let c = Config::parse(MINIMAL, Path::new("c.toml")).unwrap();
        assert!(!format!("{c:?}").contains("secret\""));
    }

    const EXAMPLE: &str = include_str!("../config.example.toml");

    #[test]
    fn the_example_config_parses() {
        let c = Config::parse(EXAMPLE, Path::new("/etc/scim2ldap/config.toml")).unwrap();
        assert_eq!(c.tokens.len(), 1);
        assert!(c.server.tls.is_none());
        assert_eq!(c.log.format, LogFormat::Text);
    }

    /// A bogus key in each table (and at the top) of the example is refused
    /// with the file, the line of the bogus key, and its name.
    #[test]
    fn a_bogus_key_in_any_table_is_located() {
        let lines: Vec<&str> = EXAMPLE.lines().collect();
        let mut headers: Vec<usize> = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.starts_with('['))
            .map(|(i, _)| i)
            .collect();
        assert!(headers.len() >= 5, "{headers:?}");
        headers.insert(0, usize::MAX); // the top level: before the first line
        for h in headers {
            let mut edited: Vec<&str> = lines.clone();
            let at = if h == usize::MAX { 0 } else { h + 1 };
            edited.insert(at, "bogus_key = 1");
            let text = edited.join("\n");
            let e = Config::parse(&text, Path::new("c.toml")).unwrap_err().0;
            let want = format!("c.toml:{}:", at + 1);
            assert!(e.starts_with(&want), "{e} (expected {want})");
            assert!(e.contains("bogus_key"), "{e}");
        }
    }

    #[test]
    fn every_mapping_in_examples_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                if let Err(e) = crate::mapping::Mapping::parse(&text, &path.display().to_string()) {
                    panic!("{e}");
                }
                n += 1;
            }
        }
        assert!(n >= 3, "expected the presets in examples/, found {n}");
    }

    #[test]
    fn plain_ldap_needs_loopback_or_an_explicit_yes() {
        let remote = MINIMAL.replace("ldap://127.0.0.1:389", "ldap://ldap.example.com");
        let e = Config::parse(&remote, Path::new("c.toml")).unwrap_err().0;
        assert!(e.starts_with("c.toml:8: url:"), "{e}");
        let allowed = remote.replace("base_dn", "allow_plaintext = true\nbase_dn");
        assert!(Config::parse(&allowed, Path::new("c.toml")).is_ok());
        let starttls = remote.replace("base_dn", "starttls = true\nbase_dn");
        assert!(
            Config::parse(&starttls, Path::new("c.toml"))
                .unwrap()
                .ldap
                .starttls
        );
        for url in [
            "ldap://localhost",
            "ldap://[::1]:389",
            "ldap://127.0.0.2:3890/",
        ] {
            assert!(is_loopback_url(url), "{url}");
        }
        assert!(!is_loopback_url("ldap://10.0.0.1"));
        let ldaps = MINIMAL.replace("ldap://127.0.0.1:389", "ldaps://ldap.example.com");
        assert!(Config::parse(&ldaps, Path::new("c.toml")).is_ok());
    }

    #[test]
    fn credential_references_need_the_credentials_directory() {
        let dir = Path::new("/etc/x");
        assert_eq!(file_ref(dir, "pw").unwrap(), Path::new("/etc/x/pw"));
        assert!(file_ref(dir, "credential:../x").is_err());
        if std::env::var_os("CREDENTIALS_DIRECTORY").is_none() {
            let e = file_ref(dir, "credential:ldap-password").unwrap_err();
            assert!(e.contains("CREDENTIALS_DIRECTORY"), "{e}");
        }
    }

    #[test]
    fn public_url_is_required_unless_listen_is_loopback() {
        let c = Config::parse(MINIMAL, Path::new("c.toml")).unwrap();
        assert_eq!(c.server.public_url, None);
        assert_eq!(
            c.server.public_url_for("127.0.0.1:8080".parse().unwrap()),
            "http://127.0.0.1:8080/scim/v2"
        );
        let open = MINIMAL.replace("127.0.0.1:8080", "0.0.0.0:8443");
        let e = Config::parse(&open, Path::new("c.toml")).unwrap_err().0;
        assert!(e.starts_with("c.toml:4: server.listen:"), "{e}");
        assert!(e.contains("public_url"), "{e}");
        let set = open.replace(
            "[store]",
            "public_url = \"https://scim.example.com/\"\n[store]",
        );
        let c = Config::parse(&set, Path::new("c.toml")).unwrap();
        assert_eq!(
            c.server.public_url_for("0.0.0.0:8443".parse().unwrap()),
            "https://scim.example.com/scim/v2"
        );
        for bad in ["scim.example.com", "https://x/scim/v2", "https://"] {
            let t = open.replace("[store]", &format!("public_url = {bad:?}\n[store]"));
            let e = Config::parse(&t, Path::new("c.toml")).unwrap_err().0;
            assert!(e.starts_with("c.toml:5: public_url:"), "{bad}: {e}");
        }
    }

    #[test]
    fn operations_listener_defaults_to_loopback_and_needs_a_token_elsewhere() {
        let c = Config::parse(MINIMAL, Path::new("c.toml")).unwrap();
        assert_eq!(
            c.operations.listen,
            Some(DEFAULT_OPERATIONS_LISTEN.parse().unwrap())
        );
        assert!(!c.operations.explicit);
        assert!(c.operations.token.is_none());
        let off = format!("{MINIMAL}[operations]\nlisten = \"off\"\n");
        let c = Config::parse(&off, Path::new("c.toml")).unwrap();
        assert_eq!(c.operations.listen, None);
        // `listen` is located in [operations], not in [server].
        let open = format!("{MINIMAL}[operations]\nlisten = \"0.0.0.0:9464\"\n");
        let e = Config::parse(&open, Path::new("c.toml")).unwrap_err().0;
        assert!(e.starts_with("c.toml:13: operations.listen:"), "{e}");
        assert!(e.contains("token_sha256"), "{e}");
        let with_token = format!("{open}token_sha256 = \"{}\"\n", "ab".repeat(32));
        let c = Config::parse(&with_token, Path::new("c.toml")).unwrap();
        assert!(c.operations.explicit && c.operations.token.is_some());
    }

    #[test]
    fn tls_cert_without_key_is_refused() {
        let text = MINIMAL.replace("[store]", "tls_cert = \"c.pem\"\n[store]");
        let e = Config::parse(&text, Path::new("c.toml")).unwrap_err().0;
        assert!(e.contains("tls_cert: tls_key must be set too"), "{e}");
    }

    #[test]
    fn tokens_file_adds_tokens_and_locates_its_errors() {
        let dir = std::env::temp_dir().join(format!("scim2ldap-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let hash = "ab".repeat(32);
        std::fs::write(
            dir.join("tokens.toml"),
            format!("[[tokens]]\nname = \"okta\"\nsha256 = \"{hash}\"\n"),
        )
        .unwrap();
        let text = format!("tokens_file = \"tokens.toml\"\n{MINIMAL}");
        let c = Config::parse(&text, &dir.join("c.toml")).unwrap();
        assert_eq!(c.tokens.len(), 1);
        assert_eq!(c.tokens[0].name, "okta");
        std::fs::write(
            dir.join("tokens.toml"),
            "[[tokens]]\nname = \"x\"\nsha = \"y\"\n",
        )
        .unwrap();
        let e = Config::parse(&text, &dir.join("c.toml")).unwrap_err().0;
        assert!(e.contains("tokens.toml:3:1:"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
