//! TLS with rustls (ring provider): the HTTPS listener's certificate,
//! re-read on reload, and the client configuration for `ldaps://` and
//! StartTLS with an optional CA file.

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::config::TlsFiles;

/// Reads every certificate in a PEM file; an error names the file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: cannot read certificates: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no certificate found (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// The HTTPS server configuration from a PEM certificate chain (leaf
/// first, then intermediates) and its private key (PKCS#8, PKCS#1 or SEC1).
/// TLS 1.2 and 1.3 only; HTTP/1.1 is the only protocol offered.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, String> {
    let certs = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        format!(
            "{}: cannot read a PEM private key: {e}",
            files.key.display()
        )
    })?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "{} and {}: the certificate and key cannot be used together: {e}",
                files.cert.display(),
                files.key.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The listener's TLS configuration, swapped whole on reload so that
/// renewed certificates take effect without a restart.
pub struct Acceptor {
    current: RwLock<Arc<ServerConfig>>,
}

impl Acceptor {
    pub fn load(files: &TlsFiles) -> Result<Acceptor, String> {
        Ok(Acceptor {
            current: RwLock::new(server_config(files)?),
        })
    }

    /// Re-reads the certificate and key (from `files`, which may name new
    /// paths). On error the previous ones stay.
    pub fn reload(&self, files: &TlsFiles) -> Result<(), String> {
        self.install(server_config(files)?);
        Ok(())
    }

    /// Serves new connections with `config` (one already validated).
    pub fn install(&self, config: Arc<ServerConfig>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = config;
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let cfg = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        tokio_rustls::TlsAcceptor::from(cfg)
    }
}

/// The client configuration for the directory: the CA file's certificates
/// when one is given, else the system's trust store.
pub fn ldap_client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in read_certs(path)? {
                roots.add(cert).map_err(|e| {
                    format!("{}: a certificate cannot be a CA: {e}", path.display())
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err("no CA certificates found in the system trust store; set ldap.ca_file to the CA that signs the directory's certificate".into());
            }
        }
    }
    Ok(Arc::new(
        ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// An operator-facing explanation of a TLS failure, from an error's text.
pub fn explain(error: &str) -> Option<&'static str> {
    let e = error.to_ascii_lowercase();
    if e.contains("unknownissuer") || e.contains("unknown issuer") {
        Some("the directory's certificate is not signed by a trusted CA: set ldap.ca_file to the CA certificate (PEM)")
    } else if e.contains("notvalidforname") || e.contains("not valid for name") {
        Some("the directory's certificate does not name the host in ldap.url: use the name (or IP) its subjectAltName lists")
    } else if e.contains("expired") {
        Some("the directory's certificate has expired")
    } else if e.contains("invalidcertificate") || e.contains("invalid peer certificate") {
        Some("the directory's certificate does not verify")
    } else {
        None
    }
}
