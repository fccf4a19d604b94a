//! Process and file plumbing shared by the fixtures: slapd's watchdog,
//! signals through the shell, whether a PID is a live slapd, free loopback
//! ports, fresh temp directories, file helpers with the path in the error,
//! and the last lines of a log.
//!
//! Knows processes, ports and files; nothing of slapd's config, LDAP or
//! the daemon config.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Lines of a log quoted in an error.
pub(crate) const LOG_TAIL_LINES: usize = 30;

/// Kills slapd when this process dies without running `Drop` (SIGKILL,
/// Ctrl-C, `process::exit`, a `Slapd` kept in a `static`). It blocks on its
/// stdin, a pipe whose only writer is this process (Rust opens pipes with
/// `O_CLOEXEC`, so no other child inherits it), and EOF means we are gone.
/// The `comm`/zombie checks keep it from signalling a recycled PID.
const WATCHDOG_SCRIPT: &str = r#"read -r _line
p=$1
is_slapd() {
  [ "$(cat /proc/$p/comm 2>/dev/null)" = slapd ] &&
  [ "$(cut -d' ' -f3 /proc/$p/stat 2>/dev/null)" != Z ]
}
is_slapd || exit 0
kill -TERM "$p" 2>/dev/null
i=0
while [ $i -lt 100 ] && is_slapd; do sleep 0.1; i=$((i+1)); done
is_slapd && kill -KILL "$p" 2>/dev/null
exit 0
"#;

/// The last `n` lines of `text`.
pub(crate) fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Starts [`WATCHDOG_SCRIPT`] for slapd `pid`; its stdin is the pipe whose EOF
/// sets it off.
pub(crate) fn spawn_watchdog(pid: u32) -> io::Result<Child> {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(WATCHDOG_SCRIPT)
        .arg("slapd-watchdog")
        .arg(pid.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

/// Sends a signal through the shell's `kill` builtin (no `unsafe`, and no
/// dependency on procps' /bin/kill).
pub(crate) fn signal(pid: u32, sig: &str) -> io::Result<()> {
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg("kill -s \"$1\" \"$2\"")
        .arg("kill")
        .arg(sig)
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "kill -s {sig} {pid} failed ({status})"
        )))
    }
}

/// Running and not a zombie (`kill -0` also succeeds on zombies).
pub(crate) fn is_live_slapd(pid: u32) -> bool {
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    comm.trim() == "slapd" && state.is_some_and(|s| s != "Z")
}

pub(crate) fn create_temp_dir() -> io::Result<PathBuf> {
    create_temp_dir_named("slapd")
}

/// A fresh directory `<prefix>-<pid>-<n>-<nanos>` under the temp dir.
pub(crate) fn create_temp_dir_named(prefix: &str) -> io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let base = std::env::temp_dir();
    for _ in 0..100 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("{prefix}-{}-{n}-{nanos:08x}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => {
                return dir
                    .canonicalize()
                    .map_err(|e| ctx(e, format!("cannot resolve {}", dir.display())))
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(ctx(e, format!("cannot create {}", dir.display()))),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("cannot create a unique directory under {}", base.display()),
    ))
}

pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    fs::write(path, bytes).map_err(|e| ctx(e, format!("cannot write {}", path.display())))
}

pub(crate) fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(ctx(e, format!("cannot remove {}", path.display())))
        }
        _ => Ok(()),
    }
}

/// Picks `n` distinct free loopback ports. All listeners are held until every
/// port is chosen so that the kernel cannot hand out one port twice.
pub(crate) fn free_ports(n: usize) -> io::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| ctx(e, "cannot bind a free port on 127.0.0.1"))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

pub(crate) fn ctx(e: io::Error, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

pub(crate) fn find_in_path(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(bin))
            .find(|p| p.is_file())
    })
}
