//! What a slapd is set up with, on disk: [`SlapdOptions`], the checks that
//! the binaries, modules and schemas it needs are installed, slapd.conf
//! (schema paths, the rootpw hashed with slappasswd, overlays, TLS files,
//! values quoted for slapd.conf), the nis.schema copy with posixGroup
//! AUXILIARY, and the base entries loaded offline with `slapd -T add`.
//!
//! Knows slapd's files and offline tools; nothing of the running server
//! (its process, ports, readiness or watchdog), which is `slapd.rs`'s.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::process::{ctx, find_in_path, last_lines, remove_if_exists, write_file, LOG_TAIL_LINES};

pub(crate) const SLAPD_BIN: &str = "/usr/sbin/slapd";
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
pub(crate) const INSTALL_HINT: &str = "apt-get install slapd ldap-utils";

/// Markers in the data directory: base entries are loaded offline only once,
/// so that a second start on the same directory keeps (and does not clash
/// with) the existing data.
const BASE_MARKER: &str = ".base-loaded";
const PPOLICY_MARKER: &str = ".ppolicy-loaded";

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

/// The rootdn of a server with this suffix (`cn=admin,<suffix>`).
pub(crate) fn rootdn(suffix: &str) -> String {
    format!("cn=admin,{suffix}")
}

/// Writes `dir/slapd.conf` for `o` (with the TLS files under `dir/tls`
/// when `tls`) and returns its path. Generated on every start.
pub(crate) fn write_config(dir: &Path, o: &SlapdOptions, tls: bool) -> io::Result<PathBuf> {
    let suffix = quote(&o.suffix, "suffix")?;
    let rootdn = quote(&rootdn(&o.suffix), "suffix")?;
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
            write_nis_auxiliary_schema(dir)?
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
    if tls {
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
fn write_nis_auxiliary_schema(dir: &Path) -> io::Result<PathBuf> {
    let src = schema_path(NIS_SCHEMA);
    let text =
        fs::read_to_string(&src).map_err(|e| ctx(e, format!("cannot read {}", src.display())))?;
    let changed = posix_group_auxiliary(&text).ok_or_else(|| {
        io::Error::other(format!(
            "{}: no STRUCTURAL posixGroup definition to make AUXILIARY",
            src.display()
        ))
    })?;
    let out = dir.join("nis-posixgroup-auxiliary.schema");
    write_file(&out, changed.as_bytes())?;
    Ok(out)
}

/// Loads the base entries with offline slapadd (`slapd -T add`) the
/// first time only; the ppolicy entries separately, so that turning
/// ppolicy on for an existing directory also works.
pub(crate) fn load_base_entries(
    dir: &Path,
    o: &SlapdOptions,
    conf: &Path,
    dc: &str,
) -> io::Result<()> {
    let data = dir.join("data");
    let suffix = &o.suffix;
    let need_base = !data.join(BASE_MARKER).exists();
    let need_policy = o.ppolicy && (need_base || !data.join(PPOLICY_MARKER).exists());
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
    slapadd(dir, conf, "base.ldif", &ldif)?;
    if need_base {
        write_file(&data.join(BASE_MARKER), b"")?;
    }
    if need_policy {
        write_file(&data.join(PPOLICY_MARKER), b"")?;
    }
    Ok(())
}

fn slapadd(dir: &Path, conf: &Path, name: &str, ldif: &str) -> io::Result<()> {
    let ldif_path = dir.join(name);
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
    let _ = write_file(&dir.join("slapadd.log"), text.as_bytes());
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "loading {} with `slapd -T add` failed ({}); check {} and the options:\n{}",
        ldif_path.display(),
        out.status,
        dir.join("slapd.conf").display(),
        last_lines(&text, LOG_TAIL_LINES)
    )))
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

pub(crate) fn check_prerequisites(o: &SlapdOptions) -> io::Result<()> {
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

/// The value of the suffix's first RDN, which must be `dc=` because the
/// suffix entry is created as a dcObject.
pub(crate) fn first_dc(suffix: &str) -> io::Result<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn quote_refuses_what_slapd_conf_cannot_hold() {
        assert_eq!(quote("/tmp/a b", "p").unwrap(), "\"/tmp/a b\"");
        assert!(quote("/tmp/a\"b", "p").is_err());
        assert!(quote("/tmp/a\\b", "p").is_err());
    }
}
