//! The HTTP side: landing page, `/metrics`, `/-/healthy` and `/-/ready`.
//! It knows the published snapshots and readiness, nothing of the API.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_core::Stream;
use tokio::sync::mpsc;

use crate::metrics::Published;
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

/// How long a scraper may leave the body unread before the scrape is cut
/// off, so a stalled client does not hold a rendering thread for good.
const SCRAPE_STALL_LIMIT: Duration = Duration::from_secs(30);

async fn metrics(State(state): State<AppState>) -> Response {
    // Rendering thousands of targets is CPU work: it runs off the async
    // workers and hands over its pieces as they are written, so sending
    // overlaps rendering and the whole body is never held at once.
    let (tx, rx) = mpsc::channel::<String>(4);
    let finished = Arc::new(AtomicBool::new(false));
    let published = state.published.clone();
    let runtime = tokio::runtime::Handle::current();
    let render = tokio::task::spawn_blocking({
        let finished = finished.clone();
        move || {
            let whole = published.render_chunks(&mut |chunk| {
                runtime.block_on(async {
                    matches!(
                        tokio::time::timeout(SCRAPE_STALL_LIMIT, tx.send(chunk)).await,
                        Ok(Ok(()))
                    )
                })
            });
            finished.store(whole, Ordering::SeqCst);
        }
    });
    tokio::spawn(async move {
        if let Err(e) = render.await {
            tracing::error!(error = %e, "rendering /metrics failed");
        }
    });
    let body = Body::from_stream(ScrapeBody {
        pieces: rx,
        finished,
        ended: false,
    });
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// The pieces of a `/metrics` body as they are rendered, then an error if
/// the render stopped short (a panic, a stalled scraper): the connection is
/// then cut mid-body, and the scraper records a failed scrape instead of
/// taking a partial body for a whole one.
struct ScrapeBody {
    pieces: mpsc::Receiver<String>,
    /// Set by the renderer, before it lets go of the channel, once every
    /// piece was handed on.
    finished: Arc<AtomicBool>,
    ended: bool,
}

impl Stream for ScrapeBody {
    type Item = Result<String, std::io::Error>;

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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt as _;

    /// One piece, then the renderer lets go, having finished or not.
    async fn body_after_render(finished: bool) -> Vec<Result<String, String>> {
        let (tx, rx) = mpsc::channel(4);
        tx.send("a 1\n".to_string()).await.expect("send");
        drop(tx);
        let body = ScrapeBody {
            pieces: rx,
            finished: Arc::new(AtomicBool::new(finished)),
            ended: false,
        };
        body.map(|r| r.map_err(|e| e.to_string())).collect().await
    }

    #[tokio::test]
    async fn a_render_cut_short_ends_the_body_with_an_error() {
        assert_eq!(body_after_render(true).await, [Ok("a 1\n".to_string())]);
        assert_eq!(
            body_after_render(false).await,
            [
                Ok("a 1\n".to_string()),
                Err("rendering /metrics stopped before the end".to_string())
            ]
        );
    }
}
