//! Small helpers over `serde_json` values shared by the schema, path, filter
//! and PATCH code. SCIM attribute names are case-insensitive (RFC 7643 §2.1),
//! while the stored JSON keeps one canonical spelling; every lookup therefore
//! tries the exact key first (the common case, a hash lookup) and only then
//! scans for a case-insensitive match.

use serde_json::{Map, Value};

/// The key in `map` that equals `name` ignoring ASCII case, exact match first.
pub fn key_ci<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    if let Some((k, _)) = map.get_key_value(name) {
        return Some(k.as_str());
    }
    map.keys()
        .find(|k| k.eq_ignore_ascii_case(name))
        .map(String::as_str)
}

/// `map[name]`, with the name compared case-insensitively.
pub fn get_ci<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(v) = map.get(name) {
        return Some(v);
    }
    map.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// Mutable `map[name]`, with the name compared case-insensitively.
pub fn get_ci_mut<'a>(map: &'a mut Map<String, Value>, name: &str) -> Option<&'a mut Value> {
    let key = key_ci(map, name)?.to_string();
    map.get_mut(&key)
}

/// Removes `map[name]` (case-insensitively), keeping the order of the others.
pub fn remove_ci(map: &mut Map<String, Value>, name: &str) -> Option<Value> {
    let key = key_ci(map, name)?.to_string();
    map.shift_remove(&key)
}

/// Null, an empty string, an empty array and an empty object all mean
/// "unassigned" in SCIM (RFC 7643 §2.5, RFC 7644 §3.4.2.2 `pr`).
pub fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.iter().all(is_empty_value),
        Value::Object(o) => o.values().all(is_empty_value),
        Value::Bool(_) | Value::Number(_) => false,
    }
}

/// The values of an attribute: the elements of an array, or the value itself;
/// nulls are skipped because they mean "no value".
pub fn values_of(v: &Value) -> Vec<&Value> {
    match v {
        Value::Null => Vec::new(),
        Value::Array(a) => a.iter().filter(|e| !e.is_null()).collect(),
        other => vec![other],
    }
}

/// Entra sends booleans as the strings "True" and "False".
pub fn parse_bool_str(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// A short name of the JSON type, for error details.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lookups_ignore_case_and_prefer_exact_key() {
        let v = json!({"userName": "a", "USERNAME": "b", "Active": true});
        let m = v.as_object().unwrap();
        assert_eq!(get_ci(m, "USERNAME"), Some(&json!("b")));
        assert_eq!(get_ci(m, "username"), Some(&json!("a")));
        assert_eq!(key_ci(m, "active"), Some("Active"));
        assert_eq!(get_ci(m, "missing"), None);
    }

    #[test]
    fn remove_keeps_order_of_the_rest() {
        let mut v = json!({"a": 1, "B": 2, "c": 3});
        let m = v.as_object_mut().unwrap();
        assert_eq!(remove_ci(m, "b"), Some(json!(2)));
        assert_eq!(m.keys().collect::<Vec<_>>(), ["a", "c"]);
    }

    #[test]
    fn emptiness_follows_rfc_unassigned_rules() {
        for v in [
            json!(null),
            json!(""),
            json!([]),
            json!({}),
            json!([null]),
            json!({"a": null}),
        ] {
            assert!(is_empty_value(&v), "{v}");
        }
        for v in [
            json!(false),
            json!(0),
            json!("x"),
            json!([1]),
            json!({"a": "b"}),
        ] {
            assert!(!is_empty_value(&v), "{v}");
        }
    }

    #[test]
    fn string_booleans_any_case() {
        assert_eq!(parse_bool_str("True"), Some(true));
        assert_eq!(parse_bool_str("FALSE"), Some(false));
        assert_eq!(parse_bool_str("yes"), None);
    }
}
