//! SCIM filters (RFC 7644 §3.4.2.2): the grammar, parsing and printing.
//! Evaluation against a resource is in [`eval`](crate::scim::eval).
//!
//! Grammar handled (operators and keywords case-insensitive):
//!
//! ```text
//! FILTER    = attrExp / logExp / valuePath / *1"not" "(" FILTER ")"
//! logExp    = FILTER SP ("and" / "or") SP FILTER      ; "and" binds tighter
//! attrExp   = (attrPath SP "pr") / (attrPath SP compareOp SP compValue)
//! valuePath = attrPath "[" valFilter "]"               ; not nested
//! compValue = false / null / true / number / string    ; JSON literals
//! ```
//!
//! The parser is recursive descent with an explicit depth limit and an input
//! length limit, so hostile input cannot exhaust the stack.

use std::fmt;

use serde_json::Value;

use crate::scim::attr_path::AttrPath;
use crate::scim::error::ScimError;

pub const MAX_FILTER_LEN: usize = 8 * 1024;
/// Deepest nesting of parentheses, `not` and value paths accepted.
pub const MAX_FILTER_DEPTH: usize = 50;
/// Most comparisons (`attr op value`, `attr pr`, each `attr[...]`) one
/// filter may hold: a filter is evaluated against every resource it may
/// match, so its cost is bounded too.
pub const MAX_FILTER_TERMS: usize = 100;

/// RFC 7644 table 3 comparison operators (`pr` is [`Filter::Present`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CompareOp {
    pub const ALL: [CompareOp; 9] = [
        CompareOp::Eq,
        CompareOp::Ne,
        CompareOp::Co,
        CompareOp::Sw,
        CompareOp::Ew,
        CompareOp::Gt,
        CompareOp::Ge,
        CompareOp::Lt,
        CompareOp::Le,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "eq",
            CompareOp::Ne => "ne",
            CompareOp::Co => "co",
            CompareOp::Sw => "sw",
            CompareOp::Ew => "ew",
            CompareOp::Gt => "gt",
            CompareOp::Ge => "ge",
            CompareOp::Lt => "lt",
            CompareOp::Le => "le",
        }
    }

    fn from_word(w: &str) -> Option<CompareOp> {
        CompareOp::ALL
            .into_iter()
            .find(|op| op.as_str().eq_ignore_ascii_case(w))
    }

    pub(crate) fn is_ordering(self) -> bool {
        matches!(
            self,
            CompareOp::Gt | CompareOp::Ge | CompareOp::Lt | CompareOp::Le
        )
    }
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    /// `path op value`; `value` is a JSON string, number, boolean or null.
    Compare {
        path: AttrPath,
        op: CompareOp,
        value: Value,
    },
    /// `path pr`.
    Present(AttrPath),
    /// `attr[filter]`: some value of the multi-valued `attr` matches
    /// `filter`, whose paths name sub-attributes of `attr`.
    ValuePath {
        attr: AttrPath,
        filter: Box<Filter>,
    },
}

/// Parses a filter; 400 invalidFilter naming the position and the problem.
pub fn parse_filter(input: &str) -> Result<Filter, ScimError> {
    if input.len() > MAX_FILTER_LEN {
        return Err(ScimError::invalid_filter(format!(
            "the filter is {} bytes long; at most {MAX_FILTER_LEN} are accepted",
            input.len()
        )));
    }
    let mut p = Parser {
        src: input,
        pos: 0,
        depth: 0,
        terms: 0,
        in_value_path: false,
    };
    p.skip_ws();
    if p.at_end() {
        return Err(ScimError::invalid_filter("the filter is empty"));
    }
    let f = p.or_expr()?;
    p.skip_ws();
    if !p.at_end() {
        return Err(p.error(&format!("unexpected '{}'", p.snippet())));
    }
    Ok(f)
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
    depth: usize,
    /// Comparisons read so far, against [`MAX_FILTER_TERMS`].
    terms: usize,
    /// Inside `attr[...]`, where another `[` is not allowed.
    in_value_path: bool,
}

fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'$' | b':' | b'.')
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        self.src.get(self.pos..).unwrap_or("")
    }

    fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    fn peek(&self) -> Option<u8> {
        self.src.as_bytes().get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.pos += 1;
        }
    }

    /// A short quote of the input at the current position, for errors.
    fn snippet(&self) -> String {
        let rest = self.rest();
        let cut: String = rest.chars().take(20).collect();
        if cut.len() < rest.len() {
            format!("{cut}...")
        } else {
            cut
        }
    }

    fn error(&self, reason: &str) -> ScimError {
        ScimError::invalid_filter(format!("invalid filter at position {}: {reason}", self.pos))
    }

    /// Consumes the keyword `kw` (any case) if it is next and is followed by
    /// a boundary (whitespace, a parenthesis or the end), so that an
    /// attribute called `order` is not read as `or` + `der`.
    fn keyword(&mut self, kw: &str) -> bool {
        let rest = self.rest().as_bytes();
        if rest.len() < kw.len() || !rest[..kw.len()].eq_ignore_ascii_case(kw.as_bytes()) {
            return false;
        }
        match rest.get(kw.len()) {
            None | Some(b' ' | b'\t' | b'\r' | b'\n' | b'(') => {
                self.pos += kw.len();
                true
            }
            _ => false,
        }
    }

    fn enter(&mut self) -> Result<(), ScimError> {
        self.depth += 1;
        if self.depth > MAX_FILTER_DEPTH {
            return Err(self.error(&format!("nesting deeper than {MAX_FILTER_DEPTH} levels")));
        }
        Ok(())
    }

    fn expect(&mut self, c: u8, what: &str) -> Result<(), ScimError> {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else if self.at_end() {
            Err(self.error(&format!("expected {what} but the filter ended")))
        } else {
            Err(self.error(&format!("expected {what} but found '{}'", self.snippet())))
        }
    }

    fn or_expr(&mut self) -> Result<Filter, ScimError> {
        let mut left = self.and_expr()?;
        loop {
            let save = self.pos;
            self.skip_ws();
            if self.pos > save && self.keyword("or") {
                self.require_ws("'or'")?;
                let right = self.and_expr()?;
                left = Filter::Or(Box::new(left), Box::new(right));
            } else {
                self.pos = save;
                return Ok(left);
            }
        }
    }

    fn and_expr(&mut self) -> Result<Filter, ScimError> {
        let mut left = self.unary()?;
        loop {
            let save = self.pos;
            self.skip_ws();
            if self.pos > save && self.keyword("and") {
                self.require_ws("'and'")?;
                let right = self.unary()?;
                left = Filter::And(Box::new(left), Box::new(right));
            } else {
                self.pos = save;
                return Ok(left);
            }
        }
    }

    fn require_ws(&mut self, after: &str) -> Result<(), ScimError> {
        let save = self.pos;
        self.skip_ws();
        if self.at_end() {
            return Err(self.error(&format!("expected an expression after {after}")));
        }
        if self.pos == save && self.peek() != Some(b'(') {
            return Err(self.error(&format!("expected a space after {after}")));
        }
        Ok(())
    }

    fn unary(&mut self) -> Result<Filter, ScimError> {
        self.skip_ws();
        let save = self.pos;
        if self.keyword("not") {
            self.skip_ws();
            if self.peek() == Some(b'(') {
                self.pos += 1;
                self.enter()?;
                let inner = self.or_expr()?;
                self.expect(b')', "')' closing 'not ('")?;
                self.depth -= 1;
                return Ok(Filter::Not(Box::new(inner)));
            }
            // "not" not followed by "(": an attribute called "not".
            self.pos = save;
        }
        if self.peek() == Some(b'(') {
            self.pos += 1;
            self.enter()?;
            let inner = self.or_expr()?;
            self.expect(b')', "')'")?;
            self.depth -= 1;
            return Ok(inner);
        }
        self.attr_expr()
    }

    fn attr_expr(&mut self) -> Result<Filter, ScimError> {
        self.terms += 1;
        if self.terms > MAX_FILTER_TERMS {
            return Err(ScimError::invalid_filter(format!(
                "the filter has more than {MAX_FILTER_TERMS} comparisons; at most {MAX_FILTER_TERMS} are accepted in one filter"
            )));
        }
        let start = self.pos;
        while self.peek().is_some_and(is_name_char) {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(if self.at_end() {
                self.error("expected an attribute name but the filter ended")
            } else {
                self.error(&format!(
                    "expected an attribute name but found '{}'",
                    self.snippet()
                ))
            });
        }
        let name = &self.src[start..self.pos];
        let path = AttrPath::parse(name).map_err(|e| {
            ScimError::invalid_filter(format!("invalid filter at position {start}: {}", e.detail))
        })?;
        if self.peek() == Some(b'[') {
            if self.in_value_path {
                return Err(self.error("value filters cannot be nested"));
            }
            if path.sub.is_some() {
                return Err(self.error(&format!(
                    "a value filter applies to a multi-valued attribute, not to '{path}'"
                )));
            }
            self.pos += 1;
            self.enter()?;
            self.in_value_path = true;
            let inner = self.or_expr();
            self.in_value_path = false;
            let inner = inner?;
            self.expect(b']', "']' closing the value filter")?;
            self.depth -= 1;
            // `emails[type eq "work"].value eq "x"` is not in the RFC grammar,
            // but clients write it; it means `emails[type eq "work" and value eq "x"]`.
            let inner = if self.peek() == Some(b'.') {
                self.pos += 1;
                let sub_start = self.pos;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'$'))
                {
                    self.pos += 1;
                }
                let sub = AttrPath::parse(&self.src[sub_start..self.pos]).map_err(|e| {
                    ScimError::invalid_filter(format!(
                        "invalid filter at position {sub_start}: {}",
                        e.detail
                    ))
                })?;
                let term = self.operator_and_value(sub)?;
                Filter::And(Box::new(inner), Box::new(term))
            } else {
                inner
            };
            return Ok(Filter::ValuePath {
                attr: path,
                filter: Box::new(inner),
            });
        }
        self.operator_and_value(path)
    }

    /// ` op value` or ` pr` after an attribute path.
    fn operator_and_value(&mut self, path: AttrPath) -> Result<Filter, ScimError> {
        let name = path.to_string();
        let save = self.pos;
        self.skip_ws();
        if self.pos == save {
            return Err(if self.at_end() {
                self.error(&format!(
                    "expected an operator after '{name}' but the filter ended"
                ))
            } else {
                self.error(&format!("expected a space and an operator after '{name}'"))
            });
        }
        let op_start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
            self.pos += 1;
        }
        let word = &self.src[op_start..self.pos];
        if word.eq_ignore_ascii_case("pr") {
            return Ok(Filter::Present(path));
        }
        let Some(op) = CompareOp::from_word(word) else {
            self.pos = op_start;
            return Err(self.error(&format!(
                "expected an operator (eq, ne, co, sw, ew, gt, ge, lt, le, pr) but found '{}'",
                self.snippet()
            )));
        };
        let save = self.pos;
        self.skip_ws();
        if self.pos == save {
            return Err(self.error(&format!("expected a space and a value after '{word}'")));
        }
        let value = self.comp_value()?;
        Ok(Filter::Compare { path, op, value })
    }

    fn comp_value(&mut self) -> Result<Value, ScimError> {
        let start = self.pos;
        match self.peek() {
            Some(b'"') => {
                let bytes = self.src.as_bytes();
                let mut i = self.pos + 1;
                loop {
                    match bytes.get(i) {
                        None => {
                            return Err(ScimError::invalid_filter(format!(
                                "invalid filter at position {start}: the string is never closed"
                            )))
                        }
                        Some(b'\\') => i += 2,
                        Some(b'"') => break,
                        Some(_) => i += 1,
                    }
                }
                let lit = &self.src[start..=i];
                let s: String = serde_json::from_str(lit).map_err(|e| {
                    ScimError::invalid_filter(format!(
                        "invalid filter at position {start}: bad string {lit}: {e}"
                    ))
                })?;
                self.pos = i + 1;
                Ok(Value::String(s))
            }
            Some(c) if c == b'-' || c.is_ascii_digit() => {
                while self.peek().is_some_and(|c| {
                    c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E')
                }) {
                    self.pos += 1;
                }
                let lit = &self.src[start..self.pos];
                match serde_json::from_str::<Value>(lit) {
                    // serde_json's default float parser may be off by one ulp;
                    // the standard library's is exact, so printing and parsing
                    // a filter gives back the same number.
                    Ok(Value::Number(n)) if n.is_f64() => Ok(lit
                        .parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                        .map_or(Value::Number(n), Value::Number)),
                    Ok(v @ Value::Number(_)) => Ok(v),
                    _ => Err(ScimError::invalid_filter(format!(
                        "invalid filter at position {start}: '{lit}' is not a number"
                    ))),
                }
            }
            _ => {
                for (word, v) in [
                    ("true", Value::Bool(true)),
                    ("false", Value::Bool(false)),
                    ("null", Value::Null),
                ] {
                    let rest = self.rest().as_bytes();
                    if rest.len() >= word.len()
                        && rest[..word.len()].eq_ignore_ascii_case(word.as_bytes())
                        && !rest.get(word.len()).is_some_and(|c| is_name_char(*c))
                    {
                        self.pos += word.len();
                        return Ok(v);
                    }
                }
                Err(if self.at_end() {
                    self.error("expected a value but the filter ended")
                } else {
                    self.error(&format!(
                        "expected a value (a \"quoted string\", a number, true, false or null) but found '{}'",
                        self.snippet()
                    ))
                })
            }
        }
    }
}

/// Binding strength, for printing with the parentheses the tree needs.
fn precedence(f: &Filter) -> u8 {
    match f {
        Filter::Or(..) => 1,
        Filter::And(..) => 2,
        _ => 3,
    }
}

fn write_operand(
    f: &mut fmt::Formatter<'_>,
    child: &Filter,
    parent_prec: u8,
    right: bool,
) -> fmt::Result {
    let p = precedence(child);
    // The parser is left-associative, so an equal-precedence right operand
    // needs parentheses to come back as the same tree.
    if p < parent_prec || (right && p == parent_prec) {
        write!(f, "({child})")
    } else {
        write!(f, "{child}")
    }
}

impl fmt::Display for Filter {
    /// A canonical form: lowercase operators, single spaces, JSON literals,
    /// and only the parentheses the tree needs. It parses back to an equal
    /// filter.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Filter::And(a, b) => {
                write_operand(f, a, 2, false)?;
                f.write_str(" and ")?;
                write_operand(f, b, 2, true)
            }
            Filter::Or(a, b) => {
                write_operand(f, a, 1, false)?;
                f.write_str(" or ")?;
                write_operand(f, b, 1, true)
            }
            Filter::Not(inner) => write!(f, "not ({inner})"),
            Filter::Compare { path, op, value } => write!(f, "{path} {} {value}", op.as_str()),
            Filter::Present(path) => write!(f, "{path} pr"),
            Filter::ValuePath { attr, filter } => write!(f, "{attr}[{filter}]"),
        }
    }
}

impl std::str::FromStr for Filter {
    type Err = ScimError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_filter(s)
    }
}

impl Filter {
    /// The attribute and value when the whole filter is `attr eq "string"`,
    /// so the store can answer it from an index.
    pub fn eq_lookup(&self) -> Option<(&AttrPath, &str)> {
        match self {
            Filter::Compare {
                path,
                op: CompareOp::Eq,
                value: Value::String(s),
            } => Some((path, s.as_str())),
            _ => None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    fn p(s: &str) -> Filter {
        match parse_filter(s) {
            Ok(f) => f,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    fn cmp(path: &str, op: CompareOp, value: Value) -> Filter {
        Filter::Compare {
            path: AttrPath::parse(path).unwrap(),
            op,
            value,
        }
    }

    /// Every filter example of RFC 7644 §3.4.2.2 parses, and its canonical
    /// print parses back to the same tree.
    #[test]
    fn rfc_examples_parse_and_round_trip() {
        let examples = [
            r#"userName Eq "john""#,
            r#"Username eq "john""#,
            r#"userName eq "bjensen""#,
            r#"name.familyName co "O'Malley""#,
            r#"userName sw "J""#,
            r#"urn:ietf:params:scim:schemas:core:2.0:User:userName sw "J""#,
            "title pr",
            r#"meta.lastModified gt "2011-05-13T04:42:34Z""#,
            r#"meta.lastModified ge "2011-05-13T04:42:34Z""#,
            r#"meta.lastModified lt "2011-05-13T04:42:34Z""#,
            r#"meta.lastModified le "2011-05-13T04:42:34Z""#,
            r#"title pr and userType eq "Employee""#,
            r#"title pr or userType eq "Intern""#,
            r#"schemas eq "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User""#,
            r#"userType eq "Employee" and (emails co "example.com" or emails.value co "example.org")"#,
            r#"userType ne "Employee" and not (emails co "example.com" or emails.value co "example.org")"#,
            r#"userType eq "Employee" and (emails.type eq "work")"#,
            r#"userType eq "Employee" and emails[type eq "work" and value co "@example.com"]"#,
            r#"emails[type eq "work" and value co "@example.com"] or ims[type eq "xmpp" and value co "@foo.com"]"#,
        ];
        for ex in examples {
            let f = p(ex);
            let printed = f.to_string();
            assert_eq!(p(&printed), f, "{ex} printed as {printed}");
        }
    }

    #[test]
    fn value_path_followed_by_a_sub_attribute_comparison() {
        let f = p(r#"emails[type eq "work"].value eq "a@b""#);
        assert_eq!(f, p(r#"emails[type eq "work" and value eq "a@b"]"#));
        assert_eq!(p(&f.to_string()), f);
    }

    #[test]
    fn precedence_and_associativity() {
        let a = || cmp("a", CompareOp::Eq, json!(1));
        let b = || cmp("b", CompareOp::Eq, json!(2));
        let c = || cmp("c", CompareOp::Eq, json!(3));
        let bx = Box::new;
        assert_eq!(
            p("a eq 1 or b eq 2 and c eq 3"),
            Filter::Or(bx(a()), bx(Filter::And(bx(b()), bx(c()))))
        );
        assert_eq!(
            p("a eq 1 and b eq 2 or c eq 3"),
            Filter::Or(bx(Filter::And(bx(a()), bx(b()))), bx(c()))
        );
        assert_eq!(
            p("(a eq 1 or b eq 2) and c eq 3"),
            Filter::And(bx(Filter::Or(bx(a()), bx(b()))), bx(c()))
        );
        assert_eq!(
            p("a eq 1 and b eq 2 and c eq 3"),
            Filter::And(bx(Filter::And(bx(a()), bx(b()))), bx(c()))
        );
        let right = Filter::And(bx(a()), bx(Filter::And(bx(b()), bx(c()))));
        assert_eq!(right.to_string(), "a eq 1 and (b eq 2 and c eq 3)");
        assert_eq!(p(&right.to_string()), right);
        assert_eq!(
            p("NOT(a eq 1) AND b PR"),
            Filter::And(
                bx(Filter::Not(bx(a()))),
                bx(Filter::Present(AttrPath::new("b")))
            )
        );
    }

    #[test]
    fn values_are_json_literals() {
        assert_eq!(
            p(r#"a eq "x\"y\\z\u00e9""#),
            cmp("a", CompareOp::Eq, json!("x\"y\\zé"))
        );
        assert_eq!(p("a eq -1.5e3"), cmp("a", CompareOp::Eq, json!(-1500.0)));
        assert_eq!(p("a eq 42"), cmp("a", CompareOp::Eq, json!(42)));
        assert_eq!(p("a eq TRUE"), cmp("a", CompareOp::Eq, json!(true)));
        assert_eq!(p("a ne false"), cmp("a", CompareOp::Ne, json!(false)));
        assert_eq!(p("a eq null"), cmp("a", CompareOp::Eq, json!(null)));
        assert_eq!(p("order eq 1"), cmp("order", CompareOp::Eq, json!(1)));
        assert_eq!(p("not eq 1"), cmp("not", CompareOp::Eq, json!(1)));
        assert_eq!(
            p(r#"andrew eq "x" or oregon pr"#).to_string(),
            r#"andrew eq "x" or oregon pr"#
        );
    }

    #[test]
    fn errors_say_where_and_why() {
        for (bad, needle) in [
            ("", "empty"),
            ("userName", "operator"),
            ("userName eq", "value"),
            ("userName eq alice", "expected a value"),
            ("userName xx \"a\"", "expected an operator"),
            ("userName eq \"a", "never closed"),
            ("(userName eq \"a\"", "')'"),
            ("userName eq \"a\")", "unexpected"),
            ("userName eq \"a\" and", "expression"),
            ("emails[type eq \"work\"", "']'"),
            ("emails[type[x eq 1]]", "nested"),
            ("emails[type eq 1].", "attribute name"),
            ("emails[type eq 1].value", "operator"),
            ("a eq 1 or or b eq 2", "expected an operator"),
            ("a eq 1 and )", "attribute name"),
            ("a eq 1-2", "not a number"),
            ("a eq \"\\q\"", "bad string"),
            ("1a eq 1", "not a valid attribute name"),
        ] {
            let e = parse_filter(bad).unwrap_err();
            assert_eq!(
                e.scim_type,
                Some(crate::scim::ScimType::InvalidFilter),
                "{bad}"
            );
            assert!(e.detail.contains(needle), "{bad}: {}", e.detail);
        }
        let e = parse_filter("userName eq alice").unwrap_err();
        assert!(e.detail.contains("position 12"), "{}", e.detail);
    }

    #[test]
    fn limits_reject_hostile_input() {
        let deep = format!("{}a pr{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(parse_filter(&deep).unwrap_err().detail.contains("bytes"));
        let deep = format!("{}a pr{}", "(".repeat(60), ")".repeat(60));
        assert!(parse_filter(&deep).unwrap_err().detail.contains("nesting"));
        let deep = format!("{}a pr{}", "not (".repeat(60), ")".repeat(60));
        assert!(parse_filter(&deep).unwrap_err().detail.contains("nesting"));
        let ok = format!("{}a pr{}", "(".repeat(50), ")".repeat(50));
        assert!(parse_filter(&ok).is_ok());
        let long_chain = vec!["a eq 1"; MAX_FILTER_TERMS].join(" and ");
        assert!(parse_filter(&long_chain).is_ok());
        let too_long = vec!["a eq 1"; MAX_FILTER_TERMS + 1].join(" or ");
        let e = parse_filter(&too_long).unwrap_err();
        assert_eq!(e.scim_type, Some(crate::scim::ScimType::InvalidFilter));
        assert!(e.detail.contains("at most 100"), "{}", e.detail);
    }

    #[test]
    fn eq_lookup_only_for_a_single_string_equality() {
        let f = p(r#"userName eq "a2c4e7f0-guid""#);
        let (path, v) = f.eq_lookup().unwrap();
        assert_eq!((path.name.as_str(), v), ("userName", "a2c4e7f0-guid"));
        assert!(p(r#"userName ne "x""#).eq_lookup().is_none());
        assert!(p("userName eq 1").eq_lookup().is_none());
        assert!(p(r#"userName eq "x" and active eq true"#)
            .eq_lookup()
            .is_none());
    }

    pub(crate) mod props {
        use super::*;
        use proptest::prelude::*;

        fn attr_name() -> impl Strategy<Value = String> {
            "[a-zA-Z][a-zA-Z0-9_-]{0,8}"
        }

        fn attr_path(allow_sub: bool) -> impl Strategy<Value = AttrPath> {
            let urn = prop_oneof![
                Just(None),
                Just(Some(
                    "urn:ietf:params:scim:schemas:core:2.0:User".to_string()
                )),
                Just(Some(
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User".to_string()
                )),
                Just(Some("urn:x:y".to_string())),
            ];
            let sub = if allow_sub {
                proptest::option::of(prop_oneof![attr_name(), Just("$ref".to_string())]).boxed()
            } else {
                Just(None).boxed()
            };
            (urn, attr_name(), sub).prop_map(|(urn, name, sub)| AttrPath { urn, name, sub })
        }

        fn comp_value() -> impl Strategy<Value = Value> {
            prop_oneof![
                any::<String>().prop_map(Value::String),
                "[a-z\\\\\"\\]\\[() ]{0,6}".prop_map(Value::String),
                any::<i64>().prop_map(Value::from),
                any::<f64>()
                    .prop_filter_map("finite", serde_json::Number::from_f64)
                    .prop_map(Value::Number),
                any::<bool>().prop_map(Value::Bool),
                Just(Value::Null),
            ]
        }

        fn leaf() -> impl Strategy<Value = Filter> {
            prop_oneof![
                (
                    attr_path(true),
                    proptest::sample::select(CompareOp::ALL.to_vec()),
                    comp_value()
                )
                    .prop_map(|(path, op, value)| Filter::Compare {
                        path,
                        op,
                        value
                    }),
                attr_path(true).prop_map(Filter::Present),
            ]
        }

        /// Filters with no value path, as allowed inside brackets.
        fn inner_filter() -> impl Strategy<Value = Filter> {
            leaf().prop_recursive(4, 16, 2, |inner| {
                prop_oneof![
                    (inner.clone(), inner.clone())
                        .prop_map(|(a, b)| Filter::And(Box::new(a), Box::new(b))),
                    (inner.clone(), inner.clone())
                        .prop_map(|(a, b)| Filter::Or(Box::new(a), Box::new(b))),
                    inner.prop_map(|a| Filter::Not(Box::new(a))),
                ]
            })
        }

        pub(crate) fn filter() -> impl Strategy<Value = Filter> {
            let value_path =
                (attr_path(false), inner_filter()).prop_map(|(attr, f)| Filter::ValuePath {
                    attr,
                    filter: Box::new(f),
                });
            prop_oneof![3 => leaf(), 1 => value_path].prop_recursive(5, 32, 2, |inner| {
                prop_oneof![
                    (inner.clone(), inner.clone())
                        .prop_map(|(a, b)| Filter::And(Box::new(a), Box::new(b))),
                    (inner.clone(), inner.clone())
                        .prop_map(|(a, b)| Filter::Or(Box::new(a), Box::new(b))),
                    inner.prop_map(|a| Filter::Not(Box::new(a))),
                ]
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn print_then_parse_gives_the_same_filter(f in filter()) {
                let printed = f.to_string();
                let parsed = parse_filter(&printed);
                prop_assert_eq!(parsed.as_ref(), Ok(&f), "printed: {}", printed);
            }

            #[test]
            fn parse_never_panics(s in any::<String>()) {
                let _ = parse_filter(&s);
            }

            #[test]
            fn parse_never_panics_on_filter_like_text(
                s in "[a-zA-Z0-9 \"\\\\()\\[\\].:$+-]{0,80}"
            ) {
                if let Ok(f) = parse_filter(&s) {
                    // Whatever parses prints to something that parses the same.
                    prop_assert_eq!(parse_filter(&f.to_string()), Ok(f));
                }
            }
        }
    }
}
