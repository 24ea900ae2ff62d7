//! The simulated logs: how attempts are made (events, outcomes, retries,
//! hostile fields), how pending ones finish, and how entries are listed.

use std::collections::{BTreeMap, VecDeque};

use serde_json::{json, Value};

use super::failures::{texts, Texts};
use super::{AttemptSpec, FaultRule, Order, Outage, Profile};
use talkover_count::target::Target;

/// One log entry as the simulator keeps it.
#[derive(Debug, Clone)]
pub(super) struct SimEntry {
    pub(super) id: String,
    pub(super) seq: u64,
    pub(super) event: String,
    pub(super) attempt: u32,
    pub(super) status: String,
    pub(super) http_status: Option<u16>,
    pub(super) duration_ms: Option<i64>,
    pub(super) created_ms: i64,
    pub(super) delivered_ms: Option<i64>,
    /// While pending: what it becomes.
    pub(super) outcome: Option<Outcome>,
    pub(super) hostile: Option<Hostility>,
    /// Padding for this entry alone, beyond the profile's.
    pub(super) extra_payload: usize,
    /// `error` and `response_body` a test chose, instead of the usual ones.
    pub(super) texts: Option<Texts>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Outcome {
    pub(super) success: bool,
    pub(super) http_status: Option<u16>,
    pub(super) duration_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Hostility {
    NullFields,
    NegativeDuration,
    BadTimestamp,
    UnknownStatus,
    StringTypes,
}

#[derive(Debug, Default)]
pub(super) struct WebhookLog {
    pub(super) profile: Profile,
    /// In creation order (oldest first).
    pub(super) entries: Vec<SimEntry>,
    /// Deliveries that failed and will be retried: (event, next attempt).
    pub(super) retries: VecDeque<(String, u32)>,
    /// Fractional attempts carried between ticks.
    pub(super) carry: f64,
    pub(super) requests: u64,
    /// Shown by the webhook listing endpoints.
    pub(super) name: String,
    /// A disabled webhook is listed with `enabled: false`.
    pub(super) disabled: bool,
    /// Its object answers this status instead of its settings.
    pub(super) settings_refused: Option<u16>,
}

#[derive(Debug)]
pub(super) struct SimState {
    pub(super) token: Option<String>,
    pub(super) order: Order,
    pub(super) logs: BTreeMap<Target, WebhookLog>,
    pub(super) faults: VecDeque<FaultRule>,
    pub(super) rng: fastrand::Rng,
    pub(super) seq: u64,
    pub(super) last_ms: i64,
    pub(super) paused: bool,
    pub(super) fault_log: BTreeMap<String, u64>,
    pub(super) listing_requests: u64,
    pub(super) settings_requests: u64,
    /// Requests to any `/api/` path, outages included.
    pub(super) api_requests: u64,
    /// A share of log requests (0 to 1) answered with one of these faults,
    /// drawn at random, when no queued fault applies.
    pub(super) fault_ratio: (f64, Vec<super::Fault>),
    pub(super) outage: Option<Outage>,
    /// How far this API's clock is ahead of the host's: `created_at`,
    /// `delivered_at` and the `Date` header are all written on it.
    pub(super) clock_offset_ms: i64,
}

impl SimEntry {
    /// The `status` and `code` labels the exporter must give it.
    pub(super) fn labels(&self) -> (String, String) {
        let code = self
            .http_status
            .map_or("none".to_string(), |c| c.to_string());
        (self.status.clone(), code)
    }
}

pub(super) fn finish(e: &mut SimEntry, now: i64) {
    if let Some(o) = e.outcome.take() {
        e.status = if o.success { "success" } else { "failed" }.to_string();
        e.http_status = o.http_status;
        e.duration_ms = Some(o.duration_ms);
        e.delivered_ms = o.http_status.map(|_| now.max(e.created_ms + o.duration_ms));
    }
}

impl SimState {
    /// Appends one scripted final attempt now.
    pub(super) fn append(&mut self, target: &Target, spec: &AttemptSpec) {
        let now = self.now_ms();
        self.seq += 1;
        let seq = self.seq;
        let tag = self.rng.u16(..);
        let Some(log) = self.logs.get_mut(target) else {
            return;
        };
        let event = spec
            .event
            .clone()
            .or_else(|| log.profile.events.first().cloned())
            .unwrap_or_else(|| "campaign.started".into());
        let mut entry = SimEntry {
            id: format!("log-{seq:08}-{tag:04x}"),
            seq,
            event,
            attempt: spec.attempt,
            status: "pending".into(),
            http_status: None,
            duration_ms: None,
            created_ms: now,
            delivered_ms: None,
            outcome: Some(Outcome {
                success: spec.success,
                http_status: spec.http_status,
                duration_ms: spec.duration_ms,
            }),
            hostile: None,
            extra_payload: 0,
            texts: None,
        };
        finish(&mut entry, now);
        if let Some(error) = &spec.error {
            let (_, body) = texts(&entry);
            entry.texts = Some(Texts {
                error: Some(error.clone()),
                response_body: body.unwrap_or(Value::Null),
            });
        }
        log.entries.push(entry);
    }

    /// Strictly increasing wall-clock milliseconds, so listings have a total order.
    pub(super) fn now_ms(&mut self) -> i64 {
        let now =
            (talkover_count::clock::unix_now_ms() + self.clock_offset_ms).max(self.last_ms + 1);
        self.last_ms = now;
        now
    }

    pub(super) fn new_attempt(&mut self, target: &Target) {
        let now = self.now_ms();
        self.seq += 1;
        let seq = self.seq;
        let rng = &mut self.rng;
        let Some(log) = self.logs.get_mut(target) else {
            return;
        };
        let p = log.profile.clone();
        let (event, attempt) = match log.retries.pop_front() {
            Some(r) if rng.f64() < 0.5 => r,
            other => {
                if let Some(r) = other {
                    log.retries.push_front(r);
                }
                let event = p
                    .events
                    .get(rng.usize(..p.events.len().max(1)))
                    .cloned()
                    .unwrap_or_else(|| "campaign.started".into());
                (event, 1)
            }
        };
        let success = rng.f64() < p.success_ratio;
        let timeout_ms = i64::from(p.timeout_seconds) * 1000;
        let outcome = if success {
            let (from, to) = p.success_ms;
            Outcome {
                success,
                http_status: Some([200, 200, 200, 201, 204][rng.usize(..5)]),
                duration_ms: from + rng.i64(0..(to - from).max(1)),
            }
        } else {
            match rng.u32(..10) {
                0..=1 => Outcome {
                    success,
                    http_status: None,
                    duration_ms: timeout_ms + rng.i64(0..50),
                },
                2 => Outcome {
                    success,
                    http_status: None,
                    duration_ms: rng.i64(0..20),
                },
                n => Outcome {
                    success,
                    http_status: Some([500, 502, 503, 404, 410, 500, 429][(n - 3) as usize]),
                    duration_ms: 100 + rng.i64(0..8000.min(timeout_ms)),
                },
            }
        };
        if !success && attempt <= p.max_retries {
            log.retries.push_back((event.clone(), attempt + 1));
        }
        let hostile = (rng.f64() < p.hostile_ratio).then(|| {
            [
                Hostility::NullFields,
                Hostility::NegativeDuration,
                Hostility::BadTimestamp,
                Hostility::UnknownStatus,
                Hostility::StringTypes,
            ][rng.usize(..5)]
        });
        let mut entry = SimEntry {
            id: format!("log-{seq:08}-{:04x}", rng.u16(..)),
            seq,
            event,
            attempt,
            status: "pending".into(),
            http_status: None,
            duration_ms: None,
            created_ms: now,
            delivered_ms: None,
            outcome: Some(outcome),
            hostile,
            extra_payload: 0,
            texts: None,
        };
        if hostile == Some(Hostility::UnknownStatus) {
            entry.outcome = None;
            entry.status = "bounced".into();
            entry.http_status = outcome.http_status;
            entry.duration_ms = Some(outcome.duration_ms);
        } else if rng.f64() >= p.pending_ratio {
            finish(&mut entry, now);
        }
        log.entries.push(entry);
    }
}

pub(super) fn entry_json(e: &SimEntry, target: &Target, payload_bytes: usize) -> Value {
    let ts = |ms: i64| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
    };
    let mut v = json!({
        "id": e.id,
        "webhook_id": target.webhook_id,
        "event": e.event,
        "attempt": e.attempt,
        "status": e.status,
        "http_status": e.http_status,
        "duration_ms": e.duration_ms,
        "created_at": ts(e.created_ms),
        "request_payload": {"event": e.event, "padding": "x".repeat(payload_bytes + e.extra_payload)},
        "response_headers": {"content-type": "application/json"},
    });
    if let Some(d) = e.delivered_ms {
        v["delivered_at"] = json!(ts(d));
    }
    let (error, body) = texts(e);
    if let Some(error) = error {
        v["error"] = json!(error);
    }
    if let Some(body) = body {
        v["response_body"] = body;
    }
    match e.hostile {
        Some(Hostility::NullFields) => {
            v["duration_ms"] = Value::Null;
            v["delivered_at"] = Value::Null;
            v["attempt"] = Value::Null;
        }
        Some(Hostility::NegativeDuration) => v["duration_ms"] = json!(-250),
        Some(Hostility::BadTimestamp) => v["delivered_at"] = json!("not a time"),
        Some(Hostility::StringTypes) => {
            v["attempt"] = json!(e.attempt.to_string());
            v["duration_ms"] = json!(e.duration_ms.map(|d| d.to_string()));
        }
        Some(Hostility::UnknownStatus) | None => {}
    }
    v
}
