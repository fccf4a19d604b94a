//! Evaluation against a resource and its schema: the values a path
//! designates (`select`, `select_attr`, `container`) and whether a filter
//! matches (`Filter::matches`, `Filter::validate`). The grammars are in
//! [`path`](crate::scim::path) and [`filter`](crate::scim::filter); the two
//! meet here because selecting `emails[type eq "work"]` evaluates a filter
//! and evaluating `emails.value eq "x"` selects values.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use crate::scim::attr_path::AttrPath;
use crate::scim::datetime::parse_datetime;
use crate::scim::error::ScimError;
use crate::scim::filter::{CompareOp, Filter};
use crate::scim::json::{get_ci, is_empty_value, parse_bool_str, values_of};
use crate::scim::path::PatchPath;
use crate::scim::schema::{AttrType, SchemaRegistry};

/// The object that holds `attr`'s top-level value: the resource itself for
/// core attributes, `resource[urn]` for extension attributes. An unqualified
/// name that only an extension defines is looked for in that extension.
pub fn container<'a>(
    resource: &'a Map<String, Value>,
    attr: &AttrPath,
    reg: &SchemaRegistry,
) -> Option<&'a Map<String, Value>> {
    match attr.urn.as_deref() {
        Some(urn) if reg.is_core(urn) => Some(resource),
        Some(urn) => get_ci(resource, urn)?.as_object(),
        None => {
            if get_ci(resource, &attr.name).is_some() {
                return Some(resource);
            }
            match reg.resolve(attr) {
                Some((schema, _, _)) if !reg.is_core(&schema.id) => {
                    get_ci(resource, &schema.id)?.as_object()
                }
                _ => Some(resource),
            }
        }
    }
}

/// The values of an attribute path, multi-valued attributes flattened,
/// nulls skipped: `emails` → each email object, `emails.value` → each
/// address, `name.givenName` → one string.
pub fn select_attr<'a>(
    resource: &'a Value,
    attr: &AttrPath,
    reg: &SchemaRegistry,
) -> Vec<&'a Value> {
    let path = PatchPath {
        attr: attr.clone(),
        filter: None,
        sub: None,
    };
    select(resource, &path, reg)
}

/// The values at a PATCH path, flattening multi-valued attributes and
/// skipping nulls. `emails[type eq "work"].value` gives the matching emails'
/// values; a whole-extension path gives the extension object.
pub fn select<'a>(resource: &'a Value, path: &PatchPath, reg: &SchemaRegistry) -> Vec<&'a Value> {
    let Some(root) = resource.as_object() else {
        return Vec::new();
    };
    if path.filter.is_none() && path.sub.is_none() {
        if let Some(ext) = reg.whole_extension(&path.attr) {
            return get_ci(root, &ext.id)
                .into_iter()
                .filter(|v| !v.is_null())
                .collect();
        }
    }
    let Some(holder) = container(root, &path.attr, reg) else {
        return Vec::new();
    };
    let Some(value) = get_ci(holder, &path.attr.name) else {
        return Vec::new();
    };
    let mut elements = values_of(value);
    if let Some(filter) = &path.filter {
        let parent = path.attr.parent();
        elements.retain(|e| filter.matches_sub(e, &parent, reg));
    }
    let subs: Vec<&str> = path
        .attr
        .sub
        .iter()
        .chain(path.sub.iter())
        .map(String::as_str)
        .collect();
    for sub in subs {
        elements = elements
            .into_iter()
            .filter_map(Value::as_object)
            .filter_map(|o| get_ci(o, sub))
            .flat_map(values_of)
            .collect();
    }
    elements
}

impl Filter {
    /// Whether `resource` matches, with RFC 7644 §3.4.2.2 semantics: a
    /// comparison on a multi-valued attribute holds when any value satisfies
    /// it; a complex attribute named without a sub-attribute is compared by
    /// its `value`; string comparisons respect the schema's caseExact.
    pub fn matches(&self, resource: &Value, reg: &SchemaRegistry) -> bool {
        self.eval(resource, None, reg)
    }

    /// Whether one value of the multi-valued attribute `parent` matches this
    /// filter, whose paths name sub-attributes of `parent` (the inside of
    /// `emails[type eq "work"]`).
    pub fn matches_sub(&self, element: &Value, parent: &AttrPath, reg: &SchemaRegistry) -> bool {
        self.eval(element, Some(parent), reg)
    }

    /// Checks the filter against the schema: RFC 7644 §3.4.2.2 makes
    /// ordering comparisons on boolean and binary attributes an
    /// invalidFilter error rather than a silent non-match.
    pub fn validate(&self, reg: &SchemaRegistry) -> Result<(), ScimError> {
        self.validate_in(None, reg)
    }

    fn validate_in(
        &self,
        parent: Option<&AttrPath>,
        reg: &SchemaRegistry,
    ) -> Result<(), ScimError> {
        match self {
            Filter::And(a, b) | Filter::Or(a, b) => {
                a.validate_in(parent, reg)?;
                b.validate_in(parent, reg)
            }
            Filter::Not(a) => a.validate_in(parent, reg),
            Filter::Present(_) => Ok(()),
            Filter::ValuePath { attr, filter } => filter.validate_in(Some(attr), reg),
            Filter::Compare { path, op, .. } => {
                let full = effective_path(path, parent);
                let ty = reg.leaf(&full).map(|d| d.ty);
                let bad = match ty {
                    Some(AttrType::Boolean) => *op != CompareOp::Eq && *op != CompareOp::Ne,
                    Some(AttrType::Binary) => op.is_ordering(),
                    _ => false,
                };
                if bad {
                    Err(ScimError::invalid_filter(format!(
                        "'{}' cannot be used on '{full}', a {} attribute",
                        op.as_str(),
                        ty.map(AttrType::as_str).unwrap_or("")
                    )))
                } else {
                    Ok(())
                }
            }
        }
    }

    fn eval(&self, node: &Value, parent: Option<&AttrPath>, reg: &SchemaRegistry) -> bool {
        match self {
            Filter::And(a, b) => a.eval(node, parent, reg) && b.eval(node, parent, reg),
            Filter::Or(a, b) => a.eval(node, parent, reg) || b.eval(node, parent, reg),
            Filter::Not(a) => !a.eval(node, parent, reg),
            Filter::Present(path) => {
                let (values, _) = candidates(node, path, parent, reg);
                values.iter().any(|v| !is_empty_value(v))
            }
            Filter::ValuePath { attr, filter } => {
                if parent.is_some() {
                    // The grammar does not nest value paths; an AST built by
                    // hand that does simply matches nothing.
                    return false;
                }
                let whole = attr.parent();
                select_attr(node, &whole, reg)
                    .into_iter()
                    .any(|e| filter.eval(e, Some(&whole), reg))
            }
            Filter::Compare { path, op, value } => {
                let (values, full) = candidates(node, path, parent, reg);
                let values = comparable(values);
                let ty = reg.leaf(&full).and_then(|d| match d.ty {
                    AttrType::Complex => d.sub("value").map(|v| v.ty),
                    t => Some(t),
                });
                let case_exact = reg.case_exact(&full);
                let any =
                    |op: CompareOp| values.iter().any(|v| compare(op, v, value, ty, case_exact));
                match (op, value) {
                    (CompareOp::Eq, Value::Null) => values.iter().all(|v| is_empty_value(v)),
                    (CompareOp::Ne, Value::Null) => values.iter().any(|v| !is_empty_value(v)),
                    // "ne" is the negation of "eq": true when no value equals,
                    // including when the attribute is absent.
                    (CompareOp::Ne, _) => !any(CompareOp::Eq),
                    (op, _) => any(*op),
                }
            }
        }
    }
}

/// The path relative to the resource: inside `emails[...]`, `type` is
/// `emails.type`.
fn effective_path(path: &AttrPath, parent: Option<&AttrPath>) -> AttrPath {
    match parent {
        Some(p) => p.child(&path.name),
        None => path.clone(),
    }
}

/// The values a path selects (multi-valued attributes flattened, nulls
/// skipped), and the path that names them in the schema.
fn candidates<'a>(
    node: &'a Value,
    path: &AttrPath,
    parent: Option<&AttrPath>,
    reg: &SchemaRegistry,
) -> (Vec<&'a Value>, AttrPath) {
    let full = effective_path(path, parent);
    let values: Vec<&Value> = match parent {
        None => select_attr(node, path, reg),
        Some(_) => {
            let Some(obj) = node.as_object() else {
                return (Vec::new(), full);
            };
            let mut vals = get_ci(obj, &path.name).map(values_of).unwrap_or_default();
            if let Some(sub) = &path.sub {
                vals = vals
                    .into_iter()
                    .filter_map(Value::as_object)
                    .filter_map(|o| get_ci(o, sub))
                    .flat_map(values_of)
                    .collect();
            }
            vals
        }
    };
    (values, full)
}

/// What a comparison compares: a complex value named without a
/// sub-attribute (`emails co "x"`) stands for its `value` sub-attribute.
fn comparable(values: Vec<&Value>) -> Vec<&Value> {
    values
        .into_iter()
        .filter_map(|v| match v {
            Value::Object(o) => get_ci(o, "value").filter(|v| !v.is_null()),
            other => Some(other),
        })
        .collect()
}

fn fold(s: &str, case_exact: bool) -> String {
    if case_exact {
        s.to_string()
    } else {
        s.to_lowercase()
    }
}

fn compare_strings(op: CompareOp, actual: &str, expected: &str, case_exact: bool) -> bool {
    // A case-insensitive comparison of ASCII text (nearly every id, name
    // and address) folds byte by byte: no lowercased copy per comparison,
    // which a long `or` chain over every resource would otherwise make.
    if case_exact || (actual.is_ascii() && expected.is_ascii()) {
        let fold = !case_exact;
        return compare_bytes(op, actual.as_bytes(), expected.as_bytes(), fold);
    }
    let a = fold(actual, case_exact);
    let e = fold(expected, case_exact);
    compare_bytes(op, a.as_bytes(), e.as_bytes(), false)
}

/// `op` on two byte strings, ASCII letters folded to lower case when
/// `fold`; on UTF-8 text without folding, byte order is code point order,
/// as `str`'s own comparison.
fn compare_bytes(op: CompareOp, a: &[u8], e: &[u8], fold: bool) -> bool {
    let eq = |x: &[u8], y: &[u8]| {
        if fold {
            x.eq_ignore_ascii_case(y)
        } else {
            x == y
        }
    };
    let ord = || {
        if fold {
            a.iter()
                .map(u8::to_ascii_lowercase)
                .cmp(e.iter().map(u8::to_ascii_lowercase))
        } else {
            a.cmp(e)
        }
    };
    match op {
        CompareOp::Eq => eq(a, e),
        CompareOp::Ne => !eq(a, e),
        CompareOp::Co => e.is_empty() || a.windows(e.len()).any(|w| eq(w, e)),
        CompareOp::Sw => a.len() >= e.len() && eq(&a[..e.len()], e),
        CompareOp::Ew => a.len() >= e.len() && eq(&a[a.len() - e.len()..], e),
        CompareOp::Gt => ord() == Ordering::Greater,
        CompareOp::Ge => ord() != Ordering::Less,
        CompareOp::Lt => ord() == Ordering::Less,
        CompareOp::Le => ord() != Ordering::Greater,
    }
}

fn ordering_holds(op: CompareOp, ord: Ordering) -> bool {
    match op {
        CompareOp::Eq => ord == Ordering::Equal,
        CompareOp::Ne => ord != Ordering::Equal,
        CompareOp::Gt => ord == Ordering::Greater,
        CompareOp::Ge => ord != Ordering::Less,
        CompareOp::Lt => ord == Ordering::Less,
        CompareOp::Le => ord != Ordering::Greater,
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
    }
}

fn compare_numbers(a: &serde_json::Number, b: &serde_json::Number) -> Option<Ordering> {
    match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

/// One value against the filter's value.
fn compare(
    op: CompareOp,
    actual: &Value,
    expected: &Value,
    ty: Option<AttrType>,
    case_exact: bool,
) -> bool {
    match (actual, expected) {
        (Value::String(a), Value::String(e)) => {
            if ty == Some(AttrType::DateTime) {
                if let (Some(x), Some(y)) = (parse_datetime(a), parse_datetime(e)) {
                    return ordering_holds(op, x.cmp(&y));
                }
            }
            compare_strings(op, a, e, case_exact)
        }
        (Value::Number(a), Value::Number(e)) => {
            compare_numbers(a, e).is_some_and(|o| ordering_holds(op, o))
        }
        (Value::Number(a), Value::String(e)) => e
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(|y| a.as_f64()?.partial_cmp(&y))
            .is_some_and(|o| ordering_holds(op, o)),
        // A string attribute compared with a number (employeeNumber eq 42)
        // compares the number's text.
        (Value::String(a), Value::Number(e)) => compare_strings(op, a, &e.to_string(), case_exact),
        (Value::Bool(a), Value::Bool(e)) => match op {
            CompareOp::Eq => a == e,
            CompareOp::Ne => a != e,
            _ => false,
        },
        (Value::Bool(a), Value::String(e)) => match (op, parse_bool_str(e)) {
            (CompareOp::Eq, Some(e)) => *a == e,
            (CompareOp::Ne, Some(e)) => *a != e,
            _ => false,
        },
        (Value::String(a), Value::Bool(e)) => match (op, parse_bool_str(a)) {
            (CompareOp::Eq, Some(a)) => a == *e,
            (CompareOp::Ne, Some(a)) => a != *e,
            _ => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::filter::parse_filter;
    use crate::scim::schema::ENTERPRISE_USER_URN;
    use serde_json::json;

    fn p(s: &str) -> Filter {
        match parse_filter(s) {
            Ok(f) => f,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    fn users() -> SchemaRegistry {
        SchemaRegistry::users(vec![])
    }

    fn bjensen() -> Value {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "id": "2819c223-7f76-453a-919d-413861904646",
            "externalId": "Bjensen",
            "userName": "bjensen",
            "name": {"familyName": "O'Malley", "givenName": "Barbara"},
            "title": "Tour Guide",
            "userType": "Employee",
            "active": true,
            "emails": [
                {"value": "bjensen@example.com", "type": "work", "primary": true},
                {"value": "babs@jensen.org", "type": "home"}
            ],
            "ims": [{"value": "bj@foo.com", "type": "xmpp"}],
            "meta": {"resourceType": "User", "lastModified": "2011-05-13T04:42:34Z"},
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": "701984", "department": "Tour Operations"}
        })
    }

    fn check(filter: &str, want: bool) {
        let got = p(filter).matches(&bjensen(), &users());
        assert_eq!(got, want, "{filter}");
    }

    #[test]
    fn evaluation_follows_rfc_semantics() {
        check(r#"userName eq "BJENSEN""#, true);
        check(r#"USERNAME eq "bjensen""#, true);
        check(r#"id eq "2819C223-7F76-453A-919D-413861904646""#, false);
        check(r#"externalId eq "bjensen""#, false);
        check(r#"externalId eq "Bjensen""#, true);
        check(r#"name.familyName co "o'malley""#, true);
        check(r#"userName sw "BJ""#, true);
        check(r#"userName ew "sen""#, true);
        check(
            r#"urn:ietf:params:scim:schemas:core:2.0:User:userName sw "b""#,
            true,
        );
        check("title pr", true);
        check("nickName pr", false);
        check("name pr", true);
        check("emails pr", true);
        check("ims[type pr]", true);
        check("ims[display pr]", false);
        check(
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User pr",
            true,
        );
        check(r#"meta.lastModified gt "2011-05-13T04:42:33Z""#, true);
        check(r#"meta.lastModified gt "2011-05-13T06:42:33+02:00""#, true);
        check(r#"meta.lastModified ge "2011-05-13T04:42:34.000Z""#, true);
        check(r#"meta.lastModified lt "2011-05-13T04:42:34Z""#, false);
        check(r#"meta.lastModified le "2011-05-13T04:42:34Z""#, true);
        check(r#"title pr and userType eq "Employee""#, true);
        check(r#"title pr and userType eq "Intern""#, false);
        check(r#"nickName pr or userType eq "employee""#, true);
        check(
            r#"userType eq "Employee" and (emails co "example.com" or emails.value co "example.org")"#,
            true,
        );
        check(
            r#"userType ne "Employee" and not (emails co "example.com" or emails.value co "example.org")"#,
            false,
        );
        check(r#"not (emails co "example.net")"#, true);
        check(r#"emails.type eq "home""#, true);
        check(
            r#"emails[type eq "work" and value co "@example.com"]"#,
            true,
        );
        check(
            r#"emails[type eq "home" and value co "@example.com"]"#,
            false,
        );
        check(
            r#"emails[type eq "work" and value co "@example.com"] or ims[type eq "xmpp" and value co "@foo.com"]"#,
            true,
        );
        check("emails[primary eq true]", true);
        check(
            r#"emails[type eq "work"].value eq "BJENSEN@example.com""#,
            true,
        );
        check(
            r#"emails[type eq "home"].value eq "bjensen@example.com""#,
            false,
        );
        check(r#"emails[primary eq "True"]"#, true);
        check("active eq true", true);
        check(r#"active eq "False""#, false);
        check("active gt false", false);
        check(
            r#"schemas eq "urn:ietf:params:scim:schemas:core:2.0:User""#,
            true,
        );
        check(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "701984""#,
            true,
        );
        check(
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq 701984",
            true,
        );
        check(r#"department eq "tour operations""#, true);
        check(r#"nickName ne "x""#, true);
        check("nickName eq null", true);
        check("title ne null", true);
        check(r#"userName gt "a" and userName lt "C""#, true);
    }

    /// The comparison without copies gives what comparing lowercased
    /// copies gives.
    #[test]
    fn string_comparisons_agree_with_lowercased_copies() {
        let texts = [
            "Alice",
            "alice",
            "ALICE2",
            "bob",
            "Al",
            "",
            "x",
            "straße",
            "STRASSE",
            "Ünï",
            "ünïcode",
            "a@EXAMPLE.com",
            "example",
        ];
        for a in texts {
            for e in texts {
                for op in CompareOp::ALL {
                    for case_exact in [false, true] {
                        let (x, y) = (fold(a, case_exact), fold(e, case_exact));
                        let want = match op {
                            CompareOp::Eq => x == y,
                            CompareOp::Ne => x != y,
                            CompareOp::Co => x.contains(&y),
                            CompareOp::Sw => x.starts_with(&y),
                            CompareOp::Ew => x.ends_with(&y),
                            CompareOp::Gt => x > y,
                            CompareOp::Ge => x >= y,
                            CompareOp::Lt => x < y,
                            CompareOp::Le => x <= y,
                        };
                        assert_eq!(
                            compare_strings(op, a, e, case_exact),
                            want,
                            "{a:?} {op:?} {e:?} case_exact={case_exact}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn numbers_compare_numerically() {
        let reg = users();
        let r = json!({"userName": "x", "urn:example:1.0:X": {"n": 10}});
        let mut f = p("urn:example:1.0:X:n gt 9");
        assert!(f.matches(&r, &reg));
        f = p("urn:example:1.0:X:n lt 9.5");
        assert!(!f.matches(&r, &reg));
        f = p("urn:example:1.0:X:n eq 10.0");
        assert!(f.matches(&r, &reg));
    }

    #[test]
    fn validate_rejects_ordering_on_booleans() {
        let reg = users();
        assert!(p("active gt true").validate(&reg).is_err());
        assert!(p("emails[primary co \"t\"]").validate(&reg).is_err());
        assert!(p("active eq true").validate(&reg).is_ok());
        assert!(p("userName gt \"a\"").validate(&reg).is_ok());
    }

    fn alice() -> Value {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE_USER_URN],
            "id": "1",
            "userName": "alice",
            "name": {"givenName": "Alice", "familyName": "Smith", "middleName": null},
            "emails": [
                {"value": "alice@work.example", "type": "work", "primary": true},
                {"value": "alice@home.example", "type": "home"},
                {"value": null, "type": "other"},
            ],
            ENTERPRISE_USER_URN: {"department": "Sales", "manager": {"value": "m-1"}},
        })
    }

    fn sel(path: &str) -> Vec<Value> {
        let reg = SchemaRegistry::users(vec![]);
        let r = alice();
        select(&r, &PatchPath::parse(path).unwrap(), &reg)
            .into_iter()
            .cloned()
            .collect()
    }

    #[test]
    fn select_reads_values() {
        assert_eq!(sel("userName"), vec![json!("alice")]);
        assert_eq!(sel("USERNAME"), vec![json!("alice")]);
        assert_eq!(sel("name.givenName"), vec![json!("Alice")]);
        assert_eq!(sel("name.middleName"), Vec::<Value>::new());
        assert_eq!(
            sel("emails.value"),
            vec![json!("alice@work.example"), json!("alice@home.example")]
        );
        assert_eq!(
            sel(r#"emails[type eq "work"].value"#),
            vec![json!("alice@work.example")]
        );
        assert_eq!(sel(r#"emails[TYPE eq "WORK"]"#).len(), 1);
        assert_eq!(sel(r#"emails[type eq "fax"].value"#), Vec::<Value>::new());
        assert_eq!(sel("emails").len(), 3);
        assert_eq!(
            sel("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"),
            vec![json!("Sales")]
        );
        assert_eq!(
            sel("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value"),
            vec![json!("m-1")]
        );
        assert_eq!(sel("department"), vec![json!("Sales")]);
        assert_eq!(
            sel("urn:ietf:params:scim:schemas:core:2.0:User:name.familyName"),
            vec![json!("Smith")]
        );
        assert_eq!(
            sel("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User")[0]["department"],
            "Sales"
        );
        assert_eq!(sel("title"), Vec::<Value>::new());
    }

    mod props {
        use super::*;
        use crate::scim::filter::tests::props::filter;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn evaluation_never_panics(f in filter()) {
                let reg = users();
                let r = bjensen();
                let a = f.matches(&r, &reg);
                // not (f) is always the opposite of f.
                prop_assert_eq!(Filter::Not(Box::new(f)).matches(&r, &reg), !a);
            }
        }
    }
}
