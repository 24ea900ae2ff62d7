//! HTTP helpers: one client with a timeout, GET and POST with errors that
//! name the request, and scrapes of an exporter by port.

use std::collections::BTreeMap;
use std::time::Duration;

use super::Scrape;

/// The HTTP client of the tests: every request times out after 10s.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client")
}

/// Sends `req`: the status and the body of the answer; an error names `what`
/// (`GET <url>`).
pub async fn send(
    req: reqwest::RequestBuilder,
    what: &str,
) -> Result<(reqwest::StatusCode, String), String> {
    let resp = req.send().await.map_err(|e| format!("{what}: {e}"))?;
    let status = resp.status();
    let body = resp.text().await.map_err(|e| format!("{what}: {e}"))?;
    Ok((status, body))
}

/// The body of a successful GET.
pub async fn get_text(http: &reqwest::Client, url: &str) -> Result<String, String> {
    let (status, body) = send(http.get(url), &format!("GET {url}")).await?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("GET {url}: HTTP {status}: {body}"))
    }
}

/// The labels of a JSON object (a Prometheus `metric`, an alert's
/// `labels`); a value that is not a string counts as "".
pub fn string_labels(labels: &serde_json::Value) -> BTreeMap<String, String> {
    labels
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").into()))
                .collect()
        })
        .unwrap_or_default()
}

/// POSTs `body` (as JSON) or nothing; Ok on a success status.
pub async fn post(
    http: &reqwest::Client,
    url: &str,
    body: Option<serde_json::Value>,
) -> Result<(), String> {
    let mut req = http.post(url);
    if let Some(body) = body {
        req = req
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let resp = req.send().await.map_err(|e| format!("POST {url}: {e}"))?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("POST {url}: HTTP {}", resp.status()))
    }
}

/// Sends a scrape request (with whatever auth or headers it carries) and
/// parses the answer; panics if there is none.
pub async fn scrape_with(request: reqwest::RequestBuilder) -> Scrape {
    let text = request
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("scrape body");
    Scrape::parse(&text)
}

/// Scrapes the exporter listening on `port`; `None` while it is not answering.
pub async fn scrape_at(port: u16) -> Option<Scrape> {
    let resp = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?;
    Some(Scrape::parse(&resp.text().await.ok()?))
}

/// The protobuf format's `Accept`, as Prometheus sends it.
pub const ACCEPT_PROTOBUF: &str =
    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited";

/// When each counter and histogram series of the exporter on `port`
/// began, as its protobuf format says (Unix ms), by `name{labels}`.
pub async fn created_at(port: u16) -> BTreeMap<String, i64> {
    use prost::Message as _;
    use talkover_exporter::proto::{MetricFamily, Timestamp};
    let body = http_client()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .header("accept", ACCEPT_PROTOBUF)
        .send()
        .await
        .expect("protobuf scrape")
        .bytes()
        .await
        .expect("protobuf body");
    let mut rest = &body[..];
    let ms = |t: &Timestamp| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000;
    let mut out = BTreeMap::new();
    while !rest.is_empty() {
        let family = MetricFamily::decode_length_delimited(&mut rest).expect("a whole family");
        for m in &family.metric {
            let created = m
                .counter
                .as_ref()
                .and_then(|c| c.created_timestamp.as_ref())
                .or_else(|| {
                    m.histogram
                        .as_ref()
                        .and_then(|h| h.created_timestamp.as_ref())
                });
            if let Some(t) = created {
                let labels: Vec<String> = m
                    .label
                    .iter()
                    .map(|l| format!("{}={:?}", l.name, l.value))
                    .collect();
                out.insert(format!("{}{{{}}}", family.name, labels.join(",")), ms(t));
            }
        }
    }
    out
}

/// Whether the exporter on `port` answers `/-/ready` with 200.
pub async fn ready_at(port: u16) -> bool {
    reqwest::get(format!("http://127.0.0.1:{port}/-/ready"))
        .await
        .is_ok_and(|r| r.status() == 200)
}
