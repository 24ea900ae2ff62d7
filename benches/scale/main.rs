//! `cargo bench --features bench --bench scale`: the exporter at scale, against the simulator
//! on loopback, in one run (a few minutes on two cores).
//!
//! 1. **Ingest**: CPU time the exporter spends per log entry it counts,
//!    against a bare client that only fetches the same pages and parses them
//!    with serde (the floor).
//! 2. **Scale**: 10,000 discovered webhooks through an hour of simulated
//!    traffic: resident memory over time, per webhook, and the dedupe state
//!    an idle webhook keeps.
//! 3. **Scrape**: time and size of `/metrics` with 10,000 webhooks, and
//!    whether polling keeps its pace while scrapes render; then each format
//!    side by side (text, gzip text, protobuf with native histograms, gzip
//!    protobuf): series, bytes on the wire, time, CPU per scrape, and the
//!    series each family costs.
//! 4. **API economy**: requests per poll, idle and busy, against the formula.
//! 5. **State file**: the exporter binary with and without `--state.file`,
//!    side by side: CPU per 1k entries and bytes written per entry at 2,000
//!    and 200 attempts/s, commits per second, the file's size; then a
//!    restart of 2,000 webhooks from a full file.
//!
//! The simulator runs in a child process (this binary again, with
//! `SCALE_BENCH_ROLE=sim`), so the CPU and memory measured here are the
//! exporter's alone. The child takes one command per line on stdin and
//! answers one line on stdout. Scrapes come from a third process (playing
//! Prometheus), so reading 66 MiB bodies does not count either. Figures go
//! to stdout and to `docs/benchmarks.md`; nothing is asserted.
//!
//! Knobs for investigating (only a run without `SCALE_BENCH_ONLY` rewrites
//! `docs/benchmarks.md`):
//! `SCALE_BENCH_ONLY=scale|economy|ingest|statefile` runs one part;
//! `SCALE_BENCH_HOUR_SCRAPES=0` leaves out the scrapes during the hour;
//! `SCALE_BENCH_RPS=N` sets `--talkover.max-requests-per-second` (default
//! 100000, i.e. unlimited); `SCALE_BENCH_PAYLOAD=BYTES` pads each entry's
//! `request_payload` in the ingest part. (The `SCALE_BENCH_POOL` A/B
//! experiment that chose the API client's cap of 32 requests in flight
//! is gone: it re-implemented `run()` and the client's envelope parsing.)

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser as _;
use serde::Deserialize;
use talkover_count::collect::{poll_once, PollConfig};
use talkover_count::model::{PollStats, TargetState};
use talkover_count::target::Target;
use talkover_exporter::bench::{Client, ClientOptions, Credentials, Token};
use talkover_exporter::{Cli, Config};
use talkover_sim::{Order, Profile, Simulator};

mod economy;
mod formats;
mod hour;
mod hour_report;
mod ingest;
mod measure;
mod report;
mod shadows;
mod sim_child;
mod statefile;

use economy::*;
use formats::*;
use hour::*;
use hour_report::*;
use ingest::*;
use measure::*;
use report::*;
use shadows::*;
use sim_child::*;
use statefile::*;

const ROLE_ENV: &str = "SCALE_BENCH_ROLE";
const MODE_ENV: &str = "SCALE_BENCH_SIM";

// ---- ingest ----
/// Webhooks read in the ingest part.
const INGEST_WEBHOOKS: usize = 40;
/// New entries per webhook per round: 40 x 2,500 = 100,000 per round.
const INGEST_NEW: usize = 2_500;
const INGEST_ROUNDS: usize = 8;

// ---- scale ----
const CAMPAIGNS: usize = 1_000;
const PER_CAMPAIGN: usize = 10;
const WEBHOOKS: usize = CAMPAIGNS * PER_CAMPAIGN;
/// One step of simulated traffic is one simulated minute...
const STEP_SIM_SECS: u64 = 60;
/// ...played in this much wall time (an hour in a minute).
const STEP_WALL: Duration = Duration::from_secs(1);
const HOUR_STEPS: u32 = 60;
/// Poll interval of the scale run (wall time; two simulated minutes).
const SCALE_POLL: Duration = Duration::from_secs(2);
const SCALE_DISCOVERY: Duration = Duration::from_secs(15);
/// Entries added to each `Burst` webhook at simulated minute 15.
const BURST: usize = 300;
const BURST_MINUTE: u32 = 15;
const SCRAPES: usize = 50;
/// Scrapes of each format, one format after another.
const FORMAT_SCRAPES: usize = 15;
/// Section 3e: webhooks an exporter polls beside the scrapes, at a real API
/// budget of `BUDGET_RPS` requests per second (20 times the default).
const BUDGET_WEBHOOKS: usize = 2_000;
const BUDGET_RPS: u32 = 200;
/// Steps without scrapes before and after the scrape phase.
const QUIET_STEPS: u32 = 10;
const SHADOWS_PER_CLASS: usize = 20;

// ---- goals ----
const GOAL_INGEST_RATIO: f64 = 1.5;
const GOAL_IDLE_STATE: usize = 2048;
const GOAL_SCRAPE_P99: Duration = Duration::from_millis(250);
/// gzip on the wire, as a share of the plain text.
const GOAL_GZIP_SHARE: f64 = 0.10;
/// Series with native histograms, as a share of the classic count.
const GOAL_NATIVE_SHARE: f64 = 0.25;
/// CPU with the state file, as a multiple of without (2,000 entries/s).
const GOAL_STATE_CPU: f64 = 1.3;
/// Bytes written to storage per entry counted, at 2,000 and at 200 entries/s.
const GOAL_STATE_BYTES_FAST: f64 = 400.0;
const GOAL_STATE_BYTES_SLOW: f64 = 1_000.0;

fn main() {
    match std::env::var(ROLE_ENV).as_deref() {
        Ok("sim") => {
            let mode = std::env::var(MODE_ENV).unwrap_or_default();
            sim_role(&mode);
            return;
        }
        Ok("scrape") => {
            scrape_role();
            return;
        }
        _ => {}
    }
    // `cargo test --all-targets` runs bench targets too, without `--bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("scale: skipped (run it with `cargo bench --features bench --bench scale`)");
        return;
    }
    let started = Instant::now();
    let mut report = Report::default();
    report.machine();
    // For investigating one part: SCALE_BENCH_ONLY=scale|economy|ingest
    // (then docs/benchmarks.md is left alone).
    let only = std::env::var("SCALE_BENCH_ONLY").ok();
    let part = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let scale = if part("scale") {
        scale(&mut report)
    } else {
        ScaleFigures::default()
    };
    if part("economy") {
        economy(&mut report);
    }
    let ingest = if part("ingest") {
        ingest(&mut report)
    } else {
        IngestFigures::default()
    };
    let state_file = if part("statefile") {
        statefile(&mut report)
    } else {
        StateFileFigures::default()
    };
    if only.is_none() {
        report.summary(&ingest, &scale, &state_file, started.elapsed());
    }
    report.emit(only.is_none());
}
