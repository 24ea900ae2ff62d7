//! Reading what the end-to-end test compares: the rules' names, the
//! dashboard's queries with Grafana's variables filled in, and the
//! exporter's own counts from a text scrape.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::support::{Key, ATTEMPTS};

/// Rule names in `rules.yml`: (recording rules, alerts), in file order.
pub(crate) fn rule_names(rules_yml: &str) -> (Vec<String>, Vec<String>) {
    let (mut records, mut alerts) = (Vec::new(), Vec::new());
    for line in rules_yml.lines() {
        let line = line.trim_start().trim_start_matches("- ").trim();
        if let Some(name) = line.strip_prefix("record:") {
            records.push(name.trim().to_string());
        } else if let Some(name) = line.strip_prefix("alert:") {
            alerts.push(name.trim().to_string());
        }
    }
    (records, alerts)
}

/// Every `targets[].expr` of every panel, at any depth (rows, nested panels),
/// as (panel title, expr).
pub(crate) fn dashboard_exprs(node: &Value, title: &str, out: &mut Vec<(String, String)>) {
    match node {
        Value::Object(map) => {
            let title = map.get("title").and_then(Value::as_str).unwrap_or(title);
            if let Some(Value::Array(targets)) = map.get("targets") {
                for target in targets {
                    if let Some(expr) = target.get("expr").and_then(Value::as_str) {
                        out.push((title.to_string(), expr.to_string()));
                    }
                }
            }
            for (key, value) in map {
                if key != "targets" {
                    dashboard_exprs(value, title, out);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                dashboard_exprs(item, title, out);
            }
        }
        _ => {}
    }
}

/// What Grafana sends with every variable on *All* (`.*`): `$__rate_interval`
/// (and the other interval globals) become `1m` first, then every `$var` and
/// `${var}` becomes `.*`.
pub(crate) fn substitute_variables(expr: &str) -> String {
    let expr = expr
        .replace("$__rate_interval", "1m")
        .replace("${__rate_interval}", "1m")
        .replace("$__interval", "1m")
        .replace("$__range", "1m");
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr.as_str();
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(inner) = after.strip_prefix('{') {
            if let Some(end) = inner.find('}') {
                out.push_str(".*");
                rest = &inner[end + 1..];
                continue;
            }
        }
        let name_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if name_len == 0 {
            out.push('$');
        } else {
            out.push_str(".*");
        }
        rest = &after[name_len..];
    }
    out.push_str(rest);
    out
}

/// One sample line of the Prometheus text format: (name, labels, value).
pub(crate) fn parse_sample(line: &str) -> Option<(String, BTreeMap<String, String>, f64)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(mut body) = rest.strip_prefix('{') {
        loop {
            body = body.trim_start_matches([',', ' ']);
            if let Some(after) = body.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = body.find('=')?;
            let key = body[..eq].trim().to_string();
            body = body[eq + 1..].trim_start().strip_prefix('"')?;
            let mut value = String::new();
            let mut chars = body.char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '"' => break i,
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    other => value.push(other),
                }
            };
            labels.insert(key, value);
            body = &body[end + 1..];
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some((name, labels, value))
}

pub(crate) fn key_of(labels: &BTreeMap<String, String>) -> Key {
    let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
    (get("campaign_id"), get("agent_id"), get("webhook_id"))
}

/// Per-webhook sum of the attempt counter, and the sum of the pending gauge,
/// from the exporter's own `/metrics`.
pub(crate) fn exporter_counts(text: &str) -> (BTreeMap<Key, f64>, f64) {
    let mut attempts = BTreeMap::new();
    let mut pending = 0.0;
    for (name, labels, value) in text.lines().filter_map(parse_sample) {
        if name == ATTEMPTS {
            *attempts.entry(key_of(&labels)).or_insert(0.0) += value;
        } else if name == "talkover_webhook_attempts_pending" {
            pending += value;
        }
    }
    (attempts, pending)
}
