//! 3b-3e. Formats side by side at 10,000 webhooks: text, gzip text,
//! protobuf with native histograms and gzip protobuf, over loopback beside
//! the scale run's polling (3b), alone (3c) and beside polling at a real API
//! budget (3e), and in-process for the series each format and each
//! optional family costs (3d).

use std::io::Write as _;

use prost::Message as _;
use talkover_exporter::bench::{Budget, Published};
use talkover_exporter::proto::MetricFamily;

use super::*;

/// The scrapes of one format over loopback.
#[derive(Debug, Clone)]
pub(crate) struct FormatRun {
    pub(crate) format: ScrapeFormat,
    /// Request to last byte, sorted.
    pub(crate) took: Vec<Duration>,
    /// Bytes on the wire (compressed when gzip).
    pub(crate) bytes: usize,
}

/// One format rendered in-process from one population.
#[derive(Debug, Clone, Default)]
pub(crate) struct RenderRun {
    pub(crate) population: &'static str,
    pub(crate) format: &'static str,
    pub(crate) bytes: usize,
    /// Series Prometheus stores from it (a native histogram is one).
    pub(crate) series: usize,
    /// Thread CPU per render (and compression), p50 / p99 of 10.
    pub(crate) cpu_p50: Duration,
    pub(crate) cpu_p99: Duration,
}

/// What the in-process renders measured.
#[derive(Debug, Clone, Default)]
pub(crate) struct Renders {
    /// Default families, each population and format.
    pub(crate) runs: Vec<RenderRun>,
    /// Series per busy webhook by family, every optional family on (classic).
    pub(crate) per_family: Vec<(String, f64)>,
    /// Classic series of the busy population, every family on, and default.
    pub(crate) series_all: usize,
    pub(crate) series_default: usize,
    pub(crate) webhooks: usize,
    /// The busy population served over loopback, each format: scrapes,
    /// and the serving process's CPU-seconds per scrape.
    pub(crate) busy_wire: Vec<(FormatRun, f64)>,
    /// The same while an exporter in this process polls at a real API
    /// budget (3e): scrapes, and log requests per second before and during.
    pub(crate) budget_wire: Vec<FormatRun>,
    pub(crate) budget_rates: (f64, f64),
}

/// The scale run's population as it ended (mostly idle webhooks).
const MIX: &str = "scale run (69 % idle)";
/// Every webhook with a little traffic, as the issue measured.
const BUSY: &str = "every webhook busy";

/// The default families, with native buckets in protobuf
/// (`--collector.native-histograms`): what the native share measures.
fn with_native() -> Published {
    Published::with_budget(Budget {
        native_histograms: true,
        ..Budget::default()
    })
}

/// Every format and both budgets rendered from the shadow states, and
/// from a population where every webhook has traffic.
pub(crate) fn formats_in_process(shadows: &Mutex<Shadows>) -> Renders {
    let all = Budget {
        lag: true,
        attempt_number: true,
        duration_by_status: true,
        poll_stats: true,
        native_histograms: true,
    };
    let busy_all = busy(Published::with_budget(all));
    let busy_default = busy(with_native());
    let body_all = busy_all.render();
    drop(busy_all);
    let body_default = busy_default.render();
    let webhooks = busy_default.snapshots().len().max(1);
    let mut per_family = family_counts(&body_all);
    per_family.sort_by_key(|f| std::cmp::Reverse(f.1));
    let mut out = Renders {
        per_family: per_family
            .into_iter()
            .filter(|(_, n)| *n >= webhooks / 2)
            .map(|(f, n)| (f, n as f64 / webhooks as f64))
            .collect(),
        series_all: samples(&body_all),
        series_default: samples(&body_default),
        webhooks,
        ..Renders::default()
    };
    drop((body_all, body_default));
    let busy_default = Arc::new(busy_default);
    out.busy_wire = serve_and_scrape(busy_default.clone());
    (out.budget_wire, out.budget_rates) = serve_and_scrape_while_polling(busy_default.clone());
    let mix = populate(shadows, with_native());
    for (population, published) in [(MIX, &mix), (BUSY, &*busy_default)] {
        let classic = samples(&String::from_utf8_lossy(&render(
            published,
            ScrapeFormat::Text,
        )));
        let native = native_series(&render(published, ScrapeFormat::Protobuf));
        for format in ScrapeFormat::ALL {
            let mut cpu = Vec::new();
            let mut bytes = 0;
            for _ in 0..10 {
                let started = cpu_time::ThreadTime::now();
                let body = render(published, format);
                cpu.push(started.elapsed());
                bytes = body.len();
            }
            cpu.sort();
            out.runs.push(RenderRun {
                population,
                format: format.word(),
                bytes,
                series: match format.exposition() {
                    talkover_exporter::bench::Exposition::Text => classic,
                    _ => native,
                },
                cpu_p50: percentile(&cpu, 50.0),
                cpu_p99: percentile(&cpu, 99.0),
            });
        }
    }
    out
}

/// `published` served on loopback by the exporter's own routes, nothing
/// else running, and scraped by the scraper child in each format in turn.
fn serve_and_scrape(published: Arc<Published>) -> Vec<(FormatRun, f64)> {
    use talkover_count::model::Readiness;
    use talkover_exporter::bench::{router, AppState};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("serving runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let state = AppState::new(
        published,
        Arc::new(Readiness::new(true)),
        "/metrics".into(),
        0,
    );
    rt.spawn(async move {
        let _ = axum::serve(listener, router(state)).await;
    });
    let mut scraper = Scraper::spawn(&format!("http://{addr}/metrics"));
    let mut out = Vec::new();
    for format in ScrapeFormat::ALL {
        // One to warm up, then the measured ones.
        let _ = scraper.scrape_as(format, None);
        let cpu = proc_cpu_s("/proc/self/stat");
        let mut run = FormatRun {
            format,
            took: Vec::new(),
            bytes: 0,
        };
        for _ in 0..FORMAT_SCRAPES {
            if let Some((200, d, _, b)) = scraper.scrape_as(format, None) {
                run.took.push(d);
                run.bytes = b;
            }
        }
        let per_scrape = (proc_cpu_s("/proc/self/stat") - cpu) / run.took.len().max(1) as f64;
        run.took.sort();
        out.push((run, per_scrape));
    }
    scraper.quit();
    drop(rt);
    out
}

/// `published` served as in 3c while an exporter in this process, on the
/// same runtime, polls a simulator child at a real API budget:
/// `--talkover.max-requests-per-second` [`BUDGET_RPS`], twenty times the
/// default, with [`BUDGET_WEBHOOKS`] webhooks every second asking for more
/// than that, so polling's pace is the budget. Rounds of one scrape per
/// format, as in 3b; returns the scrapes and the log requests per second
/// before and during them.
fn serve_and_scrape_while_polling(published: Arc<Published>) -> (Vec<FormatRun>, (f64, f64)) {
    use talkover_count::model::Readiness;
    use talkover_exporter::bench::{router, AppState};
    let mut sim = SimChild::spawn("budget", &[]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("serving runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let state = AppState::new(
        published,
        Arc::new(Readiness::new(true)),
        "/metrics".into(),
        0,
    );
    rt.spawn(async move {
        let _ = axum::serve(listener, router(state)).await;
    });
    // The polling exporter: its own listener, only asked whether it is ready.
    let targets =
        std::env::temp_dir().join(format!("scale-bench-budget-{}.yml", std::process::id()));
    let list: Vec<String> = (0..BUDGET_WEBHOOKS)
        .map(|i| format!("  - {}", scale_target(i)))
        .collect();
    std::fs::write(&targets, format!("targets:\n{}\n", list.join("\n"))).expect("targets file");
    std::env::set_var("TALKOVER_TOKEN", "talq_bench_token");
    let rps = BUDGET_RPS.to_string();
    let config = talkover_exporter::Cli::try_parse_from([
        "talkover-exporter",
        "--talkover.url",
        &sim.url(),
        "--talkover.allow-insecure",
        "--talkover.max-requests-per-second",
        &rps,
        "--poll.interval",
        "1s",
        "--config.file",
        targets.to_str().expect("path"),
    ])
    .expect("flags parse")
    .into_config()
    .expect("valid configuration");
    let polling = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let polling_addr = polling.local_addr().expect("addr");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let exporter = rt.spawn(async move {
        talkover_exporter::run(config, polling, async move {
            let _ = stop_rx.await;
        })
        .await
        .map_err(|e| e.to_string())
    });
    let http = reqwest::Client::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        let ready = rt.block_on(async {
            http.get(format!("http://{polling_addr}/-/ready"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        });
        if ready {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "[scale] 3e: {BUDGET_WEBHOOKS} webhooks polled at {BUDGET_RPS} requests/s, ready after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let rate = |sim: &mut SimChild, window: &mut dyn FnMut()| {
        let (r0, t0) = (sim.log_requests(), Instant::now());
        window();
        (sim.log_requests() - r0) as f64 / t0.elapsed().as_secs_f64()
    };
    let quiet = rate(&mut sim, &mut || std::thread::sleep(Duration::from_secs(5)));
    let mut scraper = Scraper::spawn(&format!("http://{addr}/metrics"));
    let mut runs: Vec<FormatRun> = ScrapeFormat::ALL
        .into_iter()
        .map(|format| FormatRun {
            format,
            took: Vec::new(),
            bytes: 0,
        })
        .collect();
    for run in &mut runs {
        let _ = scraper.scrape_as(run.format, None);
    }
    let during = rate(&mut sim, &mut || {
        for _ in 0..FORMAT_SCRAPES {
            for run in &mut runs {
                if let Some((200, d, _, b)) = scraper.scrape_as(run.format, None) {
                    run.took.push(d);
                    run.bytes = b;
                }
            }
        }
    });
    for run in &mut runs {
        run.took.sort();
    }
    scraper.quit();
    let _ = stop_tx.send(());
    let _ = rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), exporter).await });
    drop(rt);
    sim.quit();
    let _ = std::fs::remove_file(&targets);
    (runs, (quiet, during))
}

/// 10,000 webhooks, each with a little traffic of several events,
/// statuses and codes: two events, success (200, 201) and failed (500,
/// none), durations spread from 80 ms to 6 s, attempts 1 to 3.
fn busy(published: Published) -> Published {
    use talkover_count::model::{
        AttemptKey, DeliveryCounts, Histogram, PollStats, TargetSnapshot, ATTEMPT_BUCKETS,
        DURATION_BUCKETS, LAG_BUCKETS,
    };
    for i in 0..WEBHOOKS {
        let mut counts = DeliveryCounts::default();
        for (status, code) in [
            ("success", "200"),
            ("success", "201"),
            ("failed", "500"),
            ("failed", "none"),
        ] {
            for event in ["campaign.started", "campaign_call.completed"] {
                counts.attempts.insert(
                    AttemptKey {
                        event: event.into(),
                        status: status.into(),
                        code: code.into(),
                    },
                    7,
                );
            }
            let duration = counts
                .duration
                .entry(status.into())
                .or_insert_with(Histogram::default);
            for d in [0.08, 0.2, 0.35, 1.2, 6.0] {
                duration.observe(DURATION_BUCKETS, d * (1.0 + (i % 7) as f64 / 10.0));
            }
            let attempt = counts
                .attempt_number
                .entry(status.into())
                .or_insert_with(Histogram::default);
            for a in [1.0, 2.0, 3.0] {
                attempt.observe(ATTEMPT_BUCKETS, a);
            }
            counts.last_attempt.insert(status.into(), 1.7e9);
        }
        for l in [0.3, 1.5, 40.0] {
            counts.lag.observe(LAG_BUCKETS, l);
        }
        let mut stats = PollStats {
            up: true,
            polls: 100,
            last_duration: Some(0.01),
            last_success: Some(1.7e9),
            ..PollStats::default()
        };
        stats.requests.insert(("success", "200".into()), 100);
        published.publish(TargetSnapshot {
            target: scale_target(i),
            counts,
            failures: Default::default(),
            stats,
            pending: 0,
            backlog: 0,
            settings: None,
        });
    }
    published
}

/// One whole body as the route sends it: gzip at the route's level 1.
fn render(published: &Published, format: ScrapeFormat) -> Vec<u8> {
    let exposition = format.exposition();
    let mut body = Vec::new();
    if format.gzip() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(1));
        published.render_chunks(exposition, &mut |c| gz.write_all(&c).is_ok());
        body = gz.finish().unwrap_or_default();
    } else {
        published.render_chunks(exposition, &mut |c| {
            body.extend_from_slice(&c);
            true
        });
    }
    body
}

/// Sample lines of a text body: the series Prometheus stores from it.
fn samples(body: &str) -> usize {
    body.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

/// Series per family (histogram lines folded into their family).
fn family_counts(body: &str) -> Vec<(String, usize)> {
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for line in body.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name = line.split(['{', ' ']).next().unwrap_or("");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        *per.entry(family.to_string()).or_default() += 1;
    }
    per.into_iter().collect()
}

/// Series a Prometheus with native histograms on stores from a protobuf
/// body: one per histogram, one per other sample.
fn native_series(mut body: &[u8]) -> usize {
    let mut n = 0;
    while !body.is_empty() {
        let Ok(family) = MetricFamily::decode_length_delimited(&mut body) else {
            break;
        };
        // Every metric is one series: a histogram's carries native buckets.
        n += family.metric.len();
    }
    n
}

/// The report sections, and the figures the summary checks.
pub(crate) fn formats_sections(run: &HourRun, fig: &mut ScaleFigures) -> [Section; 4] {
    let r = &run.renders;
    let mut wire = Section::new(
        "3b. Formats over loopback at 10,000 webhooks (the scale run's population)",
        &[
            "format",
            "bytes on the wire",
            "scrape p50 / p99 (to the last byte)",
        ],
    );
    let text_bytes = run
        .formats
        .iter()
        .find(|f| f.format == ScrapeFormat::Text)
        .map_or(1, |f| f.bytes.max(1));
    for f in &run.formats {
        let p99 = percentile(&f.took, 99.0);
        fig.overload_p99.push((f.format.word(), p99));
        wire.row(vec![
            f.format.word().into(),
            format!(
                "{:.1} MiB ({:.1} % of text)",
                f.bytes as f64 / 1048576.0,
                100.0 * f.bytes as f64 / text_bytes as f64
            ),
            format!("{} / {}", ms(percentile(&f.took, 50.0)), ms(p99)),
        ]);
    }
    let quiet = (run.rate_a + run.rate_c) / 2.0;
    fig.formats_polls = run.formats_rate / quiet.max(1e-9);
    wire.note(format!(
        "{FORMAT_SCRAPES} rounds of one scrape per format, back to back, by a scraper child sending Prometheus 2.42's Accept header (with native histograms on for the protobuf rows) and, for the gzip rows, Accept-Encoding: gzip. Polling meanwhile: {:.0} log requests per second, {:.0} % of the quiet rate. The machine is past full here: polling alone (sped up sixty times, over 200 times the default API budget) and the simulator take most of both cores, and renders run below polling's priority.",
        run.formats_rate,
        100.0 * fig.formats_polls
    ));

    let mut busy_wire = Section::new(
        "3c. Formats over loopback at 10,000 busy webhooks (every webhook with traffic)",
        &[
            "format",
            "series stored",
            "bytes on the wire",
            "scrape p50 / p99 (to the last byte)",
            "exporter CPU per scrape",
        ],
    );
    let busy_text = r
        .busy_wire
        .iter()
        .find(|(f, _)| f.format == ScrapeFormat::Text)
        .map_or(1, |(f, _)| f.bytes.max(1));
    for (f, cpu) in &r.busy_wire {
        let p99 = percentile(&f.took, 99.0);
        fig.format_p99.push((f.format.word(), p99));
        let series = r
            .runs
            .iter()
            .find(|x| x.population == BUSY && x.format == f.format.word())
            .map_or(0, |x| x.series);
        busy_wire.row(vec![
            f.format.word().into(),
            series.to_string(),
            format!(
                "{:.1} MiB ({:.1} % of text)",
                f.bytes as f64 / 1048576.0,
                100.0 * f.bytes as f64 / busy_text as f64
            ),
            format!("{} / {}", ms(percentile(&f.took, 50.0)), ms(p99)),
            format!("{:.0} ms", cpu * 1000.0),
        ]);
    }
    busy_wire.note(format!(
        "Served by the exporter's own routes on loopback with nothing else running (the scale run is over), {FORMAT_SCRAPES} scrapes per format after one to warm up, Prometheus 2.42's Accept headers as in 3b. Exporter CPU per scrape: the serving process's CPU-seconds over the scrapes, rendering, compressing and sending."
    ));

    let mut budget = Section::new(
        "3e. Formats over loopback at 10,000 busy webhooks, polling at a real API budget alongside",
        &[
            "format",
            "bytes on the wire",
            "scrape p50 / p99 (to the last byte)",
        ],
    );
    for f in &r.budget_wire {
        let p99 = percentile(&f.took, 99.0);
        fig.format_p99.push((f.format.word(), p99));
        budget.row(vec![
            f.format.word().into(),
            format!("{:.1} MiB", f.bytes as f64 / 1048576.0),
            format!("{} / {}", ms(percentile(&f.took, 50.0)), ms(p99)),
        ]);
    }
    let (quiet, during) = r.budget_rates;
    fig.budget_polls = during / quiet.max(1e-9);
    budget.note(format!(
        "The population of 3c served by the exporter's routes while an exporter in the same process, on the same runtime, polls {BUDGET_WEBHOOKS} webhooks of a simulator child every second with --talkover.max-requests-per-second {BUDGET_RPS} (20 times the default): they ask for more than that, so polling's pace is the budget. {FORMAT_SCRAPES} rounds of one scrape per format, as in 3b. Log requests per second: {quiet:.0} before the scrapes, {during:.0} during them ({:.0} %).",
        100.0 * fig.budget_polls
    ));

    let mut cost = Section::new(
        "3d. What each format costs, in-process, default families",
        &[
            "population",
            "format",
            "series stored",
            "body",
            "exporter CPU per scrape p50 / p99",
        ],
    );
    let of = |population: &str, w: ScrapeFormat| {
        r.runs
            .iter()
            .find(|x| x.population == population && x.format == w.word())
    };
    for x in &r.runs {
        let text = of(x.population, ScrapeFormat::Text).map_or(1, |t| t.bytes.max(1));
        cost.row(vec![
            x.population.into(),
            x.format.into(),
            x.series.to_string(),
            format!(
                "{:.1} MiB ({:.1} % of text)",
                x.bytes as f64 / 1048576.0,
                100.0 * x.bytes as f64 / text as f64
            ),
            format!("{} / {}", ms(x.cpu_p50), ms(x.cpu_p99)),
        ]);
    }
    let share = |population: &str, w: ScrapeFormat, f: fn(&RenderRun) -> usize| {
        let base = of(population, ScrapeFormat::Text).map_or(1, |t| f(t).max(1));
        of(population, w).map_or(f64::INFINITY, |x| f(x) as f64 / base as f64)
    };
    fig.gzip_share = share(BUSY, ScrapeFormat::TextGzip, |x| x.bytes);
    fig.native_share = share(BUSY, ScrapeFormat::Protobuf, |x| x.series);
    fig.native_share_mix = share(MIX, ScrapeFormat::Protobuf, |x| x.series);
    cost.note(format!(
        "Series stored: what Prometheus keeps of one scrape (with native histograms on, one series per histogram). CPU: thread CPU to render, and compress, one whole body. \"{BUSY}\": {} webhooks with two events, two success and two failure codes, durations from 80 ms to 6 s and attempts 1 to 3, as the issue measured.",
        r.webhooks
    ));
    cost.note(format!(
        "Series per busy webhook by family, every optional family on (classic buckets): {}. With every family on, {} series ({:.0} per webhook); with the defaults (no lag histogram), {} ({:.0} per webhook).",
        r.per_family
            .iter()
            .map(|(f, n)| format!("{f} {n:.0}"))
            .collect::<Vec<_>>()
            .join(", "),
        r.series_all,
        r.series_all as f64 / r.webhooks as f64,
        r.series_default,
        r.series_default as f64 / r.webhooks as f64,
    ));
    [wire, busy_wire, budget, cost]
}
