//! CPU, memory and descriptor readings, and the exporter's client and config as the runs use them.

use super::*;

/// utime + stime of a process, in seconds (clock ticks of 10 ms).
pub(crate) fn proc_cpu_s(path: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|w| w.parse().unwrap_or(0))
        .collect();
    // Fields 14 and 15 of stat; `rest` starts at field 3.
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) as f64 / 100.0
}

/// CPU time of the calling thread, in nanoseconds.
pub(crate) fn thread_cpu_ns() -> u64 {
    // `clock_gettime(CLOCK_THREAD_CPUTIME_ID)`: exact to the call, where
    // `/proc/thread-self/schedstat` only advances at scheduler ticks (4 ms
    // here), too coarse for slices of a few milliseconds.
    cpu_time::ThreadTime::now().as_duration().as_nanos() as u64
}

/// (simulated minute, RSS KiB, open file descriptors) of the exporter process.
pub(crate) type Sample = (u32, u64, usize);

/// Open file descriptors (mostly sockets: HTTP connections).
pub(crate) fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

pub(crate) fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU of this thread and of the whole process, and wall time.
pub(crate) struct Meter {
    pub(crate) thread_ns: u64,
    pub(crate) process_s: f64,
    pub(crate) wall: Instant,
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Spent {
    /// This thread's CPU seconds (ns resolution): the primary figure.
    pub(crate) thread_s: f64,
    /// Whole-process CPU seconds (10 ms resolution): a cross-check.
    pub(crate) process_s: f64,
    pub(crate) wall_s: f64,
}

impl std::ops::AddAssign for Spent {
    fn add_assign(&mut self, other: Spent) {
        self.thread_s += other.thread_s;
        self.process_s += other.process_s;
        self.wall_s += other.wall_s;
    }
}

impl Meter {
    pub(crate) fn start() -> Meter {
        Meter {
            thread_ns: thread_cpu_ns(),
            process_s: proc_cpu_s("/proc/self/stat"),
            wall: Instant::now(),
        }
    }

    pub(crate) fn stop(self) -> Spent {
        Spent {
            thread_s: (thread_cpu_ns() - self.thread_ns) as f64 / 1e9,
            process_s: proc_cpu_s("/proc/self/stat") - self.process_s,
            wall_s: self.wall.elapsed().as_secs_f64(),
        }
    }
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

pub(crate) fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub(crate) fn verdict(met: bool) -> String {
    if met { "goal met" } else { "goal missed" }.to_string()
}

pub(crate) fn exporter_client(base: &str) -> Client {
    Client::new(ClientOptions {
        base_url: base.parse().expect("simulator url"),
        credentials: Token::new("talq_bench_token").map(Credentials::Token),
        timeout: Duration::from_secs(30),
        max_body_bytes: 32 << 20,
        allow_insecure: true,
        max_requests_per_second: 100_000.0,
        probe_max: std::time::Duration::from_secs(1),
    })
    .expect("exporter client")
}

/// The scale run's configuration, through the documented flags (so the
/// bench follows whatever `Config` grows into).
pub(crate) fn exporter_config(base: &str) -> Config {
    // Only the flags below count, not whatever TALKOVER_* the shell has.
    for (k, _) in std::env::vars() {
        if k.starts_with("TALKOVER_") {
            std::env::remove_var(k);
        }
    }
    std::env::set_var("TALKOVER_TOKEN", "talq_bench_token");
    let poll = format!("{}s", SCALE_POLL.as_secs());
    let rps = std::env::var("SCALE_BENCH_RPS").unwrap_or_else(|_| "100000".into());
    let discover = format!("{}s", SCALE_DISCOVERY.as_secs());
    let args = [
        "talkover-exporter",
        "--talkover.url",
        base,
        "--talkover.allow-insecure",
        "--talkover.max-requests-per-second",
        &rps,
        "--talkover.timeout",
        "30s",
        "--discover",
        "campaigns",
        "--discover.interval",
        &discover,
        "--poll.interval",
        &poll,
        "--poll.max-pages",
        "10",
        "--target.stale-after",
        "1h",
    ];
    Cli::try_parse_from(args)
        .expect("flags parse")
        .into_config()
        .expect("valid configuration")
}
