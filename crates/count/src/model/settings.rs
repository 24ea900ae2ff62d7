//! A webhook's own settings, as the API's listing and webhook objects show
//! them: what its attempts mean. `max_retries` says which failed attempt is
//! the last one (the event is then lost), `timeout` how long the receiver
//! may take. Alerts that assume the platform's defaults lie for every
//! webhook that changed them.

use serde::{Deserialize, Serialize};

/// The platform's default `max_retries`: what counting and the rules assume
/// while a webhook's own is not known.
pub const DEFAULT_MAX_RETRIES: u32 = 3;
/// The platform's default `timeout`, in seconds: what the rules assume while
/// a webhook's own is not known.
pub const DEFAULT_TIMEOUT_SECONDS: u32 = 30;
/// Most events kept per webhook (as many as distinct `event` label values).
pub const EVENTS_CAP: usize = 64;
/// Most characters of an event name, as of every label value.
pub const LABEL_CHARS: usize = 128;

/// What the API says of one webhook besides its identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSettings {
    /// Display name (empty if the API gave none).
    pub name: String,
    /// Whether deliveries are on.
    pub enabled: bool,
    /// Automatic retries after a failed attempt; `None` if the API did not say.
    pub max_retries: Option<u32>,
    /// Seconds the platform waits for the receiver; `None` if the API did not say.
    pub timeout_seconds: Option<u32>,
    /// The events it receives, as label values (capped, deduplicated, in
    /// the API's order).
    pub events: Vec<String>,
}

impl WebhookSettings {
    /// Settings as the API gave them, with values outside what the platform
    /// can mean read as unknown: a `max_retries` of 500 or a timeout of a day
    /// is garbage, and counting by it would misjudge every attempt.
    pub fn new(
        name: Option<String>,
        enabled: bool,
        max_retries: Option<u32>,
        timeout_seconds: Option<u32>,
        events: &[String],
    ) -> WebhookSettings {
        let mut kept: Vec<String> = Vec::new();
        for e in events {
            let e = label_value(e);
            if kept.len() < EVENTS_CAP && !e.is_empty() && !kept.iter().any(|k| k == e) {
                kept.push(e.to_string());
            }
        }
        WebhookSettings {
            name: name.unwrap_or_default(),
            enabled,
            // The documented range is 0–10; the attempt histogram's buckets
            // stop at 11, but counting stays right well beyond.
            max_retries: max_retries.filter(|n| *n <= 100),
            timeout_seconds: timeout_seconds.filter(|s| (1..=3600).contains(s)),
            events: kept,
        }
    }

    /// Only a name and an enabled state, as a listing without settings shows.
    pub fn named(name: &str, enabled: bool) -> WebhookSettings {
        WebhookSettings::new(Some(name.to_string()), enabled, None, None, &[])
    }
}

/// The retry limit counting judges a failed attempt by: the webhook's own,
/// or the platform's default while it is not known.
pub fn max_retries(settings: Option<&WebhookSettings>) -> u32 {
    settings
        .and_then(|s| s.max_retries)
        .unwrap_or(DEFAULT_MAX_RETRIES)
}

/// `value` as a label value: at most `LABEL_CHARS` characters.
pub fn label_value(value: &str) -> &str {
    match value.char_indices().nth(LABEL_CHARS) {
        Some((end, _)) => &value[..end],
        None => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_settings_read_as_unknown_and_events_are_capped() {
        let events: Vec<String> = (0..100)
            .map(|i| format!("e{}", i % 80))
            .chain(["x".repeat(300), String::new()])
            .collect();
        let s = WebhookSettings::new(None, true, Some(500), Some(86_400), &events);
        assert_eq!((s.max_retries, s.timeout_seconds), (None, None));
        assert_eq!(s.events.len(), EVENTS_CAP);
        assert_eq!(s.events[0], "e0");
        assert_eq!(max_retries(Some(&s)), DEFAULT_MAX_RETRIES);
        let s = WebhookSettings::new(Some("n".into()), false, Some(0), Some(5), &[]);
        assert_eq!((s.max_retries, s.timeout_seconds), (Some(0), Some(5)));
        assert_eq!(max_retries(Some(&s)), 0);
        assert_eq!(max_retries(None), 3);
        assert_eq!(label_value(&"é".repeat(200)).chars().count(), 128);
    }
}
