//! The daemon's side of the admin channel: serves the socket until the
//! daemon stops, one request per connection.

use std::path::PathBuf;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tracing::{info, warn};

use super::handler::{handle_with_progress, AdminCtx};
use super::protocol::{Progress, ProgressLine, Request, Response, MAX_REQUEST};

/// Serves the admin socket until `stop` turns true; removes it then.
pub async fn serve_admin(path: PathBuf, ctx: AdminCtx, mut stop: watch::Receiver<bool>) {
    if let Some(parent) = path.parent() {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent);
        let _ = std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700));
    }
    let _ = std::fs::remove_file(&path);
    let listener = match tokio::net::UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot open the admin socket: `scim2ldap journal` will not work while the daemon runs");
            return;
        }
    };
    {
        use std::os::unix::fs::PermissionsExt;
        if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
            warn!(path = %path.display(), error = %e, "cannot restrict the admin socket to the daemon's user");
        }
    }
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let ctx = ctx.clone();
                tokio::spawn(async move { admin_connection(stream, ctx).await });
            }
            Err(e) => {
                warn!(error = %e, "admin socket accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
    let _ = std::fs::remove_file(&path);
}

async fn admin_connection(stream: tokio::net::UnixStream, ctx: AdminCtx) {
    let (read, mut write) = stream.into_split();
    let mut reader = tokio::io::BufReader::new(read).take(MAX_REQUEST as u64);
    let mut line = String::new();
    let resp = match reader.read_line(&mut line).await {
        Ok(_) => match serde_json::from_str::<Request>(line.trim()) {
            Ok(req) => {
                info!(request = ?req, "admin request");
                // Progress lines go out while the request runs; a client
                // that hangs up cancels the watching (not the work done).
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let sink = move |p: Progress| {
                    let _ = tx.send(p);
                };
                let run = handle_with_progress(&ctx, req, &sink);
                tokio::pin!(run);
                let resp = loop {
                    tokio::select! {
                        resp = &mut run => break resp,
                        Some(p) = rx.recv() => {
                            if write.write_all(&progress_line(p)).await.is_err() {
                                return;
                            }
                        }
                    }
                };
                // What was reported last, before the answer.
                while let Ok(p) = rx.try_recv() {
                    if write.write_all(&progress_line(p)).await.is_err() {
                        return;
                    }
                }
                resp
            }
            Err(e) => Response::fail(format!("bad admin request: {e}")),
        },
        Err(e) => Response::fail(format!("reading the admin request: {e}")),
    };
    let mut out = serde_json::to_vec(&resp).unwrap_or_default();
    out.push(b'\n');
    let _ = write.write_all(&out).await;
    let _ = write.shutdown().await;
}

fn progress_line(p: Progress) -> Vec<u8> {
    let mut out = serde_json::to_vec(&ProgressLine { progress: p }).unwrap_or_default();
    out.push(b'\n');
    out
}
