//! The TLS material of a slapd with LDAPS: a throwaway CA and a server
//! certificate for 127.0.0.1/localhost, made once per directory with the
//! `openssl` command (P-256 keys).
//!
//! Knows file names and openssl's arguments; nothing of slapd's config or
//! of the process that uses the files.

use std::fs;
use std::io;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::process::{ctx, remove_if_exists, write_file};

pub(crate) fn ensure_tls(tls: &Path) -> io::Result<()> {
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
