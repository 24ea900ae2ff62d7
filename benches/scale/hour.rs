//! 2 + 3. Scale and scrape: 10,000 discovered webhooks through a simulated hour, and `/metrics` while polling goes on.

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

/// Serialized size of a state without its counters: the dedupe memory.
pub(crate) fn dedupe_bytes(state: &TargetState) -> usize {
    let mut s = state.clone();
    s.counts = Default::default();
    serde_json::to_vec(&s).map_or(0, |v| v.len())
}

pub(crate) fn full_bytes(state: &TargetState) -> usize {
    serde_json::to_vec(state).map_or(0, |v| v.len())
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
    use talkover_exporter::collect::run_target;
    use talkover_exporter::model::Readiness;
    use talkover_exporter::persist::Sink;
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let future = run_target(
        scale_target(0),
        Arc::new(exporter_client(base)),
        PollConfig {
            interval: SCALE_POLL,
            max_pages: 10,
            per_page: 100,
        },
        TargetState::default(),
        Sink {
            published: Arc::new(talkover_exporter::metrics::Published::new()),
            commits: None,
        },
        Arc::new(Readiness::new(false)),
        rx,
    );
    std::mem::size_of_val(&future)
}

/// `Published::render()` timed in-process, without HTTP or the rest of the
/// exporter competing for the CPU: 10,000 snapshots built from the shadow
/// states, each webhook taking the state of a shadow of its class.
pub(crate) fn render_in_process(shadows: &Mutex<Shadows>) -> (Duration, Duration, usize) {
    use talkover_exporter::metrics::Published;
    use talkover_exporter::model::TargetSnapshot;
    use talkover_exporter::target::WebhookMeta;
    let published = Published::new();
    {
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
            published.publish(TargetSnapshot::of(&target, &shadow.state, &shadow.stats));
            published.set_info(
                &target,
                WebhookMeta {
                    name: format!("{} hook", target.webhook_id),
                    enabled: true,
                },
            );
        }
    }
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
    pub(crate) entries: Mutex<Vec<talkover_exporter::api::LogEntry>>,
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
            talkover_exporter::api::LogEntry {
                id: Some(id),
                event: Some("campaign_call.completed".into()),
                attempt: Some(1),
                status: Some("success".into()),
                http_status: Some(200),
                duration_ms: Some(120.0),
                delivered_at: ts.clone(),
                created_at: ts,
            },
        );
    }
}

impl talkover_exporter::collect::PageSource for SyntheticLog {
    async fn fetch_logs(
        &self,
        _target: &Target,
        page: u64,
        per_page: u32,
    ) -> Result<talkover_exporter::api::LogPage, talkover_exporter::api::ApiError> {
        let all = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let start = ((page.max(1) - 1) * u64::from(per_page)) as usize;
        let entries = all
            .iter()
            .rev()
            .skip(start)
            .take(per_page as usize)
            .cloned()
            .collect();
        Ok(talkover_exporter::api::LogPage {
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
    };
    let now = talkover_exporter::clock::unix_now_ms();
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

/// Per-webhook sums from a scrape: (api requests, polls, attempts counted).
pub(crate) fn per_class_from_scrape(body: &str) -> BTreeMap<Class, (f64, f64, f64, usize)> {
    pub(crate) fn label<'a>(line: &'a str, name: &str) -> Option<&'a str> {
        let key = format!("{name}=\"");
        let start = line.find(&key)? + key.len();
        let len = line[start..].find('"')?;
        Some(&line[start..start + len])
    }
    let mut per_hook: BTreeMap<(String, String), [f64; 3]> = BTreeMap::new();
    for line in body.lines() {
        let slot = if line.starts_with("talkover_exporter_api_requests_total{") {
            0
        } else if line.starts_with("talkover_exporter_polls_total{") {
            1
        } else if line.starts_with("talkover_webhook_delivery_attempts_total{") {
            2
        } else {
            continue;
        };
        let (Some(c), Some(w)) = (label(line, "campaign_id"), label(line, "webhook_id")) else {
            continue;
        };
        let v: f64 = line
            .rsplit_once(' ')
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0.0);
        per_hook
            .entry((c.to_string(), w.to_string()))
            .or_insert([0.0; 3])[slot] += v;
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

#[derive(Debug, Default, Clone)]
pub(crate) struct ScaleFigures {
    pub(crate) ready: bool,
    pub(crate) per_webhook_kib: f64,
    pub(crate) per_webhook_ready_kib: f64,
    pub(crate) fds_max: usize,
    pub(crate) fds_max_hour: usize,
    pub(crate) body_growth_pct: f64,
    pub(crate) rss_growth_pct: f64,
    pub(crate) idle_state_avg: f64,
    pub(crate) idle_state_max: usize,
    /// Dedupe bytes of a webhook 11+ minutes after its burst (real clock).
    pub(crate) burst_state_settled: usize,
    /// ... and right after it.
    pub(crate) burst_state_fresh: usize,
    pub(crate) scrape_p50: Duration,
    pub(crate) scrape_ttfb_p99: Duration,
    pub(crate) render_p99: Duration,
    pub(crate) scrape_p99: Duration,
    pub(crate) scrape_bytes: usize,
    pub(crate) series: usize,
    pub(crate) polls_ratio: f64,
    /// Shadow poll latency p50, p99 without scrapes, then p50, p99 during them.
    pub(crate) poll_latency: [Duration; 4],
    pub(crate) idle_requests_per_poll: f64,
    pub(crate) busy_requests_per_poll: f64,
}

pub(crate) fn scale(report: &mut Report) -> ScaleFigures {
    let mut fig = ScaleFigures::default();
    eprintln!("[scale] starting the simulator child: {WEBHOOKS} webhooks, warm-up hour of history");
    let setup = Instant::now();
    let mut sim = SimChild::spawn("scale", &[]);
    let setup_s = setup.elapsed().as_secs_f64();
    let base = sim.url();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let http = reqwest::Client::builder().build().expect("scrape client");

    let rss_before = rss_kib();
    let fds_before = fd_count();
    let cpu_before = proc_cpu_s("/proc/self/stat");
    let sim_cpu_before = sim.cpu_s();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind exporter");
    let addr = listener.local_addr().expect("exporter address");
    let config = exporter_config(&base);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let exporter = rt.spawn(async move {
        talkover_exporter::run(config, listener, async move {
            let _ = stop_rx.await;
        })
        .await
        .map_err(|e| e.to_string())
    });
    let shadows = Arc::new(Mutex::new(Shadows::default()));
    {
        let mut g = shadows.lock().unwrap_or_else(|e| e.into_inner());
        for class in Class::ALL {
            for i in (0..WEBHOOKS)
                .filter(|i| class_of(*i) == class)
                .take(SHADOWS_PER_CLASS)
            {
                g.items.push(Shadow {
                    target: scale_target(i),
                    class,
                    state: TargetState::default(),
                    stats: PollStats::default(),
                });
            }
        }
    }
    let shadow_stop = Arc::new(AtomicBool::new(false));
    let shadow_task = rt.spawn(shadow_loop(
        base.clone(),
        shadows.clone(),
        shadow_stop.clone(),
    ));

    let get = |path: &str| {
        let url = format!("http://{addr}{path}");
        rt.block_on(async {
            let started = Instant::now();
            let resp = http.get(url).send().await.ok()?;
            // Headers come once the body is rendered (it is sent whole).
            let headers = started.elapsed();
            let status = resp.status().as_u16();
            let body = resp.text().await.ok()?;
            Some((status, body, started.elapsed(), headers))
        })
    };

    // Discovery and the first poll (baseline) of every webhook.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(180) {
        if get("/-/ready").is_some_and(|(s, _, _, _)| s == 200) {
            fig.ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let ready_s = start.elapsed().as_secs_f64();
    let rss_ready = rss_kib();
    eprintln!(
        "[scale] ready after {ready_s:.1}s (discovery + {WEBHOOKS} baseline polls); RSS {}",
        mib(rss_ready)
    );

    // The hour: one simulated minute per wall second.
    let hour_scrapes_on = std::env::var("SCALE_BENCH_HOUR_SCRAPES").as_deref() != Ok("0");
    // Scrapes come from another process, as Prometheus's would: reading
    // 66 MiB bodies here would count in the exporter's memory.
    let mut scraper = Scraper::spawn(&format!("http://{addr}/metrics"));
    let body_path =
        std::env::temp_dir().join(format!("scale-bench-metrics-{}.txt", std::process::id()));
    let hour = Instant::now();
    let mut minute = 0u32;
    let mut rss: Vec<Sample> = vec![(0, rss_ready, fd_count())];
    let mut sizes_over_time: Vec<(u32, ClassSizes)> = Vec::new();
    let mut hour_scrapes: Vec<(u32, Duration, usize)> = Vec::new();
    let step = |sim: &mut SimChild, minute: &mut u32, rss: &mut Vec<Sample>| {
        *minute += 1;
        let due = hour + STEP_WALL * *minute;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        sim.cmd(&format!("step {STEP_SIM_SECS}"));
        if *minute == BURST_MINUTE {
            sim.cmd(&format!("burst {BURST}"));
        }
        rss.push((*minute, rss_kib(), fd_count()));
    };
    let cpu_hour_before = proc_cpu_s("/proc/self/stat");
    let sim_cpu_hour_before = sim.cpu_s();
    while minute < HOUR_STEPS {
        step(&mut sim, &mut minute, &mut rss);
        if minute.is_multiple_of(10) {
            sizes_over_time.push((minute, shadow_sizes(&shadows)));
            // A scrape now and then, as Prometheus would (its buffers count too).
            if hour_scrapes_on {
                if let Some((_, took, _, bytes)) = scraper.scrape(None) {
                    hour_scrapes.push((minute, took, bytes));
                }
            }
            eprintln!("[scale] simulated minute {minute}: RSS {}", mib(rss_kib()));
        }
    }
    let hour_wall = hour.elapsed().as_secs_f64();
    let cpu_hour = proc_cpu_s("/proc/self/stat") - cpu_hour_before;
    let sim_cpu_hour = sim.cpu_s() - sim_cpu_hour_before;
    let rss_end = rss.last().map_or(0, |r| r.1);

    // Scrape phase: quiet, scraping, quiet; traffic goes on throughout.
    let phase = |sim: &mut SimChild,
                 minute: &mut u32,
                 rss: &mut Vec<Sample>,
                 scraper: &mut Scraper,
                 scrapes: usize| {
        let t0 = Instant::now();
        let r0 = sim.log_requests();
        let mut took = Vec::new();
        let mut last_bytes = 0usize;
        if scrapes == 0 {
            for _ in 0..QUIET_STEPS {
                step(sim, minute, rss);
            }
        } else {
            for _ in 0..scrapes {
                if Instant::now() >= hour + STEP_WALL * (*minute + 1) {
                    step(sim, minute, rss);
                }
                if let Some((status, d, headers, bytes)) = scraper.scrape(Some(&body_path)) {
                    if status == 200 {
                        took.push((d, headers));
                        last_bytes = bytes;
                    }
                }
            }
        }
        let r1 = sim.log_requests();
        let wall = t0.elapsed();
        (
            (r1 - r0) as f64 / wall.as_secs_f64(),
            (t0, t0 + wall),
            took,
            last_bytes,
        )
    };
    eprintln!(
        "[scale] scrape phase: {QUIET_STEPS} s quiet, {SCRAPES} scrapes, {QUIET_STEPS} s quiet"
    );
    let (rate_a, win_a, _, _) = phase(&mut sim, &mut minute, &mut rss, &mut scraper, 0);
    let (rate_b, win_b, took, body_bytes) =
        phase(&mut sim, &mut minute, &mut rss, &mut scraper, SCRAPES);
    let (rate_c, win_c, _, _) = phase(&mut sim, &mut minute, &mut rss, &mut scraper, 0);
    let scraper_cpu = scraper.cpu_s();
    scraper.quit();
    let final_sizes = shadow_sizes(&shadows);
    eprintln!(
        "[scale] per-minute RSS MiB/fds: {}",
        rss.iter()
            .map(|r| format!("{}:{:.0}/{}", r.0, r.1 as f64 / 1024.0, r.2))
            .collect::<Vec<_>>()
            .join(" ")
    );

    shadow_stop.store(true, Ordering::Relaxed);
    let _ = stop_tx.send(());
    let stopped =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(20), exporter).await });
    let _ = rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), shadow_task).await });
    let exporter_cpu = proc_cpu_s("/proc/self/stat") - cpu_before;
    let sim_cpu = sim.cpu_s() - sim_cpu_before;
    sim.quit();
    drop(rt);
    if !matches!(stopped, Ok(Ok(Ok(())))) {
        eprintln!("[scale] the exporter did not stop cleanly: {stopped:?}");
    }
    let task_bytes = poller_future_size(&base);
    eprintln!("[scale] rendering /metrics in-process from the shadow states");
    let (render_p50, render_p99, render_bytes) = render_in_process(&shadows);
    let body = std::fs::read_to_string(&body_path).unwrap_or_default();
    let _ = std::fs::remove_file(&body_path);

    // ---- memory ----
    fig.per_webhook_kib = rss_end.saturating_sub(rss_before) as f64 / WEBHOOKS as f64;
    let at = |m: u32| rss.iter().find(|r| r.0 == m).map_or(0, |r| r.1);
    // The first half-hour fills each webhook's ten minutes of dedupe memory
    // and its counters' label sets; the second shows whether it stays put.
    let (rss30, rss60) = (at(30), at(HOUR_STEPS));
    let max_after_30 = rss
        .iter()
        .filter(|r| r.0 >= 30 && r.0 <= HOUR_STEPS)
        .map(|r| r.1)
        .max()
        .unwrap_or(0);
    fig.rss_growth_pct = 100.0 * (rss60 as f64 - rss30 as f64) / rss30.max(1) as f64;
    fig.per_webhook_ready_kib = rss_ready.saturating_sub(rss_before) as f64 / WEBHOOKS as f64;
    fig.fds_max = rss.iter().map(|r| r.2).max().unwrap_or(0);
    fig.fds_max_hour = rss
        .iter()
        .filter(|r| r.0 <= HOUR_STEPS)
        .map(|r| r.2)
        .max()
        .unwrap_or(0);
    // How much the counters themselves grew (new label combinations), for
    // comparison with RSS: the body size of the scrapes at 30′ and 60′.
    let body_at = |m: u32| hour_scrapes.iter().find(|h| h.0 == m).map_or(0, |h| h.2);
    fig.body_growth_pct =
        100.0 * (body_at(HOUR_STEPS) as f64 - body_at(30) as f64) / body_at(30).max(1) as f64;
    let flat = fig.rss_growth_pct.abs() < 5.0;
    let mut sec = Section::new(
        "2. Scale: 10,000 discovered webhooks, an hour of simulated traffic",
        &["figure", "value", "goal", "verdict"],
    );
    sec.row(vec![
        "discovery + first poll of every webhook (ready)".into(),
        if fig.ready {
            format!("{ready_s:.1} s")
        } else {
            format!("not ready after {ready_s:.0} s")
        },
        String::new(),
        String::new(),
    ]);
    sec.row(vec![
        "RSS before starting the exporter".into(),
        mib(rss_before),
        String::new(),
        String::new(),
    ]);
    sec.row(vec![
        "RSS when ready (10k webhooks, baselines taken)".into(),
        mib(rss_ready),
        String::new(),
        String::new(),
    ]);
    let rss_line: Vec<String> = rss
        .iter()
        .filter(|r| r.0.is_multiple_of(10) && r.0 <= HOUR_STEPS)
        .map(|r| format!("{}′ {:.0}", r.0, r.1 as f64 / 1024.0))
        .collect();
    sec.row(vec![
        "RSS over the hour, MiB (simulated minute′ MiB)".into(),
        rss_line.join(", "),
        String::new(),
        String::new(),
    ]);
    let fd_line: Vec<String> = rss
        .iter()
        .filter(|r| r.0.is_multiple_of(10) && r.0 <= HOUR_STEPS)
        .map(|r| format!("{}′ {}", r.0, r.2))
        .collect();
    sec.row(vec![
        "open file descriptors (≈ HTTP connections) over the hour".into(),
        format!("{} (before start {fds_before})", fd_line.join(", ")),
        String::new(),
        String::new(),
    ]);
    sec.row(vec![
        "RSS after the hour".into(),
        mib(rss_end),
        String::new(),
        String::new(),
    ]);
    sec.row(vec![
        "size of one poller's future (`collector::run_target`, not yet polled)".into(),
        format!("{task_bytes} B"),
        String::new(),
        String::new(),
    ]);
    sec.row(vec![
        "per webhook: (RSS − RSS before) / 10k, when ready / after the hour".into(),
        format!(
            "{:.1} KiB / {:.1} KiB",
            fig.per_webhook_ready_kib, fig.per_webhook_kib
        ),
        String::new(),
        String::new(),
    ]);
    sec.row(vec![
        "RSS change, minute 30 → 60 (max in between)".into(),
        format!("{:+.1} % (max {})", fig.rss_growth_pct, mib(max_after_30)),
        "flat (< 5 %)".into(),
        verdict(flat),
    ]);
    let idle = final_sizes.get(&Class::Idle).copied().unwrap_or_default();
    fig.idle_state_avg = idle.0;
    fig.idle_state_max = idle.1;
    for class in Class::ALL {
        if let Some((avg, max, ids, max_ids, full)) = final_sizes.get(&class) {
            // The burst class is judged by the real-time check below: here
            // the burst is always "recent" to the exporter's clock.
            let goal_applies = class == Class::Idle;
            sec.row(vec![
                format!("dedupe state, {} webhook (JSON, without counters)", class.name()),
                format!("avg {avg:.0} B, max {max} B ({ids:.0} ids avg, {max_ids} max; with counters {full:.0} B)"),
                if goal_applies { "< 2 KiB".into() } else { String::new() },
                if goal_applies { verdict(*max < GOAL_IDLE_STATE) } else { String::new() },
            ]);
        }
    }
    // A burst then silence, with real past timestamps (see `after_burst`).
    let aged = after_burst();
    for (age, ids, bytes) in &aged {
        let settled = *age >= 11;
        sec.row(vec![
            format!("dedupe state of a webhook whose 300-attempt burst ended {age} min ago (real clock)"),
            format!("{bytes} B ({ids} {})", if *ids == 1 { "id" } else { "ids" }),
            if settled { "< 2 KiB".into() } else { "(within the 10-minute window)".into() },
            if settled { verdict(*bytes < GOAL_IDLE_STATE) } else { String::new() },
        ]);
    }
    fig.burst_state_settled = aged
        .iter()
        .filter(|a| a.0 >= 11)
        .map(|a| a.2)
        .max()
        .unwrap_or(0);
    fig.burst_state_fresh = aged.iter().find(|a| a.0 == 0).map_or(0, |a| a.2);
    let over_time: Vec<String> = sizes_over_time
        .iter()
        .map(|(m, s)| {
            let f = |c: Class| s.get(&c).map_or(0.0, |v| v.0);
            format!(
                "{m}′ {:.0}/{:.0}/{:.0}/{:.0}",
                f(Class::Busy),
                f(Class::Low),
                f(Class::Burst),
                f(Class::Idle)
            )
        })
        .collect();
    sec.row(vec![
        "dedupe state over time, avg bytes busy/low/burst/idle".into(),
        over_time.join(", "),
        String::new(),
        String::new(),
    ]);
    sec.row(vec![
        "CPU during the hour: exporter process / simulator child".into(),
        format!(
            "{:.0} % / {:.0} % of one core",
            100.0 * cpu_hour / hour_wall,
            100.0 * sim_cpu_hour / hour_wall
        ),
        String::new(),
        String::new(),
    ]);
    sec.note(format!(
        "Webhooks: 1,000 campaigns x 10, discovered through the listing endpoints every {}s. Per campaign w0 is busy (3 attempts/min), w1-w2 low (~7/h), w3 of every tenth campaign gets one burst of {BURST} attempts at minute {BURST_MINUTE} then nothing (100 webhooks), the rest idle (history from a warm-up hour, then nothing). 20 % of attempts are pending first.",
        SCALE_DISCOVERY.as_secs()
    ));
    sec.note(format!(
        "Time is compressed: one simulated minute per wall second (the simulator's `created_at` clock is advanced accordingly), so the exporter's 10-minute dedupe horizon sees a full hour; poll interval {} s wall (2 simulated minutes; idle webhooks back off as configured); one scrape every 10 simulated minutes. Setup of the simulator child (warm-up hour) took {setup_s:.1} s.",
        SCALE_POLL.as_secs()
    ));
    sec.note("The simulator's clock runs ahead of the wall clock (that is how the hour is compressed), so to the exporter every entry of the scale run is recent: rules keyed to the wall clock (an idle webhook forgets its last burst ten minutes after it) cannot act there. The 'burst ended N min ago' rows check that with a log served from memory with real timestamps (`collector::poll_once`, 50 entries two hours old, then 300 in 30 s ending N minutes ago, then an idle poll).".to_string());
    sec.note(format!(
        "Dedupe state is measured on {SHADOWS_PER_CLASS} webhooks per class polled by the same `collector::poll_once` at the same interval, on the exporter's runtime (the exporter's own `TargetState`s are not reachable from outside); bytes are `serde_json` of `TargetState` with `counts` emptied (what `state::encode` stores, minus counters)."
    ));
    report.sections.push(sec);

    // ---- scrape ----
    let mut ttfb: Vec<Duration> = took.iter().map(|t| t.1).collect();
    ttfb.sort();
    let mut took: Vec<Duration> = took.iter().map(|t| t.0).collect();
    took.sort();
    fig.scrape_p50 = percentile(&took, 50.0);
    fig.scrape_ttfb_p99 = percentile(&ttfb, 99.0);
    fig.render_p99 = render_p99;
    fig.scrape_p99 = percentile(&took, 99.0);
    fig.scrape_bytes = body_bytes;
    fig.series = body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    fig.polls_ratio = rate_b / ((rate_a + rate_c) / 2.0).max(1e-9);
    let shadow_lat = |w: (Instant, Instant)| {
        let g = shadows.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<Duration> = g
            .latencies
            .iter()
            .filter(|(t, _)| *t >= w.0 && *t < w.1)
            .map(|(_, d)| *d)
            .collect();
        v.sort();
        (percentile(&v, 50.0), percentile(&v, 99.0), v.len())
    };
    let (la, lb, lc) = (shadow_lat(win_a), shadow_lat(win_b), shadow_lat(win_c));
    fig.poll_latency = [la.0, la.1, lb.0, lb.1];
    let mut sec = Section::new(
        "3. Scrape: GET /metrics with 10,000 webhooks",
        &["figure", "value", "goal", "verdict"],
    );
    sec.row(vec![
        format!(
            "time per scrape, request to last byte (the body streams while it renders, polling alongside), {} scrapes back to back: p50 / p99",
            took.len()
        ),
        format!("{} / {}", ms(fig.scrape_p50), ms(fig.scrape_p99)),
        format!("p99 < {}", ms(GOAL_SCRAPE_P99)),
        verdict(fig.scrape_p99 < GOAL_SCRAPE_P99),
    ]);
    sec.row(vec![
        "of which until the response headers (sent as rendering starts): p50 / p99".into(),
        format!(
            "{} / {}",
            ms(percentile(&ttfb, 50.0)),
            ms(fig.scrape_ttfb_p99)
        ),
        String::new(),
        String::new(),
    ]);
    sec.row(vec![
        "`Published::render()` alone, in-process, same population: p50 / p99 (10 renders)".into(),
        format!(
            "{} / {} ({:.1} MiB)",
            ms(render_p50),
            ms(render_p99),
            render_bytes as f64 / 1048576.0
        ),
        format!("p99 < {}", ms(GOAL_SCRAPE_P99)),
        verdict(render_p99 < GOAL_SCRAPE_P99),
    ]);
    sec.row(vec![
        "series per family (top 6)".into(),
        series_per_family(&body),
        String::new(),
        String::new(),
    ]);
    sec.row(vec![
        "body size / series".into(),
        format!(
            "{:.1} MiB / {} series ({:.0} bytes per series)",
            fig.scrape_bytes as f64 / 1048576.0,
            fig.series,
            fig.scrape_bytes as f64 / fig.series.max(1) as f64
        ),
        String::new(),
        String::new(),
    ]);
    sec.row(vec![
        "scrapes during the hour: time (body MiB) at simulated minute′".into(),
        hour_scrapes
            .iter()
            .map(|(m, d, b)| format!("{m}′ {} ({:.1})", ms(*d), *b as f64 / 1048576.0))
            .collect::<Vec<_>>()
            .join(", "),
        String::new(),
        String::new(),
    ]);
    let phase_max = |f: fn(&Sample) -> u64| {
        rss.iter()
            .filter(|r| r.0 > HOUR_STEPS)
            .map(f)
            .max()
            .unwrap_or(0)
    };
    sec.row(vec![
        "exporter during the scrape phase: max RSS / max open file descriptors".into(),
        format!(
            "{} / {}",
            mib(phase_max(|r| r.1)),
            phase_max(|r| r.2 as u64)
        ),
        String::new(),
        String::new(),
    ]);
    sec.row(vec![
        "log requests served per second: before / during / after the scrapes".into(),
        format!(
            "{rate_a:.0} / {rate_b:.0} / {rate_c:.0} (during = {:.0} % of quiet)",
            100.0 * fig.polls_ratio
        ),
        "polling keeps its pace (≥ 90 %)".into(),
        verdict(fig.polls_ratio >= 0.9),
    ]);
    sec.row(vec![
        "shadow poll latency p50 / p99: before / during / after".into(),
        format!(
            "{} / {} ; {} / {} ; {} / {} ({}, {}, {} polls)",
            ms(la.0),
            ms(la.1),
            ms(lb.0),
            ms(lb.1),
            ms(lc.0),
            ms(lc.1),
            la.2,
            lb.2,
            lc.2
        ),
        String::new(),
        String::new(),
    ]);
    sec.note("Scrape time is measured by a scraper child process (playing Prometheus) over loopback, request to last byte. Polls continue throughout; with polls mostly one request each, log requests per second is the poll completion rate.".to_string());
    sec.note(format!(
        "Whole run: exporter process {exporter_cpu:.1} CPU-s, simulator child {sim_cpu:.1} CPU-s, scraper child {scraper_cpu:.1} CPU-s."
    ));
    report.sections.push(sec);

    // ---- API economy, from the final scrape ----
    let classes = per_class_from_scrape(&body);
    let mut sec = Section::new(
        "4a. API economy in the scale run (talkover_exporter_api_requests_total / poll count)",
        &[
            "class",
            "webhooks",
            "polls",
            "requests per poll",
            "attempts counted per poll",
        ],
    );
    for class in Class::ALL {
        if let Some((req, polls, counted, n)) = classes.get(&class) {
            let rpp = req / polls.max(1.0);
            match class {
                Class::Idle => fig.idle_requests_per_poll = rpp,
                Class::Busy => fig.busy_requests_per_poll = rpp,
                _ => {}
            }
            sec.row(vec![
                class.name().to_string(),
                n.to_string(),
                format!("{polls:.0}"),
                format!("{rpp:.3}"),
                format!("{:.2}", counted / polls.max(1.0)),
            ]);
        }
    }
    sec.note("Every poll of these classes finds fewer than 100 new entries except the burst poll (300 new: 4 requests), so the formula expects 1 request per poll (idle: exactly 1).".to_string());
    report.sections.push(sec);
    fig
}
