//! The writes: create, replace, patch (read-modify-write, retried on a
//! race) and delete; each one journaled in one store write, answered once
//! the journal is on disk, then the writer woken. Refused while the
//! directory is down with `when_down = "reject"`; store refusals become
//! SCIM errors here (`write_error`).
//!
//! Knows the store's write API and SCIM; never LDAP or hyper. What is
//! checked before a write is `validate.rs`'s; how the result is shown,
//! `present.rs`'s.

use serde_json::Value;
use tracing::info;

use super::password::refuse_password_removal;
use super::present::check_if_match;
use super::{sized, Api, ApiRequest, ApiResponse, INLINE_MEMBERS};
use crate::scim::members::{
    body_member_count, ops_member_count, split_member_ops, take_members, MemberEdit,
};
use crate::scim::meta::{self, location, Meta};
use crate::scim::patch::{apply_operations, parse_patch_request};
use crate::scim::schema::strip_read_only;
use crate::scim::ScimError;
use crate::store::{now_rfc3339, Intent, Kind, MemberOps, Write, WriteError, RDN_KEY};

impl Api {
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

    pub(super) async fn create(
        &self,
        kind: Kind,
        req: &mut ApiRequest,
    ) -> Result<ApiResponse, ScimError> {
        self.accepting()?;
        let small = self.write_size(kind, req)?;
        let mut resource = self.take_body(req)?;
        let req = &*req;
        let (id, resource, seq) = sized(small, || -> Result<_, ScimError> {
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
            // A password the mapping writes nowhere is dropped here, never
            // stored: a create goes on without it (what an administrator
            // who did not map passwords expects).
            let password = self
                .validate(kind, &mut resource, None)?
                .filter(|_| self.maps_password());
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
                .write_with_password(
                    Write {
                        kind,
                        id: &id,
                        resource: &mut resource,
                        intent: Intent::Create,
                        members: ops.as_ref(),
                    },
                    password.as_ref(),
                )
                .map_err(write_error)?;
            Ok((id, resource, seq))
        })?;
        self.commit(seq).await?;
        info!(kind = kind.name(), %id, seq, "created");
        let mut resp = ApiResponse::json(
            201,
            sized(small, || self.present_written(kind, resource, req))?,
        );
        resp.location = Some(location(&req.base_url, kind, &id));
        Ok(resp)
    }

    pub(super) async fn replace(
        &self,
        kind: Kind,
        id: &str,
        req: &mut ApiRequest,
    ) -> Result<ApiResponse, ScimError> {
        self.accepting()?;
        let small = self.write_size(kind, req)?;
        let mut resource = self.take_body(req)?;
        let req = &*req;
        let (resource, seq) = sized(small, || -> Result<_, ScimError> {
            let old = self.load(kind, id)?;
            check_if_match(req, &old)?;
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
            // Write-only (RFC 7643 §7): a PUT without a password keeps the
            // directory's, since the store never has one to compare with.
            let password = self.validate(kind, &mut resource, Some(&old))?;
            let ops = edit.map(|e| self.member_ops(id, e)).transpose()?;
            restamp(&mut resource, &old, kind, req, id);
            let password = self.wanted_password(
                password,
                ops.is_none() && strip_meta(&resource) == strip_meta(&old),
            )?;
            let version = crate::store::version_of(&old);
            let seq = self
                .store
                .write_with_password(
                    Write {
                        kind,
                        id,
                        resource: &mut resource,
                        intent: Intent::Update {
                            if_version: Some(&version),
                        },
                        members: ops.as_ref(),
                    },
                    password.as_ref(),
                )
                .map_err(write_error)?;
            Ok((resource, seq))
        })?;
        self.commit(seq).await?;
        info!(kind = kind.name(), %id, seq, "replaced");
        Ok(ApiResponse::json(
            200,
            sized(small, || self.present_written(kind, resource, req))?,
        ))
    }

    /// Checks a create's or replace's members against the cap; whether its
    /// work is small enough for the async worker.
    fn write_size(&self, kind: Kind, req: &ApiRequest) -> Result<bool, ScimError> {
        let members = match kind {
            Kind::Group => body_member_count(self.body(req)?),
            Kind::User => 0,
        };
        self.member_cap(members)?;
        Ok(members <= INLINE_MEMBERS)
    }

    pub(super) async fn patch(
        &self,
        kind: Kind,
        id: &str,
        req: &ApiRequest,
    ) -> Result<ApiResponse, ScimError> {
        self.accepting()?;
        let operations = parse_patch_request(self.body(req)?)?;
        let members = match kind {
            Kind::Group => ops_member_count(&operations),
            Kind::User => 0,
        };
        self.member_cap(members)?;
        // A PATCH's work is its operations', whatever the group's size (the
        // member list is never read); the answer may present a group
        // (when attributes are asked for), which is not small.
        let small = members <= INLINE_MEMBERS;
        let small_answer = small && (kind == Kind::User || !asks_attributes(req));
        let (operations, ops) = sized(small, || -> Result<_, ScimError> {
            // A group's member operations become a delta for the store;
            // the engine sees the rest (and never the member list).
            let (edit, operations) = match kind {
                Kind::Group => split_member_ops(operations)?,
                Kind::User => (MemberEdit::default(), operations),
            };
            refuse_password_removal(&operations)?;
            let only_members = operations.is_empty();
            let ops = if edit.is_empty() {
                None
            } else {
                Some(MemberOps {
                    only_members,
                    ..self.member_ops(id, edit)?
                })
            };
            Ok((operations, ops))
        })?;
        enum Outcome {
            Unchanged(Value),
            Written(u64, Value),
            Raced,
        }
        // Read-modify-write, retried if another write to the same resource
        // lands in between, so no concurrent PATCH is lost.
        for _ in 0..8 {
            let outcome = sized(small, || -> Result<Outcome, ScimError> {
                let old = self.load(kind, id)?;
                check_if_match(req, &old)?;
                let mut resource = old.clone();
                let model = self.model.current();
                apply_operations(&mut resource, &operations, model.registry(kind))?;
                drop(model);
                if let Some(obj) = resource.as_object_mut() {
                    obj.insert("id".into(), Value::String(id.to_string()));
                }
                let password = self.validate(kind, &mut resource, Some(&old))?;
                restamp(&mut resource, &old, kind, req, id);
                let unchanged = ops.is_none() && strip_meta(&resource) == strip_meta(&old);
                let password = self.wanted_password(password, unchanged)?;
                if unchanged && password.is_none() {
                    return Ok(Outcome::Unchanged(old));
                }
                let version = crate::store::version_of(&old);
                match self.store.write_with_password(
                    Write {
                        kind,
                        id,
                        resource: &mut resource,
                        intent: Intent::Update {
                            if_version: Some(&version),
                        },
                        members: ops.as_ref(),
                    },
                    password.as_ref(),
                ) {
                    Ok(seq) => Ok(Outcome::Written(seq, resource)),
                    Err(WriteError::VersionMismatch { .. }) if req.if_match.is_none() => {
                        Ok(Outcome::Raced)
                    }
                    Err(e) => Err(write_error(e)),
                }
            })?;
            match outcome {
                Outcome::Unchanged(old) => {
                    // Nothing changed: nothing to journal (Okta re-sends
                    // state). What is reported must be durable all the
                    // same: the write that made `old` may still wait for
                    // its flush, and it is no later than the last seq
                    // assigned.
                    self.durable(self.store.last_seq()).await?;
                    return sized(small_answer, || self.patched(kind, old, req));
                }
                Outcome::Written(seq, resource) => {
                    self.commit(seq).await?;
                    info!(kind = kind.name(), %id, seq, "patched");
                    return sized(small_answer, || self.patched(kind, resource, req));
                }
                Outcome::Raced => continue,
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
        if kind == Kind::Group && !asks_attributes(req) {
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
        Ok(ApiResponse::json(
            200,
            self.present_written(kind, resource, req)?,
        ))
    }

    pub(super) async fn delete(
        &self,
        kind: Kind,
        id: &str,
        req: &ApiRequest,
    ) -> Result<ApiResponse, ScimError> {
        self.accepting()?;
        // A user's delete removes its few membership keys; a group's may
        // remove 50,000.
        let seq = sized(kind == Kind::User, || -> Result<u64, ScimError> {
            let old = self.load(kind, id)?;
            check_if_match(req, &old)?;
            self.store
                .delete(kind, id, Some(&crate::store::version_of(&old)))
                .map_err(write_error)
        })?;
        self.commit(seq).await?;
        info!(kind = kind.name(), %id, seq, "deleted");
        Ok(ApiResponse {
            status: 204,
            body: None,
            location: None,
            etag: None,
        })
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
}

/// Whether the request names the attributes to return (`attributes` or
/// `excludedAttributes`).
fn asks_attributes(req: &ApiRequest) -> bool {
    req.query.iter().any(|(k, _)| {
        k.eq_ignore_ascii_case("attributes") || k.eq_ignore_ascii_case("excludedAttributes")
    })
}

fn write_error(e: WriteError) -> ScimError {
    match e {
        WriteError::Taken { kind, attr, value } if attr == RDN_KEY => {
            ScimError::uniqueness(format!(
                "another {kind} already has a directory entry with this name or unique value ({value}); names are compared as the directory compares them (case, character width and extra spaces do not count)"
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
