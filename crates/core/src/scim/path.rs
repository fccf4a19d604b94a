//! PATCH paths (RFC 7644 §3.5.2 `PATH = attrPath / valuePath [subAttr]`).
//! Reading the values a path designates from a resource is
//! [`eval::select`](crate::scim::eval::select).

use std::fmt;
use std::str::FromStr;

use crate::scim::attr_path::is_attr_name;
pub use crate::scim::attr_path::AttrPath;
use crate::scim::error::ScimError;
use crate::scim::filter::{parse_filter, Filter};

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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn attr(urn: Option<&str>, name: &str, sub: Option<&str>) -> AttrPath {
        AttrPath {
            urn: urn.map(str::to_string),
            name: name.into(),
            sub: sub.map(str::to_string),
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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn parse_never_panics(s in any::<String>()) {
            let _ = PatchPath::parse(&s);
        }

        #[test]
        fn parse_never_panics_on_filter_like_text(
            s in "[a-zA-Z0-9 \"\\\\()\\[\\].:$+-]{0,80}"
        ) {
            let _ = PatchPath::parse(&s);
        }
    }
}
