//! The raw baseline: the same writes straight into slapd with ldap3, from
//! C workers over the same number of connections as the daemon's writer
//! (worker w uses connection w mod connections), below `ou=raw`. No HTTP,
//! no journal; each phase measures slapd's CPU time as the daemon's
//! phases do.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ldap3::{Ldap, Mod};

use scim2ldap_slapd::Slapd;

use crate::daemon::{ldap, run};
use crate::measure::{Phase, Procs};

/// The daemon's placeholder in an empty groupOfNames.
pub const PLACEHOLDER: &str = "cn=empty-group-placeholder,dc=example,dc=com";

type Conns = Arc<Vec<Arc<tokio::sync::Mutex<Ldap>>>>;

pub struct Raw {
    conns: Conns,
    suffix: String,
}

/// The attributes the example mapping writes for the daemon's user i, for
/// raw user i.
fn raw_user(i: usize) -> Vec<(String, HashSet<String>)> {
    let one = |v: String| HashSet::from([v]);
    vec![
        (
            "objectClass".into(),
            ["top", "person", "organizationalPerson", "inetOrgPerson"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        ),
        ("uid".into(), one(format!("raw{i:06}"))),
        ("cn".into(), one(format!("Given{i} Family{i}"))),
        ("sn".into(), one(format!("Family{i}"))),
        ("givenName".into(), one(format!("Given{i}"))),
        ("mail".into(), one(format!("raw{i:06}@example.com"))),
    ]
}

impl Raw {
    pub async fn new(slapd: &Slapd, connections: usize) -> Raw {
        let mut l = ldap(slapd).await;
        l.add(
            &format!("ou=raw,{}", slapd.suffix()),
            vec![
                ("objectClass", HashSet::from(["organizationalUnit"])),
                ("ou", HashSet::from(["raw"])),
            ],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
        let mut conns = Vec::new();
        for _ in 0..connections {
            conns.push(Arc::new(tokio::sync::Mutex::new(ldap(slapd).await)));
        }
        Raw {
            conns: Arc::new(conns),
            suffix: slapd.suffix().to_string(),
        }
    }

    /// Runs `n` operations from `c` workers, each on its worker's
    /// connection: `op(i, suffix)` gives the DN and the modifications of
    /// operation i, or no modifications for the add of raw user i.
    async fn timed<F>(&self, procs: Procs, name: &'static str, n: usize, c: usize, op: F) -> Phase
    where
        F: Fn(usize, &str) -> (String, Vec<Mod<String>>) + Send + Sync + 'static,
    {
        let (cs, sf, op) = (self.conns.clone(), self.suffix.clone(), Arc::new(op));
        let mark = procs.mark();
        let lat: Vec<Duration> = run(n, c, move |w, i| {
            let (cs, sf, op) = (cs.clone(), sf.clone(), op.clone());
            async move {
                let (dn, mods) = op(i, &sf);
                let mut l = cs[w % cs.len()].lock().await;
                // No modifications: the op is raw user i's add.
                let res = if mods.is_empty() {
                    l.add(&dn, raw_user(i)).await
                } else {
                    l.modify(&dn, mods).await
                };
                res.unwrap().success().unwrap();
            }
        })
        .await;
        procs.raw_phase(&mark, name, n, lat)
    }

    pub async fn adds(&self, procs: Procs, n: usize, c: usize) -> Phase {
        self.timed(procs, "raw adds", n, c, |i, sf| {
            (format!("uid=raw{i:06},ou=raw,{sf}"), Vec::new())
        })
        .await
    }

    pub async fn modifies(&self, procs: Procs, n: usize, c: usize) -> Phase {
        self.timed(procs, "raw modifies", n, c, |i, sf| {
            let mods = vec![
                Mod::Replace("title".to_string(), HashSet::from([format!("Title {i}")])),
                Mod::Replace(
                    "displayName".to_string(),
                    HashSet::from([format!("Display {i}")]),
                ),
            ];
            (format!("uid=raw{i:06},ou=raw,{sf}"), mods)
        })
        .await
    }

    /// A group `cn` holding the placeholder, as the daemon's empty groups.
    async fn group(&self, cn: &str) {
        let mut l = self.conns[0].lock().await;
        let attrs = vec![
            ("objectClass", HashSet::from(["groupOfNames"])),
            ("cn", HashSet::from([cn])),
            ("member", HashSet::from([PLACEHOLDER])),
        ];
        l.add(&format!("cn={cn},ou=raw,{}", self.suffix), attrs)
            .await
            .unwrap()
            .success()
            .unwrap();
    }

    /// `g` groups `rawgroupNNNN`.
    pub async fn groups(&self, g: usize) {
        for i in 0..g {
            self.group(&format!("rawgroup{i:04}")).await;
        }
    }

    /// Member adds, raw user i into group i % g; the first add to a group
    /// also removes the placeholder, as the daemon does.
    pub async fn member_adds(&self, procs: Procs, n: usize, c: usize, g: usize) -> Phase {
        self.timed(procs, "raw member adds", n, c, move |i, sf| {
            (
                format!("cn=rawgroup{:04},ou=raw,{sf}", i % g),
                member_add(i, i < g, sf),
            )
        })
        .await
    }

    /// Creates the group `rawone` (untimed), then adds raw users 0..m to
    /// it, one single-value modify each.
    pub async fn one_group(&self, procs: Procs, m: usize, c: usize) -> Phase {
        self.group("rawone").await;
        self.timed(procs, "raw one-group adds", m, c, |i, sf| {
            (format!("cn=rawone,ou=raw,{sf}"), member_add(i, i == 0, sf))
        })
        .await
    }
}

/// Adds raw user i as a member; `first` also deletes the placeholder.
fn member_add(i: usize, first: bool, suffix: &str) -> Vec<Mod<String>> {
    let mut mods = vec![Mod::Add(
        "member".to_string(),
        HashSet::from([format!("uid=raw{i:06},ou=raw,{suffix}")]),
    )];
    if first {
        mods.push(Mod::Delete(
            "member".to_string(),
            HashSet::from([PLACEHOLDER.to_string()]),
        ));
    }
    mods
}
