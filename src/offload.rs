//! Where synchronous work that may take long runs: off the async workers.
//!
//! Handing a worker over costs about 80 µs of CPU (measured: a `userName
//! eq` lookup took 0.145 ms of daemon CPU through [`blocking`] and
//! 0.065 ms without), more than a small request's whole store work. So
//! small requests run their store work on the worker, and the store
//! moves itself off it where it may wait: for its write lock when another
//! write holds it (a 50,000-member group holds it for seconds), and for
//! the fsync of a held password. Large work (a big body's parse, a large
//! group, a scan) is handed over by its caller.

/// Runs `f` where it does not hold up the async workers: on a
/// multi-threaded runtime the worker hands its other tasks to a fresh
/// worker for the duration (`block_in_place`), so `/healthz` and other
/// requests keep being answered meanwhile. Unlike `spawn_blocking`,
/// nothing has to be moved or copied. On a current-thread runtime (some
/// tests) or outside a runtime it simply runs.
pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}
