//! Child processes killed (and reaped) when a test ends, even on panic,
//! and the loopback ports they listen on.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The exporter binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_talkover-exporter");

/// A child process killed (and reaped) when dropped, even on panic; on panic
/// it also prints the tail of the child's log.
pub struct ChildGuard {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl ChildGuard {
    pub fn spawn(name: &'static str, cmd: &mut Command, log: PathBuf) -> ChildGuard {
        // Appending: a test that restarts a process keeps one whole log.
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .expect("create log file");
        let err = out.try_clone().expect("clone log file handle");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({:?}): {e}", cmd.get_program()));
        ChildGuard { name, child, log }
    }

    /// The process itself: to signal it, or wait for its exit.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panics (with the log) if the process has already exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited early with {status}; its log:\n{}",
                self.name,
                log_tail(&self.log, 60)
            );
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- last lines of the {} log ({}) ----\n{}",
                self.name,
                self.log.display(),
                log_tail(&self.log, 40)
            );
        }
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A free loopback port (bound, read, released) for a child process to use.
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// Distinct free loopback ports (all held until every one is picked).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    let mut ports = [0u16; N];
    for (port, l) in ports.iter_mut().zip(&listeners) {
        *port = l.local_addr().expect("local addr").port();
    }
    ports
}

pub fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// The `prometheus` binary on PATH; panics (the test fails, rather than
/// skips) without it.
pub fn prometheus_on_path() -> PathBuf {
    find_on_path("prometheus").unwrap_or_else(|| {
        panic!(
            "`prometheus` is not on PATH: this end-to-end test needs a real Prometheus server. \
             Install Debian's package: `apt-get install prometheus`"
        )
    })
}

/// The shipped rules file, `dashboards/prometheus/rules.yml`.
pub fn shipped_rules_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards/prometheus/rules.yml")
}

/// The real binary against the simulator at `sim_url` with the test token,
/// serving on `port`, with `args` (targets, discovery, …) and no
/// `TALKOVER_*` variable of the test's environment; its log goes to `log`.
pub fn spawn_exporter(sim_url: &str, port: u16, args: &[&str], log: &Path) -> ChildGuard {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TALKOVER_") {
            cmd.env_remove(key);
        }
    }
    cmd.args(["--talkover.url", sim_url, "--talkover.allow-insecure"])
        .args(["--web.listen-address", &format!("127.0.0.1:{port}")])
        .args(args)
        .env("TALKOVER_TOKEN", super::TOKEN);
    ChildGuard::spawn("exporter", &mut cmd, log.to_path_buf())
}

/// A tool the test command unpacks from Debian's unstable suite into
/// `target/test-tools` (Prometheus 3.5 LTS, its promtool, VictoriaMetrics,
/// vmalert), or where `TALKOVER_TEST_TOOLS` says; panics (the test fails,
/// rather than skips) without it.
pub fn unstable_tool(name: &str) -> PathBuf {
    let root = std::env::var_os("TALKOVER_TEST_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-tools"));
    let path = root.join("usr/bin").join(name);
    assert!(
        path.is_file(),
        "{} is missing: the test command (bash scripts/test.sh) unpacks `prometheus` 3.5, \
         `promtool` and `victoria-metrics` from Debian's unstable suite there",
        path.display()
    );
    path
}

/// `s` as a valid YAML string (a JSON string is one).
pub fn yaml_quote(s: &str) -> String {
    serde_json::to_string(s).expect("quote")
}

/// Starts `talkover-exporter --demo` (polling every second, serving on
/// `exporter_port`, its simulated Talkover API on `sim_port`), without any
/// `TALKOVER_*` variable of the test's environment; its log goes to
/// `dir/exporter.log`.
pub fn spawn_demo_exporter(exporter_port: u16, sim_port: u16, dir: &Path) -> ChildGuard {
    spawn_demo_exporter_with(exporter_port, sim_port, dir, &[])
}

/// The demo exporter with more flags.
pub fn spawn_demo_exporter_with(
    exporter_port: u16,
    sim_port: u16,
    dir: &Path,
    extra: &[&str],
) -> ChildGuard {
    let mut exporter_cmd = Command::new(BIN);
    exporter_cmd.args(extra);
    exporter_cmd
        .args(["--demo", "--poll.interval", "1s", "--log.level", "warn"])
        .args([
            "--web.listen-address",
            &format!("127.0.0.1:{exporter_port}"),
        ])
        .args(["--demo.listen-address", &format!("127.0.0.1:{sim_port}")]);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TALKOVER_") {
            exporter_cmd.env_remove(key);
        }
    }
    ChildGuard::spawn("exporter", &mut exporter_cmd, dir.join("exporter.log"))
}

/// Writes `config` to `dir/prometheus.yml` and starts `prometheus` with it,
/// storing into `data_dir`, listening on `port`; its log goes to
/// `dir/prometheus.log`.
pub fn spawn_prometheus(
    prometheus: &Path,
    config: String,
    dir: &Path,
    data_dir: &Path,
    port: u16,
) -> ChildGuard {
    spawn_prometheus_with(prometheus, config, dir, data_dir, port, &[])
}

/// Prometheus with more flags (e.g. `--enable-feature=native-histograms`).
pub fn spawn_prometheus_with(
    prometheus: &Path,
    config: String,
    dir: &Path,
    data_dir: &Path,
    port: u16,
    extra: &[&str],
) -> ChildGuard {
    let config_path = dir.join("prometheus.yml");
    std::fs::write(&config_path, config).expect("write prometheus.yml");
    let mut prom_cmd = Command::new(prometheus);
    prom_cmd
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!("--storage.tsdb.path={}", data_dir.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .args(extra);
    ChildGuard::spawn("prometheus", &mut prom_cmd, dir.join("prometheus.log"))
}
