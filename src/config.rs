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
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Prefix of every SCIM route, e.g. `/scim/v2`; no trailing slash.
    pub base_path: String,
    /// Absolute URL prefix used in `Location` and `meta.location`; when
    /// unset, it is built from the request's Host header.
    pub public_url: Option<String>,
    pub max_body_bytes: usize,
    /// How long a client may take to send its request headers.
    pub header_read_timeout: Duration,
    /// How long a client may take to send its request body.
    pub body_read_timeout: Duration,
    pub max_connections: usize,
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
    #[serde(default)]
    log: RawLog,
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
    32
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
}

fn default_base_path() -> String {
    "/scim/v2".into()
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
fn default_retention() -> u64 {
    7 * 24 * 3600
}
fn default_ldap_timeout() -> u64 {
    10
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
        if raw.server.max_connections == 0 {
            return Err(at("max_connections", "must be at least 1".into()));
        }

        let bind_password = match (raw.ldap.bind_password, raw.ldap.bind_password_file) {
            (Some(p), None) => Secret::new(p),
            (None, Some(f)) => {
                let p = resolve(&dir, &f);
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
        if !(raw.ldap.url.starts_with("ldap://") || raw.ldap.url.starts_with("ldaps://")) {
            return Err(at(
                "url",
                format!("{:?} must start with ldap:// or ldaps://", raw.ldap.url),
            ));
        }

        let mut tokens = Vec::new();
        for t in raw.tokens {
            let hash = TokenHash::parse(&t.sha256).map_err(|e| at("sha256", e))?;
            if tokens.iter().any(|o: &TokenConfig| o.name == t.name) {
                return Err(at("name", format!("token name {:?} is used twice", t.name)));
            }
            tokens.push(TokenConfig { name: t.name, hash });
        }

        Ok(Config {
            file: path.to_path_buf(),
            server: ServerConfig {
                listen,
                base_path,
                public_url: raw
                    .server
                    .public_url
                    .map(|u| u.trim_end_matches('/').to_string()),
                max_body_bytes: raw.server.max_body_bytes,
                header_read_timeout: Duration::from_secs(raw.server.header_read_timeout_secs),
                body_read_timeout: Duration::from_secs(raw.server.body_read_timeout_secs),
                max_connections: raw.server.max_connections,
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
            },
            mapping_file: resolve(&dir, &raw.mapping),
            tokens,
            log: LogConfig {
                level: raw.log.level.unwrap_or_else(|| "info".into()),
            },
        })
    }
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
}
