//! The HTTP side: landing page, `/metrics`, `/-/healthy`, `/-/ready`, and
//! the webhooks' status (`status`).
//! It knows the published snapshots and readiness, nothing of the API.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use flate2::write::GzEncoder;
use flate2::Compression;
use futures_core::Stream;
use std::io::Write as _;
use tokio::sync::mpsc;

use tokio::sync::Semaphore;

use super::self_metrics::{HttpMetrics, Open, Refusal};
use crate::metrics::{Exposition, Published};
use crate::model::Readiness;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The snapshots `/metrics` renders.
    pub published: Arc<Published>,
    /// Whether every target finished its first poll.
    pub readiness: Arc<Readiness>,
    /// Where `/metrics` lives (`--web.telemetry-path`).
    pub telemetry_path: String,
    /// The HTTP side's self-metrics.
    pub http: HttpMetrics,
    /// Renders allowed at once (`--web.max-requests`); `None`: no limit.
    pub scrapes: Option<Arc<Semaphore>>,
}

impl AppState {
    /// The handlers' state, with the self-metrics registered among the
    /// exporter's and at most `max_requests` renders at once (0: no limit).
    pub fn new(
        published: Arc<Published>,
        readiness: Arc<Readiness>,
        telemetry_path: String,
        max_requests: usize,
    ) -> AppState {
        let http = HttpMetrics::register(published.registry());
        AppState {
            published,
            readiness,
            telemetry_path,
            http,
            scrapes: (max_requests > 0).then(|| Arc::new(Semaphore::new(max_requests))),
        }
    }
}

/// The routes, separate from serving so tests can call them directly.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(super::status::landing))
        .route(&state.telemetry_path, get(metrics))
        .route("/-/healthy", get(healthy))
        .route("/-/ready", get(ready))
        .route("/webhooks", get(super::status::list))
        .route(
            "/webhooks/{scope}/{owner_id}/{webhook_id}",
            get(super::status::detail),
        )
        .with_state(state)
}

/// `app` with every answer counted in `talkover_exporter_http_requests_total`:
/// the outermost layer, so that answers of the guard around the routes
/// (401 for a wrong password) are counted too.
pub fn counted(app: Router, state: AppState) -> Router {
    app.layer(axum::middleware::from_fn_with_state(state, count_requests))
}

/// Counts every answer by handler (one of the routes, or `other`, so that
/// probing for random paths cannot add series) and status code.
async fn count_requests(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let handler = match request.uri().path() {
        p @ ("/" | "/-/healthy" | "/-/ready") => p,
        p if p == state.telemetry_path => "metrics",
        "/webhooks" => "webhooks",
        p if p.starts_with("/webhooks/") => "webhook",
        _ => "other",
    }
    .to_string();
    let response = next.run(request).await;
    state.http.request(&handler, response.status().as_u16());
    response
}

/// How long a scraper may leave the body unread before the scrape is cut
/// off, so a stalled client does not hold a rendering thread for good.
const SCRAPE_STALL_LIMIT: Duration = Duration::from_secs(30);

/// gzip level for `/metrics`: the fastest. Prometheus text is so repetitive
/// that level 1 already sends a few percent of the plain size, and higher
/// levels cost several times the CPU for a percent or two less (measured:
/// docs/scale.md, "Scrape formats and size").
const GZIP_LEVEL: u32 = 1;

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let permit = match &state.scrapes {
        None => None,
        Some(scrapes) => match scrapes.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                state.http.refused(Refusal::MaxRequests);
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many scrapes at once (--web.max-requests); try again\n",
                )
                    .into_response();
            }
        },
    };
    let Negotiated {
        format,
        content_type,
    } = negotiate(&headers);
    // Held by the body until it is sent or dropped.
    let in_flight = state.http.scrape_started(format, permit);
    // Rendering thousands of targets is CPU work: it runs on a thread of
    // its own, below the pollers' priority, and hands over its pieces as
    // they are written, so sending overlaps rendering and the whole body is
    // never held at once. When the scraper accepts gzip (Prometheus always
    // does), each piece is compressed on the same thread before it is
    // handed over.
    let gzip = accepts_gzip(&headers);
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let finished = Arc::new(AtomicBool::new(false));
    let published = state.published.clone();
    let runtime = tokio::runtime::Handle::current();
    let render = {
        let finished = finished.clone();
        move || {
            render_priority::lower();
            let send = |piece: Bytes| {
                runtime.block_on(async {
                    matches!(
                        tokio::time::timeout(SCRAPE_STALL_LIMIT, tx.send(piece)).await,
                        Ok(Ok(()))
                    )
                })
            };
            let whole = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if gzip {
                    render_gzip(&published, format, send)
                } else {
                    published.render_chunks(format, &mut |chunk| send(Bytes::from(chunk)))
                }
            }));
            match whole {
                Ok(whole) => finished.store(whole, Ordering::SeqCst),
                Err(_) => tracing::error!("rendering /metrics failed"),
            }
        }
    };
    // A thread per scrape, not the blocking pool: its lowered priority
    // cannot be raised again, and the pool also writes the state file.
    // `--web.max-requests` bounds how many there are.
    if let Err(e) = std::thread::Builder::new()
        .name("scrape".into())
        .spawn(render)
    {
        tracing::error!(error = %e, "no thread to render /metrics");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no thread to render the metrics; try again\n",
        )
            .into_response();
    }
    let body = Body::from_stream(ScrapeBody {
        pieces: rx,
        finished,
        ended: false,
        _in_flight: in_flight,
    });
    let mut response = (
        [
            (header::CONTENT_TYPE, content_type),
            (
                header::VARY,
                HeaderValue::from_static("Accept, Accept-Encoding"),
            ),
        ],
        body,
    )
        .into_response();
    if gzip {
        response
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
}

/// Scrapes yield to polling: a scraper, however often it asks, must not
/// slow the counting. On Linux a thread has its own nice value, and a
/// render at nice 10 gets a tenth of a polling thread's share of a busy
/// CPU, and all of an idle one.
mod render_priority {
    /// The nice value of a render thread.
    #[cfg(target_os = "linux")]
    pub(super) const NICE: i32 = 10;

    /// Lowers the calling thread's priority (Linux only: elsewhere
    /// `setpriority` would lower the whole process).
    pub(super) fn lower() {
        #[cfg(target_os = "linux")]
        if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), NICE) {
            tracing::debug!(error = %e, "render thread keeps its priority");
        }
    }
}

/// Renders the body through gzip, handing on what the encoder has written
/// after each piece; the gzip trailer is sent only when the whole body was
/// rendered, so a scrape cut short never looks complete.
fn render_gzip(
    published: &Published,
    format: Exposition,
    mut send: impl FnMut(Bytes) -> bool,
) -> bool {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::new(GZIP_LEVEL));
    let mut failed = false;
    let whole = published.render_chunks(format, &mut |chunk| {
        if encoder.write_all(&chunk).is_err() {
            failed = true;
            return false;
        }
        let out = std::mem::take(encoder.get_mut());
        out.is_empty() || send(Bytes::from(out))
    });
    if !whole || failed {
        return false;
    }
    match encoder.finish() {
        Ok(rest) => rest.is_empty() || send(Bytes::from(rest)),
        Err(_) => false,
    }
}

/// What a scrape is answered with: the format to render and the
/// `Content-Type` that names it, with the version and escaping asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Negotiated {
    format: Exposition,
    content_type: HeaderValue,
}

/// How the scraper asked UTF-8 names to be escaped (Prometheus 3 sends
/// `escaping=` with the 1.0.0 text formats). Every name and label name we
/// serve is a legacy one, unchanged by these schemes, so only the
/// `Content-Type` says which was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escaping {
    AllowUtf8,
    Underscores,
    Values,
}

impl Escaping {
    /// The scheme named by `value`; `None` for `dots`, which doubles every
    /// underscore of a legacy name too: a range asking for it is passed
    /// over for the next the scraper lists (Prometheus always lists the
    /// unescaped 0.0.x formats after it). An unknown value is read as
    /// `underscores`, the legacy default, as client_golang reads it.
    fn parse(value: &str) -> Option<Escaping> {
        match value.to_ascii_lowercase().as_str() {
            "allow-utf-8" => Some(Escaping::AllowUtf8),
            "values" => Some(Escaping::Values),
            "dots" => None,
            _ => Some(Escaping::Underscores),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Escaping::AllowUtf8 => "allow-utf-8",
            Escaping::Underscores => "underscores",
            Escaping::Values => "values",
        }
    }
}

impl Negotiated {
    fn plain() -> Negotiated {
        Negotiated {
            format: Exposition::Text,
            content_type: HeaderValue::from_static(Exposition::Text.content_type()),
        }
    }
}

/// The format the scraper prefers among those served: the media range
/// with the highest `q` that names one (protobuf, then OpenMetrics, on a
/// tie: a scraper that lists them reads exemplars or created timestamps),
/// the text format 0.0.4 when none does. Nothing the header says is an
/// error: what cannot be read is passed over.
fn negotiate(headers: &HeaderMap) -> Negotiated {
    let rank = |e: Exposition| match e {
        Exposition::Text => 0,
        Exposition::OpenMetrics => 1,
        Exposition::Protobuf => 2,
    };
    let mut best = (0.0f32, Negotiated::plain());
    for range in headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        let mut q = 1.0f32;
        let mut proto = None;
        let mut encoding = None;
        let mut version = None;
        let mut escaping = None;
        for p in parts {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let v = v.trim().trim_matches('"');
            match k.trim().to_ascii_lowercase().as_str() {
                "q" => {
                    q = v
                        .parse()
                        .ok()
                        .filter(|q: &f32| q.is_finite())
                        .unwrap_or(0.0)
                }
                "proto" => proto = Some(v),
                "encoding" => encoding = Some(v),
                "version" => version = Some(v),
                "escaping" => escaping = Some(v),
                _ => {}
            }
        }
        let escaping = match escaping.map(Escaping::parse) {
            Some(None) => continue,
            Some(Some(e)) => Some(e),
            None => None,
        };
        let with_escaping = |base: String| match escaping {
            Some(e) => format!("{base}; escaping={}", e.as_str()),
            None => base,
        };
        let (format, content_type) = if media
            .eq_ignore_ascii_case("application/vnd.google.protobuf")
        {
            if proto == Some("io.prometheus.client.MetricFamily") && encoding == Some("delimited") {
                (
                    Exposition::Protobuf,
                    with_escaping(Exposition::Protobuf.content_type().into()),
                )
            } else {
                continue;
            }
        } else if media.eq_ignore_ascii_case("application/openmetrics-text") {
            // The two versions' bodies are the same for what we serve.
            let version = match version {
                None | Some("1.0.0") => "1.0.0",
                Some("0.0.1") => "0.0.1",
                Some(_) => continue,
            };
            (
                Exposition::OpenMetrics,
                with_escaping(format!(
                    "application/openmetrics-text; version={version}; charset=utf-8"
                )),
            )
        } else if media.eq_ignore_ascii_case("text/plain") && version == Some("1.0.0") {
            // 1.0.0 adds quoted UTF-8 names to 0.0.4, which we never need.
            (
                Exposition::Text,
                with_escaping("text/plain; version=1.0.0; charset=utf-8".into()),
            )
        } else {
            (Exposition::Text, Exposition::Text.content_type().into())
        };
        // Built from our own pieces only: always a valid header value.
        let Ok(content_type) = HeaderValue::from_str(&content_type) else {
            continue;
        };
        if q > 0.0 && (q > best.0 || (q == best.0 && rank(format) > rank(best.1.format))) {
            best = (
                q,
                Negotiated {
                    format,
                    content_type,
                },
            );
        }
    }
    best.1
}

/// Whether `Accept-Encoding` allows gzip (listed, and not with `q=0`).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    listed(headers, header::ACCEPT_ENCODING, |coding| {
        coding.eq_ignore_ascii_case("gzip") || coding == "*"
    })
}

/// Whether header `name` lists a value that `wanted` picks, and not with
/// `q=0` (`Accept`, `Accept-Encoding`: comma-separated, `;`-parameters).
pub(super) fn listed(
    headers: &HeaderMap,
    name: header::HeaderName,
    wanted: impl Fn(&str) -> bool,
) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let value = parts.next().unwrap_or("");
            let q_zero = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            wanted(value) && !q_zero
        })
}

/// The pieces of a `/metrics` body as they are rendered, then an error if
/// the render stopped short (a panic, a stalled scraper): the connection is
/// then cut mid-body, and the scraper records a failed scrape instead of
/// taking a partial body for a whole one.
struct ScrapeBody {
    pieces: mpsc::Receiver<Bytes>,
    /// Set by the renderer, before it lets go of the channel, once every
    /// piece was handed on.
    finished: Arc<AtomicBool>,
    ended: bool,
    /// Counts this scrape in flight (and holds its `--web.max-requests`
    /// permit) until the body is sent or the scraper goes away.
    _in_flight: Open,
}

impl Stream for ScrapeBody {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.pieces.poll_recv(cx) {
            Poll::Ready(Some(piece)) => Poll::Ready(Some(Ok(piece))),
            Poll::Ready(None) => {
                self.ended = true;
                if self.finished.load(Ordering::SeqCst) {
                    Poll::Ready(None)
                } else {
                    Poll::Ready(Some(Err(std::io::Error::other(
                        "rendering /metrics stopped before the end",
                    ))))
                }
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// 200 while every part runs; 503 once one stopped and the process is
/// on its way out (so a liveness probe and a restart agree).
async fn healthy(State(state): State<AppState>) -> (StatusCode, String) {
    match state.readiness.failed() {
        None => (StatusCode::OK, "Healthy\n".into()),
        Some(part) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("Unhealthy: the {part} stopped; the exporter is exiting\n"),
        ),
    }
}

async fn ready(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.readiness.is_ready() {
        (StatusCode::OK, "Ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "Not ready: waiting for the first poll of every target\n",
        )
    }
}

#[cfg(test)]
mod tests;
