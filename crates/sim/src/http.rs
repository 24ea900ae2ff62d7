//! The simulated API over HTTP: the delivery-log and listing endpoints, the
//! `/_sim/` control endpoints, and a server that can refuse connections.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::traffic::{entry_json, SimState, WebhookLog};
use super::{AttemptSpec, Fault, FaultRule, Order, Outage, Simulator};
use talkover_count::target::{Scope, Target};

impl Simulator {
    /// Serves the API on `listener` until the task is dropped. During an
    /// [`Outage::Refused`] new connections are closed at once and open ones
    /// are dropped.
    pub async fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        use hyper_util::service::TowerToHyperService;
        let app = TowerToHyperService::new(self.clone().router());
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                // Out of descriptors or a reset before accept: go on.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            if *self.refusing.borrow() {
                drop(stream);
                continue;
            }
            // As axum::serve did, and as any HTTP server should: small
            // responses are not held back waiting for an ACK.
            let _ = stream.set_nodelay(true);
            let app = app.clone();
            let mut refusing = self.refusing.subscribe();
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection(TokioIo::new(stream), app);
                tokio::select! {
                    _ = conn => {}
                    _ = refusing.wait_for(|r| *r) => {}
                }
            });
        }
    }

    /// Runs [`Simulator::tick`] every 200 ms, for the demo.
    pub async fn drive(self) {
        let step = Duration::from_millis(200);
        let mut ticker = tokio::time::interval(step);
        loop {
            ticker.tick().await;
            self.tick(step);
        }
    }

    /// The HTTP routes.
    pub fn router(self) -> Router {
        Router::new()
            .route(
                "/api/v1/{scope}/{owner}/webhooks/{webhook}/logs",
                get(list_logs),
            )
            .route("/api/v1/{scope}", get(list_owners))
            .route("/api/v1/{scope}/{owner}/webhooks", get(list_webhooks))
            .route(
                "/api/v1/{scope}/{owner}/webhooks/{webhook}",
                get(webhook_object),
            )
            .route("/_sim/append", post(append))
            .route("/_sim/pause", post(pause))
            .route("/_sim/resume", post(resume))
            .route("/_sim/finish-pending", post(finish_pending))
            .route("/_sim/truth", get(truth))
            .route("/_sim/failed", get(super::failures::failed))
            .route("/_sim/fault", post(fault))
            .route("/_sim/success-ratio", post(success_ratio))
            .route("/_sim/outage", post(set_outage))
            .route("/_sim/fault-ratio", post(fault_ratio))
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                api_clock_and_outage,
            ))
            .with_state(self)
    }
}

#[derive(Deserialize)]
struct PageQuery {
    page: Option<String>,
    per_page: Option<String>,
}

fn error(status: StatusCode, message: &str, code: &str) -> Response {
    (
        status,
        Json(json!({"success": false, "message": message, "code": code})),
    )
        .into_response()
}

/// Every answer carries a `Date` on the API's clock; during an
/// [`Outage::Unavailable`] the API endpoints answer 503 (the control
/// endpoints stay up, so a test can end the outage).
async fn api_clock_and_outage(
    State(sim): State<Simulator>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (outage, offset_ms, last_ms) = {
        let st = sim.lock();
        (st.outage, st.clock_offset_ms, st.last_ms)
    };
    if request.uri().path().starts_with("/api/") {
        sim.lock().api_requests += 1;
    }
    let mut response = if outage.is_some() && request.uri().path().starts_with("/api/") {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service unavailable",
            "UNAVAILABLE",
        )
    } else {
        next.run(request).await
    };
    // The API's clock is what stamps `created_at`: when a burst has been
    // stamped ahead of the wall clock (entries get distinct, increasing
    // times, a millisecond apart), the `Date` header is as far ahead, as a
    // real API's would be, since its entries never come from its future.
    let api_now_ms = (talkover_count::clock::unix_now_ms() + offset_ms).max(last_ms);
    let api_now =
        std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(api_now_ms).unwrap_or(0));
    if let Ok(date) = header::HeaderValue::from_str(&httpdate::fmt_http_date(api_now)) {
        response.headers_mut().insert(header::DATE, date);
    }
    response
}

async fn list_logs(
    State(sim): State<Simulator>,
    Path((scope, owner, webhook)): Path<(String, String, String)>,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    let _in_flight = sim.in_flight.enter();
    let Ok(target) = format!("{scope}/{owner}/webhooks/{webhook}").parse::<Target>() else {
        return error(StatusCode::NOT_FOUND, "not found", "NOT_FOUND");
    };
    let (fault, body) = {
        let mut st = sim.lock();
        if !st.authorized(&headers) {
            return unauthorized();
        }
        let Some(log) = st.logs.get_mut(&target) else {
            return error(StatusCode::NOT_FOUND, "Webhook not found", "NOT_FOUND");
        };
        log.requests += 1;
        let fault = st.take_fault(&target);
        let (page, per_page) = match q.validated() {
            Ok(p) => p,
            Err(message) => return error(StatusCode::UNPROCESSABLE_ENTITY, message, "VALIDATION"),
        };
        let order = st.order;
        let Some(log) = st.logs.get(&target) else {
            return error(StatusCode::NOT_FOUND, "Webhook not found", "NOT_FOUND");
        };
        let total = log.entries.len();
        let start = (page - 1).saturating_mul(per_page).min(total);
        let end = (start + per_page).min(total);
        let payload = log.profile.payload_bytes;
        let data: Vec<Value> = match order {
            Order::NewestFirst => log
                .entries
                .iter()
                .rev()
                .skip(start)
                .take(end - start)
                .map(|e| entry_json(e, &target, payload))
                .collect(),
            Order::OldestFirst => log.entries[start..end]
                .iter()
                .map(|e| entry_json(e, &target, payload))
                .collect(),
        };
        let mut pagination = json!({"current_page": page, "per_page": per_page, "total": total});
        if target.scope == Scope::Agent {
            pagination["last_page"] = json!(total.div_ceil(per_page).max(1));
        }
        let body = json!({"success": true, "data": data, "pagination": pagination});
        (fault, body.to_string())
    };
    match fault {
        None => json_response(body),
        Some(Fault::Status { status }) => error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "Simulated failure",
            "SIMULATED",
        ),
        Some(Fault::RateLimit { retry_after }) => {
            let mut resp = error(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests",
                "RATE_LIMITED",
            );
            if let Some(v) = retry_after.and_then(|v| v.parse().ok()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            resp
        }
        Some(Fault::Html) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
        )
            .into_response(),
        Some(Fault::Truncated) => json_response(body[..body.len() / 2].to_string()),
        Some(Fault::SuccessFalse) => (
            StatusCode::OK,
            Json(json!({"success": false, "message": "Internal error", "code": "INTERNAL"})),
        )
            .into_response(),
        Some(Fault::Delay { ms }) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            json_response(body)
        }
        Some(Fault::Redirect { location }) => {
            (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
        }
        Some(Fault::Reset) => {
            let half = body.as_bytes()[..body.len() / 2].to_vec();
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
                Ok(half),
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "simulated reset",
                )),
            ];
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from_stream(futures_stream(chunks)))
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
    }
}

fn futures_stream(
    chunks: Vec<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    tokio_stream::iter(chunks)
}

fn json_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

impl SimState {
    fn take_fault(&mut self, target: &Target) -> Option<Fault> {
        let name = target.to_string();
        let queued = self
            .faults
            .iter()
            .position(|r| r.target.as_ref().is_none_or(|t| *t == name));
        let fault = match queued {
            Some(i) => {
                let rule = &mut self.faults[i];
                let fault = rule.fault.clone();
                rule.count = rule.count.saturating_sub(1);
                if rule.count == 0 {
                    self.faults.remove(i);
                }
                fault
            }
            None => {
                // A steady share of faults, drawn at random.
                let (ratio, kinds) = &self.fault_ratio;
                if kinds.is_empty() || self.rng.f64() >= *ratio {
                    return None;
                }
                kinds[self.rng.usize(..kinds.len())].clone()
            }
        };
        let kind = serde_json::to_value(&fault)
            .ok()
            .and_then(|v| v["kind"].as_str().map(str::to_string))
            .unwrap_or_default();
        *self.fault_log.entry(kind).or_default() += 1;
        Some(fault)
    }
}

fn scope_of(segment: &str) -> Option<Scope> {
    match segment {
        "campaigns" => Some(Scope::Campaign),
        "agents" => Some(Scope::Agent),
        _ => None,
    }
}

impl PageQuery {
    /// `page` (1-based) and `per_page` (1–100), or the API's 422 message.
    fn validated(&self) -> Result<(usize, usize), &'static str> {
        let page = match self.page.as_deref().map(str::parse).unwrap_or(Ok(1)) {
            Ok(p) if p >= 1 => p,
            _ => return Err("page must be >= 1"),
        };
        let per_page = match self.per_page.as_deref().map(str::parse).unwrap_or(Ok(25)) {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => return Err("per_page must be between 1 and 100"),
        };
        Ok((page, per_page))
    }
}

fn unauthorized() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "Invalid or missing token",
        "UNAUTHORIZED",
    )
}

/// Serves one page of `items` in the API's envelope.
fn paged(items: Vec<Value>, q: &PageQuery) -> Response {
    let (page, per_page) = match q.validated() {
        Ok(p) => p,
        Err(message) => return error(StatusCode::UNPROCESSABLE_ENTITY, message, "VALIDATION"),
    };
    let total = items.len();
    let data: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let body = json!({
        "success": true,
        "data": data,
        "pagination": {"current_page": page, "per_page": per_page, "total": total, "last_page": total.div_ceil(per_page).max(1)},
    });
    json_response(body.to_string())
}

impl SimState {
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        given == Some(format!("Bearer {token}").as_str())
    }
}

impl SimState {
    /// What every listing endpoint checks first: the token and the scope; counts the request.
    fn listing(&mut self, headers: &HeaderMap, scope: &str) -> Result<Scope, Box<Response>> {
        if !self.authorized(headers) {
            return Err(Box::new(unauthorized()));
        }
        let scope = scope_of(scope)
            .ok_or_else(|| Box::new(error(StatusCode::NOT_FOUND, "not found", "NOT_FOUND")))?;
        self.listing_requests += 1;
        Ok(scope)
    }
}

/// `GET /api/v1/campaigns` and `GET /api/v1/agents`.
async fn list_owners(
    State(sim): State<Simulator>,
    Path(scope): Path<String>,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    let mut st = sim.lock();
    let scope = match st.listing(&headers, &scope) {
        Ok(scope) => scope,
        Err(resp) => return *resp,
    };
    let mut owners: Vec<&str> = st
        .logs
        .keys()
        .filter(|t| t.scope == scope)
        .map(|t| t.owner_id.as_str())
        .collect();
    owners.dedup();
    let items = owners
        .into_iter()
        .map(
            |id| json!({"id": id, "name": format!("{} {id}", scope.segment()), "status": "active"}),
        )
        .collect();
    paged(items, &q)
}

/// `GET /api/v1/{campaigns|agents}/{id}/webhooks`.
async fn list_webhooks(
    State(sim): State<Simulator>,
    Path((scope, owner)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    let mut st = sim.lock();
    let scope = match st.listing(&headers, &scope) {
        Ok(scope) => scope,
        Err(resp) => return *resp,
    };
    let items: Vec<Value> = st
        .logs
        .iter()
        .filter(|(t, _)| t.scope == scope && t.owner_id == owner)
        .map(|(t, log)| webhook_json(t, log))
        .collect();
    if items.is_empty()
        && !st
            .logs
            .keys()
            .any(|t| t.scope == scope && t.owner_id == owner)
    {
        return error(StatusCode::NOT_FOUND, "not found", "NOT_FOUND");
    }
    paged(items, &q)
}

/// A webhook as the listings and its own object show it, with the
/// settings its profile gives.
fn webhook_json(t: &Target, log: &WebhookLog) -> Value {
    let owner_key = match t.scope {
        Scope::Campaign => "campaign_id",
        Scope::Agent => "agent_id",
    };
    json!({
        "id": t.webhook_id,
        owner_key: t.owner_id,
        "name": log.name,
        "webhook_url": format!("https://example.invalid/{}", t.webhook_id),
        "events": log.profile.events,
        "enabled": !log.disabled,
        "timeout": log.profile.timeout_seconds,
        "max_retries": log.profile.max_retries,
        "include_call_events": false,
        "created_at": "2024-01-15T11:00:00Z",
    })
}

/// `GET /api/v1/{campaigns|agents}/{id}/webhooks/{id}`: one webhook's object.
async fn webhook_object(
    State(sim): State<Simulator>,
    Path((scope, owner, webhook)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut st = sim.lock();
    if !st.authorized(&headers) {
        return unauthorized();
    }
    st.settings_requests += 1;
    let Ok(target) = format!("{scope}/{owner}/webhooks/{webhook}").parse::<Target>() else {
        return error(StatusCode::NOT_FOUND, "not found", "NOT_FOUND");
    };
    let Some(log) = st.logs.get(&target) else {
        return error(StatusCode::NOT_FOUND, "Webhook not found", "NOT_FOUND");
    };
    if let Some(status) = log.settings_refused {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
        return error(status, "Access denied", "FORBIDDEN");
    }
    json_response(json!({"success": true, "data": webhook_json(&target, log)}).to_string())
}

#[derive(Deserialize)]
struct AppendRequest {
    target: String,
    attempts: Vec<AttemptSpec>,
}

/// `POST /_sim/append {"target": "campaigns/…/webhooks/…", "attempts": [AttemptSpec…]}`:
/// [`Simulator::append`], for tests that drive the real binary.
async fn append(State(sim): State<Simulator>, Json(req): Json<AppendRequest>) -> StatusCode {
    let Ok(target) = req.target.parse::<Target>() else {
        return StatusCode::UNPROCESSABLE_ENTITY;
    };
    sim.append(&target, &req.attempts);
    StatusCode::NO_CONTENT
}

async fn pause(State(sim): State<Simulator>) -> StatusCode {
    sim.set_paused(true);
    StatusCode::NO_CONTENT
}

async fn resume(State(sim): State<Simulator>) -> StatusCode {
    sim.set_paused(false);
    StatusCode::NO_CONTENT
}

async fn finish_pending(State(sim): State<Simulator>) -> StatusCode {
    sim.finish_pending();
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct TruthQuery {
    since: Option<u64>,
}

/// Ground truth as JSON: `{"campaigns/…/webhooks/…": [{event,status,code,count}]}`.
async fn truth(State(sim): State<Simulator>, Query(q): Query<TruthQuery>) -> Json<Value> {
    let truth = sim.truth(q.since.unwrap_or(0));
    let map: serde_json::Map<String, Value> = truth
        .into_iter()
        .map(|(t, counts)| {
            let rows: Vec<Value> = counts
                .into_iter()
                .map(|((event, status, code), n)| json!({"event": event, "status": status, "code": code, "count": n}))
                .collect();
            (t.to_string(), Value::Array(rows))
        })
        .collect();
    Json(Value::Object(map))
}

#[derive(Deserialize)]
struct SuccessRatio {
    target: String,
    success_ratio: f64,
}

/// `POST /_sim/success-ratio {"target": "campaigns/…/webhooks/…", "success_ratio": 0.0}`:
/// makes a webhook's attempts succeed that often from now on (0 = every attempt fails).
async fn success_ratio(State(sim): State<Simulator>, Json(req): Json<SuccessRatio>) -> StatusCode {
    let Ok(target) = req.target.parse::<Target>() else {
        return StatusCode::UNPROCESSABLE_ENTITY;
    };
    let mut st = sim.lock();
    match st.logs.get_mut(&target) {
        Some(log) => {
            log.profile.success_ratio = req.success_ratio.clamp(0.0, 1.0);
            StatusCode::NO_CONTENT
        }
        None => StatusCode::NOT_FOUND,
    }
}

#[derive(Deserialize)]
struct OutageRequest {
    outage: Option<Outage>,
}

async fn set_outage(State(sim): State<Simulator>, Json(req): Json<OutageRequest>) -> StatusCode {
    sim.set_outage(req.outage);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct FaultRatio {
    ratio: f64,
    faults: Vec<Fault>,
}

/// `POST /_sim/fault-ratio {"ratio": 0.15, "faults": [Fault…]}`:
/// [`Simulator::set_fault_ratio`].
async fn fault_ratio(State(sim): State<Simulator>, Json(req): Json<FaultRatio>) -> StatusCode {
    sim.set_fault_ratio(req.ratio, req.faults);
    StatusCode::NO_CONTENT
}

async fn fault(State(sim): State<Simulator>, Json(rule): Json<FaultRule>) -> StatusCode {
    sim.inject(rule);
    StatusCode::NO_CONTENT
}
