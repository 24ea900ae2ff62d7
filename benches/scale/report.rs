//! The report: sections of figures, the summary of goals, and docs/benchmarks.md.

use super::*;

pub(crate) struct Section {
    pub(crate) title: String,
    pub(crate) header: Vec<String>,
    pub(crate) rows: Vec<Vec<String>>,
    pub(crate) notes: Vec<String>,
}

impl Section {
    pub(crate) fn new(title: &str, header: &[&str]) -> Section {
        Section {
            title: title.to_string(),
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    pub(crate) fn note(&mut self, note: String) {
        self.notes.push(note);
    }
}

#[derive(Default)]
pub(crate) struct Report {
    pub(crate) machine: Vec<(String, String)>,
    pub(crate) summary: Option<Section>,
    pub(crate) sections: Vec<Section>,
    pub(crate) economy_misses: Vec<String>,
}

impl Report {
    pub(crate) fn machine(&mut self) {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |name: &str| {
            cpuinfo
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_default()
        };
        let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
        let mem = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .next()
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|n| n.parse::<u64>().ok())
            })
            .map_or_else(String::new, |k| format!("{:.1} GiB", k as f64 / 1048576.0));
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let run = |cmd: &str, args: &[&str]| {
            Command::new(cmd)
                .args(args)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default()
        };
        let commit = run("git", &["rev-parse", "--short", "HEAD"]);
        let dirty = !run("git", &["status", "--porcelain", "--", "src"]).is_empty();
        let date = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        self.machine = vec![
            ("command".into(), "`cargo bench --features bench --bench scale`".into()),
            ("date".into(), date),
            (
                "commit".into(),
                format!(
                    "{commit}{}",
                    if dirty { " (src/ with uncommitted changes)" } else { "" }
                ),
            ),
            (
                "machine".into(),
                format!(
                    "{nproc} CPUs ({}, {} MHz, {} cache), {mem} RAM, Linux {}; shared with other work",
                    field("model name"),
                    field("cpu MHz"),
                    field("cache size"),
                    kernel.trim()
                ),
            ),
            ("rustc".into(), run("rustc", &["--version"])),
            (
                "build".into(),
                "bench profile = release (thin LTO, codegen-units 4)".into(),
            ),
        ];
    }

    pub(crate) fn summary(
        &mut self,
        ingest: &IngestFigures,
        scale: &ScaleFigures,
        state: &StateFileFigures,
        took: Duration,
    ) {
        let mut s = Section::new("Summary", &["goal", "figure", "target", "verdict"]);
        let (fast_off, fast_on) = state.fast;
        let (slow_off, slow_on) = state.slow;
        let cpu_ratio = fast_on.cpu_s
            / fast_on.counted.max(1.0)
            / (fast_off.cpu_s / fast_off.counted.max(1.0)).max(1e-12);
        let fast_bytes = fast_on.write_bytes as f64 / fast_on.counted.max(1.0);
        let slow_bytes = slow_on.write_bytes as f64 / slow_on.counted.max(1.0);
        s.row(vec![
            "state file: CPU at 2,000 entries/s".into(),
            format!("{cpu_ratio:.2}x the run without --state.file"),
            format!("≤ {GOAL_STATE_CPU}x"),
            verdict(cpu_ratio <= GOAL_STATE_CPU),
        ]);
        s.row(vec![
            "state file: written per entry counted".into(),
            format!(
                "{fast_bytes:.0} B at 2,000/s, {slow_bytes:.0} B at 200/s ({:.0} B/s without the file at 200/s)",
                slow_off.write_bytes as f64 / slow_off.seconds.max(1.0)
            ),
            format!("≤ {GOAL_STATE_BYTES_FAST:.0} B, ≤ {GOAL_STATE_BYTES_SLOW:.0} B"),
            verdict(fast_bytes <= GOAL_STATE_BYTES_FAST && slow_bytes <= GOAL_STATE_BYTES_SLOW),
        ]);
        s.row(vec![
            "state file: restart of 2,000 webhooks".into(),
            format!(
                "restored counters on /metrics after {}, ready after {}",
                ms(state.restart.0),
                ms(state.restart.1)
            ),
            "≤ 2 s plus the first polls".into(),
            verdict(state.restart.0 <= Duration::from_secs(2)),
        ]);
        s.row(vec![
            "ingest CPU vs bare fetch+parse floor".into(),
            format!(
                "{:.2}x (median of {INGEST_ROUNDS} rounds; best rounds {:.2}x); {:.0} entries counted per CPU-second; {:.2}x the serde_json::Value floor",
                ingest.ratio_median,
                ingest.ratio(),
                ingest.entries_counted as f64 / ingest.exporter.thread_s,
                ingest.exporter.thread_s / ingest.floor_value.thread_s
            ),
            format!("≤ {GOAL_INGEST_RATIO}x"),
            verdict(ingest.ratio_median <= GOAL_INGEST_RATIO),
        ]);
        s.row(vec![
            "dedupe state per idle webhook".into(),
            format!(
                "idle webhooks (scale run): avg {:.0} B, max {} B; 11+ min after a 300-attempt burst: {} B (right after it: {} B, the 10-minute window)",
                scale.idle_state_avg,
                scale.idle_state_max,
                scale.burst_state_settled,
                scale.burst_state_fresh
            ),
            "< 2 KiB".into(),
            verdict(
                scale.idle_state_max < GOAL_IDLE_STATE
                    && scale.burst_state_settled < GOAL_IDLE_STATE,
            ),
        ]);
        s.row(vec![
            "memory, 10k webhooks, flat over an hour".into(),
            format!(
                "{:.1} KiB per webhook after the hour ({:.1} KiB when ready); RSS {:+.1} % from minute 30 to 60 (the /metrics body {:+.1} %: new label combinations); open connections up to {} in the hour, {} with scrapes running",
                scale.per_webhook_kib,
                scale.per_webhook_ready_kib,
                scale.rss_growth_pct,
                scale.body_growth_pct,
                scale.fds_max_hour,
                scale.fds_max
            ),
            "flat (< 5 %)".into(),
            verdict(scale.rss_growth_pct.abs() < 5.0),
        ]);
        s.row(vec![
            "/metrics render, 10k webhooks".into(),
            format!(
                "whole scrape (request to last byte, streamed) p50 {} / p99 {} for {:.1} MiB, {} series; render alone p99 {}",
                ms(scale.scrape_p50),
                ms(scale.scrape_p99),
                scale.scrape_bytes as f64 / 1048576.0,
                scale.series,
                ms(scale.render_p99),
            ),
            format!("p99 < {}", ms(GOAL_SCRAPE_P99)),
            verdict(scale.scrape_p99 < GOAL_SCRAPE_P99 && scale.render_p99 < GOAL_SCRAPE_P99),
        ]);
        s.row(vec![
            "polling during scrapes".into(),
            format!(
                "{:.0} % of the quiet poll rate (50 scrapes back to back); poll latency p50 {} → {}, p99 {} → {}",
                100.0 * scale.polls_ratio,
                ms(scale.poll_latency[0]),
                ms(scale.poll_latency[2]),
                ms(scale.poll_latency[1]),
                ms(scale.poll_latency[3])
            ),
            "≥ 90 %".into(),
            verdict(scale.polls_ratio >= 0.9),
        ]);
        let worst = |p99: &[(&'static str, Duration)]| {
            p99.iter().map(|f| f.1).max().unwrap_or(Duration::MAX)
        };
        let list = |p99: &[(&'static str, Duration)]| {
            p99.iter()
                .map(|(f, d)| format!("{f} {}", ms(*d)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        s.row(vec![
            "scrape formats, 10k webhooks (3c alone, 3e polling at a real API budget)".into(),
            format!(
                "gzip text {:.1} % of plain text; series with native histograms {:.1} % of classic with every webhook busy ({:.0} % in the mostly idle scale run); p99 over loopback, 3c then 3e: {}; polling in 3e {:.0} % of its pace",
                100.0 * scale.gzip_share,
                100.0 * scale.native_share,
                100.0 * scale.native_share_mix,
                list(&scale.format_p99),
                100.0 * scale.budget_polls.min(9.99),
            ),
            format!(
                "gzip ≤ {:.0} %, native ≤ {:.0} %, every p99 < {}, polling ≥ 90 %",
                100.0 * GOAL_GZIP_SHARE,
                100.0 * GOAL_NATIVE_SHARE,
                ms(GOAL_SCRAPE_P99)
            ),
            verdict(
                scale.format_p99.len() == 2 * ScrapeFormat::ALL.len()
                    && scale.gzip_share <= GOAL_GZIP_SHARE
                    && scale.native_share <= GOAL_NATIVE_SHARE
                    && worst(&scale.format_p99) < GOAL_SCRAPE_P99
                    && scale.budget_polls >= 0.9,
            ),
        ]);
        s.row(vec![
            "scrape formats beside the scale run's polling (3b, machine past full)".into(),
            format!(
                "p99 over loopback {}; polling {:.0} % of quiet",
                list(&scale.overload_p99),
                100.0 * scale.formats_polls.min(9.99),
            ),
            format!("every p99 < {}, polling ≥ 90 %", ms(GOAL_SCRAPE_P99)),
            verdict(
                !scale.overload_p99.is_empty()
                    && worst(&scale.overload_p99) < GOAL_SCRAPE_P99
                    && scale.formats_polls >= 0.9,
            ),
        ]);
        s.row(vec![
            "API requests per poll".into(),
            format!(
                "scale run: idle {:.3}, busy {:.3}; controlled (4b): {}",
                scale.idle_requests_per_poll,
                scale.busy_requests_per_poll,
                if self.economy_misses.is_empty() {
                    "all within the formula".to_string()
                } else {
                    format!("over the bound in {}", self.economy_misses.join("; "))
                }
            ),
            "idle 1; busy ≤ ceil(new/100)+1 (a burst beyond --poll.max-pages: +2 per extra poll)"
                .into(),
            if (scale.idle_requests_per_poll - 1.0).abs() > 1e-9 {
                verdict(false)
            } else if self.economy_misses.is_empty() {
                verdict(true)
            } else if self.economy_misses.iter().all(|m| m.starts_with("oldest")) {
                "met newest-first; missed oldest-first".into()
            } else {
                verdict(false)
            },
        ]);
        self.machine.push((
            "bench wall time".into(),
            format!("{:.0} s", took.as_secs_f64()),
        ));
        self.summary = Some(s);
    }

    pub(crate) fn all_sections(&self) -> impl Iterator<Item = &Section> {
        self.summary.iter().chain(&self.sections)
    }

    pub(crate) fn emit(&self, write_docs: bool) {
        let mut text = String::new();
        let _ = writeln!(text, "\n== talkover-exporter scale benchmark ==");
        for (k, v) in &self.machine {
            let _ = writeln!(text, "{k:>16}: {v}");
        }
        for s in self.all_sections() {
            let _ = writeln!(text, "\n-- {} --", s.title);
            let mut widths: Vec<usize> = s.header.iter().map(|h| h.chars().count()).collect();
            for r in &s.rows {
                for (i, c) in r.iter().enumerate() {
                    if i < widths.len() {
                        widths[i] = widths[i].max(c.chars().count());
                    }
                }
            }
            let line = |cells: &[String]| {
                cells
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let pad = widths
                            .get(i)
                            .copied()
                            .unwrap_or(0)
                            .saturating_sub(c.chars().count());
                        format!("{c}{}", " ".repeat(pad))
                    })
                    .collect::<Vec<_>>()
                    .join(" | ")
            };
            let _ = writeln!(text, "{}", line(&s.header));
            for r in &s.rows {
                let _ = writeln!(text, "{}", line(r));
            }
            for n in &s.notes {
                let _ = writeln!(text, "  * {n}");
            }
        }
        println!("{text}");

        let mut md = String::new();
        let _ = writeln!(md, "# Benchmarks\n");
        let _ = writeln!(
            md,
            "Written by `cargo bench --features bench --bench scale` (`benches/scale/`); rerun it to refresh this page. \
             The simulator runs in a child process, so CPU and memory below are the exporter's alone. \
             Figures from one run on a shared machine: expect some noise.\n"
        );
        for (k, v) in &self.machine {
            let _ = writeln!(md, "- **{k}**: {v}");
        }
        for s in self.all_sections() {
            let _ = writeln!(md, "\n## {}\n", s.title);
            let _ = writeln!(md, "| {} |", s.header.join(" | "));
            let _ = writeln!(md, "|{}", "---|".repeat(s.header.len()));
            for r in &s.rows {
                let cells: Vec<String> = r.iter().map(|c| c.replace('|', "\\|")).collect();
                let _ = writeln!(md, "| {} |", cells.join(" | "));
            }
            if !s.notes.is_empty() {
                let _ = writeln!(md);
                for n in &s.notes {
                    let _ = writeln!(md, "- {n}");
                }
            }
        }
        if !write_docs {
            return;
        }
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        let path = dir.join("benchmarks.md");
        match std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&path, md)) {
            Ok(()) => println!("written to {}", path.display()),
            Err(e) => eprintln!("could not write {}: {e}", path.display()),
        }
    }
}
