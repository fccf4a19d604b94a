//! A resource as a client sees it: computed attributes added (a group's
//! `members`, a user's `groups`), never-returned and internal keys
//! removed, `meta.location` from the configured URL, the projection
//! (`attributes` / `excludedAttributes`); GET of one resource with
//! `If-None-Match`; and the ETag comparisons (`If-Match` on writes).
//!
//! Reads the store, never writes it.

use serde_json::{json, Value};

use super::{Api, ApiRequest, ApiResponse, LIST_SCHEMA};
use crate::mapping::ALLOCATED_KEY;
use crate::scim::meta::location;
use crate::scim::project::Projection;
use crate::scim::schema::strip_never_returned;
use crate::scim::ScimError;
use crate::store::{Kind, RDN_KEY};

impl Api {
    /// `attributes` / `excludedAttributes` applied to a single resource in
    /// a response (lists are projected as they are built).
    pub(super) fn project(
        &self,
        kind: Kind,
        mut resp: ApiResponse,
        projection: &Projection,
    ) -> ApiResponse {
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

    pub(super) fn get(
        &self,
        kind: Kind,
        id: &str,
        req: &ApiRequest,
    ) -> Result<ApiResponse, ScimError> {
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

    /// A stored resource as a client may see it: computed attributes added
    /// (a group's `members`, a user's `groups`), attributes that are never
    /// returned (password) removed. `excludedAttributes=members` skips
    /// reading the member list.
    fn present(&self, kind: Kind, resource: Value, req: &ApiRequest) -> Result<Value, ScimError> {
        self.present_in(kind, resource, req, &projection(req)?, false)
    }

    /// The resource in the answer to a write: as [`Api::present`], but a
    /// group of more than [`LIST_MEMBERS_MAX`](super::LIST_MEMBERS_MAX)
    /// members is sent without them unless `attributes` names `members`
    /// (`GET /Groups/{id}` has them), so that writing a 50,000-member
    /// group does not build a 50,000-member answer.
    pub(super) fn present_written(
        &self,
        kind: Kind,
        resource: Value,
        req: &ApiRequest,
    ) -> Result<Value, ScimError> {
        self.present_in(kind, resource, req, &projection(req)?, true)
    }

    /// [`Api::present`] with the projection already parsed (lists parse it
    /// once): `members` and `groups` are read only when they will be
    /// returned. `in_list` (a list, or the answer to a write): a group of
    /// more than [`LIST_MEMBERS_MAX`](super::LIST_MEMBERS_MAX) members is
    /// shown without them unless `attributes` names `members`.
    pub(super) fn present_in(
        &self,
        kind: Kind,
        mut resource: Value,
        req: &ApiRequest,
        projection: &Projection,
        in_list: bool,
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
            Kind::Group
                if !excluded("members") && !self.members_left_out(&id, in_list, projection)? =>
            {
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
}

pub(super) fn check_if_match(req: &ApiRequest, current: &Value) -> Result<(), ScimError> {
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
