//! What the simulated attempts say about themselves: realistic `error`
//! texts and `response_body`s, the same for an entry every time it is
//! listed; and the failed attempts as ground truth for the status pages.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Value};

use super::traffic::SimEntry;
use super::Simulator;
use talkover_count::target::Target;

/// A failed attempt as the simulator listed it: what a status page must show.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimFailure {
    /// Log id.
    pub id: String,
    /// Its final status (`failed`, or an unknown one).
    pub status: String,
    /// The receiver's HTTP status, if it answered.
    pub http_status: Option<u16>,
    /// `error` as listed.
    pub error: Option<String>,
    /// `response_body` as listed (a string, or what a test put there).
    pub response_body: Value,
}

/// Texts a test puts on one attempt instead of the usual ones.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Texts {
    pub(super) error: Option<String>,
    pub(super) response_body: Value,
}

const HTML_502: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n\
<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.25.3</center>\r\n</body>\r\n</html>\r\n";

/// `error` and `response_body` of `e` as listed: `None` leaves the key out.
pub(super) fn texts(e: &SimEntry) -> (Option<String>, Option<Value>) {
    if let Some(t) = &e.texts {
        return (t.error.clone(), Some(t.response_body.clone()));
    }
    if e.outcome.is_some() {
        // In flight: nothing answered yet.
        return (None, None);
    }
    let pick = |n: u64| (e.seq % n) as usize;
    if e.status.eq_ignore_ascii_case("success") {
        let body = [r#"{"ok":true}"#, r#"{"received":true}"#, ""][pick(3)];
        return (None, Some(json!(body)));
    }
    let Some(code) = e.http_status else {
        // As the HTTP clients of real platforms word them. Attempts without
        // an answer that took a second or more ran into the timeout; the
        // others failed at once, before a request could be sent.
        let took = e.duration_ms.unwrap_or(0);
        let error = if took >= 1000 {
            [
                format!("timeout of {}ms exceeded", took - took % 1000),
                "Post \"https://hooks.example.com/talkover\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)".to_string(),
            ][pick(2)]
            .clone()
        } else {
            [
                "connect ECONNREFUSED 10.0.3.17:443",
                "certificate has expired",
                "getaddrinfo ENOTFOUND hooks.example.com",
                "socket hang up",
            ][pick(4)]
            .to_string()
        };
        return (Some(error), Some(Value::Null));
    };
    let body = match code {
        500 => [
            r#"{"error":"internal"}"#.to_string(),
            format!(r#"{{"error":"internal","request_id":"req_{:06}"}}"#, e.seq),
        ][pick(2)]
        .clone(),
        502 => HTML_502.to_string(),
        503 => "Service Unavailable\r\n".to_string(),
        404 => r#"{"error":"not_found","message":"No route for POST /hooks/talkover"}"#.to_string(),
        410 => r#"{"error":"gone","message":"This endpoint was removed"}"#.to_string(),
        429 => r#"{"error":"rate_limited","retry_after":30}"#.to_string(),
        _ => String::new(),
    };
    (
        Some(format!("HTTP {code} from receiver")),
        Some(json!(body)),
    )
}

impl Simulator {
    /// Appends one final failed attempt (HTTP 500) listed with `error` and
    /// `response_body` as given: hostile texts, non-string bodies.
    pub fn generate_failed(&self, target: &Target, error: Option<&str>, response_body: Value) {
        let mut st = self.lock();
        st.new_attempt(target);
        let now = st.now_ms();
        if let Some(e) = st.logs.get_mut(target).and_then(|l| l.entries.last_mut()) {
            e.outcome = None;
            e.hostile = None;
            e.status = "failed".into();
            e.http_status = Some(500);
            e.duration_ms = Some(120);
            e.delivered_ms = Some(now.max(e.created_ms));
            e.texts = Some(Texts {
                error: error.map(str::to_string),
                response_body,
            });
        }
    }

    /// Final attempts that did not succeed with `seq > since`, per webhook,
    /// newest first: what a status page of an exporter that took its
    /// baseline at `since` must list (as many as it keeps).
    pub fn failed_attempts(&self, since: u64) -> BTreeMap<Target, Vec<SimFailure>> {
        let st = self.lock();
        st.logs
            .iter()
            .map(|(t, log)| {
                let failed = log
                    .entries
                    .iter()
                    .rev()
                    .filter(|e| e.seq > since && e.outcome.is_none())
                    .filter(|e| !e.status.eq_ignore_ascii_case("success"))
                    .map(|e| {
                        let (error, body) = texts(e);
                        SimFailure {
                            id: e.id.clone(),
                            status: e.status.clone(),
                            http_status: e.http_status,
                            error,
                            response_body: body.unwrap_or(Value::Null),
                        }
                    })
                    .collect();
                (t.clone(), failed)
            })
            .collect()
    }
}

#[derive(serde::Deserialize)]
pub(super) struct FailedQuery {
    since: Option<u64>,
}

/// `GET /_sim/failed?since=N`: [`Simulator::failed_attempts`] as
/// `{"campaigns/…/webhooks/…": [{id, status, http_status, error, response_body}]}`,
/// for tests that drive the real binary.
pub(super) async fn failed(
    axum::extract::State(sim): axum::extract::State<Simulator>,
    axum::extract::Query(q): axum::extract::Query<FailedQuery>,
) -> axum::Json<Value> {
    let map: serde_json::Map<String, Value> = sim
        .failed_attempts(q.since.unwrap_or(0))
        .into_iter()
        .map(|(t, failed)| (t.to_string(), json!(failed)))
        .collect();
    axum::Json(Value::Object(map))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Order, Profile};

    #[test]
    fn failures_say_why_and_the_same_each_time() {
        let sim = Simulator::new(7, None, Order::NewestFirst);
        let t: Target = "campaigns/c/webhooks/w".parse().expect("target");
        sim.add_webhook(
            t.clone(),
            Profile {
                success_ratio: 0.3,
                pending_ratio: 0.0,
                ..Profile::default()
            },
        );
        sim.generate(&t, 200);
        let failed = sim.failed_attempts(0).remove(&t).expect("webhook");
        assert!(failed.len() > 100);
        assert_eq!(failed, sim.failed_attempts(0)[&t]);
        for f in &failed {
            let error = f.error.as_deref().expect("a failure says why");
            match f.http_status {
                Some(code) => {
                    assert_eq!(error, format!("HTTP {code} from receiver"));
                    assert!(f.response_body.is_string());
                }
                // Each says why in words a receiver's failure really has.
                None => assert_ne!(
                    talkover_count::model::classify(None, Some(error), None, None),
                    talkover_count::model::FailureClass::Other,
                    "{error}"
                ),
            }
        }
        assert!(failed.iter().any(|f| f
            .response_body
            .as_str()
            .is_some_and(|b| b.contains("<h1>502"))));
        sim.generate_failed(&t, Some("<script>"), json!({"a": [1]}));
        let newest = &sim.failed_attempts(0)[&t][0];
        assert_eq!(newest.error.as_deref(), Some("<script>"));
        assert_eq!(newest.response_body, json!({"a": [1]}));
    }
}
