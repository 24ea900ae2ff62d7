//! Which webhooks to watch: the `--target`s, plus with `--discover` every
//! webhook the API's listing endpoints show, filtered by include/exclude
//! patterns and cut down to this replica's shard; and what the API says of
//! each (its settings), from the listing or, for a `--target`, from its own
//! webhook object.

use std::collections::BTreeMap;

use prometheus::{IntCounterVec, IntGauge, Opts};

use crate::api::{ApiError, Client, WebhookInfo};
use crate::metrics::Published;
use crate::model::WebhookSettings;
use crate::target::{Scope, Target};

/// This replica's share of the webhooks (`--shard.index` of `--shard.count`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 0-based index of this replica.
    pub index: u32,
    /// Number of replicas.
    pub count: u32,
}

impl Default for Shard {
    fn default() -> Self {
        Shard { index: 0, count: 1 }
    }
}

impl Shard {
    /// Whether this replica watches `target`: the stable hash of (scope,
    /// owner id, webhook id) modulo the replica count picks exactly one.
    pub fn owns(&self, target: &Target) -> bool {
        self.count <= 1 || target.stable_hash() % u64::from(self.count) == u64::from(self.index)
    }
}

/// A shell-style pattern (`*` any run of characters, `?` one character).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    /// Wraps a pattern.
    pub fn new(p: &str) -> Pattern {
        Pattern(p.to_string())
    }

    /// Whether the whole of `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        let (p, t): (Vec<char>, Vec<char>) = (self.0.chars().collect(), text.chars().collect());
        // Iterative wildcard matching with one backtrack point: linear enough
        // for ids and names, and no regex engine to build.
        let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
        while ti < t.len() {
            if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
                pi += 1;
                ti += 1;
            } else if pi < p.len() && p[pi] == '*' {
                star = Some(pi);
                mark = ti;
                pi += 1;
            } else if let Some(s) = star {
                pi = s + 1;
                mark += 1;
                ti = mark;
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|c| *c == '*')
    }
}

/// Include/exclude filters. A webhook is kept when it matches some include
/// pattern (or there are none) and no exclude pattern. Patterns are tried
/// against the webhook id, the owner id, the name and the full path
/// `campaigns/{id}/webhooks/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    /// Keep only these (all when empty).
    pub include: Vec<Pattern>,
    /// Then drop these.
    pub exclude: Vec<Pattern>,
}

impl Filters {
    /// Whether the filters keep this webhook.
    pub fn allows(&self, target: &Target, meta: &WebhookSettings) -> bool {
        let path = target.to_string();
        let keys = [
            target.webhook_id.as_str(),
            target.owner_id.as_str(),
            meta.name.as_str(),
            path.as_str(),
        ];
        let hit = |pats: &[Pattern]| pats.iter().any(|p| keys.iter().any(|k| p.matches(k)));
        (self.include.is_empty() || hit(&self.include)) && !hit(&self.exclude)
    }
}

/// Self-metrics of discovery and the fleet size.
#[derive(Debug, Clone)]
pub struct DiscoveryMetrics {
    runs: IntCounterVec,
    last_success: IntGauge,
    listed: IntGauge,
    settings: IntCounterVec,
    /// Webhooks being polled by this replica.
    pub targets: IntGauge,
}

impl DiscoveryMetrics {
    /// Creates and registers the families.
    pub fn register(published: &Published) -> DiscoveryMetrics {
        let runs = IntCounterVec::new(
            Opts::new(
                "talkover_exporter_discovery_runs_total",
                "Discovery runs, by result (success, or the failure reason).",
            ),
            &["result"],
        );
        let settings = IntCounterVec::new(
            Opts::new(
                "talkover_exporter_settings_fetches_total",
                "Reads of a --target webhook's own object for its settings, by result (success, or the failure reason).",
            ),
            &["result"],
        );
        let gauge = |name: &str, help: &str| IntGauge::new(name, help);
        let (Ok(runs), Ok(settings), Ok(last_success), Ok(listed), Ok(targets)) = (
            runs,
            settings,
            gauge(
                "talkover_exporter_discovery_last_success_timestamp_seconds",
                "Unix time of the last successful discovery.",
            ),
            gauge(
                "talkover_exporter_discovery_webhooks",
                "Webhooks the last successful discovery listed (all shards, before filters).",
            ),
            gauge("talkover_exporter_targets", "Webhooks this replica polls."),
        ) else {
            unreachable!("constant metric definitions are valid")
        };
        let registry = published.registry();
        crate::metrics::register(registry, runs.clone());
        crate::metrics::register(registry, last_success.clone());
        crate::metrics::register(registry, listed.clone());
        crate::metrics::register(registry, targets.clone());
        crate::metrics::register(registry, settings.clone());
        DiscoveryMetrics {
            runs,
            last_success,
            listed,
            settings,
            targets,
        }
    }

    /// A `--target` webhook's settings were read, or not (`Err(reason)`).
    pub fn record_settings(&self, result: Result<(), &str>) {
        self.settings
            .with_label_values(&[result.err().unwrap_or("success")])
            .inc();
    }

    /// A discovery listed `webhooks` webhooks.
    pub fn record_success(&self, webhooks: usize) {
        self.runs.with_label_values(&["success"]).inc();
        self.last_success.set(crate::clock::unix_now_ms() / 1000);
        self.listed.set(webhooks as i64);
    }

    /// A discovery failed.
    pub fn record_failure(&self, reason: &str) {
        self.runs.with_label_values(&[reason]).inc();
    }
}

/// What a listing item or a webhook object says of the webhook's settings.
pub fn settings_of(hook: WebhookInfo) -> WebhookSettings {
    WebhookSettings::new(
        hook.name,
        hook.enabled,
        hook.max_retries,
        hook.timeout,
        hook.events.as_deref().unwrap_or_default(),
    )
}

/// A `--target` webhook's settings, from its own webhook object.
pub async fn fetch_settings(client: &Client, target: &Target) -> Result<WebhookSettings, ApiError> {
    client.get_webhook(target).await.map(settings_of)
}

/// Lists every webhook of the given scopes, with its settings.
pub async fn discover(
    client: &Client,
    scopes: &[Scope],
) -> Result<BTreeMap<Target, WebhookSettings>, ApiError> {
    let mut found = BTreeMap::new();
    for &scope in scopes {
        for owner in client.list_owners(scope).await? {
            for hook in client.list_webhooks(scope, &owner.id).await? {
                let path = format!("{}/{}/webhooks/{}", scope.segment(), owner.id, hook.id);
                match path.parse::<Target>() {
                    Ok(target) => {
                        found.insert(target, settings_of(hook));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping a listed webhook whose ids cannot be used")
                    }
                }
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        for (p, t, want) in [
            ("wh-*", "wh-crm", true),
            ("wh-*", "xwh-crm", false),
            ("*test*", "my-test-hook", true),
            ("c?", "c1", true),
            ("c?", "c12", false),
            ("*", "", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
        ] {
            assert_eq!(Pattern::new(p).matches(t), want, "{p} ~ {t}");
        }
    }

    #[test]
    fn filters_try_ids_names_and_paths() {
        let t: Target = "campaigns/cmp-1/webhooks/wh-2".parse().expect("t");
        let meta = WebhookSettings::named("Slack alerts", true);
        let f = |inc: &[&str], exc: &[&str]| Filters {
            include: inc.iter().map(|p| Pattern::new(p)).collect(),
            exclude: exc.iter().map(|p| Pattern::new(p)).collect(),
        };
        assert!(f(&[], &[]).allows(&t, &meta));
        assert!(f(&["Slack*"], &[]).allows(&t, &meta));
        assert!(f(&["campaigns/cmp-*/webhooks/*"], &[]).allows(&t, &meta));
        assert!(!f(&["agents/*"], &[]).allows(&t, &meta));
        assert!(!f(&[], &["cmp-1"]).allows(&t, &meta));
    }

    #[test]
    fn shards_partition_every_target_exactly_once() {
        let targets: Vec<Target> = (0..500)
            .map(|i| {
                format!("campaigns/c{}/webhooks/w{i}", i % 37)
                    .parse()
                    .expect("t")
            })
            .collect();
        let shards: Vec<Shard> = (0..3).map(|index| Shard { index, count: 3 }).collect();
        let mut sizes = [0; 3];
        for t in &targets {
            let owners: Vec<usize> = (0..3).filter(|i| shards[*i].owns(t)).collect();
            assert_eq!(owners.len(), 1, "{t}");
            sizes[owners[0]] += 1;
        }
        assert!(sizes.iter().all(|n| *n > 120), "uneven shards {sizes:?}");
    }
}
