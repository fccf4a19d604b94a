//! `--store-floor`: what the journal alone costs, beside what slapd costs
//! for the same operations, in one run (issue 15's question: can the
//! daemon spend no more CPU per operation than the directory it feeds,
//! with the journal in sled?).
//!
//! Four measurements, each as CPU ms per operation:
//! - slapd, for raw ldap3 adds and modifies (`raw.rs`), from its
//!   `/proc/<pid>/stat`;
//! - the store as the daemon uses it for a create and for an update, in
//!   this process: `Store::write` then `Store::commit` (durable, group
//!   commit) from the same number of clients, then the writer's share,
//!   `Store::entry` and `Store::mark_applied` with a link;
//! - sled alone: one insert of a snapshot-sized value and a flush per
//!   operation, from the same number of clients;
//! - sled alone without the flush.
//!
//! No HTTP, no SCIM, no LDAP client in the store's figures: they are a
//! floor under what the daemon can spend per operation while keeping its
//! journal in sled and acknowledging only what is on disk.

use std::sync::Arc;

use serde_json::{json, Value};

use scim2ldap::store::{Intent, Kind, Link, Store, Write};
use scim2ldap_slapd::Slapd;

use crate::daemon::run;
use crate::measure::{cpu_ms, status_mib, Procs};
use crate::raw::Raw;
use crate::Args;

/// A user as the daemon stores it (what `POST /Users` of the benchmark's
/// user i becomes).
fn stored_user(i: usize, id: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "id": id,
        "userName": format!("user{i:06}"),
        "name": {"givenName": format!("Given{i}"), "familyName": format!("Family{i}")},
        "emails": [{"type": "work", "value": format!("user{i:06}@example.com"), "primary": true}],
        "active": true,
        "meta": {
            "resourceType": "User",
            "created": "2026-12-03T00:00:00Z",
            "lastModified": "2026-12-03T00:00:00Z",
            "location": format!("https://scim.example.com/scim/v2/Users/{id}")
        }
    })
}

/// CPU ms of this process since `from`.
fn own_cpu(from: f64) -> f64 {
    cpu_ms(std::process::id()) - from
}

/// One line: what `what` cost per operation, and against slapd's.
fn line(what: &str, ms: f64, n: usize, slapd_ms_op: f64) {
    let per = ms / n as f64;
    println!(
        "{what:<44} {per:>8.3} ms/op   {:>5.2} × slapd's",
        per / slapd_ms_op
    );
}

pub async fn store_floor(args: &Args, slapd: &Slapd, procs: Procs) {
    let (n, c) = (args.users, args.clients);
    let raw = Raw::new(slapd, args.connections).await;
    // This process's CPU around the raw phases: what the LDAP client
    // (ldap3, tokio) costs per operation.
    let t = cpu_ms(std::process::id());
    let adds = raw.adds(procs, n, c).await;
    let client_add = own_cpu(t);
    let t = cpu_ms(std::process::id());
    let modifies = raw.modifies(procs, n, c).await;
    let client_mod = own_cpu(t);
    let (add_ms, mod_ms) = (adds.slapd_ms_op(), modifies.slapd_ms_op());
    println!("\nstore floor: {n} operations from {c} clients, CPU time per operation");
    println!("{:<44} {add_ms:>8.3} ms/op", "slapd, raw adds");
    println!("{:<44} {mod_ms:>8.3} ms/op", "slapd, raw modifies");
    line("ldap3 client, raw adds", client_add, n, add_ms);
    line("ldap3 client, raw modifies", client_mod, n, mod_ms);

    let dir = std::env::temp_dir().join(format!("scim2ldap-floor-{}", uuid::Uuid::new_v4()));
    let store = Store::open(&dir.join("store")).expect("open the store");
    let ids: Arc<Vec<String>> =
        Arc::new((0..n).map(|_| uuid::Uuid::new_v4().to_string()).collect());

    // Creates, durable before each "acknowledgement".
    let t = cpu_ms(std::process::id());
    let seqs = Arc::new(std::sync::Mutex::new(Vec::with_capacity(n)));
    {
        let (store, ids, seqs) = (store.clone(), ids.clone(), seqs.clone());
        run(n, c, move |_, i| {
            let (store, ids, seqs) = (store.clone(), ids.clone(), seqs.clone());
            async move {
                let mut user = stored_user(i, &ids[i]);
                let seq = store
                    .write(Write {
                        kind: Kind::User,
                        id: &ids[i],
                        resource: &mut user,
                        intent: Intent::Create,
                        members: None,
                    })
                    .expect("write");
                store.commit(seq).await.expect("commit");
                seqs.lock().unwrap().push(seq);
            }
        })
        .await;
    }
    let write_create = own_cpu(t);

    // The writer's share: read the entry, mark it applied with its link.
    let apply = |seqs: Vec<u64>| {
        let store = store.clone();
        let t = cpu_ms(std::process::id());
        for seq in seqs {
            let entry = store.entry(seq).expect("read").expect("an entry");
            let link = Link {
                dn: format!("uid={},ou=people,dc=example,dc=com", entry.id),
                uuid: Some(uuid::Uuid::new_v4().to_string()),
                adopted: false,
                applied: None,
            };
            store
                .mark_applied(&entry, Some(&link))
                .expect("mark applied");
        }
        own_cpu(t)
    };
    let applied_create = apply(std::mem::take(&mut *seqs.lock().unwrap()));

    // Updates (a PATCH of title and displayName): read, change, write, commit.
    let t = cpu_ms(std::process::id());
    {
        let (store, ids, seqs) = (store.clone(), ids.clone(), seqs.clone());
        run(n, c, move |_, i| {
            let (store, ids, seqs) = (store.clone(), ids.clone(), seqs.clone());
            async move {
                let mut user = store
                    .get(Kind::User, &ids[i])
                    .expect("read")
                    .expect("the user");
                user["title"] = json!(format!("Title {i}"));
                user["displayName"] = json!(format!("Display {i}"));
                let seq = store
                    .write(Write {
                        kind: Kind::User,
                        id: &ids[i],
                        resource: &mut user,
                        intent: Intent::Update { if_version: None },
                        members: None,
                    })
                    .expect("write");
                store.commit(seq).await.expect("commit");
                seqs.lock().unwrap().push(seq);
            }
        })
        .await;
    }
    let write_update = own_cpu(t);
    let applied_update = apply(std::mem::take(&mut *seqs.lock().unwrap()));
    // What reading every snapshot costs in memory (a filter no index
    // answers, a sort over the whole collection): this process's RSS
    // before and after two scans of every user. Reopened first, so that
    // the scans start from a cold cache as a restarted daemon's would.
    drop(store);
    let before = status_mib(std::process::id(), "VmRSS");
    let store = Store::open(&dir.join("store")).expect("reopen the store");
    let opened = status_mib(std::process::id(), "VmRSS");
    for _ in 0..2 {
        let read = store.scan(Kind::User).filter(|r| r.is_ok()).count();
        assert_eq!(read, n, "every user read back");
    }
    let scanned = status_mib(std::process::id(), "VmRSS");
    drop(store);

    // sled alone: a snapshot-sized insert and a flush per operation.
    let sled_dir = dir.join("sled");
    let db = sled::Config::new()
        .path(&sled_dir)
        .cache_capacity(scim2ldap::store::DEFAULT_CACHE_BYTES)
        .open()
        .expect("open sled");
    let value = serde_json::to_vec(&stored_user(0, &ids[0])).unwrap();
    // `keys` keys per operation (the first a snapshot, the others small),
    // with or without a flush before the operation ends.
    let sled_op = |keys: u8, flush: bool, offset: usize| {
        let (db, value) = (db.clone(), value.clone());
        async move {
            let t = cpu_ms(std::process::id());
            run(n, c, move |_, i| {
                let (db, value) = (db.clone(), value.clone());
                async move {
                    let key = |k: u8| {
                        let mut key = vec![k];
                        key.extend_from_slice(&((offset + i) as u64).to_be_bytes());
                        key
                    };
                    if keys == 1 {
                        db.insert(key(0), value).expect("insert");
                    } else {
                        let mut batch = sled::Batch::default();
                        batch.insert(key(0), value);
                        for k in 1..keys {
                            batch.insert(key(k), &b"0123456789abcdef"[..]);
                        }
                        db.apply_batch(batch).expect("batch");
                    }
                    if flush {
                        db.flush_async().await.expect("flush");
                    }
                }
            })
            .await;
            own_cpu(t)
        }
    };
    let sled_flush = sled_op(1, true, 0).await;
    let sled_bare = sled_op(1, false, n).await;
    // The fewest writes a journaled operation could make: snapshot,
    // journal entry and pending mark in one durable batch; then, applied,
    // the pending mark removed and the link written (two small keys).
    let sled_min = sled_op(3, true, 2 * n).await + sled_op(2, false, 3 * n).await;
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);

    line("store: create, write + commit", write_create, n, add_ms);
    line(
        "store: create, entry + mark applied",
        applied_create,
        n,
        add_ms,
    );
    line(
        "store: create, all",
        write_create + applied_create,
        n,
        add_ms,
    );
    line("store: update, write + commit", write_update, n, mod_ms);
    line(
        "store: update, entry + mark applied",
        applied_update,
        n,
        mod_ms,
    );
    line(
        "store: update, all",
        write_update + applied_update,
        n,
        mod_ms,
    );
    println!(
        "store: RSS {before:.1} MiB closed, {opened:.1} MiB opened with {n} users, {scanned:.1} MiB after reading every snapshot twice (cache {} MiB)",
        scim2ldap::store::DEFAULT_CACHE_BYTES >> 20
    );
    line("sled: one insert + flush", sled_flush, n, add_ms);
    line("sled: one insert", sled_bare, n, add_ms);
    line("sled: 3 keys + flush, then 2 keys", sled_min, n, add_ms);
    line(
        "floor: sled minimum + ldap3 client, add",
        sled_min + client_add,
        n,
        add_ms,
    );
    line(
        "floor: sled minimum + ldap3 client, modify",
        sled_min + client_mod,
        n,
        mod_ms,
    );
}
