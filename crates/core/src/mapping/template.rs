//! Sources of LDAP values: a plain SCIM path, a template with `{path}`
//! placeholders, or a constant; and the transforms applied to values.

use serde_json::Value;

use super::paths::ScimPath;
use crate::scim::schema::SchemaRegistry;

/// A change applied to each value on its way to LDAP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    Lowercase,
    Uppercase,
    /// Removes leading and trailing white space.
    Trim,
}

impl Transform {
    pub(crate) const EXPECTED: &'static str = "expected lowercase, uppercase or trim";

    pub(crate) fn parse(name: &str) -> Option<Transform> {
        match name {
            "lowercase" => Some(Transform::Lowercase),
            "uppercase" => Some(Transform::Uppercase),
            "trim" => Some(Transform::Trim),
            _ => None,
        }
    }

    pub fn apply(self, s: &str) -> String {
        match self {
            Transform::Lowercase => s.to_lowercase(),
            Transform::Uppercase => s.to_uppercase(),
            Transform::Trim => s.trim().to_string(),
        }
    }
}

pub(crate) fn apply_all(transforms: &[Transform], s: &str) -> String {
    transforms
        .iter()
        .fold(s.to_string(), |acc, t| t.apply(&acc))
}

/// A piece of a template.
#[derive(Debug, Clone)]
pub enum Segment {
    Literal(String),
    Placeholder {
        path: ScimPath,
        transforms: Vec<Transform>,
    },
}

/// Where a rule takes its value from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A SCIM path; a multi-valued attribute gives several LDAP values.
    Path(ScimPath),
    /// Text with `{path}` placeholders; one value, and only when every
    /// placeholder has a value.
    Template(Vec<Segment>),
    /// A fixed value (`value = "..."` in the file).
    Constant(String),
    /// A number handed out once per resource from `lo..=hi`
    /// (`allocate = "10000-59999"`: uidNumber, gidNumber), kept in the
    /// resource under [`ALLOCATED_KEY`].
    Allocated { attribute: String, lo: u64, hi: u64 },
}

/// Where a resource keeps the numbers allocated for it: a key of the stored
/// SCIM JSON that is never shown to clients.
pub const ALLOCATED_KEY: &str = "scim2ldap:allocated";

impl Source {
    /// How the source reads in the file, for error messages.
    pub fn describe(&self) -> String {
        match self {
            Source::Path(p) => p.as_str().to_string(),
            Source::Template(segs) => describe_template(segs),
            Source::Constant(c) => format!("value {c:?}"),
            Source::Allocated { lo, hi, .. } => format!("a number allocated from {lo}-{hi}"),
        }
    }

    /// The LDAP values this source gives for `resource`, untransformed;
    /// empty when it has none.
    pub fn values(&self, resource: &Value, reg: &SchemaRegistry) -> Result<Vec<String>, String> {
        match self {
            Source::Constant(c) => Ok(vec![c.clone()]),
            Source::Allocated { attribute, .. } => Ok(resource
                .get(ALLOCATED_KEY)
                .and_then(|a| a.get(attribute))
                .and_then(|v| v.as_u64())
                .map(|n| vec![n.to_string()])
                .unwrap_or_default()),
            Source::Path(p) => {
                let mut out = Vec::new();
                for v in p.select(resource, reg) {
                    if let Some(s) = ldap_text(v, p.as_str())? {
                        out.push(s);
                    }
                }
                Ok(out)
            }
            Source::Template(segs) => Ok(render(segs, resource, reg)?.into_iter().collect()),
        }
    }
}

pub(crate) fn describe_template(segs: &[Segment]) -> String {
    let mut s = String::new();
    for seg in segs {
        match seg {
            Segment::Literal(l) => s.push_str(&l.replace('{', "{{").replace('}', "}}")),
            Segment::Placeholder { path, transforms } => {
                s.push('{');
                s.push_str(path.as_str());
                for t in transforms {
                    s.push('|');
                    s.push_str(match t {
                        Transform::Lowercase => "lowercase",
                        Transform::Uppercase => "uppercase",
                        Transform::Trim => "trim",
                    });
                }
                s.push('}');
            }
        }
    }
    s
}

/// Renders a template: `None` when a placeholder has no value (or only a
/// blank one), so that a fallback list moves on to its next source.
pub(crate) fn render(
    segs: &[Segment],
    resource: &Value,
    reg: &SchemaRegistry,
) -> Result<Option<String>, String> {
    let mut out = String::new();
    for seg in segs {
        match seg {
            Segment::Literal(l) => out.push_str(l),
            Segment::Placeholder { path, transforms } => {
                let mut first = None;
                for v in path.select(resource, reg) {
                    if let Some(s) = ldap_text(v, path.as_str())? {
                        let s = apply_all(transforms, &s);
                        if !s.trim().is_empty() {
                            first = Some(s);
                            break;
                        }
                    }
                }
                match first {
                    Some(s) => out.push_str(&s),
                    None => return Ok(None),
                }
            }
        }
    }
    Ok(Some(out))
}

/// The LDAP text of one SCIM value: strings as they are, booleans as
/// `TRUE`/`FALSE` (LDAP Boolean syntax), numbers in decimal. A complex
/// value stands for its `value` sub-attribute (SCIM's convention for
/// `emails`, `manager`, `members`); any other complex value cannot be
/// written and is a mapping error.
pub(crate) fn ldap_text(v: &Value, path: &str) -> Result<Option<String>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Bool(b) => Ok(Some(if *b { "TRUE" } else { "FALSE" }.to_string())),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Object(o) => match o.iter().find(|(k, _)| k.eq_ignore_ascii_case("value")) {
            Some((_, inner)) if !inner.is_object() && !inner.is_array() => ldap_text(inner, path),
            _ => Err(format!(
                "the mapping source {path:?} gives a complex value that has no simple \"value\"; map one of its sub-attributes instead"
            )),
        },
        Value::Array(_) => Err(format!("the mapping source {path:?} gives a nested array")),
    }
}

/// Parses a source string. A string with `{` or `}` is a template;
/// anything else is a SCIM path. `{{` and `}}` stand for literal braces.
/// The error is a message for the administrator.
pub(crate) fn parse_source(text: &str) -> Result<Source, String> {
    if !text.contains(['{', '}']) {
        let text = text.trim();
        if text.is_empty() {
            return Err("empty SCIM path".to_string());
        }
        return ScimPath::parse(text)
            .map(Source::Path)
            .map_err(|e| format!("bad SCIM path {text:?}: {e}"));
    }
    let segs = parse_template(text)?;
    if !segs
        .iter()
        .any(|s| matches!(s, Segment::Placeholder { .. }))
    {
        return Err(format!(
            "template {text:?} has no {{placeholder}}; for a fixed value write {{ value = \"...\" }}"
        ));
    }
    Ok(Source::Template(segs))
}

/// Parses `literal {path|transform} literal`. Inside a placeholder a `}`
/// or `|` within a double-quoted filter literal does not count, so that
/// `{emails[type eq "a|b"].value}` works.
pub(crate) fn parse_template(text: &str) -> Result<Vec<Segment>, String> {
    let mut segs = Vec::new();
    let mut lit = String::new();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' if chars.peek().map(|&(_, n)| n) == Some('{') => {
                chars.next();
                lit.push('{');
            }
            '}' if chars.peek().map(|&(_, n)| n) == Some('}') => {
                chars.next();
                lit.push('}');
            }
            '}' => {
                return Err(format!(
                    "unmatched '}}' at character {} of {text:?} (write }}}} for a literal brace)",
                    i + 1
                ))
            }
            '{' => {
                let start = i + 1;
                let mut end = None;
                let mut in_quote = false;
                let mut escaped = false;
                for (j, d) in chars.by_ref() {
                    if in_quote {
                        if escaped {
                            escaped = false;
                        } else if d == '\\' {
                            escaped = true;
                        } else if d == '"' {
                            in_quote = false;
                        }
                    } else if d == '"' {
                        in_quote = true;
                    } else if d == '{' {
                        return Err(format!("'{{' inside a placeholder in {text:?}"));
                    } else if d == '}' {
                        end = Some(j);
                        break;
                    }
                }
                let Some(end) = end else {
                    return Err(format!(
                        "unclosed '{{' in {text:?} (write {{{{ for a literal brace)"
                    ));
                };
                if !lit.is_empty() {
                    segs.push(Segment::Literal(std::mem::take(&mut lit)));
                }
                segs.push(parse_placeholder(&text[start..end])?);
            }
            c => lit.push(c),
        }
    }
    if !lit.is_empty() {
        segs.push(Segment::Literal(lit));
    }
    Ok(segs)
}

fn parse_placeholder(inner: &str) -> Result<Segment, String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut in_quote = false;
    let mut escaped = false;
    for c in inner.chars() {
        if in_quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quote = false;
            }
        } else if c == '"' {
            in_quote = true;
        } else if c == '|' {
            parts.push(std::mem::take(&mut cur));
            continue;
        }
        cur.push(c);
    }
    parts.push(cur);
    let path_text = parts[0].trim();
    if path_text.is_empty() {
        return Err("empty placeholder {}".to_string());
    }
    let path = ScimPath::parse(path_text)
        .map_err(|e| format!("bad SCIM path {path_text:?} in placeholder: {e}"))?;
    let mut transforms = Vec::new();
    for name in &parts[1..] {
        let name = name.trim();
        transforms.push(Transform::parse(name).ok_or_else(|| {
            format!(
                "unknown transform {name:?} in placeholder ({})",
                Transform::EXPECTED
            )
        })?);
    }
    Ok(Segment::Placeholder { path, transforms })
}
