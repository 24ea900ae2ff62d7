//! The scale run's helpers: shadow webhooks polled beside the exporter to
//! measure dedupe state, in-process render timing, and reading figures
//! out of a scrape.

use super::*;

pub(crate) struct Shadow {
    pub(crate) target: Target,
    pub(crate) class: Class,
    pub(crate) state: TargetState,
    pub(crate) stats: PollStats,
}

#[derive(Default)]
pub(crate) struct Shadows {
    pub(crate) items: Vec<Shadow>,
    /// (start, duration) of every shadow poll.
    pub(crate) latencies: Vec<(Instant, Duration)>,
}

/// Size in the state file of a state without its counters: the dedupe memory.
pub(crate) fn dedupe_bytes(state: &TargetState) -> usize {
    let mut s = state.clone();
    s.counts = Default::default();
    s.failures = Default::default();
    talkover_exporter::bench::stored_size(&s)
}

pub(crate) fn full_bytes(state: &TargetState) -> usize {
    talkover_exporter::bench::stored_size(state)
}

/// Per class: (average dedupe bytes, max dedupe bytes, average ids, max ids, average full bytes).
pub(crate) type ClassSizes = BTreeMap<Class, (f64, usize, f64, usize, f64)>;

/// Per class: (average dedupe bytes, max dedupe bytes, average ids, max ids, average full bytes).
pub(crate) fn shadow_sizes(shadows: &Mutex<Shadows>) -> ClassSizes {
    let g = shadows.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = BTreeMap::new();
    for class in Class::ALL {
        let items: Vec<&Shadow> = g.items.iter().filter(|s| s.class == class).collect();
        if items.is_empty() {
            continue;
        }
        let n = items.len() as f64;
        let d: Vec<usize> = items.iter().map(|s| dedupe_bytes(&s.state)).collect();
        let ids: Vec<usize> = items
            .iter()
            .map(|s| s.state.handled.len() + s.state.pending.len())
            .collect();
        let full: usize = items.iter().map(|s| full_bytes(&s.state)).sum();
        out.insert(
            class,
            (
                d.iter().sum::<usize>() as f64 / n,
                d.iter().copied().max().unwrap_or(0),
                ids.iter().sum::<usize>() as f64 / n,
                ids.iter().copied().max().unwrap_or(0),
                full as f64 / n,
            ),
        );
    }
    out
}

/// Shadow pollers: a sample of webhooks polled by the same `poll_once`, at
/// the same interval, on the exporter's runtime, so their `TargetState`s can
/// be measured (the exporter's own are not reachable from outside), and
/// their latency shows whether the runtime stalls.
pub(crate) async fn shadow_loop(base: String, shadows: Arc<Mutex<Shadows>>, stop: Arc<AtomicBool>) {
    let client = exporter_client(&base);
    let config = PollConfig {
        interval: SCALE_POLL,
        max_pages: 10,
        per_page: 100,
        failures: talkover_count::model::FailurePolicy::default(),
    };
    let mut next = tokio::time::Instant::now();
    let n = shadows
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .items
        .len();
    while !stop.load(Ordering::Relaxed) {
        for i in 0..n {
            let (target, mut state, mut stats) = {
                let mut g = shadows.lock().unwrap_or_else(|e| e.into_inner());
                let s = &mut g.items[i];
                (
                    s.target.clone(),
                    std::mem::take(&mut s.state),
                    std::mem::take(&mut s.stats),
                )
            };
            let started = Instant::now();
            let _ = poll_once(&client, &target, &config, &mut state, &mut stats).await;
            let took = started.elapsed();
            let mut g = shadows.lock().unwrap_or_else(|e| e.into_inner());
            g.items[i].state = state;
            g.items[i].stats = stats;
            g.latencies.push((started, took));
        }
        next += SCALE_POLL;
        tokio::time::sleep_until(next).await;
    }
}

/// The size of one poller's state machine as `Fleet` spawns it.
pub(crate) fn poller_future_size(base: &str) -> usize {
    use talkover_count::model::Readiness;
    use talkover_exporter::bench::Sink;
    use talkover_exporter::bench::{run_target, Links};
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let (_settings_tx, settings) = tokio::sync::watch::channel(None);
    let future = run_target(
        scale_target(0),
        Arc::new(exporter_client(base)),
        PollConfig {
            interval: SCALE_POLL,
            max_pages: 10,
            per_page: 100,
            failures: talkover_count::model::FailurePolicy::default(),
        },
        TargetState::default(),
        Links {
            // Never run: a sink whose committer is nobody will do.
            sink: Sink::new(
                Arc::new(talkover_exporter::bench::Published::new()),
                tokio::sync::mpsc::channel(1).0,
            ),
            readiness: Arc::new(Readiness::new(false)),
            settings,
            shutdown: rx,
        },
    );
    std::mem::size_of_val(&future)
}

/// `published` holding 10,000 snapshots built from the shadow states,
/// each webhook taking the state of a shadow of its class, and named.
pub(crate) fn populate(
    shadows: &Mutex<Shadows>,
    published: talkover_exporter::bench::Published,
) -> talkover_exporter::bench::Published {
    use talkover_count::model::{TargetSnapshot, WebhookSettings};
    let g = shadows.lock().unwrap_or_else(|e| e.into_inner());
    let mut seen: BTreeMap<Class, usize> = BTreeMap::new();
    for i in 0..WEBHOOKS {
        let class = class_of(i);
        let of_class: Vec<&Shadow> = g.items.iter().filter(|s| s.class == class).collect();
        if of_class.is_empty() {
            continue;
        }
        let k = seen.entry(class).or_default();
        let shadow = of_class[*k % of_class.len()];
        *k += 1;
        let target = scale_target(i);
        let mut snapshot = TargetSnapshot::of(&target, &shadow.state, &shadow.stats);
        let name = format!("{} hook", target.webhook_id);
        snapshot.settings = Some(WebhookSettings::new(
            Some(name),
            true,
            Some(3),
            Some(30),
            &[],
        ));
        published.publish(snapshot);
    }
    drop(g);
    published
}

/// `Published::render()` timed in-process, without HTTP or the rest of the
/// exporter competing for the CPU, on the population of [`populate`].
pub(crate) fn render_in_process(shadows: &Mutex<Shadows>) -> (Duration, Duration, usize) {
    let published = populate(shadows, talkover_exporter::bench::Published::new());
    let mut took = Vec::new();
    let mut bytes = 0;
    for _ in 0..10 {
        let started = Instant::now();
        let body = published.render();
        took.push(started.elapsed());
        bytes = body.len();
    }
    took.sort();
    (percentile(&took, 50.0), percentile(&took, 99.0), bytes)
}

/// The metric families with the most series in a scrape.
pub(crate) fn series_per_family(body: &str) -> String {
    let mut per: BTreeMap<&str, usize> = BTreeMap::new();
    for line in body.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name = line.split(['{', ' ']).next().unwrap_or("");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        *per.entry(family).or_default() += 1;
    }
    let mut v: Vec<(&str, usize)> = per.into_iter().collect();
    v.sort_by_key(|f| std::cmp::Reverse(f.1));
    v.iter()
        .take(6)
        .map(|(f, n)| format!("{f} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A log served from memory with real timestamps: the scale run's
/// simulator clock runs ahead of the wall clock (time is compressed), so a
/// rule keyed to the wall clock ("ten minutes after the newest entry")
/// cannot show there. Newest first, like the API by default.
#[derive(Default)]
pub(crate) struct SyntheticLog {
    pub(crate) entries: Mutex<Vec<talkover_count::api::LogEntry>>,
}

impl SyntheticLog {
    pub(crate) fn push(&self, id: String, created_ms: i64) {
        let ts =
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(created_ms) * 1_000_000)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                });
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).push(
            talkover_count::api::LogEntry {
                id: Some(id),
                event: Some("campaign_call.completed".into()),
                attempt: Some(1),
                status: Some("success".into()),
                http_status: Some(200),
                duration_ms: Some(120.0),
                delivered_at: ts.clone(),
                created_at: ts,
                ..Default::default()
            },
        );
    }
}

impl talkover_count::collect::PageSource for SyntheticLog {
    async fn fetch_logs(
        &self,
        _target: &Target,
        page: u64,
        per_page: u32,
    ) -> Result<talkover_count::api::LogPage, talkover_count::api::ApiError> {
        let all = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let start = ((page.max(1) - 1) * u64::from(per_page)) as usize;
        let entries = all
            .iter()
            .rev()
            .skip(start)
            .take(per_page as usize)
            .cloned()
            .collect();
        Ok(talkover_count::api::LogPage {
            entries,
            total: Some(all.len() as u64),
        })
    }
}

/// Dedupe state of a webhook that had history two hours ago, then a burst
/// of 300 attempts over 30 s ending `age` minutes ago, then nothing: after
/// the poll that counts the burst and one idle poll. (age min, ids, bytes).
pub(crate) fn after_burst() -> Vec<(i64, usize, usize)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let target = scale_target(3);
    let config = PollConfig {
        interval: Duration::from_secs(30),
        max_pages: 10,
        per_page: 100,
        failures: talkover_count::model::FailurePolicy::default(),
    };
    let now = talkover_count::clock::unix_now_ms();
    [0i64, 11, 60]
        .into_iter()
        .map(|age| {
            let log = SyntheticLog::default();
            let end = now - age * 60_000;
            for i in 0..50 {
                log.push(format!("log-h{i:05}"), end - 7_200_000 + i * 1_000);
            }
            let mut state = TargetState::default();
            let mut stats = PollStats::default();
            rt.block_on(poll_once(&log, &target, &config, &mut state, &mut stats))
                .expect("baseline");
            for i in 0..300 {
                log.push(format!("log-b{i:05}"), end - 30_000 + i * 100);
            }
            for _ in 0..2 {
                rt.block_on(poll_once(&log, &target, &config, &mut state, &mut stats))
                    .expect("poll");
            }
            let counted: u64 = state.counts.attempts.values().sum();
            if counted != 300 {
                eprintln!("[scale] after_burst({age}): counted {counted} of 300");
            }
            (
                age,
                state.handled.len() + state.pending.len(),
                dedupe_bytes(&state),
            )
        })
        .collect()
}

/// Per-class sums: (api requests, polls, attempts counted, webhooks).
/// Requests and polls from the status page's JSON (`/metrics` has them per
/// webhook only with `--collector.poll-stats`), attempts from a scrape.
pub(crate) fn per_class(status_json: &str, body: &str) -> BTreeMap<Class, (f64, f64, f64, usize)> {
    pub(crate) fn label<'a>(line: &'a str, name: &str) -> Option<&'a str> {
        let key = format!("{name}=\"");
        let start = line.find(&key)? + key.len();
        let len = line[start..].find('"')?;
        Some(&line[start..start + len])
    }
    let mut per_hook: BTreeMap<(String, String), [f64; 3]> = BTreeMap::new();
    for line in body.lines() {
        if !line.starts_with("talkover_webhook_delivery_attempts_total{") {
            continue;
        }
        let (Some(c), Some(w)) = (label(line, "campaign_id"), label(line, "webhook_id")) else {
            continue;
        };
        let v: f64 = line
            .rsplit_once(' ')
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0.0);
        per_hook
            .entry((c.to_string(), w.to_string()))
            .or_insert([0.0; 3])[2] += v;
    }
    let rows: Vec<serde_json::Value> = serde_json::from_str(status_json).unwrap_or_default();
    for row in rows {
        let field = |k: &str| row[k].as_str().unwrap_or_default().to_string();
        if field("scope") != "campaigns" {
            continue;
        }
        let e = per_hook
            .entry((field("owner_id"), field("webhook_id")))
            .or_insert([0.0; 3]);
        e[0] = row["api_requests"].as_f64().unwrap_or(0.0);
        e[1] = row["polls"].as_f64().unwrap_or(0.0);
    }
    let mut out: BTreeMap<Class, (f64, f64, f64, usize)> = BTreeMap::new();
    for ((c, w), v) in per_hook {
        if let Some(class) = class_of_labels(&c, &w) {
            let e = out.entry(class).or_default();
            e.0 += v[0];
            e.1 += v[1];
            e.2 += v[2];
            e.3 += 1;
        }
    }
    out
}
