//! The admin channel's protocol: one JSON request line in, one JSON
//! response line out, over the Unix socket `admin/sock` in the store
//! directory (folder 0700, socket 0600: only the daemon's user and root can
//! use it). A request wrapped in [`Request::Progress`] gets progress lines
//! (`{"progress": {...}}`) before its response.
//!
//! Architecture invariant: plain serde types, shared by the daemon's
//! server and the command line; no store, no sockets.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The admin socket's path inside the store directory: a private (0700)
/// folder holding the socket, so that no other user can reach it even
/// for the moment between its creation and its chmod.
pub const SOCKET: &str = "admin/sock";

/// Longest request line the admin channel reads.
pub const MAX_REQUEST: usize = 64 * 1024;

/// The socket path for a store directory.
pub fn socket_path(store_dir: &Path) -> PathBuf {
    store_dir.join(SOCKET)
}

/// Which entries `journal list --state` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StateFilter {
    Pending,
    #[value(alias = "parked")]
    Failed,
    Applied,
    Skipped,
}

/// One admin request, as sent over the socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    List {
        state: Option<StateFilter>,
        resource: Option<String>,
        limit: usize,
    },
    Show {
        seq: u64,
    },
    Retry {
        seq: Option<u64>,
        all_failed: bool,
    },
    Skip {
        seq: u64,
    },
    Replay {
        from: u64,
        to: Option<u64>,
    },
    Stats,
    /// The number of entries not yet applied (parked ones included), for
    /// scripts and the benchmark: cheaper than `stats`.
    Pending,
    Compact,
    Import,
    /// What the daemon is doing: the answer's text is the JSON of a
    /// [`crate::status::Snapshot`].
    Status,
    /// Runs `request` (import, compact, replay) and sends [`ProgressLine`]s
    /// before the response line. A plain request gets one line, as always.
    Progress {
        request: Box<Request>,
    },
}

/// How far a long request has come.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// What is being done ("compacting the journal").
    pub what: String,
    pub done: u64,
    /// `None` when the end is not known in advance (an import).
    pub total: Option<u64>,
}

/// A line sent before the response of a [`Request::Progress`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProgressLine {
    pub progress: Progress,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    pub text: String,
}

impl Response {
    pub fn ok(text: impl Into<String>) -> Response {
        Response {
            ok: true,
            text: text.into(),
        }
    }
    pub fn fail(text: impl Into<String>) -> Response {
        Response {
            ok: false,
            text: text.into(),
        }
    }
}
