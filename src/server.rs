//! The HTTP side: landing page, `/metrics`, `/-/healthy` and `/-/ready`.
//! It knows the published snapshots and readiness, nothing of the API.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt as _;

use crate::collector::Readiness;
use crate::metrics::Published;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The snapshots `/metrics` renders.
    pub published: Arc<Published>,
    /// Whether every target finished its first poll.
    pub readiness: Arc<Readiness>,
    /// Where `/metrics` lives (`--web.telemetry-path`).
    pub telemetry_path: String,
}

/// The routes, separate from serving so tests can call them directly.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(landing))
        .route(&state.telemetry_path, get(metrics))
        .route("/-/healthy", get(healthy))
        .route("/-/ready", get(ready))
        .with_state(state)
}

async fn landing(State(state): State<AppState>) -> Html<String> {
    let path = &state.telemetry_path;
    Html(format!(
        "<!DOCTYPE html>\n<html><head><title>Talkover Exporter</title></head><body>\n\
         <h1>Talkover Exporter</h1>\n<p>Prometheus exporter for Talkover webhook delivery logs, version {}.</p>\n\
         <ul>\n<li><a href=\"{path}\">Metrics</a></li>\n<li><a href=\"/-/healthy\">Health</a></li>\n\
         <li><a href=\"/-/ready\">Readiness</a></li>\n</ul>\n</body></html>\n",
        env!("CARGO_PKG_VERSION")
    ))
}

async fn metrics(State(state): State<AppState>) -> Response {
    // Rendering thousands of targets is CPU work: it runs off the async
    // workers and hands over its pieces as they are written, so sending
    // overlaps rendering and the whole body is never held at once.
    let (tx, rx) = mpsc::channel::<String>(4);
    let published = state.published.clone();
    let render = tokio::task::spawn_blocking(move || {
        published.render_chunks(&mut |chunk| tx.blocking_send(chunk).is_ok());
    });
    tokio::spawn(async move {
        if let Err(e) = render.await {
            // The scraper gets a cut-off body, which it rejects as a failed scrape.
            tracing::error!(error = %e, "rendering /metrics failed");
        }
    });
    let body = Body::from_stream(ReceiverStream::new(rx).map(Ok::<_, Infallible>));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn healthy() -> &'static str {
    "Healthy\n"
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
