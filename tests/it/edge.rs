//! The edge under requests no identity provider sends: nothing a client
//! sends without a token becomes state of the daemon.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::Harness;

/// Sends raw bytes on a fresh connection and returns the response's head.
async fn raw(addr: std::net::SocketAddr, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Made-up HTTP methods are counted under one label, `other`: before, each
/// became a metric series of its own, for good, without a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_methods_do_not_grow_the_metrics() {
    let h = Harness::start().await;
    let addr = h.daemon().addr;
    for i in 0..300 {
        let method = format!("X{i}{}", "Y".repeat(200));
        let head = raw(
            addr,
            &format!("{method} /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 "), "{head}");
    }
    let metrics = h.daemon().edge.metrics.render();
    assert!(
        !metrics.contains("YYYY"),
        "a client's method became a label"
    );
    assert!(
        metrics.contains("route=\"/healthz\",method=\"other\""),
        "{metrics}"
    );
    assert!(metrics.len() < 20_000, "{} bytes", metrics.len());
}

/// Discovery endpoints are read-only: 405 for any other method, before the
/// body is read (a body that is not JSON is not a 400).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_writes_are_405_before_the_body_is_read() {
    let h = Harness::start().await;
    for path in [
        "/ServiceProviderConfig",
        "/Schemas",
        "/ResourceTypes",
        "/ResourceTypes/User",
    ] {
        for method in ["POST", "PUT", "PATCH", "DELETE"] {
            let r = h
                .send_raw(
                    method,
                    path,
                    Some("this is not JSON".into()),
                    Some("application/scim+json"),
                    Some(&h.token),
                    &[],
                )
                .await;
            assert_eq!(r.status, 405, "{method} {path}: {}", r.body);
            assert_eq!(r.headers.get("allow").unwrap(), "GET");
            assert_eq!(
                r.body["schemas"][0],
                "urn:ietf:params:scim:api:messages:2.0:Error"
            );
        }
    }
    let r = h.send("GET", "/ServiceProviderConfig", None).await;
    assert_eq!(r.status, 200);
}

/// Rewrites the harness's config with `edit` and restarts the daemon.
pub async fn restart_with(h: &mut Harness, edit: impl Fn(String) -> String) {
    let path = h.dir.join("config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, edit(text)).unwrap();
    h.stop_daemon().await;
    // The previous daemon's last connection tasks may hold the store's
    // lock for a moment.
    let cfg = h.config();
    let mut last = None;
    for _ in 0..50 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        match scim2ldap::daemon::start(&cfg, listener).await {
            Ok(running) => {
                h.base = format!("http://{}/scim/v2", running.addr);
                h.daemon = Some(running);
                return;
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the daemon did not start again: {last:?}");
}

/// A forged Host header never reaches `Location` or `meta.location`: they
/// come from `server.public_url` (or, unset, the loopback address bound),
/// computed when the response is made, so a changed public_url holds for
/// resources created before it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_host_header_never_becomes_a_location() {
    let mut h = Harness::start().await;
    let forged = [("Host", "evil.example:666")];
    let body = serde_json::json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "hostile-host",
        "name": {"givenName": "H", "familyName": "Ost"},
    });
    let r = h
        .send_raw(
            "POST",
            "/Users",
            Some(body.to_string()),
            Some("application/scim+json"),
            Some(&h.token),
            &forged,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    let location = r.headers.get("location").unwrap().to_str().unwrap();
    let bound = format!("http://{}/scim/v2/Users/{id}", h.daemon().addr);
    assert_eq!(location, bound);
    assert_eq!(r.body["meta"]["location"], bound.as_str());
    let r = h
        .send_raw(
            "GET",
            &format!("/Users/{id}"),
            None,
            None,
            Some(&h.token),
            &forged,
        )
        .await;
    assert_eq!(r.body["meta"]["location"], bound.as_str());
    assert!(!r.body.to_string().contains("evil"), "{}", r.body);

    // With public_url set, every location follows it, the stored resource's
    // included; the Host header still does nothing.
    restart_with(&mut h, |t| {
        t.replacen(
            "[server]\n",
            "[server]\npublic_url = \"https://scim.example.com/\"\n",
            1,
        )
    })
    .await;
    let r = h
        .send_raw(
            "GET",
            &format!("/Users/{id}"),
            None,
            None,
            Some(&h.token),
            &forged,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["meta"]["location"],
        format!("https://scim.example.com/scim/v2/Users/{id}").as_str()
    );
    let r = h
        .send_raw(
            "GET",
            "/Users?filter=userName%20eq%20%22hostile-host%22",
            None,
            None,
            Some(&h.token),
            &forged,
        )
        .await;
    assert_eq!(
        r.body["Resources"][0]["meta"]["location"],
        format!("https://scim.example.com/scim/v2/Users/{id}").as_str()
    );
    assert!(!r.body.to_string().contains("evil"), "{}", r.body);
}

/// Opens a connection from `local` (an address of 127.0.0.0/8) to `addr`.
async fn connect_from(
    local: &str,
    addr: std::net::SocketAddr,
) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{local}:0").parse().unwrap())?;
    socket.connect(addr).await
}

/// An authenticated request on `s` (kept open): the status line.
async fn authenticated_get(s: &mut tokio::net::TcpStream, token: &str) -> String {
    s.write_all(
        format!("GET /scim/v2/Users?count=1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap_or(0);
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Whether the server refused `s` at once: a 429, or the connection closed
/// (reset) before anything else.
async fn refused(s: &mut tokio::net::TcpStream) -> bool {
    let mut buf = vec![0u8; 512];
    match tokio::time::timeout(std::time::Duration::from_secs(2), s.read(&mut buf)).await {
        Err(_) => false,
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 429"),
    }
}

/// A flood of slow unauthenticated connections from one address (request
/// line and one header, then nothing) takes at most
/// `max_unauthenticated_per_peer` connection slots: the rest are refused
/// at once, and a client at another address is still served. Authenticated
/// connections do not count against the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_unauthenticated_connections_from_one_address_do_not_keep_others_out() {
    let mut h = Harness::start().await;
    // Fewer slots than the flood, as in production with more clients.
    restart_with(&mut h, |t| {
        t.replacen(
            "[server]\n",
            "[server]\nmax_connections = 100\nmax_unauthenticated_per_peer = 32\nheader_read_timeout_secs = 60\n",
            1,
        )
    })
    .await;
    let addr = h.daemon().addr;
    let mut flood = Vec::new();
    for _ in 0..300 {
        let mut s = connect_from("127.0.0.1", addr).await.unwrap();
        // Writing may fail once the server has refused it.
        let _ = s
            .write_all(b"GET /scim/v2/Users HTTP/1.1\r\nHost: t\r\n")
            .await;
        flood.push(s);
    }
    let mut refused_count = 0;
    for s in flood.iter_mut().skip(32) {
        if refused(s).await {
            refused_count += 1;
        }
    }
    assert_eq!(
        refused_count,
        300 - 32,
        "every connection over the limit is refused"
    );
    assert!(
        h.daemon()
            .edge
            .metrics
            .refused_count("max_unauthenticated_per_peer")
            >= 268
    );

    // Another address is served while the flood holds its connections.
    let mut other = connect_from("127.0.0.2", addr).await.unwrap();
    assert_eq!(
        authenticated_get(&mut other, &h.token).await,
        "HTTP/1.1 200 OK"
    );
    // The flooding address is refused beyond its limit, even with a token
    // (it cannot be read before the connection is accepted).
    let mut more = connect_from("127.0.0.1", addr).await.unwrap();
    let _ = more
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    assert!(refused(&mut more).await);

    // Authenticated keep-alive connections do not count: 40 from one
    // address, all open at once, all served.
    let mut kept = Vec::new();
    for _ in 0..40 {
        let mut s = connect_from("127.0.0.3", addr).await.unwrap();
        assert_eq!(authenticated_get(&mut s, &h.token).await, "HTTP/1.1 200 OK");
        kept.push(s);
    }

    // Once the flood closes, its address is served again (nothing kept).
    drop(flood);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mut again = connect_from("127.0.0.1", addr).await.unwrap();
    assert_eq!(
        authenticated_get(&mut again, &h.token).await,
        "HTTP/1.1 200 OK"
    );
}
