//! Passwords: write-only, sent to the directory only when the mapping maps
//! them, kept by the store only until applied, never in a log line, a
//! dry-run LDIF or any file of the store. The canary tests run the real
//! binary (its logs captured at debug level) against a real slapd whose
//! ppolicy overlay hashes cleartext passwords, and grep every byte of every
//! file the daemon keeps.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ldap3::LdapConnAsync;
use serde_json::{json, Value};

use crate::harness::{config_on_a_free_port, Harness, MAPPING};
use scim2ldap_slapd::SlapdOptions;

/// The OpenLDAP preset with the password mapped to `userPassword`.
fn mapping_with_password() -> String {
    format!("{MAPPING}\n[user.password]\nattribute = \"userPassword\"\n")
}

/// A password no other test uses, so that finding it anywhere is a leak.
fn canary(tag: &str) -> String {
    format!("Cn{tag}-{}", uuid::Uuid::new_v4().simple())
}

/// Okta's create body, with a password.
fn okta_user(user: &str, password: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": user,
        "name": {"givenName": "Pat", "familyName": "Doe"},
        "emails": [{"primary": true, "value": user, "type": "work"}],
        "displayName": "Pat Doe",
        "locale": "en-US",
        "externalId": "00u1",
        "groups": [],
        "password": password,
        "active": true
    })
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    out.push(p);
                }
            }
        }
    }
    out
}

/// Whether `dn` can bind with `password`.
async fn binds(h: &Harness, dn: &str, password: &str) -> bool {
    let (conn, mut ldap) = LdapConnAsync::new(&h.slapd.uri()).await.unwrap();
    ldap3::drive!(conn);
    let ok = matches!(ldap.simple_bind(dn, password).await.map(|r| r.rc), Ok(0));
    let _ = ldap.unbind().await;
    ok
}

/// Waits (up to 20 s) until `dn` binds with `password`.
async fn until_binds(h: &Harness, dn: &str, password: &str) {
    let start = Instant::now();
    while !binds(h, dn, password).await {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{dn} never could bind with its password"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The daemon binary, serving the harness's config on a free port, its
/// stdout and stderr in files under the harness folder.
struct Binary {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Binary {
    async fn start(h: &mut Harness, extra: &[&str]) -> Binary {
        let port = config_on_a_free_port(h);
        let out = h.dir.join(format!("stdout-{port}.log"));
        let err = h.dir.join(format!("stderr-{port}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_scim2ldap"))
            .args(["serve", "--config"])
            .arg(h.dir.join("config.toml"))
            .args(extra)
            .env("SCIM2LDAP_LOG", "debug")
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        h.base = format!("http://127.0.0.1:{port}/scim/v2");
        let start = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the daemon did not listen; stderr:\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Binary { child, out, err }
    }

    /// SIGTERM, and waits for the exit; returns everything it logged.
    fn stop(mut self) -> String {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "{exit:?}");
        std::fs::read_to_string(&self.out).unwrap() + &std::fs::read_to_string(&self.err).unwrap()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the store holds no pending password any more.
async fn until_no_pending_password(store: &Path) {
    let folder = store.join("pending-passwords");
    let start = Instant::now();
    loop {
        let n = std::fs::read_dir(&folder).map_or(0, Iterator::count);
        if n == 0 {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{n} password files still held in {}",
            folder.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_mapped_password_reaches_the_directory_and_nothing_keeps_it() {
    let mut h = Harness::start_with(SlapdOptions::default(), &mapping_with_password()).await;
    h.stop_daemon().await;
    let bin = Binary::start(&mut h, &[]).await;
    let (first, second) = (canary("first"), canary("second"));
    let dn = "uid=pat.pw@example.com,ou=people,dc=example,dc=com";

    let spc = h.send("GET", "/ServiceProviderConfig", None).await;
    assert_eq!(
        spc.body["changePassword"]["supported"], true,
        "{}",
        spc.body
    );

    // Create, as Okta sends it.
    let r = h
        .send(
            "POST",
            "/Users",
            Some(okta_user("pat.pw@example.com", &first)),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(r.body.get("password").is_none(), "returned: never");
    let id = r.body["id"].as_str().unwrap().to_string();
    until_binds(&h, dn, &first).await;
    // Hashed by the directory (ppolicy_hash_cleartext), not stored as sent.
    let entry = h.ldap_get(dn).await.unwrap();
    let stored = crate::harness::first(&entry, "userPassword").unwrap_or_default();
    assert!(!stored.contains(&first), "stored in clear: {stored}");

    // Okta's PUT never carries the password: the directory keeps it.
    let mut put = okta_user("pat.pw@example.com", "");
    put.as_object_mut().unwrap().remove("password");
    put["displayName"] = json!("Pat Q. Doe");
    let r = h.send("PUT", &format!("/Users/{id}"), Some(put)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let start = Instant::now();
    while crate::harness::first(&h.ldap_get(dn).await.unwrap(), "cn").as_deref()
        != Some("Pat Q. Doe")
    {
        assert!(start.elapsed() < Duration::from_secs(20), "PUT not applied");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        binds(&h, dn, &first).await,
        "a PUT without password removed it"
    );

    // A password change (Okta's PATCH) replaces it.
    let patch = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "value": {"password": second}}]
    });
    let r = h.send("PATCH", &format!("/Users/{id}"), Some(patch)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.get("password").is_none());
    until_binds(&h, dn, &second).await;
    assert!(!binds(&h, dn, &first).await, "the old password still works");

    // Removing it is refused: write-only, and not this server's to delete.
    let remove = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "remove", "path": "password"}]
    });
    let r = h.send("PATCH", &format!("/Users/{id}"), Some(remove)).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["scimType"], "mutability", "{}", r.body);

    let store = h.dir.join("state");
    until_no_pending_password(&store).await;
    let log = bin.stop();
    assert!(log.contains("created"), "the log was captured:\n{log}");
    for c in [&first, &second] {
        assert!(!log.contains(c.as_str()), "a password in the log:\n{log}");
        let found = files_holding(&h.dir, c);
        assert!(found.is_empty(), "a password in {found:?}");
    }

    // Replaying every entry (the store forgot the passwords) leaves the
    // directory's password as it is.
    h.start_daemon().await;
    let n = h
        .daemon()
        .store
        .requeue(1, h.daemon().store.last_seq())
        .unwrap();
    assert!(n >= 3, "{n}");
    h.daemon().writer.wake();
    h.settle().await;
    assert!(
        binds(&h, dn, &second).await,
        "a replay removed the password"
    );
    h.stop_daemon().await;
    for c in [&first, &second] {
        let found = files_holding(&h.dir, c);
        assert!(found.is_empty(), "a password in {found:?}");
    }
}

#[tokio::test]
async fn an_unmapped_password_is_dropped_at_the_edge() {
    let h = Harness::start().await;
    let c = canary("unmapped");
    let spc = h.send("GET", "/ServiceProviderConfig", None).await;
    assert_eq!(spc.body["changePassword"]["supported"], false);

    // A create with a password succeeds without it.
    let r = h
        .send("POST", "/Users", Some(okta_user("lee@example.com", &c)))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    // Acknowledged means on disk: the password was never written.
    let found = files_holding(&h.dir, &c);
    assert!(found.is_empty(), "the password in {found:?}");

    // A password change alone would reach nothing: 400, so the identity
    // provider does not report it synced.
    let only = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "value": {"password": c}}]
    });
    let r = h.send("PATCH", &format!("/Users/{id}"), Some(only)).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let detail = r.body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("writes no password") && detail.contains("Sync Password"),
        "{detail}"
    );
    // With other changes, those go ahead.
    let both = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "value": {"password": c, "displayName": "Lee B"}}]
    });
    let r = h.send("PATCH", &format!("/Users/{id}"), Some(both)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["displayName"], "Lee B");
    h.settle().await;
    let entry = h
        .ldap_get("uid=lee@example.com,ou=people,dc=example,dc=com")
        .await
        .unwrap();
    assert!(crate::harness::first(&entry, "userPassword").is_none());
    let found = files_holding(&h.dir, &c);
    assert!(found.is_empty(), "the password in {found:?}");
}

#[tokio::test]
async fn dry_run_ldif_redacts_the_password() {
    let mut h = Harness::start_with(SlapdOptions::default(), &mapping_with_password()).await;
    h.stop_daemon().await;
    let bin = Binary::start(&mut h, &["--dry-run"]).await;
    let c = canary("dry");
    let r = h
        .send("POST", "/Users", Some(okta_user("dry@example.com", &c)))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let start = Instant::now();
    while !std::fs::read_to_string(&bin.out)
        .unwrap_or_default()
        .contains("would converge")
    {
        assert!(start.elapsed() < Duration::from_secs(20), "no LDIF logged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = bin.stop();
    assert!(log.contains("userPassword:: <redacted>"), "{log}");
    assert!(!log.contains(&c), "the password in the dry-run log:\n{log}");
    let found = files_holding(&h.dir, &c);
    assert!(found.is_empty(), "the password in {found:?}");
}

/// AD takes `unicodePwd` only over an encrypted connection: a mapping
/// that writes it with a plain `ldap://` URL does not start (nor reload).
#[tokio::test]
async fn ad_passwords_need_an_encrypted_connection() {
    let mut h = Harness::start().await;
    let text = format!(
        "{MAPPING}\n[user.password]\nattribute = \"unicodePwd\"\nformat = \"ad_unicode_pwd\"\n"
    );
    std::fs::write(h.dir.join("mapping.toml"), text).unwrap();
    let e = h
        .daemon()
        .reload(&h.dir.join("config.toml"))
        .expect_err("a reload keeps the old mapping");
    assert!(e.to_string().contains("ldaps://"), "{e}");
    h.stop_daemon().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let e = match scim2ldap::daemon::start(&h.config(), listener).await {
        Ok(_) => panic!("started with unicodePwd over plain LDAP"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("unicodePwd") && e.contains("ldaps://"), "{e}");
}
