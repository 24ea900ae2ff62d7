//! The validated configuration, with the flags' defaults, and how flags and
//! `--config.file` become one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::parse::*;
use super::Cli;
use crate::api::Credentials;
use crate::discovery::{Filters, Pattern, Shard};
use crate::http::ServeLimits;
use crate::metrics::Budget;
use crate::model::{FailurePolicy, MAX_KEEP};
use crate::target::{Scope, Target};

/// Where the delivery logs come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// The real API.
    Api {
        /// Base URL.
        url: Url,
        /// Where the bearer token comes from.
        credentials: Credentials,
        /// Whether `http://` is allowed.
        allow_insecure: bool,
    },
    /// The built-in simulator.
    Demo {
        /// Where it listens.
        listen: SocketAddr,
    },
}

/// The validated configuration the library runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// API or demo.
    pub source: Source,
    /// Webhooks to watch (in demo mode, added to the simulator's).
    pub targets: Vec<Target>,
    /// Poll interval.
    pub poll_interval: Duration,
    /// Page budget per poll.
    pub max_pages: u32,
    /// Request timeout.
    pub timeout: Duration,
    /// Response body cap.
    pub max_body_size: usize,
    /// Request budget shared by all targets.
    pub max_requests_per_second: f64,
    /// Metrics path.
    pub telemetry_path: String,
    /// `--state.file`, if set.
    pub state_file: Option<PathBuf>,
    /// Scopes to discover (none: only the static targets).
    pub discover: Vec<Scope>,
    /// Time between discoveries.
    pub discover_interval: Duration,
    /// Include/exclude filters for discovered webhooks.
    pub filters: Filters,
    /// This replica's shard.
    pub shard: Shard,
    /// Grace period before a vanished webhook's series are removed.
    pub stale_after: Duration,
    /// `--web.config.file`: read by `run`, which refuses a bad one before
    /// anything starts (flags name files; they do not load them).
    pub web_config_file: Option<PathBuf>,
    /// `--web.max-connections` and `--web.read-header-timeout`.
    pub serve_limits: ServeLimits,
    /// `--web.max-requests`.
    pub max_requests: usize,
    /// `--[no-]collector.*`: the optional families served.
    pub budget: Budget,
    /// `--failures.keep` and `--failures.response-body`.
    pub failures: FailurePolicy,
}

impl Config {
    /// A configuration with every flag at its default, reading from
    /// `source`: what tests and embedders start from, changing only the
    /// fields they care about (`Config { poll_interval, ..Config::new(s) }`).
    /// A test in this module keeps these equal to the flags' defaults.
    pub fn new(source: Source) -> Config {
        Config {
            source,
            targets: Vec::new(),
            poll_interval: Duration::from_secs(30),
            max_pages: 10,
            timeout: Duration::from_secs(10),
            max_body_size: 32 << 20,
            max_requests_per_second: 10.0,
            telemetry_path: "/metrics".into(),
            state_file: None,
            discover: Vec::new(),
            discover_interval: Duration::from_secs(300),
            filters: Filters::default(),
            shard: Shard::default(),
            stale_after: Duration::from_secs(3600),
            web_config_file: None,
            serve_limits: ServeLimits::default(),
            max_requests: 40,
            budget: Budget::default(),
            failures: FailurePolicy::default(),
        }
    }
}

/// `--poll.interval` with `--demo` when not given: a newcomer sees counts
/// and failures within seconds.
const DEMO_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// A `--collector.X` / `--no-collector.X` pair: the one given last wins
/// (clap keeps only it), else the default.
fn chosen(on: bool, off: bool, default: bool) -> bool {
    if on {
        true
    } else if off {
        false
    } else {
        default
    }
}

/// `--config.file`: an alternative to flags for large setups.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Webhooks to watch, as `--target` takes them.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Discovery settings.
    #[serde(default)]
    pub discovery: FileDiscovery,
    /// What is kept of failed attempts.
    #[serde(default)]
    pub failures: FileFailures,
}

/// The `failures:` section of `--config.file`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileFailures {
    /// As `--failures.keep`.
    pub keep: Option<usize>,
    /// As `--failures.response-body`.
    pub response_body: Option<bool>,
}

/// The `discovery:` section of `--config.file`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDiscovery {
    /// `campaigns` and/or `agents`.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// e.g. `5m`.
    pub interval: Option<String>,
    /// Patterns to keep.
    #[serde(default)]
    pub include: Vec<String>,
    /// Patterns to drop.
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// A flag whose value is not usable; the message names flag and value.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Cli {
    /// Checks what clap cannot check alone, merges `--config.file` under the
    /// flags, and reads the token.
    pub fn into_config(mut self) -> Result<Config, ConfigError> {
        if let Some(path) = self.config_file.clone() {
            self.merge_file(&path)?;
        }
        if self.shard_index >= self.shard_count {
            return Err(ConfigError(format!(
                "invalid value '{}' for '--shard.index': must be below --shard.count ({})",
                self.shard_index, self.shard_count
            )));
        }
        let source = if self.demo {
            Source::Demo {
                listen: self.demo_listen_address,
            }
        } else {
            if self.targets.is_empty() && self.discover.is_empty() {
                return Err(ConfigError(
                    "no webhook to watch: give --target campaigns/{id}/webhooks/{id} (or TALKOVER_TARGETS), --discover campaigns/agents, or run --demo".into(),
                ));
            }
            if self.talkover_url.scheme() == "http" && !self.allow_insecure {
                return Err(ConfigError(format!(
                    "invalid value '{}' for '--talkover.url': plain http:// would send the token unencrypted; use https:// or add --talkover.allow-insecure",
                    self.talkover_url
                )));
            }
            Source::Api {
                url: self.talkover_url,
                credentials: read_credentials(self.token_file.as_deref())?,
                allow_insecure: self.allow_insecure,
            }
        };
        Ok(Config {
            source,
            targets: dedup(self.targets),
            poll_interval: self.poll_interval.unwrap_or(if self.demo {
                DEMO_POLL_INTERVAL
            } else {
                Duration::from_secs(30)
            }),
            max_pages: self.max_pages,
            timeout: self.timeout,
            max_body_size: self.max_body_size,
            max_requests_per_second: self.max_requests_per_second,
            telemetry_path: self.telemetry_path,
            state_file: self.state_file,
            discover: dedup(self.discover),
            discover_interval: self.discover_interval.unwrap_or(Duration::from_secs(300)),
            filters: Filters {
                include: self.include.iter().map(|p| Pattern::new(p)).collect(),
                exclude: self.exclude.iter().map(|p| Pattern::new(p)).collect(),
            },
            shard: Shard {
                index: self.shard_index,
                count: self.shard_count,
            },
            stale_after: self.stale_after,
            web_config_file: self.web_config_file,
            serve_limits: ServeLimits {
                max_connections: self.max_connections,
                read_header_timeout: self.read_header_timeout,
            },
            max_requests: self.max_requests,
            budget: Budget {
                lag: chosen(self.collector_lag, self.no_collector_lag, false),
                attempt_number: chosen(
                    self.collector_attempt_number,
                    self.no_collector_attempt_number,
                    true,
                ),
                duration_by_status: chosen(
                    self.collector_duration_by_status,
                    self.no_collector_duration_by_status,
                    true,
                ),
                poll_stats: chosen(
                    self.collector_poll_stats,
                    self.no_collector_poll_stats,
                    false,
                ),
                native_histograms: chosen(
                    self.collector_native_histograms,
                    self.no_collector_native_histograms,
                    false,
                ),
            },
            failures: FailurePolicy {
                keep: self.failures_keep.unwrap_or(FailurePolicy::default().keep),
                response_body: self
                    .failures_response_body
                    .unwrap_or(FailurePolicy::default().response_body),
            },
        })
    }

    /// Fills what the flags left unset from the file; flags win.
    fn merge_file(&mut self, path: &std::path::Path) -> Result<(), ConfigError> {
        let bad = |detail: String| {
            ConfigError(format!(
                "invalid value '{}' for '--config.file': {detail}",
                path.display()
            ))
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let file: FileConfig = serde_norway::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if self.targets.is_empty() {
            self.targets = file
                .targets
                .iter()
                .map(|t| t.parse::<Target>().map_err(|e| bad(e.to_string())))
                .collect::<Result<_, _>>()?;
        }
        let d = file.discovery;
        if self.discover.is_empty() {
            self.discover = d
                .scopes
                .iter()
                .map(|s| parse_scope(s).map_err(|e| bad(format!("discovery.scopes: {e}"))))
                .collect::<Result<_, _>>()?;
        }
        if self.discover_interval.is_none() {
            self.discover_interval = d
                .interval
                .as_deref()
                .map(|i| {
                    duration_at_most(bounds::DISCOVER_INTERVAL)(i)
                        .map_err(|e| bad(format!("discovery.interval {i:?}: {e}")))
                })
                .transpose()?;
        }
        if self.include.is_empty() {
            self.include = d.include;
        }
        if self.exclude.is_empty() {
            self.exclude = d.exclude;
        }
        let f = file.failures;
        if self.failures_keep.is_none() {
            if let Some(n) = f.keep.filter(|n| *n > MAX_KEEP) {
                return Err(bad(format!(
                    "failures.keep {n}: at most {MAX_KEEP} failed attempts per webhook"
                )));
            }
            self.failures_keep = f.keep;
        }
        if self.failures_response_body.is_none() {
            self.failures_response_body = f.response_body;
        }
        Ok(())
    }
}

#[cfg(test)]
mod config_file_tests {
    use super::*;
    use clap::Parser as _;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["talkover-exporter", "--demo"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
            .expect("flags parse")
            .into_config()
    }

    #[test]
    fn the_demo_polls_every_two_seconds_unless_told_otherwise() {
        assert_eq!(
            parse(&[]).expect("demo").poll_interval,
            Duration::from_secs(2)
        );
        let told = parse(&["--poll.interval", "45s"]).expect("demo");
        assert_eq!(told.poll_interval, Duration::from_secs(45));
    }

    /// node_exporter's style: `--collector.X` and `--no-collector.X`, the
    /// last one given winning.
    #[test]
    fn collector_flags_turn_families_on_and_off() {
        let budget = |args: &[&str]| parse(args).expect("flags parse").budget;
        assert_eq!(budget(&[]), Budget::default());
        assert!(budget(&["--collector.lag"]).lag);
        assert!(!budget(&["--collector.lag", "--no-collector.lag"]).lag);
        assert!(budget(&["--no-collector.lag", "--collector.lag"]).lag);
        assert!(!budget(&[]).poll_stats);
        assert!(budget(&["--collector.poll-stats"]).poll_stats);
        assert!(!budget(&["--collector.poll-stats", "--no-collector.poll-stats"]).poll_stats);
        assert!(!budget(&[]).native_histograms);
        assert!(budget(&["--collector.native-histograms"]).native_histograms);
        assert!(
            !budget(&[
                "--collector.native-histograms",
                "--no-collector.native-histograms"
            ])
            .native_histograms
        );
        let off = budget(&[
            "--no-collector.attempt-number",
            "--no-collector.duration-by-status",
        ]);
        assert!(!off.attempt_number && !off.duration_by_status && !off.lag);
    }

    /// `Config::new` and the flags agree on every default.
    #[test]
    fn config_new_has_the_flags_defaults() {
        // `parse` adds --demo, which polls every 2 s unless told otherwise.
        let flags = parse(&["--poll.interval", "30s"]).expect("defaults parse");
        let new = Config::new(flags.source.clone());
        assert_eq!(format!("{flags:?}"), format!("{new:?}"));
    }

    #[test]
    fn file_fills_what_flags_leave_unset_and_flags_win() {
        let dir = std::env::temp_dir().join(format!("talkover-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("config.yml");
        std::fs::write(
            &path,
            "targets:\n  - campaigns/c1/webhooks/w1\ndiscovery:\n  scopes: [campaigns, agents]\n  interval: 2m\n  include: [\"prod-*\"]\n  exclude: [\"*-test\"]\n",
        )
        .expect("write");
        let p = path.to_str().expect("utf-8 path");
        let c = parse(&["--config.file", p]).expect("valid");
        assert_eq!(c.targets.len(), 1);
        assert_eq!(c.discover, vec![Scope::Campaign, Scope::Agent]);
        assert_eq!(c.discover_interval, Duration::from_secs(120));
        assert_eq!(c.filters.include, vec![Pattern::new("prod-*")]);
        let c = parse(&[
            "--config.file",
            p,
            "--discover",
            "agents",
            "--discover.interval",
            "10s",
        ])
        .expect("valid");
        assert_eq!(c.discover, vec![Scope::Agent]);
        assert_eq!(c.discover_interval, Duration::from_secs(10));

        std::fs::write(&path, "targets: []\ndiscovery:\n  scopez: [campaigns]\n").expect("write");
        let err = parse(&["--config.file", p])
            .expect_err("unknown key")
            .to_string();
        assert!(
            err.contains("--config.file") && err.contains("scopez"),
            "{err}"
        );
        std::fs::write(&path, "targets: [\"campaigns/c1\"]\n").expect("write");
        let err = parse(&["--config.file", p])
            .expect_err("bad target")
            .to_string();
        assert!(err.contains("campaigns/c1"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn failures_flags_and_file() {
        let c = parse(&[]).expect("defaults");
        assert_eq!(c.failures, FailurePolicy::default());
        let c = parse(&["--failures.keep", "0", "--failures.response-body=false"]).expect("valid");
        assert_eq!(
            c.failures,
            FailurePolicy {
                keep: 0,
                response_body: false
            }
        );
        // Given alone, the boolean flag means true.
        let c = parse(&["--failures.response-body"]).expect("valid");
        assert!(c.failures.response_body);
        for (args, named) in [
            (&["--failures.keep", "1001"][..], "1001"),
            (&["--failures.response-body=maybe"][..], "maybe"),
        ] {
            let mut argv = vec!["talkover-exporter", "--demo"];
            argv.extend_from_slice(args);
            let err = Cli::try_parse_from(argv)
                .expect_err("bad value")
                .to_string();
            assert!(err.contains(named) && err.contains("--failures."), "{err}");
        }

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yml");
        let p = path.to_str().expect("utf-8 path");
        std::fs::write(&path, "failures:\n  keep: 5\n  response_body: false\n").expect("write");
        let c = parse(&["--config.file", p]).expect("valid");
        assert_eq!((c.failures.keep, c.failures.response_body), (5, false));
        let c = parse(&["--config.file", p, "--failures.keep", "7"]).expect("valid");
        assert_eq!((c.failures.keep, c.failures.response_body), (7, false));
        std::fs::write(&path, "failures:\n  keep: 5000\n").expect("write");
        let err = parse(&["--config.file", p])
            .expect_err("too many")
            .to_string();
        assert!(err.contains("failures.keep 5000"), "{err}");
        std::fs::write(&path, "failures:\n  body: false\n").expect("write");
        let err = parse(&["--config.file", p])
            .expect_err("unknown key")
            .to_string();
        assert!(err.contains("body"), "{err}");
    }

    #[test]
    fn shard_index_must_be_below_count() {
        let err = parse(&["--shard.index", "3", "--shard.count", "3"])
            .expect_err("bad shard")
            .to_string();
        assert!(err.contains("--shard.index") && err.contains('3'), "{err}");
        assert!(parse(&["--shard.index", "2", "--shard.count", "3"]).is_ok());
    }
}

#[cfg(test)]
mod bounds_tests {
    use super::*;
    use clap::Parser as _;
    use proptest::prelude::*;

    const DURATIONS: [&str; 5] = [
        "--poll.interval",
        "--discover.interval",
        "--target.stale-after",
        "--web.read-header-timeout",
        "--talkover.timeout",
    ];
    const COUNTS: [&str; 8] = [
        "--web.max-connections",
        "--web.max-requests",
        "--poll.max-pages",
        "--shard.count",
        "--shard.index",
        "--failures.keep",
        "--talkover.max-requests-per-second",
        "--talkover.max-body-size",
    ];

    /// What `talkover-exporter --demo FLAG VALUE` makes of it: the error's
    /// text, or none.
    fn run(flag: &str, value: &str) -> Option<String> {
        // `--flag=value`: a value like `-1` is the flag's, not a flag of its own.
        let arg = format!("{flag}={value}");
        match Cli::try_parse_from(["talkover-exporter", "--demo", &arg]) {
            Err(e) => Some(e.to_string()),
            Ok(cli) => cli.into_config().err().map(|e| e.to_string()),
        }
    }

    /// The values of the issue that were accepted, and each bound's first
    /// value past it: refused, naming the flag and the value.
    #[test]
    fn absurd_values_are_refused_naming_flag_and_value() {
        for (flag, value) in [
            ("--discover.interval", "300000000000y"),
            ("--poll.interval", "500000000000y"),
            ("--target.stale-after", "99999999999y"),
            ("--web.read-header-timeout", "99999999999y"),
            ("--poll.interval", "24h 1s"),
            ("--discover.interval", "25h"),
            ("--target.stale-after", "31d"),
            ("--web.read-header-timeout", "61m"),
            ("--talkover.timeout", "11m"),
            ("--web.max-connections", "1000001"),
            ("--web.max-requests", "100001"),
            ("--talkover.max-body-size", "2GiB"),
            ("--talkover.max-body-size", "99999999999999999999"),
            ("--shard.count", "10001"),
            ("--poll.max-pages", "4294967296"),
        ] {
            let err = run(flag, value).unwrap_or_else(|| panic!("{flag} {value} accepted"));
            assert!(
                err.contains(flag) && err.contains(value),
                "{flag} {value}: {err}"
            );
        }
        for (flag, value) in [
            ("--poll.interval", "24h"),
            ("--discover.interval", "24h"),
            ("--target.stale-after", "30d"),
            ("--web.read-header-timeout", "1h"),
            ("--talkover.timeout", "10m"),
            ("--web.max-connections", "1000000"),
            ("--talkover.max-body-size", "1GiB"),
        ] {
            assert_eq!(run(flag, value), None, "{flag} {value}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yml");
        std::fs::write(&path, "discovery:\n  interval: 300000000000y\n").expect("write");
        let p = path.to_str().expect("utf-8 path");
        let err = run("--config.file", p).expect("refused");
        assert!(
            err.contains("discovery.interval") && err.contains("300000000000y"),
            "{err}"
        );
    }

    fn value() -> impl Strategy<Value = String> {
        let units = prop::sample::select(vec![
            "", "ns", "us", "ms", "s", "m", "h", "d", "w", "M", "y", "KiB", "MiB", "GiB", "x", " s",
        ]);
        prop_oneof![
            (any::<u64>(), units.clone()).prop_map(|(n, u)| format!("{n}{u}")),
            (any::<u32>(), any::<u32>(), units).prop_map(|(a, b, u)| format!("{a}.{b}{u}")),
            any::<i64>().prop_map(|n| n.to_string()),
            ".{0,24}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 400,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Whatever value a duration or count flag is given, parsing it and
        /// building the configuration never panics, and a refusal names the flag.
        #[test]
        fn no_value_makes_the_parser_panic(
            flag in prop::sample::select([&DURATIONS[..], &COUNTS[..]].concat()),
            value in value(),
        ) {
            if let Some(err) = run(flag, &value) {
                prop_assert!(err.contains(flag) || err.contains("--shard"), "{}", err);
            }
        }
    }
}
