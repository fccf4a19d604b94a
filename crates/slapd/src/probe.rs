//! Is a server up and serving: an anonymous LDAPv3 bind over a raw TCP
//! connection, and just enough BER to read the BindResponse's resultCode.
//! Lets the harness see readiness without `ldap-utils` or an LDAP crate.
//!
//! Knows two LDAP messages and BER headers; nothing of slapd, its config
//! or its process.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// An anonymous LDAPv3 bind answered with success: the server is up and
/// serving, not merely accepting TCP connections.
pub(crate) fn ldap_answers(port: u16) -> bool {
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
}
