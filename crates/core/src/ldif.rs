//! LDIF (RFC 2849) text for `serve --dry-run`: what the writer would send,
//! logged instead of sent.

use std::collections::BTreeMap;

/// `dn: ...` / `attr: value` lines; values that LDIF cannot hold as text
/// (non-ASCII, control characters, a leading space, colon or `<`, a
/// trailing space) are base64-encoded with `attr:: `.
pub fn line(attr: &str, value: &str) -> String {
    let b = value.as_bytes();
    let unsafe_start = matches!(b.first(), Some(b' ' | b':' | b'<'));
    let unsafe_char = b
        .iter()
        .any(|&c| c == 0 || c == b'\n' || c == b'\r' || c > 127);
    if unsafe_start || unsafe_char || b.last() == Some(&b' ') {
        format!("{attr}:: {}\n", base64(b))
    } else {
        format!("{attr}: {value}\n")
    }
}

/// An add record for an entry.
pub fn add(dn: &str, object_classes: &[String], attrs: &BTreeMap<String, Vec<String>>) -> String {
    let mut out = line("dn", dn);
    out.push_str("changetype: add\n");
    for oc in object_classes {
        out.push_str(&line("objectClass", oc));
    }
    for (name, values) in attrs {
        for v in values.iter().filter(|v| !v.is_empty()) {
            out.push_str(&line(name, v));
        }
    }
    out
}

/// A delete record.
pub fn delete(dn: &str) -> String {
    let mut out = line("dn", dn);
    out.push_str("changetype: delete\n");
    out
}

/// Standard base64 with padding (RFC 4648 §4), as LDIF's `attr:: ` wants.
fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), enc);
        }
    }

    #[test]
    fn unsafe_values_are_base64() {
        assert_eq!(line("cn", "Alice"), "cn: Alice\n");
        assert_eq!(line("cn", "Zoë"), "cn:: Wm/Dqw==\n");
        assert_eq!(line("cn", ":x"), "cn:: Ong=\n");
    }

    #[test]
    fn add_record() {
        let mut attrs = BTreeMap::new();
        attrs.insert("uid".to_string(), vec!["alice".to_string()]);
        attrs.insert("mail".to_string(), vec![String::new()]);
        assert_eq!(
            add("uid=alice,dc=x", &["inetOrgPerson".into()], &attrs),
            "dn: uid=alice,dc=x\nchangetype: add\nobjectClass: inetOrgPerson\nuid: alice\n"
        );
    }
}
