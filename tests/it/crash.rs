//! Crash safety for real: the daemon binary under a load of mixed writes
//! from several clients (users created, retitled, renamed, deactivated and
//! reactivated, deleted; groups created with members, members added and
//! removed, groups deleted) is killed with SIGKILL at random moments and
//! restarted; at the end the daemon and the directory must hold exactly
//! what the acknowledged responses say, members included, nothing missing
//! and nothing extra.
//!
//! A request without an answer has an unknown outcome (the daemon may
//! have made it durable just before dying); its client asks the restarted
//! daemon what it has, which is final, then checks every other state it
//! was acknowledged against the restarted daemon, and carries on. Unknown
//! outcomes are bounded (at most one per client per kill), any answer
//! other than the expected success fails the test, and most kills must
//! land with acknowledged entries not yet applied.

use std::collections::{BTreeSet, HashMap};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use scim2ldap_slapd::{Slapd, SlapdOptions};

use crate::harness::{cli, compare_with_directory, config_text, dump_all, MAPPING};

const CLIENTS: usize = 4;
const WRITES_PER_CLIENT: usize = 500;
const USERS_PER_CLIENT: usize = 20;
const GROUPS_PER_CLIENT: usize = 3;
/// Kill the daemon when this many writes have been answered.
const KILL_AT: &[usize] = &[150, 450, 800, 1150, 1500, 1850];

/// xorshift64*: enough randomness for a test, reproducible from its seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The daemon binary and how to (re)start it.
struct Daemon {
    dir: std::path::PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Daemon {
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_scim2ldap"))
            .args(["serve", "--config"])
            .arg(self.dir.join("config.toml"))
            .env("SCIM2LDAP_LOG", "warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn the daemon");
        self.child = Some(child);
    }

    /// SIGKILL, and wait for the process to be gone.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}/scim/v2", self.port)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

type Http = Client<HttpConnector, Full<Bytes>>;

/// One request; `Err` when the outcome is unknown (no answer).
async fn call(
    client: &Http,
    token: &str,
    method: &str,
    url: &str,
    body: Option<Value>,
) -> Result<(u16, Value), String> {
    let req = Request::builder()
        .method(method)
        .uri(url)
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/scim+json")
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .unwrap();
    let fut = async {
        let resp = client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        Ok((status, v))
    };
    tokio::time::timeout(Duration::from_secs(15), fut)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// One user as the acknowledged responses say.
#[derive(Clone, Debug, PartialEq)]
struct UserState {
    id: String,
    name: String,
    title: String,
    active: bool,
}

/// One group as the acknowledged responses say: member ids.
#[derive(Clone, Debug, PartialEq)]
struct GroupState {
    id: String,
    name: String,
    members: BTreeSet<String>,
}

/// What one client expects: a slot per user and per group it owns, empty
/// when the resource does not exist (never created, or deleted).
#[derive(Default)]
struct Expected {
    users: Vec<Option<UserState>>,
    groups: Vec<Option<GroupState>>,
}

/// What one client did.
#[derive(Default)]
struct Outcome {
    expected: Expected,
    acknowledged: usize,
    unknown: usize,
    /// Acknowledged states that a restarted daemon no longer had.
    lost: Vec<String>,
}

fn user_state(v: &Value) -> UserState {
    UserState {
        id: v["id"].as_str().unwrap_or_default().to_string(),
        name: v["userName"].as_str().unwrap_or_default().to_string(),
        title: v["title"].as_str().unwrap_or_default().to_string(),
        active: v["active"] != Value::Bool(false),
    }
}

fn group_state(v: &Value) -> GroupState {
    GroupState {
        id: v["id"].as_str().unwrap_or_default().to_string(),
        name: v["displayName"].as_str().unwrap_or_default().to_string(),
        members: v["members"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter_map(|m| m["value"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// GET `url` from the (restarted) daemon until it answers: the resource,
/// or `None` on 404. A filter URL gives its first result.
async fn truth(client: &Http, token: &str, url: &str) -> Option<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match call(client, token, "GET", url, None).await {
            Ok((200, v)) if v.get("Resources").is_some() => {
                return v["Resources"].get(0).cloned();
            }
            Ok((200, v)) => return Some(v),
            Ok((404, _)) => return None,
            _ => {}
        }
        assert!(Instant::now() < deadline, "the daemon did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a client sends next, and how to update its expectations if it is
/// acknowledged.
enum Op {
    CreateUser(usize, String),
    PatchUser(usize, UserState),
    DeleteUser(usize),
    CreateGroup(usize, String, BTreeSet<String>),
    PatchGroup(usize, BTreeSet<String>),
    DeleteGroup(usize),
}

fn patch_op(path: &str, value: Value) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": path, "value": value}]
    })
}

fn members_op(op: &str, id: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": op, "path": "members", "value": [{"value": id}]}]
    })
}

async fn client_load(
    with_groups: bool,
    c: usize,
    seed: u64,
    token: String,
    base: String,
    progress: Arc<AtomicUsize>,
) -> Outcome {
    let client: Http = Client::builder(TokioExecutor::new()).build_http();
    let mut rng = Rng(seed ^ (c as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut out = Outcome {
        expected: Expected {
            users: vec![None; USERS_PER_CLIENT],
            groups: vec![None; GROUPS_PER_CLIENT],
        },
        ..Default::default()
    };
    for step in 0..WRITES_PER_CLIENT {
        let e = &out.expected;
        let live: Vec<&UserState> = e.users.iter().flatten().collect();
        // A quarter of the writes go to groups, once there are users.
        let (method, url, body, ok_status, op) = if with_groups
            && !live.is_empty()
            && rng.below(4) == 0
        {
            let slot = rng.below(GROUPS_PER_CLIENT as u64) as usize;
            match &e.groups[slot] {
                None => {
                    let name = format!("c{c}-g{slot}-{step}");
                    let members: BTreeSet<String> = live
                        .iter()
                        .filter(|_| rng.below(3) == 0)
                        .map(|u| u.id.clone())
                        .collect();
                    let body = json!({"displayName": name,
                        "members": members.iter().map(|m| json!({"value": m})).collect::<Vec<_>>()});
                    (
                        "POST",
                        format!("{base}/Groups"),
                        Some(body),
                        201,
                        Op::CreateGroup(slot, name, members),
                    )
                }
                Some(g) if rng.below(10) == 0 => (
                    "DELETE",
                    format!("{base}/Groups/{}", g.id),
                    None,
                    204,
                    Op::DeleteGroup(slot),
                ),
                Some(g) => {
                    let u = live[rng.below(live.len() as u64) as usize];
                    let mut members = g.members.clone();
                    let op = if members.remove(&u.id) {
                        "remove"
                    } else {
                        members.insert(u.id.clone());
                        "add"
                    };
                    (
                        "PATCH",
                        format!("{base}/Groups/{}", g.id),
                        Some(members_op(op, &u.id)),
                        204,
                        Op::PatchGroup(slot, members),
                    )
                }
            }
        } else {
            let slot = rng.below(USERS_PER_CLIENT as u64) as usize;
            match &e.users[slot] {
                None => {
                    let name = format!("c{c}-u{slot}-{step}");
                    let body = json!({
                        "userName": name,
                        "name": {"givenName": "G", "familyName": format!("F {name}")},
                        "title": format!("t{step}"),
                    });
                    (
                        "POST",
                        format!("{base}/Users"),
                        Some(body),
                        201,
                        Op::CreateUser(slot, name),
                    )
                }
                Some(u) => {
                    let mut next = u.clone();
                    let (body, ok_status) = match rng.below(100) {
                        0..=9 => (None, 204),
                        10..=19 => {
                            next.name = format!("c{c}-u{slot}-{step}");
                            (Some(patch_op("userName", json!(next.name))), 200)
                        }
                        20..=34 => {
                            next.active = !u.active;
                            (Some(patch_op("active", json!(next.active))), 200)
                        }
                        _ => {
                            next.title = format!("t{step}");
                            (Some(patch_op("title", json!(next.title))), 200)
                        }
                    };
                    let url = format!("{base}/Users/{}", u.id);
                    match body {
                        None => ("DELETE", url, None, 204, Op::DeleteUser(slot)),
                        Some(b) => ("PATCH", url, Some(b), ok_status, Op::PatchUser(slot, next)),
                    }
                }
            }
        };
        match call(&client, &token, method, &url, body).await {
            Ok((status, v)) if status == ok_status => {
                out.acknowledged += 1;
                let e = &mut out.expected;
                match op {
                    Op::CreateUser(slot, _) => e.users[slot] = Some(user_state(&v)),
                    Op::PatchUser(slot, next) => {
                        assert_eq!(
                            user_state(&v),
                            next,
                            "client {c} step {step}: PATCH answered"
                        );
                        e.users[slot] = Some(next);
                    }
                    Op::DeleteUser(slot) => {
                        let id = e.users[slot].take().unwrap().id;
                        // The daemon takes a deleted user out of its groups.
                        for g in e.groups.iter_mut().flatten() {
                            g.members.remove(&id);
                        }
                    }
                    Op::CreateGroup(slot, _, members) => {
                        let g = group_state(&v);
                        assert_eq!(g.members, members, "client {c} step {step}: POST answered");
                        e.groups[slot] = Some(g);
                    }
                    Op::PatchGroup(slot, members) => {
                        e.groups[slot].as_mut().unwrap().members = members;
                    }
                    Op::DeleteGroup(slot) => e.groups[slot] = None,
                }
            }
            // Any other answer, a 5xx included, is a failure: only a
            // request without an answer has an unknown outcome (a daemon
            // answering 503 to everything must not pass).
            Ok((status, v)) => {
                panic!("client {c} step {step}: {method} {url} answered {status}: {v}")
            }
            Err(_) => {
                // No answer: the restarted daemon knows whether it was
                // made durable. Then every other acknowledged state is
                // checked against it: the crash must have kept them all.
                out.unknown += 1;
                let e = &mut out.expected;
                match op {
                    Op::CreateUser(slot, name) => {
                        let url = format!("{base}/Users?filter=userName%20eq%20%22{name}%22");
                        e.users[slot] = truth(&client, &token, &url).await.map(|v| user_state(&v));
                    }
                    Op::PatchUser(slot, _) | Op::DeleteUser(slot) => {
                        let id = e.users[slot].as_ref().unwrap().id.clone();
                        let now = truth(&client, &token, &format!("{base}/Users/{id}")).await;
                        if now.is_none() {
                            for g in e.groups.iter_mut().flatten() {
                                g.members.remove(&id);
                            }
                        }
                        e.users[slot] = now.map(|v| user_state(&v));
                    }
                    Op::CreateGroup(slot, name, _) => {
                        let url = format!("{base}/Groups?filter=displayName%20eq%20%22{name}%22");
                        e.groups[slot] =
                            truth(&client, &token, &url).await.map(|v| group_state(&v));
                    }
                    Op::PatchGroup(slot, _) | Op::DeleteGroup(slot) => {
                        let id = e.groups[slot].as_ref().unwrap().id.clone();
                        let now = truth(&client, &token, &format!("{base}/Groups/{id}")).await;
                        e.groups[slot] = now.map(|v| group_state(&v));
                    }
                }
                check_all(&client, &token, &base, &out.expected, &mut out.lost).await;
            }
        }
        progress.fetch_add(1, Ordering::SeqCst);
    }
    out
}

/// Compares every resource a client expects with what the daemon has.
async fn check_all(client: &Http, token: &str, base: &str, e: &Expected, lost: &mut Vec<String>) {
    for u in e.users.iter().flatten() {
        let now = truth(client, token, &format!("{base}/Users/{}", u.id)).await;
        if now.as_ref().map(user_state).as_ref() != Some(u) {
            lost.push(format!("acknowledged {u:?}, the daemon has {now:?}"));
        }
    }
    for g in e.groups.iter().flatten() {
        let now = truth(client, token, &format!("{base}/Groups/{}", g.id)).await;
        if now.as_ref().map(group_state).as_ref() != Some(g) {
            lost.push(format!("acknowledged {g:?}, the daemon has {now:?}"));
        }
    }
}

async fn wait_healthy(base: &str) {
    let client: Http = Client::builder(TokioExecutor::new()).build_http();
    let url = base.replace("/scim/v2", "/healthz");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let req = Request::builder()
            .uri(&url)
            .body(Full::new(Bytes::new()))
            .unwrap();
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(2), client.request(req)).await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "the daemon did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Users only: creates, retitles, renames, deactivations, deletes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_nothing_acknowledged() {
    sigkill_under_load(false).await
}

/// Users and groups (members added and removed, groups deleted, members
/// renamed and deleted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_with_groups_loses_nothing_acknowledged() {
    sigkill_under_load(true).await
}

async fn sigkill_under_load(with_groups: bool) {
    let started = Instant::now();
    let seed = std::env::var("SCIM2LDAP_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash test seed {seed} (set SCIM2LDAP_CRASH_SEED to repeat)");
    let slapd = tokio::task::spawn_blocking(|| {
        Slapd::start(SlapdOptions {
            nosync: true,
            ..Default::default()
        })
    })
    .await
    .unwrap()
    .expect("slapd");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("scim2ldap-crash-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("mapping.toml"), MAPPING).unwrap();
    let token = scim2ldap::token::generate().unwrap();
    std::fs::write(
        dir.join("config.toml"),
        config_text(&slapd, &token, &format!("127.0.0.1:{port}")),
    )
    .unwrap();
    let daemon = Arc::new(Mutex::new(Daemon {
        dir: dir.clone(),
        port,
        child: None,
    }));
    let base = daemon.lock().await.base();
    daemon.lock().await.spawn();
    wait_healthy(&base).await;

    let progress = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let config = dir.join("config.toml").display().to_string();
    let killer = {
        let (daemon, progress, done, base, config) = (
            daemon.clone(),
            progress.clone(),
            done.clone(),
            base.clone(),
            config.clone(),
        );
        tokio::spawn(async move {
            let mut rng = Rng(seed);
            let mut kills = 0;
            // Entries acknowledged but not yet applied when each kill hit,
            // as the store reports them before the restart.
            let mut pending_after = Vec::new();
            for &at in KILL_AT {
                while progress.load(Ordering::SeqCst) < at {
                    if done.load(Ordering::SeqCst) {
                        return (kills, pending_after);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                // A random moment a little after the threshold.
                tokio::time::sleep(Duration::from_millis(rng.below(60))).await;
                let mut d = daemon.lock().await;
                d.kill();
                kills += 1;
                // What the kill left pending, read from the store itself
                // before the restarted daemon's writer can drain it (the
                // command opens the store when no daemon answers).
                let mut pending = None;
                for _ in 0..50 {
                    let c = config.clone();
                    let (ok, out, _) = tokio::task::spawn_blocking(move || {
                        cli(&["journal", "--config", &c, "stats"])
                    })
                    .await
                    .unwrap();
                    if ok {
                        pending = Some(stat(&out, "pending"));
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                pending_after.push(pending.expect("journal stats after a kill"));
                d.spawn();
                drop(d);
                wait_healthy(&base).await;
            }
            (kills, pending_after)
        })
    };
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        clients.push(tokio::spawn(client_load(
            with_groups,
            c,
            seed,
            token.clone(),
            base.clone(),
            progress.clone(),
        )));
    }
    let mut outcomes = Vec::new();
    for c in clients {
        outcomes.push(c.await.unwrap());
    }
    done.store(true, Ordering::SeqCst);
    let (kills, pending_after) = killer.await.unwrap();
    let load_time = started.elapsed();
    let total = CLIENTS * WRITES_PER_CLIENT;
    let acknowledged: usize = outcomes.iter().map(|o| o.acknowledged).sum();
    let unknown: usize = outcomes.iter().map(|o| o.unknown).sum();
    let lost: Vec<&String> = outcomes.iter().flat_map(|o| &o.lost).collect();

    // Wait until the journal is drained, asking the running daemon through
    // the command line (its admin socket).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let c = config.clone();
        let (ok, out, err) =
            tokio::task::spawn_blocking(move || cli(&["journal", "--config", &c, "stats"]))
                .await
                .unwrap();
        assert!(ok, "{out}{err}");
        if out.contains(&format!("{:<18} 0\n", "pending"))
            && out.contains(&format!("{:<18} 0\n", "parked"))
        {
            break;
        }
        if Instant::now() > deadline {
            let c = config.clone();
            let (_, failed, _) = tokio::task::spawn_blocking(move || {
                cli(&["journal", "--config", &c, "list", "--state", "failed"])
            })
            .await
            .unwrap();
            panic!("seed {seed}: journal not drained:\n{out}\nparked:\n{failed}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The daemon's view: every user and group, as the clients expect them.
    let client: Http = Client::builder(TokioExecutor::new()).build_http();
    let mut problems: Vec<String> = lost.iter().map(|l| format!("lost: {l}")).collect();
    let mut users = Vec::new();
    let mut groups = Vec::new();
    for (path, out) in [("Users", &mut users), ("Groups", &mut groups)] {
        let (status, v) = call(
            &client,
            &token,
            "GET",
            &format!("{base}/{path}?count=10000"),
            None,
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "{v}");
        *out = v["Resources"].as_array().cloned().unwrap_or_default();
    }
    let want_users: HashMap<String, UserState> = outcomes
        .iter()
        .flat_map(|o| o.expected.users.iter().flatten())
        .map(|u| (u.id.clone(), u.clone()))
        .collect();
    let want_groups: HashMap<String, GroupState> = outcomes
        .iter()
        .flat_map(|o| o.expected.groups.iter().flatten())
        .map(|g| (g.id.clone(), g.clone()))
        .collect();
    let have_users: HashMap<String, UserState> = users
        .iter()
        .map(user_state)
        .map(|u| (u.id.clone(), u))
        .collect();
    let have_groups: HashMap<String, GroupState> = groups
        .iter()
        .map(group_state)
        .map(|g| (g.id.clone(), g))
        .collect();
    if have_users != want_users {
        problems.push(format!(
            "users: the daemon has {have_users:?}, acknowledged {want_users:?}"
        ));
    }
    if have_groups != want_groups {
        problems.push(format!(
            "groups: the daemon has {have_groups:?}, acknowledged {want_groups:?}"
        ));
    }
    // ... and the directory holds exactly that view, members included.
    let got = dump_all(&slapd).await;
    problems.extend(compare_with_directory(&slapd, &users, &groups, &got));

    let members: usize = want_groups.values().map(|g| g.members.len()).sum();
    eprintln!(
        "crash test: {total} writes by {CLIENTS} clients, {acknowledged} acknowledged, {unknown} unknown outcomes resolved (at most {}), {kills} SIGKILLs (entries pending at each restart: {pending_after:?}), {} users and {} groups ({members} members) expected, load {:.1?}, total {:.1?}",
        kills * CLIENTS,
        want_users.len(),
        want_groups.len(),
        load_time,
        started.elapsed()
    );
    if !problems.is_empty() {
        let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        panic!(
            "seed {seed}: the directory or the daemon differs from the acknowledged writes:\n{}\n\ndaemon.log (last lines, newest first):\n{}",
            problems.join("\n"),
            tail.join("\n")
        );
    }
    assert!(kills >= 5, "only {kills} kills happened");
    // The bound on unknown outcomes: a client has at most one request
    // without an answer per kill (the one in flight, or the first one
    // refused while the daemon restarts; it then waits for the restarted
    // daemon before sending more), so at most CLIENTS per kill.
    assert!(
        unknown <= kills * CLIENTS,
        "{unknown} unknown outcomes for {kills} kills of {CLIENTS} clients"
    );
    // Every other write was acknowledged: nothing was answered with an
    // error (that fails at once), so at least total - the bound.
    assert_eq!(acknowledged + unknown, total);
    assert!(
        acknowledged >= total - kills * CLIENTS,
        "{acknowledged} acknowledged"
    );
    // The kills hit work in progress: most restarts found entries that were
    // acknowledged but not yet applied.
    let with_work = pending_after.iter().filter(|p| **p > 0).count();
    assert!(
        with_work * 2 >= kills,
        "only {with_work} of {kills} kills landed with entries pending: {pending_after:?}"
    );
    daemon.lock().await.kill();
}

/// A number from `journal stats` output, e.g. `stat(out, "pending")`.
fn stat(out: &str, key: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or(u64::MAX)
}
