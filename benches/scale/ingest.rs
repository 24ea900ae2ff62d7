//! 1. Ingest: CPU per counted entry against a bare client that only fetches and parses (the floor).

use super::*;

/// Pages fetched and parsed beforehand, each handed over (moved) once, so
/// `poll_once` over it costs only the collector's own work.
#[derive(Default)]
pub(crate) struct MemorySource {
    pub(crate) pages: Mutex<BTreeMap<(Target, u64), talkover_count::api::LogPage>>,
}

impl MemorySource {
    pub(crate) fn put(&self, target: &Target, page: u64, p: talkover_count::api::LogPage) {
        self.pages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((target.clone(), page), p);
    }
}

impl talkover_count::collect::PageSource for MemorySource {
    async fn fetch_logs(
        &self,
        target: &Target,
        page: u64,
        _per_page: u32,
    ) -> Result<talkover_count::api::LogPage, talkover_count::api::ApiError> {
        self.pages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(target.clone(), page))
            .ok_or_else(|| talkover_count::api::ApiError::Http {
                path: format!("{target} page {page}"),
                status: 404,
            })
    }
}

/// The floor: only the fields the exporter reads, everything else skipped.
#[derive(Deserialize)]
pub(crate) struct FloorPage<'a> {
    #[serde(borrow)]
    pub(crate) data: Vec<FloorEntry<'a>>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
pub(crate) struct FloorEntry<'a> {
    pub(crate) id: Option<String>,
    pub(crate) event: Option<String>,
    pub(crate) status: Option<String>,
    pub(crate) attempt: Option<i64>,
    pub(crate) http_status: Option<i64>,
    pub(crate) duration_ms: Option<f64>,
    pub(crate) created_at: Option<String>,
    pub(crate) delivered_at: Option<String>,
    /// Read for failed attempts' pages: a string, or any JSON for the
    /// body. Borrowed, not copied: the least any client reading them does.
    #[serde(borrow)]
    pub(crate) error: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    pub(crate) response_body: Option<&'a serde_json::value::RawValue>,
}

/// A looser floor: every entry as a `serde_json::Value`.
#[derive(Deserialize)]
pub(crate) struct ValuePage {
    pub(crate) data: Vec<serde_json::Value>,
}

/// The floors' fetch: a plain GET, the body whole.
pub(crate) async fn bare_get(
    http: &reqwest::Client,
    url: &str,
) -> impl std::ops::Deref<Target = [u8]> {
    http.get(url)
        .send()
        .await
        .expect("GET")
        .bytes()
        .await
        .expect("body")
}

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IngestFigures {
    /// Median over rounds of the per-round exporter/floor ratio.
    pub(crate) ratio_median: f64,
    pub(crate) entries_counted: u64,
    pub(crate) entries_read: u64,
    pub(crate) pages: u64,
    pub(crate) bytes_per_entry: f64,
    pub(crate) exporter: Spent,
    /// `poll_once` over the same pages served from memory: the collector alone.
    pub(crate) collector_only: Spent,
    pub(crate) client_only: Spent,
    pub(crate) floor_struct: Spent,
    pub(crate) floor_value: Spent,
}

impl IngestFigures {
    pub(crate) fn ratio(&self) -> f64 {
        self.exporter.thread_s / self.floor_struct.thread_s
    }
}

pub(crate) fn ingest(report: &mut Report) -> IngestFigures {
    eprintln!("[ingest] starting the simulator child");
    let mut sim = SimChild::spawn("ingest", &[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let base = sim.url();
    let client = exporter_client(&base);
    let bare = reqwest::Client::builder().build().expect("bare client");
    let targets: Vec<Target> = (0..INGEST_WEBHOOKS).map(ingest_target).collect();
    let config = PollConfig {
        interval: Duration::from_secs(1),
        // Enough for a whole round's new entries in one poll.
        max_pages: 1_000,
        per_page: 100,
        failures: talkover_count::model::FailurePolicy::default(),
    };
    // The exporter reads the new entries' pages plus the one where it
    // meets an entry it knew: the other paths read the same pages.
    let pages_each = (INGEST_NEW as u64 + 1).div_ceil(100);
    let urls: Vec<String> = targets
        .iter()
        .flat_map(|t| {
            let base = base.clone();
            (1..=pages_each)
                .map(move |page| format!("{base}{}?page={page}&per_page=100", t.logs_path()))
        })
        .collect();
    let mut rounds: Vec<IngestFigures> = Vec::new();
    let mut pages_mismatch = false;
    for round in 0..INGEST_ROUNDS {
        let mut states = vec![TargetState::default(); targets.len()];
        let mut stats = vec![PollStats::default(); targets.len()];
        // A second set of states, baselined at the same moment, for the
        // collector-alone path.
        let mut mem_states = vec![TargetState::default(); targets.len()];
        let mut mem_stats = vec![PollStats::default(); targets.len()];
        rt.block_on(async {
            for (i, t) in targets.iter().enumerate() {
                poll_once(&client, t, &config, &mut states[i], &mut stats[i])
                    .await
                    .expect("baseline poll");
                poll_once(&client, t, &config, &mut mem_states[i], &mut mem_stats[i])
                    .await
                    .expect("baseline poll");
            }
        });
        let requests_before: u64 = stats.iter().map(|s| s.requests.values().sum::<u64>()).sum();
        let counted_before: u64 = states
            .iter()
            .map(|s| s.counts.attempts.values().sum::<u64>())
            .sum();
        // What the baseline polls counted (attempts made within the clock
        // offset's second before the moment) is not this round's work.
        let mem_counted_before: u64 = mem_states
            .iter()
            .map(|s| s.counts.attempts.values().sum::<u64>())
            .sum();
        sim.cmd(&format!("gen_all {INGEST_NEW}"));
        let mut f = IngestFigures::default();
        // The same pages, fetched and parsed now (not measured), for the
        // collector-alone path.
        let memory = MemorySource::default();
        rt.block_on(async {
            for t in &targets {
                for page in 1..=pages_each {
                    let p = client.fetch_logs(t, page, 100).await.expect("page");
                    memory.put(t, page, p);
                }
            }
        });
        let (mut bytes_read, mut floor_entries) = (0u64, 0u64);
        // Each webhook's pages go through the five paths back to back, in an
        // order rotating with the webhook and the round: slices of a few
        // milliseconds, so a burst of other work on this shared machine
        // lands on every path alike instead of on whichever ran during it.
        for (i, t) in targets.iter().enumerate() {
            let pages = pages_each as usize;
            let t_urls = &urls[i * pages..(i + 1) * pages];
            for k in 0..5 {
                match (k + round + i) % 5 {
                    4 => {
                        // (e) the collector alone: poll_once over pages handed over from memory.
                        let m = Meter::start();
                        rt.block_on(poll_once(
                            &memory,
                            t,
                            &config,
                            &mut mem_states[i],
                            &mut mem_stats[i],
                        ))
                        .expect("collector poll");
                        f.collector_only += m.stop();
                    }
                    0 => {
                        // (a) the exporter: one poll reads all the webhook's new entries.
                        let m = Meter::start();
                        rt.block_on(poll_once(
                            &client,
                            t,
                            &config,
                            &mut states[i],
                            &mut stats[i],
                        ))
                        .expect("ingest poll");
                        f.exporter += m.stop();
                    }
                    1 => {
                        // (b) the exporter's API client alone: HTTP + LogEntry parsing.
                        let m = Meter::start();
                        let n = rt.block_on(async {
                            let mut n = 0u64;
                            for page in 1..=pages_each {
                                n += client
                                    .fetch_logs(t, page, 100)
                                    .await
                                    .expect("page")
                                    .entries
                                    .len() as u64;
                            }
                            n
                        });
                        f.client_only += m.stop();
                        f.entries_read += n;
                    }
                    2 => {
                        // (c) the floor: bare reqwest + serde into a minimal struct.
                        let m = Meter::start();
                        let (n, bytes) = rt.block_on(async {
                            let (mut n, mut bytes, mut ok) = (0u64, 0u64, 0u64);
                            for url in t_urls {
                                let body = bare_get(&bare, url).await;
                                bytes += body.len() as u64;
                                let page: FloorPage =
                                    serde_json::from_slice(&body).expect("floor parse");
                                n += page.data.len() as u64;
                                ok += page
                                    .data
                                    .iter()
                                    .filter(|e| e.status.as_deref() == Some("success"))
                                    .count() as u64;
                            }
                            std::hint::black_box(ok);
                            (n, bytes)
                        });
                        f.floor_struct += m.stop();
                        bytes_read += bytes;
                        floor_entries += n;
                    }
                    3 => {
                        // (d) a looser floor: serde_json::Value.
                        let m = Meter::start();
                        rt.block_on(async {
                            let mut n = 0u64;
                            for url in t_urls {
                                let body = bare_get(&bare, url).await;
                                let page: ValuePage =
                                    serde_json::from_slice(&body).expect("value parse");
                                n += page.data.len() as u64;
                            }
                            std::hint::black_box(n)
                        });
                        f.floor_value += m.stop();
                    }
                    _ => unreachable!("five paths"),
                }
            }
        }
        f.bytes_per_entry = bytes_read as f64 / floor_entries.max(1) as f64;
        f.entries_counted = states
            .iter()
            .map(|s| s.counts.attempts.values().sum::<u64>())
            .sum::<u64>()
            - counted_before;
        let pages = stats
            .iter()
            .map(|s| s.requests.values().sum::<u64>())
            .sum::<u64>()
            - requests_before;
        pages_mismatch |= pages != pages_each * targets.len() as u64;
        let mem_counted: u64 = mem_states
            .iter()
            .map(|s| s.counts.attempts.values().sum::<u64>())
            .sum::<u64>()
            - mem_counted_before;
        if mem_counted != f.entries_counted {
            eprintln!(
                "[ingest] NOTE: the collector-alone path counted {mem_counted}, the exporter {}",
                f.entries_counted
            );
        }
        f.pages = pages_each * targets.len() as u64;
        eprintln!(
            "[ingest] round {}: counted {} in {:.3}s CPU (process {:.2}s, wall {:.2}s); client {:.3}s; floor {:.3}s; value floor {:.3}s; ratio {:.2}",
            round + 1,
            f.entries_counted,
            f.exporter.thread_s,
            f.exporter.process_s,
            f.exporter.wall_s,
            f.client_only.thread_s,
            f.floor_struct.thread_s,
            f.floor_value.thread_s,
            f.ratio()
        );
        rounds.push(f);
    }
    let micro = collector_micro_costs(&rt, &client, &targets[0]);
    sim.quit();

    // Best of N per path: interference from other work only ever adds CPU
    // time, so the minimum is the steadiest estimate of each path's cost.
    let best = |pick: fn(&IngestFigures) -> Spent| {
        rounds
            .iter()
            .map(pick)
            .min_by(|a, b| a.thread_s.total_cmp(&b.thread_s))
            .unwrap_or_default()
    };
    let mut f = IngestFigures {
        exporter: best(|r| r.exporter),
        collector_only: best(|r| r.collector_only),
        client_only: best(|r| r.client_only),
        floor_struct: best(|r| r.floor_struct),
        floor_value: best(|r| r.floor_value),
        ..rounds[0]
    };
    let mut ratios: Vec<f64> = rounds.iter().map(IngestFigures::ratio).collect();
    ratios.sort_by(f64::total_cmp);
    let ratio_median = ratios[ratios.len() / 2];
    f.ratio_median = ratio_median;
    let ratios: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    let per_entry = |s: Spent, n: u64| format!("{:.2} µs", s.thread_s * 1e6 / n.max(1) as f64);
    let mut sec = Section::new(
        "1. Ingest: CPU per log entry (this process only; the simulator runs in a child)",
        &[
            "path",
            "CPU s",
            "per entry read",
            "entries/CPU-s",
            "vs floor",
        ],
    );
    let row = |name: &str, s: Spent, n: u64| {
        vec![
            name.to_string(),
            format!("{:.3}", s.thread_s),
            per_entry(s, f.entries_read),
            format!("{:.0}", n as f64 / s.thread_s),
            format!("{:.2}x", s.thread_s / f.floor_struct.thread_s),
        ]
    };
    sec.row(row(
        "exporter: collect::poll_once + api::Client",
        f.exporter,
        f.entries_counted,
    ));
    sec.row(row(
        "collect::poll_once alone (same pages, parsed beforehand)",
        f.collector_only,
        f.entries_counted,
    ));
    sec.row(row(
        "api::Client::fetch_logs alone (same pages)",
        f.client_only,
        f.entries_read,
    ));
    sec.row(row(
        "floor: reqwest + serde minimal struct",
        f.floor_struct,
        f.entries_read,
    ));
    sec.row(row(
        "floor: reqwest + Vec<serde_json::Value>",
        f.floor_value,
        f.entries_read,
    ));
    sec.note(format!(
        "{} webhooks x {} new entries per round ({} counted, {} read in {} pages of 100, {:.0} bytes of JSON per entry, `request_payload` etc. included); {} rounds; within a round each webhook's pages go through the five paths back to back, in rotating order, so the paths share the machine's noise; each path's best round shown. Per-round exporter/floor ratios (sorted): {} (median {:.2}, the headline figure).",
        INGEST_WEBHOOKS,
        INGEST_NEW,
        f.entries_counted,
        f.entries_read,
        f.pages,
        f.bytes_per_entry,
        INGEST_ROUNDS,
        ratios.join(", "),
        ratio_median
    ));
    sec.note(format!(
        "CPU is this thread's (`CLOCK_THREAD_CPUTIME_ID`): each path runs alone on one current-thread tokio runtime, so its HTTP and parsing all run here; whole-process CPU (10 ms ticks) for the exporter's best pass: {:.2} s.{}",
        f.exporter.process_s,
        if pages_mismatch { " NOTE: the exporter read a different number of pages than expected in some round." } else { "" }
    ));
    sec.note(format!(
        "Split of the exporter's CPU: API client (HTTP + `LogEntry` parsing) {:.0} %, collector (dedupe, counting, timestamps; measured alone on pages parsed beforehand) {:.0} %. Against the floor the exporter spends {:.2} µs more per entry, of which the collector {:.2} µs.",
        100.0 * f.client_only.thread_s / f.exporter.thread_s,
        100.0 * f.collector_only.thread_s / f.exporter.thread_s,
        (f.exporter.thread_s - f.floor_struct.thread_s) * 1e6 / f.entries_read.max(1) as f64,
        f.collector_only.thread_s * 1e6 / f.entries_read.max(1) as f64
    ));
    sec.note(micro);
    report.sections.push(sec);
    f
}

/// Costs of the collector's pieces that are public, per entry, on 10,000
/// entries of one webhook (best of 5 passes each, wall clock): where its time goes.
pub(crate) fn collector_micro_costs(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    target: &Target,
) -> String {
    use std::hint::black_box;
    use talkover_count::api::parse_timestamp_ms;
    use talkover_count::collect::{is_final, record, Judge};
    use talkover_count::model::DeliveryCounts;
    let entries: Vec<talkover_count::api::LogEntry> = rt.block_on(async {
        let mut all = Vec::new();
        for page in 1..=100 {
            all.extend(
                client
                    .fetch_logs(target, page, 100)
                    .await
                    .expect("page")
                    .entries,
            );
        }
        all
    });
    let n = entries.len().max(1) as f64;
    // Wall clock, best of 5: these passes are shorter than the scheduler
    // tick that thread CPU time advances by.
    let best_ns = |f: &mut dyn FnMut()| {
        (0..5)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_nanos() as f64
            })
            .fold(f64::INFINITY, f64::min)
            / n
    };
    let created: Vec<i64> = entries
        .iter()
        .map(|e| {
            e.created_at
                .as_deref()
                .and_then(parse_timestamp_ms)
                .unwrap_or(0)
        })
        .collect();
    let ts = best_ns(&mut || {
        for e in &entries {
            black_box(e.created_at.as_deref().and_then(parse_timestamp_ms));
        }
    });
    let rec = best_ns(&mut || {
        let mut counts = DeliveryCounts::default();
        for (e, c) in entries.iter().zip(&created) {
            let judge = Judge::new(None, *c);
            record(
                &mut counts,
                e.id.as_deref().unwrap_or(""),
                e,
                Some(*c),
                &judge,
            );
        }
        black_box(counts);
    });
    let fin = best_ns(&mut || {
        for e in &entries {
            black_box(is_final(e));
        }
    });
    // What `Poll::apply` does with ids per new entry: look the borrowed id
    // up in `handled` and `pending`, then store two owned copies of it (in
    // `new_this_poll` and `handled`), with the collector's hasher.
    let ids = best_ns(&mut || {
        let mut handled: foldhash::HashMap<String, i64> = Default::default();
        let pending: foldhash::HashMap<String, i64> = Default::default();
        let mut new_this_poll: foldhash::HashSet<String> = Default::default();
        for (e, c) in entries.iter().zip(&created) {
            let id = e.id.as_deref().unwrap_or_default();
            if handled.contains_key(id) || pending.contains_key(id) {
                continue;
            }
            new_this_poll.insert(id.to_string());
            handled.insert(id.to_string(), *c);
        }
        black_box((handled, new_this_poll));
    });
    format!(
        "Collector pieces, per counted entry (10,000 entries, best of 5, wall clock): `collect::record` {rec:.0} ns (labels are looked up borrowed: nothing is allocated once a series exists); `api::parse_timestamp_ms` {ts:.0} ns per call, twice per counted entry (`created_at`, `delivered_at`); id bookkeeping as in `Poll::apply` (two lookups, two owned copies of each new id, foldhash) {ids:.0} ns; `is_final` {fin:.0} ns."
    )
}
