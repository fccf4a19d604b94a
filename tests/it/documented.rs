//! Behaviour the README promises that no other test covered: SIGTERM lets
//! in-flight requests finish, the real `serve --dry-run` flag, undoing
//! `move_to` on reactivation, group adoption, and every shipped preset
//! loading.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{cli, first, Harness, MAPPING};

/// The daemon binary serving `h`'s config on a port of its own (the
/// in-process daemon of `h` is stopped first), logging to `daemon.log`.
struct Binary {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Binary {
    async fn start(h: &mut Harness, args: &[&str]) -> Binary {
        h.stop_daemon().await;
        let port = crate::harness::config_on_a_free_port(h);
        let log = h.dir.join("daemon.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_scim2ldap"))
            .arg("serve")
            .args(args)
            .arg("--config")
            .arg(h.dir.join("config.toml"))
            .env("SCIM2LDAP_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the daemon did not listen");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        h.base = format!("http://127.0.0.1:{port}/scim/v2");
        Binary { child, port, log }
    }

    fn signal(&self, sig: &str) {
        let s = Command::new("kill")
            .args(["-s", sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(s.success());
    }

    /// Waits for the process to exit; its status.
    fn wait(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "the daemon did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_request_finish() {
    let mut h = Harness::start().await;
    let mut bin = Binary::start(&mut h, &[]).await;
    let body =
        json!({"userName": "inflight", "name": {"givenName": "G", "familyName": "F"}}).to_string();
    let (head, tail) = body.split_at(body.len() / 2);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", bin.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "POST /scim/v2/Users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/scim+json\r\nContent-Length: {}\r\n\r\n{head}",
        h.token,
        body.len()
    )
    .unwrap();
    s.flush().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The request is in flight (headers and half the body read): SIGTERM.
    bin.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        bin.child.try_wait().unwrap().is_none(),
        "the daemon exited with a request in flight"
    );
    // New connections are no longer accepted.
    assert!(std::net::TcpStream::connect(("127.0.0.1", bin.port)).is_err());
    s.write_all(tail.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    let status = bin.wait(Duration::from_secs(20));
    assert!(status.success(), "{status}: {}", bin.log());
    // The acknowledged create is in the store (read with the daemon gone).
    let (ok, out, err) = tokio::task::spawn_blocking({
        let c = h.config_path();
        move || cli(&["journal", "--config", &c, "list"])
    })
    .await
    .unwrap();
    assert!(ok && out.contains("inflight"), "{out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_dry_run_flag_logs_ldif_and_sends_nothing() {
    let mut h = Harness::start().await;
    let mut bin = Binary::start(&mut h, &["--dry-run"]).await;
    let r = h
        .send(
            "POST",
            "/Users",
            Some(json!({"userName": "dry", "name": {"givenName": "G", "familyName": "F"}})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !bin
        .log()
        .contains("dn: uid=dry,ou=people,dc=example,dc=com")
    {
        assert!(Instant::now() < deadline, "no LDIF logged:\n{}", bin.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(bin.log().contains("dry run"), "{}", bin.log());
    assert!(h
        .ldap_get(&format!("uid=dry,{}", h.slapd.people_dn()))
        .await
        .is_none());
    bin.signal("TERM");
    assert!(bin.wait(Duration::from_secs(20)).success());
    // Its journal is apart from the real one: the real store never saw it.
    let state = h.dir.join("state");
    assert!(state.join("dry-run").is_dir());
    let (ok, out, err) = tokio::task::spawn_blocking({
        let c = h.config_path();
        move || cli(&["journal", "--config", &c, "list"])
    })
    .await
    .unwrap();
    assert!(ok && !out.contains("dry"), "{out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reactivation_undoes_move_to() {
    let mapping = MAPPING.replace(
        "# move_to = \"ou=disabled,dc=example,dc=com\"",
        "move_to = \"ou=groups,dc=example,dc=com\"",
    );
    assert!(
        mapping.contains("\nmove_to = "),
        "the example's move_to line changed"
    );
    let h = Harness::start_with(Default::default(), &mapping).await;
    let r = h
        .send(
            "POST",
            "/Users",
            Some(json!({"userName": "mover", "name": {"givenName": "G", "familyName": "F"}, "title": "t"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    let home = format!("uid=mover,{}", h.slapd.people_dn());
    let away = format!("uid=mover,{}", h.slapd.groups_dn());
    for (active, here, not_here) in [
        (false, &away, &home),
        (true, &home, &away),
        (false, &away, &home),
        (true, &home, &away),
    ] {
        let r = h
            .send(
                "PATCH",
                &format!("/Users/{id}"),
                Some(
                    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                            "Operations": [{"op": "replace", "path": "active", "value": active}]}),
                ),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        h.settle().await;
        let e = h
            .ldap_get(here)
            .await
            .unwrap_or_else(|| panic!("active={active}: not at {here}"));
        assert!(
            h.ldap_get(not_here).await.is_none(),
            "active={active}: still at {not_here}"
        );
        assert_eq!(
            first(&e, "pwdAccountLockedTime").is_some(),
            !active,
            "{e:?}"
        );
        assert_eq!(first(&e, "title").as_deref(), Some("t"));
    }
    assert_eq!(h.daemon().store.pending_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_lookup_adopts_an_existing_group_entry() {
    // Groups are adopted only when the mapping says so.
    let mapping = crate::harness::MAPPING.replacen(
        "\n[group.attributes]\n",
        "\n[group.adopt]\nenabled = true\n\n[group.attributes]\n",
        1,
    );
    assert_ne!(mapping, crate::harness::MAPPING);
    let h = Harness::start_with(Default::default(), &mapping).await;
    let people = h.slapd.people_dn();
    let groups = h.slapd.groups_dn();
    // A user the daemon manages, and a group made by hand naming it.
    let r = h
        .send(
            "POST",
            "/Users",
            Some(json!({"userName": "member1", "name": {"givenName": "G", "familyName": "F"}})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let member1 = r.body["id"].as_str().unwrap().to_string();
    let r = h
        .send(
            "POST",
            "/Users",
            Some(json!({"userName": "member2", "name": {"givenName": "G", "familyName": "F"}})),
        )
        .await;
    let member2 = r.body["id"].as_str().unwrap().to_string();
    h.settle().await;
    let dn = format!("cn=legacy,{groups}");
    let m1 = format!("uid=member1,{people}");
    h.ldap_add(
        &dn,
        &[
            ("objectClass", &["groupOfNames"]),
            ("cn", &["legacy"]),
            ("member", &[&m1]),
        ],
    )
    .await;
    let before = h.ldap_get(&dn).await.unwrap();

    // Entra looks the group up by displayName before creating it.
    let r = h
        .send(
            "GET",
            "/Groups?filter=displayName%20eq%20%22legacy%22",
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["totalResults"], 1, "{}", r.body);
    let g = &r.body["Resources"][0];
    let gid = g["id"].as_str().unwrap().to_string();
    // Adoption wrote nothing, and linked the entry by its entryUUID.
    let after = h.ldap_get(&dn).await.unwrap();
    assert_eq!(first(&after, "entryCSN"), first(&before, "entryCSN"));
    let link = h
        .daemon()
        .store
        .link(scim2ldap::store::Kind::Group, &gid)
        .unwrap()
        .expect("linked");
    assert_eq!(link.uuid, first(&before, "entryUUID"));
    // A create with the same name is refused; the adopted group is managed.
    let r = h
        .send("POST", "/Groups", Some(json!({"displayName": "legacy"})))
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    let r = h
        .send(
            "PATCH",
            &format!("/Groups/{gid}"),
            Some(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                        "Operations": [{"op": "add", "path": "members", "value": [{"value": member2}]}]})),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    h.settle().await;
    let e = h.ldap_get(&dn).await.unwrap();
    let mut members: Vec<String> = e["member"].iter().map(|m| m.to_lowercase()).collect();
    members.sort();
    assert!(
        members.contains(&format!("uid=member2,{people}")),
        "{members:?}"
    );
    let r = h.send("GET", &format!("/Groups/{gid}"), None).await;
    let ids: Vec<&str> = r.body["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["value"].as_str())
        .collect();
    assert!(ids.contains(&member2.as_str()), "{}", r.body);
    // Adopted groups carry no members in SCIM until the identity provider
    // sends them (ARCHITECTURE, "Adopted groups carry no members"), and
    // the member the entry had stays in the directory: the member add is a
    // delta, and keep_members (the default) keeps what was there.
    assert!(!ids.contains(&member1.as_str()), "{}", r.body);
    assert!(members.contains(&m1), "{members:?}");
}

/// Every shipped preset loads and validates (config.example.toml is
/// parsed by the config's unit tests).
#[test]
fn every_example_loads() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        scim2ldap::model::Model::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        seen.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    seen.sort();
    for preset in [
        "389ds.toml",
        "ad.toml",
        "freeipa.toml",
        "openldap.toml",
        "openldap-posix.toml",
        "openldap-rfc2307bis.toml",
    ] {
        assert!(seen.iter().any(|s| s == preset), "{preset} not in {seen:?}");
    }
}
