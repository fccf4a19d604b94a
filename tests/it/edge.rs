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
