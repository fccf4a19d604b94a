//! Tests of the throwaway slapd used by the tests, the benchmark and the
//! quick start, talking to the server
//! through the ldap-utils command line tools.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use scim2ldap_slapd::{Slapd, SlapdOptions};

fn run(cmd: &str, args: &[&str], stdin: Option<&str>, env: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(cmd);
    c.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ldapadd(s: &Slapd, ldif: &str) {
    let out = run(
        "ldapadd",
        &["-x", "-H", &s.uri(), "-D", &s.bind_dn(), "-w", s.password()],
        Some(ldif),
        &[],
    );
    ok(out, "ldapadd");
}

fn ldapmodify(s: &Slapd, ldif: &str) {
    let out = run(
        "ldapmodify",
        &["-x", "-H", &s.uri(), "-D", &s.bind_dn(), "-w", s.password()],
        Some(ldif),
        &[],
    );
    ok(out, "ldapmodify");
}

/// Admin search, LDIF output without line wrapping.
fn search(s: &Slapd, base: &str, filter: &str, attrs: &[&str]) -> String {
    let uri = s.uri();
    let bind_dn = s.bind_dn();
    let mut args = vec![
        "-x",
        "-LLL",
        "-o",
        "ldif-wrap=no",
        "-H",
        &uri,
        "-D",
        &bind_dn,
        "-w",
        s.password(),
        "-b",
        base,
        filter,
    ];
    args.extend_from_slice(attrs);
    ok(run("ldapsearch", &args, None, &[]), "ldapsearch")
}

fn answers(uri: &str) -> bool {
    run(
        "ldapsearch",
        &[
            "-x",
            "-H",
            uri,
            "-b",
            "",
            "-s",
            "base",
            "-o",
            "nettimeout=2",
            "namingContexts",
        ],
        None,
        &[],
    )
    .status
    .success()
}

fn add_person(s: &Slapd, uid: &str) -> String {
    let dn = format!("uid={uid},{}", s.people_dn());
    ldapadd(
        s,
        &format!(
            "dn: {dn}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid} Example\nsn: Example\n\
             mail: {uid}@example.com\nuserPassword: pw-{uid}\n"
        ),
    );
    dn
}

/// Gone or a zombie: either way no longer serving.
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                == Some("Z")
        }
    }
}

fn wait_gone(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if process_gone(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    process_gone(pid)
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("slapd-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn person_group_and_memberof() {
    let s = Slapd::start(SlapdOptions::with_overlays()).unwrap();
    assert!(s.uri().starts_with("ldap://127.0.0.1:"));
    assert_eq!(s.uri(), format!("ldap://127.0.0.1:{}", s.port()));
    assert_eq!(s.bind_dn(), "cn=admin,dc=example,dc=com");
    assert_eq!(s.people_dn(), "ou=people,dc=example,dc=com");
    assert_eq!(s.groups_dn(), "ou=groups,dc=example,dc=com");
    assert!(s.ldaps_uri().is_none() && s.ca_cert().is_none());

    let alice = add_person(&s, "alice");
    let bob = add_person(&s, "bob");
    let group = format!("cn=admins,{}", s.groups_dn());
    ldapadd(
        &s,
        &format!(
            "dn: {group}\nobjectClass: groupOfNames\ncn: admins\nmember: {alice}\nmember: {bob}\n"
        ),
    );

    let out = search(
        &s,
        &s.people_dn(),
        "(uid=alice)",
        &["mail", "memberOf", "userPassword"],
    );
    assert!(out.contains("mail: alice@example.com"), "{out}");
    assert!(out.contains(&format!("memberOf: {group}")), "{out}");
    // ppolicy_hash_cleartext: a plaintext password is stored hashed.
    assert!(out.contains("userPassword:: "), "{out}");
    let out = search(&s, &s.groups_dn(), "(cn=admins)", &["member"]);
    assert!(out.contains(&format!("member: {bob}")), "{out}");

    // refint: deleting bob removes him from the group.
    let del = run(
        "ldapdelete",
        &[
            "-x",
            "-H",
            &s.uri(),
            "-D",
            &s.bind_dn(),
            "-w",
            s.password(),
            &bob,
        ],
        None,
        &[],
    );
    ok(del, "ldapdelete");
    let out = search(&s, &s.groups_dn(), "(cn=admins)", &["member"]);
    assert!(!out.contains(&bob) && out.contains(&alice), "{out}");

    // The user can bind with the password it was given.
    let who = run(
        "ldapwhoami",
        &["-x", "-H", &s.uri(), "-D", &alice, "-w", "pw-alice"],
        None,
        &[],
    );
    assert!(ok(who, "ldapwhoami").contains(&alice));
}

#[test]
fn stop_and_restart_keep_data_and_port() {
    let mut s = Slapd::start(SlapdOptions::default()).unwrap();
    let port = s.port();
    let pid = s.pid().unwrap();
    add_person(&s, "carol");
    s.stop().unwrap();
    assert!(!s.is_running());
    assert!(s.pid().is_none());
    assert!(process_gone(pid));
    assert!(!answers(&s.uri()));
    s.stop().unwrap(); // idempotent

    s.restart().unwrap();
    assert!(s.is_running());
    assert_eq!(s.port(), port);
    let out = search(&s, &s.people_dn(), "(uid=carol)", &["uid"]);
    assert!(out.contains("uid: carol"), "{out}");
    // Base entries were not loaded twice (that would have failed the start),
    // and restart while running works too.
    s.restart().unwrap();
    assert_eq!(s.port(), port);
    assert!(answers(&s.uri()));
}

#[test]
fn kill_and_restart() {
    let mut s = Slapd::start(SlapdOptions::default()).unwrap();
    let port = s.port();
    add_person(&s, "dave");
    let pid = s.pid().unwrap();
    s.kill();
    assert!(!s.is_running());
    assert!(process_gone(pid));
    assert!(!answers(&s.uri()));
    s.restart().unwrap();
    assert_eq!(s.port(), port);
    let out = search(&s, &s.people_dn(), "(uid=dave)", &["uid"]);
    assert!(out.contains("uid: dave"), "{out}");
}

#[test]
fn two_servers_get_different_ports() {
    let a = Slapd::start(SlapdOptions::default()).unwrap();
    let b = Slapd::start(SlapdOptions::default()).unwrap();
    assert_ne!(a.port(), b.port());
    assert_ne!(a.dir(), b.dir());
    add_person(&a, "only-in-a");
    assert!(search(&b, b.suffix(), "(uid=only-in-a)", &["uid"]).is_empty());
    assert!(search(&a, a.suffix(), "(uid=only-in-a)", &["uid"]).contains("uid: only-in-a"));
}

#[test]
fn ppolicy_account_lock() {
    let s = Slapd::start(SlapdOptions::default()).unwrap();
    let erin = add_person(&s, "erin");
    // Failed binds alone never lock (pwdMaxFailure 0).
    for _ in 0..5 {
        let bad = run(
            "ldapwhoami",
            &["-x", "-H", &s.uri(), "-D", &erin, "-w", "wrong"],
            None,
            &[],
        );
        assert!(!bad.status.success());
    }
    ldapmodify(
        &s,
        &format!(
            "dn: {erin}\nchangetype: modify\nreplace: pwdAccountLockedTime\npwdAccountLockedTime: 000001010000Z\n"
        ),
    );
    let out = search(&s, &s.people_dn(), "(uid=erin)", &["pwdAccountLockedTime"]);
    assert!(out.contains("pwdAccountLockedTime: 000001010000Z"), "{out}");
    // A locked account cannot bind.
    let who = run(
        "ldapwhoami",
        &["-x", "-H", &s.uri(), "-D", &erin, "-w", "pw-erin"],
        None,
        &[],
    );
    assert!(!who.status.success());
    ldapmodify(
        &s,
        &format!("dn: {erin}\nchangetype: modify\ndelete: pwdAccountLockedTime\n"),
    );
    let who = run(
        "ldapwhoami",
        &["-x", "-H", &s.uri(), "-D", &erin, "-w", "pw-erin"],
        None,
        &[],
    );
    ok(who, "ldapwhoami after unlock");
}

#[test]
fn ldaps_and_starttls() {
    let s = Slapd::start(SlapdOptions {
        ldaps_port: Some(0),
        ..Default::default()
    })
    .unwrap();
    let ldaps = s.ldaps_uri().unwrap();
    let ca = s.ca_cert().unwrap();
    assert!(ca.is_file());
    assert_ne!(ldaps, format!("ldaps://127.0.0.1:{}", s.port()));
    assert!(!ldaps.ends_with(":0"));
    let search = |uri: &str, extra: &[&str]| {
        let mut args = vec!["-x", "-LLL", "-H", uri, "-b", "", "-s", "base"];
        args.extend_from_slice(extra);
        args.push("namingContexts");
        run("ldapsearch", &args, None, &[("LDAPTLS_CACERT", &ca)])
    };
    let out = ok(search(&ldaps, &[]), "ldapsearch over ldaps");
    assert!(out.contains("namingContexts: dc=example,dc=com"), "{out}");
    ok(search(&s.uri(), &["-ZZ"]), "ldapsearch with StartTLS");
    // Without the CA the certificate must be rejected.
    let out = run(
        "ldapsearch",
        &["-x", "-H", &ldaps, "-b", "", "-s", "base", "namingContexts"],
        None,
        &[("LDAPTLS_CACERT", Path::new("/dev/null"))],
    );
    assert!(!out.status.success());
}

#[test]
fn default_has_no_overlays() {
    let s = Slapd::start(SlapdOptions::default()).unwrap();
    let conf = std::fs::read_to_string(s.dir().join("slapd.conf")).unwrap();
    assert!(!conf.contains("overlay memberof"), "{conf}");
    assert!(!conf.contains("overlay refint"), "{conf}");
    assert!(conf.contains("overlay ppolicy"), "{conf}");
}

#[test]
fn nosync_and_no_overlays_start() {
    let s = Slapd::start(SlapdOptions {
        nosync: true,
        memberof: false,
        refint: false,
        ppolicy: false,
        extra_schemas: vec!["dyngroup.schema".into()],
        ..Default::default()
    })
    .unwrap();
    let conf = std::fs::read_to_string(s.dir().join("slapd.conf")).unwrap();
    assert!(conf.contains("\ndbnosync\n"));
    assert!(!conf.contains("overlay"));
    add_person(&s, "frank");
    let out = search(&s, s.suffix(), "(objectClass=organizationalUnit)", &["ou"]);
    assert!(out.contains("ou: people") && out.contains("ou: groups"));
    assert!(!out.contains("ou: policies"), "{out}");
}

#[test]
fn custom_suffix_and_password() {
    let s = Slapd::start(SlapdOptions {
        suffix: "dc=acme,dc=test".into(),
        admin_password: "p@ss w\"ord".into(),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(s.people_dn(), "ou=people,dc=acme,dc=test");
    add_person(&s, "gina");
    assert!(search(&s, s.suffix(), "(uid=gina)", &["uid"]).contains("uid: gina"));
}

#[test]
fn persistent_long_dir_with_space() {
    let top = scratch_dir("persistent");
    let mut dir = top.clone();
    for i in 0..6 {
        dir.push(format!(
            "a rather long directory name number {i} to exceed unix socket limits"
        ));
    }
    assert!(dir.as_os_str().len() > 300);
    let (port, pid) = {
        let s = Slapd::start_in(&dir, SlapdOptions::default()).unwrap();
        add_person(&s, "hank");
        (s.port(), s.pid().unwrap())
    };
    assert!(process_gone(pid));
    assert!(
        dir.join("data").join("data.mdb").is_file(),
        "start_in keeps the dir"
    );

    // Second start on the same dir: data kept, base entries not loaded again.
    let s = Slapd::start_in(
        &dir,
        SlapdOptions {
            port: Some(port),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(s.port(), port);
    assert!(search(&s, s.suffix(), "(uid=hank)", &["uid"]).contains("uid: hank"));
    drop(s);
    std::fs::remove_dir_all(&top).unwrap();
}

#[test]
fn second_start_in_same_dir_while_running_is_refused() {
    let dir = scratch_dir("twice");
    let a = Slapd::start_in(&dir, SlapdOptions::default()).unwrap();
    let err = Slapd::start_in(&dir, SlapdOptions::default()).unwrap_err();
    assert!(err.to_string().contains("still running"), "{err}");
    assert!(answers(&a.uri()));
    drop(a);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn drop_stops_server_and_removes_dir() {
    let s = Slapd::start(SlapdOptions::default()).unwrap();
    let pid = s.pid().unwrap();
    let dir = s.dir().to_path_buf();
    assert!(dir.starts_with(std::env::temp_dir().canonicalize().unwrap()));
    drop(s);
    assert!(process_gone(pid));
    assert!(!dir.exists());
}

#[test]
fn panic_unwind_stops_server() {
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let s = Slapd::start(SlapdOptions::default()).unwrap();
        tx.send((s.pid().unwrap(), s.dir().to_path_buf())).unwrap();
        panic!("test failure while the server runs");
    })
    .join();
    assert!(result.is_err());
    let (pid, dir) = rx.recv().unwrap();
    assert!(process_gone(pid));
    assert!(!dir.exists());
}

#[test]
fn explicit_port_in_use_is_reported() {
    let held = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = held.local_addr().unwrap().port();
    let err = Slapd::start(SlapdOptions {
        port: Some(port),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
    assert!(err.to_string().contains("already in use"), "{err}");

    // restart() on a port someone took meanwhile fails the same way.
    let mut s = Slapd::start(SlapdOptions::default()).unwrap();
    s.stop().unwrap();
    let _thief = TcpListener::bind((Ipv4Addr::LOCALHOST, s.port())).unwrap();
    let err = s.restart().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
    assert!(!s.is_running());
}

#[test]
fn bad_options_say_what_to_do() {
    let err = Slapd::start(SlapdOptions {
        extra_schemas: vec!["no-such.schema".into()],
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        err.to_string().contains("/etc/ldap/schema/no-such.schema"),
        "{err}"
    );
    let err = Slapd::start(SlapdOptions {
        suffix: "o=acme".into(),
        ..Default::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("must start with dc="), "{err}");
}

/// Child side of `watchdog_kills_orphaned_slapd`: owns a server and is then
/// killed with SIGKILL, so that no destructor runs.
#[test]
#[ignore = "helper run by watchdog_kills_orphaned_slapd"]
fn watchdog_helper() {
    let Some(dir) = std::env::var_os("SLAPD_WATCHDOG_DIR") else {
        return;
    };
    let s = Slapd::start_in(Path::new(&dir), SlapdOptions::default()).unwrap();
    println!("PID {}", s.pid().unwrap());
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn watchdog_kills_orphaned_slapd() {
    let dir = scratch_dir("watchdog");
    let mut helper = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "slapd::watchdog_helper",
            "--ignored",
            "--nocapture",
        ])
        .env("SLAPD_WATCHDOG_DIR", &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(helper.stdout.take().unwrap()).lines();
    let pid: u32 = loop {
        let line = lines.next().expect("helper printed no PID").unwrap();
        if let Some(pid) = line.strip_prefix("PID ") {
            break pid.trim().parse().unwrap();
        }
    };
    assert!(!process_gone(pid));
    helper.kill().unwrap();
    helper.wait().unwrap();
    assert!(
        wait_gone(pid, Duration::from_secs(5)),
        "slapd {pid} outlived its owner"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ppolicy_turned_on_for_existing_dir() {
    let dir = scratch_dir("ppolicy-later");
    let off = SlapdOptions {
        ppolicy: false,
        ..Default::default()
    };
    {
        let s = Slapd::start_in(&dir, off).unwrap();
        add_person(&s, "ivan");
        assert!(search(&s, s.suffix(), "(ou=policies)", &["ou"]).is_empty());
    }
    let s = Slapd::start_in(&dir, SlapdOptions::default()).unwrap();
    let out = search(&s, s.suffix(), "(objectClass=pwdPolicy)", &["pwdLockout"]);
    assert!(out.contains("pwdLockout: TRUE"), "{out}");
    assert!(search(&s, s.suffix(), "(uid=ivan)", &["uid"]).contains("uid: ivan"));
    drop(s);
    std::fs::remove_dir_all(&dir).unwrap();
}
