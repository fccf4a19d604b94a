//! What the 389 DS and Samba AD fixtures share: a server started by a
//! shell script shipped in this crate (`scripts/`), in a temp directory of
//! its own, stopped by a watchdog process when its owner goes, and one
//! lazily started instance per process.
//!
//! Why a script and not Rust, as for slapd: both servers are set up by
//! their own tools (`dscreate`, `samba-tool domain provision`) and need
//! several helper processes (a Python edit of `dse.ldif`; `unshare -n` and
//! socat relays for Samba, whose LDAP ports are fixed). The script keeps
//! those steps readable and runnable by hand; the Rust side owns ports,
//! retries, readiness errors and the server's lifetime.

use std::fs;
use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;

use crate::process::{create_temp_dir_named, ctx, find_in_path, free_ports};

/// Attempts when a port we picked was taken before the server bound it.
const PORT_ATTEMPTS: usize = 3;
/// The scripts' exit status for "a port was taken".
const PORT_TAKEN: i32 = 3;

/// On EOF on its stdin (its owner dropped the handle, or died: SIGKILL,
/// `process::exit`, a server kept in a `static`), stops the server with the
/// script's `stop` (which checks each PID's command name first, so a
/// recycled PID is never signalled) and removes the directory. It runs in a
/// process group of its own, so a Ctrl-C at the terminal does not kill it
/// before it has done that.
const WATCHDOG_SCRIPT: &str = r#"read -r _line
bash "$1" stop "$2" >/dev/null 2>&1
rm -rf "$2"
"#;

/// A server started by `script` in its own directory.
#[derive(Debug)]
pub(crate) struct Scripted {
    dir: PathBuf,
    pid: u32,
    /// The watchdog's stdin: dropping it stops the server.
    watchdog_stdin: Option<ChildStdin>,
    watchdog: Option<Child>,
}

impl Scripted {
    /// Writes `script` into a fresh temp directory `<name>-...` and runs
    /// `bash script start DIR <ports...> <args...>` with `ports` free
    /// loopback ports, trying new ones when the script reports a port
    /// taken. Returns the server and its ports.
    pub(crate) fn start(
        name: &str,
        script: &str,
        ports: usize,
        args: &[&str],
    ) -> io::Result<(Scripted, Vec<u16>)> {
        let dir = create_temp_dir_named(name)?;
        let script_path = dir.join(format!("{name}.sh"));
        if let Err(e) = fs::write(&script_path, script) {
            let _ = fs::remove_dir_all(&dir);
            return Err(ctx(e, format!("cannot write {}", script_path.display())));
        }
        // From here on the watchdog owns the directory: it removes it when
        // the handle goes, whatever happens below.
        let mut watchdog = Command::new("/bin/sh")
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg(format!("{name}-watchdog"))
            .arg(&script_path)
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| ctx(e, "cannot start the watchdog (/bin/sh)"))?;
        let mut me = Scripted {
            dir: dir.clone(),
            pid: 0,
            watchdog_stdin: watchdog.stdin.take(),
            watchdog: Some(watchdog),
        };
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let picked = free_ports(ports)?;
            let mut cmd = Command::new("bash");
            cmd.arg(&script_path).arg("start").arg(&dir);
            for p in &picked {
                cmd.arg(p.to_string());
            }
            let out = cmd
                .args(args)
                .current_dir(&dir)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| ctx(e, "cannot run bash"))?;
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if out.status.code() == Some(PORT_TAKEN) {
                last = stderr;
                continue;
            }
            if !out.status.success() {
                return Err(io::Error::other(format!(
                    "{name} did not start ({}); its files are in {} until this process ends:\n{stderr}",
                    out.status,
                    dir.display()
                )));
            }
            let stdout = String::from_utf8_lossy(&out.stdout);
            me.pid = stdout.trim().parse().map_err(|_| {
                io::Error::other(format!(
                    "{name}: the start script printed {stdout:?}, not a PID:\n{stderr}"
                ))
            })?;
            return Ok((me, picked));
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{name}: {PORT_ATTEMPTS} sets of free ports were taken before the server bound them: {last}"),
        ))
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        // EOF on the watchdog's stdin: it stops the server and removes the
        // directory; wait for it so that the server is gone on return.
        if let Some(mut stdin) = self.watchdog_stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.wait();
        }
    }
}

/// Fails with `NotFound` and `hint` when a program is missing.
pub(crate) fn require(programs: &[&str], hint: &str) -> io::Result<()> {
    for p in programs {
        let found = if p.starts_with('/') {
            Path::new(p).exists()
        } else {
            find_in_path(p).is_some()
                || Path::new("/usr/sbin").join(p).exists()
                || Path::new("/sbin").join(p).exists()
        };
        if !found {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{p} not found: {hint}"),
            ));
        }
    }
    Ok(())
}

/// The outcome of starting the shared instance, kept for every caller:
/// `io::Error` is not `Clone`, so its kind and text.
pub(crate) type SharedResult<T> = Result<T, (io::ErrorKind, String)>;

/// The one instance of a server in this process, kept in `cell` (a
/// `static` of the server's type): started with `start` by the first
/// caller while the others wait for it; a failure to start is kept too and
/// returned to every caller.
pub(crate) fn shared<T>(
    cell: &'static OnceLock<SharedResult<T>>,
    start: impl FnOnce() -> io::Result<T>,
) -> io::Result<&'static T> {
    cell.get_or_init(|| start().map_err(|e| (e.kind(), e.to_string())))
        .as_ref()
        .map_err(|(kind, text)| io::Error::new(*kind, text.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_is_not_found_and_says_how_to_install() {
        let e = require(&["/nonexistent/ns-slapd"], "run scripts/install-deps.sh").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert_eq!(
            e.to_string(),
            "/nonexistent/ns-slapd not found: run scripts/install-deps.sh"
        );
        assert!(require(&["sh"], "x").is_ok());
    }
}
