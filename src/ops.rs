//! The operational listener: `/metrics`, `/readyz` and `/healthz` on an
//! address of their own (`[operations] listen`, loopback by default),
//! optionally behind a bearer token of its own, so that nobody who reaches
//! the SCIM port can read them and a scrape never competes with the
//! identity provider for the SCIM listener's connection slots.
//!
//! **Extension point.** Other pages (the status page: `GET /status`,
//! `GET /status.json`) implement [`Route`] and are handed to [`Ops::route`]
//! by the daemon (`daemon.rs`, where `ops_routes` is built); this module's
//! routing does not change for them.
//!
//! Architecture invariant: nothing here knows LDAP, the store or SCIM; it
//! serves what [`Metrics`], the [`Probe`] and the routes give it.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::metrics::{Metrics, Probe};
use crate::token::TokenHash;

/// Connections the operational listener serves at once; more are closed.
/// A monitoring system needs a handful.
const MAX_CONNECTIONS: usize = 32;

/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// One answer of an operational endpoint.
pub struct Page {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Bytes,
}

impl Page {
    pub fn text(status: u16, body: impl Into<String>) -> Page {
        Page {
            status,
            content_type: "text/plain; charset=utf-8",
            body: Bytes::from(body.into()),
        }
    }

    pub fn html(status: u16, body: impl Into<String>) -> Page {
        Page {
            status,
            content_type: "text/html; charset=utf-8",
            body: Bytes::from(body.into()),
        }
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Page {
        Page {
            status,
            content_type: "application/json",
            body: Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
        }
    }
}

/// A boxed future, as [`Route::get`] returns.
pub type PageFuture<'a> = Pin<Box<dyn Future<Output = Page> + Send + 'a>>;

/// Extra `GET` pages on the operational listener (the status page). Each
/// answers the exact paths it lists; the listener does the rest (the token,
/// the methods, the connection limits).
pub trait Route: Send + Sync {
    /// The exact paths answered, e.g. `["/status", "/status.json"]`.
    fn paths(&self) -> &[&'static str];
    /// Answers a `GET` (or `HEAD`) of one of [`Route::paths`]. `query`: the
    /// raw query string, if any (decode it with `form_urlencoded`).
    fn get<'a>(&'a self, path: &'a str, query: Option<&'a str>) -> PageFuture<'a>;
}

/// What the operational listener serves.
pub struct Ops {
    metrics: Arc<Metrics>,
    probe: Option<Arc<dyn Probe>>,
    /// Required of every endpoint but `/healthz` when set.
    token: Option<TokenHash>,
    routes: Vec<Arc<dyn Route>>,
}

impl Ops {
    pub fn new(
        metrics: Arc<Metrics>,
        probe: Option<Arc<dyn Probe>>,
        token: Option<TokenHash>,
    ) -> Ops {
        Ops {
            metrics,
            probe,
            token,
            routes: Vec::new(),
        }
    }

    /// Adds a page (or several: one [`Route`] may list many paths).
    pub fn route(mut self, route: Arc<dyn Route>) -> Ops {
        self.routes.push(route);
        self
    }

    /// Answers one request: method, path, query and `Authorization` header.
    pub async fn answer(
        &self,
        method: &hyper::Method,
        path: &str,
        query: Option<&str>,
        authorization: Option<&str>,
    ) -> Page {
        let known = matches!(path, "/healthz" | "/readyz" | "/metrics")
            || self.routes.iter().any(|r| r.paths().contains(&path));
        if !known {
            return Page::text(404, format!("no operational endpoint at {path}\n"));
        }
        if method != hyper::Method::GET && method != hyper::Method::HEAD {
            return Page::text(405, "use GET\n");
        }
        if path != "/healthz" && !self.authorized(authorization) {
            return Page::text(
                401,
                "a valid bearer token is required (operations.token_sha256)\n",
            );
        }
        match path {
            "/healthz" => Page::text(200, "ok\n"),
            "/readyz" => match self.probe.as_ref().map_or(Ok(()), |p| p.readiness()) {
                Ok(()) => Page::text(200, "ready\n"),
                Err(why) => Page::text(503, format!("not ready: {why}\n")),
            },
            "/metrics" => Page {
                status: 200,
                content_type: crate::metrics::CONTENT_TYPE,
                body: Bytes::from(self.metrics.render()),
            },
            _ => match self.routes.iter().find(|r| r.paths().contains(&path)) {
                Some(r) => r.get(path, query).await,
                None => Page::text(404, format!("no operational endpoint at {path}\n")),
            },
        }
    }

    fn authorized(&self, authorization: Option<&str>) -> bool {
        let Some(want) = &self.token else {
            return true;
        };
        let Some((scheme, token)) = authorization.and_then(|h| h.trim().split_once(' ')) else {
            return false;
        };
        scheme.eq_ignore_ascii_case("bearer") && want.matches(token.trim())
    }
}

/// Serves the operational endpoints on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, ops: Arc<Ops>, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let Some((stream, peer)) = crate::listen::accept_until(
            &listener,
            &mut shutdown,
            "operations listener: accept failed",
        )
        .await
        else {
            break;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "operations listener: too many connections; closed");
            continue;
        };
        let ops = ops.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let ops = ops.clone();
                async move { Ok::<_, Infallible>(respond(&ops, req).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            let _ = watcher.watch(conn).await;
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
    }
}

async fn respond(ops: &Ops, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let auth = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let page = ops
        .answer(req.method(), req.uri().path(), req.uri().query(), auth)
        .await;
    let head = req.method() == hyper::Method::HEAD;
    let mut r = Response::new(Full::new(if head { Bytes::new() } else { page.body }));
    *r.status_mut() = StatusCode::from_u16(page.status).unwrap_or(StatusCode::OK);
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(page.content_type));
    match page.status {
        401 => {
            h.insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"scim2ldap operations\""),
            );
        }
        405 => {
            h.insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        _ => {}
    }
    r
}

/// Binds the operational listener. An address the file names must be
/// bound; the default one is skipped, with a warning, when it is taken
/// (another daemon on the machine), so that an upgrade never fails on it.
pub async fn bind(
    cfg: &crate::config::OperationsConfig,
) -> Result<Option<TcpListener>, std::io::Error> {
    let Some(addr) = cfg.listen else {
        return Ok(None);
    };
    match TcpListener::bind(addr).await {
        Ok(l) => Ok(Some(l)),
        Err(e) if !cfg.explicit => {
            warn!(%addr, error = %e, "the operational listener (/metrics, /readyz) could not bind its default address; set [operations] listen to another address:port, or \"off\"");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The address an operational listener is bound to, for logs.
pub fn describe(addr: Option<SocketAddr>) -> String {
    addr.map_or_else(|| "off".to_string(), |a| a.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page added through the extension point, as the status page is.
    struct Hello;
    impl Route for Hello {
        fn paths(&self) -> &[&'static str] {
            &["/status", "/status.json"]
        }
        fn get<'a>(&'a self, path: &'a str, query: Option<&'a str>) -> PageFuture<'a> {
            Box::pin(async move {
                if path == "/status.json" {
                    Page::json(200, &serde_json::json!({"query": query}))
                } else {
                    Page::html(200, "<p>hello</p>")
                }
            })
        }
    }

    #[tokio::test]
    async fn added_routes_are_served_behind_the_same_token() {
        let token = TokenHash::of("t");
        let ops = Ops::new(Arc::new(Metrics::new()), None, Some(token)).route(Arc::new(Hello));
        let get = hyper::Method::GET;
        let p = ops.answer(&get, "/status", None, Some("Bearer t")).await;
        assert_eq!(
            (p.status, p.content_type),
            (200, "text/html; charset=utf-8")
        );
        let p = ops
            .answer(&get, "/status.json", Some("a=1"), Some("bearer t"))
            .await;
        assert_eq!(p.body, Bytes::from_static(b"{\"query\":\"a=1\"}"));
        assert_eq!(ops.answer(&get, "/status", None, None).await.status, 401);
        assert_eq!(
            ops.answer(&get, "/status", None, Some("Bearer x"))
                .await
                .status,
            401
        );
        assert_eq!(ops.answer(&get, "/healthz", None, None).await.status, 200);
        assert_eq!(ops.answer(&get, "/nope", None, None).await.status, 404);
        let post = hyper::Method::POST;
        assert_eq!(
            ops.answer(&post, "/status", None, Some("Bearer t"))
                .await
                .status,
            405
        );
    }
}
