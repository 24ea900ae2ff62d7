//! The test's Alertmanager webhook receiver, and the checks on what it got.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{json, Value};

use support::{string_labels, Key};

use crate::*;

use crate::rules::AlertRule;

/// One alert of one notification received from Alertmanager.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    /// Time since the traffic under test started.
    pub(crate) at: Duration,
    /// The whole notification (envelope).
    pub(crate) notification: Value,
    /// The alert in it.
    pub(crate) alert: Value,
}

impl Received {
    pub(crate) fn name(&self) -> &str {
        self.alert["labels"]["alertname"].as_str().unwrap_or("?")
    }

    pub(crate) fn status(&self) -> &str {
        self.alert["status"].as_str().unwrap_or("?")
    }
}

/// The test's webhook receiver: every POSTed Alertmanager notification.
#[derive(Clone)]
pub(crate) struct Inbox {
    pub(crate) since: Arc<Mutex<Instant>>,
    pub(crate) received: Arc<Mutex<Vec<Received>>>,
}

impl Inbox {
    pub(crate) fn alerts(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn restart_clock(&self) {
        *self.since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }
}

pub(crate) async fn receive(State(inbox): State<Inbox>, body: String) -> StatusCode {
    let at = inbox
        .since
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .elapsed();
    let notification: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| json!({"unparsable": body, "error": e.to_string()}));
    let alerts = notification["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut received = inbox.received.lock().unwrap_or_else(|e| e.into_inner());
    if alerts.is_empty() {
        // Recorded as is, so that the checks report it.
        received.push(Received {
            at,
            notification: notification.clone(),
            alert: Value::Null,
        });
    }
    for alert in alerts {
        received.push(Received {
            at,
            notification: notification.clone(),
            alert,
        });
    }
    StatusCode::OK
}

pub(crate) fn key_of(labels: &Value) -> Key {
    let get = |k: &str| labels[k].as_str().unwrap_or("").to_string();
    (get("campaign_id"), get("agent_id"), get("webhook_id"))
}

pub(crate) fn failing_key() -> Key {
    (
        FAILING_CAMPAIGN.into(),
        String::new(),
        FAILING_WEBHOOK.into(),
    )
}

/// Problems with one received alert: it must be for the failing webhook and
/// carry exactly the labels and annotations its rule defines, rendered.
pub(crate) fn check_received(r: &Received, rules: &BTreeMap<String, AlertRule>) -> Vec<String> {
    let mut problems = Vec::new();
    let n = &r.notification;
    if n["version"] != "4" || n["receiver"] != RECEIVER || n["groupKey"].as_str().is_none() {
        problems.push(format!(
            "notification envelope: version {} receiver {} groupKey {}",
            n["version"], n["receiver"], n["groupKey"]
        ));
    }
    if r.alert.is_null() {
        problems.push(format!("notification without alerts: {n}"));
        return problems;
    }
    let labels = &r.alert["labels"];
    let name = r.name();
    if key_of(labels) != failing_key() {
        problems.push(format!(
            "alert {name} for another webhook than {FAILING} (the healthy webhooks must raise nothing): {labels}"
        ));
        return problems;
    }
    let Some(rule) = rules.get(name) else {
        problems.push(format!("alert {name} is not defined in rules.yml"));
        return problems;
    };
    let mut expected: BTreeMap<String, String> = rule.labels.clone();
    expected.insert("alertname".into(), name.into());
    expected.insert("campaign_id".into(), FAILING_CAMPAIGN.into());
    expected.insert("webhook_id".into(), FAILING_WEBHOOK.into());
    let got = string_labels(labels);
    if got != expected {
        problems.push(format!("{name}: labels {got:?}, want {expected:?}"));
    }
    let annotations = r.alert["annotations"].as_object();
    let keys: BTreeSet<String> = annotations
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    if keys != rule.annotations {
        problems.push(format!(
            "{name}: annotations {keys:?}, want {:?}",
            rule.annotations
        ));
    }
    for (key, text) in annotations.into_iter().flatten() {
        let text = text.as_str().unwrap_or("");
        let campaign = format!("campaign {FAILING_CAMPAIGN}");
        if key == "webhook_page" {
            // The exporter's page of that webhook, on the exporter that
            // watches it (found from talkover_webhook_info's instance).
            let page = format!("/webhooks/campaigns/{FAILING_CAMPAIGN}/{FAILING_WEBHOOK}");
            if !(text.starts_with("http://127.0.0.1:") && text.ends_with(&page)) {
                problems.push(format!(
                    "{name}: webhook_page {text:?} is not the exporter's {page}"
                ));
            }
        } else if !text.contains(FAILING_WEBHOOK) || !text.contains(&campaign) {
            problems.push(format!(
                "{name}: annotation {key} does not name webhook {FAILING_WEBHOOK} and {campaign}: {text:?}"
            ));
        }
        for bad in ["{{", "<no value>", "error expanding", "%!", "agent "] {
            if text.contains(bad) {
                problems.push(format!(
                    "{name}: annotation {key} contains {bad:?}: {text:?}"
                ));
            }
        }
    }
    let starts = r.alert["startsAt"].as_str().unwrap_or("");
    if starts.is_empty() || starts.starts_with("0001-") {
        problems.push(format!("{name}: no startsAt"));
    }
    if r.alert["generatorURL"].as_str().unwrap_or("").is_empty() {
        problems.push(format!("{name}: no generatorURL (not from Prometheus?)"));
    }
    match r.status() {
        "firing" => {}
        "resolved" => {
            let ends = r.alert["endsAt"].as_str().unwrap_or("");
            if ends.is_empty() || ends.starts_with("0001-") {
                problems.push(format!("{name}: resolved without endsAt"));
            }
        }
        other => problems.push(format!("{name}: status {other:?}")),
    }
    problems
}

/// Panics if any received alert is wrong (see [`check_received`]).
pub(crate) fn assert_received_right(all: &[Received], rules: &BTreeMap<String, AlertRule>) {
    let problems: Vec<String> = all.iter().flat_map(|r| check_received(r, rules)).collect();
    assert!(
        problems.is_empty(),
        "received alerts are wrong:\n  {}\nall received:\n{}",
        problems.join("\n  "),
        fmt_received(all)
    );
}

/// Panics unless every alert `source` (Prometheus or Alertmanager) has is for
/// the failing webhook and every [`REQUIRED`] alert is in `state` there
/// (`state_of` reads an alert's state).
pub(crate) fn assert_only_failing_and_required(
    source: &str,
    alerts: &[Value],
    state: &str,
    state_of: impl Fn(&Value) -> &Value,
) {
    let foreign: Vec<&Value> = alerts
        .iter()
        .filter(|a| key_of(&a["labels"]) != failing_key())
        .collect();
    assert!(
        foreign.is_empty(),
        "{source} has alerts for other than {FAILING}: {foreign:?}"
    );
    for name in REQUIRED {
        assert!(
            alerts
                .iter()
                .any(|a| a["labels"]["alertname"] == name && *state_of(a) == *state),
            "{name} is not {state} in {source}: {alerts:?}"
        );
    }
}

pub(crate) fn fmt_received(all: &[Received]) -> String {
    if all.is_empty() {
        return "  (nothing)\n".into();
    }
    all.iter()
        .map(|r| {
            format!(
                "  +{:.1}s {} {} {}\n",
                r.at.as_secs_f64(),
                r.status(),
                r.name(),
                r.alert["labels"]
            )
        })
        .collect()
}
