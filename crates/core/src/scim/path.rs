//! Attribute paths (RFC 7644 §3.10 `attrPath`) and PATCH paths (RFC 7644
//! §3.5.2 `PATH = attrPath / valuePath [subAttr]`), and `select`, which
//! reads the values a path designates from a stored resource.
//!
//! URN rule: a path that starts with `urn:` (any case) carries its schema
//! URN up to the last `:` before the attribute name, so
//! `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value`
//! is URN `urn:...:enterprise:2.0:User`, name `manager`, sub `value`. A URN
//! alone (`urn:...:enterprise:2.0:User`) therefore parses as URN
//! `urn:...:enterprise:2.0` and name `User`;
//! [`SchemaRegistry::whole_extension`] recognises that form.

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};

use crate::scim::error::ScimError;
use crate::scim::filter::{parse_filter, Filter};
use crate::scim::json::{get_ci, values_of};
use crate::scim::schema::SchemaRegistry;

/// `[URN ":"] name ["." sub]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttrPath {
    /// The schema URN when the path was qualified, as written.
    pub urn: Option<String>,
    pub name: String,
    pub sub: Option<String>,
}

/// RFC 7643 §2.1 ATTRNAME = ALPHA *(nameChar), nameChar = "-" / "_" / DIGIT
/// / ALPHA; `$ref` is the one name the RFC itself spells with a `$`.
fn is_attr_name(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '$' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl AttrPath {
    /// An unqualified path with no sub-attribute.
    pub fn new(name: &str) -> AttrPath {
        AttrPath {
            urn: None,
            name: name.to_string(),
            sub: None,
        }
    }

    /// An unqualified `name.sub`.
    pub fn with_sub(name: &str, sub: &str) -> AttrPath {
        AttrPath {
            urn: None,
            name: name.to_string(),
            sub: Some(sub.to_string()),
        }
    }

    /// Parses `[URN ":"] name ["." sub]`; 400 invalidPath when malformed.
    pub fn parse(s: &str) -> Result<AttrPath, ScimError> {
        let s = s.trim();
        let (urn, rest) =
            if s.len() >= 4 && s.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("urn:")) {
                // A URN may itself contain dots ("2.0"), so split on the last
                // colon first and only then look for the sub-attribute dot.
                match s.rfind(':') {
                    Some(i) if i > 4 => (Some(&s[..i]), &s[i + 1..]),
                    _ => {
                        return Err(ScimError::invalid_path(format!(
                            "'{s}' starts with 'urn:' but names no attribute after the schema URN"
                        )))
                    }
                }
            } else {
                (None, s)
            };
        let (name, sub) = match rest.split_once('.') {
            Some((n, sb)) => (n, Some(sb)),
            None => (rest, None),
        };
        if !is_attr_name(name) {
            return Err(ScimError::invalid_path(if name.is_empty() {
                format!("'{s}' has an empty attribute name")
            } else {
                format!("'{name}' in '{s}' is not a valid attribute name")
            }));
        }
        if let Some(sb) = sub {
            if !is_attr_name(sb) {
                return Err(ScimError::invalid_path(format!(
                    "'{sb}' in '{s}' is not a valid sub-attribute name (only one level of nesting exists)"
                )));
            }
        }
        Ok(AttrPath {
            urn: urn.map(str::to_string),
            name: name.to_string(),
            sub: sub.map(str::to_string),
        })
    }

    /// The same attribute without its sub-attribute.
    pub fn parent(&self) -> AttrPath {
        AttrPath {
            urn: self.urn.clone(),
            name: self.name.clone(),
            sub: None,
        }
    }

    /// The sub-attribute `sub` of this (top-level) attribute.
    pub fn child(&self, sub: &str) -> AttrPath {
        AttrPath {
            urn: self.urn.clone(),
            name: self.name.clone(),
            sub: Some(sub.to_string()),
        }
    }
}

impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(urn) = &self.urn {
            write!(f, "{urn}:")?;
        }
        f.write_str(&self.name)?;
        if let Some(sub) = &self.sub {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

impl FromStr for AttrPath {
    type Err = ScimError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AttrPath::parse(s)
    }
}

/// The `path` of a PATCH operation: `attrPath`, or `valuePath ["." subAttr]`
/// such as `emails[type eq "work"].value`.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchPath {
    /// The attribute; it has a `sub` only in the plain `attrPath` form
    /// (`name.givenName`), never together with `filter`.
    pub attr: AttrPath,
    /// The value filter between brackets.
    pub filter: Option<Filter>,
    /// The sub-attribute after the brackets.
    pub sub: Option<String>,
}

impl PatchPath {
    /// Parses a PATCH path; 400 invalidPath with what was wrong.
    pub fn parse(s: &str) -> Result<PatchPath, ScimError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ScimError::invalid_path("the path is empty"));
        }
        let Some(open) = s.find('[') else {
            if s.contains(']') {
                return Err(ScimError::invalid_path(format!(
                    "'{s}' has a ']' without a '['"
                )));
            }
            return Ok(PatchPath {
                attr: AttrPath::parse(s)?,
                filter: None,
                sub: None,
            });
        };
        let attr = AttrPath::parse(&s[..open])?;
        if attr.sub.is_some() {
            return Err(ScimError::invalid_path(format!(
                "'{s}': a value filter applies to a multi-valued attribute, not to the sub-attribute '{attr}'"
            )));
        }
        let close = matching_bracket(s, open)?;
        let inner = &s[open + 1..close];
        let filter = parse_filter(inner).map_err(|e| {
            ScimError::invalid_path(format!(
                "the value filter in '{s}' is invalid: {}",
                e.detail
            ))
        })?;
        let rest = &s[close + 1..];
        let sub = if rest.is_empty() {
            None
        } else if let Some(sb) = rest.strip_prefix('.') {
            if !is_attr_name(sb) {
                return Err(ScimError::invalid_path(format!(
                    "'{sb}' after the value filter in '{s}' is not a valid sub-attribute name"
                )));
            }
            Some(sb.to_string())
        } else {
            return Err(ScimError::invalid_path(format!(
                "unexpected '{rest}' after the value filter in '{s}'; only '.subAttribute' may follow"
            )));
        };
        Ok(PatchPath {
            attr,
            filter: Some(filter),
            sub,
        })
    }

    /// The sub-attribute this path ends in, whichever form it was written in.
    pub fn leaf_sub(&self) -> Option<&str> {
        self.sub.as_deref().or(self.attr.sub.as_deref())
    }
}

/// Position of the `]` closing the `[` at `open`, skipping quoted strings so
/// that `members[display eq "a]b"]` works.
fn matching_bracket(s: &str, open: usize) -> Result<usize, ScimError> {
    let bytes = s.as_bytes();
    let mut i = open + 1;
    let mut in_string = false;
    while i < bytes.len() {
        match (in_string, bytes[i]) {
            (true, b'\\') => i += 1,
            (true, b'"') => in_string = false,
            (false, b'"') => in_string = true,
            (false, b'[') => {
                return Err(ScimError::invalid_path(format!(
                    "'{s}': value filters cannot be nested (position {i})"
                )))
            }
            (false, b']') => return Ok(i),
            _ => {}
        }
        i += 1;
    }
    Err(ScimError::invalid_path(format!(
        "'{s}': the '[' at position {open} is never closed"
    )))
}

impl fmt::Display for PatchPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.attr)?;
        if let Some(filter) = &self.filter {
            write!(f, "[{filter}]")?;
        }
        if let Some(sub) = &self.sub {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

impl FromStr for PatchPath {
    type Err = ScimError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PatchPath::parse(s)
    }
}

/// The object that holds `attr`'s top-level value: the resource itself for
/// core attributes, `resource[urn]` for extension attributes. An unqualified
/// name that only an extension defines is looked for in that extension.
pub fn container<'a>(
    resource: &'a Map<String, Value>,
    attr: &AttrPath,
    reg: &SchemaRegistry,
) -> Option<&'a Map<String, Value>> {
    match attr.urn.as_deref() {
        Some(urn) if reg.is_core(urn) => Some(resource),
        Some(urn) => get_ci(resource, urn)?.as_object(),
        None => {
            if get_ci(resource, &attr.name).is_some() {
                return Some(resource);
            }
            match reg.resolve(attr) {
                Some((schema, _, _)) if !reg.is_core(&schema.id) => {
                    get_ci(resource, &schema.id)?.as_object()
                }
                _ => Some(resource),
            }
        }
    }
}

/// The values of an attribute path, multi-valued attributes flattened,
/// nulls skipped: `emails` → each email object, `emails.value` → each
/// address, `name.givenName` → one string.
pub fn select_attr<'a>(
    resource: &'a Value,
    attr: &AttrPath,
    reg: &SchemaRegistry,
) -> Vec<&'a Value> {
    let path = PatchPath {
        attr: attr.clone(),
        filter: None,
        sub: None,
    };
    select(resource, &path, reg)
}

/// The values at a PATCH path, flattening multi-valued attributes and
/// skipping nulls. `emails[type eq "work"].value` gives the matching emails'
/// values; a whole-extension path gives the extension object.
pub fn select<'a>(resource: &'a Value, path: &PatchPath, reg: &SchemaRegistry) -> Vec<&'a Value> {
    let Some(root) = resource.as_object() else {
        return Vec::new();
    };
    if path.filter.is_none() && path.sub.is_none() {
        if let Some(ext) = reg.whole_extension(&path.attr) {
            return get_ci(root, &ext.id)
                .into_iter()
                .filter(|v| !v.is_null())
                .collect();
        }
    }
    let Some(holder) = container(root, &path.attr, reg) else {
        return Vec::new();
    };
    let Some(value) = get_ci(holder, &path.attr.name) else {
        return Vec::new();
    };
    let mut elements = values_of(value);
    if let Some(filter) = &path.filter {
        let parent = path.attr.parent();
        elements.retain(|e| filter.matches_sub(e, &parent, reg));
    }
    let subs: Vec<&str> = path
        .attr
        .sub
        .iter()
        .chain(path.sub.iter())
        .map(String::as_str)
        .collect();
    for sub in subs {
        elements = elements
            .into_iter()
            .filter_map(Value::as_object)
            .filter_map(|o| get_ci(o, sub))
            .flat_map(values_of)
            .collect();
    }
    elements
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::schema::ENTERPRISE_USER_URN;
    use serde_json::json;

    fn attr(urn: Option<&str>, name: &str, sub: Option<&str>) -> AttrPath {
        AttrPath {
            urn: urn.map(str::to_string),
            name: name.into(),
            sub: sub.map(str::to_string),
        }
    }

    #[test]
    fn attr_paths_parse_and_print_back() {
        let cases = [
            ("userName", attr(None, "userName", None)),
            ("name.givenName", attr(None, "name", Some("givenName"))),
            ("members.$ref", attr(None, "members", Some("$ref"))),
            (
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
                attr(Some(ENTERPRISE_USER_URN), "department", None),
            ),
            (
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
                attr(Some(ENTERPRISE_USER_URN), "manager", Some("value")),
            ),
            (
                "urn:ietf:params:scim:schemas:core:2.0:User:name.familyName",
                attr(
                    Some("urn:ietf:params:scim:schemas:core:2.0:User"),
                    "name",
                    Some("familyName"),
                ),
            ),
            (
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
                attr(
                    Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0"),
                    "User",
                    None,
                ),
            ),
        ];
        for (text, want) in cases {
            let got = AttrPath::parse(text).unwrap();
            assert_eq!(got, want, "{text}");
            assert_eq!(got.to_string(), text);
        }
    }

    #[test]
    fn bad_attr_paths_are_invalid_path() {
        for bad in [
            "",
            "a.b.c",
            "1abc",
            "na me",
            "urn:",
            "urn:x:",
            "name.",
            ".x",
            "a\"b",
            "http://x/y",
        ] {
            let e = AttrPath::parse(bad).unwrap_err();
            assert_eq!(
                e.scim_type,
                Some(crate::scim::ScimType::InvalidPath),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn patch_paths_parse() {
        let p = PatchPath::parse(r#"emails[type eq "work"].value"#).unwrap();
        assert_eq!(p.attr, attr(None, "emails", None));
        assert_eq!(p.sub.as_deref(), Some("value"));
        assert_eq!(p.filter.unwrap().to_string(), r#"type eq "work""#);

        let p = PatchPath::parse(r#"members[value eq "2819c223"]"#).unwrap();
        assert_eq!(p.attr.name, "members");
        assert_eq!(p.sub, None);
        assert!(p.filter.is_some());

        let p = PatchPath::parse(r#"members[display eq "a]b"]"#).unwrap();
        assert_eq!(p.to_string(), r#"members[display eq "a]b"]"#);

        let p = PatchPath::parse("name.givenName").unwrap();
        assert_eq!(
            (p.attr, p.filter, p.sub),
            (attr(None, "name", Some("givenName")), None, None)
        );
    }

    #[test]
    fn bad_patch_paths_are_invalid_path_with_detail() {
        for (bad, needle) in [
            ("", "empty"),
            ("emails[type eq \"work\"", "never closed"),
            ("emails[type eq]", "value filter"),
            ("emails[type eq \"work\"]x", "unexpected"),
            ("emails[type eq \"work\"].", "not a valid"),
            ("name.givenName[value eq \"x\"]", "sub-attribute"),
            ("emails[type[x]]", "nested"),
            ("emails]", "without"),
        ] {
            let e = PatchPath::parse(bad).unwrap_err();
            assert_eq!(
                e.scim_type,
                Some(crate::scim::ScimType::InvalidPath),
                "{bad:?}"
            );
            assert!(e.detail.contains(needle), "{bad:?}: {}", e.detail);
        }
    }

    fn alice() -> Value {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE_USER_URN],
            "id": "1",
            "userName": "alice",
            "name": {"givenName": "Alice", "familyName": "Smith", "middleName": null},
            "emails": [
                {"value": "alice@work.example", "type": "work", "primary": true},
                {"value": "alice@home.example", "type": "home"},
                {"value": null, "type": "other"},
            ],
            ENTERPRISE_USER_URN: {"department": "Sales", "manager": {"value": "m-1"}},
        })
    }

    fn sel(path: &str) -> Vec<Value> {
        let reg = SchemaRegistry::users(vec![]);
        let r = alice();
        select(&r, &PatchPath::parse(path).unwrap(), &reg)
            .into_iter()
            .cloned()
            .collect()
    }

    #[test]
    fn select_reads_values() {
        assert_eq!(sel("userName"), vec![json!("alice")]);
        assert_eq!(sel("USERNAME"), vec![json!("alice")]);
        assert_eq!(sel("name.givenName"), vec![json!("Alice")]);
        assert_eq!(sel("name.middleName"), Vec::<Value>::new());
        assert_eq!(
            sel("emails.value"),
            vec![json!("alice@work.example"), json!("alice@home.example")]
        );
        assert_eq!(
            sel(r#"emails[type eq "work"].value"#),
            vec![json!("alice@work.example")]
        );
        assert_eq!(sel(r#"emails[TYPE eq "WORK"]"#).len(), 1);
        assert_eq!(sel(r#"emails[type eq "fax"].value"#), Vec::<Value>::new());
        assert_eq!(sel("emails").len(), 3);
        assert_eq!(
            sel("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"),
            vec![json!("Sales")]
        );
        assert_eq!(
            sel("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value"),
            vec![json!("m-1")]
        );
        assert_eq!(sel("department"), vec![json!("Sales")]);
        assert_eq!(
            sel("urn:ietf:params:scim:schemas:core:2.0:User:name.familyName"),
            vec![json!("Smith")]
        );
        assert_eq!(
            sel("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User")[0]["department"],
            "Sales"
        );
        assert_eq!(sel("title"), Vec::<Value>::new());
    }
}
