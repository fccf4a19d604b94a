//! systemd notifications (`sd_notify(3)`) through the `sd-notify` crate,
//! behind a small handle so that callers say what happened ("ready",
//! "reloading", a status line) and not how the protocol spells it.
//! Outside systemd (no `NOTIFY_SOCKET`) every call does nothing.
//!
//! Reload follows systemd's protocol: `RELOADING=1` with `MONOTONIC_USEC`
//! (required by `Type=notify-reload`, systemd 253 and later; harmless
//! before) when a reload starts, `READY=1` when it is done, whatever its
//! outcome.

use std::time::Duration;

use sd_notify::NotifyState;

/// A handle on the service manager's notification socket.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    /// `NOTIFY_SOCKET` was set when the daemon started.
    enabled: bool,
    /// `WATCHDOG_USEC`, when it is meant for this process (`WATCHDOG_PID`).
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC` / `WATCHDOG_PID`. The
    /// variables are left in the environment: unsetting them is unsafe once
    /// threads run, and the daemon starts no other process.
    pub fn from_env() -> Notifier {
        Notifier {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
            watchdog: sd_notify::watchdog_enabled().filter(|d| !d.is_zero()),
        }
    }

    /// Whether a service manager is listening.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// How often to send `WATCHDOG=1`: half the manager's timeout, as
    /// `sd_watchdog_enabled(3)` recommends. `None` when no watchdog is set.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2)
    }

    /// Sends the states in one datagram, logging a failure at warn level:
    /// a lost notification never stops the daemon.
    fn send(&self, states: &[NotifyState]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            let states: Vec<String> = states.iter().map(|s| s.to_string()).collect();
            tracing::warn!(error = %e, state = %states.join(" "), "cannot notify the service manager");
        }
    }

    /// `READY=1` with a status line: started, listening, the store open.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// A `STATUS=` line alone (what `systemctl status` shows).
    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// `RELOADING=1` with the current `CLOCK_MONOTONIC` time, then (call
    /// [`Notifier::reloaded`]) `READY=1`.
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[
                NotifyState::Reloading,
                now,
                NotifyState::Status("reloading"),
            ]),
            // Without the time systemd 253+ ignores RELOADING=1; still say it.
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    /// `READY=1` after a reload (applied or refused), with a status line.
    pub fn reloaded(&self, status: &str) {
        self.ready(status);
    }

    /// `STOPPING=1` with a status line.
    pub fn stopping(&self, status: &str) {
        self.send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }

    /// Sends `WATCHDOG=1` every [`Notifier::watchdog_interval`] until the
    /// task is aborted. The keep-alive comes from the runtime that serves
    /// requests, so a wedged runtime stops it and systemd restarts us;
    /// `serve` aborts it as soon as the daemon must exit (the writer
    /// stopped, the store cannot flush), before draining.
    pub fn spawn_watchdog(&self) -> Option<tokio::task::JoinHandle<()>> {
        let interval = self.watchdog_interval()?;
        if !self.enabled {
            return None;
        }
        let me = self.clone();
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                me.send(&[NotifyState::Watchdog]);
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The datagrams themselves are checked through the real binary under a
    // notify socket (tests/it/service.rs): the crate reads NOTIFY_SOCKET at
    // each call, and setting it here would race with other unit tests.
    #[test]
    fn without_a_socket_nothing_happens() {
        let n = Notifier::default();
        assert!(!n.enabled());
        n.ready("serving");
        n.reloading();
        assert_eq!(n.watchdog_interval(), None);
        assert!(n.spawn_watchdog().is_none());
    }

    #[test]
    fn the_watchdog_is_fed_at_half_its_timeout() {
        let n = Notifier {
            enabled: true,
            watchdog: Some(Duration::from_secs(30)),
        };
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(15)));
    }
}
