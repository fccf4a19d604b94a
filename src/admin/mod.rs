//! The admin channel: how `scim2ldap journal ...`, `import` (and scripts)
//! talk to a running daemon, or to its store when it is stopped.
//!
//! - [`protocol`]: the request and response types and the socket's path.
//! - [`handler`]: runs a request against the store, the writer's handle and
//!   the adopter.
//! - [`server`]: the daemon's Unix socket.
//!
//! The command-line side is `crate::journal_cmd`.

pub mod handler;
pub mod protocol;
pub mod server;

pub use handler::{handle, handle_with_progress, AdminCtx};
pub use protocol::{socket_path, Progress, ProgressLine, Request, Response, StateFilter, SOCKET};
pub use server::serve_admin;

/// Why an admin request or command could not be carried out. The messages
/// are for the administrator and say what to do.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("journal entry {0} vanished while it was being read (compacted or skipped meanwhile)")]
    Vanished(u64),
    #[error("import: {0}")]
    Import(#[from] crate::adopt::AdoptError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Mapping(#[from] crate::model::LoadError),
    #[error("talking to the daemon over {path}: {source}")]
    Socket {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(
        "talking to the daemon over {0}: it closed the connection without answering; see its log"
    )]
    NoAnswer(std::path::PathBuf),
    #[error("talking to the daemon over {path}: bad answer: {source}")]
    BadAnswer {
        path: std::path::PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "no store in {store} (store.path in {config}): has the daemon run with this configuration?"
    )]
    NoStore {
        store: std::path::PathBuf,
        config: std::path::PathBuf,
    },
    #[error("cannot open the store in {store} ({source}).\nIf the daemon is running, its admin socket {socket} did not answer: check that you run this as the daemon's user (or root) and that the daemon has started; otherwise stop the daemon and try again.")]
    OpenStore {
        store: std::path::PathBuf,
        socket: std::path::PathBuf,
        source: crate::store::StoreError,
    },
    #[error("cannot start a runtime: {0}")]
    Runtime(std::io::Error),
    /// The request ran and failed; the text says why.
    #[error("{0}")]
    Refused(String),
}
