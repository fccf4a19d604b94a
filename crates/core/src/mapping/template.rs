//! Sources of LDAP values: a plain SCIM path, a template with `{path}`
//! placeholders, or a constant; and the transforms applied to values.

use serde_json::Value;

use super::paths::ScimPath;
use crate::scim::schema::SchemaRegistry;

/// A change applied to each value on its way to LDAP. Written in the file
/// as `name` or `name:argument` (see [`Transform::parse`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transform {
    Lowercase,
    Uppercase,
    /// `trim`: removes leading and trailing white space.
    Trim,
    /// `trim:CHARS`: removes leading and trailing characters of the set
    /// (`trim:. ` for AD's sAMAccountName, which may not start or end with
    /// a dot or a space).
    TrimChars(Vec<char>),
    /// `before:SEP`: the part before the first `SEP` (`before:@` turns
    /// `alice@example.com` into `alice`); the whole value when `SEP` is
    /// absent.
    Before(String),
    /// `max_length:N` (or `truncate:N`): at most N characters (Unicode scalar values, never
    /// part of one), and a character is never cut from the combining marks
    /// that follow it.
    MaxLength(usize),
    /// `replace:CHARS:WITH`: each character of the set becomes `WITH`
    /// (empty: removed). The last `:` separates the two, so `CHARS` may
    /// hold a colon and `WITH` cannot.
    Replace {
        chars: Vec<char>,
        with: String,
    },
    /// `ascii`: accents folded (`é` → `e`, `ß` → `ss`, `Ø` → `O`);
    /// characters with no ASCII form are removed.
    Ascii,
}

impl Transform {
    pub(crate) const EXPECTED: &'static str = "expected lowercase, uppercase, trim, trim:CHARS, before:SEP, max_length:N (or truncate:N), replace:CHARS:WITH or ascii";

    /// Parses one transform as written in the file. The error says what
    /// is wrong with it, for the administrator.
    pub(crate) fn parse(text: &str) -> Result<Transform, String> {
        let (name, arg) = match text.split_once(':') {
            Some((n, a)) => (n.trim(), Some(a)),
            None => (text.trim(), None),
        };
        let no_arg = |t: Transform| match arg {
            None => Ok(t),
            Some(_) => Err(format!(
                "transform {name:?} takes no argument (in {text:?})"
            )),
        };
        let need = |example: &str| -> Result<&str, String> {
            match arg {
                Some(a) if !a.is_empty() => Ok(a),
                _ => Err(format!(
                    "transform {name:?} needs an argument, e.g. {example:?} (in {text:?})"
                )),
            }
        };
        match name {
            "lowercase" => no_arg(Transform::Lowercase),
            "uppercase" => no_arg(Transform::Uppercase),
            "ascii" => no_arg(Transform::Ascii),
            "trim" => match arg {
                None => Ok(Transform::Trim),
                Some(_) => Ok(Transform::TrimChars(need("trim:. ")?.chars().collect())),
            },
            "before" => Ok(Transform::Before(need("before:@")?.to_string())),
            "max_length" | "truncate" => {
                let a = need("max_length:20")?;
                match a.trim().parse::<usize>() {
                    Ok(n) if n > 0 => Ok(Transform::MaxLength(n)),
                    _ => Err(format!(
                        "max_length needs a whole number of characters above 0, not {a:?}"
                    )),
                }
            }
            "replace" => {
                let a = need("replace: .:_")?;
                let Some((chars, with)) = a.rsplit_once(':') else {
                    return Err(format!(
                        "replace needs the characters and what replaces them, separated by ':', e.g. \"replace: .:_\" (in {text:?})"
                    ));
                };
                if chars.is_empty() {
                    return Err(format!(
                        "replace names no character to replace (in {text:?}); write replace:CHARS:WITH"
                    ));
                }
                Ok(Transform::Replace {
                    chars: chars.chars().collect(),
                    with: with.to_string(),
                })
            }
            _ => Err(format!("unknown transform {text:?} ({})", Self::EXPECTED)),
        }
    }

    pub fn apply(&self, s: &str) -> String {
        match self {
            Transform::Lowercase => s.to_lowercase(),
            Transform::Uppercase => s.to_uppercase(),
            Transform::Trim => s.trim().to_string(),
            Transform::TrimChars(set) => s.trim_matches(|c| set.contains(&c)).to_string(),
            Transform::Before(sep) => s.split_once(sep.as_str()).map_or(s, |(a, _)| a).to_string(),
            Transform::MaxLength(n) => truncate_chars(s, *n).to_string(),
            Transform::Replace { chars, with } => {
                let mut out = String::with_capacity(s.len());
                for c in s.chars() {
                    if chars.contains(&c) {
                        out.push_str(with);
                    } else {
                        out.push(c);
                    }
                }
                out
            }
            Transform::Ascii => fold_ascii(s),
        }
    }

    /// Whether a value stored through this transform can be read back as
    /// the SCIM value (up to case and surrounding space). A rule with a
    /// transform that is not is never read back (adoption) and never used
    /// to look an entry up: `alice@a.com` and `alice@b.com` both give
    /// `before:@` `alice`.
    pub fn is_reversible(&self) -> bool {
        matches!(
            self,
            Transform::Lowercase | Transform::Uppercase | Transform::Trim
        )
    }
}

impl std::fmt::Display for Transform {
    /// As written in the file.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transform::Lowercase => f.write_str("lowercase"),
            Transform::Uppercase => f.write_str("uppercase"),
            Transform::Trim => f.write_str("trim"),
            Transform::TrimChars(set) => write!(f, "trim:{}", set.iter().collect::<String>()),
            Transform::Before(sep) => write!(f, "before:{sep}"),
            Transform::MaxLength(n) => write!(f, "max_length:{n}"),
            Transform::Replace { chars, with } => {
                write!(f, "replace:{}:{with}", chars.iter().collect::<String>())
            }
            Transform::Ascii => f.write_str("ascii"),
        }
    }
}

/// The first `n` characters of `s`; when the character after the cut is
/// a combining mark, the character it belongs to goes too (`e` + U+0301
/// is one letter to a reader).
fn truncate_chars(s: &str, n: usize) -> &str {
    let mut ends = s.char_indices().map(|(i, _)| i).chain([s.len()]);
    let Some(mut cut) = ends.nth(n) else {
        return s;
    };
    if cut == s.len() {
        return s;
    }
    // Back off over the marks before the cut and their base character.
    let head = &s[..cut];
    let next = s[cut..].chars().next();
    if next.is_some_and(unicode_normalization::char::is_combining_mark) {
        let mut rev = head.char_indices().rev();
        for (i, c) in rev.by_ref() {
            cut = i;
            if !unicode_normalization::char::is_combining_mark(c) {
                break;
            }
        }
    }
    &s[..cut]
}

/// Accents folded to ASCII: NFKD, combining marks dropped, a few letters
/// that do not decompose spelled out, anything else non-ASCII removed.
fn fold_ascii(s: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let mut out = String::with_capacity(s.len());
    for c in s.nfkd() {
        if c.is_ascii() {
            out.push(c);
            continue;
        }
        if unicode_normalization::char::is_combining_mark(c) {
            continue;
        }
        out.push_str(match c {
            'ß' => "ss",
            'ẞ' => "SS",
            'æ' => "ae",
            'Æ' => "AE",
            'œ' => "oe",
            'Œ' => "OE",
            'ø' => "o",
            'Ø' => "O",
            'đ' | 'ð' => "d",
            'Đ' | 'Ð' => "D",
            'ł' => "l",
            'Ł' => "L",
            'þ' => "th",
            'Þ' => "Th",
            'ı' => "i",
            'ħ' => "h",
            'Ħ' => "H",
            _ => "",
        });
    }
    out
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
                    for c in t.to_string().chars() {
                        if matches!(c, '|' | '{' | '}' | '"' | '\\') {
                            s.push('\\');
                        }
                        s.push(c);
                    }
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
/// `{emails[type eq "a|b"].value}` works; outside one, a backslash makes
/// the next character plain (`{userName|replace:\|\}:_}`).
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
                    if escaped && !in_quote {
                        escaped = false;
                    } else if in_quote {
                        if escaped {
                            escaped = false;
                        } else if d == '\\' {
                            escaped = true;
                        } else if d == '"' {
                            in_quote = false;
                        }
                    } else if d == '\\' {
                        escaped = true;
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
    // Each part trimmed, except white space written escaped (`\ `).
    fn finish(cur: &mut String, kept: usize) -> String {
        let s = std::mem::take(cur);
        let end = s.trim_end().len().max(kept);
        s[..end].trim_start().to_string()
    }
    let mut parts = Vec::new();
    let mut cur = String::new();
    // Length of `cur` up to its last escaped character.
    let mut kept = 0;
    let mut in_quote = false;
    let mut escaped = false;
    for c in inner.chars() {
        if escaped && !in_quote {
            // `\|`, `\}`, `\"`, `\\`, `\ ` outside a filter's quotes: the
            // character itself, for transform arguments.
            escaped = false;
            cur.push(c);
            kept = cur.len();
            continue;
        } else if !in_quote && c == '\\' {
            escaped = true;
            continue;
        } else if in_quote {
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
            parts.push(finish(&mut cur, kept));
            kept = 0;
            continue;
        }
        cur.push(c);
    }
    parts.push(finish(&mut cur, kept));
    let path_text = parts[0].trim();
    if path_text.is_empty() {
        return Err("empty placeholder {}".to_string());
    }
    let path = ScimPath::parse(path_text)
        .map_err(|e| format!("bad SCIM path {path_text:?} in placeholder: {e}"))?;
    let mut transforms = Vec::new();
    for name in &parts[1..] {
        transforms.push(Transform::parse(name).map_err(|e| format!("{e} in placeholder"))?);
    }
    Ok(Segment::Placeholder { path, transforms })
}
