//! The status pages as HTML: server-rendered, no scripts and no external
//! assets, so they work in any browser and under a strict
//! `Content-Security-Policy`. Every text that came from the API has been
//! capped and cleaned by the model; here it is escaped as it is written.

use std::fmt::Write as _;

use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::status::{FailureView, WebhookView};

/// No scripts, no remote anything: only the page's own inline styles.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Most characters of an error shown in a table cell; the page of the
/// webhook shows it whole (as kept).
const ERROR_IN_ROW: usize = 120;

/// Sized so that `/webhooks` fits a 1280 px window: each webhook's path sits
/// under its name rather than in three columns, times are short (the full
/// time is the `title`), and an error wraps within its cell.
const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}\
table{border-collapse:collapse;font-size:.9rem}th,td{border-bottom:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top}\
td{white-space:nowrap}td.wrap{white-space:normal;min-width:12rem;max-width:24rem;overflow-wrap:anywhere}\
td.hook{white-space:normal;max-width:16rem;overflow-wrap:anywhere}th{background:#f4f4f4}.num{text-align:right}.bad{color:#b00020;font-weight:600}.ok{color:#1b7f3b}\
.muted{color:#777}.path{font-size:.8rem}.class{font-size:.8rem;border:1px solid #b00020;border-radius:.3rem;padding:0 .25rem;color:#b00020}\
pre{white-space:pre-wrap;word-break:break-all;min-width:24rem;max-width:48rem;margin:0;font-size:.8rem}\
.summary td{font-size:1.4rem;padding-right:2rem}svg.spark{display:block}form{margin:1rem 0}";

/// `s` safe inside HTML text and attribute values.
pub(super) fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_into(&mut out, s);
    out
}

fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// An HTML page with the pages' security headers.
pub(super) fn html(status: axum::http::StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::VARY, "Accept"),
        ],
        body,
    )
        .into_response()
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n{body}\n\
         <p class=\"muted\">talkover-exporter {}</p></body></html>\n",
        escape_html(title),
        env!("CARGO_PKG_VERSION")
    )
}

/// What the landing page sums up.
#[derive(Debug, Default)]
pub(super) struct Summary {
    pub(super) watched: usize,
    pub(super) up: usize,
    /// Webhooks with a failed attempt in the last 15 minutes, or whose
    /// last poll failed.
    pub(super) failing: usize,
    pub(super) attempts_1h: u64,
}

/// `/`: a one-screen summary and the links.
pub(super) fn landing(summary: &Summary, telemetry_path: &str) -> String {
    let path = escape_html(telemetry_path);
    let body = format!(
        "<h1>Talkover Exporter</h1>\n<p>Prometheus exporter for Talkover webhook delivery logs.</p>\n\
         <table class=\"summary\"><tr><th>webhooks watched</th><th>up</th><th>failing now</th><th>attempts in the last hour</th></tr>\
         <tr><td id=\"watched\">{}</td><td id=\"up\">{}</td><td id=\"failing\" class=\"{}\">{}</td><td id=\"attempts\">{}</td></tr></table>\n\
         <p class=\"muted\">Failing now: a failed attempt in the last 15 minutes, or a last poll that failed.</p>\n\
         <ul>\n<li><a href=\"/webhooks\">Webhooks</a>: each one's attempts, failure ratio and last failures</li>\n\
         <li><a href=\"/webhooks?sort=failure_ratio\">Webhooks, worst first</a></li>\n\
         <li><a href=\"{path}\">Metrics</a></li>\n<li><a href=\"/-/healthy\">Health</a></li>\n\
         <li><a href=\"/-/ready\">Readiness</a></li>\n</ul>",
        summary.watched,
        summary.up,
        if summary.failing > 0 { "bad" } else { "ok" },
        summary.failing,
        summary.attempts_1h,
    );
    page("Talkover Exporter", &body)
}

/// A page that says what was wrong with the request.
pub(super) fn problem(message: &str) -> String {
    page(
        "Talkover Exporter",
        &format!(
            "<p><a href=\"/webhooks\">← all webhooks</a></p><p class=\"bad\">{}</p>",
            escape_html(message)
        ),
    )
}

/// `/webhooks`: one row per webhook.
pub(super) fn list(rows: &[WebhookView<'_>], q: &str, by_ratio: bool) -> String {
    let mut body = String::with_capacity(4096 + rows.len() * 1024);
    body.push_str("<h1>Webhooks</h1>\n<form method=\"get\" action=\"/webhooks\">");
    let _ = writeln!(
        body,
        "<label>Filter <input type=\"search\" name=\"q\" value=\"{}\" maxlength=\"256\" placeholder=\"name, id, path or log id\"></label> \
         <label>Sort <select name=\"sort\"><option value=\"\"{}>by webhook</option><option value=\"failure_ratio\"{}>worst failure ratio first</option></select></label> \
         <button type=\"submit\">Show</button></form>",
        escape_html(q),
        if by_ratio { "" } else { " selected" },
        if by_ratio { " selected" } else { "" },
    );
    let _ = writeln!(
        body,
        "<p class=\"muted\">{} webhook{}. Attempts and failures are counted by the minute they were created, over the last hour.</p>",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    );
    body.push_str(
        "<table id=\"webhooks\"><thead><tr><th>webhook</th><th>up</th>\
         <th class=\"num\">attempts 1h</th><th class=\"num\">failed 1h</th><th>last hour</th><th>last success</th>\
         <th>last failure</th><th class=\"num\">pending</th><th class=\"num\">backlog</th></tr></thead><tbody>\n",
    );
    for v in rows {
        let href = page_href(v);
        let _ = write!(
            body,
            "<tr class=\"webhook\" data-webhook=\"{id}\"><td class=\"hook\"><a href=\"{href}\">{name}</a><br><span class=\"muted path\">{scope}/{owner}/webhooks/{id}</span></td>",
            href = escape_html(&href),
            name = escape_html(v.name.as_deref().unwrap_or(v.webhook_id)),
            scope = v.scope,
            owner = escape_html(v.owner_id),
            id = escape_html(v.webhook_id),
        );
        up_cell(&mut body, v.up);
        let _ = write!(
            body,
            "<td class=\"num\">{}</td><td class=\"num\">{}</td><td>",
            v.attempts_1h,
            ratio_text(v)
        );
        sparkline(
            &mut body,
            &v.per_minute.attempts,
            &v.per_minute.failures,
            120,
            24,
        );
        body.push_str("</td><td>");
        short_time(&mut body, v.last_success.as_deref());
        body.push_str("</td><td class=\"wrap\">");
        match &v.last_failure {
            None => body.push('—'),
            Some(f) => {
                short_time(&mut body, f.time.as_deref());
                let _ = write!(
                    body,
                    " <span class=\"bad\">{}</span>",
                    f.code.map_or("no answer".to_string(), |c| c.to_string())
                );
                if let Some(class) = f.class {
                    class_badge(&mut body, class);
                }
                if let Some(e) = f.error {
                    let short: String = e.chars().take(ERROR_IN_ROW).collect();
                    let _ = write!(
                        body,
                        "<br><span class=\"error\">{}</span>",
                        escape_html(&short)
                    );
                }
            }
        }
        let _ = writeln!(
            body,
            "</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            v.pending, v.backlog
        );
    }
    body.push_str("</tbody></table>");
    page("Webhooks · Talkover Exporter", &body)
}

/// `/webhooks/{scope}/{owner}/{id}`: one webhook and its last failures.
pub(super) fn detail(v: &WebhookView<'_>, failures: &[FailureView<'_>]) -> String {
    let mut body = String::with_capacity(8192 + failures.len() * 2048);
    let title = v.name.as_deref().unwrap_or(v.webhook_id);
    let _ = write!(
        body,
        "<p><a href=\"/webhooks\">← all webhooks</a></p><h1>{}</h1>\n<table id=\"about\">\
         <tr><th>path</th><td>{}/{}/webhooks/{}</td></tr><tr><th>up</th>",
        escape_html(title),
        v.scope,
        escape_html(v.owner_id),
        escape_html(v.webhook_id)
    );
    up_cell(&mut body, v.up);
    let _ = write!(
        body,
        "</tr><tr><th>attempts, last hour</th><td id=\"attempts\">{}</td></tr>\
         <tr><th>failed, last hour</th><td id=\"failed\">{}</td></tr>\
         <tr><th>last success</th><td>{}</td></tr><tr><th>pending</th><td>{}</td></tr>\
         <tr><th>backlog</th><td>{}</td></tr>\
         <tr><th>polls (API requests)</th><td id=\"polls\">{} ({})</td></tr>\
         <tr><th>last poll took</th><td>{}</td></tr>{}</table>\n<h2>Last hour, by minute</h2>\n",
        v.attempts_1h,
        ratio_text(v),
        escape_html(v.last_success.as_deref().unwrap_or("—")),
        v.pending,
        v.backlog,
        v.polls,
        v.api_requests,
        v.last_poll_seconds
            .map_or("—".to_owned(), |s| format!("{:.0} ms", s * 1000.0)),
        settings_rows(v)
    );
    sparkline(
        &mut body,
        &v.per_minute.attempts,
        &v.per_minute.failures,
        600,
        80,
    );
    body.push_str("<p class=\"muted\">Grey: attempts per minute; red: failed attempts.</p>\n");
    let _ = writeln!(
        body,
        "<h2>Last failures</h2>\n<p class=\"muted\">{} kept, newest first (<code>--failures.keep</code>).</p>",
        failures.len()
    );
    body.push_str(
        "<table id=\"failures\"><thead><tr><th>log id</th><th>created</th><th>delivered</th><th>event</th>\
         <th class=\"num\">attempt</th><th>status</th><th class=\"num\">HTTP</th><th class=\"num\">duration</th>\
         <th>why</th><th>error</th><th>response (first 512 bytes)</th></tr></thead><tbody>\n",
    );
    for f in failures {
        let dash = |s: Option<&str>| escape_html(s.unwrap_or("—"));
        let _ = writeln!(
            body,
            "<tr class=\"failure\" id=\"attempt-{id}\"><td><code>{id}</code></td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"num\">{}</td><td>{}</td><td class=\"num bad\">{}</td><td class=\"num\">{}</td>\
             <td class=\"why\"><span class=\"class\" title=\"{}\">{}</span></td>\
             <td class=\"error wrap\">{}</td><td class=\"wrap\"><pre class=\"response\">{}</pre></td></tr>",
            dash(f.created_at),
            dash(f.delivered_at),
            dash(f.event),
            f.attempt.map_or("—".into(), |a| a.to_string()),
            dash(f.status),
            f.http_status.map_or("no answer".into(), |c| c.to_string()),
            f.duration_ms.map_or("—".into(), |d| format!("{d:.0} ms")),
            describe(f.class),
            f.class,
            dash(f.error),
            match f.response {
                Some(r) => escape_html(r),
                None => "<span class=\"muted\">not kept</span>".into(),
            },
            id = escape_html(f.id),
        );
    }
    body.push_str("</tbody></table>");
    page(&format!("{title} · Talkover Exporter"), &body)
}

/// The webhook's settings as rows of its page: what its attempts are judged by.
fn settings_rows(v: &WebhookView<'_>) -> String {
    let Some(s) = v.settings else {
        return "<tr><th>settings</th><td id=\"settings\" class=\"muted\">not known yet: judged by 3 retries and a 30 s timeout</td></tr>".into();
    };
    let or_default = |n: Option<u32>, unit: &str, default: u32| match n {
        Some(n) => format!("{n}{unit}"),
        None => format!("<span class=\"muted\">not known ({default}{unit} assumed)</span>"),
    };
    let events = if s.events.is_empty() {
        "—".to_string()
    } else {
        escape_html(&s.events.join(", "))
    };
    format!(
        "<tr><th>enabled</th><td id=\"enabled\" class=\"{}\">{}</td></tr>\
         <tr><th>max retries</th><td id=\"max-retries\">{}</td></tr>\
         <tr><th>timeout</th><td id=\"timeout\">{}</td></tr>\
         <tr><th>events</th><td class=\"wrap\">{}</td></tr>",
        if s.enabled { "ok" } else { "bad" },
        if s.enabled {
            "yes"
        } else {
            "no: deliveries are turned off"
        },
        or_default(s.max_retries, "", crate::model::DEFAULT_MAX_RETRIES),
        or_default(
            s.timeout_seconds,
            " s",
            crate::model::DEFAULT_TIMEOUT_SECONDS
        ),
        events
    )
}

/// A time as `2024-01-15 11:00:01`, its full form as the title.
fn short_time(out: &mut String, time: Option<&str>) {
    let Some(t) = time else {
        out.push('—');
        return;
    };
    let short: String = t.replace('T', " ").chars().take(19).collect();
    let _ = write!(
        out,
        "<time datetime=\"{}\" title=\"{}\">{}</time>",
        escape_html(t),
        escape_html(t),
        escape_html(&short)
    );
}

fn class_badge(out: &mut String, class: &str) {
    let _ = write!(
        out,
        " <span class=\"class\" title=\"{}\">{}</span>",
        describe(class),
        escape_html(class)
    );
}

/// A failure class's sentence for its title.
fn describe(class: &str) -> &'static str {
    crate::model::FailureClass::from_str_label(class).map_or("", |c| c.describe())
}

/// `/webhooks/{campaigns|agents}/{owner}/{id}`, its parts percent-encoded.
fn page_href(v: &WebhookView<'_>) -> String {
    format!(
        "/webhooks/{}/{}/{}",
        v.scope,
        url::form_urlencoded::byte_serialize(v.owner_id.as_bytes()).collect::<String>(),
        url::form_urlencoded::byte_serialize(v.webhook_id.as_bytes()).collect::<String>(),
    )
}

fn up_cell(out: &mut String, up: bool) {
    out.push_str(if up {
        "<td class=\"ok\">up</td>"
    } else {
        "<td class=\"bad\">down</td>"
    });
}

/// "3 (1.5 %)", or "0" without attempts.
fn ratio_text(v: &WebhookView<'_>) -> String {
    match v.failure_ratio_1h {
        Some(r) if v.failures_1h > 0 => format!(
            "<span class=\"bad\">{} ({:.1} %)</span>",
            v.failures_1h,
            r * 100.0
        ),
        _ => v.failures_1h.to_string(),
    }
}

/// Attempts (grey) and failures (red) per minute, oldest left, as an
/// inline SVG: no image requests, nothing for the CSP to allow.
fn sparkline(out: &mut String, attempts: &[u32], failures: &[u32], width: u32, height: u32) {
    let max = attempts.iter().copied().max().unwrap_or(0).max(1);
    let n = attempts.len().max(2);
    let step = f64::from(width) / (n - 1) as f64;
    let y =
        |v: u32| f64::from(height) - 1.0 - f64::from(v) / f64::from(max) * f64::from(height - 2);
    let points = |values: &[u32]| {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", i as f64 * step, y(*v)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = write!(
        out,
        "<svg class=\"spark\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" \
         data-attempts=\"{}\" data-failures=\"{}\"><title>{} attempts, {} failed, last hour</title>\
         <polyline class=\"attempts\" fill=\"none\" stroke=\"#999\" stroke-width=\"1.5\" points=\"{}\"/>\
         <polyline class=\"failures\" fill=\"none\" stroke=\"#c00\" stroke-width=\"1.5\" points=\"{}\"/></svg>",
        attempts.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
        failures.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
        attempts.iter().map(|&a| u64::from(a)).sum::<u64>(),
        failures.iter().map(|&f| u64::from(f)).sum::<u64>(),
        points(attempts),
        points(failures),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup() {
        let hostile = "<script>alert(1)</script>\"' onmouseover=x &amp;";
        let out = escape_html(hostile);
        assert!(
            !out.contains('<') && !out.contains('>') && !out.contains('"') && !out.contains('\'')
        );
        assert_eq!(
            out,
            "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39; onmouseover=x &amp;amp;"
        );
    }

    #[test]
    fn a_sparkline_draws_every_minute_within_its_box() {
        let mut out = String::new();
        let attempts: Vec<u32> = (0..60).map(|i| i % 7).collect();
        let failures: Vec<u32> = (0..60).map(|i| u32::from(i % 10 == 0)).collect();
        sparkline(&mut out, &attempts, &failures, 120, 24);
        let points = out
            .split("points=\"")
            .nth(1)
            .and_then(|p| p.split('"').next())
            .expect("points");
        let xy: Vec<(f64, f64)> = points
            .split(' ')
            .map(|p| {
                let (x, y) = p.split_once(',').expect("x,y");
                (x.parse().expect("x"), y.parse().expect("y"))
            })
            .collect();
        assert_eq!(xy.len(), 60);
        assert!(xy
            .iter()
            .all(|(x, y)| (0.0..=120.0).contains(x) && (0.0..=24.0).contains(y)));
        // The highest minute is drawn at the top.
        assert!(xy[6].1 < xy[0].1);
    }
}
