//! The shipped rules, their `for:` durations divided by the documented knob.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use support::find_on_path;

use crate::*;

/// Milliseconds of a Prometheus duration (`2m`, `1h30m`, `500ms`).
pub(crate) fn duration_ms(text: &str) -> u64 {
    let mut total = 0u64;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: u64 = rest[..digits]
            .parse()
            .unwrap_or_else(|_| panic!("not a Prometheus duration: {text:?}"));
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "y" => 365 * 86_400_000,
            other => panic!("unknown unit {other:?} in duration {text:?}"),
        };
        total += n * unit;
        rest = &rest[unit_len..];
    }
    total
}

/// An alerting rule of `rules.yml`, as the receiver must see it.
#[derive(Debug)]
pub(crate) struct AlertRule {
    /// `for:` in milliseconds (0 without one).
    pub(crate) for_ms: u64,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) annotations: BTreeSet<String>,
}

pub(crate) fn yaml_str(v: &serde_norway::Value) -> String {
    match v {
        serde_norway::Value::String(s) => s.clone(),
        other => serde_norway::to_string(other)
            .expect("YAML scalar")
            .trim()
            .to_string(),
    }
}

/// Removes `for` from every rule of a parsed rules file; returns the alerting
/// rules (with the removed `for`) by name.
pub(crate) fn take_alert_rules(doc: &mut serde_norway::Value) -> BTreeMap<String, AlertRule> {
    let mut out = BTreeMap::new();
    let groups = doc
        .get_mut("groups")
        .and_then(|g| g.as_sequence_mut())
        .expect("rules file: groups");
    for group in groups {
        let rules = group
            .get_mut("rules")
            .and_then(|r| r.as_sequence_mut())
            .expect("rules file: group rules");
        for rule in rules {
            let map = rule.as_mapping_mut().expect("rules file: rule is a map");
            let for_ms = map.remove("for").map_or(0, |v| duration_ms(&yaml_str(&v)));
            let Some(name) = map.get("alert").map(yaml_str) else {
                continue;
            };
            let strings = |key: &str| -> BTreeMap<String, String> {
                map.get(key)
                    .and_then(|v| v.as_mapping())
                    .map(|m| m.iter().map(|(k, v)| (yaml_str(k), yaml_str(v))).collect())
                    .unwrap_or_default()
            };
            let labels = strings("labels");
            let annotations = strings("annotations").into_keys().collect();
            out.insert(
                name,
                AlertRule {
                    for_ms,
                    labels,
                    annotations,
                },
            );
        }
    }
    out
}

/// Runs the documented knob on the shipped rules; checks that the result is
/// the shipped rules with every `for:` divided by [`FOR_FACTOR`] and nothing
/// else changed. Returns the derived text and the shipped alerting rules.
pub(crate) fn derive_rules(
    root: &Path,
    rules_path: &Path,
) -> (String, BTreeMap<String, AlertRule>) {
    let python = find_on_path("python3").unwrap_or_else(|| {
        panic!("`python3` is not on PATH: it runs dashboards/prometheus/scale-for.py (Debian: `apt-get install python3`)")
    });
    let script = root.join("dashboards/prometheus/scale-for.py");
    let out = Command::new(python)
        .arg(&script)
        .arg(FOR_FACTOR.to_string())
        .arg(rules_path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed with {}: {}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let derived = String::from_utf8(out.stdout).expect("scale-for.py output is UTF-8");

    let shipped = std::fs::read_to_string(rules_path).expect("read rules.yml");
    let mut shipped_doc: serde_norway::Value =
        serde_norway::from_str(&shipped).expect("rules.yml is YAML");
    let mut derived_doc: serde_norway::Value =
        serde_norway::from_str(&derived).expect("scale-for.py output is YAML");
    let shipped_rules = take_alert_rules(&mut shipped_doc);
    let derived_rules = take_alert_rules(&mut derived_doc);
    assert!(
        shipped_doc == derived_doc,
        "scale-for.py changed more than the `for:` durations"
    );
    assert_eq!(
        shipped_rules.keys().collect::<Vec<_>>(),
        derived_rules.keys().collect::<Vec<_>>()
    );
    for (name, rule) in &shipped_rules {
        assert_eq!(
            derived_rules[name].for_ms,
            rule.for_ms / u64::from(FOR_FACTOR),
            "{name}: `for:` not divided by {FOR_FACTOR} in the derived rules"
        );
    }
    for name in REQUIRED {
        assert!(
            shipped_rules.contains_key(name),
            "rules.yml has no alert {name}"
        );
    }
    (derived, shipped_rules)
}
