//! The simulator child process (this binary with `SCALE_BENCH_ROLE=sim`), the scraper process, and the webhooks they serve.

use super::*;

/// Scale-run webhook classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Class {
    /// 3 attempts per simulated minute.
    Busy,
    /// About 7 attempts per simulated hour.
    Low,
    /// Idle, except one burst of 300 attempts at minute 15.
    Burst,
    /// Some history from the warm-up hour, then nothing.
    Idle,
}

impl Class {
    pub(crate) const ALL: [Class; 4] = [Class::Busy, Class::Low, Class::Burst, Class::Idle];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Class::Busy => "busy (3/min)",
            Class::Low => "low (~7/h)",
            Class::Burst => "burst at 15′ then idle",
            Class::Idle => "idle",
        }
    }

    /// Attempts per second during the warm-up hour and during the run.
    pub(crate) fn rates(self) -> (f64, f64) {
        match self {
            Class::Busy => (0.05, 0.05),
            Class::Low => (0.002, 0.002),
            Class::Burst | Class::Idle => (0.002, 0.0),
        }
    }
}

pub(crate) fn class_of(i: usize) -> Class {
    match i % PER_CAMPAIGN {
        0 => Class::Busy,
        1 | 2 => Class::Low,
        3 if (i / PER_CAMPAIGN).is_multiple_of(10) => Class::Burst,
        _ => Class::Idle,
    }
}

pub(crate) fn scale_target(i: usize) -> Target {
    format!(
        "campaigns/c{:04}/webhooks/w{}",
        i / PER_CAMPAIGN,
        i % PER_CAMPAIGN
    )
    .parse()
    .expect("scale target")
}

/// The class of a series from its `campaign_id` and `webhook_id` labels.
pub(crate) fn class_of_labels(campaign: &str, webhook: &str) -> Option<Class> {
    let c: usize = campaign.strip_prefix('c')?.parse().ok()?;
    let w: usize = webhook.strip_prefix('w')?.parse().ok()?;
    Some(class_of(c * PER_CAMPAIGN + w))
}

pub(crate) fn ingest_target(i: usize) -> Target {
    format!("campaigns/ingest/webhooks/w{i}")
        .parse()
        .expect("ingest target")
}

pub(crate) fn economy_target() -> Target {
    "campaigns/econ/webhooks/w1"
        .parse()
        .expect("economy target")
}

pub(crate) fn profile(rate: f64, pending: f64) -> Profile {
    Profile {
        rate_per_second: rate,
        pending_ratio: pending,
        ..Profile::default()
    }
}

/// The simulator stamps entries with wall-clock milliseconds, but strictly
/// increasing: every entry moves its clock on by at least 1 ms. To compress
/// an hour into a minute, each step tops the clock up with entries on a
/// filler webhook (never listed: it is an agent's, and only campaigns are
/// discovered) and drops them at once. The simulator's `created_at` then
/// advances one simulated minute per step, so the exporter's ten-minute
/// dedupe horizon sees an hour go by.
pub(crate) struct SimClock {
    pub(crate) filler: Target,
    /// Sequence number the clock must reach at the end of the current step.
    pub(crate) target_seq: u64,
}

impl SimClock {
    pub(crate) fn new(sim: &Simulator) -> SimClock {
        let filler: Target = "agents/clock/webhooks/filler".parse().expect("filler");
        sim.add_webhook(
            filler.clone(),
            Profile {
                events: vec!["x".into()],
                rate_per_second: 0.0,
                pending_ratio: 0.0,
                max_retries: 0,
                ..Profile::default()
            },
        );
        SimClock {
            filler,
            target_seq: sim.mark(),
        }
    }

    pub(crate) fn step(&mut self, sim: &Simulator, secs: u64) {
        sim.tick(Duration::from_secs(secs));
        self.target_seq += secs * 1000;
        // In chunks: the simulator holds one lock while generating, and
        // long holds would stall every request the exporter has in flight.
        loop {
            let short = self.target_seq.saturating_sub(sim.mark()).min(2_000);
            if short == 0 {
                break;
            }
            sim.generate(&self.filler, short as usize);
            sim.expire_oldest(&self.filler, usize::MAX);
        }
    }
}

pub(crate) fn sim_role(mode: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("sim runtime");
    let sim = Simulator::new(20_261_124, None, Order::NewestFirst);
    let mut clock = SimClock::new(&sim);
    match mode {
        "ingest" => {
            let payload = std::env::var("SCALE_BENCH_PAYLOAD")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            for i in 0..INGEST_WEBHOOKS {
                let t = ingest_target(i);
                sim.add_webhook(
                    t.clone(),
                    Profile {
                        payload_bytes: payload,
                        ..profile(0.0, 0.0)
                    },
                );
                sim.generate(&t, 1_000);
            }
        }
        "budget" => {
            for i in 0..BUDGET_WEBHOOKS {
                let t = scale_target(i);
                sim.add_webhook(t.clone(), profile(0.0, 0.0));
                sim.generate(&t, 5);
            }
        }
        "statefile" => {
            let rate: f64 = std::env::var("SCALE_BENCH_STATEFILE_RATE")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(2_000.0);
            for i in 0..20 {
                sim.add_webhook(statefile_target(i), profile(rate / 20.0, 0.2));
            }
            // Traffic from the start, at the rate asked for.
            rt.spawn(sim.clone().drive());
        }
        "economy" => {
            let t = economy_target();
            sim.add_webhook(t.clone(), profile(0.0, 0.0));
            sim.generate(&t, 250);
        }
        "scale" => {
            for i in 0..WEBHOOKS {
                let class = class_of(i);
                sim.add_webhook(scale_target(i), profile(class.rates().0, 0.2));
            }
            // A warm-up hour of history before the exporter starts.
            for _ in 0..HOUR_STEPS {
                clock.step(&sim, STEP_SIM_SECS);
            }
            sim.finish_pending();
            for i in 0..WEBHOOKS {
                let class = class_of(i);
                let pending = if class == Class::Burst { 0.0 } else { 0.2 };
                sim.set_profile(&scale_target(i), profile(class.rates().1, pending));
            }
        }
        other => panic!("unknown simulator mode {other:?}"),
    }
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind simulator");
    let port = listener.local_addr().expect("simulator address").port();
    let _server = rt.spawn(sim.clone().serve(listener));
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "PORT {port}").expect("stdout");
    out.flush().expect("stdout");
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| -> usize { words.get(i).and_then(|w| w.parse().ok()).unwrap_or(0) };
        let reply = match words.first().copied() {
            Some("step") => {
                clock.step(&sim, num(1) as u64);
                "ok".to_string()
            }
            Some("burst") => {
                for i in (0..WEBHOOKS).filter(|i| class_of(*i) == Class::Burst) {
                    sim.generate(&scale_target(i), num(1));
                }
                "ok".to_string()
            }
            Some("gen_all") => {
                for t in sim.targets().iter().filter(|t| **t != clock.filler) {
                    sim.generate(t, num(1));
                }
                "ok".to_string()
            }
            Some("gen") => match words.get(1).and_then(|t| t.parse::<Target>().ok()) {
                Some(t) => {
                    sim.generate(&t, num(2));
                    "ok".to_string()
                }
                None => "bad target".to_string(),
            },
            Some("order") => {
                let order = match words.get(1).copied() {
                    Some("oldest") => Order::OldestFirst,
                    _ => Order::NewestFirst,
                };
                sim.set_order(order);
                "ok".to_string()
            }
            Some("requests") => match words.get(1).and_then(|t| t.parse::<Target>().ok()) {
                Some(t) => sim.requests(&t).to_string(),
                None => "0".to_string(),
            },
            Some("reqtotal") => {
                let logs: u64 = sim.targets().iter().map(|t| sim.requests(t)).sum();
                format!("{logs} {}", sim.listing_requests())
            }
            Some("quit") | None => break,
            Some(other) => format!("unknown command {other}"),
        };
        writeln!(out, "{reply}").expect("stdout");
        out.flush().expect("stdout");
    }
}

/// The scraper child: plays Prometheus, so reading 66 MiB bodies does not
/// count in the exporter's memory or CPU. `scrape [PATH]` answers
/// `STATUS TOTAL_US HEADERS_US BYTES` and saves the body to PATH if given.
pub(crate) fn scrape_role() {
    let url = std::env::var("SCALE_BENCH_SCRAPE_URL").expect("scrape url");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("scraper runtime");
    let http = reqwest::Client::builder().build().expect("scrape client");
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let mut words = line.split_whitespace();
        if words.next() != Some("scrape") {
            break;
        }
        let format = ScrapeFormat::from_word(words.next().unwrap_or(""));
        let save = words.next().map(std::path::PathBuf::from);
        let reply = rt.block_on(async {
            let started = Instant::now();
            let mut request = http.get(url.as_str()).header("accept", format.accept());
            if format.gzip() {
                request = request.header("accept-encoding", "gzip");
            }
            let resp = request.send().await.ok()?;
            let headers = started.elapsed();
            let status = resp.status().as_u16();
            let body = resp.bytes().await.ok()?;
            let total = started.elapsed();
            if let Some(path) = &save {
                std::fs::write(path, &body).ok()?;
            }
            Some(format!(
                "{status} {} {} {}",
                total.as_micros(),
                headers.as_micros(),
                body.len()
            ))
        });
        writeln!(out, "{}", reply.unwrap_or_else(|| "0 0 0 0".into())).expect("stdout");
        out.flush().expect("stdout");
    }
}

/// What a scrape asks for: a format, and whether gzip is welcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScrapeFormat {
    Text,
    TextGzip,
    Protobuf,
    ProtobufGzip,
}

impl ScrapeFormat {
    pub(crate) const ALL: [ScrapeFormat; 4] = [
        ScrapeFormat::Text,
        ScrapeFormat::TextGzip,
        ScrapeFormat::Protobuf,
        ScrapeFormat::ProtobufGzip,
    ];

    pub(crate) fn word(self) -> &'static str {
        match self {
            ScrapeFormat::Text => "text",
            ScrapeFormat::TextGzip => "text+gzip",
            ScrapeFormat::Protobuf => "protobuf",
            ScrapeFormat::ProtobufGzip => "protobuf+gzip",
        }
    }

    fn from_word(word: &str) -> ScrapeFormat {
        ScrapeFormat::ALL
            .into_iter()
            .find(|f| f.word() == word)
            .unwrap_or(ScrapeFormat::Text)
    }

    /// Prometheus 2.42's Accept header, with native histograms on for protobuf.
    fn accept(self) -> &'static str {
        match self {
            ScrapeFormat::Text | ScrapeFormat::TextGzip => "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            ScrapeFormat::Protobuf | ScrapeFormat::ProtobufGzip => "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        }
    }

    pub(crate) fn gzip(self) -> bool {
        matches!(self, ScrapeFormat::TextGzip | ScrapeFormat::ProtobufGzip)
    }

    pub(crate) fn exposition(self) -> talkover_exporter::bench::Exposition {
        match self {
            ScrapeFormat::Text | ScrapeFormat::TextGzip => {
                talkover_exporter::bench::Exposition::Text
            }
            _ => talkover_exporter::bench::Exposition::Protobuf,
        }
    }
}

/// The scraper child process.
pub(crate) struct Scraper {
    pub(crate) child: Child,
    pub(crate) stdin: ChildStdin,
    pub(crate) stdout: BufReader<ChildStdout>,
}

/// One scrape: status, time to the last byte, time to the headers, bytes.
pub(crate) type Scraped = (u16, Duration, Duration, usize);

impl Scraper {
    pub(crate) fn spawn(url: &str) -> Scraper {
        let exe = std::env::current_exe().expect("own executable");
        let mut child = Command::new(exe)
            .env(ROLE_ENV, "scrape")
            .env("SCALE_BENCH_SCRAPE_URL", url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the scraper child");
        let stdin = child.stdin.take().expect("child stdin");
        let stdout = BufReader::new(child.stdout.take().expect("child stdout"));
        Scraper {
            child,
            stdin,
            stdout,
        }
    }

    pub(crate) fn scrape(&mut self, save: Option<&std::path::Path>) -> Option<Scraped> {
        self.scrape_as(ScrapeFormat::Text, save)
    }

    /// A scrape asking for `format`; the bytes counted are those on the wire.
    pub(crate) fn scrape_as(
        &mut self,
        format: ScrapeFormat,
        save: Option<&std::path::Path>,
    ) -> Option<Scraped> {
        let word = format.word();
        match save {
            Some(p) => writeln!(self.stdin, "scrape {word} {}", p.display()),
            None => writeln!(self.stdin, "scrape {word}"),
        }
        .ok()?;
        self.stdin.flush().ok()?;
        let mut reply = String::new();
        self.stdout.read_line(&mut reply).ok()?;
        let f: Vec<u64> = reply
            .split_whitespace()
            .map(|w| w.parse().unwrap_or(0))
            .collect();
        let status = *f.first()? as u16;
        (status != 0).then(|| {
            (
                status,
                Duration::from_micros(f[1]),
                Duration::from_micros(f[2]),
                f[3] as usize,
            )
        })
    }

    pub(crate) fn cpu_s(&self) -> f64 {
        proc_cpu_s(&format!("/proc/{}/stat", self.child.id()))
    }

    pub(crate) fn quit(mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let _ = self.child.wait();
    }
}

/// The simulator child process, driven line by line.
pub(crate) struct SimChild {
    pub(crate) child: Child,
    pub(crate) stdin: ChildStdin,
    pub(crate) stdout: BufReader<ChildStdout>,
    pub(crate) port: u16,
}

impl SimChild {
    pub(crate) fn spawn(mode: &str, envs: &[(&str, String)]) -> SimChild {
        let exe = std::env::current_exe().expect("own executable");
        let mut cmd = Command::new(exe);
        cmd.env(ROLE_ENV, "sim")
            .env(MODE_ENV, mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start the simulator child");
        let stdin = child.stdin.take().expect("child stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("child stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("simulator port line");
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("simulator said {line:?}"));
        SimChild {
            child,
            stdin,
            stdout,
            port,
        }
    }

    pub(crate) fn cmd(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").expect("write to simulator");
        self.stdin.flush().expect("flush to simulator");
        let mut reply = String::new();
        self.stdout
            .read_line(&mut reply)
            .expect("read from simulator");
        reply.trim().to_string()
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// Log requests served so far, all webhooks.
    pub(crate) fn log_requests(&mut self) -> u64 {
        let r = self.cmd("reqtotal");
        r.split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    pub(crate) fn cpu_s(&self) -> f64 {
        proc_cpu_s(&format!("/proc/{}/stat", self.child.id()))
    }

    pub(crate) fn quit(mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let _ = self.child.wait();
    }
}

impl Drop for SimChild {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
