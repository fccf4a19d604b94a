//! Attribute paths (RFC 7644 §3.10 `attrPath`): `[URN ":"] name ["." sub]`,
//! the one piece of path grammar that filters, PATCH paths and schemas all
//! share.
//!
//! URN rule: a path that starts with `urn:` (any case) carries its schema
//! URN up to the last `:` before the attribute name, so
//! `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value`
//! is URN `urn:...:enterprise:2.0:User`, name `manager`, sub `value`. A URN
//! alone (`urn:...:enterprise:2.0:User`) therefore parses as URN
//! `urn:...:enterprise:2.0` and name `User`;
//! [`SchemaRegistry::whole_extension`](crate::scim::schema::SchemaRegistry::whole_extension)
//! recognises that form.

use std::fmt;
use std::str::FromStr;

use crate::scim::error::ScimError;

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
pub(crate) fn is_attr_name(s: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    // Spelled out: the schema module sits above this one.
    const ENTERPRISE_USER_URN: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

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
}
