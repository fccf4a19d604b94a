//! The store's unit tests, against a store in a temporary folder.

use super::*;
use serde_json::{json, Value};

/// A [`Write`] creating `id`.
fn create<'a>(kind: Kind, id: &'a str, resource: &'a mut Value) -> Write<'a> {
    Write {
        kind,
        id,
        resource,
        intent: Intent::Create,
        members: None,
    }
}

/// A [`Write`] updating `id`.
fn update<'a>(
    kind: Kind,
    id: &'a str,
    resource: &'a mut Value,
    if_version: Option<&'a str>,
) -> Write<'a> {
    Write {
        kind,
        id,
        resource,
        intent: Intent::Update { if_version },
        members: None,
    }
}

/// Opens sled at `dir` again, waiting for the threads of a store just
/// dropped to let go of its lock (they can lag on a loaded machine).
fn sled_reopen(dir: &std::path::Path) -> sled::Db {
    for _ in 0..200 {
        if let Ok(db) = sled::open(dir) {
            return db;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    sled::open(dir).unwrap()
}

fn tmp() -> (std::path::PathBuf, Store) {
    let dir = std::env::temp_dir().join(format!("scim2ldap-store-{}", uuid::Uuid::new_v4()));
    let s = Store::open(&dir).unwrap();
    (dir, s)
}

#[tokio::test]
async fn put_get_lookup_and_journal() {
    let (dir, s) = tmp();
    let mut u = json!({"id": "1", "userName": "Alice", "emails": [{"value": "A@x.org"}]});
    let seq = s.write(create(Kind::User, "1", &mut u)).unwrap();
    s.commit(seq).await.unwrap();
    assert_eq!(seq, 1);
    assert_eq!(u["meta"]["version"], "W/\"1\"");
    assert_eq!(
        s.get(Kind::User, "1").unwrap().unwrap()["userName"],
        "Alice"
    );
    assert_eq!(
        s.lookup(Kind::User, "username", "ALICE").unwrap().unwrap(),
        vec!["1"]
    );
    assert_eq!(
        s.lookup(Kind::User, "emails.value", "a@X.org")
            .unwrap()
            .unwrap(),
        vec!["1"]
    );
    assert_eq!(s.pending_after(0, 10).unwrap(), vec![1]);
    let e = s.entry(1).unwrap().unwrap();
    assert_eq!(e.op, Op::Upsert);
    assert_eq!(s.state(1).unwrap(), EntryState::Pending);
    s.mark_applied(
        &e,
        Some(&Link {
            dn: "uid=alice".into(),
            uuid: None,
            adopted: false,
            applied: None,
        }),
    )
    .unwrap();
    assert_eq!(s.state(1).unwrap(), EntryState::Applied);
    assert!(s.pending_after(0, 10).unwrap().is_empty());
    drop(s);
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn applying_keeps_links_and_their_index_right() {
    let (dir, s) = tmp();
    let link = |dn: &str, uuid: &str| Link {
        dn: dn.into(),
        uuid: Some(uuid.into()),
        adopted: false,
        applied: None,
    };
    let put = |title: &str| {
        s.write(Write {
            intent: if title == "a" {
                Intent::Create
            } else {
                Intent::Update { if_version: None }
            },
            ..create(
                Kind::User,
                "1",
                &mut json!({"userName": "alice", "title": title}),
            )
        })
        .unwrap()
    };
    let e1 = s.entry(put("a")).unwrap().unwrap();
    s.mark_applied(&e1, Some(&link("uid=alice", "u-1")))
        .unwrap();
    // The same link again (a plain modify): nothing about it changes.
    let e2 = s.entry(put("b")).unwrap().unwrap();
    s.mark_applied(&e2, Some(&link("uid=alice", "u-1")))
        .unwrap();
    assert_eq!(s.state(e2.seq).unwrap(), EntryState::Applied);
    assert_eq!(
        s.link(Kind::User, "1").unwrap(),
        Some(link("uid=alice", "u-1"))
    );
    assert_eq!(
        s.linked_id(Kind::User, "u-1").unwrap().as_deref(),
        Some("1")
    );
    // A parked entry applied later loses its failure.
    let e3 = s.entry(put("c")).unwrap().unwrap();
    let f = Failure {
        code: Some(50),
        message: "insufficientAccessRights".into(),
        at: now_rfc3339(),
    };
    s.mark_failed(e3.seq, &f).unwrap();
    // A new entry behind the same DN (recreated by hand): both the
    // link and the reverse index move.
    s.mark_applied(&e3, Some(&link("uid=alice", "u-2")))
        .unwrap();
    assert_eq!(s.state(e3.seq).unwrap(), EntryState::Applied);
    assert!(s.parked().unwrap().is_empty());
    assert_eq!(
        s.link(Kind::User, "1").unwrap(),
        Some(link("uid=alice", "u-2"))
    );
    assert_eq!(s.linked_id(Kind::User, "u-1").unwrap(), None);
    assert_eq!(
        s.linked_id(Kind::User, "u-2").unwrap().as_deref(),
        Some("1")
    );
    drop(s);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn unique_username_is_enforced_case_insensitively() {
    let (dir, s) = tmp();
    s.write(create(Kind::User, "1", &mut json!({"userName": "alice"})))
        .unwrap();
    let err = s
        .write(create(Kind::User, "2", &mut json!({"userName": "ALICE"})))
        .unwrap_err();
    assert!(
        matches!(
            err,
            WriteError::Taken {
                attr: "userName",
                ..
            }
        ),
        "{err}"
    );
    // Renaming frees the old name.
    s.write(update(
        Kind::User,
        "1",
        &mut json!({"userName": "bob"}),
        None,
    ))
    .unwrap();
    s.write(create(Kind::User, "2", &mut json!({"userName": "alice"})))
        .unwrap();
    assert_eq!(
        s.lookup(Kind::User, "userName", "bob").unwrap().unwrap(),
        vec!["1"]
    );
    drop(s);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn version_check_and_delete() {
    let (dir, s) = tmp();
    let mut u = json!({"userName": "a"});
    s.write(create(Kind::User, "1", &mut u)).unwrap();
    let err = s
        .write(update(
            Kind::User,
            "1",
            &mut json!({"userName": "a"}),
            Some("W/\"7\""),
        ))
        .unwrap_err();
    assert!(matches!(err, WriteError::VersionMismatch { .. }));
    let seq = s.delete(Kind::User, "1", Some("W/\"1\"")).unwrap();
    assert_eq!(seq, 2);
    assert!(s.get(Kind::User, "1").unwrap().is_none());
    assert!(s
        .lookup(Kind::User, "userName", "a")
        .unwrap()
        .unwrap()
        .is_empty());
    let e = s.entry(2).unwrap().unwrap();
    assert_eq!(
        (e.op, e.snapshot["userName"].as_str()),
        (Op::Delete, Some("a"))
    );
    assert!(matches!(
        s.delete(Kind::User, "1", None),
        Err(WriteError::NotFound)
    ));
    drop(s);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn membership_changes_are_effective_deltas_with_emptiness() {
    let (dir, s) = tmp();
    for u in ["u1", "u2", "u3"] {
        s.write(create(Kind::User, u, &mut json!({"userName": u})))
            .unwrap();
    }
    let user = |id: &str| (id.to_string(), Kind::User);
    let ops = MemberOps {
        replace: Some(vec![]),
        ..Default::default()
    };
    let seq = s
        .write(Write {
            members: Some(&ops),
            ..create(Kind::Group, "g", &mut json!({"displayName": "G"}))
        })
        .unwrap();
    let m = s.entry(seq).unwrap().unwrap().members.unwrap();
    assert_eq!(
        (m.empty_before, m.empty_after, m.add.len()),
        (true, true, 0)
    );

    let ops = MemberOps {
        add: vec![user("u1"), user("u2"), user("u1")],
        ..Default::default()
    };
    let seq = s
        .write(Write {
            members: Some(&ops),
            ..update(Kind::Group, "g", &mut json!({"displayName": "G"}), None)
        })
        .unwrap();
    let m = s.entry(seq).unwrap().unwrap().members.unwrap();
    assert_eq!(m.add, vec!["u1", "u2"]);
    assert_eq!((m.empty_before, m.empty_after), (true, false));

    // Adding an existing member and removing a non-member change nothing.
    let ops = MemberOps {
        add: vec![user("u1")],
        remove: vec!["u3".into()],
        ..Default::default()
    };
    let seq = s
        .write(Write {
            members: Some(&ops),
            ..update(Kind::Group, "g", &mut json!({"displayName": "G"}), None)
        })
        .unwrap();
    let m = s.entry(seq).unwrap().unwrap().members.unwrap();
    assert!(m.add.is_empty() && m.remove.is_empty() && !m.empty_after);

    let ops = MemberOps {
        remove: vec!["u1".into()],
        ..Default::default()
    };
    let seq = s
        .write(Write {
            members: Some(&ops),
            ..update(Kind::Group, "g", &mut json!({"displayName": "G"}), None)
        })
        .unwrap();
    assert!(!s.entry(seq).unwrap().unwrap().members.unwrap().empty_after);
    assert_eq!(s.members("g").unwrap(), vec![user("u2")]);
    assert_eq!(s.groups_of("u2").unwrap(), vec!["g"]);

    // Deleting the last member's user empties the group, journaled
    // before the user's deletion.
    let last = s.delete(Kind::User, "u2", None).unwrap();
    let group_entry = s.entry(last - 1).unwrap().unwrap();
    assert_eq!(
        (group_entry.kind, group_entry.id.as_str()),
        (Kind::Group, "g")
    );
    let m = group_entry.members.unwrap();
    assert_eq!((m.remove, m.empty_after), (vec!["u2".to_string()], true));
    assert_eq!(s.entry(last).unwrap().unwrap().op, Op::Delete);
    assert!(s.members("g").unwrap().is_empty());
    assert!(s.groups_of("u2").unwrap().is_empty());

    // Replacing the whole list computes the difference.
    let ops = MemberOps {
        add: vec![user("u1"), user("u3")],
        ..Default::default()
    };
    s.write(Write {
        members: Some(&ops),
        ..update(Kind::Group, "g", &mut json!({"displayName": "G"}), None)
    })
    .unwrap();
    let ops = MemberOps {
        replace: Some(vec![user("u3")]),
        ..Default::default()
    };
    let seq = s
        .write(Write {
            members: Some(&ops),
            ..update(Kind::Group, "g", &mut json!({"displayName": "G"}), None)
        })
        .unwrap();
    let m = s.entry(seq).unwrap().unwrap().members.unwrap();
    assert_eq!((m.add.len(), m.remove.clone()), (0, vec!["u1".to_string()]));
    drop(s);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn allocation_counts_up_within_the_range() {
    let (dir, s) = tmp();
    assert_eq!(
        s.allocate(Kind::User, "uidNumber", 10, 12).unwrap(),
        Some(10)
    );
    assert_eq!(
        s.allocate(Kind::User, "uidnumber", 10, 12).unwrap(),
        Some(11)
    );
    assert_eq!(
        s.allocate(Kind::Group, "uidNumber", 10, 12).unwrap(),
        Some(10),
        "per kind"
    );
    assert_eq!(
        s.allocate(Kind::User, "uidNumber", 10, 12).unwrap(),
        Some(12)
    );
    assert_eq!(
        s.allocate(Kind::User, "uidNumber", 10, 12).unwrap(),
        None,
        "used up"
    );
    drop(s);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_store_of_another_format_version_is_refused() {
    let (dir, s) = tmp();
    drop(s);
    {
        let db = sled_reopen(&dir);
        let t = db.open_tree("scim2ldap").unwrap();
        t.insert(b"mformat", b"99".to_vec()).unwrap();
        db.flush().unwrap();
    }
    let mut err = Store::open(&dir).err().expect("refused");
    for _ in 0..200 {
        if !matches!(err, StoreError::Sled(_)) {
            break;
        }
        // The sled handle above may still hold the lock for a moment.
        std::thread::sleep(std::time::Duration::from_millis(50));
        err = Store::open(&dir).err().expect("refused");
    }
    let msg = err.to_string();
    assert!(
        matches!(err, StoreError::Version { .. }) && msg.contains("format version 99"),
        "{msg}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn sequential_pages_match_a_full_scan_and_see_new_resources() {
    let (dir, s) = tmp();
    for i in 0..25 {
        s.write(create(
            Kind::User,
            &format!("id{i:02}"),
            &mut json!({"userName": format!("u{i}")}),
        ))
        .unwrap();
    }
    let ids = |v: Vec<Value>| {
        v.iter()
            .map(|r| r["userName"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let all = ids(s.scan(Kind::User).map(Result::unwrap).collect());
    let mut paged = Vec::new();
    for start in (0..25).step_by(10) {
        paged.extend(ids(s.scan_page(Kind::User, start, 10).unwrap()));
    }
    assert_eq!(paged, all);
    assert_eq!(s.count(Kind::User), 25);
    // Second walk uses the cursors; a create in between moves positions.
    assert_eq!(
        ids(s.scan_page(Kind::User, 10, 10).unwrap()),
        all[10..20].to_vec()
    );
    s.write(create(Kind::User, "id00a", &mut json!({"userName": "new"})))
        .unwrap();
    assert_eq!(s.count(Kind::User), 26);
    let page = ids(s.scan_page(Kind::User, 0, 3).unwrap());
    assert_eq!(
        page,
        vec!["u0".to_string(), "new".to_string(), "u1".to_string()]
    );
    assert_eq!(
        ids(s.scan_page(Kind::User, 10, 10).unwrap())[0],
        all[9],
        "cursors were forgotten"
    );
    s.delete(Kind::User, "id00a", None).unwrap();
    assert_eq!(s.count(Kind::User), 25);
    drop(s);
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn reopen_keeps_seq_and_data() {
    let (dir, s) = tmp();
    let seq = s
        .write(create(Kind::User, "1", &mut json!({"userName": "a"})))
        .unwrap();
    s.commit(seq).await.unwrap();
    drop(s);
    let s = Store::open(&dir).unwrap();
    assert_eq!(s.last_seq(), 1);
    assert_eq!(
        s.write(create(Kind::User, "2", &mut json!({"userName": "b"})))
            .unwrap(),
        2
    );
    drop(s);
    std::fs::remove_dir_all(dir).ok();
}
#[test]
fn skip_retry_requeue_and_ordering_questions() {
    let (dir, s) = tmp();
    let a1 = s
        .write(create(Kind::User, "a", &mut json!({"userName": "a"})))
        .unwrap();
    let a2 = s
        .write(update(
            Kind::User,
            "a",
            &mut json!({"userName": "a", "title": "x"}),
            None,
        ))
        .unwrap();
    let b1 = s
        .write(create(Kind::User, "b", &mut json!({"userName": "b"})))
        .unwrap();
    assert_eq!(s.unapplied_before(Kind::User, "a", a2).unwrap(), Some(a1));
    assert_eq!(s.unapplied_before(Kind::User, "b", a2).unwrap(), None);
    // Park a1: retry un-parks it; retry of an entry that is not parked
    // says so.
    let f = Failure {
        code: Some(65),
        message: "objectClassViolation".into(),
        at: now_rfc3339(),
    };
    s.mark_failed(a1, &f).unwrap();
    assert_eq!(s.parked().unwrap(), vec![a1]);
    assert_eq!(s.retry(a1).unwrap(), Change::Done);
    assert_eq!(s.retry(a1).unwrap(), Change::NotApplicable);
    assert_eq!(s.retry(99).unwrap(), Change::NoSuchEntry);
    // Skip it: no longer pending, recorded as skipped.
    s.mark_failed(a1, &f).unwrap();
    assert_eq!(s.skip(a1).unwrap(), Change::Done);
    assert_eq!(s.state(a1).unwrap(), EntryState::Applied);
    assert!(s
        .view(s.entry(a1).unwrap().unwrap())
        .unwrap()
        .skipped
        .is_some());
    assert_eq!(s.skip(a1).unwrap(), Change::NotApplicable);
    assert_eq!(s.pending_after(0, 10).unwrap(), vec![a2, b1]);
    // Apply the rest; then requeue everything: the skipped one stays out.
    for seq in [a2, b1] {
        let e = s.entry(seq).unwrap().unwrap();
        let link = Link {
            dn: format!("uid={}", e.id),
            uuid: Some(format!("uuid-{}", e.id)),
            adopted: false,
            applied: None,
        };
        s.mark_applied(&e, Some(&link)).unwrap();
    }
    assert_eq!(
        s.linked_id(Kind::User, "uuid-b").unwrap().as_deref(),
        Some("b")
    );
    assert_eq!(s.requeue(1, u64::MAX).unwrap(), 2);
    assert_eq!(s.pending_after(0, 10).unwrap(), vec![a2, b1]);
    let st = s.stats().unwrap();
    assert_eq!(
        (st.entries, st.pending, st.parked, st.skipped),
        (3, 2, 0, 1)
    );
    drop(s);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn adopt_records_an_applied_entry_and_refuses_duplicates() {
    let (dir, s) = tmp();
    let link = Link {
        dn: "uid=alice,ou=people".into(),
        uuid: Some("u-1".into()),
        adopted: false,
        applied: None,
    };
    let seq = s
        .adopt(Kind::User, "1", &mut json!({"userName": "alice"}), &link)
        .unwrap();
    assert_eq!(s.state(seq).unwrap(), EntryState::Applied);
    assert!(s.pending_after(0, 10).unwrap().is_empty());
    assert_eq!(s.link(Kind::User, "1").unwrap(), Some(link.clone()));
    assert_eq!(
        s.linked_id(Kind::User, "u-1").unwrap().as_deref(),
        Some("1")
    );
    assert_eq!(
        s.lookup(Kind::User, "userName", "ALICE").unwrap().unwrap(),
        vec!["1"]
    );
    // The same entry again, under another name: already linked.
    let err = s
        .adopt(Kind::User, "2", &mut json!({"userName": "al"}), &link)
        .unwrap_err();
    assert!(matches!(err, WriteError::AlreadyLinked { .. }), "{err}");
    // Another entry with a taken userName.
    let other = Link {
        dn: "uid=alice,ou=other".into(),
        uuid: Some("u-2".into()),
        adopted: false,
        applied: None,
    };
    let err = s
        .adopt(Kind::User, "3", &mut json!({"userName": "Alice"}), &other)
        .unwrap_err();
    assert!(
        matches!(
            err,
            WriteError::Taken {
                attr: "userName",
                ..
            }
        ),
        "{err}"
    );
    // The link index survives a reopen and a delete clears it.
    drop(s);
    let s = Store::open(&dir).unwrap();
    let d = s.delete(Kind::User, "1", None).unwrap();
    s.mark_applied(&s.entry(d).unwrap().unwrap(), None).unwrap();
    assert_eq!(s.linked_id(Kind::User, "u-1").unwrap(), None);
    drop(s);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn compaction_keeps_latest_snapshots_and_unapplied_entries() {
    let (dir, s) = tmp();
    let mut seqs = Vec::new();
    for (id, title) in [("a", "1"), ("a", "2"), ("b", "1"), ("c", "1")] {
        let is_new = s.get(Kind::User, id).unwrap().is_none();
        seqs.push(
            s.write(Write {
                intent: if is_new {
                    Intent::Create
                } else {
                    Intent::Update { if_version: None }
                },
                ..create(Kind::User, id, &mut json!({"userName": id, "title": title}))
            })
            .unwrap(),
        );
    }
    let del_b = s.delete(Kind::User, "b", None).unwrap();
    // Everything applied except c's create.
    for seq in [seqs[0], seqs[1], seqs[2], del_b] {
        s.mark_applied(&s.entry(seq).unwrap().unwrap(), None)
            .unwrap();
    }
    // A cutoff in the past removes nothing.
    let past = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    assert_eq!(s.compact(past).unwrap().removed, 0);
    let future = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    let r = s.compact(future).unwrap();
    // Removed: a's first write, b's create and b's delete. Kept: a's
    // latest snapshot, c's pending create.
    assert_eq!((r.removed, r.kept), (3, 2));
    let left: Vec<u64> = s.entries_from(0).map(|e| e.unwrap().seq).collect();
    assert_eq!(left, vec![seqs[1], seqs[3]]);
    assert_eq!(s.pending_after(0, 10).unwrap(), vec![seqs[3]]);
    assert!(s.stats().unwrap().last_compaction.is_some());
    drop(s);
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn names_ldap_treats_as_equal_are_one_name() {
    let (dir, s) = tmp();
    let mut u = json!({"id": "1", "userName": "carol"});
    s.write(create(Kind::User, "1", &mut u)).unwrap();
    // RFC 4518: case, character width and insignificant spaces do not count.
    for name in ["carol ", "ｃａｒｏｌ", " CAROL", "Carol"] {
        let mut other = json!({"id": "2", "userName": name});
        match s.write(create(Kind::User, "2", &mut other)) {
            Err(WriteError::Taken { attr, .. }) => assert_eq!(attr, "userName"),
            r => panic!("{name:?} was not refused as a duplicate of carol: {r:?}"),
        }
    }
    let mut a = json!({"id": "3", "userName": "car  ol"});
    s.write(create(Kind::User, "3", &mut a)).unwrap();
    let mut b = json!({"id": "4", "userName": "car ol"});
    assert!(matches!(
        s.write(create(Kind::User, "4", &mut b)),
        Err(WriteError::Taken { .. })
    ));
    // A different name is still a different name.
    let mut c = json!({"id": "5", "userName": "caro"});
    s.write(create(Kind::User, "5", &mut c)).unwrap();
    // Values are stored as sent; lookups find equal names, the API then
    // applies SCIM's own comparison.
    assert_eq!(
        s.get(Kind::User, "3").unwrap().unwrap()["userName"],
        "car  ol"
    );
    assert_eq!(
        s.lookup(Kind::User, "userName", "ＣＡＲＯＬ")
            .unwrap()
            .unwrap(),
        vec!["1"]
    );
    // The entry's RDN key is unique too, whatever attribute it comes from.
    let mut g1 = json!({"id": "g1", "displayName": "Ops", RDN_KEY: "cn=ops"});
    s.write(create(Kind::Group, "g1", &mut g1)).unwrap();
    let mut g2 = json!({"id": "g2", "displayName": "Operations", RDN_KEY: "cn=ops"});
    match s.write(create(Kind::Group, "g2", &mut g2)) {
        Err(WriteError::Taken { attr, .. }) => assert_eq!(attr, RDN_KEY),
        r => panic!("a second group with the same RDN was accepted: {r:?}"),
    }
    drop(s);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_version_1_store_is_migrated_and_its_indexes_rebuilt() {
    let (dir, s) = tmp();
    let mut u = json!({"id": "1", "userName": "Dave"});
    s.write(create(Kind::User, "1", &mut u)).unwrap();
    s.flush().unwrap();
    drop(s);
    // Make it look like version 1: format "1", no `mindex`, and an index
    // key computed the old way (lowercased), which must not survive.
    {
        let db = sled_reopen(&dir);
        let tree = db.open_tree("scim2ldap").unwrap();
        tree.insert(keys::META_FORMAT, b"1".to_vec()).unwrap();
        tree.remove(keys::META_INDEX).unwrap();
        for k in tree.scan_prefix([keys::INDEX]).keys() {
            tree.remove(k.unwrap()).unwrap();
        }
        let mut old = keys::index_prefix(Kind::User, 0, "stale");
        old.extend_from_slice(b"1");
        tree.insert(old, Vec::new()).unwrap();
        // Two names an older version accepted that are now equal.
        let mut second = serde_json::to_vec(&json!({"id": "2", "userName": "dave "})).unwrap();
        tree.insert(
            keys::res_key(keys::RESOURCE, Kind::User, "2"),
            second.split_off(0),
        )
        .unwrap();
        tree.flush().unwrap();
    }
    let s = Store::open(&dir).unwrap();
    assert_eq!(
        s.lookup(Kind::User, "userName", "stale").unwrap().unwrap(),
        Vec::<String>::new()
    );
    let mut both = s.lookup(Kind::User, "userName", "DAVE").unwrap().unwrap();
    both.sort();
    assert_eq!(both, vec!["1", "2"]);
    // Both can still be changed; neither can be renamed onto the other.
    let mut v = json!({"id": "2", "userName": "dave ", "title": "x"});
    s.write(update(Kind::User, "2", &mut v, None)).unwrap();
    let mut w = json!({"id": "1", "userName": "Dave", "title": "y"});
    s.write(update(Kind::User, "1", &mut w, None)).unwrap();
    drop(s);
    let db = sled_reopen(&dir);
    let tree = db.open_tree("scim2ldap").unwrap();
    assert_eq!(
        tree.get(keys::META_FORMAT).unwrap().as_deref(),
        Some(FORMAT_VERSION.to_string().as_bytes())
    );
    drop(tree);
    drop(db);
    let _ = std::fs::remove_dir_all(dir);
}

/// The raw stored journal entry `seq`, as JSON.
fn stored_entry(s: &Store, seq: u64) -> Value {
    let v = s
        .inner
        .tree
        .get(keys::seq_key(keys::JOURNAL, seq))
        .unwrap()
        .unwrap();
    serde_json::from_slice(&v).unwrap()
}

/// Each snapshot is stored once: an Upsert entry refers to the resource's
/// snapshot, and reads as the resource's current state.
#[tokio::test]
async fn an_upsert_entry_refers_to_the_snapshot_and_reads_the_current_one() {
    let (dir, s) = tmp();
    let mut u = json!({"id": "1", "userName": "erin", "title": "one"});
    let first = s.write(create(Kind::User, "1", &mut u)).unwrap();
    let mut v = json!({"id": "1", "userName": "erin", "title": "two"});
    let second = s.write(update(Kind::User, "1", &mut v, None)).unwrap();
    s.commit(second).await.unwrap();
    for seq in [first, second] {
        let raw = stored_entry(&s, seq);
        assert!(raw.get("snapshot").is_none(), "{raw}");
        assert_eq!(raw["op"], "Upsert");
        // Both converge to the latest state: applying the first one early
        // is what the second would do.
        let e = s.entry(seq).unwrap().unwrap();
        assert_eq!(e.snapshot["title"], "two");
        assert_eq!(e.snapshot["meta"]["version"], format!("W/\"{second}\""));
        assert!(!e.superseded && e.effective_op() == Op::Upsert);
    }
    let read: Vec<String> = s
        .entries_from(0)
        .map(|e| e.unwrap().snapshot["title"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(read, ["two", "two"]);
    // A group's entries journaled by a member's deletion refer to the group
    // too; the deletion carries the member's last state.
    let mut g = json!({"id": "g", "displayName": "staff"});
    s.write(Write {
        members: Some(&MemberOps {
            add: vec![("1".into(), Kind::User)],
            ..Default::default()
        }),
        ..create(Kind::Group, "g", &mut g)
    })
    .unwrap();
    let last = s.delete(Kind::User, "1", None).unwrap();
    let group_entry = stored_entry(&s, last - 1);
    assert_eq!(
        (group_entry["id"].as_str(), group_entry.get("snapshot")),
        (Some("g"), None)
    );
    assert_eq!(
        s.entry(last - 1).unwrap().unwrap().snapshot["displayName"],
        "staff"
    );
    let delete = stored_entry(&s, last);
    assert_eq!(delete["op"], "Delete");
    assert_eq!(delete["snapshot"]["title"], "two");
    drop(s);
    let _ = std::fs::remove_dir_all(dir);
}

/// An Upsert whose resource was deleted since reads as superseded: the
/// last state (from the Delete entry), converging to the absence, both
/// while the Delete waits behind it and when it is replayed alone.
#[tokio::test]
async fn an_upsert_of_a_deleted_resource_converges_to_its_absence() {
    let (dir, s) = tmp();
    let mut u = json!({"id": "1", "userName": "finn", "title": "one"});
    let created = s.write(create(Kind::User, "1", &mut u)).unwrap();
    let mut v = json!({"id": "1", "userName": "finn", "title": "last"});
    let updated = s.write(update(Kind::User, "1", &mut v, None)).unwrap();
    let deleted = s.delete(Kind::User, "1", None).unwrap();
    s.commit(deleted).await.unwrap();
    // The writer's invariants are untouched: the Delete waits for both.
    assert_eq!(
        s.unapplied_before(Kind::User, "1", deleted).unwrap(),
        Some(created)
    );
    for seq in [created, updated] {
        let e = s.entry(seq).unwrap().unwrap();
        assert_eq!(e.op, Op::Upsert, "the entry says what was accepted");
        assert!(e.superseded);
        assert_eq!(e.effective_op(), Op::Delete);
        assert_eq!(e.snapshot["title"], "last");
    }
    let d = s.entry(deleted).unwrap().unwrap();
    assert!(!d.superseded && d.effective_op() == Op::Delete);
    for seq in [created, updated, deleted] {
        let e = s.entry(seq).unwrap().unwrap();
        s.mark_applied(&e, None).unwrap();
    }
    // Replayed alone (the Delete is applied): found in the journal.
    assert_eq!(s.requeue(created, created).unwrap(), 1);
    let e = s.entry(created).unwrap().unwrap();
    assert!(e.superseded && e.snapshot["title"] == "last");
    // Another resource's Delete is not this one's.
    let mut w = json!({"id": "2", "userName": "gail"});
    let other = s.write(create(Kind::User, "2", &mut w)).unwrap();
    let mut x = json!({"id": "3", "userName": "hank"});
    s.write(create(Kind::User, "3", &mut x)).unwrap();
    s.delete(Kind::User, "3", None).unwrap();
    s.delete(Kind::User, "2", None).unwrap();
    assert_eq!(
        s.entry(other).unwrap().unwrap().snapshot["userName"],
        "gail"
    );
    drop(s);
    let _ = std::fs::remove_dir_all(dir);
}

/// Compaction keeps the latest entry of every resource that exists, and a
/// replay of what is kept reads the current snapshots.
#[test]
fn a_replay_after_compaction_reads_the_current_snapshots() {
    let (dir, s) = tmp();
    let mut seqs = Vec::new();
    for title in ["1", "2", "3"] {
        let is_new = s.get(Kind::User, "a").unwrap().is_none();
        seqs.push(
            s.write(Write {
                intent: if is_new {
                    Intent::Create
                } else {
                    Intent::Update { if_version: None }
                },
                ..create(
                    Kind::User,
                    "a",
                    &mut json!({"userName": "a", "title": title}),
                )
            })
            .unwrap(),
        );
    }
    for seq in &seqs {
        s.mark_applied(&s.entry(*seq).unwrap().unwrap(), None)
            .unwrap();
    }
    let future = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    assert_eq!(s.compact(future).unwrap().removed, 2);
    assert_eq!(s.requeue(1, s.last_seq()).unwrap(), 1);
    let pending = s.pending_after(0, 10).unwrap();
    assert_eq!(pending, vec![seqs[2]]);
    assert_eq!(s.entry(pending[0]).unwrap().unwrap().snapshot["title"], "3");
    drop(s);
    let _ = std::fs::remove_dir_all(dir);
}

/// A version-2 store (every entry carried its snapshot) is migrated: the
/// Upserts of resources that exist refer to them; an Upsert of a resource
/// deleted since keeps its snapshot and reads as written; pending entries
/// stay pending; a password an older version stored in a carried snapshot
/// is gone.
#[tokio::test]
async fn a_version_2_store_is_migrated_and_its_pending_entries_still_read() {
    let (dir, s) = tmp();
    let mut a = json!({"id": "a", "userName": "ivy", "title": "one"});
    let a1 = s.write(create(Kind::User, "a", &mut a)).unwrap();
    let mut a_now = json!({"id": "a", "userName": "ivy", "title": "two"});
    let a2 = s.write(update(Kind::User, "a", &mut a_now, None)).unwrap();
    let mut b = json!({"id": "b", "userName": "jo"});
    let b1 = s.write(create(Kind::User, "b", &mut b)).unwrap();
    let b2 = s.delete(Kind::User, "b", None).unwrap();
    s.commit(b2).await.unwrap();
    s.mark_applied(&s.entry(a1).unwrap().unwrap(), None)
        .unwrap();
    // What version 2 wrote: every Upsert with the snapshot of its time,
    // one with a password in it.
    {
        let t = &s.inner.tree;
        for (seq, mut snap) in [(a1, a.clone()), (a2, a_now.clone()), (b1, b.clone())] {
            if seq == a2 {
                snap["password"] = json!("old-secret");
            }
            let mut raw = stored_entry(&s, seq);
            raw["snapshot"] = snap;
            t.insert(
                keys::seq_key(keys::JOURNAL, seq),
                serde_json::to_vec(&raw).unwrap(),
            )
            .unwrap();
        }
        t.insert(keys::META_FORMAT, b"2".to_vec()).unwrap();
        t.remove(keys::META_NO_PASSWORDS).unwrap();
    }
    s.flush().unwrap();
    drop(s);
    let s = Store::open(&dir).unwrap();
    for seq in [a1, a2] {
        assert!(stored_entry(&s, seq).get("snapshot").is_none());
        let e = s.entry(seq).unwrap().unwrap();
        assert_eq!(e.snapshot["title"], "two");
        assert!(e.snapshot.get("password").is_none());
    }
    let kept = stored_entry(&s, b1);
    assert_eq!(kept["snapshot"]["userName"], "jo");
    let e = s.entry(b1).unwrap().unwrap();
    assert!(!e.superseded && e.snapshot["userName"] == "jo");
    assert_eq!(s.pending_after(0, 10).unwrap(), vec![a2, b1, b2]);
    assert_eq!(s.state(a1).unwrap(), EntryState::Applied);
    drop(s);
    let db = sled_reopen(&dir);
    let tree = db.open_tree("scim2ldap").unwrap();
    assert_eq!(
        tree.get(keys::META_FORMAT).unwrap().as_deref(),
        Some(&b"3"[..])
    );
    drop(tree);
    drop(db);
    let _ = std::fs::remove_dir_all(dir);
}
