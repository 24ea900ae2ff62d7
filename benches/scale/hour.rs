//! 2 + 3. Scale and scrape: 10,000 discovered webhooks through a simulated hour, and `/metrics` while polling goes on.

use super::*;

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
    /// Scrape p99 of each format over loopback: served alone (3c), then
    /// with polling at a real API budget (3e).
    pub(crate) format_p99: Vec<(&'static str, Duration)>,
    /// Polling's rate during the 3e scrapes, as a share of its rate before.
    pub(crate) budget_polls: f64,
    /// Scrape p99 of each format beside the scale run's polling (3b).
    pub(crate) overload_p99: Vec<(&'static str, Duration)>,
    /// Poll rate during the format scrapes, as a share of the quiet rate.
    pub(crate) formats_polls: f64,
    /// gzip text bytes on the wire over plain text's.
    pub(crate) gzip_share: f64,
    /// Series with native histograms over the classic count, every
    /// webhook busy, and in the scale run's mostly idle population.
    pub(crate) native_share: f64,
    pub(crate) native_share_mix: f64,
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
    // The formats in turn, one scrape each round, so that each meets the
    // same load: as Prometheus 2.42 asks, polling alongside.
    eprintln!(
        "[scale] formats: {FORMAT_SCRAPES} rounds of {:?}",
        ScrapeFormat::ALL
    );
    let mut formats: Vec<FormatRun> = ScrapeFormat::ALL
        .into_iter()
        .map(|format| FormatRun {
            format,
            took: Vec::new(),
            bytes: 0,
        })
        .collect();
    let t0 = Instant::now();
    let r0 = sim.log_requests();
    for _ in 0..FORMAT_SCRAPES {
        for run in &mut formats {
            if Instant::now() >= hour + STEP_WALL * (minute + 1) {
                step(&mut sim, &mut minute, &mut rss);
            }
            if let Some((200, d, _, b)) = scraper.scrape_as(run.format, None) {
                run.took.push(d);
                run.bytes = b;
            }
        }
    }
    let formats_rate = (sim.log_requests() - r0) as f64 / t0.elapsed().as_secs_f64();
    for run in &mut formats {
        run.took.sort();
    }
    let scraper_cpu = scraper.cpu_s();
    scraper.quit();
    // Each webhook's polls and API requests, for section 4a.
    let status_json = rt
        .block_on(async {
            let resp = http
                .get(format!("http://{addr}/webhooks"))
                .header("accept", "application/json")
                .send()
                .await
                .ok()?;
            resp.text().await.ok()
        })
        .unwrap_or_default();
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
    eprintln!("[scale] every format and budget in-process from the shadow states");
    let renders = formats_in_process(&shadows);
    let body = std::fs::read_to_string(&body_path).unwrap_or_default();
    let _ = std::fs::remove_file(&body_path);
    report_hour(
        HourRun {
            fig,
            setup_s,
            ready_s,
            rss_before,
            rss_ready,
            rss_end,
            fds_before,
            rss,
            hour_scrapes,
            sizes_over_time,
            final_sizes,
            hour_wall,
            cpu_hour,
            sim_cpu_hour,
            exporter_cpu,
            sim_cpu,
            scraper_cpu,
            rate_a,
            rate_b,
            rate_c,
            win_a,
            win_b,
            win_c,
            took,
            body_bytes,
            body,
            status_json,
            formats,
            formats_rate,
            renders,
            render_p50,
            render_p99,
            render_bytes,
            task_bytes,
            shadows,
        },
        report,
    )
}

/// What the hour measured, for the report.
pub(crate) struct HourRun {
    pub(crate) fig: ScaleFigures,
    pub(crate) setup_s: f64,
    pub(crate) ready_s: f64,
    pub(crate) rss_before: u64,
    pub(crate) rss_ready: u64,
    pub(crate) rss_end: u64,
    pub(crate) fds_before: usize,
    /// Per simulated minute: (minute, resident KiB, open descriptors).
    pub(crate) rss: Vec<Sample>,
    /// Scrapes during the hour: (minute, time, bytes).
    pub(crate) hour_scrapes: Vec<(u32, Duration, usize)>,
    /// Dedupe state per class, by minute.
    pub(crate) sizes_over_time: Vec<(u32, ClassSizes)>,
    pub(crate) final_sizes: ClassSizes,
    pub(crate) hour_wall: f64,
    pub(crate) cpu_hour: f64,
    pub(crate) sim_cpu_hour: f64,
    pub(crate) exporter_cpu: f64,
    pub(crate) sim_cpu: f64,
    pub(crate) scraper_cpu: f64,
    pub(crate) rate_a: f64,
    pub(crate) rate_b: f64,
    pub(crate) rate_c: f64,
    /// The quiet, scraping and quiet windows of the scrape phase, with their log-request rates.
    pub(crate) win_a: (Instant, Instant),
    pub(crate) win_b: (Instant, Instant),
    pub(crate) win_c: (Instant, Instant),
    /// Each scrape of the scrape phase: (to the last byte, to the headers).
    pub(crate) took: Vec<(Duration, Duration)>,
    pub(crate) body_bytes: usize,
    pub(crate) body: String,
    /// `/webhooks` as JSON, after the scrapes.
    pub(crate) status_json: String,
    /// The scrapes of each format over loopback.
    pub(crate) formats: Vec<FormatRun>,
    /// Log requests served per second while they ran.
    pub(crate) formats_rate: f64,
    /// Each format and budget rendered in-process.
    pub(crate) renders: Renders,
    pub(crate) render_p50: Duration,
    pub(crate) render_p99: Duration,
    pub(crate) render_bytes: usize,
    pub(crate) task_bytes: usize,
    pub(crate) shadows: Arc<Mutex<Shadows>>,
}
