//! The operational listener: `/metrics` and `/readyz` are served there
//! only, never on the SCIM port; `/healthz` on both; a token of its own
//! when one is configured.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::harness::{get_text, Harness};

/// GET `url` with `Authorization: Bearer token`: status and body.
async fn get_with_token(url: &str, token: &str) -> (u16, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let resp = client
        .request(
            Request::get(url)
                .header("Authorization", format!("Bearer {token}"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_readyz_are_served_on_the_operational_listener_only() {
    let mut h = Harness::start().await;
    let d = h.daemon();
    let scim = d.addr;
    let ops = d.ops_addr.expect("the operational listener is bound");
    assert_ne!(scim, ops);
    assert!(ops.ip().is_loopback());

    // On the SCIM port: /healthz for load balancers, nothing else.
    assert_eq!(get_text(&format!("http://{scim}/healthz")).await.0, 200);
    for path in ["/metrics", "/readyz"] {
        let (status, body) = get_text(&format!("http://{scim}{path}")).await;
        assert_eq!(status, 404, "{path} on the SCIM port: {body}");
        assert!(!body.contains("scim2ldap_"), "{body}");
    }
    // Not with the SCIM token either.
    for path in ["/metrics", "/readyz"] {
        let (status, body) = get_with_token(&format!("http://{scim}{path}"), &h.token).await;
        assert_eq!(status, 404, "{path} on the SCIM port: {body}");
    }

    // On the operational listener.
    let (status, text) = get_text(&format!("http://{ops}/metrics")).await;
    assert_eq!(status, 200);
    assert!(text.contains("scim2ldap_journal_pending"), "{text}");
    assert_eq!(get_text(&format!("http://{ops}/readyz")).await.0, 200);
    assert_eq!(get_text(&format!("http://{ops}/healthz")).await.0, 200);
    assert_eq!(
        get_text(&format!("http://{ops}/scim/v2/Users")).await.0,
        404
    );

    // With a token of its own: every endpoint but /healthz requires it,
    // and the SCIM token is not it.
    let token = "ops-secret-token";
    let sha = scim2ldap::token::TokenHash::of(token).to_hex();
    let path = h.dir.join("config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace(
            "[operations]\n",
            &format!("[operations]\ntoken_sha256 = \"{sha}\"\n"),
        ),
    )
    .unwrap();
    h.stop_daemon().await;
    h.start_daemon().await;
    let ops = h.daemon().ops_addr.unwrap();
    assert_eq!(get_text(&format!("http://{ops}/metrics")).await.0, 401);
    assert_eq!(get_text(&format!("http://{ops}/readyz")).await.0, 401);
    assert_eq!(
        get_with_token(&format!("http://{ops}/metrics"), &h.token)
            .await
            .0,
        401
    );
    let (status, text) = get_with_token(&format!("http://{ops}/metrics"), token).await;
    assert_eq!(status, 200);
    assert!(text.contains("scim2ldap_journal_pending"), "{text}");
    assert_eq!(
        get_with_token(&format!("http://{ops}/readyz"), token)
            .await
            .0,
        200
    );
    assert_eq!(get_text(&format!("http://{ops}/healthz")).await.0, 200);
}
