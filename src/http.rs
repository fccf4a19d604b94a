//! The http edge: accepts connections, enforces limits, authenticates the
//! bearer token, turns requests into [`ApiRequest`]s and responses into
//! `application/scim+json`.
//!
//! Architecture invariant: nothing here knows LDAP, the store or the
//! mapping; it only knows HTTP and the SCIM error body.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, AUTHORIZATION, CONNECTION, CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH, LOCATION,
    RETRY_AFTER, WWW_AUTHENTICATE,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn, Instrument};

use crate::api::{Api, ApiRequest, ApiResponse, Method};
use crate::config::{ServerConfig, TokenConfig};
use crate::metrics::{Metrics, Probe};
use crate::scim::ScimError;
use crate::tls::Acceptor;

pub const SCIM_CONTENT_TYPE: &str = "application/scim+json";

/// Largest request body parsed on the async worker (a user, a PATCH, a
/// group of a few hundred members); larger ones are parsed off it.
const INLINE_BODY: usize = 64 * 1024;

/// What the edge needs besides the API.
pub struct Edge {
    pub api: Api,
    pub server: ServerConfig,
    /// Swapped on reload.
    pub tokens: RwLock<Vec<TokenConfig>>,
    next_request: AtomicU64,
    /// Request counts and latencies for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Readiness and gauges from the parts behind the API.
    pub probe: Option<Arc<dyn Probe>>,
    /// HTTPS: the certificate, swapped on reload. `None`: plain HTTP.
    pub tls: Option<Arc<Acceptor>>,
    /// The absolute URL of the SCIM base (`server.public_url` and the base
    /// path), for `Location` and `meta.location`. Never from a request's
    /// Host header: a client must not choose the URLs others are given.
    pub base_url: String,
    /// The last request per token, for the status (one call, below).
    pub activity: Arc<crate::status::Activity>,
}

impl Edge {
    pub fn new(api: Api, server: ServerConfig, tokens: Vec<TokenConfig>) -> Edge {
        Edge {
            api,
            server,
            tokens: RwLock::new(tokens),
            next_request: AtomicU64::new(1),
            metrics: Arc::new(Metrics::new()),
            probe: None,
            tls: None,
            base_url: String::new(),
            activity: Default::default(),
        }
    }

    /// Sets the absolute URL of the SCIM base (see [`Edge::base_url`]).
    pub fn with_base_url(mut self, base_url: String) -> Edge {
        self.base_url = base_url;
        self
    }

    /// Adds metrics, a readiness probe and TLS.
    pub fn with_service(
        mut self,
        metrics: Arc<Metrics>,
        probe: Arc<dyn Probe>,
        tls: Option<Arc<Acceptor>>,
    ) -> Edge {
        self.metrics = metrics;
        self.probe = Some(probe);
        self.tls = tls;
        self
    }
}

/// Connections over `max_connections` that are still answered with a 503
/// (then closed); beyond that they are dropped unanswered.
const OVERFLOW_SLOTS: usize = 64;

/// Connections open per peer address that have not yet carried a request
/// with a valid token. Only addresses with such a connection open have an
/// entry, so the table is bounded by the connections open.
struct Unauthenticated {
    limit: usize,
    peers: Mutex<HashMap<IpAddr, usize>>,
}

impl Unauthenticated {
    /// A slot for a new connection from `ip`, unless `ip` holds `limit`
    /// unauthenticated connections already.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<PeerSlot> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let n = peers.entry(ip).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            table: self.clone(),
            ip,
            held: AtomicBool::new(true),
        })
    }

    fn release(&self, ip: IpAddr) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = peers.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                peers.remove(&ip);
            }
        }
    }
}

/// A connection's place among its peer's unauthenticated connections,
/// given back when a request on it authenticates or when it closes.
struct PeerSlot {
    table: Arc<Unauthenticated>,
    ip: IpAddr,
    held: AtomicBool,
}

impl PeerSlot {
    /// A request on this connection carried a valid token: it no longer
    /// counts against its peer's limit.
    fn authenticated(&self) {
        if self.held.swap(false, Ordering::AcqRel) {
            self.table.release(self.ip);
        }
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        self.authenticated();
    }
}

/// The answer to a connection over its peer's limit, written without
/// reading anything from it.
const TOO_MANY_FROM_PEER: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\n\
content-type: text/plain\r\nretry-after: 10\r\nconnection: close\r\ncontent-length: 74\r\n\r\n\
too many connections without a valid token from this address; retry later\n";

/// Serves HTTP on `listener` until `shutdown` completes, then stops
/// accepting and lets in-flight requests finish (up to 30 s).
pub async fn serve(listener: TcpListener, edge: Arc<Edge>, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    let unauthenticated = Arc::new(Unauthenticated {
        limit: edge.server.max_unauthenticated_per_peer,
        peers: Mutex::new(HashMap::new()),
    });
    let slots = Arc::new(Semaphore::new(edge.server.max_connections));
    let overflow = Arc::new(Semaphore::new(OVERFLOW_SLOTS));
    tokio::pin!(shutdown);
    loop {
        let Some((stream, peer)) =
            crate::listen::accept_until(&listener, &mut shutdown, "accept failed").await
        else {
            break;
        };
        let _ = stream.set_nodelay(true);
        // Before a connection slot: a peer over its limit takes none.
        let Some(peer_slot) = unauthenticated.admit(peer.ip()) else {
            debug!(%peer, limit = edge.server.max_unauthenticated_per_peer, "max_unauthenticated_per_peer reached: connection refused");
            edge.metrics.refused("max_unauthenticated_per_peer");
            let _ = stream.try_write(TOO_MANY_FROM_PEER);
            drop(stream);
            continue;
        };
        let (permit, busy) = match slots.clone().try_acquire_owned() {
            Ok(p) => (p, false),
            Err(_) => match overflow.clone().try_acquire_owned() {
                Ok(p) => {
                    warn!(%peer, limit = edge.server.max_connections, "max_connections reached: answering 503");
                    (p, true)
                }
                Err(_) => {
                    warn!(%peer, limit = edge.server.max_connections, "max_connections reached: connection dropped");
                    edge.metrics.refused("max_connections");
                    drop(stream);
                    continue;
                }
            },
        };
        let edge = edge.clone();
        let watcher = graceful.watcher();
        let peer_slot = Arc::new(peer_slot);
        tokio::spawn(async move {
            match edge.tls.as_ref().map(|t| t.acceptor()) {
                None => serve_connection(stream, edge, peer, peer_slot, watcher, busy).await,
                Some(acceptor) => {
                    // The handshake counts against the header timeout.
                    let limit = edge.server.header_read_timeout;
                    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            serve_connection(tls, edge, peer, peer_slot, watcher, busy).await
                        }
                        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(30)) => warn!("in-flight requests did not finish within 30 s"),
    }
}

/// Serves HTTP/1.1 on one connection. `busy`: the connection is over the
/// limit; every request on it gets 503 and the connection is closed.
async fn serve_connection<I>(
    io: I,
    edge: Arc<Edge>,
    peer: SocketAddr,
    peer_slot: Arc<PeerSlot>,
    watcher: hyper_util::server::graceful::Watcher,
    busy: bool,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let edge2 = edge.clone();
    let svc = service_fn(move |req| {
        let edge = edge2.clone();
        let peer_slot = peer_slot.clone();
        async move {
            if busy {
                let mut r = error(&ScimError::new(
                    503,
                    None,
                    "the server is at its connection limit (server.max_connections); retry later",
                ));
                r.headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
                drop(req);
                return Ok::<_, Infallible>(r);
            }
            Ok::<_, Infallible>(handle(&edge, req, peer, &peer_slot).await)
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(edge.server.header_read_timeout)
        .keep_alive(!busy)
        .serve_connection(TokioIo::new(io), svc);
    let _ = watcher.watch(conn).await;
}

/// The metric label of a request method: the standard ones by name, any
/// other as `other`.
fn method_label(m: &hyper::Method) -> &'static str {
    match *m {
        hyper::Method::GET => "GET",
        hyper::Method::POST => "POST",
        hyper::Method::PUT => "PUT",
        hyper::Method::PATCH => "PATCH",
        hyper::Method::DELETE => "DELETE",
        hyper::Method::HEAD => "HEAD",
        hyper::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

async fn handle(
    edge: &Edge,
    req: Request<Incoming>,
    peer: SocketAddr,
    peer_slot: &PeerSlot,
) -> Response<Full<Bytes>> {
    let rid = edge.next_request.fetch_add(1, Ordering::Relaxed);
    let span =
        tracing::info_span!("request", id = rid, method = %req.method(), path = %req.uri().path());
    let route_name = route_template(&edge.server.base_path, req.uri().path());
    // A closed set of labels: a made-up method must not become a metric
    // series of its own (nothing a client sends without a token is kept).
    let method = method_label(req.method());
    async move {
        let started = Instant::now();
        let (resp, client) = route(edge, req, peer_slot).await;
        let status = resp.status().as_u16();
        edge.metrics
            .request(route_name, method, status, started.elapsed());
        let ms = format!("{:.2}", started.elapsed().as_secs_f64() * 1000.0);
        if status >= 500 {
            warn!(status, %ms, %peer, %client, "request failed");
        } else {
            info!(status, %ms, %peer, %client, "request");
        }
        resp
    }
    .instrument(span)
    .await
}

async fn route(
    edge: &Edge,
    req: Request<Incoming>,
    peer_slot: &PeerSlot,
) -> (Response<Full<Bytes>>, String) {
    let path = req.uri().path().to_string();
    // For load balancers; /metrics and /readyz are on the operational
    // listener only (`ops`), never here.
    if path == "/healthz" {
        return (plain(200, "ok\n".into()), "-".into());
    }
    let base = edge.server.base_path.as_str();
    let Some(rest) = path
        .strip_prefix(base)
        .filter(|r| r.is_empty() || r.starts_with('/'))
    else {
        return (
            error(&ScimError::not_found(format!(
                "no SCIM endpoint at {path}; the base URL is {base}"
            ))),
            "-".into(),
        );
    };
    let rest = rest.to_string();

    let client = match authenticate(edge, &req) {
        Some(name) => {
            peer_slot.authenticated();
            edge.activity.request_from(&name);
            name
        }
        None => {
            let mut r = error(&ScimError::new(
                401,
                None,
                "a valid bearer token is required (Authorization: Bearer <token>)",
            ));
            r.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"scim2ldap\""),
            );
            return (r, "-".into());
        }
    };

    let method = match *req.method() {
        hyper::Method::GET => Method::Get,
        hyper::Method::POST => Method::Post,
        hyper::Method::PUT => Method::Put,
        hyper::Method::PATCH => Method::Patch,
        hyper::Method::DELETE => Method::Delete,
        _ => {
            return (
                error(&ScimError::new(405, None, "method not allowed")),
                client,
            )
        }
    };
    // Discovery documents are read-only: any other method is 405 before a
    // byte of the body is read (RFC 7644 §4; Okta's test plan expects it).
    let discovery = matches!(
        route_template(&edge.server.base_path, req.uri().path()),
        "/ServiceProviderConfig"
            | "/Schemas"
            | "/Schemas/{id}"
            | "/ResourceTypes"
            | "/ResourceTypes/{id}"
    );
    if discovery && method != Method::Get {
        let mut r = error(&ScimError::new(
            405,
            None,
            "discovery endpoints are read-only: use GET",
        ));
        r.headers_mut()
            .insert(hyper::header::ALLOW, HeaderValue::from_static("GET"));
        return (r, client);
    }
    let query = req.uri().query().map(parse_query).unwrap_or_default();
    let if_match = req
        .headers()
        .get(IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let if_none_match = req
        .headers()
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let base_url = edge.base_url.clone();

    let body = match read_body(edge, req).await {
        Ok(b) => b,
        Err(e) => return (error(&e), client),
    };
    let api_req = ApiRequest {
        method,
        path: rest,
        query,
        body,
        if_match,
        if_none_match,
        base_url,
    };
    (respond(edge.api.handle(api_req).await), client)
}

fn authenticate(edge: &Edge, req: &Request<Incoming>) -> Option<String> {
    let header = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let tokens = edge.tokens.read().unwrap_or_else(|p| p.into_inner());
    crate::token::authenticate(
        tokens.iter().map(|t| (t.name.as_str(), &t.hash)),
        token.trim(),
    )
    .map(str::to_string)
}

/// Reads and parses the JSON body within the size and time limits.
async fn read_body(
    edge: &Edge,
    req: Request<Incoming>,
) -> Result<Option<serde_json::Value>, ScimError> {
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    let limit = edge.server.max_body_bytes;
    let bytes = match tokio::time::timeout(
        edge.server.body_read_timeout,
        read_limited(req.into_body(), limit),
    )
    .await
    {
        Err(_) => {
            return Err(ScimError::new(
                408,
                None,
                "the request body was not received in time",
            ))
        }
        Ok(r) => r?,
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    if let Some(ct) = content_type {
        let mime = ct.split(';').next().unwrap_or_default().trim();
        if mime != SCIM_CONTENT_TYPE && mime != "application/json" {
            return Err(ScimError::new(415, None, format!("Content-Type {mime} is not supported; send {SCIM_CONTENT_TYPE} or application/json")));
        }
    }
    // A large body (a group of 50,000 members) takes a while to parse: off
    // the async worker, as the API's large store work. A small one is
    // parsed here: handing the worker over would cost more.
    let parse = || crate::api::parse_body(&bytes);
    if bytes.len() <= INLINE_BODY {
        parse()
    } else {
        crate::offload::blocking(parse)
    }
    .map(Some)
    .map_err(|e| ScimError::invalid_syntax(format!("the body is not valid JSON: {e}")))
}

/// Reads a body of at most `limit` bytes. A larger one is read on and
/// thrown away (up to 16 times the limit), so that the client, still
/// sending, receives the 413 instead of a reset connection.
async fn read_limited(mut body: Incoming, limit: usize) -> Result<Bytes, ScimError> {
    let mut buf = bytes::BytesMut::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ScimError::invalid_syntax(format!("could not read the request body: {e}"))
        })?;
        if let Ok(data) = frame.into_data() {
            total += data.len();
            if total <= limit {
                buf.extend_from_slice(&data);
            } else if total > limit.saturating_mul(16) {
                break;
            }
        }
    }
    if total > limit {
        return Err(ScimError::new(
            413,
            None,
            format!("the request body is larger than {limit} bytes"),
        ));
    }
    Ok(buf.freeze())
}

/// The query string's pairs, `%XX` and `+` decoded (form encoding).
fn parse_query(q: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

fn respond(r: ApiResponse) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = r
        .body
        .map(|b| Bytes::from(serde_json::to_vec(&b).unwrap_or_default()))
        .unwrap_or_default();
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if status != StatusCode::NO_CONTENT && status != StatusCode::NOT_MODIFIED {
        h.insert(CONTENT_TYPE, HeaderValue::from_static(SCIM_CONTENT_TYPE));
    }
    if let Some(l) = r.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        h.insert(LOCATION, l);
    }
    if let Some(e) = r.etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
        h.insert(ETAG, e);
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        h.insert(RETRY_AFTER, HeaderValue::from_static("30"));
    }
    resp
}

fn error(e: &ScimError) -> Response<Full<Bytes>> {
    respond(ApiResponse::error(e))
}

fn plain(status: u16, text: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// The route a path belongs to, as a template with no ids in it, for
/// metric labels: `/Users/{id}`, `/Groups`, `/healthz`, `other`.
pub fn route_template(base: &str, path: &str) -> &'static str {
    if path == "/healthz" {
        return "/healthz";
    }
    let Some(rest) = path
        .strip_prefix(base)
        .filter(|r| r.is_empty() || r.starts_with('/'))
    else {
        return "other";
    };
    let mut parts = rest.trim_matches('/').splitn(2, '/');
    let first = parts.next().unwrap_or_default();
    let has_id = parts.next().is_some_and(|p| !p.is_empty());
    match (first, has_id) {
        ("Users", false) => "/Users",
        ("Users", true) => "/Users/{id}",
        ("Groups", false) => "/Groups",
        ("Groups", true) => "/Groups/{id}",
        ("ServiceProviderConfig", _) => "/ServiceProviderConfig",
        ("Schemas", false) => "/Schemas",
        ("Schemas", true) => "/Schemas/{id}",
        ("ResourceTypes", false) => "/ResourceTypes",
        ("ResourceTypes", true) => "/ResourceTypes/{id}",
        ("", _) => "/",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_are_form_decoded() {
        let q = parse_query("filter=userName+eq+%22a%26b%22&&count=5&bad=%zz&empty");
        let pairs: Vec<(&str, &str)> = q.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            pairs,
            [
                ("filter", "userName eq \"a&b\""),
                ("count", "5"),
                ("bad", "%zz"),
                ("empty", "")
            ]
        );
    }

    #[test]
    fn route_templates_hold_no_ids() {
        let b = "/scim/v2";
        assert_eq!(route_template(b, "/scim/v2/Users"), "/Users");
        assert_eq!(route_template(b, "/scim/v2/Users/"), "/Users");
        assert_eq!(route_template(b, "/scim/v2/Users/abc-123"), "/Users/{id}");
        assert_eq!(route_template(b, "/scim/v2/Groups/x"), "/Groups/{id}");
        assert_eq!(route_template(b, "/scim/v2/Foo/x"), "other");
        assert_eq!(route_template(b, "/scim/v2x/Users"), "other");
        assert_eq!(route_template(b, "/metrics"), "other");
    }
}
