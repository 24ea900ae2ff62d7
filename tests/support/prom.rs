//! A Prometheus server's HTTP API, as the end-to-end tests read it.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{send, string_labels};

/// A Prometheus server's HTTP API.
pub struct Prom {
    pub http: reqwest::Client,
    /// `http://127.0.0.1:port`.
    pub base: String,
}

impl Prom {
    /// `data` of a successful answer.
    pub async fn get_json(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, String> {
        let req = self.http.get(format!("{}{path}", self.base)).query(query);
        let (status, body) = send(req, &format!("GET {path}")).await?;
        let json: Value = serde_json::from_str(&body)
            .map_err(|e| format!("GET {path}: HTTP {status}, not JSON ({e}): {body}"))?;
        if json["status"] != "success" {
            return Err(format!(
                "GET {path}: HTTP {status}: {} {}",
                json["errorType"], json["error"]
            ));
        }
        Ok(json["data"].clone())
    }

    /// Instant query: the result vector as (labels, value) pairs; a scalar
    /// result is one pair without labels.
    pub async fn query(&self, expr: &str) -> Result<Vec<(BTreeMap<String, String>, f64)>, String> {
        let data = self.get_json("/api/v1/query", &[("query", expr)]).await?;
        let parse_value = |v: &Value| -> f64 {
            v.get(1)
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok())
                .unwrap_or(f64::NAN)
        };
        match data["resultType"].as_str() {
            Some("vector") => Ok(data["result"]
                .as_array()
                .map(|rows| {
                    rows.iter()
                        .map(|row| {
                            // A native histogram sample: its count stands for it.
                            let value = match row.get("histogram") {
                                Some(h) => h
                                    .get(1)
                                    .and_then(|h| h["count"].as_str())
                                    .and_then(|s| s.parse().ok())
                                    .unwrap_or(f64::NAN),
                                None => parse_value(&row["value"]),
                            };
                            (string_labels(&row["metric"]), value)
                        })
                        .collect()
                })
                .unwrap_or_default()),
            Some("scalar") => Ok(vec![(BTreeMap::new(), parse_value(&data["result"]))]),
            other => Err(format!("unexpected result type {other:?}: {data}")),
        }
    }

    /// The single value of a query that has exactly one.
    pub async fn scalar(&self, expr: &str) -> Option<f64> {
        match self.query(expr).await {
            Ok(rows) if rows.len() == 1 => Some(rows[0].1),
            _ => None,
        }
    }

    /// Alerts pending or firing now: (alertname, labels, state).
    pub async fn alerts(&self) -> Result<Vec<(String, BTreeMap<String, String>, String)>, String> {
        let data = self.get_json("/api/v1/alerts", &[]).await?;
        Ok(data["alerts"]
            .as_array()
            .map(|alerts| {
                alerts
                    .iter()
                    .map(|a| {
                        let labels = string_labels(&a["labels"]);
                        let name = labels.get("alertname").cloned().unwrap_or_default();
                        let state = a["state"].as_str().unwrap_or("").to_string();
                        (name, labels, state)
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
}
