//! List and search requests (RFC 7644 §3.4.2 and §3.4.3): the parameters
//! of `GET /Users?...` and of a `POST /Users/.search` SearchRequest body,
//! parsed into one [`ListQuery`], and the sort of §3.4.2.3.
//!
//! Paging follows §3.4.2.4: `startIndex` is 1-based and a value below 1
//! means 1; a negative `count` means 0; a `count` above the server's
//! maximum is capped.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use serde_json::Value;

use crate::scim::datetime::parse_datetime;
use crate::scim::error::ScimError;
use crate::scim::eval::select_attr;
use crate::scim::filter::{parse_filter, Filter};
use crate::scim::json::{get_ci, parse_bool_str};
use crate::scim::path::AttrPath;
use crate::scim::project::Projection;
use crate::scim::schema::{AttrType, SchemaRegistry, SEARCH_REQUEST_URN};

/// One list or search request.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    pub filter: Option<Filter>,
    pub sort_by: Option<AttrPath>,
    pub descending: bool,
    /// 1-based.
    pub start_index: usize,
    pub count: usize,
    pub projection: Projection,
}

/// The server's paging limits.
#[derive(Debug, Clone, Copy)]
pub struct PageLimits {
    /// Page size when the client gives no `count`.
    pub default: usize,
    /// Largest page served, whatever `count` asks for.
    pub max: usize,
}

/// An integer parameter; values beyond i64 saturate rather than fail.
fn integer(name: &str, v: &Value) -> Result<i64, ScimError> {
    let bad = || ScimError::invalid_value(format!("{name} must be an integer, not {v}"));
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_u64().map(|_| i64::MAX))
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .ok_or_else(bad),
        Value::String(s) => {
            let t = s.trim();
            match t.parse::<i64>() {
                Ok(i) => Ok(i),
                Err(_) => {
                    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
                    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                        Ok(if t.starts_with('-') {
                            i64::MIN
                        } else {
                            i64::MAX
                        })
                    } else {
                        Err(bad())
                    }
                }
            }
        }
        _ => Err(bad()),
    }
}

impl ListQuery {
    /// From the query string of a `GET` (names case-insensitive; an empty
    /// value counts as absent).
    pub fn from_params(
        params: &[(String, String)],
        limits: PageLimits,
    ) -> Result<ListQuery, ScimError> {
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
                .filter(|v| !v.trim().is_empty())
        };
        let text = |name: &str| get(name).map(|s| Value::String(s.to_string()));
        ListQuery::build(
            get("filter"),
            get("sortBy"),
            get("sortOrder"),
            text("startIndex").as_ref(),
            text("count").as_ref(),
            Projection::parse(get("attributes"), get("excludedAttributes"))?,
            limits,
        )
    }

    /// From a SearchRequest body (RFC 7644 §3.4.3). The `schemas` member,
    /// when present, must name the SearchRequest message.
    pub fn from_search_request(body: &Value, limits: PageLimits) -> Result<ListQuery, ScimError> {
        let Some(obj) = body.as_object() else {
            return Err(ScimError::invalid_syntax(
                "a SearchRequest must be a JSON object",
            ));
        };
        if let Some(schemas) = get_ci(obj, "schemas") {
            let ok = schemas.as_array().is_some_and(|a| {
                a.iter().any(|s| {
                    s.as_str()
                        .is_some_and(|s| s.eq_ignore_ascii_case(SEARCH_REQUEST_URN))
                })
            });
            if !ok {
                return Err(ScimError::invalid_syntax(format!(
                    "schemas must contain {SEARCH_REQUEST_URN}"
                )));
            }
        }
        let string = |name: &str| -> Result<Option<&str>, ScimError> {
            match get_ci(obj, name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.as_str())),
                Some(_) => Err(ScimError::invalid_value(format!("{name} must be a string"))),
            }
        };
        let number = |name: &str| get_ci(obj, name).filter(|v| !v.is_null());
        ListQuery::build(
            string("filter")?,
            string("sortBy")?,
            string("sortOrder")?,
            number("startIndex"),
            number("count"),
            Projection::from_json(get_ci(obj, "attributes"), get_ci(obj, "excludedAttributes"))?,
            limits,
        )
    }

    fn build(
        filter: Option<&str>,
        sort_by: Option<&str>,
        sort_order: Option<&str>,
        start_index: Option<&Value>,
        count: Option<&Value>,
        projection: Projection,
        limits: PageLimits,
    ) -> Result<ListQuery, ScimError> {
        let filter = filter.map(parse_filter).transpose()?;
        let sort_by = sort_by
            .map(|s| {
                AttrPath::parse(s)
                    .map_err(|e| ScimError::invalid_path(format!("sortBy: {}", e.detail)))
            })
            .transpose()?;
        let descending = match sort_order.map(str::trim) {
            None => false,
            Some(o) if o.eq_ignore_ascii_case("ascending") => false,
            Some(o) if o.eq_ignore_ascii_case("descending") => true,
            Some(o) => {
                return Err(ScimError::invalid_value(format!(
                    "sortOrder must be \"ascending\" or \"descending\", not {o:?}"
                )))
            }
        };
        let start_index = match start_index {
            None => 1,
            Some(v) => integer("startIndex", v)?
                .max(1)
                .try_into()
                .unwrap_or(usize::MAX),
        };
        let count = match count {
            None => limits.default.min(limits.max),
            Some(v) => integer("count", v)?
                .clamp(0, i64::try_from(limits.max).unwrap_or(i64::MAX))
                .try_into()
                .unwrap_or(0),
        };
        Ok(ListQuery {
            filter,
            sort_by,
            descending,
            start_index,
            count,
            projection,
        })
    }
}

/// A sort key: what one resource holds at the `sortBy` path.
#[derive(Debug, Clone, PartialEq)]
enum Key {
    Missing,
    Bool(bool),
    Number(f64),
    Time(i128),
    Text(String),
}

fn rank(k: &Key) -> u8 {
    match k {
        Key::Bool(_) => 0,
        Key::Number(_) => 1,
        Key::Time(_) => 2,
        Key::Text(_) => 3,
        Key::Missing => 4,
    }
}

fn cmp_keys(a: &Key, b: &Key) -> Ordering {
    match (a, b) {
        (Key::Bool(x), Key::Bool(y)) => x.cmp(y),
        (Key::Number(x), Key::Number(y)) => x.partial_cmp(y).unwrap_or(Ordering::Equal),
        (Key::Time(x), Key::Time(y)) => x.cmp(y),
        (Key::Text(x), Key::Text(y)) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)),
    }
}

/// The key of one resource: for a multi-valued attribute its primary value,
/// else its first (§3.4.2.3); a complex value stands for its `value`.
fn sort_key(resource: &Value, path: &AttrPath, reg: &SchemaRegistry) -> Key {
    let values = select_attr(resource, path, reg);
    let chosen = values
        .iter()
        .find(|v| {
            v.as_object()
                .and_then(|o| get_ci(o, "primary"))
                .is_some_and(|p| {
                    p.as_bool() == Some(true) || p.as_str().and_then(parse_bool_str) == Some(true)
                })
        })
        .or_else(|| values.first())
        .copied();
    let value = match chosen {
        Some(Value::Object(o)) => get_ci(o, "value"),
        other => other,
    };
    let def = reg.leaf(path);
    let ty = def.map(|d| match d.ty {
        AttrType::Complex => d.sub("value").map(|v| v.ty).unwrap_or(AttrType::Complex),
        t => t,
    });
    let case_exact = reg.case_exact(path);
    match value {
        None | Some(Value::Null) => Key::Missing,
        Some(Value::Bool(b)) => Key::Bool(*b),
        Some(Value::Number(n)) => n.as_f64().map(Key::Number).unwrap_or(Key::Missing),
        Some(Value::String(s)) => {
            if ty == Some(AttrType::DateTime) {
                if let Some(t) = parse_datetime(s) {
                    return Key::Time(t);
                }
            }
            Key::Text(if case_exact {
                s.clone()
            } else {
                s.to_lowercase()
            })
        }
        Some(_) => Key::Missing,
    }
}

/// The first `k` items of a sort, kept while resources stream past: its
/// memory is bounded by `k` (for a page, `startIndex + count - 1`), not
/// by how many resources are offered. Orders as [`sort_resources`] does;
/// equal keys keep the order they were offered in (the store's id order).
pub struct TopK<T> {
    k: usize,
    path: AttrPath,
    descending: bool,
    offered: usize,
    /// The kept items, the one that sorts last on top.
    heap: BinaryHeap<Ranked<T>>,
}

struct Ranked<T> {
    key: Key,
    seq: usize,
    descending: bool,
    item: T,
}

impl<T> Ord for Ranked<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        let o = cmp_keys(&self.key, &other.key);
        let o = if self.descending { o.reverse() } else { o };
        o.then(self.seq.cmp(&other.seq))
    }
}
impl<T> PartialOrd for Ranked<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> PartialEq for Ranked<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<T> Eq for Ranked<T> {}

impl<T> TopK<T> {
    pub fn new(path: &AttrPath, descending: bool, k: usize) -> TopK<T> {
        TopK {
            k,
            path: path.clone(),
            descending,
            offered: 0,
            heap: BinaryHeap::new(),
        }
    }

    /// Offers one resource (and what stands for it in the result); kept
    /// only while it is among the first `k`.
    pub fn offer(&mut self, resource: &Value, reg: &SchemaRegistry, item: T) {
        let seq = self.offered;
        self.offered += 1;
        if self.k == 0 {
            return;
        }
        let ranked = Ranked {
            key: sort_key(resource, &self.path, reg),
            seq,
            descending: self.descending,
            item,
        };
        if self.heap.len() < self.k {
            self.heap.push(ranked);
        } else if self.heap.peek().is_some_and(|last| ranked < *last) {
            self.heap.pop();
            self.heap.push(ranked);
        }
    }

    /// The kept items, in sort order.
    pub fn into_sorted(self) -> Vec<T> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|r| r.item)
            .collect()
    }
}

/// Sorts by `path` (stable: equal keys keep their order), comparing strings
/// with the attribute's case-exactness. Resources with no value come last
/// in ascending order and first in descending order (RFC 7644 §3.4.2.3).
pub fn sort_resources(
    resources: &mut [Value],
    path: &AttrPath,
    descending: bool,
    reg: &SchemaRegistry,
) {
    let order = sort_order(resources, path, descending, reg);
    let mut taken: Vec<Option<Value>> = resources.iter_mut().map(|r| Some(r.take())).collect();
    for (slot, i) in resources.iter_mut().zip(order) {
        *slot = taken[i].take().unwrap_or(Value::Null);
    }
}

/// The order [`sort_resources`] would give, as indexes into `resources`.
pub fn sort_order(
    resources: &[Value],
    path: &AttrPath,
    descending: bool,
    reg: &SchemaRegistry,
) -> Vec<usize> {
    let mut keyed: Vec<(Key, usize)> = resources
        .iter()
        .enumerate()
        .map(|(i, r)| (sort_key(r, path, reg), i))
        .collect();
    keyed.sort_by(|(a, i), (b, j)| {
        let o = cmp_keys(a, b);
        let o = if descending { o.reverse() } else { o };
        o.then(i.cmp(j))
    });
    keyed.into_iter().map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LIMITS: PageLimits = PageLimits {
        default: 100,
        max: 1000,
    };

    fn params(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn paging_edges() {
        let q = ListQuery::from_params(&params(&[]), LIMITS).unwrap();
        assert_eq!((q.start_index, q.count), (1, 100));
        let q = ListQuery::from_params(&params(&[("startIndex", "-5"), ("COUNT", "-1")]), LIMITS)
            .unwrap();
        assert_eq!((q.start_index, q.count), (1, 0));
        let q = ListQuery::from_params(&params(&[("startIndex", "0"), ("count", "5000")]), LIMITS)
            .unwrap();
        assert_eq!((q.start_index, q.count), (1, 1000));
        let q = ListQuery::from_params(
            &params(&[("startIndex", "99999999999999999999999"), ("count", " 7 ")]),
            LIMITS,
        )
        .unwrap();
        assert_eq!((q.start_index, q.count), (i64::MAX as usize, 7));
        let e = ListQuery::from_params(&params(&[("count", "ten")]), LIMITS).unwrap_err();
        assert_eq!(
            (e.status, e.scim_type),
            (400, Some(crate::scim::ScimType::InvalidValue))
        );
        let e = ListQuery::from_params(&params(&[("startIndex", "1.5")]), LIMITS).unwrap_err();
        assert_eq!(e.status, 400);
    }

    #[test]
    fn sort_and_filter_parameters() {
        let q = ListQuery::from_params(
            &params(&[
                ("sortBy", "name.familyName"),
                ("sortOrder", "Descending"),
                ("filter", ""),
            ]),
            LIMITS,
        )
        .unwrap();
        assert_eq!(q.sort_by, Some(AttrPath::with_sub("name", "familyName")));
        assert!(q.descending && q.filter.is_none());
        assert!(ListQuery::from_params(&params(&[("sortOrder", "up")]), LIMITS).is_err());
        let e = ListQuery::from_params(&params(&[("sortBy", "a b")]), LIMITS).unwrap_err();
        assert_eq!(e.scim_type, Some(crate::scim::ScimType::InvalidPath));
        let e = ListQuery::from_params(&params(&[("filter", "userName eq")]), LIMITS).unwrap_err();
        assert_eq!(e.scim_type, Some(crate::scim::ScimType::InvalidFilter));
    }

    #[test]
    fn search_request_body() {
        let q = ListQuery::from_search_request(
            &json!({
                "schemas": [SEARCH_REQUEST_URN],
                "attributes": ["userName"],
                "filter": "userName sw \"a\"",
                "startIndex": 2,
                "count": "3",
                "sortBy": "userName",
                "sortOrder": "descending"
            }),
            LIMITS,
        )
        .unwrap();
        assert_eq!((q.start_index, q.count, q.descending), (2, 3, true));
        assert!(q.filter.is_some());
        assert!(!q.projection.is_default());
        assert!(ListQuery::from_search_request(&json!({"schemas": ["urn:x"]}), LIMITS).is_err());
        assert!(ListQuery::from_search_request(&json!({"filter": 3}), LIMITS).is_err());
        assert!(ListQuery::from_search_request(&json!([]), LIMITS).is_err());
        let q = ListQuery::from_search_request(&json!({}), LIMITS).unwrap();
        assert_eq!((q.start_index, q.count), (1, 100));
    }

    /// The bounded top-k gives the first k of the full sort, ties in the
    /// order offered, whatever k and the direction.
    #[test]
    fn top_k_is_the_head_of_the_full_sort() {
        let reg = SchemaRegistry::users(Vec::new());
        let rs: Vec<Value> = (0..60)
            .map(|i| {
                let mut r =
                    json!({"id": format!("{i:03}"), "userName": format!("u{}", (i * 7) % 13)});
                if i % 5 == 0 {
                    r["name"] = json!({"familyName": if i % 2 == 0 { "Z" } else { "a" }});
                }
                r
            })
            .collect();
        for path in [
            AttrPath::new("userName"),
            AttrPath::with_sub("name", "familyName"),
        ] {
            for descending in [false, true] {
                let mut full = rs.clone();
                sort_resources(&mut full, &path, descending, &reg);
                let full: Vec<String> = full.iter().map(|r| r["id"].to_string()).collect();
                for k in [0, 1, 7, 59, 60, 100] {
                    let mut top = TopK::new(&path, descending, k);
                    for r in &rs {
                        top.offer(r, &reg, r["id"].to_string());
                    }
                    let got = top.into_sorted();
                    assert_eq!(got, full[..k.min(60)], "{path} desc={descending} k={k}");
                }
            }
        }
    }

    #[test]
    fn sorting_respects_case_exactness_type_and_missing_values() {
        let reg = SchemaRegistry::users(Vec::new());
        let mut rs = vec![
            json!({"id": "1", "userName": "bob", "externalId": "b"}),
            json!({"id": "2", "userName": "Alice", "externalId": "B"}),
            json!({"id": "3", "userName": "carol"}),
            json!({"id": "4", "userName": "alice2", "externalId": "a"}),
        ];
        let ids = |rs: &[Value]| {
            rs.iter()
                .map(|r| r["id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        sort_resources(&mut rs, &AttrPath::new("userName"), false, &reg);
        assert_eq!(
            ids(&rs),
            ["2", "4", "1", "3"],
            "userName is case-insensitive"
        );
        // externalId is caseExact: "B" < "a" < "b"; the missing one is last.
        sort_resources(&mut rs, &AttrPath::new("externalId"), false, &reg);
        assert_eq!(ids(&rs), ["2", "4", "1", "3"]);
        sort_resources(&mut rs, &AttrPath::new("externalId"), true, &reg);
        assert_eq!(ids(&rs), ["3", "1", "4", "2"]);

        let mut rs = vec![
            json!({"id": "1", "emails": [{"value": "z@x"}, {"value": "a@x", "primary": true}]}),
            json!({"id": "2", "emails": [{"value": "m@x"}]}),
            json!({"id": "3", "meta": {"created": "2024-01-02T00:00:00Z"}}),
        ];
        sort_resources(&mut rs, &AttrPath::new("emails"), false, &reg);
        assert_eq!(ids(&rs), ["1", "2", "3"], "the primary email counts");
        let mut rs = vec![
            json!({"id": "1", "meta": {"created": "2024-01-02T00:00:00+01:00"}}),
            json!({"id": "2", "meta": {"created": "2024-01-01T23:30:00Z"}}),
        ];
        sort_resources(&mut rs, &AttrPath::with_sub("meta", "created"), false, &reg);
        assert_eq!(ids(&rs), ["1", "2"], "dateTimes compare as instants");
    }
}
