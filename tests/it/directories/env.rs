//! The fixture of the directory suite: a server (and its preset), an OU of
//! the test's own on it, the daemon in-process with the preset moved under
//! that OU, an HTTP client, an administrator's LDAP client, and what each
//! preset says an entry must hold.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use ldap3::{LdapConnAsync, LdapConnSettings, Mod, Scope, SearchEntry};
use serde_json::{json, Value};

use scim2ldap::config::Config;
use scim2ldap::daemon::Running;
use scim2ldap_slapd::{DaemonConfig, Dirsrv, SambaAd, Slapd, SlapdOptions};

use crate::harness::{writer_caught_up, NO_SUCH_OBJECT, PLACEHOLDER};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    OpenLdap,
    Dirsrv,
    SambaAd,
}

/// How a preset marks an inactive account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockBy {
    /// OpenLDAP ppolicy: `pwdAccountLockedTime: 000001010000Z`.
    PwdAccountLockedTime,
    /// 389 DS / FreeIPA: `nsAccountLock: TRUE`.
    NsAccountLock,
    /// AD: bit 2 (ACCOUNTDISABLE) of userAccountControl.
    UserAccountControl,
}

/// Where the test's directory is and how to reach it as its administrator.
struct Conn {
    url: String,
    bind_dn: String,
    password: String,
    ca: Option<PathBuf>,
    suffix: String,
}

/// An entry: attribute names lowercased, values as read.
pub type Entry = HashMap<String, Vec<String>>;

pub struct Env {
    pub server: Server,
    /// Kept alive for the test (OpenLDAP only; the others are shared).
    _slapd: Option<Slapd>,
    conn: Conn,
    /// The test's own OU and the people / groups OUs under it.
    pub base: String,
    pub people: String,
    pub groups: String,
    /// A short tag unique to this test, for names.
    pub tag: String,
    dir: PathBuf,
    daemon: Option<Running>,
    url: String,
    token: String,
    client: Client<HttpConnector, Full<Bytes>>,
    /// AD keeps a deleted user's entry (disabled): DNs expected to stay.
    pub kept: BTreeSet<String>,
}

pub struct Reply {
    pub status: u16,
    pub body: Value,
}

/// Attributes read back from every entry (besides the user attributes).
const READ: &[&str] = &[
    "*",
    "pwdAccountLockedTime",
    "nsAccountLock",
    "entryUUID",
    "objectGUID",
];

impl Env {
    /// The server (started, or the shared one), the test's OU on it and
    /// the daemon with the server's preset. `None` (after saying why on
    /// stderr) when the server is not installed here.
    pub async fn start(server: Server) -> Option<Env> {
        Self::start_with(server, |m| m).await
    }

    /// [`Env::start`] with the preset changed by `edit` first.
    pub async fn start_with(server: Server, edit: impl FnOnce(String) -> String) -> Option<Env> {
        static N: AtomicU64 = AtomicU64::new(0);
        let tag = format!("t{}", N.fetch_add(1, Ordering::Relaxed));
        let token = scim2ldap::token::generate().unwrap();
        let sha = scim2ldap::token::TokenHash::of(&token).to_hex();
        let extra = DaemonConfig {
            token_sha256: &sha,
            ldap: "timeout_secs = 10",
            ..Default::default()
        };
        let (slapd, conn, config, preset) = match server {
            Server::OpenLdap => {
                let slapd = tokio::task::spawn_blocking(|| Slapd::start(SlapdOptions::default()))
                    .await
                    .unwrap()
                    .expect("start slapd");
                let conn = Conn {
                    url: slapd.uri(),
                    bind_dn: slapd.bind_dn(),
                    password: slapd.password().to_string(),
                    ca: None,
                    suffix: slapd.suffix().to_string(),
                };
                let base = format!("ou={tag},{}", conn.suffix);
                let config = slapd.daemon_config(&extra).replace(
                    &format!("base_dn = \"{}\"", conn.suffix),
                    &format!("base_dn = \"{base}\""),
                );
                let preset = include_str!("../../../examples/openldap.toml");
                (Some(slapd), conn, config, preset)
            }
            Server::Dirsrv => {
                let ds = shared_or_skip(Dirsrv::shared).await?;
                let conn = Conn {
                    url: ds.uri(),
                    bind_dn: ds.bind_dn(),
                    password: ds.password().to_string(),
                    ca: None,
                    suffix: ds.suffix().to_string(),
                };
                let base = format!("ou={tag},{}", conn.suffix);
                let preset = include_str!("../../../examples/389ds.toml");
                (None, conn, ds.daemon_config(&extra, &base), preset)
            }
            Server::SambaAd => {
                let ad = shared_or_skip(SambaAd::shared).await?;
                let conn = Conn {
                    url: ad.ldaps_uri(),
                    bind_dn: ad.bind_dn(),
                    password: ad.password().to_string(),
                    ca: Some(ad.ca_cert()),
                    suffix: ad.suffix().to_string(),
                };
                let base = format!("OU={tag},{}", conn.suffix);
                let preset = include_str!("../../../examples/ad.toml");
                (None, conn, ad.daemon_config(&extra, &base), preset)
            }
        };
        let base = format!("ou={tag},{}", conn.suffix);
        let people = format!("ou=people,{base}");
        let groups = format!("ou=groups,{base}");
        // The preset's DNs, moved under the test's OU.
        let mapping = edit(
            preset
                .replace(
                    "ou=people,dc=example,dc=com",
                    &format!("ou=people,ou={tag},dc=example,dc=com"),
                )
                .replace(
                    "ou=groups,dc=example,dc=com",
                    &format!("ou=groups,ou={tag},dc=example,dc=com"),
                ),
        );
        let dir = std::env::temp_dir().join(format!("scim2ldap-dirs-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("mapping.toml"), mapping).unwrap();
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let mut env = Env {
            server,
            _slapd: slapd,
            conn,
            base,
            people,
            groups,
            tag,
            dir,
            daemon: None,
            url: String::new(),
            token,
            client: Client::builder(TokioExecutor::new()).build_http(),
            kept: BTreeSet::new(),
        };
        for dn in [&env.base, &env.people, &env.groups] {
            let ou = dn[3..].split(',').next().unwrap().to_string();
            env.ldap_add(
                dn,
                &[
                    ("objectClass", &["top", "organizationalUnit"]),
                    ("ou", &[&ou]),
                ],
            )
            .await;
        }
        let cfg = Config::load(&env.dir.join("config.toml")).expect("config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = scim2ldap::daemon::start(&cfg, listener)
            .await
            .expect("daemon starts");
        env.url = format!("http://{}/scim/v2", running.addr);
        env.daemon = Some(running);
        Some(env)
    }

    pub fn preset_lock(&self) -> LockBy {
        match self.server {
            Server::OpenLdap => LockBy::PwdAccountLockedTime,
            Server::Dirsrv => LockBy::NsAccountLock,
            Server::SambaAd => LockBy::UserAccountControl,
        }
    }

    pub fn is_ad(&self) -> bool {
        self.server == Server::SambaAd
    }

    // ---- SCIM ----

    pub async fn send(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.url, path))
            .header("Authorization", format!("Bearer {}", self.token));
        if body.is_some() {
            req = req.header("Content-Type", "application/scim+json");
        }
        let req = req
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))
            .unwrap();
        let resp = self.client.request(req).await.expect("HTTP request");
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Reply { status, body }
    }

    /// Sends and expects `status`; returns the body.
    pub async fn ok(&self, method: &str, path: &str, body: Option<Value>, status: u16) -> Value {
        let r = self.send(method, path, body).await;
        assert_eq!(r.status, status, "{method} {path}: {}", r.body);
        r.body
    }

    /// POST /Users; the new id.
    pub async fn create_user(&self, body: Value) -> String {
        let u = self.ok("POST", "/Users", Some(body), 201).await;
        u["id"].as_str().unwrap().to_string()
    }

    pub async fn create_group(&self, body: Value) -> String {
        let g = self.ok("POST", "/Groups", Some(body), 201).await;
        g["id"].as_str().unwrap().to_string()
    }

    pub async fn patch(&self, path: &str, ops: Value) -> Value {
        let body = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": ops,
        });
        let r = self.send("PATCH", path, Some(body)).await;
        assert!(
            r.status == 200 || r.status == 204,
            "PATCH {path}: {} {}",
            r.status,
            r.body
        );
        r.body
    }

    pub async fn get(&self, path: &str) -> Value {
        self.ok("GET", path, None, 200).await
    }

    /// Waits until the writer has applied every acknowledged write, and
    /// fails the test with the directory's reason when it parked any.
    pub async fn settle(&self) {
        let d = self.daemon.as_ref().expect("daemon running");
        if let Err(e) = writer_caught_up(&d.store, &d.writer, Duration::from_secs(30)).await {
            panic!("{e}");
        }
        let parked = d.store.parked().unwrap();
        if !parked.is_empty() {
            let why: Vec<String> = parked
                .iter()
                .map(|s| format!("{s}: {:?}", d.store.state(*s).unwrap()))
                .collect();
            panic!(
                "the {:?} directory refused entries:\n{}",
                self.server,
                why.join("\n")
            );
        }
    }

    /// The DN the daemon linked to a resource.
    pub fn linked_dn(&self, kind: scim2ldap::store::Kind, id: &str) -> String {
        let d = self.daemon.as_ref().expect("daemon running");
        d.store.link(kind, id).unwrap().expect("linked").dn
    }

    // ---- LDAP, as the administrator ----

    pub async fn ldap(&self) -> ldap3::Ldap {
        let mut settings = LdapConnSettings::new().set_conn_timeout(Duration::from_secs(10));
        if let Some(ca) = &self.conn.ca {
            settings = settings.set_config(scim2ldap::tls::ldap_client_config(Some(ca)).unwrap());
        }
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &self.conn.url)
            .await
            .expect("ldap connect");
        ldap3::drive!(conn);
        ldap.simple_bind(&self.conn.bind_dn, &self.conn.password)
            .await
            .unwrap()
            .success()
            .unwrap();
        ldap
    }

    /// A simple bind as `dn`: `Ok` or the result code.
    pub async fn bind_as(&self, dn: &str, password: &str) -> Result<(), u32> {
        let mut settings = LdapConnSettings::new();
        if let Some(ca) = &self.conn.ca {
            settings = settings.set_config(scim2ldap::tls::ldap_client_config(Some(ca)).unwrap());
        }
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &self.conn.url)
            .await
            .expect("ldap connect");
        ldap3::drive!(conn);
        let r = ldap.simple_bind(dn, password).await.unwrap();
        let _ = ldap.unbind().await;
        if r.rc == 0 {
            Ok(())
        } else {
            Err(r.rc)
        }
    }

    pub async fn ldap_add(&self, dn: &str, attrs: &[(&str, &[&str])]) {
        let mut ldap = self.ldap().await;
        let attrs: Vec<(String, HashSet<String>)> = attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect();
        ldap.add(dn, attrs).await.unwrap().success().unwrap();
        let _ = ldap.unbind().await;
    }

    /// Sets an account's password as the administrator, outside the
    /// daemon (an attribute the preset does not write): `userPassword`,
    /// or AD's `unicodePwd` (a quoted UTF-16LE value).
    pub async fn set_password_by_hand(&self, dn: &str, password: &str) {
        let mut ldap = self.ldap().await;
        let m = if self.is_ad() {
            let v: Vec<u8> = format!("\"{password}\"")
                .encode_utf16()
                .flat_map(u16::to_le_bytes)
                .collect();
            Mod::Replace(b"unicodePwd".to_vec(), HashSet::from([v]))
        } else {
            Mod::Replace(
                b"userPassword".to_vec(),
                HashSet::from([password.as_bytes().to_vec()]),
            )
        };
        ldap.modify(dn, vec![m]).await.unwrap().success().unwrap();
        let _ = ldap.unbind().await;
    }

    /// The entry at `dn`, `None` on noSuchObject only.
    pub async fn entry(&self, dn: &str) -> Option<Entry> {
        let mut ldap = self.ldap().await;
        let r = ldap
            .search(dn, Scope::Base, "(objectClass=*)", READ.to_vec())
            .await
            .unwrap();
        let _ = ldap.unbind().await;
        match r.success() {
            Ok((entries, _)) => entries
                .into_iter()
                .next()
                .map(|e| lower(SearchEntry::construct(e))),
            Err(ldap3::LdapError::LdapResult { result }) if result.rc == NO_SUCH_OBJECT => None,
            Err(e) => panic!("reading {dn}: {e}"),
        }
    }

    /// Every entry under the test's OU (the OUs included), by lowercased DN.
    pub async fn dump(&self) -> BTreeMap<String, Entry> {
        let mut ldap = self.ldap().await;
        let (entries, _) = ldap
            .search(&self.base, Scope::Subtree, "(objectClass=*)", READ.to_vec())
            .await
            .unwrap()
            .success()
            .unwrap();
        let _ = ldap.unbind().await;
        entries
            .into_iter()
            .map(SearchEntry::construct)
            .map(|e| (e.dn.to_lowercase(), lower(e)))
            .collect()
    }

    // ---- what the presets say ----

    /// The DN the preset gives a user.
    pub fn user_dn(&self, user: &Value) -> String {
        let name = user["userName"].as_str().unwrap();
        match self.server {
            Server::OpenLdap | Server::Dirsrv => format!("uid={name},{}", self.people),
            Server::SambaAd => format!("cn={},{}", ad_cn(name), self.people),
        }
        .to_lowercase()
    }

    pub fn group_dn(&self, group: &Value) -> String {
        let name = group["displayName"].as_str().unwrap();
        format!("cn={name},{}", self.groups).to_lowercase()
    }

    /// The attributes the preset writes for `user` (a SCIM User as the
    /// daemon returns it): name → values; an empty list means absent.
    pub fn user_attributes(&self, u: &Value) -> Vec<(&'static str, Vec<String>)> {
        let s = |v: &Value| v.as_str().map(str::to_string);
        let user_name = s(&u["userName"]).unwrap();
        let given = s(&u["name"]["givenName"]);
        let family = s(&u["name"]["familyName"]);
        let display = s(&u["displayName"])
            .or_else(|| s(&u["name"]["formatted"]))
            .or_else(|| match (&given, &family) {
                (Some(g), Some(f)) => Some(format!("{g} {f}")),
                _ => None,
            })
            .unwrap_or_else(|| user_name.clone());
        let emails = u["emails"].as_array().cloned().unwrap_or_default();
        let mail = emails
            .iter()
            .find(|e| e["type"] == "work")
            .or_else(|| emails.iter().find(|e| e["primary"] == true))
            .and_then(|e| s(&e["value"]))
            .map(|m| m.trim().to_lowercase());
        let opt = |v: Option<String>| v.into_iter().collect::<Vec<_>>();
        let title = opt(s(&u["title"]));
        match self.server {
            Server::OpenLdap | Server::Dirsrv => vec![
                ("uid", vec![user_name.clone()]),
                ("cn", vec![display]),
                ("sn", vec![family.clone().unwrap_or(user_name)]),
                ("givenname", opt(given)),
                ("displayname", opt(s(&u["displayName"]))),
                ("title", title),
                ("mail", opt(mail)),
            ],
            Server::SambaAd => vec![
                ("cn", vec![ad_cn(&user_name)]),
                ("samaccountname", vec![sam_account_name(&user_name)]),
                ("userprincipalname", vec![user_name.clone()]),
                ("givenname", opt(given)),
                ("sn", opt(family)),
                ("displayname", vec![display]),
                ("title", title),
                ("mail", opt(mail)),
            ],
        }
    }

    /// Whether an entry carries the preset's lock.
    pub fn is_locked(&self, e: &Entry) -> bool {
        match self.preset_lock() {
            LockBy::PwdAccountLockedTime => e.contains_key("pwdaccountlockedtime"),
            LockBy::NsAccountLock => e
                .get("nsaccountlock")
                .is_some_and(|v| v.iter().any(|x| x.eq_ignore_ascii_case("true"))),
            LockBy::UserAccountControl => {
                let uac: u32 = e
                    .get("useraccountcontrol")
                    .and_then(|v| v.first())
                    .and_then(|v| v.parse().ok())
                    .expect("userAccountControl");
                uac & 2 != 0
            }
        }
    }

    /// Checks one user's entry against the preset; returns the problems.
    pub fn check_user(&self, u: &Value, e: &Entry) -> Vec<String> {
        let dn = self.user_dn(u);
        let mut problems = Vec::new();
        for (attr, want) in self.user_attributes(u) {
            let have = e.get(attr).cloned().unwrap_or_default();
            if have != want {
                problems.push(format!(
                    "{dn}: {attr} is {have:?}, the preset says {want:?}"
                ));
            }
        }
        let inactive = u["active"] == Value::Bool(false);
        if inactive != self.is_locked(e) {
            problems.push(format!(
                "{dn}: active is {}, but the entry is {}locked ({:?})",
                !inactive,
                if inactive { "not " } else { "" },
                self.preset_lock()
            ));
        }
        problems
    }

    /// Every user and group the daemon has (GET /Users, /Groups with
    /// members) against the test's OU: each at the DN the preset gives it,
    /// holding what the preset says, members exactly the members' DNs (or
    /// the placeholder / nothing when empty), and nothing else there (but
    /// for AD's disabled leftovers of deleted users, in `kept`).
    pub async fn assert_directory_matches(&self) {
        let users = self.get("/Users?count=1000").await["Resources"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let groups = self.get("/Groups?count=1000").await["Resources"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let got = self.dump().await;
        let mut problems = Vec::new();
        let mut want: BTreeSet<String> = [&self.base, &self.people, &self.groups]
            .iter()
            .map(|d| d.to_lowercase())
            .collect();
        let mut dn_of = HashMap::new();
        for u in &users {
            let dn = self.user_dn(u);
            dn_of.insert(u["id"].as_str().unwrap().to_string(), dn.clone());
            want.insert(dn.clone());
            match got.get(&dn) {
                Some(e) => problems.extend(self.check_user(u, e)),
                None => problems.push(format!("missing user {dn}")),
            }
        }
        for g in &groups {
            dn_of.insert(g["id"].as_str().unwrap().to_string(), self.group_dn(g));
        }
        for g in &groups {
            let dn = self.group_dn(g);
            want.insert(dn.clone());
            let Some(e) = got.get(&dn) else {
                problems.push(format!("missing group {dn}"));
                continue;
            };
            let cn = e.get("cn").cloned().unwrap_or_default();
            if cn != vec![g["displayName"].as_str().unwrap().to_string()] {
                problems.push(format!("{dn}: cn is {cn:?}"));
            }
            let mut expected: Vec<String> = g["members"]
                .as_array()
                .map(|m| {
                    m.iter()
                        .map(|m| {
                            let id = m["value"].as_str().unwrap_or_default();
                            dn_of
                                .get(id)
                                .cloned()
                                .unwrap_or_else(|| format!("(unknown {id})"))
                        })
                        .collect()
                })
                .unwrap_or_default();
            if expected.is_empty() && self.server == Server::OpenLdap {
                expected.push(PLACEHOLDER.to_lowercase());
            }
            expected.sort();
            let mut have: Vec<String> = e
                .get("member")
                .map(|v| v.iter().map(|m| m.to_lowercase()).collect())
                .unwrap_or_default();
            have.sort();
            if have != expected {
                problems.push(format!("{dn}: members {have:?}, expected {expected:?}"));
            }
        }
        for dn in &self.kept {
            want.insert(dn.clone());
            match got.get(dn) {
                Some(e) if self.is_locked(e) => {}
                Some(_) => problems.push(format!("{dn}: deleted, kept, but not disabled")),
                None => problems.push(format!("{dn}: deleted, and the preset keeps it")),
            }
        }
        for dn in got.keys() {
            if !want.contains(dn) {
                problems.push(format!("extra entry {dn}"));
            }
        }
        assert!(
            problems.is_empty(),
            "{:?}: the directory differs from what the preset says:\n{}",
            self.server,
            problems.join("\n")
        );
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.daemon.take();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Attribute names lowercased; binary values (objectGUID) as `hex:...`.
fn lower(e: SearchEntry) -> Entry {
    let mut out: Entry = e
        .attrs
        .into_iter()
        .map(|(k, v)| (k.to_lowercase(), v))
        .collect();
    for (k, v) in e.bin_attrs {
        let hex = v
            .iter()
            .map(|b| {
                format!(
                    "hex:{}",
                    b.iter().map(|x| format!("{x:02x}")).collect::<String>()
                )
            })
            .collect();
        out.insert(k.to_lowercase(), hex);
    }
    out
}

/// The shared instance, or `None` (with the reason on stderr) when the
/// server is not installed here; a failure to start fails the test, and
/// so does a missing server with `SCIM2LDAP_REQUIRE_DIRECTORIES=1`.
async fn shared_or_skip<T: Sync + 'static>(
    shared: fn() -> std::io::Result<&'static T>,
) -> Option<&'static T> {
    match tokio::task::spawn_blocking(shared).await.unwrap() {
        Ok(s) => Some(s),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            ) && std::env::var_os("SCIM2LDAP_REQUIRE_DIRECTORIES").is_none() =>
        {
            eprintln!("skipped: {e}");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// AD preset: the part of the UPN before the `@`, at most 64 characters.
pub fn ad_cn(user_name: &str) -> String {
    let local = user_name.split('@').next().unwrap_or_default();
    local.chars().take(64).collect()
}

/// AD preset: sAMAccountName from the UPN: the part before the `@`, the
/// characters AD refuses replaced by `_`, dots and spaces trimmed, at most
/// 20 characters (and trimmed again).
pub fn sam_account_name(user_name: &str) -> String {
    let local = user_name.split('@').next().unwrap_or_default();
    let replaced: String = local
        .chars()
        .map(|c| {
            if "\"/\\[]:;|=,+*?<>".contains(c) {
                '_'
            } else {
                c
            }
        })
        .collect();
    let short: String = replaced.trim_matches(['.', ' ']).chars().take(20).collect();
    short.trim_matches(['.', ' ']).to_string()
}

/// The first value of an attribute.
pub fn first(e: &Entry, attr: &str) -> Option<String> {
    e.get(&attr.to_lowercase()).and_then(|v| v.first().cloned())
}

#[test]
fn the_ad_names_follow_the_preset() {
    let upn = "Test_User_ab6490ee-1e1f@contoso.com";
    assert_eq!(ad_cn(upn), "Test_User_ab6490ee-1e1f");
    assert_eq!(sam_account_name(upn), "Test_User_ab6490ee-1");
    assert_eq!(sam_account_name(" .a/b[c]=d+e*f?. @x"), "a_b_c__d_e_f_");
    assert_eq!(sam_account_name("nodomain"), "nodomain");
}

impl Env {
    /// The directory's reasons for the entries it refused and the writer
    /// parked, waiting up to `limit` for at least one (a refusal is tried
    /// again twice before it parks).
    pub async fn parked_reasons(&self, limit: Duration) -> Vec<String> {
        let d = self.daemon.as_ref().expect("daemon running");
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let parked = d.store.parked().unwrap();
            if !parked.is_empty() || tokio::time::Instant::now() >= deadline {
                return parked
                    .iter()
                    .map(|s| format!("{:?}", d.store.state(*s).unwrap()))
                    .collect();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Env {
    /// The daemon's config file (the mapping is `mapping.toml` beside it).
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }
}
