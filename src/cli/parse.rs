//! Parsers of single flag values; each error says what would be valid.

use std::time::Duration;

use url::Url;

use super::config::ConfigError;
use crate::api::{Credentials, Token};
use crate::model::MAX_KEEP;
use crate::target::Scope;

pub(super) fn parse_scope(s: &str) -> Result<Scope, String> {
    match s.trim() {
        "campaigns" => Ok(Scope::Campaign),
        "agents" => Ok(Scope::Agent),
        _ => Err("expected campaigns or agents".into()),
    }
}

pub(super) fn dedup<T: Ord>(mut items: Vec<T>) -> Vec<T> {
    items.sort();
    items.dedup();
    items
}

/// The token file (checked readable now, re-read when it changes), or the
/// fixed token from `TALKOVER_TOKEN`.
/// Where the token comes from: the file `--talkover.token-file` names (read,
/// and refused if unusable, when the exporter starts), else `TALKOVER_TOKEN`.
pub(super) fn read_credentials(file: Option<&std::path::Path>) -> Result<Credentials, ConfigError> {
    if let Some(path) = file {
        return Ok(Credentials::File(path.to_path_buf()));
    }
    match std::env::var("TALKOVER_TOKEN") {
        Ok(raw) => Token::new(&raw)
            .map(Credentials::Token)
            .ok_or_else(|| ConfigError("TALKOVER_TOKEN is set but empty".into())),
        Err(_) => Err(ConfigError(
            "no API token: set TALKOVER_TOKEN or give --talkover.token-file PATH (or run --demo)"
                .into(),
        )),
    }
}

pub(super) fn parse_url(s: &str) -> Result<Url, String> {
    let mut url = Url::parse(s).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(
            "the scheme must be https:// (or http:// with --talkover.allow-insecure)".into(),
        );
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials do not belong in the URL; use TALKOVER_TOKEN".into());
    }
    // A trailing slash makes relative API paths extend the base path.
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// The largest value of each duration flag (and config-file key): beyond
/// these a value is a mistake, and arithmetic on it (a deadline, a
/// backoff) would overflow.
pub(super) mod bounds {
    use std::time::Duration;

    const MINUTE: u64 = 60;
    const HOUR: u64 = 60 * MINUTE;
    const DAY: u64 = 24 * HOUR;
    /// `--talkover.timeout`.
    pub const TIMEOUT: Duration = Duration::from_secs(10 * MINUTE);
    /// `--poll.interval`.
    pub const POLL_INTERVAL: Duration = Duration::from_secs(DAY);
    /// `--discover.interval`.
    pub const DISCOVER_INTERVAL: Duration = Duration::from_secs(DAY);
    /// `--target.stale-after`.
    pub const STALE_AFTER: Duration = Duration::from_secs(30 * DAY);
    /// `--web.read-header-timeout`.
    pub const READ_HEADER_TIMEOUT: Duration = Duration::from_secs(HOUR);
    /// `--web.max-connections`.
    pub const MAX_CONNECTIONS: usize = 1_000_000;
    /// `--web.max-requests`.
    pub const MAX_REQUESTS: usize = 100_000;
    /// `--talkover.max-body-size`: 1 GiB.
    pub const MAX_BODY_SIZE: usize = 1 << 30;
}

pub(super) fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 30s, 2m)"))?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

/// A duration above zero and at most `max`.
pub(super) fn duration_at_most(
    max: Duration,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |s| {
        let d = parse_duration(s)?;
        if d > max {
            return Err(format!("at most {}", humantime::format_duration(max)));
        }
        Ok(d)
    }
}

/// A count from 0 (no limit) to `max`.
pub(super) fn count_at_most(
    max: usize,
) -> impl Fn(&str) -> Result<usize, String> + Clone + Send + Sync + 'static {
    move |s| match s.trim().parse::<usize>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(format!("expected a number from 0 (no limit) to {max}")),
    }
}

pub(super) fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 100_000.0 => Ok(r),
        _ => Err("expected a number of requests per second above 0 (e.g. 10, 0.5)".into()),
    }
}

pub(super) fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| "expected a size such as 32MiB, 512KiB or 1000000".to_string())?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" => 1 << 10,
        "MiB" | "M" | "MB" => 1 << 20,
        "GiB" | "G" | "GB" => 1 << 30,
        other => return Err(format!("unknown unit {other:?} (use B, KiB, MiB or GiB)")),
    };
    let too_large = || "at most 1GiB".to_string();
    let bytes = n.checked_mul(mult).ok_or_else(too_large)?;
    if bytes < 1024 {
        return Err("must be at least 1KiB".into());
    }
    if bytes > bounds::MAX_BODY_SIZE {
        return Err(too_large());
    }
    Ok(bytes)
}

pub(super) fn parse_keep(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n <= MAX_KEEP => Ok(n),
        _ => Err(format!(
            "expected a number of failed attempts from 0 (keep none) to {MAX_KEEP}"
        )),
    }
}

/// `true` or `false`, as node_exporter's boolean flags take them.
pub(super) fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

pub(super) fn parse_telemetry_path(s: &str) -> Result<String, String> {
    // The characters a URL path may hold as they are (RFC 3986), so the
    // route matches what scrapers send and the landing page's link works.
    let url_safe = |c: char| c.is_ascii_alphanumeric() || "-._~/!$&'()*+,;=:@".contains(c);
    // `/webhooks` and what is under it are the status pages.
    let pages = s == "/webhooks" || s.starts_with("/webhooks/");
    if !s.starts_with('/') || s == "/" || s.starts_with("/-/") || pages || !s.chars().all(url_safe)
    {
        return Err(
            "must be a path like /metrics (a leading /, then letters, digits and -._~/!$&'()*+,;=:@), not /, /webhooks, or under /-/ or /webhooks/"
                .into(),
        );
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("32MiB"), Ok(32 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("10").is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn keep_and_bools() {
        assert_eq!(parse_keep("0"), Ok(0));
        assert_eq!(parse_keep("1000"), Ok(1000));
        for bad in ["1001", "-1", "many", ""] {
            assert!(parse_keep(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_bool("false"), Ok(false));
        assert_eq!(parse_bool("true"), Ok(true));
        assert!(parse_bool("no").is_err());
    }

    #[test]
    fn url_gets_trailing_slash_and_refuses_credentials() {
        let u = parse_url("http://127.0.0.1:8080/prefix").expect("url");
        assert_eq!(u.as_str(), "http://127.0.0.1:8080/prefix/");
        assert!(parse_url("https://user:pw@app.talkover.ai").is_err());
        assert!(parse_url("ftp://x").is_err());
    }

    #[test]
    fn telemetry_path_must_not_shadow_other_routes() {
        assert!(parse_telemetry_path("/metrics").is_ok());
        assert!(parse_telemetry_path("/probe/v1_metrics").is_ok());
        for bad in [
            "metrics",
            "/",
            "/-/healthy",
            "/webhooks",
            "/webhooks/campaigns/c/w",
            "/metrics?x=1",
            "/a b",
            "/<script>",
            "/m\"x",
            "/%2e",
            "/métricas",
        ] {
            assert!(parse_telemetry_path(bad).is_err(), "{bad}");
        }
    }
}
