//! The provisioning benchmark: starts a throwaway slapd and the real
//! `scim2ldap` binary, drives SCIM requests at it over HTTP with C
//! concurrent clients, and reports per phase ops/s, p50 and p99, the
//! daemon's peak RSS and the CPU time per operation of the daemon and of
//! slapd. A write phase ends when the daemon's journal is drained (every
//! write is in the directory), not when the last response arrives.
//!
//! ```sh
//! cargo bench --bench provision -- --users 2000 --clients 4 [--connections 4] [--nosync]
//! cargo bench --bench provision -- --users 2000 --mixed-only [--nosync]
//! cargo bench --bench provision -- --member-sizes 10,1000,50000 [--nosync]
//! cargo bench --bench provision -- --big-group 50000 [--users 100000]
//! cargo bench --bench provision -- --store-floor [--users 20000] [--nosync]
//! ```
//!
//! Phases (the default mode, `phases.rs`): N user creates, N PATCHes
//! (replace two attributes), G = N/100 group creates, N member adds (user
//! i into group i % G), M = N/10 (at least 1,000, at most N) member adds
//! into ONE group from all clients at once, N `userName eq` lookups, a
//! paged listing of all users, a mixed phase (one change per user, all
//! group members: of every ten, five PATCHes replacing two attributes,
//! three deactivations, two deletes, interleaved), and a backlog: slapd
//! stopped, K = N/2 (at least 10,000) user creates acknowledged from the
//! journal, slapd started again and the backlog drained.
//!
//! The creates, modifies, member adds and one-group member adds also go
//! straight to the same slapd with ldap3 (`raw.rs`) at the same
//! concurrency over the same number of directory connections as the
//! daemon's writer (`--connections`, default 4; no HTTP, no journal),
//! each next to its daemon phase in alternating order; every phase's
//! result is checked in the directory after its drain (`verify.rs`).
//!
//! Every phase prints its ops/s, latencies labelled `ack` (HTTP response,
//! before the directory), `apply` (LDAP operation) or `read`, the daemon's
//! peak RSS (its high-water mark is reset at each phase's start), and the
//! CPU time (user + system, every thread, from `/proc/<pid>/stat`) per
//! operation of the daemon and of slapd with their ratio (`measure.rs`).
//! The end prints each write phase's ratio daemon / raw, mixed / creates,
//! and issue 15's targets with their figures, met or not met. CPU time is
//! the figure to trust on a busy machine; wall time is shared.
//!
//! `--mixed-only` (`phases.rs`): only what the mixed phase needs, without
//! the raw side, the reads and the backlog: the N user creates, the N
//! PATCHes (the values the deactivated users keep), the G group creates,
//! the N member adds and the M one-group member adds, then the mixed
//! phase; each checked in the directory after its drain. It prints those
//! phases and mixed / creates.
//!
//! `--big-group N` (bounded work per request, `modes.rs`): creates
//! max(N, --users) users, then POSTs one N-member group, then four at once
//! while `/healthz` is polled every 10 ms, then lists and sorts every user
//! (`sortBy` with `count`, a filter no index answers, `POST /.search`);
//! it prints each step's peak RSS (the daemon's high-water mark is reset
//! before each step) and the `/healthz` latencies. This mode's slapd has
//! no overlays (memberof would update every member of each group).
//!
//! `--store-floor` (`floor.rs`): raw ldap3 adds and modifies into slapd,
//! then the store alone in this process (write and commit as a request
//! does, entry and mark-applied as the writer does) and sled alone (an
//! insert and a flush per operation), each as CPU ms per operation beside
//! slapd's: the floor under the daemon's CPU with its journal in sled.

// A bench target's modules live in benches/provision/; a plain `mod`
// would look for them in benches/, where cargo takes every file for a
// bench of its own.
#[path = "provision/daemon.rs"]
mod daemon;
#[path = "provision/floor.rs"]
mod floor;
#[path = "provision/measure.rs"]
mod measure;
#[path = "provision/modes.rs"]
mod modes;
#[path = "provision/phases.rs"]
mod phases;
#[path = "provision/raw.rs"]
mod raw;
#[path = "provision/verify.rs"]
mod verify;

use daemon::Daemon;
use measure::Procs;
use phases::Bench;
use scim2ldap_slapd::{Slapd, SlapdOptions};

pub struct Args {
    pub users: usize,
    pub clients: usize,
    /// Directory connections on each side: the daemon's `ldap.connections`
    /// and the raw baseline's connection count.
    pub connections: usize,
    pub nosync: bool,
    pub member_sizes: Vec<usize>,
    pub big_group: usize,
    /// `--store-floor`: the store and sled alone beside slapd (`floor.rs`).
    pub store_floor: bool,
    /// `--mixed-only`: the mixed phase and the setup it needs (`phases.rs`).
    pub mixed_only: bool,
}

fn args() -> Args {
    let mut a = Args {
        users: 2000,
        clients: 4,
        connections: 4,
        nosync: false,
        member_sizes: Vec::new(),
        big_group: 0,
        store_floor: false,
        mixed_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--users" => a.users = it.next().and_then(|v| v.parse().ok()).expect("--users N"),
            "--clients" => a.clients = it.next().and_then(|v| v.parse().ok()).expect("--clients N"),
            "--connections" => {
                a.connections = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| *n > 0)
                    .expect("--connections N")
            }
            "--nosync" => a.nosync = true,
            "--store-floor" => a.store_floor = true,
            "--mixed-only" => a.mixed_only = true,
            "--member-sizes" => {
                a.member_sizes = it
                    .next()
                    .expect("--member-sizes 10,1000,50000")
                    .split(',')
                    .map(|s| s.trim().parse().expect("a number"))
                    .collect()
            }
            "--big-group" => {
                a.big_group = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--big-group N")
            }
            // cargo bench adds --bench.
            "--bench" => {}
            other => panic!("unknown argument {other}; see the top of benches/provision.rs"),
        }
    }
    a
}

fn main() {
    let args = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        // The overlays as in `scim2ldap dev` (and in earlier runs of this
        // benchmark, so that figures stay comparable); both sides pay them.
        // --big-group measures the daemon, not slapd's memberof overlay
        // updating 50,000 users per group: no overlays there.
        let mut slapd = Slapd::start(if args.big_group > 0 {
            SlapdOptions {
                nosync: args.nosync,
                ..SlapdOptions::default()
            }
        } else {
            SlapdOptions {
                nosync: args.nosync,
                ..SlapdOptions::with_overlays()
            }
        })
        .expect("start slapd");
        let daemon = Daemon::start(&slapd, args.connections).await;
        let bench = Bench {
            daemon: &daemon,
            http: daemon.http(),
            procs: Procs {
                daemon: daemon.pid(),
                slapd: slapd.pid().expect("slapd runs"),
            },
            clients: args.clients,
        };
        println!(
            "scim2ldap provisioning benchmark: {} users, {} clients, {} directory connections on each side, slapd fsync {}",
            args.users,
            args.clients,
            args.connections,
            if args.nosync { "off (dbnosync)" } else { "on" }
        );
        if args.store_floor {
            floor::store_floor(&args, &slapd, bench.procs).await;
        } else if args.big_group > 0 {
            modes::big_group(&args, &bench).await;
        } else if args.mixed_only {
            phases::mixed_only(&args, &slapd, &bench).await;
        } else if args.member_sizes.is_empty() {
            phases::phases(&args, &mut slapd, &bench).await;
        } else {
            modes::member_sizes(&args, &slapd, &bench).await;
        }
    });
}
