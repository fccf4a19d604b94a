//! Pure: LDAP string preparation for equality matching (RFC 4518), so
//! that the daemon calls two names equal exactly when the directory does.
//!
//! A directory compares `uid`, `cn` or `mail` values with caseIgnoreMatch
//! (or caseIgnoreIA5Match), which first *prepares* both values: map
//! (invisible characters to nothing, every kind of space to SPACE, case
//! folding), normalise to Unicode NFKC, refuse prohibited code points, and
//! make spaces insignificant at the ends and in runs. So `carol`, `carol `,
//! `ＣＡＲＯＬ` and `CAROL` are one name to the directory, and must be one
//! name to the store's uniqueness indexes.
//!
//! [`prepare`] follows the RFC and fails on a prohibited code point (the
//! directory's matching would be Undefined); [`equality_key`] always gives
//! a key, for indexes. Values are stored and written as the IdP sent
//! them: these functions only compute what to compare.
//!
//! Architecture invariant: no I/O, no tokio, hyper, ldap3 or sled; only
//! the Unicode tables of `unicode-normalization` and `stringprep`.

use std::fmt;

use unicode_normalization::UnicodeNormalization;

/// The matching rule whose preparation to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// caseIgnoreMatch (Directory String: `uid`, `cn`, `displayName`) and
    /// caseIgnoreIA5Match (`mail`): case folded.
    CaseIgnore,
    /// caseExactMatch / caseExactIA5Match: not case folded.
    CaseExact,
}

/// Why a value cannot be prepared: RFC 4518 §2.4 prohibits the code point,
/// and the directory's matching rule would evaluate to Undefined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrepError {
    /// `ch` is unassigned in Unicode 3.2 (the RFC's repertoire), private
    /// use, a non-character, deprecated (RFC 3454 table C.8) or the
    /// REPLACEMENT CHARACTER.
    Prohibited { ch: char, reason: &'static str },
}

impl fmt::Display for PrepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrepError::Prohibited { ch, reason } => write!(
                f,
                "contains U+{:04X}, {reason}, which LDAP matching (RFC 4518) does not allow",
                *ch as u32
            ),
        }
    }
}

impl std::error::Error for PrepError {}

/// Prepares `value` for equality matching under `rule` (RFC 4518 §2),
/// giving a string that compares with `==` as the directory compares.
///
/// Insignificant spaces (§2.6.1) are represented in the simplest form that
/// gives the same equality: leading and trailing spaces removed, each inner
/// run of spaces one space; a value of only spaces (or empty) is `""`.
/// (The RFC's own form, one space at each end and two inside, only matters
/// for substring matching, which this is not for.)
///
/// Departures from the RFC, each in the direction of calling more names
/// equal, because the daemon must never see two names where the directory
/// sees one:
///
/// - The map and normalise steps are repeated until nothing changes (a
///   few rounds at most). The RFC's one round is stable for Unicode 3.2,
///   but NFKC from a current Unicode can produce capitals the 3.2 folding
///   table never saw (U+1F130 SQUARED LATIN CAPITAL LETTER A becomes `A`);
///   a second round folds them, so preparing the result again changes
///   nothing.
/// - The value is put in NFKC before it is mapped. Folding and NFKC do not
///   commute for a few combining sequences (U+037A YPOGEGRAMMENI + U+0300
///   folds to `ὶ`, its NFKC form SPACE U+0300 U+0345 to SPACE U+0300 `ι`);
///   normalising first gives both one key, as OpenLDAP does (it decomposes
///   before it folds).
/// - Where OpenLDAP calls names equal that the RFC does not, so does this:
///   `İ` folds to `i` (the RFC gives `i` U+0307), and a SPACE before a
///   combining mark is an ordinary space (the RFC makes it part of a
///   character; slapd makes `´`, SPACE U+0301 and U+0301 one name).
///
/// Compared with slapd 2.5 (700 random confusable strings, each searched
/// for with an equality filter), every name slapd equates gets one key.
/// The other way round the key is coarser than slapd, where slapd does not
/// follow the RFC (`Straße`/`STRASSE`, final sigma, tab, soft hyphen, zero
/// width space, `Ⅻ`/`xii`, `ℌ`/`h`, `ᾳ`/`αι`): such names get a 409 the
/// directory would not have given, never a merged entry.
pub fn prepare(value: &str, rule: Rule) -> Result<String, PrepError> {
    let s = map_normalize(value, rule);
    if let Some((ch, reason)) = s.chars().find_map(|c| prohibited(c).map(|r| (c, r))) {
        return Err(PrepError::Prohibited { ch, reason });
    }
    Ok(insignificant_spaces(&s))
}

/// The key under which uniqueness indexes compare userName, displayName
/// and RDN values: `prepare(value, Rule::CaseIgnore)`.
///
/// A value the RFC prohibits (an emoji is unassigned in Unicode 3.2, a
/// private-use character) still gets a deterministic key: the same steps
/// with the prohibition skipped, so the prohibited code points stay in the
/// key as they are. Such a key cannot equal the key of any value that
/// prepares cleanly (it contains a code point no clean key contains), and
/// two such values share a key exactly when they differ only in case,
/// width or spacing elsewhere, which is as close to the directory as
/// anything can be: the directory's own answer for them is Undefined.
///
/// Keys depend on the Unicode version of `unicode-normalization` for code
/// points assigned after 3.2; an index built from them should be rebuilt
/// when [`key_version`] changes.
pub fn equality_key(value: &str) -> String {
    insignificant_spaces(&map_normalize(value, Rule::CaseIgnore))
}

/// Changed whenever [`equality_key`] may give a different key for some
/// value: this module's own version, and the Unicode version of the NFKC
/// tables (which decide keys of code points assigned after Unicode 3.2).
/// A store that keeps keys records it and rebuilds its indexes when it
/// differs at start.
pub fn key_version() -> String {
    let (major, minor, patch) = unicode_normalization::UNICODE_VERSION;
    format!("ldapprep-1/unicode-{major}.{minor}.{patch}")
}

/// §2.2 Map and §2.3 Normalize, repeated until stable, on the value in
/// NFKC (see [`prepare`]).
fn map_normalize(value: &str, rule: Rule) -> String {
    let nfkc = value.nfkc().collect::<String>();
    let mut s = map_once(&nfkc, rule).nfkc().collect::<String>();
    // Each round can only shrink what is left to fold; three more rounds
    // are far more than any known input needs.
    for _ in 0..3 {
        let next = map_once(&s, rule).nfkc().collect::<String>();
        if next == s {
            break;
        }
        s = next;
    }
    s
}

/// One pass of RFC 4518 §2.2.
fn map_once(value: &str, rule: Rule) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if mapped_to_nothing(c) {
            continue;
        }
        if mapped_to_space(c) {
            out.push(' ');
        } else if rule == Rule::CaseIgnore
            && (c == '\u{0130}' || c == '\u{0307}' && out.ends_with('i'))
        {
            // Dotted capital I: B.2 folds it to `i` + COMBINING DOT ABOVE,
            // OpenLDAP to `i`; `i` it is, and a dot above an `i` is dropped,
            // so both the RFC's and OpenLDAP's equal names share a key.
            if c == '\u{0130}' {
                out.push('i');
            }
        } else if rule == Rule::CaseIgnore {
            out.extend(stringprep::tables::case_fold_for_nfkc(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// §2.2: soft hyphens, joiners, variation selectors, the object
/// replacement character, zero width space, and every control code or
/// format character except those mapped to SPACE. The lists are the RFC's
/// own (it calls them complete); the RFC's "FF00-FE0F" for the variation
/// selectors is a typo for FE00-FE0F (Appendix A lists FE00-FE0F).
fn mapped_to_nothing(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{1806}' | '\u{034F}' | '\u{180B}'..='\u{180D}' | '\u{FE00}'..='\u{FE0F}'
        | '\u{FFFC}' | '\u{200B}'
        | '\u{0000}'..='\u{0008}' | '\u{000E}'..='\u{001F}' | '\u{007F}'..='\u{0084}'
        | '\u{0086}'..='\u{009F}' | '\u{06DD}' | '\u{070F}' | '\u{180E}' | '\u{200C}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2063}' | '\u{206A}'..='\u{206F}' | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFB}' | '\u{1D173}'..='\u{1D17A}' | '\u{E0001}' | '\u{E0020}'..='\u{E007F}')
}

/// §2.2: tab, line feed, vertical tab, form feed, carriage return, next
/// line, and every separator (Zs, Zl, Zp) but zero width space.
fn mapped_to_space(c: char) -> bool {
    matches!(c,
        '\u{0009}'..='\u{000D}' | '\u{0085}'
        | '\u{0020}' | '\u{00A0}' | '\u{1680}' | '\u{2000}'..='\u{200A}' | '\u{2028}'..='\u{2029}'
        | '\u{202F}' | '\u{205F}' | '\u{3000}')
}

/// §2.4: why `c` is prohibited, if it is. (Surrogates, table C.5, cannot
/// occur in a Rust `str`.)
fn prohibited(c: char) -> Option<&'static str> {
    use stringprep::tables as t;
    if t::unassigned_code_point(c) {
        Some("a code point unassigned in Unicode 3.2")
    } else if t::private_use(c) {
        Some("a private-use character")
    } else if t::non_character_code_point(c) {
        Some("a non-character")
    } else if t::change_display_properties_or_deprecated(c) {
        Some("a deprecated or display-changing character")
    } else if c == '\u{FFFD}' {
        Some("the replacement character")
    } else {
        None
    }
}

/// §2.6.1, in the equality-only form described at [`prepare`]: spaces at
/// the ends dropped, each inner run one space, whatever follows. (The RFC
/// counts a SPACE followed by a combining mark as a character; OpenLDAP
/// does not, and makes `´`, ` \u{301}` and `\u{301}` one name, and `a ´`
/// and `a´` another; so no space is special here.)
fn insignificant_spaces(s: &str) -> String {
    s.split(' ')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(s: &str) -> String {
        equality_key(s)
    }

    #[test]
    fn the_names_of_issue_12_collide() {
        let carol = key("carol");
        assert_eq!(carol, "carol");
        assert_eq!(key("carol "), carol);
        assert_eq!(key(" carol"), carol);
        assert_eq!(key("ｃａｒｏｌ"), carol);
        assert_eq!(key("CAROL"), carol);
        assert_eq!(key("ＣＡＲＯＬ"), carol);
        assert_eq!(key("car\u{00AD}ol"), carol, "soft hyphen");
        assert_eq!(key("car\u{200B}ol"), carol, "zero width space");
        assert_eq!(key("car  ol"), key("car ol"));
        assert_eq!(key("car\tol"), key("car ol"));
        assert_eq!(key("car\u{3000}ol"), key("car ol"), "ideographic space");
        assert_eq!(key("car\u{00A0}\u{2003} ol"), key("car ol"));
        assert_ne!(key("carol"), key("caro"));
        assert_ne!(key("car ol"), key("carol"));
    }

    #[test]
    fn rfc4518_examples() {
        // §2.6.1: "foo<SPACE>bar<SPACE><SPACE>" prepares to
        // "<SPACE>foo<SPACE><SPACE>bar<SPACE>"; in our equality form:
        assert_eq!(prepare("foo bar  ", Rule::CaseExact).unwrap(), "foo bar");
        // Only spaces (or nothing): all such values are equal.
        assert_eq!(prepare("   ", Rule::CaseIgnore).unwrap(), "");
        assert_eq!(prepare("", Rule::CaseIgnore).unwrap(), "");
        // A SPACE before a combining mark is a space like any other (the
        // RFC says otherwise; OpenLDAP agrees with this, see `prepare`).
        assert_eq!(
            prepare("a  \u{0301}", Rule::CaseExact).unwrap(),
            "a \u{0301}"
        );
        assert_eq!(prepare(" \u{0301}a", Rule::CaseExact).unwrap(), "\u{0301}a");
        assert_eq!(key("\u{00B4}"), key("\u{0301}"));
        assert_eq!(key("a \u{00B4}"), key("a\u{00B4}"));
    }

    #[test]
    fn case_exact_keeps_case_but_normalises() {
        assert_eq!(prepare("Carol", Rule::CaseExact).unwrap(), "Carol");
        assert_eq!(prepare("Ｃarol ", Rule::CaseExact).unwrap(), "Carol");
        assert_eq!(prepare("Carol", Rule::CaseIgnore).unwrap(), "carol");
    }

    #[test]
    fn unicode_folding_and_composition() {
        // B.2 folds ß to ss (full case folding), Σ and ς to σ.
        assert_eq!(key("Straße"), key("STRASSE"));
        assert_eq!(key("ΣΊΣΥΦΟΣ"), key("σίσυφος"));
        // NFKC: composed and decomposed é, the ligature ﬁ, the Kelvin sign.
        assert_eq!(key("e\u{0301}"), key("\u{00E9}"));
        assert_eq!(key("\u{FB01}n"), key("fin"));
        assert_eq!(key("\u{212A}"), key("k"));
        // Capitals produced by a newer NFKC are folded in a second round.
        assert_eq!(key("\u{1F130}"), key("a"));
        // Folding and NFKC do not commute here; normalising first gives
        // the value and its NFKC form one key (found by the property test).
        let s = "\u{037A}\u{0300}";
        assert_eq!(key(s), key(&s.nfkc().collect::<String>()));
    }

    #[test]
    fn key_version_names_the_unicode_tables() {
        assert!(key_version().starts_with("ldapprep-1/unicode-"));
    }

    #[test]
    fn dotted_capital_i_is_i_as_in_openldap() {
        assert_eq!(key("\u{0130}pek"), "ipek");
        assert_eq!(key("I\u{0307}pek"), "ipek");
        assert_eq!(key("i\u{0307}pek"), "ipek");
        assert_eq!(key("Ipek"), "ipek");
        assert_eq!(prepare("\u{0130}", Rule::CaseExact).unwrap(), "\u{0130}");
    }

    #[test]
    fn prohibited_code_points_fail_but_still_key() {
        for s in ["a\u{E000}", "\u{FFFD}", "x\u{FDD0}", "😀"] {
            let e = prepare(s, Rule::CaseIgnore).unwrap_err();
            assert!(e.to_string().contains("U+"), "{e}");
            // The key is deterministic and keeps folding the rest.
            assert_eq!(key(s), key(s));
            assert_eq!(key(&s.to_uppercase()), key(s));
            assert_eq!(key(&format!(" {s}  ")), key(s));
        }
        assert_eq!(key("Ｘ😀"), "x😀");
        assert_ne!(key("x😀"), key("x"));
    }

    /// Strings mixing what matters: ASCII letters in both cases, spaces of
    /// several kinds, fullwidth forms, combining marks, controls, and now
    /// and then anything at all.
    fn interesting() -> impl Strategy<Value = String> {
        let ch = prop_oneof![
            4 => proptest::char::range('a', 'z'),
            3 => proptest::char::range('A', 'Z'),
            3 => Just(' '),
            1 => prop_oneof![Just('\t'), Just('\u{00A0}'), Just('\u{3000}'), Just('\u{200B}')],
            1 => proptest::char::range('\u{FF21}', '\u{FF5A}'),
            1 => proptest::char::range('\u{0300}', '\u{036F}'),
            1 => proptest::char::range('\u{00C0}', '\u{024F}'),
            1 => proptest::char::range('\u{0370}', '\u{03FF}'),
            1 => any::<char>(),
        ];
        proptest::collection::vec(ch, 0..24).prop_map(|v| v.into_iter().collect())
    }

    proptest! {
        #[test]
        fn key_is_idempotent(s in interesting()) {
            let k = key(&s);
            prop_assert_eq!(key(&k), k.clone());
            if let Ok(p) = prepare(&s, Rule::CaseIgnore) {
                prop_assert_eq!(&p, &k);
                prop_assert_eq!(prepare(&p, Rule::CaseIgnore).unwrap(), p);
            }
            if let Ok(p) = prepare(&s, Rule::CaseExact) {
                prop_assert_eq!(prepare(&p, Rule::CaseExact).unwrap(), p);
            }
        }

        #[test]
        fn key_ignores_ascii_case(s in interesting()) {
            prop_assert_eq!(key(&s.to_ascii_uppercase()), key(&s));
            prop_assert_eq!(key(&s.to_ascii_lowercase()), key(&s));
        }

        #[test]
        fn key_ignores_outer_and_repeated_spaces(s in interesting()) {
            let k = key(&s);
            // Doubling every space.
            prop_assert_eq!(key(&s.replace(' ', "  ")), k.clone());
            prop_assert_eq!(key(&format!("  {s}")), k.clone());
            prop_assert_eq!(key(&format!("{s} \t ")), k);
        }

        #[test]
        fn key_is_nfkc_invariant(s in interesting()) {
            let nfkc: String = s.nfkc().collect();
            let nfd: String = s.nfd().collect();
            prop_assert_eq!(key(&nfkc), key(&s));
            prop_assert_eq!(key(&nfd), key(&s));
        }

        #[test]
        fn different_ascii_words_stay_different(a in "[a-z]{1,12}", b in "[a-z]{1,12}") {
            prop_assert_eq!(key(&a) == key(&b), a == b);
        }
    }
}
