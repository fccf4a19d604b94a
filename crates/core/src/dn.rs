//! RFC 4514 (DN strings) and RFC 4515 (search filters): escaping of values
//! that come from the identity provider, and the DN parser that validates
//! the literal DNs of the mapping file.

/// Escapes a value for use as an attribute value in a DN (RFC 4514 §2.4).
///
/// Escapes `"+,;<>\=` anywhere, a leading space or `#`, a trailing space,
/// and every control character (as `\XX`, NUL included), so that any
/// string, however hostile, becomes one well-formed attribute value.
pub fn escape_dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' | '=' => {
                out.push('\\');
                out.push(c);
            }
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '#' if i == 0 => out.push_str("\\#"),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{b:02x}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Escapes a value for an LDAP search filter assertion (RFC 4515 §3):
/// `*`, `(`, `)`, `\` and NUL become `\2a`, `\28`, `\29`, `\5c`, `\00`.
pub fn escape_filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\\' => out.push_str("\\5c"),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

/// True for an LDAP attribute description (RFC 4512 §2.5): a descriptor
/// (`ALPHA *(ALPHA / DIGIT / "-")`) or a numeric OID, then optional
/// `;option`s such as `;binary` or `;lang-de`.
pub fn is_attribute_description(s: &str) -> bool {
    let mut parts = s.split(';');
    let base = parts.next().unwrap_or_default();
    (is_descriptor(base) || is_numeric_oid(base))
        && parts.all(|o| !o.is_empty() && o.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
}

/// True for an RFC 4512 descriptor (`keystring`), the form of object class
/// names.
pub fn is_descriptor(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-')
}

fn is_numeric_oid(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|p| {
            !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && (p == "0" || !p.starts_with('0'))
        })
}

/// One attribute type and value of an RDN, the value unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ava {
    pub attr: String,
    pub value: String,
    /// The value was written in the `#hex` (BER) form; `value` holds that
    /// text as written.
    pub ber: bool,
}

impl Ava {
    fn to_dn_string(&self) -> String {
        if self.ber {
            format!("{}={}", self.attr, self.value)
        } else {
            format!("{}={}", self.attr, escape_dn_value(&self.value))
        }
    }
}

/// A parsed DN: its RDNs, each one or more AVAs.
pub type ParsedDn = Vec<Vec<Ava>>;

/// Formats a parsed DN in the canonical RFC 4514 form (no spaces around
/// separators, values escaped by [`escape_dn_value`]).
pub fn dn_to_string(dn: &ParsedDn) -> String {
    dn.iter()
        .map(|rdn| {
            rdn.iter()
                .map(Ava::to_dn_string)
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `attr=value` of an RDN as the directory compares it: the type
/// lowercased, the value prepared by RFC 4518 for caseIgnoreMatch. Two
/// entries with equal keys under one parent are one entry to LDAP.
pub fn rdn_key(attr: &str, value: &str) -> String {
    format!(
        "{}={}",
        attr.to_ascii_lowercase(),
        crate::ldapprep::equality_key(value)
    )
}

/// The [`rdn_key`] of a DN's first RDN (its first AVA); `None` for the
/// empty DN or one that does not parse.
pub fn first_rdn_key(dn: &str) -> Option<String> {
    let parsed = parse_dn(dn).ok()?;
    let ava = parsed.first()?.first()?;
    Some(rdn_key(&ava.attr, &ava.value))
}

/// Parses a DN string (RFC 4514), unescaping values. Spaces around `,`,
/// `+` and `=` are tolerated (administrators write `ou=people, dc=example`,
/// and servers accept it); an unescaped `"`, `;`, `<`, `>` or NUL, a bad
/// escape, a bad attribute type or an empty value is an error that says
/// what is wrong. The empty string is the empty DN.
pub fn parse_dn(s: &str) -> Result<ParsedDn, String> {
    let mut dn = Vec::new();
    if s.trim().is_empty() {
        return Ok(dn);
    }
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut rdn = Vec::new();
    loop {
        let ava = parse_ava(&chars, &mut i)?;
        rdn.push(ava);
        match chars.get(i) {
            None => {
                dn.push(rdn);
                return Ok(dn);
            }
            Some(',') => {
                dn.push(std::mem::take(&mut rdn));
                i += 1;
            }
            Some('+') => i += 1,
            Some(c) => return Err(format!("unexpected {c:?} in DN")),
        }
    }
}

fn skip_spaces(chars: &[char], i: &mut usize) {
    while chars.get(*i) == Some(&' ') {
        *i += 1;
    }
}

fn parse_ava(chars: &[char], i: &mut usize) -> Result<Ava, String> {
    skip_spaces(chars, i);
    let start = *i;
    while let Some(&c) = chars.get(*i) {
        if c == '=' || c == ',' || c == '+' {
            break;
        }
        *i += 1;
    }
    let attr: String = chars[start..*i]
        .iter()
        .collect::<String>()
        .trim_end()
        .to_string();
    if chars.get(*i) != Some(&'=') {
        return Err(if attr.is_empty() {
            "empty RDN in DN (two commas in a row, or a comma at an end?)".to_string()
        } else {
            format!("{attr:?} has no '=' (a DN is attr=value,attr=value,...)")
        });
    }
    if !(is_descriptor(&attr) || is_numeric_oid(&attr)) {
        return Err(format!("{attr:?} is not an attribute type"));
    }
    *i += 1;
    skip_spaces(chars, i);
    if chars.get(*i) == Some(&'#') {
        let start = *i;
        *i += 1;
        while chars.get(*i).is_some_and(|c| c.is_ascii_hexdigit()) {
            *i += 1;
        }
        let hex = *i - start - 1;
        skip_spaces(chars, i);
        if hex == 0 || hex & 1 == 1 || !matches!(chars.get(*i), None | Some(',') | Some('+')) {
            return Err(format!("bad #hex value of {attr}"));
        }
        let value: String = chars[start..start + 1 + hex].iter().collect();
        return Ok(Ava {
            attr,
            value,
            ber: true,
        });
    }
    let mut bytes: Vec<u8> = Vec::new();
    // Length of `bytes` up to the last character that was escaped or not a
    // space: unescaped trailing spaces are not part of the value.
    let mut significant = 0;
    while let Some(&c) = chars.get(*i) {
        match c {
            ',' | '+' => break,
            '\\' => {
                let next = chars.get(*i + 1).copied();
                match next {
                    Some(n) if " \"#+,;<=>\\".contains(n) => {
                        bytes.push(n as u8);
                        *i += 2;
                    }
                    Some(h) if h.is_ascii_hexdigit() => {
                        let l = chars.get(*i + 2).copied().filter(char::is_ascii_hexdigit);
                        let Some(l) = l else {
                            return Err(format!("bad escape in the value of {attr}: \\ needs two hex digits or one of  \"#+,;<=>\\"));
                        };
                        let byte = (h.to_digit(16).unwrap_or(0) * 16 + l.to_digit(16).unwrap_or(0)) as u8;
                        bytes.push(byte);
                        *i += 3;
                    }
                    _ => return Err(format!("bad escape in the value of {attr}: \\ must be followed by two hex digits or one of  \"#+,;<=>\\")),
                }
                significant = bytes.len();
            }
            '"' | ';' | '<' | '>' | '\0' => {
                return Err(format!(
                    "{c:?} must be escaped in the value of {attr} (write \\{c})"
                ));
            }
            c => {
                let mut buf = [0u8; 4];
                bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                if c != ' ' {
                    significant = bytes.len();
                }
                *i += 1;
            }
        }
    }
    bytes.truncate(significant);
    let value = String::from_utf8(bytes)
        .map_err(|_| format!("the escapes in the value of {attr} are not UTF-8"))?;
    if value.is_empty() {
        return Err(format!("empty value for {attr}"));
    }
    Ok(Ava {
        attr,
        value,
        ber: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NASTY: &str = "a,b+c=d*)(uid=*";

    fn round_trip(value: &str) {
        let dn = format!("uid={},ou=people,dc=example,dc=com", escape_dn_value(value));
        let parsed = parse_dn(&dn).unwrap_or_else(|e| panic!("{dn:?} does not parse: {e}"));
        assert_eq!(
            parsed.len(),
            4,
            "{dn:?} split into the wrong number of RDNs"
        );
        assert_eq!(parsed[0].len(), 1, "{dn:?} has a multi-valued RDN");
        assert_eq!(parsed[0][0].value, value, "{dn:?}");
    }

    #[test]
    fn dn_escape_of_the_nasty_string() {
        assert_eq!(escape_dn_value(NASTY), r"a\,b\+c\=d*)(uid\=*");
        round_trip(NASTY);
    }

    #[test]
    fn dn_escape_of_leading_trailing_and_controls() {
        assert_eq!(escape_dn_value(" #x "), r"\ #x\ ");
        assert_eq!(escape_dn_value("#a#"), r"\#a#");
        assert_eq!(escape_dn_value("a\0b\nc"), r"a\00b\0ac");
        assert_eq!(escape_dn_value(r#"q"<>;\"#), r#"q\"\<\>\;\\"#);
        assert_eq!(escape_dn_value(" "), r"\ ");
        for v in [
            " ",
            "  ",
            "#",
            " lead",
            "trail ",
            "a\0b",
            "\\",
            "Müller, Jörg",
            "x\u{7f}y",
            "=",
            "日本",
        ] {
            round_trip(v);
        }
    }

    #[test]
    fn filter_escape() {
        assert_eq!(escape_filter_value(NASTY), r"a,b+c=d\2a\29\28uid=\2a");
        assert_eq!(escape_filter_value("a\\b\0"), r"a\5cb\00");
        assert_eq!(escape_filter_value("Jörg"), "Jörg");
    }

    #[test]
    fn parse_dn_tolerates_spaces_and_normalises() {
        let dn = parse_dn("ou=people, dc=example ,dc=com").unwrap();
        assert_eq!(dn_to_string(&dn), "ou=people,dc=example,dc=com");
        let dn = parse_dn(r"cn=Smith\, John+uid=js,o=x\20").unwrap();
        assert_eq!(dn[0][0].value, "Smith, John");
        assert_eq!(dn[0][1].attr, "uid");
        assert_eq!(dn[1][0].value, "x ");
        assert_eq!(dn_to_string(&dn), r"cn=Smith\, John+uid=js,o=x\ ");
        let dn = parse_dn("cn=#04024869,dc=x").unwrap();
        assert!(dn[0][0].ber);
        assert_eq!(dn_to_string(&dn), "cn=#04024869,dc=x");
        assert_eq!(parse_dn("").unwrap().len(), 0);
        assert_eq!(parse_dn(r"cn=J\C3\B6rg").unwrap()[0][0].value, "Jörg");
    }

    #[test]
    fn parse_dn_rejects_bad_dns() {
        for (dn, needle) in [
            ("ou=people,,dc=com", "empty RDN"),
            ("ou=people,dc", "no '='"),
            ("1ou=x", "not an attribute type"),
            ("ou=", "empty value"),
            ("ou=a;b", "must be escaped"),
            (r"ou=a\q", "bad escape"),
            (r"ou=a\4", "bad escape"),
            (r"ou=\ff", "not UTF-8"),
            ("ou=#abc", "bad #hex"),
            ("ou=people,", "empty RDN"),
        ] {
            let err = parse_dn(dn).expect_err(dn);
            assert!(err.contains(needle), "{dn}: {err}");
        }
    }

    #[test]
    fn attribute_descriptions() {
        for ok in [
            "cn",
            "userCertificate;binary",
            "description;lang-de",
            "2.5.4.3",
            "x-custom-1",
        ] {
            assert!(is_attribute_description(ok), "{ok}");
        }
        for bad in ["", "1cn", "c n", "cn;", "2.05.4", "cn=", "mail.work", "ö"] {
            assert!(!is_attribute_description(bad), "{bad}");
        }
    }
}
