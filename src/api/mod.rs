//! The SCIM endpoints, served from the store: parse and validate with the
//! SCIM core, check the mapping can place the resource, journal it, wait
//! for the journal to be on disk, wake the writer, answer.
//!
//! This file: the request and response types, [`Api`] and its dispatch by
//! route, the traits through which the daemon plugs in the writer
//! ([`WriterSignal`]) and the adopter ([`Adoption`]), and [`blocking`].
//! The parts:
//! - `write.rs`: create, replace, patch, delete; the store write and the
//!   wait for it to be durable;
//! - `validate.rs`: everything checked before journaling (names, allocated
//!   numbers, the entry the mapping makes, its uniqueness keys);
//! - `password.rs`: the write-only password;
//! - `members.rs`: a group's member operations, the members cap, counting;
//! - `list.rs`: list, filter, sort, paging, `.search` (`Pager`);
//! - `present.rs`: a resource as a client sees it (computed attributes,
//!   projection), GET, ETags and `If-Match`;
//! - `discovery.rs`: `/ServiceProviderConfig`, `/Schemas`, `/ResourceTypes`;
//! - `syntax.rs`: the directory's attribute syntaxes and the early check.
//!
//! Architecture invariant: nothing here knows hyper or LDAP. A request
//! comes in as an [`ApiRequest`] and leaves as an [`ApiResponse`]; the
//! directory is only reached through the journal and the writer.

mod discovery;
mod list;
mod members;
mod password;
mod present;
mod syntax;
mod validate;
mod write;

use serde_json::Value;

use crate::model::SharedModel;
use crate::scim::ScimError;
use crate::store::{Kind, Store};

use discovery::discovery_endpoint;
pub use members::parse_body;
pub use present::projection;
pub use syntax::DirectorySyntaxes;

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";

/// Largest page served, whatever `count` asks for.
pub const MAX_PAGE: usize = 1000;
/// Page size when the client gives no `count`.
pub const DEFAULT_PAGE: usize = 100;
/// In a list or search response, and in the answer to a POST, PUT or
/// PATCH, a group with more members than this is returned without
/// `members` unless the request's `attributes` names them
/// (`GET /Groups/{id}` always returns them): a page of 100 groups of
/// 50,000 members each would otherwise be one answer of millions of
/// values, and writing a large group would build its whole list again.
pub const LIST_MEMBERS_MAX: usize = 1000;
/// The members per request when the config does not say
/// (`server.max_members_per_request`).
pub const DEFAULT_MAX_MEMBERS: usize = 20_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

/// A SCIM request, already authenticated, its body parsed. `Debug` hides
/// a password in the body.
#[derive(Clone)]
pub struct ApiRequest {
    pub method: Method,
    /// The path below the SCIM base path, e.g. `/Users/123`.
    pub path: String,
    /// Decoded query parameters.
    pub query: Vec<(String, String)>,
    pub body: Option<Value>,
    pub if_match: Option<String>,
    /// `If-None-Match` on a GET: 304 when the resource is at that version.
    pub if_none_match: Option<String>,
    /// Absolute URL of the SCIM base, for `Location` and `meta.location`.
    pub base_url: String,
}

impl std::fmt::Debug for ApiRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field(
                "body",
                &self.body.as_ref().map(crate::journal::redact_passwords),
            )
            .field("if_match", &self.if_match)
            .field("if_none_match", &self.if_none_match)
            .field("base_url", &self.base_url)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiResponse {
    pub status: u16,
    pub body: Option<Value>,
    pub location: Option<String>,
    pub etag: Option<String>,
}

impl ApiResponse {
    fn json(status: u16, body: Value) -> ApiResponse {
        let etag = body
            .pointer("/meta/version")
            .and_then(Value::as_str)
            .map(str::to_string);
        ApiResponse {
            status,
            body: Some(body),
            location: None,
            etag,
        }
    }
    pub fn error(e: &ScimError) -> ApiResponse {
        ApiResponse {
            status: e.status,
            body: Some(e.to_json()),
            location: None,
            etag: None,
        }
    }
}

/// What the endpoints need of the background writer: a nudge after a write
/// is journaled, and whether the directory can be reached (for
/// `when_down = "reject"`). `daemon` implements it for the writer's handle.
pub trait WriterSignal: Send + Sync {
    fn wake(&self);
    fn directory_up(&self) -> bool;
}

/// The adoption hook: a lookup filter that misses in the store may adopt a
/// matching directory entry before the store answers. `daemon` plugs the
/// directory-side adopter in; without one, lookups answer from the store.
pub trait Adoption: Send + Sync {
    fn before_list<'a>(
        &'a self,
        kind: Kind,
        filter: Option<&'a str>,
        base_url: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;
}

/// Everything a request handler needs.
#[derive(Clone)]
pub struct Api {
    pub store: Store,
    pub model: SharedModel,
    pub writer: std::sync::Arc<dyn WriterSignal>,
    /// `ldap.when_down = "reject"`: refuse writes with 503 while the
    /// directory is unreachable instead of queueing them.
    pub reject_when_down: bool,
    /// The directory's attribute syntaxes, once known.
    pub syntaxes: std::sync::Arc<DirectorySyntaxes>,
    /// Adopts existing directory entries when a lookup misses in the store.
    pub adopter: Option<std::sync::Arc<dyn Adoption>>,
    /// `server.max_members_per_request`: most members one request may
    /// name, counted before anything is de-duplicated or looked up.
    pub max_members: usize,
}

/// Large store work (scans, a large group's members, a big body's parse)
/// is handed over with this; see [`crate::offload`] for what runs on the
/// worker and why.
pub use crate::offload::blocking;

/// Most members a write may name and still be handled on the async worker
/// (its store work is then a few hundred keys at most).
const INLINE_MEMBERS: usize = 100;

/// Runs `f` here when the work is `small`, else off the worker
/// ([`blocking`]).
fn sized<R>(small: bool, f: impl FnOnce() -> R) -> R {
    if small {
        f()
    } else {
        blocking(f)
    }
}

impl Api {
    pub async fn handle(&self, mut req: ApiRequest) -> ApiResponse {
        match self.route(&mut req).await {
            Ok(r) => r,
            Err(e) => ApiResponse::error(&e),
        }
    }

    /// `req` is mutable so that a create or replace can take the body
    /// instead of copying it (a group of 50,000 members is a large tree).
    async fn route(&self, req: &mut ApiRequest) -> Result<ApiResponse, ScimError> {
        let path = req.path.clone();
        let segments: Vec<&str> = path
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let kind = |s: &str| match s.to_ascii_lowercase().as_str() {
            "users" => Some(Kind::User),
            "groups" => Some(Kind::Group),
            _ => None,
        };
        // Parsed before anything is done, so that a malformed list is a 400
        // and not a write followed by an error.
        let projection = projection(req)?;
        // The resource types this version serves, for discovery and for a
        // search across all of them.
        let served: Vec<Kind> = ["Users", "Groups"].iter().filter_map(|s| kind(s)).collect();
        let resp = match (req.method, segments.as_slice()) {
            (Method::Get, [s, rest @ ..]) if discovery_endpoint(s) && rest.len() <= 1 => {
                self.discovery(req, &served, s, rest.first().copied())
            }
            (_, [s, ..]) if discovery_endpoint(s) => Err(ScimError::new(
                405,
                None,
                "the discovery endpoints answer GET only",
            )),
            (Method::Post, [s]) if *s == ".search" => blocking(|| self.search_all(&served, req)),
            (Method::Get, [k]) if kind(k).is_some() => {
                let kind = kind(k).unwrap_or(Kind::User);
                self.adopt_on_miss(kind, req).await;
                self.list(kind, req)
            }
            (Method::Post, [k, s]) if kind(k).is_some() && *s == ".search" => {
                self.list(kind(k).unwrap_or(Kind::User), req)
            }
            (Method::Post, [k]) if kind(k).is_some() => {
                self.create(kind(k).unwrap_or(Kind::User), req).await
            }
            // A user is one read (and its few group keys): answered here.
            // A group may list 50,000 members: handed over.
            (Method::Get, [k, id]) if kind(k) == Some(Kind::User) => self.get(Kind::User, id, req),
            (Method::Get, [k, id]) if kind(k).is_some() => {
                blocking(|| self.get(kind(k).unwrap_or(Kind::User), id, req))
            }
            (Method::Put, [k, id]) if kind(k).is_some() => {
                self.replace(kind(k).unwrap_or(Kind::User), id, req).await
            }
            (Method::Patch, [k, id]) if kind(k).is_some() => {
                self.patch(kind(k).unwrap_or(Kind::User), id, req).await
            }
            (Method::Delete, [k, id]) if kind(k).is_some() => {
                self.delete(kind(k).unwrap_or(Kind::User), id, req).await
            }
            (_, [k] | [k, _]) if kind(k).is_some() => {
                Err(ScimError::new(405, None, "method not allowed on this path"))
            }
            _ => Err(ScimError::not_found(format!(
                "no SCIM endpoint at {}",
                req.path
            ))),
        }?;
        Ok(match segments.first().and_then(|k| kind(k)) {
            Some(k) => self.project(k, resp, &projection),
            None => resp,
        })
    }

    /// The adoption hook: a lookup filter that misses in the store may
    /// adopt a matching directory entry before the store answers.
    async fn adopt_on_miss(&self, kind: Kind, req: &ApiRequest) {
        if let Some(a) = &self.adopter {
            let filter = req
                .query
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("filter"))
                .map(|(_, v)| v.as_str());
            a.before_list(kind, filter, &req.base_url).await;
        }
    }

    /// The request's body, taken out of it (a create or replace keeps it as
    /// the new resource; nothing reads it again).
    fn take_body(&self, req: &mut ApiRequest) -> Result<Value, ScimError> {
        self.body(req)?;
        Ok(req.body.take().unwrap_or(Value::Null))
    }

    fn body<'a>(&self, req: &'a ApiRequest) -> Result<&'a Value, ScimError> {
        match &req.body {
            Some(v @ Value::Object(_)) => Ok(v),
            Some(_) => Err(ScimError::invalid_syntax(
                "the request body must be a JSON object",
            )),
            None => Err(ScimError::invalid_syntax("this request needs a JSON body")),
        }
    }

    fn load(&self, kind: Kind, id: &str) -> Result<Value, ScimError> {
        self.store
            .get(kind, id)
            .map_err(|e| ScimError::internal(e.to_string()))?
            .ok_or_else(|| ScimError::not_found(format!("{} {id} not found", kind.name())))
    }
}
