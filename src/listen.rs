//! The accept step shared by the SCIM listener (`http`) and the
//! operational listener (`ops`): the next connection, or the end of
//! serving once shutdown starts.
//!
//! Architecture invariant: knows tokio's listener only; no HTTP, no SCIM.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tracing::warn;

/// The next connection on `listener`, or `None` once `shutdown` completes.
/// A failed accept (out of file descriptors, say) is logged with `what`
/// and tried again after a pause. Shared by the SCIM and the operational
/// listeners.
pub async fn accept_until(
    listener: &TcpListener,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
    what: &str,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => return Some(x),
                Err(e) => {
                    warn!(error = %e, "{what}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = &mut *shutdown => return None,
        }
    }
}
