//! The per-webhook families, written once for every exposition format:
//! their names, types and help, and which values of a snapshot each shows.

use std::sync::Arc;

use crate::model::{
    Exemplar, Histogram, TargetSnapshot, ATTEMPT_BUCKETS, DURATION_BUCKETS, LAG_BUCKETS, RESULTS,
};

/// A family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Counter,
    Gauge,
    Histogram,
    /// Always 1, labels that describe: a gauge outside OpenMetrics.
    Info,
}

impl Kind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge | Kind::Info => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Which classic bucket bounds a histogram has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Bounds {
    Duration,
    Attempt,
    Lag,
}

impl Bounds {
    pub(super) const ALL: [Bounds; 3] = [Bounds::Duration, Bounds::Attempt, Bounds::Lag];

    /// Its place in [`Bounds::ALL`].
    pub(super) fn index(self) -> usize {
        self as usize
    }

    pub(super) fn values(self) -> &'static [f64] {
        match self {
            Bounds::Duration => DURATION_BUCKETS,
            Bounds::Attempt => ATTEMPT_BUCKETS,
            Bounds::Lag => LAG_BUCKETS,
        }
    }
}

/// Label pairs beyond a target's own three.
pub(super) type Extra<'a> = &'a [(&'a str, &'a str)];

/// An exposition format being written, family by family and, within a
/// family, target by target.
pub(super) trait Format {
    /// Starts a family.
    fn family(&mut self, name: &'static str, kind: Kind, help: &'static str);
    /// The series that follow belong to `snaps[i]`.
    fn target(&mut self, i: usize);
    fn value(&mut self, extra: Extra<'_>, v: u64);
    fn float(&mut self, extra: Extra<'_>, v: f64);
    fn histogram(&mut self, extra: Extra<'_>, bounds: Bounds, h: &Histogram);
    /// A counter sample and the attempt behind it, for formats that show
    /// exemplars.
    fn value_with_exemplar(&mut self, extra: Extra<'_>, v: u64, exemplar: Option<&Exemplar>) {
        let _ = exemplar;
        self.value(extra, v);
    }
    /// A counter sample with when its series began (this host's clock,
    /// Unix ms), for formats that carry created timestamps, and the attempt
    /// behind it, for formats that show exemplars.
    fn counter(
        &mut self,
        extra: Extra<'_>,
        v: u64,
        exemplar: Option<&Exemplar>,
        created_ms: Option<i64>,
    ) {
        let _ = created_ms;
        self.value_with_exemplar(extra, v, exemplar);
    }
    /// A histogram and the attempt behind each classic bucket, for formats
    /// that show exemplars.
    fn histogram_with_exemplars(
        &mut self,
        extra: Extra<'_>,
        bounds: Bounds,
        h: &Histogram,
        exemplars: &[Option<Exemplar>],
    ) {
        let _ = exemplars;
        self.histogram(extra, bounds, h);
    }
    /// After each target: hands on a piece once there is enough of one;
    /// false once the scraper is gone.
    fn flush_if_full(&mut self) -> bool;
    /// Ends the family; false once the scraper is gone.
    fn end_family(&mut self) -> bool;
}

/// The optional per-webhook families (`--collector.*` flags): what a large
/// account pays for in series. docs/metrics.md, "Series budget", has the figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// `talkover_webhook_delivery_lag_seconds`: 18 series per webhook with
    /// deliveries. Off by default: it mostly measures Talkover's own
    /// queueing, which its customers cannot act on.
    pub lag: bool,
    /// `talkover_webhook_delivery_attempt_number`: 14 series per status.
    pub attempt_number: bool,
    /// The `status` split of `talkover_webhook_delivery_duration_seconds`;
    /// without it, one histogram per webhook (18 series instead of 18 per
    /// status).
    pub duration_by_status: bool,
    /// Per-webhook polling detail: `talkover_exporter_polls_total`,
    /// `talkover_exporter_last_poll_duration_seconds`,
    /// `talkover_exporter_backlog_entries` and the webhook labels of
    /// `talkover_exporter_api_requests_total`: 4 series per webhook, about
    /// a fifth of a busy webhook's series with native histograms and 40 %
    /// of an idle one's. Off by default: the exporter-wide
    /// `talkover_exporter_poll_duration_seconds`, requests and backlog say
    /// whether polling keeps up, and `talkover_up` and
    /// `talkover_exporter_poll_errors_total` name the webhook that fails.
    pub poll_stats: bool,
    /// Native buckets beside the classic ones in the protobuf format. Off
    /// by default: Prometheus 3 takes a protobuf histogram that has native
    /// buckets for a native histogram, and one that does not ingest native
    /// histograms then stores nothing of it, classic buckets included,
    /// unless its scrape config sets `always_scrape_classic_histograms`.
    pub native_histograms: bool,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            lag: false,
            attempt_number: true,
            duration_by_status: true,
            poll_stats: false,
            native_histograms: false,
        }
    }
}

type Write<'a> = &'a dyn Fn(&mut dyn Format, &TargetSnapshot);

/// Writes every per-target family; false once the scraper is gone.
pub(super) fn write_targets(
    snaps: &[Arc<TargetSnapshot>],
    budget: Budget,
    f: &mut dyn Format,
) -> bool {
    let fam = |f: &mut dyn Format, name, kind, help, write: Write<'_>| -> bool {
        f.family(name, kind, help);
        for (i, s) in snaps.iter().enumerate() {
            f.target(i);
            write(f, s);
            if !f.flush_if_full() {
                return false;
            }
        }
        f.end_family()
    };
    write_settings(f, &fam)
        && fam(
            f,
            "talkover_up",
            Kind::Gauge,
            "1 if the last poll of this webhook's delivery logs succeeded, else 0.",
            &|f, s| f.value(&[], u64::from(s.stats.up)),
        )
        && fam(
            f,
            "talkover_webhook_delivery_results_total",
            Kind::Counter,
            "Final delivery attempts by result: success, or why they failed (timeout, connection_refused, connection_reset, dns, tls, http_4xx, http_5xx, other). Every result exists at 0 from the first read, so increase() sees the first failure.",
            &|f, s| {
                let created = s.counts.created.baseline_ms;
                for (result, v) in RESULTS.iter().zip(&s.counts.results) {
                    f.counter(&[("result", result)], *v, None, created);
                }
            },
        )
        && fam(
            f,
            "talkover_webhook_deliveries_exhausted_total",
            Kind::Counter,
            "Events the platform gave up on: final failed attempts whose attempt number reached the webhook's max_retries + 1, by event. Each known event exists at 0 from the first read.",
            &|f, s| {
                for (event, v) in &s.counts.exhausted {
                    let created = s.counts.created.exhausted.get(event).copied();
                    f.counter(&[("event", event)], *v, None, created);
                }
            },
        )
        && fam(
            f,
            "talkover_webhook_delivery_attempts_total",
            Kind::Counter,
            "Delivery attempts that reached a final status, by event, status and HTTP code ('none' when the attempt got no HTTP answer).",
            &|f, s| {
                for (k, v) in &s.counts.attempts {
                    let labels = [("event", k.event.as_str()), ("status", &k.status), ("code", &k.code)];
                    let created = s.counts.created.attempts.get(k).copied();
                    f.counter(&labels, *v, s.counts.exemplars.of_attempts(k), created);
                }
            },
        )
        && (if budget.duration_by_status {
            fam(
                f,
                "talkover_webhook_delivery_duration_seconds",
                Kind::Histogram,
                "Duration of final delivery attempts (duration_ms), by status.",
                &|f, s| {
                    for (status, h) in &s.counts.duration {
                        f.histogram_with_exemplars(&[("status", status)], Bounds::Duration, h, &h.exemplars);
                    }
                },
            )
        } else {
            fam(
                f,
                "talkover_webhook_delivery_duration_seconds",
                Kind::Histogram,
                "Duration of final delivery attempts (duration_ms).",
                &|f, s| {
                    if !s.counts.duration.is_empty() {
                        f.histogram(&[], Bounds::Duration, &merged(s.counts.duration.values()));
                    }
                },
            )
        })
        && (!budget.attempt_number
            || fam(
                f,
                "talkover_webhook_delivery_attempt_number",
                Kind::Histogram,
                "Attempt number of final delivery attempts (1 = first try), by status.",
                &|f, s| {
                    for (status, h) in &s.counts.attempt_number {
                        f.histogram(&[("status", status)], Bounds::Attempt, h);
                    }
                },
            ))
        && fam(
            f,
            "talkover_webhook_delivery_retries_total",
            Kind::Counter,
            "Final delivery attempts that were retries (attempt > 1).",
            &|f, s| f.counter(&[], s.counts.retries, None, s.counts.created.baseline_ms),
        )
        && (!budget.lag
            || fam(
                f,
                "talkover_webhook_delivery_lag_seconds",
                Kind::Histogram,
                "Time from an attempt's creation to its delivery (delivered_at - created_at).",
                // Like the by-status histograms, only once there is something
                // in it: most webhooks of a large account are idle, and an
                // empty histogram is 18 series each.
                &|f, s| {
                    if s.counts.lag.count() > 0 {
                        f.histogram(&[], Bounds::Lag, &s.counts.lag);
                    }
                },
            ))
        && write_target_state(f, &fam, budget.poll_stats)
}

type Fam<'a> = dyn Fn(&mut dyn Format, &'static str, Kind, &'static str, Write<'_>) -> bool + 'a;

/// What the API says of each webhook: its name and state, and the settings
/// the alerts judge it by. A setting the API has not given (yet) has no
/// series, and the info's `settings` label says `unknown`: the rules then
/// assume the platform's defaults (3 retries, 30 s).
fn write_settings(f: &mut dyn Format, fam: &Fam<'_>) -> bool {
    fam(
        f,
        "talkover_webhook_info",
        Kind::Info,
        "Always 1: the name and enabled state of each watched webhook, and whether its settings (max_retries, timeout) are known, for joins with group_left.",
        &|f, s| {
            let (name, enabled, known) = match &s.settings {
                Some(st) => (
                    st.name.as_str(),
                    if st.enabled { "true" } else { "false" },
                    st.max_retries.is_some() && st.timeout_seconds.is_some(),
                ),
                None => ("", "unknown", false),
            };
            let settings = if known { "known" } else { "unknown" };
            f.value(&[("name", name), ("enabled", enabled), ("settings", settings)], 1);
        },
    ) && fam(
        f,
        "talkover_webhook_max_retries",
        Kind::Gauge,
        "The webhook's max_retries as the API gives it: attempt max_retries + 1 is the last. Absent while unknown.",
        &|f, s| {
            if let Some(n) = s.settings.as_ref().and_then(|st| st.max_retries) {
                f.value(&[], u64::from(n));
            }
        },
    ) && fam(
        f,
        "talkover_webhook_timeout_seconds",
        Kind::Gauge,
        "The webhook's timeout as the API gives it: how long the platform waits for the receiver. Absent while unknown.",
        &|f, s| {
            if let Some(t) = s.settings.as_ref().and_then(|st| st.timeout_seconds) {
                f.value(&[], u64::from(t));
            }
        },
    )
}

/// The families about each webhook's state and polling.
fn write_target_state(f: &mut dyn Format, fam: &Fam<'_>, poll_stats: bool) -> bool {
    fam(
        f,
        "talkover_webhook_last_attempt_timestamp_seconds",
        Kind::Gauge,
        "created_at of the newest counted attempt, by status, in Unix seconds.",
        &|f, s| {
            for (status, t) in &s.counts.last_attempt {
                f.float(&[("status", status)], *t);
            }
        },
    ) && fam(
        f,
        "talkover_webhook_attempts_pending",
        Kind::Gauge,
        "Delivery attempts seen in flight (not final yet).",
        &|f, s| f.value(&[], s.pending),
    ) && (!poll_stats || write_poll_stats(f, fam))
        && fam(
            f,
            "talkover_exporter_poll_errors_total",
            Kind::Counter,
            "Polls that failed, by reason.",
            &|f, s| {
                for (reason, v) in &s.stats.errors {
                    let created = s.stats.errors_created.get(reason).copied();
                    f.counter(&[("reason", reason)], *v, None, created);
                }
            },
        )
        && fam(
            f,
            "talkover_exporter_last_successful_poll_timestamp_seconds",
            Kind::Gauge,
            "Unix time of the last successful poll of this webhook.",
            &|f, s| {
                if let Some(t) = s.stats.last_success {
                    f.float(&[], t);
                }
            },
        )
        && fam(
            f,
            "talkover_exporter_logs_missed_total",
            Kind::Counter,
            "Log entries that could not be counted, by reason.",
            &|f, s| {
                for (reason, v) in &s.counts.missed {
                    let created = s.counts.created.missed.get(reason).copied();
                    f.counter(&[("reason", reason)], *v, None, created);
                }
            },
        )
        && fam(
            f,
            "talkover_exporter_invalid_fields_total",
            Kind::Counter,
            "Entry fields left out of a histogram because they were missing or unusable, by field and reason.",
            &|f, s| {
                for ((field, reason), v) in &s.counts.invalid_fields {
                    let created = s.counts.created.invalid_fields.get(&(field.clone(), reason.clone())).copied();
                    f.counter(&[("field", field), ("reason", reason)], *v, None, created);
                }
            },
        )
}

/// `--collector.poll-stats`: the polling detail of each webhook.
fn write_poll_stats(f: &mut dyn Format, fam: &Fam<'_>) -> bool {
    fam(
        f,
        "talkover_exporter_polls_total",
        Kind::Counter,
        "Polls of this webhook's delivery logs, successful or not.",
        &|f, s| f.value(&[], s.stats.polls),
    ) && fam(
        f,
        "talkover_exporter_last_poll_duration_seconds",
        Kind::Gauge,
        "Time taken by the last poll of this webhook's delivery logs.",
        &|f, s| {
            if let Some(d) = s.stats.last_duration {
                f.float(&[], d);
            }
        },
    ) && fam(
        f,
        "talkover_exporter_api_requests_total",
        Kind::Counter,
        super::API_REQUESTS_HELP,
        &|f, s| {
            for ((outcome, code), v) in &s.stats.requests {
                f.value(&[("outcome", outcome), ("code", code)], *v);
            }
        },
    ) && fam(
        f,
        "talkover_exporter_backlog_entries",
        Kind::Gauge,
        super::BACKLOG_HELP,
        &|f, s| f.value(&[], s.backlog),
    )
}

/// One histogram holding the observations of several; it began with the
/// first of them, if each one's start is known.
fn merged<'a>(hs: impl Iterator<Item = &'a Histogram>) -> Histogram {
    let mut out = Histogram::default();
    let mut created = Some(i64::MAX);
    for h in hs {
        created = created.zip(h.created_ms).map(|(a, b)| a.min(b));
        if out.buckets.len() < h.buckets.len() {
            out.buckets.resize(h.buckets.len(), 0);
        }
        for (o, n) in out.buckets.iter_mut().zip(&h.buckets) {
            *o += n;
        }
        out.sum += h.sum;
        out.native.zero += h.native.zero;
        for &(i, n) in &h.native.buckets {
            out.native.add(i, n);
        }
    }
    out.created_ms = created.filter(|c| *c != i64::MAX);
    out
}
