//! A group's members in a request: the cap on how many one request may
//! name, the check of the ids an edit names (and their kinds), and whether
//! a large group is shown without its members.
//!
//! Knows member ids and the store's member keys through `Store`; how the
//! members are presented is `present.rs`'s.

use super::{Api, LIST_MEMBERS_MAX};
use crate::scim::members::MemberEdit;
use crate::scim::project::Projection;
use crate::scim::ScimError;
use crate::store::{Kind, MemberOps};

impl Api {
    /// Refuses a request that names more members than
    /// `server.max_members_per_request`, before any of them is looked at.
    pub(super) fn member_cap(&self, named: usize) -> Result<(), ScimError> {
        if named > self.max_members {
            return Err(ScimError::invalid_value(format!(
                "this request names {named} members; at most {} are accepted in one request (server.max_members_per_request): send the rest in further PATCH requests",
                self.max_members
            )));
        }
        Ok(())
    }

    /// Checks the member ids of a group edit (each must be a User or a
    /// Group this server knows, and not the group itself) and works out
    /// their kinds.
    pub(super) fn member_ops(&self, gid: &str, edit: MemberEdit) -> Result<MemberOps, ScimError> {
        let kind_of = |id: String| -> Result<(String, Kind), ScimError> {
            if id == gid {
                return Err(ScimError::invalid_value(
                    "a group cannot be a member of itself",
                ));
            }
            for kind in [Kind::User, Kind::Group] {
                if self
                    .store
                    .exists(kind, &id)
                    .map_err(|e| ScimError::internal(e.to_string()))?
                {
                    return Ok((id, kind));
                }
            }
            Err(ScimError::invalid_value(format!(
                "members: there is no User or Group with id {id:?}"
            )))
        };
        Ok(MemberOps {
            replace: edit
                .replace
                .map(|l| l.into_iter().map(kind_of).collect::<Result<Vec<_>, _>>())
                .transpose()?,
            add: edit
                .add
                .into_iter()
                .map(kind_of)
                .collect::<Result<Vec<_>, _>>()?,
            remove: edit.remove,
            displays: edit.displays.into_iter().collect(),
            only_members: false,
        })
    }

    /// A group listed or written (`in_list`) with more than [`LIST_MEMBERS_MAX`]
    /// members is shown without them, unless `attributes` names `members`.
    pub(super) fn members_left_out(
        &self,
        gid: &str,
        in_list: bool,
        projection: &Projection,
    ) -> Result<bool, ScimError> {
        if !in_list || projection.names("members") {
            return Ok(false);
        }
        let n = self
            .store
            .member_count_upto(gid, LIST_MEMBERS_MAX + 1)
            .map_err(|e| ScimError::internal(e.to_string()))?;
        Ok(n > LIST_MEMBERS_MAX)
    }
}
