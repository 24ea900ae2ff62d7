//! The scale run's report: memory over the hour, `/metrics` while polling
//! goes on, and requests per poll.

use super::*;

/// The memory, scrape and API-economy sections of the report, and the
/// figures the summary checks against the goals.
pub(crate) fn report_hour(run: HourRun, report: &mut Report) -> ScaleFigures {
    let mut fig = run.fig.clone();
    report.sections.push(memory_section(&run, &mut fig));
    report.sections.push(scrape_section(&run, &mut fig));
    report.sections.extend(formats_sections(&run, &mut fig));
    report.sections.push(economy_section(&run, &mut fig));
    fig
}

/// Memory over the hour, and the dedupe state each class of webhook keeps.
fn memory_section(run: &HourRun, fig: &mut ScaleFigures) -> Section {
    let HourRun {
        cpu_hour,
        fds_before,
        ref final_sizes,
        ref hour_scrapes,
        hour_wall,
        ready_s,
        ref rss,
        rss_before,
        rss_end,
        rss_ready,
        setup_s,
        sim_cpu_hour,
        ref sizes_over_time,
        task_bytes,
        ..
    } = *run;
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
        "size of one poller's future (`collect::run_target`, not yet polled)".into(),
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
    sec.note("The simulator's clock runs ahead of the wall clock (that is how the hour is compressed), so to the exporter every entry of the scale run is recent: rules keyed to the wall clock (an idle webhook forgets its last burst ten minutes after it) cannot act there. The 'burst ended N min ago' rows check that with a log served from memory with real timestamps (`collect::poll_once`, 50 entries two hours old, then 300 in 30 s ending N minutes ago, then an idle poll).".to_string());
    sec.note(format!(
        "Dedupe state is measured on {SHADOWS_PER_CLASS} webhooks per class polled by the same `collect::poll_once` at the same interval, on the exporter's runtime (the exporter's own `TargetState`s are not reachable from outside); bytes are `serde_json` of `TargetState` with `counts` emptied (what `persist` (the committer) stores, minus counters)."
    ));
    sec
}

/// `/metrics` while polling goes on: time, size, and polling's pace.
fn scrape_section(run: &HourRun, fig: &mut ScaleFigures) -> Section {
    let HourRun {
        ref body,
        body_bytes,
        exporter_cpu,
        ref hour_scrapes,
        rate_a,
        rate_b,
        rate_c,
        render_bytes,
        render_p50,
        render_p99,
        ref rss,
        scraper_cpu,
        ref shadows,
        sim_cpu,
        ref took,
        win_a,
        win_b,
        win_c,
        ..
    } = *run;
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
        series_per_family(body),
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
    sec
}

/// Requests per poll in the scale run, from the final scrape.
fn economy_section(run: &HourRun, fig: &mut ScaleFigures) -> Section {
    let HourRun {
        ref body,
        ref status_json,
        ..
    } = *run;
    let classes = per_class(status_json, body);
    let mut sec = Section::new(
        "4a. API economy in the scale run (each webhook's API requests / polls, from /webhooks)",
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
    sec
}
