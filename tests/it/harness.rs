//! Shared test fixture: a throwaway slapd, the daemon started in-process on
//! a port-0 listener with a config and mapping written to a temp dir, an
//! HTTP client that goes through a real socket, and an LDAP client to check
//! what landed in the directory. Everything is stopped and removed on drop.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use ldap3::{LdapConnAsync, Scope, SearchEntry};
use serde_json::Value;

use scim2ldap::config::Config;
use scim2ldap::daemon::Running;
use scim2ldap_slapd::{DaemonConfig, Slapd, SlapdOptions};

pub const MAPPING: &str = include_str!("../../examples/openldap.toml");

/// LDAP result code noSuchObject: the only answer that means "not there".
pub const NO_SUCH_OBJECT: u32 = 32;

pub struct Harness {
    pub slapd: Slapd,
    pub daemon: Option<Running>,
    pub dir: PathBuf,
    pub token: String,
    pub base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Value,
}

impl Harness {
    pub async fn start() -> Harness {
        Self::start_with(SlapdOptions::default(), MAPPING).await
    }

    pub async fn start_with(opts: SlapdOptions, mapping: &str) -> Harness {
        let slapd = tokio::task::spawn_blocking(move || Slapd::start(opts))
            .await
            .unwrap()
            .expect("start slapd");
        let dir = std::env::temp_dir().join(format!("scim2ldap-it-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("mapping.toml"), mapping).unwrap();
        let token = scim2ldap::token::generate().unwrap();
        let config = config_text(&slapd, &token, "127.0.0.1:0");
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let mut h = Harness {
            slapd,
            daemon: None,
            dir,
            token,
            base: String::new(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        };
        h.start_daemon().await;
        h
    }

    pub fn config(&self) -> Config {
        Config::load(&self.dir.join("config.toml")).expect("config")
    }

    pub async fn start_daemon(&mut self) {
        let cfg = self.config();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = scim2ldap::daemon::start(&cfg, listener)
            .await
            .expect("daemon starts");
        self.base = format!("http://{}/scim/v2", running.addr);
        self.daemon = Some(running);
    }

    pub async fn stop_daemon(&mut self) {
        if let Some(d) = self.daemon.take() {
            d.shutdown().await;
        }
    }

    pub fn daemon(&self) -> &Running {
        self.daemon.as_ref().expect("daemon running")
    }

    /// Waits until the writer has applied (or parked) every acknowledged
    /// write. Fails the test when the writer does not catch up within 20 s,
    /// or is gone (its progress channel closed before reaching the last
    /// entry), so that absence checks after it never pass by default.
    pub async fn settle(&self) {
        let d = self.daemon();
        if let Err(e) = writer_caught_up(&d.store, &d.writer, Duration::from_secs(20)).await {
            panic!("{e}");
        }
    }

    /// Waits until no journal entry is pending (parked ones count as
    /// pending for this), e.g. after a replay, which the writer's progress
    /// that [`Harness::settle`] follows has already passed.
    pub async fn drained(&self) {
        let store = self.daemon().store.clone();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
        while store.pending_count() > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} journal entries still pending after 40 s",
                store.pending_count()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn send(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        self.send_raw(
            method,
            path,
            body.map(|b| b.to_string()),
            Some("application/scim+json"),
            Some(&self.token),
            &[],
        )
        .await
    }

    pub async fn send_raw(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
        content_type: Option<&str>,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        if let Some(ct) = content_type.filter(|_| body.is_some()) {
            req = req.header("Content-Type", ct);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .unwrap();
        let resp = self.client.request(req).await.expect("HTTP request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    /// A connection to the test directory, bound as its administrator.
    pub async fn ldap(&self) -> ldap3::Ldap {
        let (conn, mut ldap) = LdapConnAsync::new(&self.slapd.uri())
            .await
            .expect("ldap connect");
        ldap3::drive!(conn);
        ldap.simple_bind(&self.slapd.bind_dn(), self.slapd.password())
            .await
            .unwrap()
            .success()
            .unwrap();
        ldap
    }

    /// Entries under the suffix matching an LDAP filter, with the named
    /// attributes (plus operational ones asked for explicitly).
    /// Every user and every group (with members) as the daemon lists them.
    pub async fn scim_all(&self) -> (Vec<Value>, Vec<Value>) {
        let mut out = Vec::new();
        for path in ["/Users", "/Groups"] {
            let mut all = Vec::new();
            loop {
                let r = self
                    .send(
                        "GET",
                        &format!("{path}?startIndex={}&count=500", all.len() + 1),
                        None,
                    )
                    .await;
                assert_eq!(r.status, 200, "{}", r.body);
                let page = r.body["Resources"].as_array().cloned().unwrap_or_default();
                let total = r.body["totalResults"].as_u64().unwrap_or(0) as usize;
                let empty = page.is_empty();
                all.extend(page);
                if empty || all.len() >= total {
                    break;
                }
            }
            out.push(all);
        }
        let groups = out.pop().unwrap();
        (out.pop().unwrap(), groups)
    }

    /// Fails the test when the directory's users and groups differ from
    /// what the daemon reports ([`compare_with_directory`]).
    pub async fn assert_directory_matches_store(&self) {
        let (users, groups) = self.scim_all().await;
        let got = dump_all(&self.slapd).await;
        let problems = compare_with_directory(&self.slapd, &users, &groups, &got);
        assert!(
            problems.is_empty(),
            "the directory differs from the store:\n{}",
            problems.join("\n")
        );
    }

    pub async fn ldap_search(&self, filter: &str, attrs: &[&str]) -> Vec<SearchEntry> {
        let mut ldap = self.ldap().await;
        let (entries, _) = ldap
            .search(self.slapd.suffix(), Scope::Subtree, filter, attrs.to_vec())
            .await
            .unwrap()
            .success()
            .unwrap();
        let _ = ldap.unbind().await;
        entries.into_iter().map(SearchEntry::construct).collect()
    }

    /// The `member` values of the group entry at `dn`, lower-cased and
    /// sorted; panics when there is no such entry.
    pub async fn member_values(&self, dn: &str) -> Vec<String> {
        let e = self
            .ldap_get(dn)
            .await
            .unwrap_or_else(|| panic!("group {dn} exists"));
        let mut v: Vec<String> = e
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("member"))
            .map(|(_, v)| v.iter().map(|s| s.to_lowercase()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The single entry at `dn`, or `None` when the directory answers
    /// noSuchObject (32). Any other outcome (a bad DN, a server error, a
    /// dropped connection) fails the test: an absence check must not pass
    /// because the question could not be answered.
    pub async fn ldap_get(&self, dn: &str) -> Option<HashMap<String, Vec<String>>> {
        match self.try_ldap_get(dn).await {
            Ok(entry) => entry,
            Err(e) => panic!("reading {dn}: {e}"),
        }
    }

    /// The single entry at `dn`: `Ok(None)` only on noSuchObject (32), the
    /// LDAP error otherwise.
    pub async fn try_ldap_get(
        &self,
        dn: &str,
    ) -> Result<Option<HashMap<String, Vec<String>>>, ldap3::LdapError> {
        let mut ldap = self.ldap().await;
        let r = ldap
            .search(dn, Scope::Base, "(objectClass=*)", vec!["*", "+"])
            .await;
        let _ = ldap.unbind().await;
        match r?.success() {
            Ok((entries, _)) => {
                assert!(
                    entries.len() <= 1,
                    "a base search at {dn} found several entries"
                );
                Ok(entries
                    .into_iter()
                    .next()
                    .map(|e| SearchEntry::construct(e).attrs))
            }
            Err(ldap3::LdapError::LdapResult { result }) if result.rc == NO_SUCH_OBJECT => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Runs an LDAP modify as the administrator (to simulate changes made
    /// outside scim2ldap).
    pub async fn ldap_modify(&self, dn: &str, mods: Vec<ldap3::Mod<String>>) {
        let mut ldap = self.ldap().await;
        ldap.modify(dn, mods).await.unwrap().success().unwrap();
        let _ = ldap.unbind().await;
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // The daemon's tasks die with the test's runtime; the store is
        // closed when the last handle goes.
        self.daemon.take();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits until the writer has processed (applied or parked) every entry
/// the store has journaled. An error when it does not within `limit`, or
/// when it is gone: `wait_processed` returns as soon as the writer's
/// progress channel closes, so its progress is checked afterwards.
pub async fn writer_caught_up(
    store: &scim2ldap::store::Store,
    writer: &scim2ldap::writer::WriterHandle,
    limit: Duration,
) -> Result<(), String> {
    let seq = store.last_seq();
    if tokio::time::timeout(limit, writer.wait_processed(seq))
        .await
        .is_err()
    {
        return Err(format!(
            "the writer did not catch up within {limit:?}: processed {} of {seq}",
            writer.processed()
        ));
    }
    let processed = writer.processed();
    if processed < seq {
        return Err(format!(
            "the writer is gone: it processed {processed} of {seq} entries"
        ));
    }
    Ok(())
}

/// First value of an attribute, case-insensitive name.
pub fn first(attrs: &HashMap<String, Vec<String>>, name: &str) -> Option<String> {
    attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.first().cloned())
}

/// A daemon config for `slapd`, accepting `token`, listening on `listen`,
/// with the store in `state` and the mapping in `mapping.toml` beside it.
pub fn config_text(slapd: &Slapd, token: &str, listen: &str) -> String {
    let sha = scim2ldap::token::TokenHash::of(token).to_hex();
    let text = slapd.daemon_config(&DaemonConfig {
        listen,
        token_sha256: &sha,
        ldap: "timeout_secs = 5",
        ..Default::default()
    });
    // The operational listener (/metrics, /readyz) on a free port of its
    // own (`Running::ops_addr`); before [[tokens]], which tests cut off
    // the end into a tokens file.
    text.replacen(
        "[[tokens]]",
        "[operations]\nlisten = \"127.0.0.1:0\"\n\n[[tokens]]",
        1,
    )
}

/// An LDAP connection bound as the directory's administrator.
pub async fn admin_conn(slapd: &Slapd) -> ldap3::Ldap {
    let (conn, mut ldap) = LdapConnAsync::new(&slapd.uri())
        .await
        .expect("ldap connect");
    ldap3::drive!(conn);
    ldap.simple_bind(&slapd.bind_dn(), slapd.password())
        .await
        .unwrap()
        .success()
        .unwrap();
    ldap
}

/// Every entry under `base` as DN (lowercased) → attribute (lowercased)
/// → sorted values: user attributes, and the operational one deactivation
/// sets (`pwdAccountLockedTime`). What a replay must rebuild.
pub async fn dump(slapd: &Slapd, base: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut ldap = admin_conn(slapd).await;
    let (entries, _) = ldap
        .search(
            base,
            Scope::OneLevel,
            "(objectClass=*)",
            vec!["*", "pwdAccountLockedTime"],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    let _ = ldap.unbind().await;
    entries
        .into_iter()
        .map(SearchEntry::construct)
        .map(|e| {
            let attrs = e
                .attrs
                .into_iter()
                .map(|(k, mut v)| {
                    v.sort();
                    (k.to_lowercase(), v)
                })
                .collect();
            (e.dn.to_lowercase(), attrs)
        })
        .collect()
}

/// Users and groups: `dump` of `ou=people` and `ou=groups` together, what
/// every durability test compares (member values included).
pub async fn dump_all(slapd: &Slapd) -> Dump {
    let mut all = dump(slapd, &slapd.people_dn()).await;
    all.extend(dump(slapd, &slapd.groups_dn()).await);
    all
}

pub type Dump = BTreeMap<String, BTreeMap<String, Vec<String>>>;

/// The placeholder `examples/openldap.toml` puts in an empty group.
pub const PLACEHOLDER: &str = "cn=empty-group-placeholder,dc=example,dc=com";

/// Compares what the daemon says (its SCIM `users` and `groups`, as listed
/// by GET /Users and GET /Groups with members) with a [`dump_all`] of the
/// directory, for `examples/openldap.toml`: one entry per user at
/// `uid=<userName>` (locked while inactive), one per group at
/// `cn=<displayName>` whose `member` values are exactly its members' DNs
/// (the placeholder while empty), and nothing else. Returns the
/// differences, empty when they agree.
pub fn compare_with_directory(
    slapd: &Slapd,
    users: &[Value],
    groups: &[Value],
    got: &Dump,
) -> Vec<String> {
    let people = slapd.people_dn().to_lowercase();
    let groups_dn = slapd.groups_dn().to_lowercase();
    let mut problems = Vec::new();
    let mut want = std::collections::BTreeSet::new();
    let mut dn_of: HashMap<String, String> = HashMap::new();
    for u in users {
        let name = u["userName"].as_str().unwrap_or_default();
        let dn = format!("uid={},{people}", name.to_lowercase());
        dn_of.insert(u["id"].as_str().unwrap_or_default().to_string(), dn.clone());
        want.insert(dn.clone());
        let Some(attrs) = got.get(&dn) else {
            problems.push(format!("missing user {dn}"));
            continue;
        };
        let locked = attrs.contains_key("pwdaccountlockedtime");
        if u["active"] == Value::Bool(false) && !locked {
            problems.push(format!("{dn} is inactive but not locked"));
        }
        if u["active"] != Value::Bool(false) && locked {
            problems.push(format!("{dn} is active but locked"));
        }
        if let Some(title) = u["title"].as_str() {
            let have = attrs.get("title").and_then(|v| v.first());
            if have.map(String::as_str) != Some(title) {
                problems.push(format!("{dn}: title {have:?}, expected {title:?}"));
            }
        }
    }
    for g in groups {
        let name = g["displayName"].as_str().unwrap_or_default();
        let dn = format!("cn={},{groups_dn}", name.to_lowercase());
        want.insert(dn.clone());
        let Some(attrs) = got.get(&dn) else {
            problems.push(format!("missing group {dn}"));
            continue;
        };
        let mut expected: Vec<String> = g["members"]
            .as_array()
            .map(|m| {
                m.iter()
                    .map(|m| {
                        let id = m["value"].as_str().unwrap_or_default();
                        dn_of
                            .get(id)
                            .cloned()
                            .unwrap_or_else(|| format!("(unknown member {id})"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        if expected.is_empty() {
            expected.push(PLACEHOLDER.to_lowercase());
        }
        expected.sort();
        let mut have: Vec<String> = attrs
            .get("member")
            .map(|v| v.iter().map(|m| m.to_lowercase()).collect())
            .unwrap_or_default();
        have.sort();
        if have != expected {
            problems.push(format!("{dn}: members {have:?}, expected {expected:?}"));
        }
    }
    for dn in got.keys() {
        if !want.contains(dn) {
            problems.push(format!("extra {dn}"));
        }
    }
    problems
}

/// Runs the `scim2ldap` binary with `args`; returns (success, stdout, stderr).
pub fn cli(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_scim2ldap"))
        .args(args)
        .output()
        .expect("run scim2ldap");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Harness {
    /// The config file's path, for the command line.
    pub fn config_path(&self) -> String {
        self.dir.join("config.toml").display().to_string()
    }

    /// Replaces the directory with a fresh, empty slapd (the old one is
    /// stopped and removed) and points the config at it. Restart the
    /// daemon afterwards.
    pub async fn use_fresh_slapd(&mut self, opts: SlapdOptions) {
        let slapd = tokio::task::spawn_blocking(move || Slapd::start(opts))
            .await
            .unwrap()
            .expect("start slapd");
        std::fs::write(
            self.dir.join("config.toml"),
            config_text(&slapd, &self.token, "127.0.0.1:0"),
        )
        .unwrap();
        self.slapd = slapd;
    }

    /// Adds an entry as the administrator.
    pub async fn ldap_add(&self, dn: &str, attrs: &[(&str, &[&str])]) {
        let mut ldap = admin_conn(&self.slapd).await;
        let attrs: Vec<(String, std::collections::HashSet<String>)> = attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect();
        ldap.add(dn, attrs).await.unwrap().success().unwrap();
        let _ = ldap.unbind().await;
    }

    /// Renames an entry as the administrator (modrdn, old RDN removed).
    pub async fn ldap_rename(&self, dn: &str, new_rdn: &str) {
        let mut ldap = admin_conn(&self.slapd).await;
        ldap.modifydn(dn, new_rdn, true, None)
            .await
            .unwrap()
            .success()
            .unwrap();
        let _ = ldap.unbind().await;
    }
}

/// The helpers above must fail loudly, or every absence check after them
/// passes for the wrong reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_helpers_report_errors() {
    let mut h = Harness::start().await;
    let people = h.slapd.people_dn();
    // Absent: only noSuchObject.
    assert!(matches!(
        h.try_ldap_get(&format!("uid=nobody,{people}")).await,
        Ok(None)
    ));
    // A DN the server cannot parse is an error, not an absence.
    let bad = h.try_ldap_get("uid=a,,broken").await;
    assert!(bad.is_err(), "{bad:?}");
    // A write the writer will never apply: the directory is down, the
    // daemon stops, and waiting on the writer says so at once.
    h.slapd.stop().unwrap();
    let r = h
        .send(
            "POST",
            "/Users",
            Some(serde_json::json!({"userName": "stranded", "name": {"familyName": "S"}})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let (store, writer) = (h.daemon().store.clone(), h.daemon().writer.clone());
    h.stop_daemon().await;
    let started = std::time::Instant::now();
    let e = writer_caught_up(&store, &writer, Duration::from_secs(20))
        .await
        .unwrap_err();
    assert!(e.contains("the writer is gone"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// GET `url` over a fresh connection: status and body as text.
pub async fn get_text(url: &str) -> (u16, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let resp = client
        .request(Request::get(url).body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Writes the harness's config for a daemon listening on a free loopback
/// port (for tests that run the real binary); returns the port.
pub fn config_on_a_free_port(h: &Harness) -> u16 {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        h.dir.join("config.toml"),
        config_text(&h.slapd, &h.token, &format!("127.0.0.1:{port}")),
    )
    .unwrap();
    port
}
