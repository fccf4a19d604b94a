//! The SCIM endpoints, served from the store: parse and validate with the
//! SCIM core, check the mapping can place the resource, journal it, wait
//! for the journal to be on disk, wake the writer, answer.
//!
//! Architecture invariant: nothing here knows hyper or LDAP. A request
//! comes in as an [`ApiRequest`] and leaves as an [`ApiResponse`]; the
//! directory is only reached through the journal and the writer.

use serde_json::{json, Value};
use tracing::{debug, info};

use crate::mapping::ALLOCATED_KEY;
use crate::model::SharedModel;
use crate::scim::discovery;
use crate::scim::members::{split_member_ops, take_members, MemberEdit};
use crate::scim::meta::{self, location, Meta};
use crate::scim::patch::{apply_operations, parse_patch_request};
use crate::scim::project::Projection;
use crate::scim::query::{sort_order, sort_resources, ListQuery, PageLimits};
use crate::scim::schema::{canonicalize, strip_never_returned, strip_read_only, SchemaRegistry};
use crate::scim::ScimError;
use crate::store::{now_rfc3339, Intent, Kind, MemberOps, Store, Write, WriteError, RDN_KEY};
use crate::syntax::AttributeSyntaxes;

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";

/// Largest page served, whatever `count` asks for.
pub const MAX_PAGE: usize = 1000;
/// Page size when the client gives no `count`.
pub const DEFAULT_PAGE: usize = 100;
const PAGE_LIMITS: PageLimits = PageLimits {
    default: DEFAULT_PAGE,
    max: MAX_PAGE,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

/// A SCIM request, already authenticated, its body parsed.
#[derive(Debug, Clone)]
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

/// The directory's attribute syntaxes once the daemon has read its
/// subschema (in the background, so a directory that is down does not
/// hold up the start). With them, a value the directory would refuse (a
/// non-ASCII IA5String, a value over a declared length bound) is a 400
/// before anything is journaled, instead of a parked entry later.
#[derive(Default)]
pub struct DirectorySyntaxes(std::sync::RwLock<Option<std::sync::Arc<AttributeSyntaxes>>>);

impl DirectorySyntaxes {
    pub fn set(&self, syntaxes: AttributeSyntaxes) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(std::sync::Arc::new(syntaxes));
    }

    pub fn get(&self) -> Option<std::sync::Arc<AttributeSyntaxes>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
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
}

impl Api {
    pub async fn handle(&self, req: ApiRequest) -> ApiResponse {
        match self.route(&req).await {
            Ok(r) => r,
            Err(e) => ApiResponse::error(&e),
        }
    }

    async fn route(&self, req: &ApiRequest) -> Result<ApiResponse, ScimError> {
        let segments: Vec<&str> = req
            .path
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
            (Method::Post, [s]) if *s == ".search" => self.search_all(&served, req),
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
            (Method::Get, [k, id]) if kind(k).is_some() => {
                self.get(kind(k).unwrap_or(Kind::User), id, req)
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

    /// `attributes` / `excludedAttributes` applied to a single resource in
    /// a response (lists are projected as they are built).
    fn project(&self, kind: Kind, mut resp: ApiResponse, projection: &Projection) -> ApiResponse {
        if !matches!(resp.status, 200 | 201) {
            return resp;
        }
        if let Some(body) = resp.body.as_mut() {
            let is_resource = body.get("id").is_some()
                && !body["schemas"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|s| s == LIST_SCHEMA));
            if is_resource {
                projection.apply(body, self.model.current().registry(kind));
            }
        }
        resp
    }

    /// `/ServiceProviderConfig`, `/Schemas[/{id}]`, `/ResourceTypes[/{name}]`.
    fn discovery(
        &self,
        req: &ApiRequest,
        served: &[Kind],
        endpoint: &str,
        id: Option<&str>,
    ) -> Result<ApiResponse, ScimError> {
        // RFC 7644 §4: a filter here would be silently ignored, which a
        // client could take for a match; refuse it instead.
        if req
            .query
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("filter") && !v.trim().is_empty())
        {
            return Err(ScimError::new(
                403,
                None,
                "the discovery endpoints do not support filtering",
            ));
        }
        let model = self.model.current();
        let mut types = Vec::new();
        if served.contains(&Kind::User) {
            types.push(discovery::ResourceType {
                name: "User",
                endpoint: "/Users",
                description: "User Account",
                schemas: &model.users,
            });
        }
        // Groups are discoverable only where the mapping provisions them.
        if served.contains(&Kind::Group) && model.mapping.group.is_some() {
            types.push(discovery::ResourceType {
                name: "Group",
                endpoint: "/Groups",
                description: "Group",
                schemas: &model.groups,
            });
        }
        let base = req.base_url.as_str();
        let found = match (endpoint.to_ascii_lowercase().as_str(), id) {
            ("serviceproviderconfig", None) => Some(discovery::service_provider_config(
                base,
                discovery::Capabilities {
                    max_results: MAX_PAGE,
                },
            )),
            ("schemas", None) => Some(discovery::schemas(base, &types)),
            ("schemas", Some(id)) => discovery::find_schema(base, &types, id),
            ("resourcetypes", None) => Some(discovery::resource_types(base, &types)),
            ("resourcetypes", Some(name)) => discovery::find_resource_type(base, &types, name),
            _ => None,
        };
        match found {
            Some(doc) => Ok(ApiResponse::json(200, doc)),
            None => Err(ScimError::not_found(format!(
                "no SCIM endpoint at {}",
                req.path
            ))),
        }
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

    /// With `when_down = "reject"`, a write while the directory is down is
    /// refused before anything is journaled.
    fn accepting(&self) -> Result<(), ScimError> {
        if self.reject_when_down && !self.writer.directory_up() {
            return Err(ScimError::new(
                503,
                None,
                "the directory is unavailable; retry later",
            ));
        }
        Ok(())
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

    /// Canonical names, coerced values, required attributes, and a mapping
    /// that can place the resource: everything checked before journaling.
    /// `old` is the stored state of the resource being updated (`None` on
    /// create): the numbers allocated for it carry over.
    fn validate(
        &self,
        kind: Kind,
        resource: &mut Value,
        old: Option<&Value>,
    ) -> Result<(), ScimError> {
        let model = self.model.current();
        let dropped = canonicalize(resource, model.registry(kind))?;
        if !dropped.is_empty() {
            debug!(attributes = ?dropped, "ignored attributes this server's schema does not define");
        }
        // The required name first: a refused request must not use up an
        // allocated number.
        let required = match kind {
            Kind::User => "userName",
            Kind::Group => "displayName",
        };
        let name = resource
            .get(required)
            .and_then(Value::as_str)
            .unwrap_or_default();
        if name.trim().is_empty() {
            return Err(ScimError::invalid_value(format!(
                "{required} is required and must be a non-empty string"
            )));
        }
        // NUL cannot be indexed, so it would slip past the uniqueness check.
        if name.contains('\0') {
            return Err(ScimError::invalid_value(format!(
                "{required} must not contain NUL"
            )));
        }
        self.allocate(kind, resource, old, &model)?;
        let resolver = crate::model::StoreResolver {
            store: &self.store,
            model: &model,
        };
        let entry = model.entry(kind, resource, &resolver)?;
        if let Some(syntaxes) = self.syntaxes.get() {
            check_syntaxes(&syntaxes, &model, kind, &entry)?;
        }
        if let Some(obj) = resource.as_object_mut() {
            obj.insert(RDN_KEY.into(), Value::String(entry.rdn_key()));
        }
        Ok(())
    }

    /// Numbers the mapping allocates per resource (uidNumber, gidNumber):
    /// kept from `old`, or handed out now, and attached under
    /// [`ALLOCATED_KEY`] where the mapping reads them.
    fn allocate(
        &self,
        kind: Kind,
        resource: &mut Value,
        old: Option<&Value>,
        model: &crate::model::Model,
    ) -> Result<(), ScimError> {
        let wanted = model.allocations(kind);
        if wanted.is_empty() {
            return Ok(());
        }
        let kept = old
            .and_then(|o| o.get(ALLOCATED_KEY))
            .and_then(Value::as_object);
        let mut numbers = serde_json::Map::new();
        for (attr, lo, hi) in wanted {
            let n = match kept.and_then(|k| k.get(&attr)).and_then(Value::as_u64) {
                Some(n) => n,
                None => self
                    .store
                    .allocate(kind, &attr, lo, hi)
                    .map_err(|e| ScimError::internal(e.to_string()))?
                    .ok_or_else(|| {
                        ScimError::internal(format!(
                            "the {attr} range {lo}-{hi} of the mapping is used up; widen it"
                        ))
                    })?,
            };
            numbers.insert(attr, Value::from(n));
        }
        if let Some(obj) = resource.as_object_mut() {
            obj.insert(ALLOCATED_KEY.into(), Value::Object(numbers));
        }
        Ok(())
    }

    async fn create(&self, kind: Kind, req: &ApiRequest) -> Result<ApiResponse, ScimError> {
        self.accepting()?;
        let mut resource = self.body(req)?.clone();
        // The id and meta are the server's to assign (RFC 7643 §3.1).
        strip_read_only(&mut resource, self.model.current().registry(kind));
        let edit = match kind {
            Kind::Group => Some(take_members(&mut resource)?),
            Kind::User => None,
        };
        let id = uuid::Uuid::new_v4().to_string();
        if let Some(obj) = resource.as_object_mut() {
            obj.insert("id".into(), Value::String(id.clone()));
        }
        self.validate(kind, &mut resource, None)?;
        let ops = edit.map(|e| self.member_ops(&id, e)).transpose()?;
        let now = now_rfc3339();
        Meta {
            kind,
            id: &id,
            base_url: Some(&req.base_url),
            created: &now,
            last_modified: &now,
        }
        .stamp(&mut resource);
        let seq = self
            .store
            .write(Write {
                kind,
                id: &id,
                resource: &mut resource,
                intent: Intent::Create,
                members: ops.as_ref(),
            })
            .map_err(write_error)?;
        self.commit(seq).await?;
        info!(kind = kind.name(), %id, seq, "created");
        let mut resp = ApiResponse::json(201, self.present(kind, resource, req)?);
        resp.location = Some(location(&req.base_url, kind, &id));
        Ok(resp)
    }

    fn get(&self, kind: Kind, id: &str, req: &ApiRequest) -> Result<ApiResponse, ScimError> {
        let resource = self.load(kind, id)?;
        if let Some(tags) = req.if_none_match.as_deref() {
            let version = crate::store::version_of(&resource);
            if etag_listed(tags, &version) {
                return Ok(ApiResponse {
                    status: 304,
                    body: None,
                    location: None,
                    etag: Some(version),
                });
            }
        }
        Ok(ApiResponse::json(200, self.present(kind, resource, req)?))
    }

    fn load(&self, kind: Kind, id: &str) -> Result<Value, ScimError> {
        self.store
            .get(kind, id)
            .map_err(|e| ScimError::internal(e.to_string()))?
            .ok_or_else(|| ScimError::not_found(format!("{} {id} not found", kind.name())))
    }

    /// Checks the member ids of a group edit (each must be a User or a
    /// Group this server knows, and not the group itself) and works out
    /// their kinds.
    fn member_ops(&self, gid: &str, edit: MemberEdit) -> Result<MemberOps, ScimError> {
        let kind_of = |id: &String| -> Result<(String, Kind), ScimError> {
            if id == gid {
                return Err(ScimError::invalid_value(
                    "a group cannot be a member of itself",
                ));
            }
            for kind in [Kind::User, Kind::Group] {
                if self
                    .store
                    .exists(kind, id)
                    .map_err(|e| ScimError::internal(e.to_string()))?
                {
                    return Ok((id.clone(), kind));
                }
            }
            Err(ScimError::invalid_value(format!(
                "members: there is no User or Group with id {id:?}"
            )))
        };
        Ok(MemberOps {
            replace: edit
                .replace
                .map(|l| l.iter().map(kind_of).collect::<Result<Vec<_>, _>>())
                .transpose()?,
            add: edit
                .add
                .iter()
                .map(kind_of)
                .collect::<Result<Vec<_>, _>>()?,
            remove: edit.remove,
            displays: edit.displays.into_iter().collect(),
            only_members: false,
        })
    }

    async fn replace(
        &self,
        kind: Kind,
        id: &str,
        req: &ApiRequest,
    ) -> Result<ApiResponse, ScimError> {
        self.accepting()?;
        let old = self.load(kind, id)?;
        check_if_match(req, &old)?;
        let mut resource = self.body(req)?.clone();
        if let Some(given) = resource.get("id").and_then(Value::as_str) {
            if given != id {
                return Err(ScimError::mutability(format!(
                    "id is immutable: the body says {given:?}, the URL {id:?}"
                )));
            }
        }
        strip_read_only(&mut resource, self.model.current().registry(kind));
        let edit = match kind {
            Kind::Group => Some(take_members(&mut resource)?),
            Kind::User => None,
        };
        if let Some(obj) = resource.as_object_mut() {
            obj.insert("id".into(), Value::String(id.to_string()));
        }
        self.validate(kind, &mut resource, Some(&old))?;
        let ops = edit.map(|e| self.member_ops(id, e)).transpose()?;
        restamp(&mut resource, &old, kind, req, id);
        let version = crate::store::version_of(&old);
        let seq = self
            .store
            .write(Write {
                kind,
                id,
                resource: &mut resource,
                intent: Intent::Update {
                    if_version: Some(&version),
                },
                members: ops.as_ref(),
            })
            .map_err(write_error)?;
        self.commit(seq).await?;
        info!(kind = kind.name(), %id, seq, "replaced");
        Ok(ApiResponse::json(200, self.present(kind, resource, req)?))
    }

    async fn patch(
        &self,
        kind: Kind,
        id: &str,
        req: &ApiRequest,
    ) -> Result<ApiResponse, ScimError> {
        self.accepting()?;
        let operations = parse_patch_request(self.body(req)?)?;
        // A group's member operations become a delta for the store; the
        // engine sees the rest (and never the member list).
        let (edit, operations) = match kind {
            Kind::Group => split_member_ops(operations)?,
            Kind::User => (MemberEdit::default(), operations),
        };
        let only_members = operations.is_empty();
        let ops = if edit.is_empty() {
            None
        } else {
            Some(MemberOps {
                only_members,
                ..self.member_ops(id, edit)?
            })
        };
        // Read-modify-write, retried if another write to the same resource
        // lands in between, so no concurrent PATCH is lost.
        for _ in 0..8 {
            let old = self.load(kind, id)?;
            check_if_match(req, &old)?;
            let mut resource = old.clone();
            let model = self.model.current();
            apply_operations(&mut resource, &operations, model.registry(kind))?;
            drop(model);
            if let Some(obj) = resource.as_object_mut() {
                obj.insert("id".into(), Value::String(id.to_string()));
            }
            self.validate(kind, &mut resource, Some(&old))?;
            restamp(&mut resource, &old, kind, req, id);
            if ops.is_none() && strip_meta(&resource) == strip_meta(&old) {
                // Nothing changed: nothing to journal (Okta re-sends state).
                // What is reported must be durable all the same: the write
                // that made `old` may still wait for its flush, and it is
                // no later than the last seq assigned.
                self.durable(self.store.last_seq()).await?;
                return self.patched(kind, old, req);
            }
            let version = crate::store::version_of(&old);
            match self.store.write(Write {
                kind,
                id,
                resource: &mut resource,
                intent: Intent::Update {
                    if_version: Some(&version),
                },
                members: ops.as_ref(),
            }) {
                Ok(seq) => {
                    self.commit(seq).await?;
                    info!(kind = kind.name(), %id, seq, "patched");
                    return self.patched(kind, resource, req);
                }
                Err(WriteError::VersionMismatch { .. }) if req.if_match.is_none() => continue,
                Err(e) => return Err(write_error(e)),
            }
        }
        Err(ScimError::new(
            409,
            None,
            "the resource kept changing while this PATCH was applied; retry",
        ))
    }

    /// The answer to a PATCH: the resource (200), except for a group when
    /// the client asked for no attributes: 204, as Entra ID and Okta expect,
    /// so that a member change never sends back a large member list.
    fn patched(
        &self,
        kind: Kind,
        resource: Value,
        req: &ApiRequest,
    ) -> Result<ApiResponse, ScimError> {
        let asked = req.query.iter().any(|(k, _)| {
            k.eq_ignore_ascii_case("attributes") || k.eq_ignore_ascii_case("excludedAttributes")
        });
        if kind == Kind::Group && !asked {
            let etag = resource
                .pointer("/meta/version")
                .and_then(Value::as_str)
                .map(str::to_string);
            return Ok(ApiResponse {
                status: 204,
                body: None,
                location: None,
                etag,
            });
        }
        Ok(ApiResponse::json(200, self.present(kind, resource, req)?))
    }

    async fn delete(
        &self,
        kind: Kind,
        id: &str,
        req: &ApiRequest,
    ) -> Result<ApiResponse, ScimError> {
        self.accepting()?;
        let old = self.load(kind, id)?;
        check_if_match(req, &old)?;
        let seq = self
            .store
            .delete(kind, id, Some(&crate::store::version_of(&old)))
            .map_err(write_error)?;
        self.commit(seq).await?;
        info!(kind = kind.name(), %id, seq, "deleted");
        Ok(ApiResponse {
            status: 204,
            body: None,
            location: None,
            etag: None,
        })
    }

    /// A stored resource as a client may see it: computed attributes added
    /// (a group's `members`, a user's `groups`), attributes that are never
    /// returned (password) removed. `excludedAttributes=members` skips
    /// reading the member list.
    fn present(&self, kind: Kind, resource: Value, req: &ApiRequest) -> Result<Value, ScimError> {
        self.present_with(kind, resource, req, &projection(req)?)
    }

    /// [`Api::present`] with the projection already parsed (lists parse it
    /// once): `members` and `groups` are read only when they will be
    /// returned.
    fn present_with(
        &self,
        kind: Kind,
        mut resource: Value,
        req: &ApiRequest,
        projection: &Projection,
    ) -> Result<Value, ScimError> {
        let internal = |e: crate::store::StoreError| ScimError::internal(e.to_string());
        let model = self.model.current();
        let excluded = |name: &str| !projection.wants(name, model.registry(kind));
        let id = resource
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let mut computed = Vec::new();
        match kind {
            Kind::Group if !excluded("members") => {
                for (m, mk, display) in self.store.members_with_display(&id).map_err(internal)? {
                    let mut item = json!({"value": m, "type": mk.name(), "$ref": location(&req.base_url, mk, &m)});
                    if let Some(d) = display {
                        item["display"] = Value::String(d);
                    }
                    computed.push(item);
                }
                if !computed.is_empty() {
                    resource["members"] = Value::Array(computed);
                }
            }
            Kind::User if !excluded("groups") => {
                for g in self.store.groups_of(&id).map_err(internal)? {
                    let display = self
                        .store
                        .get(Kind::Group, &g)
                        .map_err(internal)?
                        .and_then(|v| v.get("displayName").cloned());
                    let mut item = json!({"value": g, "type": "direct", "$ref": location(&req.base_url, Kind::Group, &g)});
                    if let Some(d) = display {
                        item["display"] = d;
                    }
                    computed.push(item);
                }
                if !computed.is_empty() {
                    resource["groups"] = Value::Array(computed);
                }
            }
            _ => {}
        }
        strip_never_returned(&mut resource, self.model.current().registry(kind));
        // meta.location from the configured URL at response time, not the
        // one stored with the snapshot: changing server.public_url fixes
        // every resource.
        if let Some(meta) = resource.get_mut("meta").and_then(Value::as_object_mut) {
            meta.insert("location".into(), location(&req.base_url, kind, &id).into());
        }
        if let Some(obj) = resource.as_object_mut() {
            obj.remove(ALLOCATED_KEY);
            obj.remove(RDN_KEY);
        }
        Ok(resource)
    }

    async fn commit(&self, seq: u64) -> Result<(), ScimError> {
        self.durable(seq).await?;
        self.writer.wake();
        Ok(())
    }

    /// Waits until every write up to `seq` is on disk. A store that cannot
    /// flush answers 503: the daemon exits and its service manager
    /// restarts it, so the client's retry can succeed.
    async fn durable(&self, seq: u64) -> Result<(), ScimError> {
        self.store.commit(seq).await.map_err(|e| {
            ScimError::new(
                503,
                None,
                format!("the journal could not be written to disk ({e}); this write may not have been kept: retry it later"),
            )
        })
    }

    /// `GET /Users?...` and `POST /Users/.search`: filter, sort, page,
    /// then project each resource (`attributes` / `excludedAttributes`).
    fn list(&self, kind: Kind, req: &ApiRequest) -> Result<ApiResponse, ScimError> {
        let q = match req.method {
            Method::Post => ListQuery::from_search_request(self.body(req)?, PAGE_LIMITS)?,
            _ => ListQuery::from_params(&req.query, PAGE_LIMITS)?,
        };
        let (total, page) = self.page(kind, &q)?;
        let model = self.model.current();
        let reg = model.registry(kind);
        let resources = page
            .into_iter()
            .map(|r| {
                let mut r = self.present_with(kind, r, req, &q.projection)?;
                q.projection.apply(&mut r, reg);
                Ok(r)
            })
            .collect::<Result<Vec<_>, ScimError>>()?;
        Ok(list_response(total, q.start_index, resources))
    }

    /// `POST /.search` (RFC 7644 §3.4.3): one search over every resource
    /// type served; attributes are resolved against each type's schemas.
    fn search_all(&self, served: &[Kind], req: &ApiRequest) -> Result<ApiResponse, ScimError> {
        let q = ListQuery::from_search_request(self.body(req)?, PAGE_LIMITS)?;
        let everything = ListQuery {
            start_index: 1,
            count: usize::MAX,
            sort_by: None,
            ..q.clone()
        };
        let model = self.model.current();
        let mut all: Vec<(Kind, Value)> = Vec::new();
        for &kind in served {
            all.extend(
                self.page(kind, &everything)?
                    .1
                    .into_iter()
                    .map(|r| (kind, r)),
            );
        }
        // Sorted before projection, which may remove the sort attribute.
        if let Some(by) = &q.sort_by {
            let raw: Vec<Value> = all.iter().map(|(_, r)| r.clone()).collect();
            let order = sort_order(&raw, by, q.descending, model.registry(Kind::User));
            let mut slots: Vec<Option<(Kind, Value)>> = all.into_iter().map(Some).collect();
            all = order
                .into_iter()
                .filter_map(|i| slots.get_mut(i)?.take())
                .collect();
        }
        let total = all.len();
        let page = all
            .into_iter()
            .skip(q.start_index - 1)
            .take(q.count)
            .map(|(kind, r)| {
                let mut r = self.present_with(kind, r, req, &q.projection)?;
                q.projection.apply(&mut r, model.registry(kind));
                Ok(r)
            })
            .collect::<Result<Vec<_>, ScimError>>()?;
        Ok(list_response(total, q.start_index, page))
    }

    /// The resources of one page of a list, unprojected, and how many
    /// matched in all.
    fn page(&self, kind: Kind, q: &ListQuery) -> Result<(usize, Vec<Value>), ScimError> {
        let start = q.start_index;
        let count = q.count;
        let model = self.model.current();
        let reg: &SchemaRegistry = model.registry(kind);
        let internal = |e: crate::store::StoreError| ScimError::internal(e.to_string());

        let mut matched: Vec<Value> = Vec::new();
        let total;
        match q.filter.as_ref() {
            Some(filter) => {
                filter.validate(reg)?;
                let indexed = match filter.eq_lookup() {
                    Some((path, value)) => {
                        let name = match &path.sub {
                            Some(sub) => format!("{}.{sub}", path.name),
                            None => path.name.clone(),
                        };
                        let core = path.urn.as_deref().is_none_or(|u| {
                            u.eq_ignore_ascii_case(USER_SCHEMA)
                                || u.eq_ignore_ascii_case(GROUP_SCHEMA)
                        });
                        if core {
                            self.store.lookup(kind, &name, value).map_err(internal)?
                        } else {
                            None
                        }
                    }
                    None => None,
                };
                match indexed {
                    Some(mut ids) => {
                        ids.sort();
                        for id in ids {
                            if let Some(r) = self.store.get(kind, &id).map_err(internal)? {
                                if filter.matches(&r, reg) {
                                    matched.push(r);
                                }
                            }
                        }
                    }
                    None => {
                        for r in self.store.scan(kind) {
                            let r = r.map_err(internal)?;
                            if filter.matches(&r, reg) {
                                matched.push(r);
                            }
                        }
                    }
                }
                total = matched.len();
            }
            None if q.sort_by.is_some() => {
                for r in self.store.scan(kind) {
                    matched.push(r.map_err(internal)?);
                }
                total = matched.len();
            }
            None => {
                total = self.store.count(kind);
                matched = self
                    .store
                    .scan_page(kind, start - 1, count)
                    .map_err(internal)?;
            }
        }
        if q.filter.is_some() || q.sort_by.is_some() {
            if let Some(by) = &q.sort_by {
                sort_resources(&mut matched, by, q.descending, reg);
            }
            matched = matched.into_iter().skip(start - 1).take(count).collect();
        }
        Ok((total, matched))
    }
}

/// Refuses an entry whose values the directory's schema forbids, naming
/// the LDAP attribute and where its value came from.
fn check_syntaxes(
    syntaxes: &AttributeSyntaxes,
    model: &crate::model::Model,
    kind: Kind,
    entry: &crate::mapping::LdapEntry,
) -> Result<(), ScimError> {
    let rules = match kind {
        Kind::User => Some(model.mapping.user.rules()),
        Kind::Group => model.mapping.group.as_ref().map(|g| g.resource.rules()),
    };
    for (attr, values) in &entry.attrs {
        for v in values {
            if let Err(problem) = syntaxes.check(attr, v) {
                let source = rules
                    .and_then(|r| r.iter().find(|r| r.attribute.eq_ignore_ascii_case(attr)))
                    .map(|r| {
                        r.sources
                            .iter()
                            .map(|s| s.describe())
                            .collect::<Vec<_>>()
                            .join(" or ")
                    })
                    .unwrap_or_else(|| "the mapping".into());
                return Err(ScimError::invalid_value(format!(
                    "{source}: the directory cannot store this value in {attr}: it {problem}"
                )));
            }
        }
    }
    Ok(())
}

fn write_error(e: WriteError) -> ScimError {
    match e {
        WriteError::Taken { kind, attr, value } if attr == RDN_KEY => {
            ScimError::uniqueness(format!(
                "another {kind} already has a directory entry with this name ({value}); names are compared as the directory compares them (case, character width and extra spaces do not count)"
            ))
        }
        WriteError::Taken { kind, attr, value } => ScimError::uniqueness(format!(
            "{attr} is already used by another {kind}; names are compared as the directory compares them (case, character width and extra spaces do not count: {value:?})"
        )),
        // Adoption's refusals: never the answer to a SCIM write.
        e @ WriteError::AlreadyLinked { .. } => ScimError::uniqueness(e.to_string()),
        // The id of a create is a fresh UUID: taken means something broke.
        e @ WriteError::IdExists { .. } => ScimError::internal(e.to_string()),
        WriteError::NotFound => ScimError::not_found("resource not found"),
        WriteError::VersionMismatch { current } => ScimError::new(
            412,
            None,
            format!("the resource has changed: its version is now {current}"),
        ),
        WriteError::Store(e) => ScimError::internal(e.to_string()),
    }
}

fn check_if_match(req: &ApiRequest, current: &Value) -> Result<(), ScimError> {
    let Some(want) = req.if_match.as_deref() else {
        return Ok(());
    };
    let version = crate::store::version_of(current);
    let ok = etag_listed(want, &version);
    if ok {
        Ok(())
    } else {
        Err(ScimError::new(
            412,
            None,
            format!("If-Match {want} does not match the current version {version}"),
        ))
    }
}

/// Whether an `If-Match` / `If-None-Match` list names `version` (or is
/// `*`). Weak comparison (RFC 9110 §8.8.3.2): `W/` is ignored.
fn etag_listed(list: &str, version: &str) -> bool {
    list.split(',').map(str::trim).any(|w| {
        w == "*" || w == version || w.trim_start_matches("W/") == version.trim_start_matches("W/")
    })
}

/// `meta` of an updated resource: `created` kept from `old`, the rest new.
fn restamp(resource: &mut Value, old: &Value, kind: Kind, req: &ApiRequest, id: &str) {
    let now = now_rfc3339();
    Meta {
        kind,
        id,
        base_url: Some(&req.base_url),
        created: meta::created(old).unwrap_or(&now),
        last_modified: &now,
    }
    .stamp(resource);
}

fn strip_meta(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("meta");
    }
    v
}

fn list_response(total: usize, start_index: usize, resources: Vec<Value>) -> ApiResponse {
    ApiResponse::json(
        200,
        json!({
            "schemas": [LIST_SCHEMA],
            "totalResults": total,
            "startIndex": start_index,
            "itemsPerPage": resources.len(),
            "Resources": resources,
        }),
    )
}

fn discovery_endpoint(segment: &str) -> bool {
    ["ServiceProviderConfig", "Schemas", "ResourceTypes"]
        .iter()
        .any(|e| e.eq_ignore_ascii_case(segment))
}

/// The `attributes` / `excludedAttributes` of a request's query string.
/// A handler can ask it [`Projection::wants`] before reading a resource,
/// to skip what will not be returned (a group's members).
pub fn projection(req: &ApiRequest) -> Result<Projection, ScimError> {
    let param = |name: &str| {
        req.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    Projection::parse(param("attributes"), param("excludedAttributes"))
}
