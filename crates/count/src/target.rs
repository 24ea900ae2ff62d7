//! The identity of one watched webhook, shared by every other module.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Whether a webhook hangs off a campaign or an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// `campaigns/{campaign_id}/webhooks/{webhook_id}`
    Campaign,
    /// `agents/{agent_id}/webhooks/{webhook_id}`
    Agent,
}

impl Scope {
    /// The path segment the API uses for this scope.
    pub fn segment(self) -> &'static str {
        match self {
            Scope::Campaign => "campaigns",
            Scope::Agent => "agents",
        }
    }
}

/// One watched webhook: the unit the collector polls and the metrics label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Target {
    /// Campaign or agent.
    pub scope: Scope,
    /// The campaign id or agent id that owns the webhook.
    pub owner_id: String,
    /// The webhook id.
    pub webhook_id: String,
}

impl Target {
    /// The `campaign_id` label value (empty for agent webhooks).
    pub fn campaign_id(&self) -> &str {
        match self.scope {
            Scope::Campaign => &self.owner_id,
            Scope::Agent => "",
        }
    }

    /// The `agent_id` label value (empty for campaign webhooks).
    pub fn agent_id(&self) -> &str {
        match self.scope {
            Scope::Agent => &self.owner_id,
            Scope::Campaign => "",
        }
    }

    /// A stable 64-bit hash of the webhook's path (FNV-1a): the same on every
    /// machine and version, so shards and poll offsets never move.
    pub fn stable_hash(&self) -> u64 {
        self.to_string()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
            })
    }

    /// Where in `[0, 1)` of the poll interval this webhook's polls fall.
    pub fn spread_fraction(&self) -> f64 {
        (self.stable_hash() % 10_000) as f64 / 10_000.0
    }

    /// The API path of this webhook's delivery logs, relative to the base URL.
    pub fn logs_path(&self) -> String {
        format!("api/v1/{self}/logs")
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/webhooks/{}",
            self.scope.segment(),
            self.owner_id,
            self.webhook_id
        )
    }
}

/// Why a `--target` value could not be read.
#[derive(Debug, thiserror::Error)]
#[error("invalid target {value:?}: expected campaigns/{{campaign_id}}/webhooks/{{webhook_id}} or agents/{{agent_id}}/webhooks/{{webhook_id}}")]
pub struct ParseTargetError {
    value: String,
}

impl FromStr for Target {
    type Err = ParseTargetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseTargetError {
            value: s.to_string(),
        };
        let parts: Vec<&str> = s.trim().trim_matches('/').split('/').collect();
        let [scope, owner, "webhooks", webhook] = parts.as_slice() else {
            return Err(err());
        };
        let scope = match *scope {
            "campaigns" => Scope::Campaign,
            "agents" => Scope::Agent,
            _ => return Err(err()),
        };
        let valid_id = |id: &str| {
            !id.is_empty()
                && !id.chars().all(|c| c == '.')
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !valid_id(owner) || !valid_id(webhook) {
            return Err(err());
        }
        Ok(Target {
            scope,
            owner_id: owner.to_string(),
            webhook_id: webhook.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_scopes_and_round_trips() {
        for s in ["campaigns/c-1/webhooks/w_2", "agents/a.1/webhooks/w-9"] {
            let t: Target = s.parse().expect("valid target");
            assert_eq!(t.to_string(), s);
        }
        let t: Target = "agents/a1/webhooks/w1".parse().expect("valid");
        assert_eq!((t.campaign_id(), t.agent_id()), ("", "a1"));
        assert_eq!(t.logs_path(), "api/v1/agents/a1/webhooks/w1/logs");
    }

    #[test]
    fn stable_hash_is_fixed_forever() {
        // FNV-1a 64 of the path (checked against an independent computation).
        // Changing it moves webhooks between shards: never do it silently.
        let t: Target = "campaigns/c1/webhooks/w1".parse().expect("target");
        assert_eq!(t.stable_hash(), 0x4888_cb0a_5a0d_2935);
    }

    #[test]
    fn rejects_malformed_paths_naming_the_value() {
        for s in [
            "",
            "campaigns/c1",
            "campaigns/c1/hooks/w1",
            "teams/t/webhooks/w",
            "campaigns//webhooks/w",
            "campaigns/c1/webhooks/w1/logs",
            "campaigns/c 1/webhooks/w1",
            "campaigns/../webhooks/w1",
        ] {
            let err = s.parse::<Target>().expect_err(s).to_string();
            assert!(err.contains(&format!("{s:?}")), "{err}");
        }
    }
}
