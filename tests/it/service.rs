//! Running as a service: reload, HTTPS, LDAPS, `check`, `--dry-run`,
//! metrics and health, limits, token rotation, and the systemd notify
//! protocol of the real binary.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use scim2ldap_slapd::SlapdOptions;

use crate::harness::{get_text, Harness, MAPPING};

fn user(name: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name,
        "name": {"givenName": "Test", "familyName": "User"},
        "active": true
    })
}

/// Rewrites the harness's config with `edit` and restarts the daemon.
async fn restart_with(h: &mut Harness, edit: impl Fn(String) -> String) {
    let path = h.dir.join("config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, edit(text)).unwrap();
    h.stop_daemon().await;
    let cfg = h.config();
    start_retrying(h, &cfg).await;
}

/// Starts the daemon with `cfg`, retrying while the previous one's last
/// connection tasks still hold the store's lock.
async fn start_retrying(h: &mut Harness, cfg: &scim2ldap::config::Config) {
    let mut last = None;
    for _ in 0..50 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        match scim2ldap::daemon::start(cfg, listener).await {
            Ok(running) => {
                h.base = format!("http://{}/scim/v2", running.addr);
                h.daemon = Some(running);
                return;
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the daemon did not restart: {:#}", last.unwrap());
}

/// Adds `lines` right after the `[section]` header.
fn in_section(text: &str, section: &str, lines: &str) -> String {
    text.replacen(
        &format!("[{section}]\n"),
        &format!("[{section}]\n{lines}\n"),
        1,
    )
}

/// Sends raw bytes on a fresh connection and returns what came back before
/// the server closed it (or `timeout` passed).
async fn raw_exchange(addr: std::net::SocketAddr, data: &[u8], timeout: Duration) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(data).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(timeout, s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_takes_a_good_mapping_and_refuses_a_bad_one() {
    let h = Harness::start().await;
    let mapping = h.dir.join("mapping.toml");
    let config = h.dir.join("config.toml");

    // Good: map title to description as well.
    let good = MAPPING.replacen(
        "title = \"title\"\n",
        "title = \"title\"\ndescription = \"title\"\n",
        1,
    );
    assert_ne!(good, MAPPING);
    std::fs::write(&mapping, &good).unwrap();
    h.daemon().reload(&config).expect("a valid mapping reloads");
    let mut u = user("rita");
    u["title"] = json!("Chief");
    assert_eq!(h.send("POST", "/Users", Some(u)).await.status, 201);
    h.settle().await;
    let e = h
        .ldap_get("uid=rita,ou=people,dc=example,dc=com")
        .await
        .unwrap();
    assert_eq!(
        crate::harness::first(&e, "description").as_deref(),
        Some("Chief")
    );

    // Bad: an unknown key. Refused with file, line and key; the good
    // mapping stays in force.
    std::fs::write(
        &mapping,
        good.replacen("[user]\n", "[user]\nbogus = 1\n", 1),
    )
    .unwrap();
    let e = h.daemon().reload(&config).unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("mapping.toml:") && msg.contains("bogus"),
        "{msg}"
    );
    let mut u = user("sam");
    u["title"] = json!("Second");
    assert_eq!(h.send("POST", "/Users", Some(u)).await.status, 201);
    h.settle().await;
    let e = h
        .ldap_get("uid=sam,ou=people,dc=example,dc=com")
        .await
        .unwrap();
    assert_eq!(
        crate::harness::first(&e, "description").as_deref(),
        Some("Second")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_rotate_on_reload_and_both_work_meanwhile() {
    let mut h = Harness::start().await;
    let old = h.token.clone();
    let new = scim2ldap::token::generate().unwrap();
    let hash = scim2ldap::token::TokenHash::of(&new).to_hex();
    let config = h.dir.join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}\n[[tokens]]\nname = \"next\"\nsha256 = \"{hash}\"\n"),
    )
    .unwrap();
    h.daemon().reload(&config).unwrap();
    for t in [&old, &new] {
        let r = h.send_raw("GET", "/Users", None, None, Some(t), &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // Retire the old token.
    let text = std::fs::read_to_string(&config).unwrap();
    let start = text.find("[[tokens]]\nname = \"test\"").unwrap();
    let end = start + text[start..].find("\n[[tokens]]").unwrap();
    std::fs::write(&config, format!("{}{}", &text[..start], &text[end + 1..])).unwrap();
    h.daemon().reload(&config).unwrap();
    let r = h
        .send_raw("GET", "/Users", None, None, Some(&old), &[])
        .await;
    assert_eq!(r.status, 401);
    h.token = new;
    assert_eq!(h.send("GET", "/Users", None).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_and_health_endpoints_need_no_token() {
    let h = Harness::start().await;
    assert_eq!(
        h.send("POST", "/Users", Some(user("mia"))).await.status,
        201
    );
    h.settle().await;
    let d = h.daemon();
    let ops = d.ops_addr.expect("the operational listener");
    let metrics_url = format!("http://{ops}/metrics");
    let text = get_text(&metrics_url).await;
    assert_eq!(text.0, 200);
    assert!(
        text.1.contains(
            "scim2ldap_http_requests_total{route=\"/Users\",method=\"POST\",status=\"201\"} 1\n"
        ),
        "{}",
        text.1
    );
    assert!(text
        .1
        .contains("scim2ldap_http_request_duration_seconds_count{route=\"/Users\"} 1\n"));
    assert!(text
        .1
        .contains("scim2ldap_ldap_operations_total{operation=\"upsert\",result=\"success\"} 1\n"));
    assert!(text.1.contains("scim2ldap_journal_pending 0\n"));
    assert!(text.1.contains("scim2ldap_journal_parked 0\n"));
    let last_apply: f64 = text
        .1
        .lines()
        .find_map(|l| l.strip_prefix("scim2ldap_last_apply_timestamp_seconds "))
        .and_then(|v| v.parse().ok())
        .expect("scim2ldap_last_apply_timestamp_seconds");
    assert!(last_apply > 1.0e9, "{last_apply}");
    assert_eq!(get_text(&format!("http://{}/healthz", d.addr)).await.0, 200);
    assert_eq!(get_text(&format!("http://{ops}/readyz")).await.0, 200);
    // A 401 is counted too, under its route template.
    let r = h
        .send_raw("GET", "/Users/x", None, None, Some("wrong"), &[])
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(d.edge.metrics.request_count("/Users/{id}", "GET", 401), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_when_the_directory_is_down_and_writes_are_rejected() {
    let mut h = Harness::start().await;
    restart_with(&mut h, |t| in_section(&t, "ldap", "when_down = \"reject\"")).await;
    h.slapd.stop().unwrap();
    // The writer has not tried the directory since it stopped, so this
    // write is still accepted (journaled); the writer notices on its
    // attempt to apply it.
    let r = h.send("POST", "/Users", Some(user("down"))).await;
    assert_eq!(r.status, 201, "accepted before the writer knew: {}", r.body);
    let url = format!(
        "http://{}/readyz",
        h.daemon().ops_addr.expect("the operational listener")
    );
    let mut last = (0, String::new());
    for _ in 0..50 {
        last = get_text(&url).await;
        if last.0 == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last.0, 503, "{}", last.1);
    assert!(last.1.contains("directory"), "{}", last.1);
    // Now writes are refused before anything is journaled, with a
    // Retry-After so the identity provider tries again; reads still work.
    let seq = h.daemon().store.last_seq();
    for (method, path, body) in [
        ("POST", "/Users".to_string(), Some(user("refused"))),
        ("DELETE", format!("/Users/{}", "no-such-id"), None),
    ] {
        let r = h.send(method, &path, body).await;
        assert_eq!(r.status, 503, "{method} {path}: {}", r.body);
        assert_eq!(
            r.headers.get("retry-after").and_then(|v| v.to_str().ok()),
            Some("30"),
            "{method} {path}"
        );
    }
    assert_eq!(h.daemon().store.last_seq(), seq, "nothing journaled");
    let r = h
        .send("GET", "/Users?filter=userName%20eq%20%22down%22", None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["totalResults"], 1, "{}", r.body);
    // Back up: the queued write lands and writes are accepted again.
    h.slapd.restart().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = h.send("POST", "/Users", Some(user("after"))).await;
        if r.status == 201 {
            break;
        }
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(
            tokio::time::Instant::now() < deadline,
            "still refused after the directory came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    h.settle().await;
    let people = h.slapd.people_dn();
    assert!(h.ldap_get(&format!("uid=down,{people}")).await.is_some());
    assert!(h.ldap_get(&format!("uid=after,{people}")).await.is_some());
    assert!(h.ldap_get(&format!("uid=refused,{people}")).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_answer_with_the_right_status_and_never_hang() {
    let mut h = Harness::start().await;
    restart_with(&mut h, |t| {
        in_section(
            &t,
            "server",
            "max_body_bytes = 1024\nbody_read_timeout_secs = 1\nheader_read_timeout_secs = 1\nmax_connections = 2",
        )
    })
    .await;
    let addr = h.daemon().addr;
    let auth = format!("Authorization: Bearer {}\r\n", h.token);

    // Body too large: 413 with a SCIM error body.
    let big = format!("{{\"userName\":\"{}\"}}", "x".repeat(5000));
    let req = format!(
        "POST /scim/v2/Users HTTP/1.1\r\nHost: t\r\n{auth}Content-Type: application/scim+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{big}",
        big.len()
    );
    let resp = raw_exchange(addr, req.as_bytes(), Duration::from_secs(10)).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(resp.contains("\"status\":\"413\""), "{resp}");

    // Body too slow: 408.
    let req = format!(
        "POST /scim/v2/Users HTTP/1.1\r\nHost: t\r\n{auth}Content-Type: application/scim+json\r\nContent-Length: 100\r\n\r\n{{"
    );
    let started = std::time::Instant::now();
    let resp = raw_exchange(addr, req.as_bytes(), Duration::from_secs(10)).await;
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // Headers too slow: the connection is closed (hyper answers 408 or
    // just closes), well before our 10 s patience runs out.
    let started = std::time::Instant::now();
    let resp = raw_exchange(
        addr,
        b"GET /healthz HTTP/1.1\r\nHost:",
        Duration::from_secs(10),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(5), "hung: {resp}");
    assert!(
        resp.is_empty() || resp.starts_with("HTTP/1.1 408"),
        "{resp}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_max_connections_gets_503_not_a_dropped_socket() {
    let mut h = Harness::start().await;
    restart_with(&mut h, |t| in_section(&t, "server", "max_connections = 1")).await;
    let addr = h.daemon().addr;
    // One idle keep-alive connection holds the only slot.
    let mut held = tokio::net::TcpStream::connect(addr).await.unwrap();
    held.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = held.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    let resp = raw_exchange(
        addr,
        b"GET /scim/v2/Users HTTP/1.1\r\nHost: t\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 503"), "{resp}");
    assert!(
        resp.to_ascii_lowercase().contains("retry-after: 30"),
        "{resp}"
    );
    assert!(resp.contains("max_connections"), "{resp}");

    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resp = raw_exchange(
        addr,
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

/// A client configuration that trusts only `ca`.
fn client_tls(ca: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in scim2ldap::tls::read_certs(ca).unwrap() {
        roots.add(c).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// GET over HTTPS to 127.0.0.1, trusting `ca`.
async fn https_get(
    addr: std::net::SocketAddr,
    ca: &Path,
    path: &str,
    token: &str,
) -> Result<(u16, String), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let tls = tokio_rustls::TlsConnector::from(client_tls(ca))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("Host", "127.0.0.1")
        .header("Authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_ldaps_with_test_certificates() {
    let opts = SlapdOptions {
        ldaps_port: Some(0),
        ..Default::default()
    };
    let mut h = Harness::start_with(opts, MAPPING).await;
    let tls_dir = h.slapd.dir().join("tls");
    let ca = tls_dir.join("ca.crt");
    let ldaps = h.slapd.ldaps_uri().unwrap();
    let (cert, key) = (tls_dir.join("server.crt"), tls_dir.join("server.key"));
    restart_with(&mut h, |t| {
        let t = in_section(
            &t,
            "server",
            &format!(
                "tls_cert = {:?}\ntls_key = {:?}",
                cert.display().to_string(),
                key.display().to_string()
            ),
        );
        let t = t.replace(&h_uri(&t), &ldaps);
        in_section(
            &t,
            "ldap",
            &format!("ca_file = {:?}", ca.display().to_string()),
        )
    })
    .await;
    let addr = h.daemon().addr;

    // HTTPS answers; the SCIM API works through it.
    let (status, body) = https_get(addr, &ca, "/scim/v2/Users", &h.token)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    // Plain HTTP on the HTTPS port gets nothing useful.
    let resp = raw_exchange(
        addr,
        b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(!resp.starts_with("HTTP/1.1 200"), "{resp}");

    // Writes reach the directory over LDAPS.
    h.base = format!("https://{addr}/scim/v2");
    let created = https_post_user(addr, &ca, &h.token, "tina").await;
    assert_eq!(created, 201);
    h.settle().await;
    assert!(h
        .ldap_get("uid=tina,ou=people,dc=example,dc=com")
        .await
        .is_some());

    // A reload with a broken certificate is refused; HTTPS keeps working.
    let config = h.dir.join("config.toml");
    let bad = h.dir.join("bad.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(&cert.display().to_string(), &bad.display().to_string()),
    )
    .unwrap();
    let e = format!("{:#}", h.daemon().reload(&config).unwrap_err());
    assert!(e.contains("bad.pem"), "{e}");
    assert_eq!(https_get(addr, &ca, "/healthz", "").await.unwrap().0, 200);
    std::fs::write(&config, text).unwrap();
    h.daemon()
        .reload(&config)
        .expect("the good certificate reloads");

    // Without the CA file the directory's certificate does not verify:
    // `check` says so in words.
    let text = std::fs::read_to_string(&config).unwrap();
    let no_ca = text.replace(&format!("ca_file = {:?}\n", ca.display().to_string()), "");
    let no_ca_path = h.dir.join("no-ca.toml");
    std::fs::write(&no_ca_path, no_ca).unwrap();
    // StartTLS on the plain port, with the CA file: `check` binds and
    // passes.
    let plain = h.slapd.uri();
    let starttls =
        text.replace(&ldaps, &plain)
            .replacen("[ldap]\n", "[ldap]\nstarttls = true\n", 1);
    let starttls_path = h.dir.join("starttls.toml");
    std::fs::write(&starttls_path, &starttls).unwrap();
    let report = scim2ldap::check::run(&starttls_path).await;
    assert!(report.ok(), "{report}");
    assert!(
        report
            .passed
            .iter()
            .any(|p| p.contains(&format!("bound to {plain}"))),
        "{report}"
    );

    // ... and without the CA file it fails, so TLS really was in use.
    std::fs::write(
        &starttls_path,
        starttls.replace(&format!("ca_file = {:?}\n", ca.display().to_string()), ""),
    )
    .unwrap();
    let report = scim2ldap::check::run(&starttls_path).await;
    assert!(!report.ok(), "{report}");
    assert!(
        report.problems.join("\n").contains("with StartTLS"),
        "{report}"
    );

    let report = scim2ldap::check::run(&no_ca_path).await;
    assert!(!report.ok());
    let all = report.problems.join("\n");
    assert!(
        all.contains("not signed by a trusted CA") || all.contains("no CA certificates"),
        "{all}"
    );
}

/// The `url = "..."` value of the [ldap] table.
fn h_uri(config: &str) -> String {
    let line = config.lines().find(|l| l.starts_with("url = ")).unwrap();
    line.trim_start_matches("url = ")
        .trim_matches('"')
        .to_string()
}

async fn https_post_user(addr: std::net::SocketAddr, ca: &Path, token: &str, name: &str) -> u16 {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(client_tls(ca))
        .connect(
            rustls::pki_types::ServerName::IpAddress(addr.ip().into()),
            tcp,
        )
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::post("/scim/v2/Users")
        .header("Host", "127.0.0.1")
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/scim+json")
        .body(Full::new(Bytes::from(user(name).to_string())))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(location.starts_with("https://"), "{location}");
    resp.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_on_a_good_mapping_and_names_every_problem() {
    let h = Harness::start().await;
    let config = h.dir.join("config.toml");
    let report = scim2ldap::check::run(&config).await;
    assert!(report.ok(), "{report}");

    // One mapping with each kind of problem.
    let bad = MAPPING
        .replacen(
            "object_classes = [\"top\", \"person\", \"organizationalPerson\", \"inetOrgPerson\"]",
            "object_classes = [\"top\", \"person\", \"organizationalPerson\", \"inetOrgPerson\", \"acmePerson\"]",
            1,
        )
        .replacen("title = \"title\"\n", "title = \"title\"\nfavouriteColour = \"title\"\n", 1)
        .replacen("sn = { from", "# sn = { from", 1)
        .replacen("ou=groups,dc=example,dc=com", "ou=nowhere,dc=example,dc=com", 1);
    std::fs::write(h.dir.join("mapping.toml"), &bad).unwrap();
    let report = scim2ldap::check::run(&config).await;
    assert!(!report.ok());
    let all = report.problems.join("\n");
    let line_of = |needle: &str| bad.lines().position(|l| l.contains(needle)).unwrap() + 1;
    for want in [
        format!("mapping.toml:{}: [user] object_classes: the directory has no object class \"acmePerson\"", line_of("acmePerson")),
        format!("mapping.toml:{}: [user] favouriteColour: the directory has no attribute type", line_of("favouriteColour")),
        "requires \"sn\" (MUST) but no rule fills it".to_string(),
        format!(
            "mapping.toml:{}: [group] dn: the parent entry \"ou=nowhere,dc=example,dc=com\" does not exist",
            line_of("ou=nowhere")
        ),
    ] {
        assert!(all.contains(&want), "missing {want:?} in:\n{all}");
    }
    assert_eq!(report.problems.len(), 4, "{all}");

    // The binary exits non-zero and prints the problems.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_scim2ldap"))
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("acmePerson"), "{stdout}");

    // A mapping that does not parse: located error, no directory needed.
    std::fs::write(h.dir.join("mapping.toml"), "[user]\ndn = 3\n").unwrap();
    let report = scim2ldap::check::run(&config).await;
    assert!(
        report.problems.iter().any(|p| p.contains("mapping.toml:2")),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_accepts_writes_but_sends_nothing() {
    let mut h = Harness::start().await;
    h.stop_daemon().await;
    let mut cfg = h.config();
    // As `serve --dry-run` does: writes logged, not sent; a separate store.
    cfg.ldap.dry_run = true;
    cfg.store.path = cfg.store.path.join("dry-run");
    start_retrying(&mut h, &cfg).await;

    let r = h.send("POST", "/Users", Some(user("dora"))).await;
    assert_eq!(r.status, 201);
    let id = r.body["id"].as_str().unwrap().to_string();
    h.settle().await;
    assert!(
        h.ldap_get("uid=dora,ou=people,dc=example,dc=com")
            .await
            .is_none(),
        "a dry run must not add the entry"
    );
    let mut changed = user("dora");
    changed["title"] = json!("Explorer");
    let r = h.send("PUT", &format!("/Users/{id}"), Some(changed)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    h.settle().await;
    assert_eq!(
        h.send("GET", &format!("/Users/{id}"), None).await.status,
        200
    );
    assert_eq!(
        h.send("DELETE", &format!("/Users/{id}"), None).await.status,
        204
    );
    h.settle().await;
    assert!(h.ldap_search("(uid=dora)", &["uid"]).await.is_empty());
    assert!(h
        .ldap_get("uid=dora,ou=people,dc=example,dc=com")
        .await
        .is_none());
}

/// The real binary under a notify socket, as systemd runs it: READY=1
/// once serving, WATCHDOG=1 keep-alives, RELOADING=1 then READY=1 on
/// SIGHUP, STOPPING=1 on SIGTERM and a clean exit. Its JSON log lines carry
/// the request id and the token's name, never the token.
#[test]
fn the_binary_notifies_ready_and_stopping() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut h = rt.block_on(Harness::start());
    rt.block_on(h.stop_daemon());
    let config = h.dir.join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}\n[log]\nformat = \"json\"\n")).unwrap();
    let sock_path = h.dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_scim2ldap"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID")
        .env_remove("SCIM2LDAP_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let recv = notify_recv;
    let next_state = next_notify_state;
    let first = recv(&sock);
    if !first.starts_with("READY=1") {
        let _ = child.kill();
        let mut err = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut err);
        panic!("expected READY=1, got {first:?}; stderr:\n{err}");
    }
    let addr = first
        .split("serving on ")
        .nth(1)
        .expect("the status names the address")
        .trim()
        .to_string();
    // Keep-alives at half the watchdog interval.
    assert_eq!(recv(&sock), "WATCHDOG=1\n");

    // One authenticated request and one with a wrong token.
    for token in [h.token.as_str(), "not-the-token"] {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "GET /scim/v2/Users HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        assert!(
            resp.starts_with("HTTP/1.1 200") || resp.starts_with("HTTP/1.1 401"),
            "{resp}"
        );
    }

    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    signal("-HUP");
    // systemd's reload protocol: RELOADING=1 with the monotonic time
    // (Type=notify-reload ignores it without), then READY=1.
    let reloading = next_state(&sock);
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(usec > 0, "{reloading}");
    assert!(next_state(&sock).starts_with("READY=1"));

    signal("-TERM");
    let stopping = next_state(&sock);
    assert!(stopping.starts_with("STOPPING=1"), "{stopping}");
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");

    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(
        !out.contains(&h.token),
        "the token appears in the log:\n{out}"
    );
    assert!(
        !out.contains(h.slapd.password()),
        "the bind password appears in the log"
    );
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let requests: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "request" && l["path"] == "/scim/v2/Users")
        .collect();
    assert_eq!(requests.len(), 2, "{out}");
    assert!(requests.iter().all(|l| l["request_id"].is_u64()), "{out}");
    assert!(
        requests
            .iter()
            .any(|l| l["client"] == "test" && l["status"] == 200),
        "{out}"
    );
    assert!(requests.iter().any(|l| l["status"] == 401), "{out}");
    assert!(
        lines.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("reloaded"))),
        "{out}"
    );
}

/// The next datagram on a notify socket, or why there was none.
fn notify_recv(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 1024];
    match sock.recv(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => format!("<no datagram: {e}>"),
    }
}

/// The next notification that is not a watchdog keep-alive.
fn next_notify_state(sock: &UnixDatagram) -> String {
    loop {
        // Neither a keep-alive nor a periodic status line.
        let m = notify_recv(sock);
        if m != "WATCHDOG=1\n" && !m.starts_with("STATUS=") {
            return m;
        }
    }
}

/// One plain HTTP/1.1 request on a fresh connection; the status code.
fn http_status(addr: &str, method: &str, path: &str, token: &str, body: Option<&str>) -> u16 {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} /scim/v2{path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nContent-Type: application/scim+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp.get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {resp:?}"))
}

/// The shipped unit's layout, through the real binary: the bind password is
/// a systemd credential (a folder systemd fills once, at start), the token
/// hashes are a plain file the service re-reads. A token removed from that
/// file gets 401 right after SIGHUP, the other keeps working, the bind
/// password from the credential still binds, and the log says what was
/// re-read.
#[test]
fn under_the_units_layout_a_revoked_token_gets_401_after_sighup() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut h = rt.block_on(Harness::start());
    rt.block_on(h.stop_daemon());
    let creds = h.dir.join("credentials");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::write(creds.join("ldap-password"), h.slapd.password()).unwrap();
    let etc = h.dir.join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    let tokens = etc.join("tokens.toml");
    let okta = scim2ldap::token::generate().unwrap();
    let table = |name: &str, token: &str| {
        format!(
            "[[tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\n",
            scim2ldap::token::TokenHash::of(token).to_hex()
        )
    };
    std::fs::write(
        &tokens,
        format!("{}\n{}", table("entra", &h.token), table("okta", &okta)),
    )
    .unwrap();
    let config = h.dir.join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let tokens_at = text.find("[[tokens]]").unwrap();
    let text = format!(
        "tokens_file = {:?}\n{}",
        tokens.display().to_string(),
        &text[..tokens_at]
    )
    .replace(
        &format!("bind_password = \"{}\"", h.slapd.password()),
        "bind_password_file = \"credential:ldap-password\"",
    );
    assert!(
        !text.contains(h.slapd.password()) && !text.contains("sha256"),
        "{text}"
    );
    std::fs::write(&config, format!("{text}\n[log]\nformat = \"json\"\n")).unwrap();

    let sock_path = h.dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_scim2ldap"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("CREDENTIALS_DIRECTORY", &creds)
        .env_remove("WATCHDOG_USEC")
        .env_remove("SCIM2LDAP_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ready = next_notify_state(&sock);
    if !ready.starts_with("READY=1") {
        let _ = child.kill();
        let mut err = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut err);
        panic!("expected READY=1, got {ready:?}; stderr:\n{err}");
    }
    let addr = ready
        .split("serving on ")
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(http_status(&addr, "GET", "/Users", &h.token, None), 200);
    assert_eq!(http_status(&addr, "GET", "/Users", &okta, None), 200);

    // Revoke okta the way an editor saves: a new file renamed over the old.
    let next = etc.join("tokens.toml.new");
    std::fs::write(&next, table("entra", &h.token)).unwrap();
    std::fs::rename(&next, &tokens).unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let reloading = next_notify_state(&sock);
    assert!(reloading.starts_with("RELOADING=1"), "{reloading}");
    let done = next_notify_state(&sock);
    assert!(
        done.starts_with("READY=1") && done.contains("reloaded"),
        "{done}"
    );

    assert_eq!(http_status(&addr, "GET", "/Users", &okta, None), 401);
    assert_eq!(http_status(&addr, "GET", "/Users", &h.token, None), 200);
    // The password read from the credential at start still binds.
    let body = user("afterhup").to_string();
    assert_eq!(
        http_status(&addr, "POST", "/Users", &h.token, Some(&body)),
        201
    );
    let mut found = false;
    for _ in 0..50 {
        if rt
            .block_on(h.ldap_get("uid=afterhup,ou=people,dc=example,dc=com"))
            .is_some()
        {
            found = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(found, "the user never reached the directory");

    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    assert!(child.wait().unwrap().success());
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let lines: Vec<Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let reloaded = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("reloaded"))
        })
        .unwrap_or_else(|| panic!("no reload line:\n{out}"));
    assert_eq!(
        reloaded["message"], "reloaded the mapping and the tokens",
        "{out}"
    );
    assert_eq!(
        reloaded["tokens_file"],
        tokens.display().to_string(),
        "{out}"
    );
    assert!(
        !out.contains("not reloaded"),
        "a plain tokens file is re-read:\n{out}"
    );
}

/// A tokens file left behind `LoadCredential=` is not re-read by a reload
/// (systemd copies credentials at start only): the log must not call it
/// reloaded, and says what to do.
#[test]
fn a_reload_never_calls_a_credential_reloaded() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut h = rt.block_on(Harness::start());
    rt.block_on(h.stop_daemon());
    let creds = h.dir.join("credentials");
    std::fs::create_dir_all(&creds).unwrap();
    let config = h.dir.join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let tokens_at = text.find("[[tokens]]").unwrap();
    std::fs::write(creds.join("tokens"), &text[tokens_at..]).unwrap();
    std::fs::write(
        &config,
        format!(
            "tokens_file = \"credential:tokens\"\n{}\n[log]\nformat = \"json\"\n",
            &text[..tokens_at]
        ),
    )
    .unwrap();
    let sock_path = h.dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_scim2ldap"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("CREDENTIALS_DIRECTORY", &creds)
        .env_remove("WATCHDOG_USEC")
        .env_remove("SCIM2LDAP_LOG")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(next_notify_state(&sock).starts_with("READY=1"));
    let signal = |sig: &str| {
        assert!(std::process::Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .unwrap()
            .success());
    };
    signal("-HUP");
    assert!(next_notify_state(&sock).starts_with("RELOADING=1"));
    assert!(next_notify_state(&sock).starts_with("READY=1"));
    signal("-TERM");
    assert!(child.wait().unwrap().success());
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let lines: Vec<Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let said = |start: &str| {
        lines
            .iter()
            .find(|l| l["message"].as_str().is_some_and(|m| m.starts_with(start)))
            .cloned()
    };
    let reloaded = said("reloaded").unwrap_or_else(|| panic!("{out}"));
    assert_eq!(
        reloaded["message"], "reloaded the mapping and the tokens in the config file",
        "{out}"
    );
    let warned = said("not reloaded").unwrap_or_else(|| panic!("no warning:\n{out}"));
    assert_eq!(warned["level"], "warn", "{out}");
    assert!(
        warned["files"]
            .as_str()
            .is_some_and(|f| f.contains("tokens_file")),
        "{out}"
    );
}

/// Under systemd (`JOURNAL_STREAM` set) text log lines carry a syslog
/// priority prefix for journald, and no colours or timestamps; secrets
/// come from systemd credentials (`credential:NAME`).
#[test]
fn journald_lines_have_priorities_and_no_timestamps() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut h = rt.block_on(Harness::start());
    rt.block_on(h.stop_daemon());
    // The bind password and the token hash move to credentials.
    let creds = h.dir.join("credentials");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::write(
        creds.join("ldap-password"),
        format!("{}\n", h.slapd.password()),
    )
    .unwrap();
    let config = h.dir.join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let tokens_at = text.find("[[tokens]]").unwrap();
    std::fs::write(creds.join("tokens"), &text[tokens_at..]).unwrap();
    let text = format!(
        "tokens_file = \"credential:tokens\"\n{}",
        &text[..tokens_at]
    )
    .replace(
        &format!("bind_password = \"{}\"", h.slapd.password()),
        "bind_password_file = \"credential:ldap-password\"",
    );
    assert!(
        !text.contains(h.slapd.password()) && !text.contains("sha256"),
        "{text}"
    );
    std::fs::write(&config, text).unwrap();
    let sock_path = h.dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_scim2ldap"))
        .args(["serve", "--config"])
        .arg(h.dir.join("config.toml"))
        .env("NOTIFY_SOCKET", &sock_path)
        .env("JOURNAL_STREAM", "8:12345")
        .env("CREDENTIALS_DIRECTORY", &creds)
        .env_remove("SCIM2LDAP_LOG")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).unwrap();
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.starts_with("READY=1"), "{ready}");
    // The token from the credential works, and writes reach the directory
    // with the password from the credential.
    let addr = ready
        .split("serving on ")
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    let body = user("cred").to_string();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        s,
        "POST /scim/v2/Users HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nContent-Type: application/scim+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        h.token,
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 201"), "{resp}");
    let mut found = false;
    for _ in 0..50 {
        if rt
            .block_on(h.ldap_get("uid=cred,ou=people,dc=example,dc=com"))
            .is_some()
        {
            found = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(found, "the user never reached the directory");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(!out.contains('\x1b'), "colour codes under journald:\n{out}");
    let serving = out
        .lines()
        .find(|l| l.contains("scim2ldap is serving"))
        .unwrap_or_else(|| panic!("no start line:\n{out}"));
    assert!(serving.starts_with("<6> INFO "), "{serving}");
    assert!(out.lines().all(|l| l.starts_with('<')), "{out}");
}

/// The OpenLDAP presets pass `check` against slapd; the posix one gives
/// users their Unix attributes and refuses a user without a uid number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openldap_presets_pass_check_and_posix_users_get_unix_attributes() {
    const POSIX: &str = include_str!("../../examples/openldap-posix.toml");
    let h = Harness::start_with(SlapdOptions::default(), POSIX).await;
    let report = scim2ldap::check::run(&h.dir.join("config.toml")).await;
    assert!(report.ok(), "{report}");

    let ext = "urn:ietf:params:scim:schemas:extension:posix:2.0:User";
    let mut u = user("unix");
    u["schemas"] = json!(["urn:ietf:params:scim:schemas:core:2.0:User", ext]);
    u[ext] = json!({"uidNumber": 20001});
    let r = h.send("POST", "/Users", Some(u)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    h.settle().await;
    let e = h
        .ldap_get("uid=unix,ou=people,dc=example,dc=com")
        .await
        .expect("entry");
    assert_eq!(
        crate::harness::first(&e, "uidNumber").as_deref(),
        Some("20001")
    );
    assert_eq!(
        crate::harness::first(&e, "homeDirectory").as_deref(),
        Some("/home/unix")
    );
    assert_eq!(
        crate::harness::first(&e, "gidNumber").as_deref(),
        Some("10000")
    );

    let r = h.send("POST", "/Users", Some(user("nouid"))).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("uidNumber"),
        "{}",
        r.body
    );

    // The default OpenLDAP preset passes too.
    std::fs::write(h.dir.join("mapping.toml"), MAPPING).unwrap();
    let report = scim2ldap::check::run(&h.dir.join("config.toml")).await;
    assert!(report.ok(), "{report}");
}

/// The rfc2307bis preset against a directory with Debian's nis schema
/// (posixGroup STRUCTURAL): `check` names the class conflict at the
/// group's object_classes line; member attributes the classes do not allow,
/// or require while `also` would remove them, are named too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_group_class_conflicts_and_member_attributes_not_allowed() {
    const BIS: &str = include_str!("../../examples/openldap-rfc2307bis.toml");
    let h = Harness::start_with(SlapdOptions::default(), BIS).await;
    let config = h.dir.join("config.toml");
    let line_of =
        |text: &str, needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;

    let report = scim2ldap::check::run(&config).await;
    let all = report.problems.join("\n");
    let want = format!(
        "mapping.toml:{}: [group] object_classes: \"groupOfNames\" and \"posixGroup\" are both STRUCTURAL",
        line_of(BIS, "\"groupOfNames\", \"posixGroup\"")
    );
    assert!(all.contains(&want), "missing {want:?} in:\n{all}");
    assert_eq!(report.problems.len(), 1, "{all}");

    // memberUid without posixGroup: no class allows it.
    let names_only = BIS
        .replace(
            "object_classes = [\"top\", \"groupOfNames\", \"posixGroup\"]",
            "object_classes = [\"top\", \"groupOfNames\"]",
        )
        .replace(
            "gidNumber = { allocate = \"10000-59999\" }\n\n[group.members]",
            "\n[group.members]",
        );
    std::fs::write(h.dir.join("mapping.toml"), &names_only).unwrap();
    let report = scim2ldap::check::run(&config).await;
    let all = report.problems.join("\n");
    let want = format!(
        "mapping.toml:{}: [group.members] memberUid: none of the group's object classes",
        line_of(&names_only, "attribute = \"memberUid\"")
    );
    assert!(all.contains(&want), "missing {want:?} in:\n{all}");
    assert_eq!(report.problems.len(), 1, "{all}");

    // member (MUST of groupOfNames) as an also attribute of a posixGroup.
    let swapped = names_only
        .replace(
            "object_classes = [\"top\", \"groupOfNames\"]",
            "object_classes = [\"top\", \"groupOfNames\", \"extensibleObject\"]",
        )
        .replace(
            "attribute = \"member\"\nvalue = \"dn\"",
            "attribute = \"memberUid\"\nvalue = \"attribute:uid\"",
        )
        .replace(
            "{ attribute = \"memberUid\", value = \"attribute:uid\" }",
            "{ attribute = \"member\", value = \"dn\" }",
        );
    std::fs::write(h.dir.join("mapping.toml"), &swapped).unwrap();
    let report = scim2ldap::check::run(&config).await;
    let all = report.problems.join("\n");
    let want = format!(
        "mapping.toml:{}: [group.members] also member: object class \"groupOfNames\" requires it (MUST)",
        line_of(&swapped, "{ attribute = \"member\"")
    );
    assert!(all.contains(&want), "missing {want:?} in:\n{all}");
    assert_eq!(report.problems.len(), 1, "{all}");
}
