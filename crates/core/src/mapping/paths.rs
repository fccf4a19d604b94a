//! SCIM paths as the mapping uses them: parsed and evaluated by the SCIM
//! core (`crate::scim::path`), plus a recogniser for the narrow forms that
//! can be reversed (LDAP value → SCIM JSON) when adopting existing entries.

use serde_json::Value;

use crate::scim::path::{AttrPath, PatchPath};
use crate::scim::schema::{SchemaRegistry, CORE_GROUP_URN, CORE_USER_URN};

/// A SCIM path from the mapping file, parsed once at load time.
#[derive(Debug, Clone)]
pub struct ScimPath {
    text: String,
    /// Boxed: a parsed filter is large and sources are many.
    parsed: Box<PatchPath>,
    simple: Option<SimplePath>,
}

impl ScimPath {
    pub(crate) fn parse(text: &str) -> Result<ScimPath, String> {
        let parsed = PatchPath::parse(text).map_err(|e| e.detail)?;
        let simple = SimplePath::from_parsed(&parsed, text);
        Ok(ScimPath {
            text: text.trim().to_string(),
            parsed: Box::new(parsed),
            simple,
        })
    }

    /// The path as written in the mapping file.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed path.
    pub fn parsed(&self) -> &PatchPath {
        &self.parsed
    }

    /// The values at this path (multi-valued attributes flattened, nulls
    /// skipped).
    pub(crate) fn select<'a>(&self, resource: &'a Value, reg: &SchemaRegistry) -> Vec<&'a Value> {
        crate::scim::eval::select(resource, &self.parsed, reg)
    }

    pub(crate) fn simple(&self) -> Option<&SimplePath> {
        self.simple.as_ref()
    }
}

/// `[urn:]attr[.sub]` or `[urn:]attr[sub eq "literal"][.sub]`: the forms
/// whose values can be put back into a SCIM resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SimplePath {
    pub attr: AttrPath,
    /// `(sub-attribute, string literal)` of an `eq` value filter.
    pub filter: Option<(String, String)>,
    /// The sub-attribute, whichever form it was written in.
    pub sub: Option<String>,
}

fn is_attr_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl SimplePath {
    fn from_parsed(parsed: &PatchPath, text: &str) -> Option<SimplePath> {
        let filter = match parsed.filter {
            None => None,
            Some(_) => {
                let open = text.find('[')?;
                let close = text.rfind(']')?;
                Some(parse_eq_filter(text.get(open + 1..close)?)?)
            }
        };
        Some(SimplePath {
            attr: parsed.attr.parent(),
            filter,
            sub: parsed.leaf_sub().map(str::to_string),
        })
    }

    /// The path without a core-schema URN, lowercased, for comparing with
    /// what a SCIM filter names (`userName` and
    /// `urn:...:core:2.0:User:userName` are the same attribute).
    pub(crate) fn key(&self) -> String {
        let mut s = String::new();
        if let Some(urn) = &self.attr.urn {
            if !urn.eq_ignore_ascii_case(CORE_USER_URN) && !urn.eq_ignore_ascii_case(CORE_GROUP_URN)
            {
                s.push_str(&urn.to_ascii_lowercase());
                s.push(':');
            }
        }
        s.push_str(&self.attr.name.to_ascii_lowercase());
        if let Some((fa, fv)) = &self.filter {
            s.push_str(&format!("[{} eq {:?}]", fa.to_ascii_lowercase(), fv));
        }
        if let Some(sub) = &self.sub {
            s.push('.');
            s.push_str(&sub.to_ascii_lowercase());
        }
        s
    }
}

/// The comparison key of a path given as text (see [`SimplePath::key`]);
/// `None` when it is not one of the simple forms.
pub(crate) fn key_of(text: &str) -> Option<String> {
    ScimPath::parse(text).ok()?.simple().map(SimplePath::key)
}

fn parse_eq_filter(inner: &str) -> Option<(String, String)> {
    let inner = inner.trim();
    let (attr, rest) = inner.split_once(char::is_whitespace)?;
    let rest = rest.trim_start();
    let op = rest.get(..2)?;
    if !op.eq_ignore_ascii_case("eq") {
        return None;
    }
    let value: String = serde_json::from_str(rest[2..].trim()).ok()?;
    if !is_attr_name(attr) {
        return None;
    }
    Some((attr.to_string(), value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::schema::ENTERPRISE_USER_URN;

    fn simple(text: &str) -> Option<SimplePath> {
        ScimPath::parse(text).unwrap().simple().cloned()
    }

    #[test]
    fn simple_paths() {
        let p = simple(r#"emails[type eq "work"].value"#).unwrap();
        assert_eq!(p.attr.name, "emails");
        assert_eq!(p.filter, Some(("type".into(), "work".into())));
        assert_eq!(p.sub.as_deref(), Some("value"));
        let p = simple(&format!("{ENTERPRISE_USER_URN}:manager.value")).unwrap();
        assert_eq!(p.attr.urn.as_deref(), Some(ENTERPRISE_USER_URN));
        assert_eq!(
            (p.attr.name.as_str(), p.sub.as_deref()),
            ("manager", Some("value"))
        );
        assert_eq!(
            key_of(&format!("{CORE_USER_URN}:userName")).as_deref(),
            Some("username")
        );
        assert_eq!(key_of("name.givenName").as_deref(), Some("name.givenname"));
        assert!(simple(r#"emails[type eq "work" and primary eq true].value"#).is_none());
        assert!(simple("emails[primary eq true].value").is_none());
        assert!(simple(r#"emails[type eq "work"]"#).unwrap().sub.is_none());
    }
}
