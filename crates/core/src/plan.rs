//! What the directory should hold for one journal entry (the plan), the
//! cheap part of it the dispatcher orders entries by (the route), and the
//! `Planner` that makes both.
//!
//! Architecture invariant: this file is pure. It imports no ldap3, tokio,
//! sled or hyper, does no I/O, and knows neither the mapping file nor SCIM
//! JSON: plans are DNs, object classes and attribute values.

use std::collections::BTreeMap;

use crate::journal::JournalEntry;
use crate::scim::Kind;

/// What the directory should hold for one journal entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// The entry must exist and match.
    Upsert(Desired),
    /// The entry must not exist. `dn` is where it would be if it was never
    /// linked (the link, when there is one, wins).
    Delete { dn: String },
    /// A group: its entry, plus a change to its member attributes.
    Group(GroupPlan),
}

/// A group's entry and its membership change.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupPlan {
    /// The entry without the member attributes (not in `managed` either).
    pub desired: Desired,
    /// Every attribute that lists the members, the mapping's main one
    /// first (`member`; then `memberUid` on a groupOfNames + posixGroup
    /// entry), each with its change. Their deltas go in one modify.
    pub members: Vec<MemberAttrPlan>,
    /// Only members changed: the delta can go to the linked entry without
    /// reading it first (a 50,000-member entry is costly to read).
    pub only_members: bool,
}

/// One member attribute of a group and what to do with its values.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberAttrPlan {
    /// `member`, `uniqueMember`, `memberUid`, ...
    pub attr: String,
    pub values: MemberPlan,
    /// The value that keeps a group valid while the attribute has no
    /// member values; `None`: the attribute is removed then.
    pub placeholder: Option<String>,
}

/// What to do with a group's member values.
#[derive(Debug, Clone, PartialEq)]
pub enum MemberPlan {
    /// Converge to exactly these values (reads the current ones).
    Full(Vec<String>),
    /// Add and remove these values only: costs the same whatever the size
    /// of the group. `empty_before` / `empty_after` say when the placeholder
    /// goes or comes.
    Delta {
        add: Vec<String>,
        remove: Vec<String>,
        empty_before: bool,
        empty_after: bool,
    },
}

/// An entry as the mapping says it should be.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Desired {
    pub dn: String,
    pub object_classes: Vec<String>,
    /// Mapped attributes that have values.
    pub attrs: BTreeMap<String, Vec<String>>,
    /// Every attribute the mapping names: one of these with no value in
    /// `attrs` is removed from the entry; attributes not named here are
    /// never touched.
    pub managed: Vec<String>,
    /// Managed attributes that are never emptied (the directory requires
    /// them): with no value in `attrs`, the entry keeps what it has.
    pub required: Vec<String>,
    /// Group member attributes whose values are this entry's DN: rewritten
    /// in every group when the entry is renamed (empty when the directory
    /// does that itself).
    pub dn_referrers: Vec<String>,
    /// (group member attribute, own attribute): group values that are this
    /// entry's value of `own` (memberUid = uid), rewritten when it changes.
    pub value_referrers: Vec<(String, String)>,
    /// Active Directory: `Some(true)` sets bit 2 (ACCOUNTDISABLE) of
    /// userAccountControl, `Some(false)` clears it; the other bits are kept.
    pub ad_disable: Option<bool>,
    /// Group entries this entry must be in (`present`) or out of: a user
    /// left out of its groups while inactive, put back when reactivated.
    pub memberships: Vec<Membership>,
    /// Whose entry this is, for when the resource is not linked yet and
    /// its add finds an entry already there. `None`: not checked.
    pub claim: Option<Claim>,
    /// A password to set (the journal entry carried one): replaced on its
    /// own, never compared with what the directory holds, and never in
    /// `attrs` or `managed`, so that an entry without one leaves the
    /// directory's password alone.
    pub password: Option<crate::mapping::PasswordWrite>,
}

/// What decides whether an entry found where a new resource belongs may be
/// taken over: it is the daemon's own earlier add (the answer or the link
/// was lost), or an existing entry the adoption policy allows.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// The resource's SCIM id.
    pub id: String,
    /// When the resource was created (accepted), RFC 3339.
    pub accepted_at: String,
    /// The attribute the mapping writes the SCIM id into, if any.
    pub id_attribute: Option<String>,
    /// The mapping's adoption policy for this resource type.
    pub policy: crate::mapping::AdoptPolicy,
}

/// One group entry's member value for this entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Membership {
    pub group_dn: String,
    pub attr: String,
    pub value: String,
    pub present: bool,
    /// The group's empty-group placeholder, if it has one.
    pub placeholder: Option<String>,
}

/// Gives a group's current member values, for when a delta cannot be
/// applied: one list per [`GroupPlan::members`] attribute, in that order.
pub type FullMembers<'a> = &'a (dyn Fn() -> Result<Vec<Vec<String>>, PlanError> + Send + Sync);

/// The cheap part of a plan, worked out when the entry is dispatched:
/// enough to order it against the other entries, without building its
/// member lists. The full [`Plan`] is made later, in the lane.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// The entry's own resource.
    pub resource: (Kind, String),
    /// The DN its plan targets.
    pub dn: String,
    /// The DN its resource is linked to now, if it is linked.
    pub linked: Option<String>,
    /// Other resources this entry names (a group's added members, a
    /// user's manager). The writer does not apply the entry while one of
    /// them has an earlier write that has not reached the directory
    /// (parked, or waiting itself): the entry and the later writes of its
    /// resource wait, in order, and go ahead once that write is applied or
    /// skipped.
    pub dependencies: Vec<(Kind, String)>,
}

/// Why a journal entry could not be planned. Retrying the same entry with
/// the same mapping gives the same error: the writer parks it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// The mapping cannot place the resource (a required attribute has no
    /// value, a template cannot be filled).
    #[error("mapping: {0}")]
    Mapping(String),
    /// A group entry while the mapping has no `[group]` table.
    #[error("the mapping has no [group] table")]
    NoGroupTable,
    /// Reading the store failed while planning.
    #[error("{0}")]
    Store(String),
}

/// Turns journal entries into routes and plans. Implemented by the
/// daemon's mapping layer (`model::MappingPlanner`).
pub trait Planner: Send + Sync {
    /// The entry's route: called once when it is dispatched, so it must be
    /// cheap (no member lists).
    fn route(&self, entry: &JournalEntry) -> Result<Route, PlanError>;
    /// What the directory should hold: called once, in the lane that
    /// applies the entry.
    fn plan(&self, entry: &JournalEntry) -> Result<Plan, PlanError>;
    /// The member values a group has now, one list per member attribute
    /// of its plan (same order): used when a delta cannot be applied (the
    /// entry is missing, or the directory disagrees).
    fn full_members(&self, entry: &JournalEntry) -> Result<Vec<Vec<String>>, PlanError>;
}
