//! Passwords: whether the mapping writes the SCIM `password` to the
//! directory, into which attribute, and how it is encoded there.
//!
//! The SCIM `password` is write-only (RFC 7643 §4.1.1: `mutability:
//! writeOnly`, `returned: never`), so it is not an attribute like the
//! others: it is never in a stored snapshot, a write that does not carry
//! it leaves the directory's password alone, and the writer sends it as a
//! replace of its own, never compared with (nor removed because of) what
//! the directory holds. Two spellings in the mapping file:
//!
//! ```toml
//! [user.password]
//! attribute = "unicodePwd"     # or "userPassword"
//! format = "ad_unicode_pwd"    # or "plain" (the default)
//! ```
//!
//! or, as before, a rule whose only source is the password
//! (`userPassword = "password"`), which means the same as
//! `[user.password] attribute = "userPassword"` with `format = "plain"`
//! (`"ad_unicode_pwd"` when the attribute is `unicodePwd`).

use std::ops::Range;

use super::error::Problems;
use super::raw::RawResource;
use super::template::{Segment, Source};
use super::ResourceMapping;
use crate::journal::Password;

/// How the password is written in the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordFormat {
    /// The cleartext, for the directory to hash (OpenLDAP's
    /// `ppolicy_hash_cleartext`, 389 DS's password storage scheme).
    Plain,
    /// Active Directory's `unicodePwd`: the password in double quotes,
    /// UTF-16LE. AD accepts it only over LDAPS or StartTLS.
    AdUnicodePwd,
}

impl PasswordFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            PasswordFormat::Plain => "plain",
            PasswordFormat::AdUnicodePwd => "ad_unicode_pwd",
        }
    }
}

/// The mapping's password: the attribute it goes to and its encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordMapping {
    pub attribute: String,
    pub format: PasswordFormat,
}

impl PasswordMapping {
    /// What the writer gets for one journal entry: the password it
    /// carried, if any.
    pub fn write(&self, password: Option<&Password>) -> PasswordWrite {
        PasswordWrite {
            attribute: self.attribute.clone(),
            format: self.format,
            password: password.cloned(),
        }
    }
}

/// The mapping's password attribute for one entry, with the password to
/// replace there if the entry carried one. `Debug` shows the attribute and
/// format, never the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordWrite {
    pub attribute: String,
    pub format: PasswordFormat,
    /// `None`: the write carried no password; the directory's stays.
    pub password: Option<Password>,
}

impl PasswordWrite {
    /// The attribute value as the directory wants it, if there is a
    /// password to set.
    pub fn value(&self) -> Option<Vec<u8>> {
        self.password
            .as_ref()
            .map(|p| encode(self.format, p.expose()))
    }
}

/// `password` encoded for the directory.
pub fn encode(format: PasswordFormat, password: &str) -> Vec<u8> {
    match format {
        PasswordFormat::Plain => password.as_bytes().to_vec(),
        PasswordFormat::AdUnicodePwd => format!("\"{password}\"")
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect(),
    }
}

/// Whether a mapping path names the SCIM `password`.
pub(crate) fn is_password_path(text: &str) -> bool {
    let t = text.trim().to_ascii_lowercase();
    let t = t
        .strip_prefix("urn:ietf:params:scim:schemas:core:2.0:user:")
        .unwrap_or(&t);
    t == "password"
}

fn source_names_password(s: &Source) -> bool {
    match s {
        Source::Path(p) => is_password_path(p.as_str()),
        Source::Template(segs) => segs.iter().any(|seg| match seg {
            Segment::Placeholder { path, .. } => is_password_path(path.as_str()),
            Segment::Literal(_) => false,
        }),
        Source::Constant(_) | Source::Allocated { .. } => false,
    }
}

/// Reads `[user.password]` and takes any rule that names the password out
/// of the user's rules (the password is never an ordinary, compared and
/// removable attribute). Problems go to `p`.
pub(crate) fn parse(
    p: &mut Problems,
    raw: &RawResource,
    user: Option<&mut ResourceMapping>,
) -> Option<PasswordMapping> {
    let rule_span = |attr: &str| -> Range<usize> {
        raw.attributes
            .get_ref()
            .iter()
            .find(|(k, _)| k.get_ref().eq_ignore_ascii_case(attr))
            .map_or(raw.attributes.span(), |(k, _)| k.span())
    };
    let mut found: Option<PasswordMapping> = None;
    if let Some(t) = &raw.password {
        let t = t.get_ref();
        let attribute = t.attribute.get_ref().trim().to_string();
        if !crate::dn::is_attribute_description(&attribute) {
            p.add(
                t.attribute.span(),
                "user.password.attribute",
                format!("{attribute:?} is not an LDAP attribute name"),
            );
        }
        let format = match t.format.as_ref().map(|f| f.get_ref().trim()) {
            None | Some("plain") => Some(PasswordFormat::Plain),
            Some("ad_unicode_pwd") => Some(PasswordFormat::AdUnicodePwd),
            Some(other) => {
                let span = t.format.as_ref().map_or(t.attribute.span(), |f| f.span());
                p.add(
                    span,
                    "user.password.format",
                    format!("unknown format {other:?} (expected \"plain\" or \"ad_unicode_pwd\")"),
                );
                None
            }
        };
        if let Some(format) = format {
            found = Some(PasswordMapping { attribute, format });
        }
    }
    let user = user?;
    let mut i = 0;
    while i < user.rules.len() {
        let rule = &user.rules[i];
        if !rule.sources.iter().any(source_names_password) {
            i += 1;
            continue;
        }
        let key = format!("user.attributes.{}", rule.attribute);
        let span = rule_span(&rule.attribute);
        let simple = matches!(rule.sources.as_slice(), [Source::Path(_)])
            && rule.transforms.is_empty()
            && rule.resolve.is_none()
            && !rule.required;
        if !simple {
            p.add(
                span,
                key,
                "the password is write-only: it can only be a rule's one source, with no transform, fallback or template (userPassword = \"password\"), or go in [user.password]",
            );
        } else if raw.password.is_some() {
            p.add(
                span,
                key,
                "the password is mapped twice: here and in [user.password]; keep one",
            );
        } else if found.is_some() {
            p.add(span, key, "the password is mapped twice; keep one rule");
        } else {
            let format = if rule.attribute.eq_ignore_ascii_case("unicodePwd") {
                PasswordFormat::AdUnicodePwd
            } else {
                PasswordFormat::Plain
            };
            found = Some(PasswordMapping {
                attribute: rule.attribute.clone(),
                format,
            });
        }
        user.rules.remove(i);
    }
    if let (Some(pw), Some(t)) = (&found, &raw.password) {
        if let Some(other) = user
            .rules
            .iter()
            .find(|r| r.attribute.eq_ignore_ascii_case(&pw.attribute))
        {
            p.add(
                t.get_ref().attribute.span(),
                "user.password.attribute",
                format!(
                    "{} is also mapped in [user.attributes]; the password needs it alone",
                    other.attribute
                ),
            );
        }
    }
    if let Some(pw) = &found {
        if user
            .id_attribute
            .as_deref()
            .is_some_and(|a| a.eq_ignore_ascii_case(&pw.attribute))
        {
            p.add(
                rule_span(&pw.attribute),
                "user.password",
                "the password attribute is the id_attribute too",
            );
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::Mapping;

    const BASE: &str = r#"
[user]
dn = "uid={userName},ou=people,dc=example,dc=com"
object_classes = ["top", "person", "organizationalPerson", "inetOrgPerson"]

[user.attributes]
uid = "userName"
cn = { from = ["displayName", "userName"], required = true }
sn = { from = ["name.familyName", "userName"], required = true }

[user.deactivate]
set = { pwdAccountLockedTime = "000001010000Z" }
"#;

    // The mapping tests' helpers: parse, the one problem, a line's number.
    use crate::mapping::tests::{line_of, parse, problem};

    /// The presets' commented `[user.password]` blocks are valid.
    #[test]
    fn the_presets_password_blocks_parse_when_uncommented() {
        for (name, text, format) in [
            (
                "openldap",
                crate::mapping::EXAMPLE_OPENLDAP,
                PasswordFormat::Plain,
            ),
            (
                "ad",
                include_str!("../../../../examples/ad.toml"),
                PasswordFormat::AdUnicodePwd,
            ),
        ] {
            let mut out = String::new();
            let mut inside = false;
            for line in text.lines() {
                if line == "# [user.password]" {
                    inside = true;
                }
                match line.strip_prefix("# ") {
                    Some(l) if inside && (l.starts_with('[') || l.contains(" = ")) => {
                        out.push_str(l);
                    }
                    _ => {
                        inside = false;
                        out.push_str(line);
                    }
                }
                out.push('\n');
            }
            let m = Mapping::parse(&out, name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(m.password.map(|p| p.format), Some(format), "{name}");
        }
    }

    #[test]
    fn no_password_by_default() {
        assert_eq!(parse(BASE).password, None);
    }

    #[test]
    fn the_table_form() {
        let m = parse(&format!(
            "{BASE}\n[user.password]\nattribute = \"unicodePwd\"\nformat = \"ad_unicode_pwd\"\n"
        ));
        assert_eq!(
            m.password,
            Some(PasswordMapping {
                attribute: "unicodePwd".into(),
                format: PasswordFormat::AdUnicodePwd
            })
        );
        let m = parse(&format!(
            "{BASE}\n[user.password]\nattribute = \"userPassword\"\n"
        ));
        assert_eq!(m.password.unwrap().format, PasswordFormat::Plain);
    }

    /// `userPassword = "password"`, as mappings wrote it before: the same
    /// as the table, and no longer an ordinary (compared, removable) rule.
    #[test]
    fn the_rule_form_becomes_the_password_mapping() {
        let text = BASE.replace(
            "uid = \"userName\"",
            "uid = \"userName\"\nuserPassword = \"password\"",
        );
        let m = parse(&text);
        assert_eq!(
            m.password,
            Some(PasswordMapping {
                attribute: "userPassword".into(),
                format: PasswordFormat::Plain
            })
        );
        assert!(m.user.rule("userPassword").is_none());
        assert!(!m
            .user_managed_attributes()
            .iter()
            .any(|a| a.eq_ignore_ascii_case("userPassword")));
        let text = BASE.replace(
            "uid = \"userName\"",
            "uid = \"userName\"\nunicodePwd = \"password\"",
        );
        assert_eq!(
            parse(&text).password.unwrap().format,
            PasswordFormat::AdUnicodePwd
        );
    }

    #[test]
    fn misuses_are_located() {
        let text = BASE.replace(
            "uid = \"userName\"",
            "uid = \"userName\"\ndescription = { from = [\"password\", \"userName\"] }",
        );
        let p = problem(&text);
        assert_eq!(p.key, "user.attributes.description");
        assert_eq!(p.line, line_of(&text, "description ="));
        assert!(p.message.contains("write-only"), "{p}");

        let text = format!(
            "{}\n[user.password]\nattribute = \"userPassword\"\n",
            BASE.replace(
                "uid = \"userName\"",
                "uid = \"userName\"\nuserPassword = \"password\""
            )
        );
        let p = problem(&text);
        assert!(p.message.contains("mapped twice"), "{p}");

        let text =
            format!("{BASE}\n[user.password]\nattribute = \"userPassword\"\nformat = \"md5\"\n");
        let p = problem(&text);
        assert_eq!(p.key, "user.password.format");
        assert_eq!(p.line, line_of(&text, "format ="));

        let text = format!("{BASE}\n[user.password]\nattribute = \"cn\"\n");
        let p = problem(&text);
        assert_eq!(p.key, "user.password.attribute");
        assert!(p.message.contains("also mapped"), "{p}");
    }

    #[test]
    fn ad_unicode_pwd_is_the_quoted_password_in_utf16le() {
        assert_eq!(
            encode(PasswordFormat::AdUnicodePwd, "ab"),
            vec![b'"', 0, b'a', 0, b'b', 0, b'"', 0]
        );
        // Outside the BMP: a surrogate pair, little-endian.
        assert_eq!(
            encode(PasswordFormat::AdUnicodePwd, "é😀"),
            vec![b'"', 0, 0xe9, 0, 0x3d, 0xd8, 0x00, 0xde, b'"', 0]
        );
        assert_eq!(encode(PasswordFormat::Plain, "pä"), "pä".as_bytes());
    }

    #[test]
    fn password_paths() {
        for yes in [
            "password",
            " Password ",
            "urn:ietf:params:scim:schemas:core:2.0:User:password",
        ] {
            assert!(is_password_path(yes), "{yes}");
        }
        for no in ["passwordHint", "name.password", "userName"] {
            assert!(!is_password_path(no), "{no}");
        }
    }

    #[test]
    fn debug_never_shows_it() {
        let w = PasswordMapping {
            attribute: "userPassword".into(),
            format: PasswordFormat::Plain,
        }
        .write(Some(&Password::new("canary-9")));
        let d = format!("{w:?}");
        assert!(!d.contains("canary") && d.contains("userPassword"), "{d}");
        assert_eq!(w.value().as_deref(), Some(&b"canary-9"[..]));
    }
}
