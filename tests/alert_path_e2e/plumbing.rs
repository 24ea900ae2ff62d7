//! HTTP to the processes under test, and waiting on them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use support::{get_text, ChildGuard, ATTEMPTS};

use crate::*;

pub(crate) struct Http {
    pub(crate) client: reqwest::Client,
}

impl Http {
    pub(crate) async fn get_json(&self, url: &str) -> Result<Value, String> {
        let body = self.text(url).await?;
        serde_json::from_str(&body).map_err(|e| format!("GET {url}: not JSON ({e}): {body}"))
    }

    /// `data` of a Prometheus API answer.
    pub(crate) async fn prom(&self, url: &str) -> Result<Value, String> {
        let json = self.get_json(url).await?;
        if json["status"] != "success" {
            return Err(format!(
                "GET {url}: {} {}",
                json["errorType"], json["error"]
            ));
        }
        Ok(json["data"].clone())
    }

    /// Instant query; the result vector's rows (`metric`, `value`).
    pub(crate) async fn query(&self, prom: &str, expr: &str) -> Result<Vec<Value>, String> {
        let url =
            reqwest::Url::parse_with_params(&format!("{prom}/api/v1/query"), [("query", expr)])
                .map_err(|e| e.to_string())?;
        let data = self.prom(url.as_str()).await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    pub(crate) async fn text(&self, url: &str) -> Result<String, String> {
        get_text(&self.client, url).await
    }

    pub(crate) async fn ok(&self, url: &str) -> bool {
        matches!(self.client.get(url).send().await, Ok(r) if r.status().is_success())
    }

    pub(crate) async fn post(&self, url: &str, body: Option<Value>) -> Result<(), String> {
        support::post(&self.client, url, body).await
    }

    pub(crate) async fn set_success_ratio(&self, sim: &str, target: &str, ratio: f64) {
        self.post(
            &format!("{sim}/_sim/success-ratio"),
            Some(json!({"target": target, "success_ratio": ratio})),
        )
        .await
        .unwrap_or_else(|e| panic!("setting success_ratio {ratio} for {target}: {e}"));
    }
}

/// Per-webhook attempts and the pending gauge sum on the exporter's /metrics.
pub(crate) fn exporter_counts(text: &str) -> (BTreeMap<String, f64>, f64) {
    let mut attempts = BTreeMap::new();
    let mut pending = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value: f64 = value.parse().unwrap_or(f64::NAN);
        if series.starts_with(&format!("{ATTEMPTS}{{")) {
            let label = |k: &str| {
                series
                    .split_once(&format!("{k}=\""))
                    .and_then(|(_, rest)| rest.split_once('"'))
                    .map_or("", |(v, _)| v)
                    .to_string()
            };
            let key = format!(
                "{}/{}/{}",
                label("campaign_id"),
                label("agent_id"),
                label("webhook_id")
            );
            *attempts.entry(key).or_insert(0.0) += value;
        } else if series.starts_with("talkover_webhook_attempts_pending") {
            pending += value;
        }
    }
    (attempts, pending)
}

/// Panics (with its log) if any of `children` has exited.
pub(crate) fn assert_running(children: &mut [&mut ChildGuard]) {
    for child in children.iter_mut() {
        child.assert_running();
    }
}

pub(crate) async fn wait_until<F, Fut>(
    what: &str,
    timeout: Duration,
    children: &mut [&mut ChildGuard],
    mut f: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        assert_running(children);
        let last = match f().await {
            Ok(()) => return,
            Err(e) => e,
        };
        assert!(
            Instant::now() < deadline,
            "{what}: not within {}s; last: {last}",
            timeout.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// [`wait_until`] GET `url` answers with a success status, for up to 30s.
pub(crate) async fn wait_ready(
    http: &Http,
    what: &str,
    url: &str,
    children: &mut [&mut ChildGuard],
) {
    wait_until(what, Duration::from_secs(30), children, || async {
        if http.ok(url).await {
            Ok(())
        } else {
            Err("not ready".into())
        }
    })
    .await;
}
