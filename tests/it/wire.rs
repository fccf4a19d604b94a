//! What the daemon actually sends the directory: a TCP relay between the
//! daemon and slapd that reads the LDAP messages going to slapd (BER:
//! SEQUENCE { messageID, protocolOp, ... }) and counts searches
//! (`[APPLICATION 3]`) and modifies (`[APPLICATION 6]`, with the size of
//! the largest). Used by tests that must show what reached the directory,
//! whatever the daemon believes it did. A connection whose upstream cannot
//! be reached is closed at once, as slapd's own port would refuse it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::Harness;

#[derive(Default)]
struct Counts {
    searches: AtomicUsize,
    modifies: AtomicUsize,
    largest_modify: AtomicUsize,
}

/// The relay; counts from when it started.
pub struct LdapTap {
    addr: SocketAddr,
    counts: Arc<Counts>,
    task: tokio::task::JoinHandle<()>,
}

impl LdapTap {
    pub async fn start(upstream: u16) -> LdapTap {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, upstream, c.clone()));
            }
        });
        LdapTap { addr, counts, task }
    }

    pub fn uri(&self) -> String {
        format!("ldap://{}", self.addr)
    }

    pub fn searches(&self) -> usize {
        self.counts.searches.load(Ordering::SeqCst)
    }

    pub fn modifies(&self) -> usize {
        self.counts.modifies.load(Ordering::SeqCst)
    }

    /// The size in bytes of the largest modify request seen.
    pub fn largest_modify(&self) -> usize {
        self.counts.largest_modify.load(Ordering::SeqCst)
    }
}

impl Drop for LdapTap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Restarts the daemon of `h` with its directory behind a tap.
pub async fn behind_tap(h: &mut Harness) -> LdapTap {
    let tap = LdapTap::start(h.slapd.port()).await;
    h.stop_daemon().await;
    let path = h.dir.join("config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let direct = format!("url = \"{}\"", h.slapd.uri());
    assert!(text.contains(&direct), "{text}");
    std::fs::write(
        &path,
        text.replace(&direct, &format!("url = \"{}\"", tap.uri())),
    )
    .unwrap();
    h.start_daemon().await;
    tap
}

async fn relay(client: TcpStream, upstream: u16, counts: Arc<Counts>) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let up = async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let n = from_client.read(&mut buf).await?;
            if n == 0 {
                return Ok::<(), std::io::Error>(());
            }
            pending.extend_from_slice(&buf[..n]);
            while let Some((op, used)) = next_op(&pending) {
                match op {
                    0x63 => {
                        counts.searches.fetch_add(1, Ordering::SeqCst);
                    }
                    0x66 => {
                        counts.modifies.fetch_add(1, Ordering::SeqCst);
                        counts.largest_modify.fetch_max(used, Ordering::SeqCst);
                    }
                    _ => {}
                }
                pending.drain(..used);
            }
            to_server.write_all(&buf[..n]).await?;
        }
    };
    let down = tokio::io::copy(&mut from_server, &mut to_client);
    // Either side closing closes both.
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

/// A BER length at `b[0..]`: (length, bytes it took).
fn ber_len(b: &[u8]) -> Option<(usize, usize)> {
    let first = *b.first()?;
    if first < 0x80 {
        return Some((first as usize, 1));
    }
    let n = (first & 0x7f) as usize;
    let bytes = b.get(1..1 + n)?;
    Some((
        bytes.iter().fold(0usize, |a, x| (a << 8) | *x as usize),
        1 + n,
    ))
}

/// The protocolOp tag of the first complete LDAP message in `b`, and the
/// message's size; `None` until a whole message is there.
fn next_op(b: &[u8]) -> Option<(u8, usize)> {
    if b.first() != Some(&0x30) {
        return None;
    }
    let (len, l) = ber_len(&b[1..])?;
    let total = 1 + l + len;
    if b.len() < total {
        return None;
    }
    // messageID: INTEGER
    let body = &b[1 + l..];
    let (id_len, il) = ber_len(body.get(1..)?)?;
    let op = *body.get(1 + il + id_len)?;
    Some((op, total))
}

#[test]
fn the_tap_reads_ldap_framing() {
    // A search request (id 2) and the start of another message.
    let search = [0x30, 0x07, 0x02, 0x01, 0x02, 0x63, 0x02, 0x04, 0x00];
    assert_eq!(next_op(&search), Some((0x63, 9)));
    assert_eq!(next_op(&search[..5]), None);
    let mut long = vec![0x30, 0x81, 0x85, 0x02, 0x01, 0x07, 0x66, 0x80];
    long.extend(std::iter::repeat_n(0u8, 0x80));
    assert_eq!(next_op(&long), Some((0x66, 0x88)));
}
