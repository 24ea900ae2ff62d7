//! 4. API economy, controlled: requests per poll against the formula.

use super::*;

pub(crate) fn economy(report: &mut Report) {
    eprintln!("[economy] requests per poll against the formula");
    let mut sim = SimChild::spawn("economy", &[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = exporter_client(&sim.url());
    let target = economy_target();
    let config = PollConfig {
        interval: Duration::from_secs(30),
        max_pages: 10,
        per_page: 100,
        failures: talkover_count::model::FailurePolicy::default(),
    };
    let mut sec = Section::new(
        "4b. API economy: requests per poll (collect::poll_once, --poll.max-pages 10)",
        &[
            "order",
            "new entries",
            "requests (per poll)",
            "expected ceil((new+1)/100)",
            "bound ceil(new/100)+1 (+2 per extra poll)",
            "counted",
            "verdict",
        ],
    );
    for order in ["newest", "oldest"] {
        sim.cmd(&format!("order {order}"));
        let mut state = TargetState::default();
        let mut stats = PollStats::default();
        let poll = |state: &mut TargetState, stats: &mut PollStats| {
            rt.block_on(poll_once(&client, &target, &config, state, stats))
                .expect("poll");
        };
        poll(&mut state, &mut stats); // baseline
        poll(&mut state, &mut stats); // settle
        for new in [0usize, 1, 50, 99, 100, 101, 250, 899, 999, 0] {
            if new > 0 {
                sim.cmd(&format!("gen {target} {new}"));
            }
            let sim_before: u64 = sim.cmd(&format!("requests {target}")).parse().unwrap_or(0);
            let counted_before: u64 = state.counts.attempts.values().sum();
            // Poll until everything new is counted (a burst larger than the
            // page budget takes more than one poll, by design).
            let mut per_poll: Vec<u64> = Vec::new();
            loop {
                let before: u64 = stats.requests.values().sum();
                poll(&mut state, &mut stats);
                per_poll.push(stats.requests.values().sum::<u64>() - before);
                let counted = state.counts.attempts.values().sum::<u64>() - counted_before;
                if (counted >= new as u64 && state.gaps.is_empty()) || per_poll.len() >= 5 {
                    break;
                }
            }
            let requests: u64 = per_poll.iter().sum();
            let sim_requests =
                sim.cmd(&format!("requests {target}")).parse().unwrap_or(0) - sim_before;
            let counted = state.counts.attempts.values().sum::<u64>() - counted_before;
            let expected = if new == 0 {
                1
            } else {
                (new as u64 + 1).div_ceil(100)
            };
            // A burst beyond the page budget is finished by later polls,
            // each reading the newest page and the page where the burst met
            // old ground once more.
            let extra_polls = per_poll.len() as u64 - 1;
            let bound = if new == 0 {
                1
            } else {
                (new as u64).div_ceil(100) + 1 + 2 * extra_polls
            };
            let met = requests <= bound && counted == new as u64 && requests == sim_requests;
            if !met {
                report.economy_misses.push(format!(
                    "{order}-first, {new} new: {requests} requests (bound {bound})"
                ));
            }
            let shown = per_poll
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" + ");
            sec.row(vec![
                format!("{order}-first"),
                new.to_string(),
                if requests == sim_requests {
                    shown
                } else {
                    format!("{shown} (simulator saw {sim_requests})")
                },
                expected.to_string(),
                bound.to_string(),
                counted.to_string(),
                if requests == expected {
                    "= expected".into()
                } else if met {
                    "within bound".into()
                } else {
                    "goal missed".into()
                },
            ]);
        }
    }
    sec.note("Each row: `new` entries arrive, then the same webhook is polled until all are counted (one poll unless the burst exceeds the 10-page budget: each later poll may add two requests, the newest page and the page where the burst met old ground); no pending entries, nothing arriving during the poll. 'requests' is talkover_exporter_api_requests_total's increase, checked against the simulator's own count.".to_string());
    report.sections.push(sec);
    sim.quit();
}
