//! A throwaway OpenLDAP server (`slapd`) for the integration tests, the
//! benchmark and `scim2ldap dev`. Not part of the daemon: the daemon links
//! it only for `dev` (its cargo feature of that name), and
//! [`Slapd::daemon_config`] is the one place that writes a scim2ldap config
//! pointing at a server started here.
//!
//! Everything one server needs (config, mdb data, TLS material, logs) lives in
//! one directory, and it listens on 127.0.0.1 only. slapd runs in the
//! foreground as a direct child of this process: its PID cannot be recycled
//! before we reap it, so signals always reach the right process.
//!
//! Requires the Debian packages `slapd` (and `openssl` for LDAPS). Readiness is
//! checked with a raw LDAP bind, so the harness itself does not need
//! `ldap-utils`, but tests usually do.

pub mod dirsrv;
pub mod samba;
mod scripted;

pub use dirsrv::Dirsrv;
pub use samba::SambaAd;

use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SLAPD_BIN: &str = "/usr/sbin/slapd";
const SLAPPASSWD_BIN: &str = "/usr/sbin/slappasswd";
const MODULE_DIR: &str = "/usr/lib/ldap";
const SCHEMA_DIR: &str = "/etc/ldap/schema";
const NIS_SCHEMA: &str = "nis.schema";
const BASE_SCHEMAS: [&str; 4] = [
    "core.schema",
    "cosine.schema",
    "inetorgperson.schema",
    NIS_SCHEMA,
];
const INSTALL_HINT: &str = "apt-get install slapd ldap-utils";

const READY_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(5);
/// Attempts when a port we picked ourselves was grabbed by someone else
/// between our probe and slapd's bind.
const PORT_ATTEMPTS: usize = 3;
const LOG_TAIL_LINES: usize = 30;

/// Markers in the data directory: base entries are loaded offline only once,
/// so that a second start on the same directory keeps (and does not clash
/// with) the existing data.
const BASE_MARKER: &str = ".base-loaded";
const PPOLICY_MARKER: &str = ".ppolicy-loaded";

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

/// How to set up the server. `SlapdOptions::default()` is a plain slapd,
/// as a production directory without overlays would be: mdb with fsync,
/// ppolicy (for account locking), no `memberof` and no `refint`, so that
/// what the daemon must do itself is not done for it by the server.
/// [`SlapdOptions::with_overlays`] turns both on. Override single fields
/// with struct update syntax.
#[derive(Debug, Clone)]
pub struct SlapdOptions {
    /// Plain LDAP port on 127.0.0.1. `None`: pick a free port.
    pub port: Option<u16>,
    /// Naming context; its first RDN must be `dc=`.
    pub suffix: String,
    /// Password of the rootdn `cn=admin,<suffix>`.
    pub admin_password: String,
    /// mdb `dbnosync`: no fsync per write transaction (faster, not crash-safe).
    pub nosync: bool,
    /// memberof overlay on groupOfNames/member, maintaining memberOf
    /// (with `memberof-refint`). Off by default.
    pub memberof: bool,
    /// refint overlay on member; a last member is replaced by the rootdn.
    /// Off by default.
    pub refint: bool,
    /// ppolicy overlay with `cn=default,ou=policies,<suffix>` as default
    /// policy (needed for pwdAccountLockedTime; hashes cleartext passwords).
    pub ppolicy: bool,
    /// Also listen with `ldaps://` on this port (and enable StartTLS on the
    /// plain port). `Some(0)`: pick a free port.
    pub ldaps_port: Option<u16>,
    /// Extra schema files: names under /etc/ldap/schema or absolute paths.
    pub extra_schemas: Vec<String>,
    /// posixGroup AUXILIARY, as in rfc2307bis, so that one group entry can
    /// be groupOfNames + posixGroup (Debian's nis.schema makes it
    /// STRUCTURAL, and slapd refuses two unrelated structural classes).
    /// A copy of nis.schema with that one change is written to the
    /// server's directory and loaded in its place.
    pub posix_group_auxiliary: bool,
}

impl Default for SlapdOptions {
    fn default() -> Self {
        SlapdOptions {
            port: None,
            suffix: "dc=example,dc=com".to_string(),
            admin_password: "secret".to_string(),
            nosync: false,
            memberof: false,
            refint: false,
            ppolicy: true,
            ldaps_port: None,
            extra_schemas: Vec::new(),
            posix_group_auxiliary: false,
        }
    }
}

/// What [`Slapd::daemon_config`] needs besides the server itself.
/// `Default` gives a config listening on a free port (`127.0.0.1:0`).
#[derive(Debug, Clone, Copy)]
pub struct DaemonConfig<'a> {
    /// Comment lines at the top of the file (without `#`).
    pub comment: &'a str,
    /// `server.listen`.
    pub listen: &'a str,
    /// Name of the one `[[tokens]]` entry (shown in logs).
    pub token_name: &'a str,
    /// SHA-256 of the bearer token, hex (`TokenHash::to_hex`).
    pub token_sha256: &'a str,
    /// Extra `key = value` lines for `[server]`, `[store]` and `[ldap]`.
    pub server: &'a str,
    pub store: &'a str,
    pub ldap: &'a str,
}

impl Default for DaemonConfig<'_> {
    fn default() -> Self {
        DaemonConfig {
            comment: "",
            listen: "127.0.0.1:0",
            token_name: "test",
            token_sha256: "",
            server: "",
            store: "",
            ldap: "",
        }
    }
}

/// Extra config lines, each ending in a newline.
fn lines(extra: &str) -> String {
    extra
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The one writer of a daemon config (TOML) for a server started here:
/// the mapping in `mapping.toml` and the store in `state`, both beside the
/// config file, one bearer token given by its SHA-256 (hex). `ldap_extra`
/// are the server's own `[ldap]` lines (CA, stable id), before the caller's.
pub(crate) fn write_daemon_config(
    c: &DaemonConfig,
    url: &str,
    bind_dn: &str,
    password: &str,
    base_dn: &str,
    ldap_extra: &str,
) -> String {
    let mut t = String::new();
    if !c.comment.is_empty() {
        for line in c.comment.lines() {
            let _ = writeln!(t, "# {line}");
        }
    }
    let _ = write!(
        t,
        "mapping = \"mapping.toml\"\n\n[server]\nlisten = \"{}\"\n{}\n\
         [store]\npath = \"state\"\n{}\n\
         [ldap]\nurl = \"{}\"\nbind_dn = \"{}\"\nbind_password = \"{}\"\nbase_dn = \"{}\"\n{}{}\n\
         [[tokens]]\nname = \"{}\"\nsha256 = \"{}\"\n",
        c.listen,
        lines(c.server),
        lines(c.store),
        url,
        bind_dn,
        password,
        base_dn,
        lines(ldap_extra),
        lines(c.ldap),
        c.token_name,
        c.token_sha256,
    );
    t
}

impl SlapdOptions {
    /// The default setup plus the `memberof` and `refint` overlays, which
    /// rewrite and remove `member` values on renames and deletes by
    /// themselves (as `scim2ldap dev` runs them).
    pub fn with_overlays() -> SlapdOptions {
        SlapdOptions {
            memberof: true,
            refint: true,
            ..SlapdOptions::default()
        }
    }
}

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
        format!("cn=admin,{}", self.opts.suffix)
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
        let conf = self.write_config()?;
        self.load_base_entries(&conf, &dc)?;

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

    fn write_config(&self) -> io::Result<PathBuf> {
        let o = &self.opts;
        let dir = &self.dir;
        let suffix = quote(&o.suffix, "suffix")?;
        let rootdn = quote(&self.bind_dn(), "suffix")?;
        let rootpw = hash_password(&o.admin_password)?;
        let path = |p: &Path| quote(&p.to_string_lossy(), "directory path");

        let mut c = String::new();
        c.push_str("# Generated on every start by the scim2ldap test harness; edits are lost.\n");
        for s in BASE_SCHEMAS
            .iter()
            .map(|s| s.to_string())
            .chain(o.extra_schemas.iter().cloned())
        {
            let file = if o.posix_group_auxiliary && s == NIS_SCHEMA {
                self.write_nis_auxiliary_schema()?
            } else {
                schema_path(&s)
            };
            let _ = writeln!(c, "include {}", path(&file)?);
        }
        let _ = writeln!(c, "pidfile {}", path(&dir.join("slapd.pid"))?);
        let _ = writeln!(c, "argsfile {}", path(&dir.join("slapd.args"))?);
        let _ = writeln!(c, "modulepath {MODULE_DIR}");
        c.push_str("moduleload back_mdb\n");
        for (on, module) in [
            (o.memberof, "memberof"),
            (o.refint, "refint"),
            (o.ppolicy, "ppolicy"),
        ] {
            if on {
                let _ = writeln!(c, "moduleload {module}");
            }
        }
        if self.ldaps_port.is_some() {
            let tls = dir.join("tls");
            let _ = writeln!(c, "TLSCACertificateFile {}", path(&tls.join("ca.crt"))?);
            let _ = writeln!(c, "TLSCertificateFile {}", path(&tls.join("server.crt"))?);
            let _ = writeln!(
                c,
                "TLSCertificateKeyFile {}",
                path(&tls.join("server.key"))?
            );
        }

        c.push_str("\ndatabase mdb\n");
        let _ = writeln!(c, "suffix {suffix}");
        let _ = writeln!(c, "rootdn {rootdn}");
        let _ = writeln!(c, "rootpw {rootpw}");
        let _ = writeln!(c, "directory {}", path(&dir.join("data"))?);
        c.push_str("maxsize 1073741824\n");
        if o.nosync {
            c.push_str("dbnosync\n");
        }
        c.push_str("index objectClass eq\n");
        c.push_str("index uid,mail,cn,sn,givenName eq\n");
        // memberOf only exists when the memberof module defines it.
        if o.memberof {
            c.push_str("index member,memberOf,uniqueMember eq\n");
        } else {
            c.push_str("index member,uniqueMember eq\n");
        }
        c.push_str("index entryUUID,entryCSN eq\n");
        c.push_str(concat!(
            "access to attrs=userPassword\n",
            "  by self write\n",
            "  by anonymous auth\n",
            "  by * none\n",
            "access to *\n",
            "  by self write\n",
            "  by users read\n",
            "  by anonymous read\n",
        ));

        // Overlays: the last one declared runs first.
        if o.memberof {
            c.push_str(concat!(
                "\noverlay memberof\n",
                "memberof-group-oc groupOfNames\n",
                "memberof-member-ad member\n",
                "memberof-memberof-ad memberOf\n",
                "memberof-refint TRUE\n",
                "memberof-dangling ignore\n",
            ));
        }
        if o.refint {
            c.push_str("\noverlay refint\nrefint_attributes member\n");
            let _ = writeln!(c, "refint_nothing {rootdn}");
        }
        if o.ppolicy {
            c.push_str("\noverlay ppolicy\n");
            let policy = quote(&format!("cn=default,ou=policies,{}", o.suffix), "suffix")?;
            let _ = writeln!(c, "ppolicy_default {policy}");
            c.push_str("ppolicy_hash_cleartext\n");
        }

        let conf = dir.join("slapd.conf");
        write_file(&conf, c.as_bytes())?;
        Ok(conf)
    }

    /// Writes `nis-posixgroup-auxiliary.schema` into the server's directory:
    /// Debian's nis.schema with posixGroup AUXILIARY instead of STRUCTURAL
    /// (what rfc2307bis does), and returns its path.
    fn write_nis_auxiliary_schema(&self) -> io::Result<PathBuf> {
        let src = schema_path(NIS_SCHEMA);
        let text = fs::read_to_string(&src)
            .map_err(|e| ctx(e, format!("cannot read {}", src.display())))?;
        let changed = posix_group_auxiliary(&text).ok_or_else(|| {
            io::Error::other(format!(
                "{}: no STRUCTURAL posixGroup definition to make AUXILIARY",
                src.display()
            ))
        })?;
        let out = self.dir.join("nis-posixgroup-auxiliary.schema");
        write_file(&out, changed.as_bytes())?;
        Ok(out)
    }

    /// Loads the base entries with offline slapadd (`slapd -T add`) the
    /// first time only; the ppolicy entries separately, so that turning
    /// ppolicy on for an existing directory also works.
    fn load_base_entries(&self, conf: &Path, dc: &str) -> io::Result<()> {
        let data = self.dir.join("data");
        let suffix = &self.opts.suffix;
        let need_base = !data.join(BASE_MARKER).exists();
        let need_policy = self.opts.ppolicy && (need_base || !data.join(PPOLICY_MARKER).exists());
        let mut ldif = String::new();
        if need_base {
            // A half-loaded database (interrupted first start) would make
            // slapadd fail on duplicates: start from an empty one.
            for f in ["data.mdb", "lock.mdb", PPOLICY_MARKER] {
                remove_if_exists(&data.join(f))?;
            }
            let _ = write!(
                ldif,
                "dn: {suffix}\nobjectClass: top\nobjectClass: dcObject\nobjectClass: organization\n\
                 dc: {dc}\no: {dc}\n\n\
                 dn: ou=people,{suffix}\nobjectClass: top\nobjectClass: organizationalUnit\nou: people\n\n\
                 dn: ou=groups,{suffix}\nobjectClass: top\nobjectClass: organizationalUnit\nou: groups\n\n"
            );
        }
        // pwdLockout must be TRUE: slapd 2.5 ignores pwdAccountLockedTime
        // (even the permanent 000001010000Z) when it is FALSE. pwdMaxFailure 0
        // keeps failed binds from ever locking an account by themselves.
        if need_policy {
            let _ = write!(
                ldif,
                "dn: ou=policies,{suffix}\nobjectClass: top\nobjectClass: organizationalUnit\nou: policies\n\n\
                 dn: cn=default,ou=policies,{suffix}\nobjectClass: top\nobjectClass: device\n\
                 objectClass: pwdPolicy\ncn: default\npwdAttribute: userPassword\n\
                 pwdAllowUserChange: TRUE\npwdCheckQuality: 0\npwdLockout: TRUE\npwdMaxFailure: 0\n\
                 pwdMustChange: FALSE\n\n"
            );
        }
        if ldif.is_empty() {
            return Ok(());
        }
        // One slapadd run: each costs ~10 ms of the start time.
        self.slapadd(conf, "base.ldif", &ldif)?;
        if need_base {
            write_file(&data.join(BASE_MARKER), b"")?;
        }
        if need_policy {
            write_file(&data.join(PPOLICY_MARKER), b"")?;
        }
        Ok(())
    }

    fn slapadd(&self, conf: &Path, name: &str, ldif: &str) -> io::Result<()> {
        let ldif_path = self.dir.join(name);
        write_file(&ldif_path, ldif.as_bytes())?;
        let out = Command::new(SLAPD_BIN)
            .args(["-T", "add", "-q", "-f"])
            .arg(conf)
            .arg("-l")
            .arg(&ldif_path)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| ctx(e, format!("cannot run {SLAPD_BIN} -T add ({INSTALL_HINT})")))?;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        let _ = write_file(&self.dir.join("slapadd.log"), text.as_bytes());
        if out.status.success() {
            return Ok(());
        }
        Err(io::Error::other(format!(
            "loading {} with `slapd -T add` failed ({}); check {} and the options:\n{}",
            ldif_path.display(),
            out.status,
            self.dir.join("slapd.conf").display(),
            last_lines(&text, LOG_TAIL_LINES)
        )))
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

/// `schema` (nis.schema's text) with the posixGroup object class made
/// AUXILIARY; `None` if it has no STRUCTURAL posixGroup definition.
fn posix_group_auxiliary(schema: &str) -> Option<String> {
    let start = schema.find("NAME 'posixGroup'")?;
    // The definition ends at the next `objectclass` keyword (or the end).
    let end = schema[start..]
        .find("\nobjectclass")
        .map_or(schema.len(), |i| start + i);
    let def = &schema[start..end];
    let at = def.find("STRUCTURAL")?;
    let mut out = String::with_capacity(schema.len() + 1);
    out.push_str(&schema[..start + at]);
    out.push_str("AUXILIARY");
    out.push_str(&schema[start + at + "STRUCTURAL".len()..]);
    Some(out)
}

pub(crate) fn ctx(e: io::Error, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn check_prerequisites(o: &SlapdOptions) -> io::Result<()> {
    for bin in [SLAPD_BIN, SLAPPASSWD_BIN] {
        if !Path::new(bin).exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{bin} not found: {INSTALL_HINT}"),
            ));
        }
    }
    let mut modules = vec!["back_mdb"];
    for (on, m) in [
        (o.memberof, "memberof"),
        (o.refint, "refint"),
        (o.ppolicy, "ppolicy"),
    ] {
        if on {
            modules.push(m);
        }
    }
    for m in modules {
        let p = Path::new(MODULE_DIR).join(format!("{m}.so"));
        if !p.exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("slapd module {} not found: {INSTALL_HINT}", p.display()),
            ));
        }
    }
    for s in BASE_SCHEMAS
        .iter()
        .map(|s| s.to_string())
        .chain(o.extra_schemas.iter().cloned())
    {
        let p = schema_path(&s);
        if !p.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "schema {} not found: extra_schemas takes file names under {SCHEMA_DIR} \
                     (e.g. \"dyngroup.schema\") or absolute paths; base schemas come with {INSTALL_HINT}",
                    p.display()
                ),
            ));
        }
    }
    if o.ldaps_port.is_some() && find_in_path("openssl").is_none() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "openssl not found in PATH (needed for ldaps_port): apt-get install openssl",
        ));
    }
    Ok(())
}

fn schema_path(name: &str) -> PathBuf {
    let p = Path::new(name);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        Path::new(SCHEMA_DIR).join(p)
    }
}

pub(crate) fn find_in_path(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(bin))
            .find(|p| p.is_file())
    })
}

/// The value of the suffix's first RDN, which must be `dc=` because the
/// suffix entry is created as a dcObject.
fn first_dc(suffix: &str) -> io::Result<String> {
    let first = suffix.split(',').next().unwrap_or("").trim();
    match first.split_once('=') {
        Some((attr, value)) if attr.trim().eq_ignore_ascii_case("dc") && !value.is_empty() => {
            Ok(value.trim().to_string())
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("suffix {suffix:?} must start with dc= (e.g. \"dc=example,dc=com\")"),
        )),
    }
}

/// Double-quotes a slapd.conf value. slapd.conf has no reliable escape for
/// `"` or `\`, so those are refused rather than silently mangled.
fn quote(value: &str, what: &str) -> io::Result<String> {
    if value.contains(['"', '\\', '\n', '\r']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{what} {value:?} contains a character slapd.conf cannot quote (\", \\ or a newline); choose another"
            ),
        ));
    }
    Ok(format!("\"{value}\""))
}

fn hash_password(password: &str) -> io::Result<String> {
    // `-T file` instead of `-s`: keeps the password out of `ps`, and a file
    // holds any bytes. slappasswd hashes the file's whole contents.
    let out = Command::new(SLAPPASSWD_BIN)
        .args(["-n", "-T", "/dev/stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(password.as_bytes())?;
            }
            child.wait_with_output()
        })
        .map_err(|e| ctx(e, format!("cannot run {SLAPPASSWD_BIN} ({INSTALL_HINT})")))?;
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || !hash.starts_with('{') {
        return Err(io::Error::other(format!(
            "{SLAPPASSWD_BIN} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(hash)
}

fn ensure_tls(tls: &Path) -> io::Result<()> {
    let files = ["ca.crt", "server.crt", "server.key"];
    if files.iter().all(|f| tls.join(f).is_file()) {
        return Ok(());
    }
    fs::create_dir_all(tls).map_err(|e| ctx(e, format!("cannot create {}", tls.display())))?;
    // server.crt is written last, so an interrupted run is redone as a whole.
    remove_if_exists(&tls.join("server.crt"))?;
    write_file(
        &tls.join("server.ext"),
        b"subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    )?;
    // P-256 keys: ~40 ms for the whole set, against ~400 ms with RSA-2048.
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let steps: [Vec<&str>; 3] = [
        [
            &["req", "-x509"][..],
            &ec,
            &[
                "-days",
                "3650",
                "-subj",
                "/CN=scim2ldap throwaway test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ]
        .concat(),
        [
            &["req", "-new"][..],
            &ec,
            &[
                "-subj",
                "/CN=localhost",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ],
        ]
        .concat(),
        vec![
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "3650",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    ];
    for args in steps {
        let out = Command::new("openssl")
            .args(&args)
            .current_dir(tls)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| ctx(e, "cannot run openssl (apt-get install openssl)"))?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "openssl {} failed ({}) in {}: {}",
                args.join(" "),
                out.status,
                tls.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    Ok(())
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

/// An anonymous LDAPv3 bind answered with success: the server is up and
/// serving, not merely accepting TCP connections.
fn ldap_answers(port: u16) -> bool {
    // LDAPMessage { messageID 1, bindRequest { version 3, name "", simple "" } }
    const BIND: [u8; 14] = [
        0x30, 0x0c, 0x02, 0x01, 0x01, 0x60, 0x07, 0x02, 0x01, 0x03, 0x04, 0x00, 0x80, 0x00,
    ];
    // LDAPMessage { messageID 2, unbindRequest }
    const UNBIND: [u8; 7] = [0x30, 0x05, 0x02, 0x01, 0x02, 0x42, 0x00];
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
    if s.write_all(&BIND).is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 256];
    while buf.len() < 4096 {
        if let Some(code) = bind_result_code(&buf) {
            let _ = s.write_all(&UNBIND);
            return code == 0;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    false
}

/// resultCode of a BindResponse, once enough of it has arrived.
fn bind_result_code(buf: &[u8]) -> Option<u8> {
    let (tag, body, _) = ber_header(buf, 0)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, start, len) = ber_header(buf, body)?;
    if tag != 0x02 {
        return None;
    }
    let (tag, op, _) = ber_header(buf, start + len)?;
    if tag != 0x61 {
        return None;
    }
    let (tag, code, len) = ber_header(buf, op)?;
    if tag != 0x0a || len != 1 {
        return None;
    }
    buf.get(code).copied()
}

/// BER tag at `pos`: (tag, start of contents, length of contents).
fn ber_header(buf: &[u8], pos: usize) -> Option<(u8, usize, usize)> {
    let tag = *buf.get(pos)?;
    let first = *buf.get(pos + 1)?;
    if first < 0x80 {
        return Some((tag, pos + 2, usize::from(first)));
    }
    let n = usize::from(first & 0x7f);
    if n == 0 || n > 4 {
        return None;
    }
    let mut len = 0usize;
    for i in 0..n {
        len = (len << 8) | usize::from(*buf.get(pos + 2 + i)?);
    }
    Some((tag, pos + 2 + n, len))
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

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn spawn_watchdog(pid: u32) -> io::Result<Child> {
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
fn signal(pid: u32, sig: &str) -> io::Result<()> {
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
fn is_live_slapd(pid: u32) -> bool {
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    comm.trim() == "slapd" && state.is_some_and(|s| s != "Z")
}

fn create_temp_dir() -> io::Result<PathBuf> {
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

fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    fs::write(path, bytes).map_err(|e| ctx(e, format!("cannot write {}", path.display())))
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(ctx(e, format!("cannot remove {}", path.display())))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bind_responses() {
        let ok = [
            0x30, 0x0c, 0x02, 0x01, 0x01, 0x61, 0x07, 0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00,
        ];
        assert_eq!(bind_result_code(&ok), Some(0));
        assert_eq!(bind_result_code(&ok[..8]), None);
        let long_form = [
            0x30, 0x81, 0x0c, 0x02, 0x01, 0x01, 0x61, 0x07, 0x0a, 0x01, 0x31, 0x04, 0x00, 0x04,
            0x00,
        ];
        assert_eq!(bind_result_code(&long_form), Some(0x31));
        assert_eq!(bind_result_code(b"HTTP/1.1 400"), None);
    }

    #[test]
    fn suffix_must_start_with_dc() {
        assert_eq!(first_dc("dc=example,dc=com").unwrap(), "example");
        assert_eq!(first_dc("DC=Acme").unwrap(), "Acme");
        assert!(first_dc("o=example").is_err());
        assert!(first_dc("").is_err());
    }

    #[test]
    fn posix_group_becomes_auxiliary_and_nothing_else_changes() {
        let nis = concat!(
            "objectclass ( 1.3.6.1.1.1.2.0 NAME 'posixAccount'\n\tSUP top AUXILIARY\n\tMUST uid )\n\n",
            "objectclass ( 1.3.6.1.1.1.2.2 NAME 'posixGroup'\n\tDESC 'Abstraction of a group of accounts'\n",
            "\tSUP top STRUCTURAL\n\tMUST ( cn $ gidNumber )\n\tMAY ( userPassword $ memberUid $ description ) )\n\n",
            "objectclass ( 1.3.6.1.1.1.2.3 NAME 'ipService'\n\tSUP top STRUCTURAL\n\tMUST cn )\n",
        );
        let out = posix_group_auxiliary(nis).unwrap();
        assert_eq!(
            out,
            nis.replacen(
                "SUP top STRUCTURAL\n\tMUST ( cn",
                "SUP top AUXILIARY\n\tMUST ( cn",
                1
            )
        );
        assert!(out.contains("'ipService'\n\tSUP top STRUCTURAL"));
        let already = out.clone();
        assert_eq!(
            posix_group_auxiliary(&already),
            None,
            "no STRUCTURAL left to change"
        );
        assert_eq!(posix_group_auxiliary("objectclass ( 1 NAME 'x' )"), None);
    }

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

    #[test]
    fn quote_refuses_what_slapd_conf_cannot_hold() {
        assert_eq!(quote("/tmp/a b", "p").unwrap(), "\"/tmp/a b\"");
        assert!(quote("/tmp/a\"b", "p").is_err());
        assert!(quote("/tmp/a\\b", "p").is_err());
    }
}
