//! The SCIM resource schemas (RFC 7643 §2, §4, §7, §8.7.1): attribute
//! definitions for the core User and Group, the Enterprise User extension
//! and any custom extension the mapping names, plus `canonicalize`, which
//! turns whatever spelling an IdP sent into the one stored form.
//!
//! Architecture invariant: this module knows nothing of LDAP or of the
//! mapping; the mapping hands extra `Schema`s in, nothing flows back.

use std::sync::OnceLock;

use serde_json::{json, Map, Number, Value};

use crate::scim::attr_path::AttrPath;
use crate::scim::datetime::parse_datetime;
use crate::scim::error::ScimError;
use crate::scim::json::{get_ci, is_empty_value, parse_bool_str, type_name};

pub const CORE_USER_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const CORE_GROUP_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const ENTERPRISE_USER_URN: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const LIST_RESPONSE_URN: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const PATCH_OP_URN: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
pub const ERROR_URN: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
pub const SEARCH_REQUEST_URN: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
pub const BULK_REQUEST_URN: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";
pub const SCHEMA_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";
pub const RESOURCE_TYPE_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
pub const SERVICE_PROVIDER_CONFIG_URN: &str =
    "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
/// What Microsoft Entra's provisioning service puts in `schemas` when it
/// creates a group (their SCIM tutorial, "Create Group"). It is a marker with
/// no attributes of its own and no `urn:` form, so it is accepted in input
/// and not repeated in the stored resource.
pub const MS_ADSCIM_GROUP_URN: &str =
    "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group";

/// RFC 7643 §2.3 data types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttrType {
    String,
    Boolean,
    Decimal,
    Integer,
    DateTime,
    Binary,
    Reference,
    Complex,
}

impl AttrType {
    pub fn as_str(self) -> &'static str {
        match self {
            AttrType::String => "string",
            AttrType::Boolean => "boolean",
            AttrType::Decimal => "decimal",
            AttrType::Integer => "integer",
            AttrType::DateTime => "dateTime",
            AttrType::Binary => "binary",
            AttrType::Reference => "reference",
            AttrType::Complex => "complex",
        }
    }
}

/// RFC 7643 §7 `mutability`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mutability {
    ReadOnly,
    ReadWrite,
    Immutable,
    WriteOnly,
}

impl Mutability {
    pub fn as_str(self) -> &'static str {
        match self {
            Mutability::ReadOnly => "readOnly",
            Mutability::ReadWrite => "readWrite",
            Mutability::Immutable => "immutable",
            Mutability::WriteOnly => "writeOnly",
        }
    }
}

/// RFC 7643 §7 `returned`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Returned {
    Always,
    Never,
    Default,
    Request,
}

impl Returned {
    pub fn as_str(self) -> &'static str {
        match self {
            Returned::Always => "always",
            Returned::Never => "never",
            Returned::Default => "default",
            Returned::Request => "request",
        }
    }
}

/// RFC 7643 §7 `uniqueness`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Uniqueness {
    None,
    Server,
    Global,
}

impl Uniqueness {
    pub fn as_str(self) -> &'static str {
        match self {
            Uniqueness::None => "none",
            Uniqueness::Server => "server",
            Uniqueness::Global => "global",
        }
    }
}

/// One attribute (or sub-attribute) definition, RFC 7643 §7.
#[derive(Debug, Clone, PartialEq)]
pub struct AttrDef {
    /// Canonical spelling; lookups compare it case-insensitively.
    pub name: String,
    pub ty: AttrType,
    pub multi_valued: bool,
    pub required: bool,
    /// Whether string comparisons (filters, uniqueness) respect case.
    pub case_exact: bool,
    pub mutability: Mutability,
    pub returned: Returned,
    pub uniqueness: Uniqueness,
    pub canonical_values: Vec<String>,
    /// For `reference` attributes: "User", "Group", "external", "uri".
    pub reference_types: Vec<String>,
    /// Only for `complex` attributes; SCIM allows one level of nesting.
    pub sub_attributes: Vec<AttrDef>,
    pub description: String,
}

impl AttrDef {
    /// A single-valued, optional, case-insensitive, readWrite attribute with
    /// default returnability and no uniqueness: the RFC defaults (§2.2).
    pub fn new(name: &str, ty: AttrType) -> AttrDef {
        AttrDef {
            name: name.to_string(),
            ty,
            multi_valued: false,
            required: false,
            case_exact: false,
            mutability: Mutability::ReadWrite,
            returned: Returned::Default,
            uniqueness: Uniqueness::None,
            canonical_values: Vec::new(),
            reference_types: Vec::new(),
            sub_attributes: Vec::new(),
            description: String::new(),
        }
    }
    pub fn string(name: &str) -> AttrDef {
        AttrDef::new(name, AttrType::String)
    }
    pub fn boolean(name: &str) -> AttrDef {
        AttrDef::new(name, AttrType::Boolean)
    }
    pub fn reference(name: &str, types: &[&str]) -> AttrDef {
        let mut d = AttrDef::new(name, AttrType::Reference);
        d.reference_types = types.iter().map(|s| s.to_string()).collect();
        d
    }
    pub fn complex(name: &str, subs: Vec<AttrDef>) -> AttrDef {
        let mut d = AttrDef::new(name, AttrType::Complex);
        d.sub_attributes = subs;
        d
    }
    pub fn multi(mut self) -> AttrDef {
        self.multi_valued = true;
        self
    }
    pub fn required(mut self) -> AttrDef {
        self.required = true;
        self
    }
    pub fn case_exact(mut self) -> AttrDef {
        self.case_exact = true;
        self
    }
    pub fn mutability(mut self, m: Mutability) -> AttrDef {
        self.mutability = m;
        self
    }
    pub fn returned(mut self, r: Returned) -> AttrDef {
        self.returned = r;
        self
    }
    pub fn uniqueness(mut self, u: Uniqueness) -> AttrDef {
        self.uniqueness = u;
        self
    }
    pub fn canonical(mut self, values: &[&str]) -> AttrDef {
        self.canonical_values = values.iter().map(|s| s.to_string()).collect();
        self
    }
    pub fn describe(mut self, text: &str) -> AttrDef {
        self.description = text.to_string();
        self
    }

    /// The sub-attribute called `name`, case-insensitively.
    pub fn sub(&self, name: &str) -> Option<&AttrDef> {
        self.sub_attributes
            .iter()
            .find(|d| d.name.eq_ignore_ascii_case(name))
    }

    /// RFC 7643 §7 representation, as served by `GET /Schemas`.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), json!(self.name));
        m.insert("type".into(), json!(self.ty.as_str()));
        if self.ty == AttrType::Complex {
            let subs: Vec<Value> = self.sub_attributes.iter().map(AttrDef::to_json).collect();
            m.insert("subAttributes".into(), Value::Array(subs));
        }
        m.insert("multiValued".into(), json!(self.multi_valued));
        m.insert("description".into(), json!(self.description));
        m.insert("required".into(), json!(self.required));
        if !self.canonical_values.is_empty() {
            m.insert("canonicalValues".into(), json!(self.canonical_values));
        }
        if self.ty != AttrType::Complex {
            m.insert("caseExact".into(), json!(self.case_exact));
        }
        m.insert("mutability".into(), json!(self.mutability.as_str()));
        m.insert("returned".into(), json!(self.returned.as_str()));
        if self.ty != AttrType::Complex {
            m.insert("uniqueness".into(), json!(self.uniqueness.as_str()));
        }
        if self.ty == AttrType::Reference {
            m.insert("referenceTypes".into(), json!(self.reference_types));
        }
        Value::Object(m)
    }
}

/// A resource schema or schema extension (RFC 7643 §7).
#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    /// The schema URN, e.g. [`CORE_USER_URN`].
    pub id: String,
    pub name: String,
    pub description: String,
    pub attributes: Vec<AttrDef>,
}

impl Schema {
    /// The top-level attribute called `name`, case-insensitively.
    pub fn attr(&self, name: &str) -> Option<&AttrDef> {
        self.attributes
            .iter()
            .find(|d| d.name.eq_ignore_ascii_case(name))
    }

    /// RFC 7643 §7 / §8.7.1 representation, for `GET /Schemas`. `meta.location`
    /// is left to the http edge, which knows the base URL.
    pub fn to_json(&self) -> Value {
        json!({
            "schemas": [SCHEMA_URN],
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "attributes": self.attributes.iter().map(AttrDef::to_json).collect::<Vec<_>>(),
            "meta": {"resourceType": "Schema"},
        })
    }
}

/// `value`, `display`, `type`, `primary`: the usual sub-attributes of a
/// multi-valued attribute (RFC 7643 §2.4).
fn multi_subs(value: AttrDef, types: &[&str]) -> Vec<AttrDef> {
    vec![
        value.describe("The value of the attribute."),
        AttrDef::string("display")
            .describe("A human-readable name, primarily used for display purposes."),
        AttrDef::string("type")
            .canonical(types)
            .describe("A label indicating the attribute's function."),
        AttrDef::boolean("primary")
            .describe("A Boolean value indicating the 'primary' or preferred attribute value."),
    ]
}

/// RFC 7643 §4.1 and §8.7.1: the core User schema.
pub fn user_schema() -> Schema {
    use Mutability::*;
    let name = AttrDef::complex(
        "name",
        vec![
            AttrDef::string("formatted").describe("The full name, formatted for display."),
            AttrDef::string("familyName").describe("The family name of the User."),
            AttrDef::string("givenName").describe("The given name of the User."),
            AttrDef::string("middleName").describe("The middle name(s) of the User."),
            AttrDef::string("honorificPrefix").describe("The honorific prefix(es) of the User."),
            AttrDef::string("honorificSuffix").describe("The honorific suffix(es) of the User."),
        ],
    )
    .describe("The components of the user's real name.");
    let addresses = AttrDef::complex(
        "addresses",
        vec![
            AttrDef::string("formatted")
                .describe("The full mailing address, formatted for display."),
            AttrDef::string("streetAddress").describe("The full street address component."),
            AttrDef::string("locality").describe("The city or locality component."),
            AttrDef::string("region").describe("The state or region component."),
            AttrDef::string("postalCode").describe("The zip code or postal code component."),
            AttrDef::string("country").describe("The country name component."),
            AttrDef::string("type")
                .canonical(&["work", "home", "other"])
                .describe("A label indicating the attribute's function."),
            AttrDef::boolean("primary")
                .describe("A Boolean value indicating the 'primary' or preferred address."),
        ],
    )
    .multi()
    .describe("A physical mailing address for this User.");
    let groups = AttrDef::complex(
        "groups",
        vec![
            AttrDef::string("value")
                .mutability(ReadOnly)
                .describe("The identifier of the User's group."),
            AttrDef::reference("$ref", &["User", "Group"])
                .mutability(ReadOnly)
                .describe("The URI of the corresponding 'Group' resource."),
            AttrDef::string("display")
                .mutability(ReadOnly)
                .describe("A human-readable name."),
            AttrDef::string("type")
                .canonical(&["direct", "indirect"])
                .mutability(ReadOnly)
                .describe("A label indicating the attribute's function."),
        ],
    )
    .multi()
    .mutability(ReadOnly)
    .describe("A list of groups to which the user belongs, either direct or indirect.");
    Schema {
        id: CORE_USER_URN.into(),
        name: "User".into(),
        description: "User Account".into(),
        attributes: vec![
            AttrDef::string("userName")
                .required()
                .uniqueness(Uniqueness::Server)
                .describe("Unique identifier for the User, typically used to authenticate."),
            name,
            AttrDef::string("displayName").describe("The name of the User, suitable for display."),
            AttrDef::string("nickName").describe("The casual way to address the user."),
            AttrDef::reference("profileUrl", &["external"]).describe(
                "A fully qualified URL pointing to a page representing the User's online profile.",
            ),
            AttrDef::string("title").describe("The user's title, such as \"Vice President.\""),
            AttrDef::string("userType").describe(
                "Used to identify the relationship between the organization and the user.",
            ),
            AttrDef::string("preferredLanguage")
                .describe("The User's preferred written or spoken language."),
            AttrDef::string("locale").describe("Default location of the User, for localization."),
            AttrDef::string("timezone")
                .describe("The User's time zone in the 'Olson' time zone database format."),
            AttrDef::boolean("active")
                .describe("A Boolean value indicating the User's administrative status."),
            AttrDef::string("password")
                .mutability(WriteOnly)
                .returned(Returned::Never)
                .describe("The User's cleartext password."),
            AttrDef::complex(
                "emails",
                multi_subs(AttrDef::string("value"), &["work", "home", "other"]),
            )
            .multi()
            .describe("Email addresses for the user."),
            AttrDef::complex(
                "phoneNumbers",
                multi_subs(
                    AttrDef::string("value"),
                    &["work", "home", "mobile", "fax", "pager", "other"],
                ),
            )
            .multi()
            .describe("Phone numbers for the User."),
            AttrDef::complex(
                "ims",
                multi_subs(
                    AttrDef::string("value"),
                    &["aim", "gtalk", "icq", "xmpp", "msn", "skype", "qq", "yahoo"],
                ),
            )
            .multi()
            .describe("Instant messaging addresses for the User."),
            AttrDef::complex(
                "photos",
                multi_subs(
                    AttrDef::reference("value", &["external"]),
                    &["photo", "thumbnail"],
                ),
            )
            .multi()
            .describe("URLs of photos of the User."),
            addresses,
            groups,
            AttrDef::complex("entitlements", multi_subs(AttrDef::string("value"), &[]))
                .multi()
                .describe("A list of entitlements for the User."),
            AttrDef::complex("roles", multi_subs(AttrDef::string("value"), &[]))
                .multi()
                .describe("A list of roles for the User."),
            AttrDef::complex(
                "x509Certificates",
                multi_subs(AttrDef::new("value", AttrType::Binary), &[]),
            )
            .multi()
            .describe("A list of certificates issued to the User."),
        ],
    }
}

/// RFC 7643 §4.3 and §8.7.1: the Enterprise User extension.
pub fn enterprise_user_schema() -> Schema {
    Schema {
        id: ENTERPRISE_USER_URN.into(),
        name: "EnterpriseUser".into(),
        description: "Enterprise User".into(),
        attributes: vec![
            AttrDef::string("employeeNumber")
                .describe("Numeric or alphanumeric identifier assigned to a person."),
            AttrDef::string("costCenter").describe("Identifies the name of a cost center."),
            AttrDef::string("organization").describe("Identifies the name of an organization."),
            AttrDef::string("division").describe("Identifies the name of a division."),
            AttrDef::string("department").describe("Identifies the name of a department."),
            AttrDef::complex(
                "manager",
                vec![
                    AttrDef::string("value")
                        .describe("The id of the SCIM resource representing the User's manager."),
                    AttrDef::reference("$ref", &["User"])
                        .describe("The URI of the SCIM resource representing the User's manager."),
                    AttrDef::string("displayName")
                        .mutability(Mutability::ReadOnly)
                        .describe("The displayName of the User's manager."),
                ],
            )
            .describe("The User's manager."),
        ],
    }
}

/// RFC 7643 §4.2 and §8.7.1: the core Group schema.
pub fn group_schema() -> Schema {
    Schema {
        id: CORE_GROUP_URN.into(),
        name: "Group".into(),
        description: "Group".into(),
        attributes: vec![
            AttrDef::string("displayName").required().describe("A human-readable name for the Group."),
            AttrDef::complex(
                "members",
                vec![
                    AttrDef::string("value")
                        .mutability(Mutability::Immutable)
                        .describe("Identifier of the member of this Group."),
                    AttrDef::reference("$ref", &["User", "Group"])
                        .mutability(Mutability::Immutable)
                        .describe("The URI corresponding to a SCIM resource that is a member of this Group."),
                    AttrDef::string("display")
                        .mutability(Mutability::Immutable)
                        .describe("A human-readable name for the member."),
                    AttrDef::string("type")
                        .canonical(&["User", "Group"])
                        .mutability(Mutability::Immutable)
                        .describe("A label indicating the type of resource, e.g., 'User' or 'Group'."),
                ],
            )
            .multi()
            .describe("A list of members of the Group."),
        ],
    }
}

/// The common attributes every resource has (RFC 7643 §3.1). They belong to
/// no schema's `attributes` list but filters and sorting use them.
pub fn common_attributes() -> &'static [AttrDef] {
    static COMMON: OnceLock<Vec<AttrDef>> = OnceLock::new();
    COMMON.get_or_init(|| {
        use Mutability::ReadOnly;
        vec![
            AttrDef::string("id")
                .case_exact()
                .mutability(ReadOnly)
                .returned(Returned::Always)
                .uniqueness(Uniqueness::Server)
                .describe("Unique identifier for the resource, assigned by the service provider."),
            AttrDef::string("externalId")
                .case_exact()
                .describe("An identifier for the resource as defined by the provisioning client."),
            AttrDef::complex(
                "meta",
                vec![
                    AttrDef::string("resourceType")
                        .case_exact()
                        .mutability(ReadOnly),
                    AttrDef::new("created", AttrType::DateTime).mutability(ReadOnly),
                    AttrDef::new("lastModified", AttrType::DateTime).mutability(ReadOnly),
                    AttrDef::reference("location", &["uri"])
                        .case_exact()
                        .mutability(ReadOnly),
                    AttrDef::string("version").case_exact().mutability(ReadOnly),
                ],
            )
            .mutability(ReadOnly)
            .describe("Resource metadata."),
        ]
    })
}

/// The schemas of one resource type: its core schema and its extensions.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaRegistry {
    pub core: Schema,
    pub extensions: Vec<Schema>,
}

impl SchemaRegistry {
    /// User with the Enterprise User extension, plus `extra` extensions
    /// (custom ones the mapping names).
    pub fn users(extra: Vec<Schema>) -> SchemaRegistry {
        let mut extensions = vec![enterprise_user_schema()];
        extensions.extend(extra);
        SchemaRegistry {
            core: user_schema(),
            extensions,
        }
    }

    /// Group with the `extra` extensions.
    pub fn groups(extra: Vec<Schema>) -> SchemaRegistry {
        SchemaRegistry {
            core: group_schema(),
            extensions: extra,
        }
    }

    /// The extension with this URN, case-insensitively.
    pub fn extension(&self, urn: &str) -> Option<&Schema> {
        self.extensions
            .iter()
            .find(|s| s.id.eq_ignore_ascii_case(urn))
    }

    /// The core schema or an extension with this URN.
    pub fn schema(&self, urn: &str) -> Option<&Schema> {
        if self.core.id.eq_ignore_ascii_case(urn) {
            Some(&self.core)
        } else {
            self.extension(urn)
        }
    }

    /// Whether the URN names the core schema of this registry.
    pub fn is_core(&self, urn: &str) -> bool {
        self.core.id.eq_ignore_ascii_case(urn)
    }

    /// The extension a path names as a whole: `urn:...:enterprise:2.0:User`
    /// parses as URN `urn:...:enterprise:2.0` and name `User`, so glue them
    /// back together and look the result up.
    pub fn whole_extension(&self, path: &AttrPath) -> Option<&Schema> {
        let urn = path.urn.as_deref()?;
        if path.sub.is_some() {
            return None;
        }
        self.extensions.iter().find(|s| {
            s.id.len() == urn.len() + 1 + path.name.len()
                && s.id
                    .get(..urn.len())
                    .is_some_and(|p| p.eq_ignore_ascii_case(urn))
                && s.id
                    .get(urn.len() + 1..)
                    .is_some_and(|n| n.eq_ignore_ascii_case(&path.name))
        })
    }

    /// The schema, attribute and (when the path has one) sub-attribute a path
    /// names. Unqualified names are looked up in the core schema (and the
    /// common attributes id, externalId, meta), then in the extensions in
    /// order; a URN-qualified name only in the schema it names.
    pub fn resolve(&self, path: &AttrPath) -> Option<(&Schema, &AttrDef, Option<&AttrDef>)> {
        let (schema, def) = match path.urn.as_deref() {
            Some(urn) => {
                let schema = self.schema(urn)?;
                let def = schema.attr(&path.name).or_else(|| {
                    if self.is_core(urn) {
                        common_attr(&path.name)
                    } else {
                        None
                    }
                })?;
                (schema, def)
            }
            None => {
                if let Some(def) = self
                    .core
                    .attr(&path.name)
                    .or_else(|| common_attr(&path.name))
                {
                    (&self.core, def)
                } else {
                    self.extensions
                        .iter()
                        .find_map(|s| s.attr(&path.name).map(|d| (s, d)))?
                }
            }
        };
        match &path.sub {
            None => Some((schema, def, None)),
            Some(sub) => def.sub(sub).map(|sd| (schema, def, Some(sd))),
        }
    }

    /// The definition that governs the values a path selects: the
    /// sub-attribute if named, else the attribute.
    pub fn leaf(&self, path: &AttrPath) -> Option<&AttrDef> {
        self.resolve(path).map(|(_, d, s)| s.unwrap_or(d))
    }

    /// Whether string comparisons on this path respect case. Unknown
    /// attributes compare case-insensitively (RFC 7643 §2.2 default). A
    /// complex attribute named without a sub-attribute compares its `value`.
    pub fn case_exact(&self, path: &AttrPath) -> bool {
        match self.leaf(path) {
            Some(d) if d.ty == AttrType::Complex => d.sub("value").is_some_and(|v| v.case_exact),
            Some(d) => d.case_exact,
            None => false,
        }
    }

    /// Every schema of this registry, core first (for `GET /Schemas`).
    pub fn all(&self) -> impl Iterator<Item = &Schema> {
        std::iter::once(&self.core).chain(self.extensions.iter())
    }
}

fn common_attr(name: &str) -> Option<&'static AttrDef> {
    common_attributes()
        .iter()
        .find(|d| d.name.eq_ignore_ascii_case(name))
}

/// Brings a resource into its one stored form:
///
/// - keys of known attributes, sub-attributes and extension objects get their
///   canonical spelling (`USERNAME` → `userName`);
/// - values are coerced where the intent is plain: Entra's `"True"`/`"False"`
///   become booleans, a single value for a multi-valued attribute becomes an
///   array of one, an array of one for a single-valued attribute is unwrapped,
///   a bare string for a complex attribute with a `value` sub-attribute
///   becomes `{"value": ...}` (Entra's manager), numbers given for strings
///   become strings;
/// - unassigned values (null, empty arrays, empty objects) are removed, since
///   RFC 7643 §2.5 makes them equivalent to absence;
/// - a value of a clearly wrong type is a 400 invalidValue naming it;
/// - attributes no schema knows are dropped and their names returned, so the
///   caller can log them;
/// - `schemas` becomes the core URN followed by each extension whose object is
///   present.
pub fn canonicalize(resource: &mut Value, reg: &SchemaRegistry) -> Result<Vec<String>, ScimError> {
    if !resource.is_object() {
        let kind = type_name(resource);
        return Err(ScimError::invalid_syntax(format!(
            "a resource must be a JSON object, not {kind}"
        )));
    }
    let Value::Object(input) = std::mem::take(resource) else {
        return Ok(Vec::new());
    };
    let restore = input.clone();
    match canonicalize_map(input, reg) {
        Ok((out, dropped)) => {
            *resource = Value::Object(out);
            Ok(dropped)
        }
        Err(e) => {
            *resource = Value::Object(restore);
            Err(e)
        }
    }
}

fn canonicalize_map(
    input: Map<String, Value>,
    reg: &SchemaRegistry,
) -> Result<(Map<String, Value>, Vec<String>), ScimError> {
    let mut out = Map::new();
    let mut dropped = Vec::new();
    for (key, value) in input {
        if key.eq_ignore_ascii_case("schemas") {
            // Rebuilt below from what is present.
            continue;
        }
        if let Some(common) = common_attr(&key) {
            if let Some(v) = canonical_or_ignored(common, value, &common.name, &mut dropped)? {
                out.insert(common.name.clone(), v);
            }
        } else if let Some(def) = reg.core.attr(&key) {
            if let Some(v) = canonical_or_ignored(def, value, &def.name, &mut dropped)? {
                out.insert(def.name.clone(), v);
            }
        } else if let Some(ext) = reg.extension(&key) {
            let obj = match value {
                Value::Null => continue,
                Value::Object(o) => o,
                other => {
                    return Err(ScimError::invalid_value(format!(
                        "extension {} must be a JSON object, not {}",
                        ext.id,
                        type_name(&other)
                    )))
                }
            };
            let mut ext_out = Map::new();
            for (k, v) in obj {
                match ext.attr(&k) {
                    Some(def) => {
                        let label = format!("{}:{}", ext.id, def.name);
                        if let Some(v) = canonical_or_ignored(def, v, &label, &mut dropped)? {
                            ext_out.insert(def.name.clone(), v);
                        }
                    }
                    None => dropped.push(format!("{}:{}", ext.id, k)),
                }
            }
            if !ext_out.is_empty() {
                out.insert(ext.id.clone(), Value::Object(ext_out));
            }
        } else {
            dropped.push(key);
        }
    }
    let mut schemas = vec![Value::String(reg.core.id.clone())];
    for ext in &reg.extensions {
        if out.contains_key(&ext.id) {
            schemas.push(Value::String(ext.id.clone()));
        }
    }
    let mut result = Map::with_capacity(out.len() + 1);
    result.insert("schemas".into(), Value::Array(schemas));
    result.extend(out);
    Ok((result, dropped))
}

/// Like [`canonical_value`], but a malformed value of a readOnly attribute
/// (a client's `meta`, `groups`, `manager.displayName`) is dropped and
/// reported instead of failing the request: RFC 7643 §7 says the server
/// ignores client values of readOnly attributes anyway.
fn canonical_or_ignored(
    def: &AttrDef,
    value: Value,
    label: &str,
    dropped: &mut Vec<String>,
) -> Result<Option<Value>, ScimError> {
    if def.mutability != Mutability::ReadOnly {
        return canonical_value(def, value, label, dropped);
    }
    let mut inner = Vec::new();
    match canonical_value(def, value, label, &mut inner) {
        Ok(v) => {
            dropped.extend(inner);
            Ok(v)
        }
        Err(_) => {
            dropped.push(label.to_string());
            Ok(None)
        }
    }
}

/// Canonical form of one attribute's value (the coercions of
/// [`canonicalize`]), or `None` when it is unassigned. `label` names the
/// attribute in errors and in the unknown sub-attributes pushed to `dropped`.
pub fn canonical_value(
    def: &AttrDef,
    value: Value,
    label: &str,
    dropped: &mut Vec<String>,
) -> Result<Option<Value>, ScimError> {
    if def.multi_valued {
        let items = match value {
            Value::Null => return Ok(None),
            Value::Array(items) => items,
            single => vec![single],
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if let Value::Array(_) = item {
                return Err(ScimError::invalid_value(format!(
                    "attribute '{label}' must be a list of values, not a list of lists"
                )));
            }
            if let Some(v) = canon_single(def, item, label, dropped)? {
                out.push(v);
            }
        }
        return Ok(if out.is_empty() {
            None
        } else {
            Some(Value::Array(out))
        });
    }
    match value {
        Value::Array(mut items) => {
            items.retain(|v| !v.is_null());
            match items.len() {
                0 => Ok(None),
                1 => canon_single(def, items.remove(0), label, dropped),
                n => Err(ScimError::invalid_value(format!(
                    "attribute '{label}' is single-valued but {n} values were given"
                ))),
            }
        }
        single => canon_single(def, single, label, dropped),
    }
}

fn wrong_type(label: &str, def: &AttrDef, got: &Value) -> ScimError {
    ScimError::invalid_value(format!(
        "attribute '{label}' must be {}, not {}",
        match def.ty {
            AttrType::String | AttrType::Reference | AttrType::Binary => "a string",
            AttrType::Boolean => "a boolean",
            AttrType::Decimal => "a number",
            AttrType::Integer => "an integer",
            AttrType::DateTime => "a dateTime string",
            AttrType::Complex => "an object",
        },
        type_name(got)
    ))
}

/// Canonical form of one (non-array) value of an attribute.
fn canon_single(
    def: &AttrDef,
    value: Value,
    label: &str,
    dropped: &mut Vec<String>,
) -> Result<Option<Value>, ScimError> {
    if value.is_null() {
        return Ok(None);
    }
    let v = match def.ty {
        AttrType::String | AttrType::Reference | AttrType::Binary => match value {
            Value::String(s) => Value::String(s),
            Value::Number(n) => Value::String(n.to_string()),
            Value::Bool(b) if def.ty == AttrType::String => Value::String(b.to_string()),
            other => return Err(wrong_type(label, def, &other)),
        },
        AttrType::Boolean => match value {
            Value::Bool(b) => Value::Bool(b),
            Value::String(ref s) => match parse_bool_str(s.trim()) {
                Some(b) => Value::Bool(b),
                None => return Err(wrong_type(label, def, &value)),
            },
            other => return Err(wrong_type(label, def, &other)),
        },
        AttrType::Integer => match value {
            Value::Number(n) if n.is_i64() || n.is_u64() => Value::Number(n),
            Value::String(ref s) => match s.trim().parse::<i64>() {
                Ok(i) => Value::Number(i.into()),
                Err(_) => return Err(wrong_type(label, def, &value)),
            },
            other => return Err(wrong_type(label, def, &other)),
        },
        AttrType::Decimal => match value {
            Value::Number(n) => Value::Number(n),
            Value::String(ref s) => match s.trim().parse::<f64>().ok().and_then(Number::from_f64) {
                Some(n) => Value::Number(n),
                None => return Err(wrong_type(label, def, &value)),
            },
            other => return Err(wrong_type(label, def, &other)),
        },
        AttrType::DateTime => match value {
            Value::String(s) => {
                if parse_datetime(&s).is_none() {
                    return Err(ScimError::invalid_value(format!(
                        "attribute '{label}' must be an xsd:dateTime such as 2024-05-13T04:42:34Z, not \"{s}\""
                    )));
                }
                Value::String(s)
            }
            other => return Err(wrong_type(label, def, &other)),
        },
        AttrType::Complex => match value {
            Value::Object(obj) => {
                let mut out = Map::new();
                for (k, v) in obj {
                    match def.sub(&k) {
                        Some(sd) => {
                            let sub_label = format!("{label}.{}", sd.name);
                            if let Some(v) = canonical_or_ignored(sd, v, &sub_label, dropped)? {
                                out.insert(sd.name.clone(), v);
                            }
                        }
                        None => dropped.push(format!("{label}.{k}")),
                    }
                }
                if out.is_empty() {
                    return Ok(None);
                }
                Value::Object(out)
            }
            // A bare value for a complex attribute that has a `value`
            // sub-attribute: Entra sends the manager as a plain id, some
            // clients send members or emails as plain strings.
            prim @ (Value::String(_) | Value::Number(_) | Value::Bool(_)) => match def.sub("value")
            {
                Some(vd) => {
                    let sub_label = format!("{label}.value");
                    match canon_single(vd, prim, &sub_label, dropped)? {
                        Some(v) => json!({ "value": v }),
                        None => return Ok(None),
                    }
                }
                None => return Err(wrong_type(label, def, &prim)),
            },
            other => return Err(wrong_type(label, def, &other)),
        },
    };
    if is_empty_value(&v) && !matches!(v, Value::String(_)) {
        return Ok(None);
    }
    Ok(Some(v))
}

/// Removes what a client may not set (RFC 7643 §7 `readOnly`): `id`,
/// `meta`, `groups`, `manager.displayName`. POST and PUT bodies go through
/// this before the server adds its own `id` and `meta`.
pub fn strip_read_only(resource: &mut Value, reg: &SchemaRegistry) {
    strip(resource, reg, &|d| d.mutability == Mutability::ReadOnly);
}

/// Removes attributes whose `returned` is `never` (the password), for
/// responses.
pub fn strip_never_returned(resource: &mut Value, reg: &SchemaRegistry) {
    strip(resource, reg, &|d| d.returned == Returned::Never);
}

fn strip(resource: &mut Value, reg: &SchemaRegistry, unwanted: &dyn Fn(&AttrDef) -> bool) {
    fn strip_attrs<'a>(
        map: &mut Map<String, Value>,
        defs: impl Iterator<Item = &'a AttrDef>,
        unwanted: &dyn Fn(&AttrDef) -> bool,
    ) {
        for def in defs {
            if unwanted(def) {
                crate::scim::json::remove_ci(map, &def.name);
                continue;
            }
            if def.ty != AttrType::Complex {
                continue;
            }
            let Some(v) = crate::scim::json::get_ci_mut(map, &def.name) else {
                continue;
            };
            let elements: Vec<&mut Value> = match v {
                Value::Array(items) => items.iter_mut().collect(),
                other => vec![other],
            };
            for e in elements {
                if let Value::Object(o) = e {
                    for sd in def.sub_attributes.iter().filter(|sd| unwanted(sd)) {
                        crate::scim::json::remove_ci(o, &sd.name);
                    }
                }
            }
        }
    }
    let Value::Object(root) = resource else {
        return;
    };
    strip_attrs(
        root,
        common_attributes().iter().chain(reg.core.attributes.iter()),
        unwanted,
    );
    for ext in &reg.extensions {
        if let Some(Value::Object(o)) = crate::scim::json::get_ci_mut(root, &ext.id) {
            strip_attrs(o, ext.attributes.iter(), unwanted);
        }
    }
}

/// The extension object of a resource, case-insensitively.
pub fn extension_object<'a>(resource: &'a Value, urn: &str) -> Option<&'a Map<String, Value>> {
    resource
        .as_object()
        .and_then(|m| get_ci(m, urn))
        .and_then(Value::as_object)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> SchemaRegistry {
        SchemaRegistry::users(vec![])
    }

    #[test]
    fn resolve_is_case_insensitive_and_urn_aware() {
        let reg = users();
        let p = AttrPath::parse("USERNAME").unwrap();
        let (s, d, sub) = reg.resolve(&p).unwrap();
        assert_eq!(
            (s.id.as_str(), d.name.as_str(), sub),
            (CORE_USER_URN, "userName", None)
        );

        let p =
            AttrPath::parse("urn:ietf:params:scim:schemas:core:2.0:User:name.familyName").unwrap();
        let (s, d, sub) = reg.resolve(&p).unwrap();
        assert_eq!(s.id, CORE_USER_URN);
        assert_eq!(d.name, "name");
        assert_eq!(sub.unwrap().name, "familyName");

        let p = AttrPath::parse(
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
        )
        .unwrap();
        let (s, d, sub) = reg.resolve(&p).unwrap();
        assert_eq!(
            (s.id.as_str(), d.name.as_str()),
            (ENTERPRISE_USER_URN, "manager")
        );
        assert_eq!(sub.unwrap().name, "value");

        // Unqualified extension attribute falls back to the extensions.
        let (s, d, _) = reg
            .resolve(&AttrPath::parse("department").unwrap())
            .unwrap();
        assert_eq!(
            (s.id.as_str(), d.name.as_str()),
            (ENTERPRISE_USER_URN, "department")
        );

        // Common attributes resolve against the core schema.
        let (_, d, sub) = reg
            .resolve(&AttrPath::parse("meta.lastModified").unwrap())
            .unwrap();
        assert_eq!(
            (d.name.as_str(), sub.unwrap().ty),
            ("meta", AttrType::DateTime)
        );

        assert!(reg.resolve(&AttrPath::parse("nope").unwrap()).is_none());
        assert!(reg
            .resolve(&AttrPath::parse("name.nope").unwrap())
            .is_none());
        // A URN-qualified name only in the schema it names.
        assert!(reg
            .resolve(
                &AttrPath::parse("urn:ietf:params:scim:schemas:core:2.0:User:department").unwrap()
            )
            .is_none());
    }

    #[test]
    fn whole_extension_path_is_recognised() {
        let reg = users();
        let p =
            AttrPath::parse("URN:ietf:params:scim:schemas:extension:enterprise:2.0:user").unwrap();
        assert_eq!(
            reg.whole_extension(&p).map(|s| s.id.as_str()),
            Some(ENTERPRISE_USER_URN)
        );
        assert!(reg
            .whole_extension(&AttrPath::parse("userName").unwrap())
            .is_none());
    }

    #[test]
    fn case_exactness_comes_from_the_schema() {
        let reg = users();
        assert!(!reg.case_exact(&AttrPath::parse("userName").unwrap()));
        assert!(reg.case_exact(&AttrPath::parse("id").unwrap()));
        assert!(reg.case_exact(&AttrPath::parse("externalId").unwrap()));
        assert!(!reg.case_exact(&AttrPath::parse("emails").unwrap()));
        assert!(!reg.case_exact(&AttrPath::parse("unknownThing").unwrap()));
    }

    #[test]
    fn schema_json_follows_rfc_7643_section_7() {
        let j = user_schema().to_json();
        assert_eq!(j["id"], CORE_USER_URN);
        let user_name = &j["attributes"][0];
        assert_eq!(user_name["name"], "userName");
        assert_eq!(user_name["type"], "string");
        assert_eq!(user_name["required"], true);
        assert_eq!(user_name["caseExact"], false);
        assert_eq!(user_name["uniqueness"], "server");
        let emails = j["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "emails")
            .unwrap();
        assert_eq!(emails["multiValued"], true);
        assert_eq!(
            emails["subAttributes"][2]["canonicalValues"],
            json!(["work", "home", "other"])
        );
        let groups = j["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "groups")
            .unwrap();
        assert_eq!(groups["mutability"], "readOnly");
        let g = group_schema().to_json();
        assert_eq!(g["attributes"][1]["subAttributes"][1]["name"], "$ref");
        assert_eq!(
            g["attributes"][1]["subAttributes"][1]["referenceTypes"],
            json!(["User", "Group"])
        );
        let e = enterprise_user_schema().to_json();
        assert_eq!(
            e["attributes"][5]["subAttributes"][2]["mutability"],
            "readOnly"
        );
    }

    #[test]
    fn canonicalize_renames_coerces_and_drops() {
        let reg = users();
        let mut r = json!({
            "SCHEMAS": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "USERNAME": "alice",
            "Active": "True",
            "NAME": {"GivenName": "Alice", "familyname": "Smith", "nickname": "x"},
            "emails": {"Value": "a@example.com", "Primary": "false", "type": "work"},
            "urn:ietf:params:scim:schemas:extension:ENTERPRISE:2.0:User": {
                "Department": "Sales",
                "manager": "m-1",
            },
            "favouriteColour": "blue",
            "externalId": "ext-1",
        });
        let dropped = canonicalize(&mut r, &reg).unwrap();
        assert_eq!(
            r,
            json!({
                "schemas": [CORE_USER_URN, ENTERPRISE_USER_URN],
                "userName": "alice",
                "active": true,
                "name": {"givenName": "Alice", "familyName": "Smith"},
                "emails": [{"value": "a@example.com", "primary": false, "type": "work"}],
                ENTERPRISE_USER_URN: {"department": "Sales", "manager": {"value": "m-1"}},
                "externalId": "ext-1",
            })
        );
        assert_eq!(
            dropped,
            vec!["name.nickname".to_string(), "favouriteColour".to_string()]
        );
        // The keys come out in stored order with schemas first.
        assert_eq!(
            r.as_object().unwrap().keys().next().map(String::as_str),
            Some("schemas")
        );
    }

    #[test]
    fn canonicalize_drops_malformed_read_only_values() {
        let reg = users();
        let mut r = json!({
            "userName": "a",
            "meta": {"created": "yesterday", "resourceType": "User"},
            "groups": [["a nested list"]],
            ENTERPRISE_USER_URN: {"manager": {"value": "m", "displayName": {"x": 1}}},
        });
        let dropped = canonicalize(&mut r, &reg).unwrap();
        assert_eq!(r["meta"], json!({"resourceType": "User"}));
        assert!(r.get("groups").is_none());
        assert_eq!(r[ENTERPRISE_USER_URN]["manager"], json!({"value": "m"}));
        assert_eq!(
            dropped,
            vec![
                "meta.created".to_string(),
                "groups".to_string(),
                format!("{ENTERPRISE_USER_URN}:manager.displayName")
            ]
        );
    }

    #[test]
    fn strip_helpers_remove_read_only_and_never_returned() {
        let reg = users();
        let mut r = json!({
            "id": "client-chosen",
            "userName": "a",
            "password": "secret",
            "groups": [{"value": "g"}],
            "meta": {"resourceType": "User"},
            ENTERPRISE_USER_URN: {"manager": {"value": "m", "displayName": "Boss"}},
        });
        strip_read_only(&mut r, &reg);
        assert_eq!(
            r,
            json!({"userName": "a", "password": "secret", ENTERPRISE_USER_URN: {"manager": {"value": "m"}}})
        );
        strip_never_returned(&mut r, &reg);
        assert!(r.get("password").is_none());
    }

    #[test]
    fn canonicalize_unwraps_single_element_array_for_single_valued() {
        let reg = users();
        let mut r = json!({"userName": "a", ENTERPRISE_USER_URN: {"manager": [{"value": "m"}]}});
        canonicalize(&mut r, &reg).unwrap();
        assert_eq!(r[ENTERPRISE_USER_URN]["manager"], json!({"value": "m"}));
    }

    #[test]
    fn canonicalize_rejects_wrong_types_and_leaves_resource_unchanged() {
        let reg = users();
        let original = json!({"userName": {"a": 1}, "active": true});
        let mut r = original.clone();
        let e = canonicalize(&mut r, &reg).unwrap_err();
        assert_eq!(e.scim_type, Some(crate::scim::ScimType::InvalidValue));
        assert!(e.detail.contains("userName"), "{}", e.detail);
        assert_eq!(r, original);

        for bad in [
            json!({"active": "maybe"}),
            json!({"userName": ["a", "b"]}),
            json!({"name": "Alice"}),
            json!({"emails": [[{"value": "x"}]]}),
            json!({ENTERPRISE_USER_URN: "x"}),
            json!({"userName": "a", "timezone": {"x": 1}}),
        ] {
            let mut r = bad.clone();
            let e = canonicalize(&mut r, &reg).unwrap_err();
            assert_eq!(e.status, 400, "{bad}");
            assert_eq!(r, bad);
        }
        let mut r = json!([1]);
        assert_eq!(
            canonicalize(&mut r, &reg).unwrap_err().scim_type,
            Some(crate::scim::ScimType::InvalidSyntax)
        );
    }

    #[test]
    fn canonicalize_removes_unassigned_values_and_stale_extension_urns() {
        let reg = users();
        let mut r = json!({
            "schemas": [CORE_USER_URN, ENTERPRISE_USER_URN],
            "userName": "a",
            "emails": [],
            "name": {"givenName": null},
            "title": null,
            ENTERPRISE_USER_URN: {},
        });
        canonicalize(&mut r, &reg).unwrap();
        assert_eq!(r, json!({"schemas": [CORE_USER_URN], "userName": "a"}));
    }

    #[test]
    fn canonicalize_group_with_microsoft_marker() {
        let reg = SchemaRegistry::groups(vec![]);
        let mut r = json!({
            "schemas": [CORE_GROUP_URN, MS_ADSCIM_GROUP_URN],
            "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
            "displayName": "displayName",
            "meta": {"resourceType": "Group"},
            "members": {"value": "u1"},
        });
        let dropped = canonicalize(&mut r, &reg).unwrap();
        assert!(dropped.is_empty());
        assert_eq!(r["schemas"], json!([CORE_GROUP_URN]));
        assert_eq!(r["members"], json!([{"value": "u1"}]));
        assert_eq!(r["meta"], json!({"resourceType": "Group"}));
    }

    #[test]
    fn custom_extension_is_known() {
        let ext = Schema {
            id: "urn:example:2.0:User".into(),
            name: "X".into(),
            description: String::new(),
            attributes: vec![AttrDef::string("badge"), AttrDef::boolean("vip")],
        };
        let reg = SchemaRegistry::users(vec![ext]);
        let mut r = json!({"userName": "a", "URN:EXAMPLE:2.0:USER": {"BADGE": 7, "vip": "TRUE"}});
        let dropped = canonicalize(&mut r, &reg).unwrap();
        assert!(dropped.is_empty());
        assert_eq!(
            r["urn:example:2.0:User"],
            json!({"badge": "7", "vip": true})
        );
        assert_eq!(r["schemas"], json!([CORE_USER_URN, "urn:example:2.0:User"]));
    }
}
