//! The attribute mapping: how a SCIM resource becomes an LDAP entry (DN
//! template, object classes, attribute rules with fallbacks and
//! transforms), how an existing LDAP entry reads back as SCIM (for
//! adoption), the group-membership style and the user deactivation and
//! deletion policy. It is read from a TOML file that directory
//! administrators edit; see `examples/openldap.toml`.
//!
//! Architecture invariant: pure. No I/O (the caller reads the file and
//! hands over its text), no tokio, hyper, ldap3 or sled. It knows SCIM only
//! through `crate::scim` (paths, schemas, errors) and LDAP only as strings
//! (DNs, filters, attribute values). What the directory currently holds is
//! asked through [`Resolver`], which the LDAP writer implements.

pub mod adopt;
mod entry;
mod error;
mod password;
mod paths;
mod raw;
mod template;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use crate::scim::schema::{AttrDef, AttrType, Schema, SchemaRegistry};

pub use crate::dn::{
    dn_to_string, escape_dn_value, escape_filter_value, is_attribute_description, parse_dn, Ava,
    ParsedDn,
};
pub use adopt::{AdoptPolicy, Refusal};
pub use entry::{is_inactive, GroupEntry, LdapEntry, NoResolver, Resolver};
pub use error::{MappingError, Problem};
pub use password::{encode as encode_password, PasswordFormat, PasswordMapping, PasswordWrite};
pub use paths::ScimPath;
pub use template::{Segment, Source, Transform, ALLOCATED_KEY};

/// The OpenLDAP preset shipped in `examples/openldap.toml` (used by
/// `scim2ldap dev`).
pub const EXAMPLE_OPENLDAP: &str = include_str!("../../../../examples/openldap.toml");

/// A validated mapping file.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub user: ResourceMapping,
    pub user_policy: UserPolicy,
    /// `None` when the file has no `[group]`: groups are then not
    /// provisioned (the daemon answers `/Groups` with an error).
    pub group: Option<GroupMapping>,
    /// Custom SCIM extensions the installation stores, in file order.
    pub extensions: Vec<ExtensionDecl>,
    /// Where the SCIM `password` goes (`None`: nowhere; it is then
    /// dropped when a request carries it). See `password.rs`.
    pub password: Option<PasswordMapping>,
}

/// Which SCIM resource type a mapping or extension is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    User,
    Group,
}

impl ResourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::User => "User",
            ResourceKind::Group => "Group",
        }
    }
}

/// How one resource type (User or Group) maps to LDAP entries.
#[derive(Debug, Clone)]
pub struct ResourceMapping {
    pub(crate) kind: ResourceKind,
    pub(crate) rdn_attr: String,
    /// The RDN value template; literals are unescaped text, the whole value
    /// is escaped once rendered.
    pub(crate) rdn_value: Vec<Segment>,
    /// Canonical RFC 4514 text.
    pub(crate) parent_dn: String,
    pub(crate) object_classes: Vec<String>,
    pub(crate) id_attribute: Option<String>,
    /// In file order.
    pub(crate) rules: Vec<AttributeRule>,
    /// The schemas of this resource type, extensions of the file included,
    /// for the reverse mapping (which needs types and multi-valuedness).
    pub(crate) registry: SchemaRegistry,
    /// Which existing directory entries may be adopted.
    pub(crate) adopt: AdoptPolicy,
}

/// One `[*.attributes]` entry: where an LDAP attribute's values come from.
#[derive(Debug, Clone)]
pub struct AttributeRule {
    /// The LDAP attribute, spelled as in the file.
    pub attribute: String,
    /// Tried in order; the first that gives at least one value wins.
    pub sources: Vec<Source>,
    /// Applied, in order, to every value of whichever source won.
    pub transforms: Vec<Transform>,
    /// A SCIM create or replace that leaves this attribute without a value
    /// is refused with 400 invalidValue. The RDN attribute always is.
    pub required: bool,
    /// No two resources of this type may give the attribute an equal
    /// value (compared as LDAP's caseIgnoreMatch does): a create or
    /// replace that would is refused with 409 uniqueness before anything
    /// is stored, as a taken RDN is (`unique = true`, e.g. AD's
    /// sAMAccountName derived from the UPN).
    pub unique: bool,
    /// The source's values are SCIM ids of other resources, written as
    /// their entries' DN or attribute (e.g. the enterprise `manager`).
    pub resolve: Option<Reference>,
}

/// How a reference to another SCIM resource (a group member, a manager)
/// is written in LDAP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// The DN of the referenced entry (`member`, `uniqueMember`, `manager`).
    Dn,
    /// The value of this attribute of the referenced entry (`memberUid`
    /// holds the member's `uid`).
    Attribute(String),
}

/// `[group]`: the group entry, and how its members are written.
#[derive(Debug, Clone)]
pub struct GroupMapping {
    pub resource: ResourceMapping,
    pub members: Members,
}

/// `[group.members]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members {
    /// `member`, `uniqueMember`, `memberUid`, ...
    pub attribute: String,
    pub value: Reference,
    pub empty: EmptyGroup,
    /// The directory keeps member values right by itself when a member
    /// entry is renamed or deleted (OpenLDAP's refint overlay, 389 DS's
    /// Referential Integrity plugin, AD's linked attributes): scim2ldap then
    /// does not rewrite them. It covers every DN-valued attribute of the
    /// table, `also` ones included; attribute-valued ones (memberUid) are
    /// always rewritten by scim2ldap.
    pub refint: bool,
    /// `also`: more attributes of the same entry that list the same
    /// members (groupOfNames + posixGroup: `member` DNs and `memberUid`
    /// uids). They never hold a placeholder: with no member values (an
    /// empty group, or only nested groups for `memberUid`) they are
    /// absent. Empty unless the file has `also`.
    pub also: Vec<MemberAttribute>,
}

/// One `[group.members] also` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberAttribute {
    pub attribute: String,
    pub value: Reference,
}

/// One attribute that lists a group's members, as the planner needs it:
/// the table's own attribute first, then the `also` ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberAttr<'a> {
    pub attribute: &'a str,
    pub value: &'a Reference,
    /// Held while the group has no member value in this attribute (the
    /// table's attribute only).
    pub placeholder: Option<&'a str>,
}

impl Members {
    /// Every attribute that lists members, the table's own first.
    pub fn attributes(&self) -> Vec<MemberAttr<'_>> {
        let placeholder = match &self.empty {
            EmptyGroup::Placeholder(p) => Some(p.as_str()),
            EmptyGroup::Allow => None,
        };
        std::iter::once(MemberAttr {
            attribute: &self.attribute,
            value: &self.value,
            placeholder,
        })
        .chain(self.also.iter().map(|a| MemberAttr {
            attribute: &a.attribute,
            value: &a.value,
            placeholder: None,
        }))
        .collect()
    }
}

/// What a group without members becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmptyGroup {
    /// The member attribute holds this DN while the group is empty
    /// (`groupOfNames` requires at least one member).
    Placeholder(String),
    /// The member attribute is removed (the object class allows none).
    Allow,
}

/// `[user.deactivate]` and `[user.delete]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPolicy {
    pub deactivate: DeactivatePolicy,
    pub delete: DeleteAction,
}

/// What `active: false` does to the user's entry; reactivation undoes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeactivatePolicy {
    /// Attributes present only while inactive (e.g. `pwdAccountLockedTime`,
    /// `nsAccountLock`), names as spelled in the file.
    pub set: BTreeMap<String, Vec<String>>,
    /// While inactive the entry lives under this DN (canonical form).
    pub move_to: Option<String>,
    /// While inactive the user is not a member of any group entry.
    pub remove_from_groups: bool,
    /// Active Directory: set bit 2 (ACCOUNTDISABLE) of
    /// `userAccountControl`, keeping the other bits.
    pub ad_user_account_control: bool,
}

/// What SCIM DELETE of a user does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteAction {
    /// Delete the entry.
    Delete,
    /// Apply the deactivate policy and keep the entry.
    Deactivate,
}

/// `[[extension]]`: a custom SCIM schema extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionDecl {
    pub urn: String,
    pub resource: ResourceKind,
    pub attributes: Vec<ExtensionAttribute>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionAttribute {
    pub name: String,
    /// Never `Complex`: custom extensions carry simple attributes only.
    pub kind: AttrType,
    pub multi_valued: bool,
    pub case_exact: bool,
    pub required: bool,
}

impl ExtensionDecl {
    /// The SCIM schema this declaration stands for, to hand to the SCIM
    /// core's registry and to `GET /Schemas`.
    pub fn to_schema(&self) -> Schema {
        let name = self.urn.rsplit(':').next().unwrap_or(&self.urn).to_string();
        Schema {
            id: self.urn.clone(),
            name,
            description: format!(
                "Custom {} extension declared in the mapping file",
                self.resource.as_str()
            ),
            attributes: self
                .attributes
                .iter()
                .map(|a| {
                    let mut d = AttrDef::new(&a.name, a.kind);
                    d.multi_valued = a.multi_valued;
                    d.case_exact = a.case_exact;
                    d.required = a.required;
                    d
                })
                .collect(),
        }
    }
}

impl Mapping {
    /// Parses and validates a mapping file. `file_name` only labels the
    /// errors; the caller reads the file.
    pub fn parse(text: &str, file_name: &str) -> Result<Mapping, MappingError> {
        validate::parse(text, file_name)
    }

    /// The extension schemas declared for one resource type.
    pub fn extension_schemas(&self, kind: ResourceKind) -> Vec<Schema> {
        self.extensions
            .iter()
            .filter(|e| e.resource == kind)
            .map(ExtensionDecl::to_schema)
            .collect()
    }

    /// The SCIM core's registry for users: core, enterprise, and the
    /// file's user extensions.
    pub fn user_registry(&self) -> SchemaRegistry {
        SchemaRegistry::users(self.extension_schemas(ResourceKind::User))
    }

    /// The SCIM core's registry for groups.
    pub fn group_registry(&self) -> SchemaRegistry {
        SchemaRegistry::groups(self.extension_schemas(ResourceKind::Group))
    }
}

impl ResourceMapping {
    /// Which existing directory entries of this type may be adopted.
    pub fn adopt_policy(&self) -> &AdoptPolicy {
        &self.adopt
    }

    /// The attributes whose value is a number allocated per resource, with
    /// their ranges: (attribute, low, high).
    pub fn allocations(&self) -> Vec<(&str, u64, u64)> {
        self.rules()
            .iter()
            .flat_map(|r| r.sources.iter())
            .filter_map(|s| match s {
                Source::Allocated { attribute, lo, hi } => Some((attribute.as_str(), *lo, *hi)),
                _ => None,
            })
            .collect()
    }

    /// The resource type this maps.
    pub fn kind(&self) -> ResourceKind {
        self.kind
    }

    /// The DN template minus its RDN, in canonical RFC 4514 form.
    pub fn parent_dn(&self) -> &str {
        &self.parent_dn
    }

    /// The attribute type of the RDN (`uid` in `uid={userName},...`).
    pub fn rdn_attribute(&self) -> &str {
        &self.rdn_attr
    }

    pub fn object_classes(&self) -> &[String] {
        &self.object_classes
    }

    /// The attribute that holds the SCIM id, if configured.
    pub fn id_attribute(&self) -> Option<&str> {
        self.id_attribute.as_deref()
    }

    pub fn rules(&self) -> &[AttributeRule] {
        &self.rules
    }

    /// The rule for an LDAP attribute, case-insensitively.
    pub fn rule(&self, attr: &str) -> Option<&AttributeRule> {
        self.rules
            .iter()
            .find(|r| r.attribute.eq_ignore_ascii_case(attr))
    }

    /// Every LDAP attribute this mapping writes (rules and the id
    /// attribute; not objectClass, which the writer only adds). The writer
    /// touches these and nothing else.
    pub fn managed_attributes(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.rules.iter().map(|r| r.attribute.as_str()).collect();
        v.extend(self.id_attribute.as_deref());
        v
    }

    /// Whether the attribute must always have a value: `required = true`
    /// or the RDN attribute. Case-insensitive.
    pub fn is_required(&self, attr: &str) -> bool {
        attr.eq_ignore_ascii_case(&self.rdn_attr) || self.rule(attr).is_some_and(|r| r.required)
    }

    /// The keys that must be unique among the resources of this type for
    /// `entry`: its RDN key first ([`LdapEntry::rdn_key`]), then
    /// `attr=value` for each value of every `unique = true` attribute,
    /// prepared by RFC 4518 as the directory compares them. The caller
    /// stores them with the resource and refuses a resource that shares
    /// one with another.
    pub fn unique_keys(&self, entry: &LdapEntry) -> Vec<String> {
        let mut keys = vec![entry.rdn_key()];
        for rule in self.rules.iter().filter(|r| r.unique) {
            for v in entry.get(&rule.attribute).into_iter().flatten() {
                let k = crate::dn::rdn_key(&rule.attribute, v);
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
        }
        keys
    }

    /// The object class used to find entries of this type: the last one
    /// listed that is not `top` (files list the most specific last, as
    /// in `["top", "person", "organizationalPerson", "inetOrgPerson"]`).
    pub fn search_class(&self) -> &str {
        self.object_classes
            .iter()
            .rev()
            .find(|c| !c.eq_ignore_ascii_case("top"))
            .or(self.object_classes.last())
            .map_or("top", String::as_str)
    }
}

impl GroupMapping {
    /// The group's managed attributes, the member attributes included.
    pub fn managed_attributes(&self) -> Vec<&str> {
        let mut v = self.resource.managed_attributes();
        v.extend(self.members.attributes().iter().map(|a| a.attribute));
        v
    }

    pub fn is_required(&self, attr: &str) -> bool {
        self.resource.is_required(attr)
            || (attr.eq_ignore_ascii_case(&self.members.attribute)
                && matches!(self.members.empty, EmptyGroup::Placeholder(_)))
    }
}

impl DeactivatePolicy {
    /// The attributes this policy writes (the `set` ones, and
    /// `userAccountControl` when the AD bit is used).
    pub fn attributes(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.set.keys().map(String::as_str).collect();
        if self.ad_user_account_control {
            v.push("userAccountControl");
        }
        v
    }
}
