//! [`Slapd`], one running (or stopped) throwaway slapd: start in a fresh
//! or a kept directory, retries on ports taken meanwhile, the foreground
//! child and its watchdog, readiness (pidfile and an LDAP bind), startup
//! errors with the log's tail, stop (SIGTERM, then SIGKILL), kill and
//! restart, and the accessors the tests and `scim2ldap dev` use.
//!
//! Knows the server's lifetime; what goes into slapd.conf and the base
//! entries is `config.rs`'s, the TLS files `tls.rs`'s, the daemon config
//! `daemon_config.rs`'s.

use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::{
    check_prerequisites, first_dc, load_base_entries, rootdn, write_config, SlapdOptions,
    INSTALL_HINT, SLAPD_BIN,
};
use crate::daemon_config::{write_daemon_config, DaemonConfig};
use crate::probe::ldap_answers;
use crate::process::{
    create_temp_dir, ctx, free_ports, is_live_slapd, last_lines, remove_if_exists, signal,
    spawn_watchdog, LOG_TAIL_LINES,
};
use crate::tls::ensure_tls;

const READY_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(5);
/// Attempts when a port we picked ourselves was grabbed by someone else
/// between our probe and slapd's bind.
const PORT_ATTEMPTS: usize = 3;

/// A running (or stopped) throwaway slapd. Dropping it stops the server and,
/// for [`Slapd::start`], deletes its directory.
#[derive(Debug)]
pub struct Slapd {
    dir: PathBuf,
    owns_dir: bool,
    opts: SlapdOptions,
    /// 0 until the first successful start when the port is picked by us.
    port: u16,
    ldaps_port: Option<u16>,
    child: Option<Child>,
    watchdog: Option<Child>,
}

impl Slapd {
    /// Starts a server in a fresh directory under `std::env::temp_dir()`,
    /// which is removed on drop.
    pub fn start(opts: SlapdOptions) -> io::Result<Slapd> {
        let dir = create_temp_dir()?;
        let mut slapd = Slapd::new(dir, true, opts);
        // On error `slapd` is dropped here, which removes the directory.
        slapd.boot()?;
        Ok(slapd)
    }

    /// Starts a server in `dir` (created if missing), which is kept on drop.
    /// Data from an earlier run in the same directory is kept.
    pub fn start_in(dir: &Path, opts: SlapdOptions) -> io::Result<Slapd> {
        fs::create_dir_all(dir).map_err(|e| ctx(e, format!("cannot create {}", dir.display())))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| ctx(e, format!("cannot resolve {}", dir.display())))?;
        let mut slapd = Slapd::new(dir, false, opts);
        slapd.boot()?;
        Ok(slapd)
    }

    fn new(dir: PathBuf, owns_dir: bool, opts: SlapdOptions) -> Slapd {
        Slapd {
            dir,
            owns_dir,
            port: opts.port.unwrap_or(0),
            ldaps_port: opts.ldaps_port,
            opts,
            child: None,
            watchdog: None,
        }
    }

    /// `ldap://127.0.0.1:PORT`
    pub fn uri(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// `ldaps://127.0.0.1:PORT` if LDAPS was requested. Use the IP, not
    /// `localhost`: libldap checks the cert against the reverse-resolved name.
    pub fn ldaps_uri(&self) -> Option<String> {
        self.ldaps_port.map(|p| format!("ldaps://127.0.0.1:{p}"))
    }

    /// The CA that signed the server certificate, if LDAPS was requested.
    pub fn ca_cert(&self) -> Option<PathBuf> {
        self.ldaps_port.map(|_| self.dir.join("tls").join("ca.crt"))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn suffix(&self) -> &str {
        &self.opts.suffix
    }

    pub fn bind_dn(&self) -> String {
        rootdn(&self.opts.suffix)
    }

    pub fn password(&self) -> &str {
        &self.opts.admin_password
    }

    pub fn people_dn(&self) -> String {
        format!("ou=people,{}", self.opts.suffix)
    }

    pub fn groups_dn(&self) -> String {
        format!("ou=groups,{}", self.opts.suffix)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A scim2ldap config (TOML) for this server: the mapping in
    /// `mapping.toml` and the store in `state`, both beside the config
    /// file, one bearer token given by its SHA-256 (hex).
    pub fn daemon_config(&self, c: &DaemonConfig) -> String {
        write_daemon_config(
            c,
            &self.uri(),
            &self.bind_dn(),
            self.password(),
            self.suffix(),
            "",
        )
    }

    /// PID of the running slapd, if any.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the server: SIGTERM (clean mdb shutdown), up to 10 s, then
    /// SIGKILL. The data is kept; [`Slapd::restart`] brings it back.
    pub fn stop(&mut self) -> io::Result<()> {
        self.stop_watchdog();
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Ok(Some(_)) = child.try_wait() {
            return Ok(());
        }
        if signal(child.id(), "TERM").is_ok() {
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline {
                match child.try_wait() {
                    Ok(Some(_)) => return Ok(()),
                    Ok(None) => thread::sleep(POLL),
                    Err(_) => break,
                }
            }
        }
        // SIGTERM failed or was ignored; never leave the process behind.
        let killed = child.kill();
        let waited = child.wait();
        killed.and(waited.map(|_| ()))
    }

    /// SIGKILL now: simulates a crash of the directory server.
    pub fn kill(&mut self) {
        self.stop_watchdog();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port(s) with the same data, after
    /// [`Slapd::stop`] or [`Slapd::kill`] (stops it first if still running).
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop()?;
        self.boot()
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn stop_watchdog(&mut self) {
        // SIGKILL before its stdin closes, so that it never signals slapd.
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }

    /// Writes the config, loads base entries if needed and starts slapd,
    /// retrying with new ports if a port we picked got taken meanwhile.
    fn boot(&mut self) -> io::Result<()> {
        check_prerequisites(&self.opts)?;
        let dc = first_dc(&self.opts.suffix)?;
        let data = self.dir.join("data");
        fs::create_dir_all(&data)
            .map_err(|e| ctx(e, format!("cannot create {}", data.display())))?;
        self.refuse_if_already_running()?;
        remove_if_exists(&self.dir.join("slapd.pid"))?;
        if self.ldaps_port.is_some() {
            ensure_tls(&self.dir.join("tls"))?;
        }
        let conf = write_config(&self.dir, &self.opts, self.ldaps_port.is_some())?;
        load_base_entries(&self.dir, &self.opts, &conf, &dc)?;

        let want_port = self.port;
        let want_ldaps = self.ldaps_port;
        let mut last_err = None;
        for _ in 0..PORT_ATTEMPTS {
            let auto = want_port == 0 || want_ldaps == Some(0);
            let mut free =
                free_ports(usize::from(want_port == 0) + usize::from(want_ldaps == Some(0)))?
                    .into_iter();
            let port = if want_port == 0 {
                free.next().unwrap_or(0)
            } else {
                want_port
            };
            let ldaps = match want_ldaps {
                Some(0) => free.next(),
                other => other,
            };
            match self.launch(&conf, port, ldaps) {
                Ok(()) => {
                    self.port = port;
                    self.ldaps_port = ldaps;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && auto => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("slapd did not start")))
    }

    fn launch(&mut self, conf: &Path, port: u16, ldaps: Option<u16>) -> io::Result<()> {
        let log_path = self.dir.join("slapd.log");
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| ctx(e, format!("cannot open {}", log_path.display())))?;
        let _ = writeln!(
            log,
            "=== scim2ldap harness: starting slapd on port {port}{} at unix time {}",
            ldaps.map(|p| format!(" (ldaps {p})")).unwrap_or_default(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        );
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let mut urls = format!("ldap://127.0.0.1:{port}/");
        if let Some(p) = ldaps {
            let _ = write!(urls, " ldaps://127.0.0.1:{p}/");
        }
        // `-d` keeps slapd in the foreground. Level "none" still logs fatal
        // errors such as a failed bind; `-d 0` would log nothing at all.
        let child = Command::new(SLAPD_BIN)
            .arg("-f")
            .arg(conf)
            .arg("-h")
            .arg(&urls)
            .arg("-d")
            .arg("none")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| ctx(e, format!("cannot run {SLAPD_BIN} ({INSTALL_HINT})")))?;
        let pid = child.id();
        self.child = Some(child);
        self.watchdog = spawn_watchdog(pid).ok();
        let ready = self.wait_ready(pid, port, &log_path, log_start);
        if ready.is_err() {
            self.kill();
        }
        ready
    }

    fn wait_ready(&mut self, pid: u32, port: u16, log: &Path, log_start: u64) -> io::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let pidfile = self.dir.join("slapd.pid");
        loop {
            let exited = match self.child.as_mut() {
                Some(child) => child.try_wait()?,
                None => return Err(io::Error::other("slapd child vanished")),
            };
            if let Some(status) = exited {
                return Err(startup_failure(status, port, &self.dir, log, log_start));
            }
            // slapd writes its pidfile only after binding all listeners, so a
            // pidfile naming our child proves that the port is ours and not
            // some other server that happens to answer LDAP there.
            let ours = fs::read_to_string(&pidfile)
                .map(|s| s.trim() == pid.to_string())
                .unwrap_or(false);
            if ours && ldap_answers(port) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "slapd did not answer on 127.0.0.1:{port} within {}s; see {}:\n{}",
                        READY_TIMEOUT.as_secs(),
                        log.display(),
                        log_tail(log, log_start)
                    ),
                ));
            }
            thread::sleep(POLL);
        }
    }

    /// A persistent directory whose slapd outlived its owner (e.g. a test
    /// binary killed while the watchdog was not yet running) would make the
    /// new server fail on the mdb lock or the port; say so clearly instead.
    fn refuse_if_already_running(&self) -> io::Result<()> {
        let Ok(text) = fs::read_to_string(self.dir.join("slapd.pid")) else {
            return Ok(());
        };
        let Ok(pid) = text.trim().parse::<u32>() else {
            return Ok(());
        };
        if self.child.as_ref().map(Child::id) == Some(pid) || !is_live_slapd(pid) {
            return Ok(());
        }
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let conf = self.dir.join("slapd.conf");
        let conf = conf.to_string_lossy();
        if !String::from_utf8_lossy(&cmdline).contains(conf.as_ref()) {
            return Ok(());
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "a slapd (pid {pid}) is still running on {}; stop it with `kill {pid}` or use another directory",
                self.dir.display()
            ),
        ))
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        let _ = self.stop();
        if self.owns_dir {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn startup_failure(status: ExitStatus, port: u16, dir: &Path, log: &Path, from: u64) -> io::Error {
    let tail = log_tail(log, from);
    if tail.contains("Address already in use") {
        return io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "slapd could not bind its port (127.0.0.1:{port} or the LDAPS port): already in use \
                 by another process; use another port or let the harness pick one (port: None, \
                 ldaps_port: Some(0)). Log:\n{tail}"
            ),
        );
    }
    let hint = if tail.contains("mdb_env_open") || tail.contains("Resource temporarily unavailable")
    {
        format!(
            "; is another slapd using {}? (`fuser -v {}/data/data.mdb`)",
            dir.display(),
            dir.display()
        )
    } else {
        String::new()
    };
    io::Error::other(format!(
        "slapd exited during startup ({status}){hint}; config {}, log {}:\n{tail}",
        dir.join("slapd.conf").display(),
        log.display()
    ))
}

/// The last lines slapd wrote since `from` (the start of this run).
fn log_tail(log: &Path, from: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = fs::File::open(log) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let start = from.max(len.saturating_sub(64 * 1024));
        if f.seek(SeekFrom::Start(start)).is_ok() {
            let mut bytes = Vec::new();
            let _ = f.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    let tail = last_lines(&text, LOG_TAIL_LINES);
    if tail.trim().is_empty() {
        "(slapd.log is empty)".to_string()
    } else {
        tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_config_names_the_server_and_adds_extra_lines() {
        let s = Slapd::new(
            PathBuf::from("/nonexistent"),
            false,
            SlapdOptions::default(),
        );
        let text = s.daemon_config(&DaemonConfig {
            comment: "one\ntwo",
            token_sha256: "ab",
            ldap: "timeout_secs = 5\n connections = 2",
            ..Default::default()
        });
        assert!(
            text.starts_with("# one\n# two\nmapping = \"mapping.toml\"\n"),
            "{text}"
        );
        assert!(text.contains("\n[ldap]\nurl = \"ldap://127.0.0.1:0\"\nbind_dn = \"cn=admin,dc=example,dc=com\"\n"), "{text}");
        assert!(
            text.contains(
                "base_dn = \"dc=example,dc=com\"\ntimeout_secs = 5\nconnections = 2\n\n[[tokens]]"
            ),
            "{text}"
        );
        assert!(
            text.ends_with("name = \"test\"\nsha256 = \"ab\"\n"),
            "{text}"
        );
    }
}
