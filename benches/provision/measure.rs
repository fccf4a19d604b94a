//! What a phase costs: its wall time and latencies, the CPU time the
//! daemon and slapd spent in it (user + system of every thread, from
//! `/proc/<pid>/stat`), the daemon's peak RSS (`VmHWM`, reset at the
//! phase's start); and the results table.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Clock ticks per second of `/proc/<pid>/stat`'s utime and stime:
/// `getconf CLK_TCK` (no libc dependency for one number), 100 (Linux's
/// value on every common architecture) if getconf cannot be run.
pub fn clk_tck() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// CPU time (user + system, all threads) process `pid` used so far, in
/// ms; 0 if it is gone.
pub fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) is in parentheses and may hold spaces:
    // count from the last ')'. Field 3 (state) is then the first; utime
    // and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |field: usize| {
        fields
            .get(field - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(14) + ticks(15)) as f64 * 1000.0 / clk_tck()
}

/// A `/proc/<pid>/status` size line (`VmRSS`, `VmHWM`) in MiB; 0 if the
/// process is gone.
pub fn status_mib(pid: u32, key: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Resets the peak RSS of `pid` to its current RSS (Linux: `clear_refs`
/// 5), so that the next `VmHWM` is the peak of what follows.
pub fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// The two processes a phase is measured on. slapd's pid changes when it
/// is restarted: take a new `Procs` then.
#[derive(Clone, Copy)]
pub struct Procs {
    pub daemon: u32,
    pub slapd: u32,
}

/// Where a phase began: the time and both processes' CPU clocks.
pub struct Mark {
    at: Instant,
    daemon_ms: f64,
    slapd_ms: f64,
}

impl Mark {
    /// Seconds since the mark.
    pub fn secs(&self) -> f64 {
        self.at.elapsed().as_secs_f64()
    }
}

impl Procs {
    /// Starts a phase: resets the daemon's peak RSS, then reads the time
    /// and both CPU clocks.
    pub fn mark(&self) -> Mark {
        reset_peak(self.daemon);
        Mark {
            at: Instant::now(),
            daemon_ms: cpu_ms(self.daemon),
            slapd_ms: cpu_ms(self.slapd),
        }
    }

    /// Ends a daemon phase of `ops` operations begun at `mark` (for a
    /// write phase, call it once the journal is drained), and says so on
    /// stderr.
    pub fn daemon_phase(
        &self,
        mark: &Mark,
        name: &'static str,
        kind: Lat,
        ops: usize,
        lat: Vec<Duration>,
    ) -> Phase {
        let secs = mark.secs();
        // Progress for long runs; the table comes at the end.
        eprintln!("{name}: {ops} in {secs:.1} s");
        Phase {
            name,
            kind,
            ops,
            secs,
            acked: None,
            lat,
            rss: Some(status_mib(self.daemon, "VmHWM")),
            daemon_cpu: Some(cpu_ms(self.daemon) - mark.daemon_ms),
            slapd_cpu: cpu_ms(self.slapd) - mark.slapd_ms,
        }
    }

    /// Ends a raw ldap3 phase (no daemon involved: no RSS, no daemon CPU).
    pub fn raw_phase(
        &self,
        mark: &Mark,
        name: &'static str,
        ops: usize,
        lat: Vec<Duration>,
    ) -> Phase {
        Phase {
            rss: None,
            daemon_cpu: None,
            ..self.daemon_phase(mark, name, Lat::Apply, ops, lat)
        }
    }
}

/// What a phase's latencies measure: they are not comparable across kinds.
#[derive(Clone, Copy, PartialEq)]
pub enum Lat {
    /// HTTP request to its response: the write is journaled, not yet in
    /// the directory (the phase's seconds run until it is).
    Ack,
    /// One LDAP operation, answered once the directory applied it.
    Apply,
    /// An HTTP read.
    Read,
    /// No latencies: the phase is the writer catching up on its own.
    Drain,
}

impl Lat {
    fn label(self) -> &'static str {
        match self {
            Lat::Ack => "ack",
            Lat::Apply => "apply",
            Lat::Read => "read",
            Lat::Drain => "-",
        }
    }
}

/// One line of the report.
pub struct Phase {
    pub name: &'static str,
    pub kind: Lat,
    pub ops: usize,
    pub secs: f64,
    /// Seconds until the last response of a write phase (the rest of
    /// `secs` is the writer catching up); `None` for other phases.
    pub acked: Option<f64>,
    pub lat: Vec<Duration>,
    /// The daemon's peak RSS during the phase, in MiB; `None` for raw
    /// phases.
    pub rss: Option<f64>,
    /// CPU ms the daemon spent in the phase; `None` for raw phases.
    pub daemon_cpu: Option<f64>,
    /// CPU ms slapd spent in the phase.
    pub slapd_cpu: f64,
}

impl Phase {
    pub fn rate(&self) -> f64 {
        self.ops as f64 / self.secs
    }

    pub fn p99(&mut self) -> f64 {
        pct(&mut self.lat, 0.99)
    }

    /// The daemon's CPU ms per operation.
    pub fn daemon_ms_op(&self) -> Option<f64> {
        self.daemon_cpu.map(|ms| ms / self.ops as f64)
    }

    pub fn slapd_ms_op(&self) -> f64 {
        self.slapd_cpu / self.ops as f64
    }

    /// Daemon CPU / slapd CPU in the same phase.
    pub fn cpu_ratio(&self) -> Option<f64> {
        self.daemon_cpu.map(|d| d / self.slapd_cpu)
    }

    /// The table's header, aligned with [`Phase::print`].
    pub fn header() {
        println!(
            "\n{:<26} {:>8} {:>8} {:>8} {:>6} {:>9} {:>9} {:>9} {:>13} {:>12} {:>8}",
            "phase",
            "ops",
            "seconds",
            "ops/s",
            "lat",
            "p50 ms",
            "p99 ms",
            "peak MiB",
            "daemon ms/op",
            "slapd ms/op",
            "CPU d/s"
        );
    }

    pub fn print(&mut self) {
        let opt = |v: Option<f64>, w: usize, p: usize| match v {
            Some(v) if v.is_finite() => format!("{v:>w$.p$}"),
            _ => format!("{:>w$}", "-"),
        };
        let has_lat = !self.lat.is_empty();
        let p50 = has_lat.then(|| pct(&mut self.lat, 0.5));
        let p99 = has_lat.then(|| pct(&mut self.lat, 0.99));
        println!(
            "{:<26} {:>8} {:>8.1} {:>8.0} {:>6} {} {} {} {} {:>12.3} {}",
            self.name,
            self.ops,
            self.secs,
            self.rate(),
            self.kind.label(),
            opt(p50, 9, 2),
            opt(p99, 9, 2),
            opt(self.rss, 9, 1),
            opt(self.daemon_ms_op(), 13, 3),
            self.slapd_ms_op(),
            opt(self.cpu_ratio(), 8, 2),
        );
        if let Some(acked) = self.acked {
            println!("{:<26} last response after {acked:.1} s", "");
        }
    }
}

pub fn pct(lat: &mut [Duration], p: f64) -> f64 {
    lat.sort();
    if lat.is_empty() {
        return 0.0;
    }
    let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
    lat[i].as_secs_f64() * 1000.0
}
