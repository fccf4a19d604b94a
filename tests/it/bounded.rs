//! Bounded work per request, through a real socket: the cap on members in
//! one request, the cap on filter terms, a sorted page (a bounded top-k)
//! against a full sort, large groups in list responses, and `/healthz`
//! while large group writes run. One slapd and one daemon for the module.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{get_text, Harness};

/// The members cap of this module's daemon; the body limit is raised so
/// that a 50,000-member body reaches the API.
const CAP: usize = 60_000;

async fn harness() -> Harness {
    let mut h = Harness::start().await;
    let path = h.dir.join("config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("[server]\n"), "{text}");
    let text = text.replacen(
        "[server]\n",
        &format!("[server]\nmax_members_per_request = {CAP}\nmax_body_bytes = 8388608\n"),
        1,
    );
    std::fs::write(&path, text).unwrap();
    h.stop_daemon().await;
    h.start_daemon().await;
    h
}

fn members(ids: impl IntoIterator<Item = String>) -> Value {
    Value::Array(ids.into_iter().map(|id| json!({"value": id})).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_per_request_is_bounded() {
    let h = harness().await;
    member_cap(&h).await;
    filter_term_cap(&h).await;
    let ids = users(&h, 1001).await;
    sorted_pages_match_a_full_sort(&h).await;
    large_groups_in_lists(&h, &ids).await;
    healthz_during_large_group_writes(&h).await;
}

/// Over `server.max_members_per_request`: 400 invalidValue naming the cap
/// and the key, for POST, PUT and PATCH, counted before duplicates are
/// dropped or ids looked up (the ids here exist nowhere).
async fn member_cap(h: &Harness) {
    let over = members((0..=CAP).map(|i| format!("nobody-{}", i % 10)));
    let check = |r: crate::harness::Reply| {
        assert_eq!(r.status, 400, "{}", r.body);
        assert_eq!(r.body["scimType"], "invalidValue", "{}", r.body);
        let detail = r.body["detail"].as_str().unwrap_or_default().to_string();
        assert!(
            detail.contains(&CAP.to_string()) && detail.contains("server.max_members_per_request"),
            "{detail}"
        );
    };
    check(
        h.send(
            "POST",
            "/Groups",
            Some(json!({"displayName": "too-many", "members": over})),
        )
        .await,
    );
    let r = h
        .send("POST", "/Groups", Some(json!({"displayName": "capped"})))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let gid = r.body["id"].as_str().unwrap().to_string();
    check(
        h.send(
            "PUT",
            &format!("/Groups/{gid}"),
            Some(json!({"displayName": "capped", "members": over})),
        )
        .await,
    );
    check(
        h.send(
            "PATCH",
            &format!("/Groups/{gid}"),
            Some(
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "add", "path": "members", "value": over}]}),
            ),
        )
        .await,
    );
    // At the cap, the request is judged on its ids: unknown ones are 400
    // for that reason.
    let at = members((0..CAP).map(|i| format!("nobody-{i}")));
    let r = h
        .send(
            "PATCH",
            &format!("/Groups/{gid}"),
            Some(
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "add", "path": "members", "value": at}]}),
            ),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("no User or Group"),
        "{}",
        r.body
    );
}

/// More than 100 comparisons in one filter: 400 invalidFilter naming the
/// cap; 100 are served.
async fn filter_term_cap(h: &Harness) {
    let filter = |n: usize| {
        (0..n)
            .map(|i| format!("userName eq \"u{i}\""))
            .collect::<Vec<_>>()
            .join(" or ")
    };
    let q = |f: String| format!("/Users?filter={}", urlencoding(&f));
    let r = h.send("GET", &q(filter(101)), None).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["scimType"], "invalidFilter");
    assert!(
        r.body["detail"].as_str().unwrap().contains("at most 100"),
        "{}",
        r.body
    );
    let r = h.send("GET", &q(filter(100)), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = h
        .send(
            "POST",
            "/Users/.search",
            Some(
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                "filter": filter(101)}),
            ),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
}

fn urlencoding(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `n` users, 8 requests at a time; display names repeat (in different
/// case) so that a sort has ties, and one in five shares a familyName.
async fn users(h: &Harness, n: usize) -> Vec<String> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let mut ids = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(8) {
        let mut set = Vec::new();
        for &i in chunk {
            let family = if i % 5 == 0 {
                "F".to_string()
            } else {
                format!("F{}", i % 11)
            };
            let body = json!({
                "userName": format!("bounded{i:04}"),
                "displayName": if i % 2 == 0 { format!("Name {}", i % 37) } else { format!("name {}", i % 37) },
                "name": {"givenName": "G", "familyName": family},
            });
            let req = hyper::Request::post(format!("{}/Users", h.base))
                .header("Authorization", format!("Bearer {}", h.token))
                .header("Content-Type", "application/scim+json")
                .body(http_body_util::Full::new(bytes::Bytes::from(
                    body.to_string(),
                )))
                .unwrap();
            let client = client.clone();
            set.push(tokio::spawn(async move {
                use http_body_util::BodyExt;
                let resp = client.request(req).await.unwrap();
                let status = resp.status().as_u16();
                let bytes = resp.into_body().collect().await.unwrap().to_bytes();
                (status, serde_json::from_slice::<Value>(&bytes).unwrap())
            }));
        }
        for t in set {
            let (status, body) = t.await.unwrap();
            assert_eq!(status, 201, "{body}");
            ids.push(body["id"].as_str().unwrap().to_string());
        }
    }
    ids
}

/// A sorted page (bounded top-k of startIndex + count - 1) is the same
/// slice of a full sort done here, ties by id, in both directions, with
/// and without a filter; totalResults counts every match.
async fn sorted_pages_match_a_full_sort(h: &Harness) {
    // Everything, in id order, page by page (no sort: the store's pages).
    let mut all = Vec::new();
    let mut start = 1;
    loop {
        let r = h
            .send(
                "GET",
                &format!("/Users?startIndex={start}&count=1000"),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let page = r.body["Resources"].as_array().unwrap().clone();
        if page.is_empty() {
            break;
        }
        start += page.len();
        all.extend(page);
    }
    assert_eq!(all.len(), 1001);
    let key = |r: &Value| r["displayName"].as_str().unwrap().to_lowercase();
    let id = |r: &Value| r["id"].as_str().unwrap().to_string();
    for descending in [false, true] {
        let mut sorted = all.clone();
        sorted.sort_by(|a, b| {
            let o = key(a).cmp(&key(b));
            let o = if descending { o.reverse() } else { o };
            o.then(id(a).cmp(&id(b)))
        });
        let order = if descending {
            "descending"
        } else {
            "ascending"
        };
        for (start, count) in [(1, 10), (95, 30), (990, 50), (1001, 5), (2000, 5)] {
            let r = h
                .send(
                    "GET",
                    &format!("/Users?sortBy=displayName&sortOrder={order}&startIndex={start}&count={count}"),
                    None,
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(r.body["totalResults"], 1001);
            let got: Vec<String> = r.body["Resources"]
                .as_array()
                .unwrap()
                .iter()
                .map(id)
                .collect();
            let want: Vec<String> = sorted.iter().skip(start - 1).take(count).map(id).collect();
            assert_eq!(got, want, "{order} startIndex={start} count={count}");
        }
    }
    // With a filter that no index answers (streamed), sorted by a
    // sub-attribute some users lack.
    let filter = urlencoding("userName sw \"bounded00\" and name.familyName pr");
    let r = h
        .send(
            "GET",
            &format!("/Users?filter={filter}&sortBy=name.familyName&startIndex=3&count=40"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut want: Vec<&Value> = all
        .iter()
        .filter(|r| r["userName"].as_str().unwrap().starts_with("bounded00"))
        .collect();
    assert_eq!(r.body["totalResults"], want.len());
    let fam = |r: &Value| r["name"]["familyName"].as_str().unwrap().to_lowercase();
    want.sort_by(|a, b| fam(a).cmp(&fam(b)).then(id(a).cmp(&id(b))));
    let want: Vec<String> = want.iter().skip(2).take(40).map(|r| id(r)).collect();
    let got: Vec<String> = r.body["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(id)
        .collect();
    assert_eq!(got, want);
    // Unsorted and filtered: pages of the id order, the count of all.
    let r = h
        .send(
            "GET",
            &format!("/Users?filter={filter}&startIndex=11&count=7"),
            None,
        )
        .await;
    let got: Vec<String> = r.body["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(id)
        .collect();
    let mut matching: Vec<String> = all
        .iter()
        .filter(|r| r["userName"].as_str().unwrap().starts_with("bounded00"))
        .map(id)
        .collect();
    matching.sort();
    assert_eq!(got, matching[10..17]);
}

/// In a list (and in the answer to a write), a group of more than 1,000
/// members comes without `members` unless `attributes` names them; by id
/// it always has them; a small group is listed with its members.
async fn large_groups_in_lists(h: &Harness, ids: &[String]) {
    let r = h
        .send(
            "POST",
            "/Groups",
            Some(json!({"displayName": "large", "members": members(ids.iter().cloned())})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let large = r.body["id"].as_str().unwrap().to_string();
    // The answer to the write does not repeat 1,001 members.
    assert!(r.body.get("members").is_none(), "{}", r.body);
    assert_eq!(r.body["displayName"], "large");
    let r = h
        .send(
            "POST",
            "/Groups",
            Some(json!({"displayName": "small", "members": members(ids[..3].iter().cloned())})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let small = r.body["id"].as_str().unwrap().to_string();

    let listed = |body: &Value, gid: &str| -> Value {
        body["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["id"] == gid)
            .cloned()
            .unwrap_or_else(|| panic!("{gid} not listed: {body}"))
    };
    let r = h.send("GET", "/Groups", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(listed(&r.body, &large).get("members").is_none());
    assert_eq!(listed(&r.body, &large)["displayName"], "large");
    assert_eq!(
        listed(&r.body, &small)["members"].as_array().map(Vec::len),
        Some(3)
    );
    let r = h
        .send("GET", "/Groups?attributes=members,displayName", None)
        .await;
    assert_eq!(
        listed(&r.body, &large)["members"].as_array().map(Vec::len),
        Some(1001)
    );
    let filter = urlencoding("displayName eq \"large\"");
    let r = h
        .send("GET", &format!("/Groups?filter={filter}"), None)
        .await;
    assert!(listed(&r.body, &large).get("members").is_none());
    let r = h.send("GET", &format!("/Groups/{large}"), None).await;
    assert_eq!(r.body["members"].as_array().map(Vec::len), Some(1001));
    // Asked for, the answer to a PUT has them.
    let r = h
        .send(
            "PUT",
            &format!("/Groups/{large}?attributes=members"),
            Some(json!({"displayName": "large", "members": members(ids.iter().cloned())})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["members"].as_array().map(Vec::len), Some(1001));
}

/// Four 50,000-member group POSTs at once (ids the store does not hold:
/// the case measured in the issue) while `/healthz` is polled: every
/// answer comes quickly. The bounds are loose for a loaded 2-core test
/// machine (median under 500 ms, none over 3 s); the benchmark measures
/// the real latency.
async fn healthz_during_large_group_writes(h: &Harness) {
    // The four clients run on threads of their own, so that building and
    // sending their bodies does not take the test runtime's workers, which
    // serve the daemon.
    let writes: Vec<_> = (0..4)
        .map(|w| {
            let body = json!({
                "displayName": format!("huge{w}"),
                "members": members((0..50_000).map(|i| format!("{w}-{i:08}-not-a-known-id"))),
            })
            .to_string();
            let (base, token) = (h.base.clone(), h.token.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let client = hyper_util::client::legacy::Client::builder(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .build_http::<http_body_util::Full<bytes::Bytes>>();
                    let req = hyper::Request::post(format!("{base}/Groups"))
                        .header("Authorization", format!("Bearer {token}"))
                        .header("Content-Type", "application/scim+json")
                        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                        .unwrap();
                    client.request(req).await.unwrap().status().as_u16()
                })
            })
        })
        .collect();
    let healthz = format!("http://{}/healthz", h.daemon().addr);
    let mut lat = Vec::new();
    while !writes.iter().all(|w| w.is_finished()) {
        let t = Instant::now();
        let (status, _) = get_text(&healthz).await;
        assert_eq!(status, 200);
        lat.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for w in writes {
        assert_eq!(w.join().unwrap(), 400, "unknown ids are refused");
    }
    assert!(!lat.is_empty());
    lat.sort();
    let (median, worst) = (lat[lat.len() / 2], lat[lat.len() - 1]);
    // Loose bounds: this runs beside the rest of the suite on a small
    // machine. Before, the parse and the member checks ran on the async
    // workers and /healthz stalled for seconds at a time.
    assert!(
        median < Duration::from_millis(500) && worst < Duration::from_secs(3),
        "/healthz while large group writes ran: median {median:?}, worst {worst:?} ({} polls)",
        lat.len()
    );
}
