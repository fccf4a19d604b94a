//! Pure: what a directory's schema lets an attribute hold (RFC 4517
//! syntaxes, RFC 4512 length bounds), so a request whose value the
//! directory would refuse gets 400 at once instead of a parked entry later.
//!
//! [`Syntax`] is the SYNTAX of an attribute type (`1.3.6.1.4.1.1466.115.
//! 121.1.26` with an optional bound `{256}`); [`check_value`] says in plain
//! words what is wrong with a value; [`AttributeSyntaxes`] resolves an
//! attribute's effective syntax through SUP (`cn` has no SYNTAX of its own
//! in OpenLDAP's schema: it inherits `name`'s).
//!
//! Which servers enforce what (measured on OpenLDAP 2.5 with back-mdb):
//! - slapd checks the syntax of every value (a non-ASCII `mail` gets
//!   invalidAttributeSyntax (21), so does a `telephoneNumber` with `€`), but
//!   not `{N}` bounds: a 300-character `mail` and a 3,000-character `uid`
//!   outside the RDN were stored.
//! - What refuses a long `uid` is back-mdb: the RDN is stored twice (as
//!   sent and normalised) in one LMDB dupsort item, limited to 511 bytes
//!   with 20 bytes of overhead, so `rdn` + `normalised rdn` must fit in 491
//!   bytes; beyond that slapd answers other (80) with no text. With ASCII
//!   values, `uid=` + 241 characters is the longest RDN accepted, whatever
//!   the parent DN. [`check_rdn_length`] checks that limit.
//! - Active Directory enforces `rangeUpper` (constraintViolation 19), but
//!   does not publish it in `attributeTypes` (it lives in the schema
//!   partition's attributeSchema entries), so a bound seen here is
//!   stricter than slapd and says nothing about AD.
//!
//! Architecture invariant: no I/O; it knows the DN parser (`crate::dn`)
//! and nothing else of the daemon.

use std::collections::{HashMap, HashSet};
use std::fmt;

/// The SYNTAX of an attribute type: its OID and the optional `{N}` upper
/// bound, in characters (RFC 4512 §4.1.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Syntax {
    pub oid: String,
    pub max_len: Option<usize>,
}

const PREFIX: &str = "1.3.6.1.4.1.1466.115.121.1.";

/// The syntaxes [`check_value`] knows, by the last arc of their OID under
/// `1.3.6.1.4.1.1466.115.121.1` (RFC 4517 §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Boolean,
    CountryString,
    Dn,
    DirectoryString,
    GeneralizedTime,
    Ia5String,
    Integer,
    NumericString,
    Oid,
    OctetString,
    PostalAddress,
    PrintableString,
    TelephoneNumber,
    /// Any other syntax: every value is accepted.
    Other,
}

impl Kind {
    /// The syntax's name as RFC 4517 writes it, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Boolean => "Boolean",
            Kind::CountryString => "Country String",
            Kind::Dn => "DN",
            Kind::DirectoryString => "Directory String",
            Kind::GeneralizedTime => "Generalized Time",
            Kind::Ia5String => "IA5String",
            Kind::Integer => "Integer",
            Kind::NumericString => "Numeric String",
            Kind::Oid => "OID",
            Kind::OctetString => "Octet String",
            Kind::PostalAddress => "Postal Address",
            Kind::PrintableString => "Printable String",
            Kind::TelephoneNumber => "Telephone Number",
            Kind::Other => "an unknown syntax",
        }
    }
}

impl Syntax {
    /// From the value of SYNTAX in an attribute type definition:
    /// `1.3.6.1.4.1.1466.115.121.1.15{256}`, quoted or not (Active
    /// Directory quotes it). A bound that is not a number is ignored.
    pub fn parse(spec: &str) -> Syntax {
        let spec = spec.trim().trim_matches('\'');
        match spec.split_once('{') {
            Some((oid, rest)) => Syntax {
                oid: oid.trim().to_string(),
                max_len: rest.trim_end_matches('}').trim().parse().ok(),
            },
            None => Syntax {
                oid: spec.to_string(),
                max_len: None,
            },
        }
    }

    /// The same syntax without its bound (for servers known not to
    /// enforce bounds, if the caller chooses to trust the server only).
    pub fn unbounded(&self) -> Syntax {
        Syntax {
            oid: self.oid.clone(),
            max_len: None,
        }
    }

    pub fn kind(&self) -> Kind {
        match self.oid.strip_prefix(PREFIX) {
            Some("7") => Kind::Boolean,
            Some("11") => Kind::CountryString,
            Some("12") => Kind::Dn,
            Some("15") => Kind::DirectoryString,
            Some("24") => Kind::GeneralizedTime,
            Some("26") => Kind::Ia5String,
            Some("27") => Kind::Integer,
            Some("36") => Kind::NumericString,
            Some("38") => Kind::Oid,
            Some("40") => Kind::OctetString,
            Some("41") => Kind::PostalAddress,
            Some("44") => Kind::PrintableString,
            Some("50") => Kind::TelephoneNumber,
            _ => Kind::Other,
        }
    }
}

/// What is wrong with a value, in words an operator can act on. The
/// caller names the attribute: "name.familyName (LDAP sn) " + this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyntaxProblem {
    /// The syntax does not allow the empty string.
    Empty { syntax: &'static str },
    /// Longer than the `{N}` bound.
    TooLong { len: usize, max: usize },
    /// An IA5String (ASCII) value with a non-ASCII character.
    NotAscii { ch: char },
    /// A character outside the syntax's repertoire.
    CharNotAllowed {
        syntax: &'static str,
        ch: char,
        allowed: &'static str,
    },
    /// The value does not have the syntax's shape.
    Malformed {
        syntax: &'static str,
        expected: &'static str,
    },
    /// The RDN is longer than the directory can store (see
    /// [`check_rdn_length`]).
    RdnTooLong { bytes: usize, max: usize },
}

impl fmt::Display for SyntaxProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyntaxProblem::Empty { syntax } => {
                write!(f, "is empty, which {syntax} does not allow")
            }
            SyntaxProblem::TooLong { len, max } => write!(
                f,
                "is {len} characters long; the directory allows at most {max}"
            ),
            SyntaxProblem::NotAscii { ch } => write!(
                f,
                "contains non-ASCII characters (the first is {ch:?}), which IA5String does not allow"
            ),
            SyntaxProblem::CharNotAllowed {
                syntax,
                ch,
                allowed,
            } => write!(
                f,
                "contains {ch:?}, which {syntax} does not allow (only {allowed})"
            ),
            SyntaxProblem::Malformed { syntax, expected } => {
                write!(f, "is not a valid {syntax}: expected {expected}")
            }
            SyntaxProblem::RdnTooLong { bytes, max } => write!(
                f,
                "makes an RDN of {bytes} bytes (as sent plus as the directory normalises it); \
                 OpenLDAP's mdb backend stores at most {max}"
            ),
        }
    }
}

impl std::error::Error for SyntaxProblem {}

const PRINTABLE: &str = "letters, digits, space and ' ( ) + , - . / : = ?";

/// RFC 4517 §3.2 PrintableCharacter.
fn is_printable(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '\'' | '(' | ')' | '+' | ',' | '-' | '.' | '/' | ':' | '=' | '?' | ' '
        )
}

/// Checks `value` against `syntax`: the `{N}` bound first (in characters),
/// then the syntax's own rules. Unknown syntaxes accept everything.
pub fn check_value(syntax: &Syntax, value: &str) -> Result<(), SyntaxProblem> {
    if let Some(max) = syntax.max_len {
        let len = value.chars().count();
        if len > max {
            return Err(SyntaxProblem::TooLong { len, max });
        }
    }
    let kind = syntax.kind();
    let name = kind.name();
    let malformed = |expected| {
        Err(SyntaxProblem::Malformed {
            syntax: name,
            expected,
        })
    };
    let not_empty = || {
        if value.is_empty() {
            Err(SyntaxProblem::Empty { syntax: name })
        } else {
            Ok(())
        }
    };
    let only = |ok: fn(char) -> bool, allowed| match value.chars().find(|&c| !ok(c)) {
        Some(ch) => Err(SyntaxProblem::CharNotAllowed {
            syntax: name,
            ch,
            allowed,
        }),
        None => Ok(()),
    };
    match kind {
        Kind::Other | Kind::OctetString => Ok(()),
        Kind::DirectoryString => not_empty(),
        Kind::Ia5String => match value.chars().find(|c| !c.is_ascii()) {
            Some(ch) => Err(SyntaxProblem::NotAscii { ch }),
            None => Ok(()),
        },
        Kind::PrintableString | Kind::TelephoneNumber => {
            not_empty()?;
            only(is_printable, PRINTABLE)
        }
        Kind::NumericString => {
            not_empty()?;
            only(|c| c.is_ascii_digit() || c == ' ', "digits and spaces")
        }
        Kind::CountryString => {
            only(is_printable, PRINTABLE)?;
            if value.chars().count() == 2 {
                Ok(())
            } else {
                malformed("a two-letter ISO 3166 country code such as \"FR\"")
            }
        }
        Kind::Boolean => {
            if value == "TRUE" || value == "FALSE" {
                Ok(())
            } else {
                malformed("TRUE or FALSE, in capitals")
            }
        }
        Kind::Integer => {
            let digits = value.strip_prefix('-').unwrap_or(value);
            let ok = !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
                && (digits == "0" && !value.starts_with('-') || !digits.starts_with('0'));
            if ok {
                Ok(())
            } else {
                malformed("a whole number without leading zeros, such as 42 or -7")
            }
        }
        Kind::GeneralizedTime => {
            if is_generalized_time(value) {
                Ok(())
            } else {
                malformed("a time such as 20260131235959Z or 20260131235959.5+0100")
            }
        }
        Kind::Oid => {
            let numeric = !value.is_empty()
                && value.split('.').all(|p| {
                    !p.is_empty()
                        && p.bytes().all(|b| b.is_ascii_digit())
                        && (p == "0" || !p.starts_with('0'))
                });
            if numeric || crate::dn::is_descriptor(value) {
                Ok(())
            } else {
                malformed("a name such as \"person\" or a dotted number such as 2.5.6.6")
            }
        }
        Kind::PostalAddress => {
            if value.split('$').all(is_postal_line) {
                Ok(())
            } else {
                malformed(
                    "lines separated by $, none empty, with $ and \\ written as \\24 and \\5C",
                )
            }
        }
        Kind::Dn => match crate::dn::parse_dn(value) {
            Ok(_) => Ok(()),
            Err(_) => {
                malformed("a distinguished name such as uid=carol,ou=people,dc=example,dc=com")
            }
        },
    }
}

/// RFC 4517 §3.3.28: a non-empty line in which `\` only starts `\24` or
/// `\5C` (case-insensitive hex).
fn is_postal_line(line: &str) -> bool {
    if line.is_empty() {
        return false;
    }
    let mut rest = line;
    while let Some(i) = rest.find('\\') {
        let esc = rest.get(i + 1..i + 3).unwrap_or("");
        if !esc.eq_ignore_ascii_case("24") && !esc.eq_ignore_ascii_case("5c") {
            return false;
        }
        rest = &rest[i + 3..];
    }
    true
}

/// RFC 4517 §3.3.13: `century year month day hour [minute [second /
/// leap-second]] [fraction] g-time-zone`, checked for shape and ranges
/// (not for days per month).
fn is_generalized_time(v: &str) -> bool {
    let b = v.as_bytes();
    let two = |i: usize| -> Option<u32> {
        let s = b.get(i..i + 2)?;
        s.iter()
            .all(u8::is_ascii_digit)
            .then(|| u32::from(s[0] - b'0') * 10 + u32::from(s[1] - b'0'))
    };
    // yyyy mm dd hh
    if two(0).is_none() || two(2).is_none() {
        return false;
    }
    let (Some(month), Some(day), Some(hour)) = (two(4), two(6), two(8)) else {
        return false;
    };
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 {
        return false;
    }
    let mut i = 10;
    if let Some(minute) = two(i) {
        if minute > 59 {
            return false;
        }
        i += 2;
        if let Some(second) = two(i) {
            if second > 60 {
                return false;
            }
            i += 2;
        }
    }
    if matches!(b.get(i), Some(b'.' | b',')) {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match b.get(i) {
        Some(b'Z') => i + 1 == b.len(),
        Some(b'+' | b'-') => {
            let Some(h) = two(i + 1) else { return false };
            if h > 23 {
                return false;
            }
            match b.len() - (i + 3) {
                0 => true,
                2 => two(i + 3).is_some_and(|m| m <= 59),
                _ => false,
            }
        }
        _ => false,
    }
}

/// The bytes OpenLDAP's back-mdb has for one RDN: as sent plus as
/// normalised, at most 511 (LMDB's limit for a dupsort item) less 20 of
/// its own (2.5 and 2.6 builds; measured, see the module comment).
pub const OPENLDAP_MDB_RDN_BYTES: usize = 491;

/// Whether an entry named `attr=value` (one AVA) can be stored by
/// OpenLDAP's back-mdb. `attr=value` is counted as written in the DN
/// (escaped), and the normalised form is estimated as the same length with
/// the value prepared for caseIgnoreMatch ([`crate::ldapprep`]); a
/// conservative estimate for case-exact attributes, exact for the usual
/// `uid` and `cn`.
pub fn check_rdn_length(attr: &str, value: &str) -> Result<(), SyntaxProblem> {
    let sent = attr.len() + 1 + crate::dn::escape_dn_value(value).len();
    let normalised =
        attr.len() + 1 + crate::dn::escape_dn_value(&crate::ldapprep::equality_key(value)).len();
    let bytes = sent + normalised;
    if bytes > OPENLDAP_MDB_RDN_BYTES {
        Err(SyntaxProblem::RdnTooLong {
            bytes,
            max: OPENLDAP_MDB_RDN_BYTES,
        })
    } else {
        Ok(())
    }
}

/// Attribute types by every name and OID (lowercased), with their own
/// SYNTAX and SUP, to find an attribute's effective syntax.
#[derive(Debug, Default, Clone)]
pub struct AttributeSyntaxes {
    types: HashMap<String, TypeEntry>,
}

#[derive(Debug, Clone)]
struct TypeEntry {
    syntax: Option<Syntax>,
    sup: Option<String>,
}

impl AttributeSyntaxes {
    pub fn new() -> AttributeSyntaxes {
        AttributeSyntaxes::default()
    }

    /// Adds one attribute type, as `check::parse_attribute_type` reads it:
    /// its names, its OID, its SUP and its SYNTAX (either may be absent).
    pub fn insert(&mut self, names: &[String], oid: &str, sup: Option<&str>, syntax: Option<&str>) {
        let entry = TypeEntry {
            syntax: syntax.map(Syntax::parse),
            sup: sup.map(str::to_string),
        };
        for n in names.iter().map(String::as_str).chain(std::iter::once(oid)) {
            if !n.is_empty() {
                self.types.insert(n.to_ascii_lowercase(), entry.clone());
            }
        }
    }

    /// The syntax of `attr` (a name or OID, any case): its own SYNTAX, or
    /// its superior's, followed up the SUP chain. `None` when the type is
    /// unknown or no type in its chain has a SYNTAX (a loop in SUP ends
    /// the search too).
    pub fn syntax_of(&self, attr: &str) -> Option<&Syntax> {
        let mut seen = HashSet::new();
        let mut name = attr.to_ascii_lowercase();
        loop {
            if !seen.insert(name.clone()) {
                return None;
            }
            let entry = self.types.get(&name)?;
            if let Some(s) = &entry.syntax {
                return Some(s);
            }
            name = entry.sup.as_deref()?.to_ascii_lowercase();
        }
    }

    /// Checks `value` for `attr`; an attribute whose syntax is unknown
    /// accepts everything.
    pub fn check(&self, attr: &str, value: &str) -> Result<(), SyntaxProblem> {
        match self.syntax_of(attr) {
            Some(s) => check_value(s, value),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syn(last: &str) -> Syntax {
        Syntax::parse(&format!("{PREFIX}{last}"))
    }

    fn ok(last: &str, v: &str) -> bool {
        check_value(&syn(last), v).is_ok()
    }

    #[test]
    fn parses_oid_and_bound() {
        assert_eq!(
            Syntax::parse("1.3.6.1.4.1.1466.115.121.1.15{256}"),
            Syntax {
                oid: "1.3.6.1.4.1.1466.115.121.1.15".into(),
                max_len: Some(256)
            }
        );
        let ad = Syntax::parse("'1.3.6.1.4.1.1466.115.121.1.26'");
        assert_eq!(ad.kind(), Kind::Ia5String);
        assert_eq!(ad.max_len, None);
        assert_eq!(Syntax::parse("1.2.3{x}").max_len, None);
        assert_eq!(Syntax::parse("1.2.3").kind(), Kind::Other);
    }

    #[test]
    fn messages_say_what_is_wrong() {
        let e = check_value(&syn("26"), "jörg@example.com").unwrap_err();
        assert_eq!(
            e.to_string(),
            "contains non-ASCII characters (the first is 'ö'), which IA5String does not allow"
        );
        let e = check_value(&syn("15{256}"), &"a".repeat(300)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "is 300 characters long; the directory allows at most 256"
        );
        assert_eq!(
            check_value(&syn("15"), "").unwrap_err().to_string(),
            "is empty, which Directory String does not allow"
        );
        let e = check_value(&syn("50"), "+1 555 €").unwrap_err().to_string();
        assert!(
            e.starts_with("contains '€', which Telephone Number does not allow"),
            "{e}"
        );
        let e = check_value(&syn("7"), "true").unwrap_err().to_string();
        assert_eq!(
            e,
            "is not a valid Boolean: expected TRUE or FALSE, in capitals"
        );
    }

    #[test]
    fn bounds_count_characters_not_bytes() {
        assert!(ok("15{3}", "été"));
        assert!(!ok("15{3}", "étés"));
    }

    #[test]
    fn each_syntax() {
        // (syntax, accepted, refused)
        let cases: &[(&str, &[&str], &[&str])] = &[
            ("26", &["", "carol@example.com", "\u{7f}"], &["é", "ｃ"]),
            ("15", &["x", "ｃａｒｏｌ", " "], &[""]),
            (
                "44",
                &["Carol (ops) + 1, a-b.c/d:e=f?'"],
                &["", "a@b", "é", "a_b"],
            ),
            ("36", &["123 456", " "], &["", "12a", "-1"]),
            (
                "27",
                &["0", "42", "-7", "1234567890123456789012"],
                &["", "-", "007", "-0", "+1", "1.5", " 1"],
            ),
            ("7", &["TRUE", "FALSE"], &["true", "yes", "1", ""]),
            ("11", &["FR", "us"], &["FRA", "F", "", "é1"]),
            ("50", &["+1 555 0100", "abc"], &["", "+1 555 €", "a@b"]),
            (
                "24",
                &[
                    "20260131235959Z",
                    "2026013123Z",
                    "202601312359Z",
                    "20260131235960Z",
                    "20260131235959.5Z",
                    "20260131235959,123+0100",
                    "2026013123-05",
                ],
                &[
                    "",
                    "20261331235959Z",
                    "20260132235959Z",
                    "20260131245959Z",
                    "20260131236059Z",
                    "20260131235959",
                    "20260131235959.Z",
                    "20260131235959+01000",
                    "2026013Z",
                    "20260131235959z",
                ],
            ),
            ("40", &["", "anything é \u{0}"], &[]),
            (
                "41",
                &["1 Main St$Springfield", "a \\24 b$c\\5cd"],
                &["", "a$$b", "a$", "a\\b", "a\\2"],
            ),
            (
                "12",
                &["", "uid=carol,ou=people,dc=example,dc=com", "cn=a\\,b,dc=x"],
                &["uid=carol,ou=people,", "nonsense", "=x"],
            ),
            (
                "38",
                &["person", "2.5.6.6", "0.9"],
                &["", "2..5", "01.2", "-x", "a b"],
            ),
            ("999", &["", "anything"], &[]),
        ];
        for (s, good, bad) in cases {
            for v in *good {
                assert!(
                    ok(s, v),
                    "{s}: {v:?} should be accepted: {:?}",
                    check_value(&syn(s), v)
                );
            }
            for v in *bad {
                assert!(!ok(s, v), "{s}: {v:?} should be refused");
            }
        }
        assert!(
            check_value(&Syntax::parse("2.5.5.12"), "").is_ok(),
            "unknown OIDs accept everything"
        );
    }

    #[test]
    fn syntax_is_inherited_through_sup() {
        let mut t = AttributeSyntaxes::new();
        t.insert(
            &["name".into()],
            "2.5.4.41",
            None,
            Some("1.3.6.1.4.1.1466.115.121.1.15{32768}"),
        );
        t.insert(
            &["cn".into(), "commonName".into()],
            "2.5.4.3",
            Some("name"),
            None,
        );
        t.insert(
            &["mail".into(), "rfc822Mailbox".into()],
            "0.9.2342.19200300.100.1.3",
            None,
            Some("1.3.6.1.4.1.1466.115.121.1.26{256}"),
        );
        t.insert(&["loopA".into()], "9.1", Some("loopB"), None);
        t.insert(&["loopB".into()], "9.2", Some("loopA"), None);
        t.insert(&["orphan".into()], "9.3", Some("missing"), None);
        assert_eq!(t.syntax_of("CommonName").unwrap().max_len, Some(32768));
        assert_eq!(
            t.syntax_of("2.5.4.3").unwrap().kind(),
            Kind::DirectoryString
        );
        assert_eq!(
            t.syntax_of("rfc822mailbox").unwrap().kind(),
            Kind::Ia5String
        );
        assert!(t.syntax_of("loopA").is_none());
        assert!(t.syntax_of("orphan").is_none());
        assert!(t.syntax_of("unknown").is_none());
        assert!(t.check("mail", "jörg@example.com").is_err());
        assert!(t.check("cn", "jörg").is_ok());
        assert!(t.check("cn", "").is_err());
        assert!(t.check("unknown", "").is_ok());
    }

    #[test]
    fn rdn_length_matches_what_slapd_mdb_stored() {
        // Measured: uid= + 241 ASCII characters stored, 242 refused (80);
        // cn= + 242 stored, 243 refused; uid= + 120 'é' stored, 121 refused;
        // uid= + 82 fullwidth letters (246 bytes, normalised to 82) stored.
        assert!(check_rdn_length("uid", &"a".repeat(241)).is_ok());
        assert!(check_rdn_length("uid", &"a".repeat(242)).is_err());
        assert!(check_rdn_length("uid", &"A".repeat(241)).is_ok());
        assert!(check_rdn_length("cn", &"g".repeat(242)).is_ok());
        assert!(check_rdn_length("cn", &"g".repeat(243)).is_err());
        assert!(check_rdn_length("uid", &"é".repeat(120)).is_ok());
        assert!(check_rdn_length("uid", &"é".repeat(121)).is_err());
        assert!(check_rdn_length("uid", &"ｊ".repeat(82)).is_ok());
        let e = check_rdn_length("uid", &"a".repeat(300))
            .unwrap_err()
            .to_string();
        assert!(e.contains("608 bytes") && e.contains("at most 491"), "{e}");
    }
}
