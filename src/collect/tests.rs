//! The real client against the simulator over loopback: what one poll
//! costs in requests, and how many the client lets be in flight.

use std::sync::Arc;
use std::time::Duration;

use talkover_count::collect::{poll_once, PollConfig};
use talkover_count::model::{FailurePolicy, PollStats, TargetState};
use talkover_count::target::Target;
use talkover_sim::{Fault, FaultRule, Order, Profile, Simulator};
use tokio::net::TcpListener;

use crate::api::{Client, ClientOptions, Credentials, Token, MAX_IN_FLIGHT};

const TOKEN: &str = "talq_unit_test_token_0123456789";

/// A simulator without background traffic, served on 127.0.0.1:0, and a
/// client for it.
async fn sim_and_client(seed: u64, order: Order, hooks: &[&str]) -> (Simulator, Arc<Client>) {
    let sim = Simulator::new(seed, Some(TOKEN.to_string()), order);
    let quiet = Profile {
        rate_per_second: 0.0,
        ..Profile::default()
    };
    for hook in hooks {
        sim.add_webhook(hook.parse().expect("target"), quiet.clone());
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("addr"));
    tokio::spawn({
        let sim = sim.clone();
        async move {
            let _ = sim.serve(listener).await;
        }
    });
    let client = Client::new(ClientOptions {
        base_url: url.parse().expect("url"),
        credentials: Token::new(TOKEN).map(Credentials::Token),
        timeout: Duration::from_secs(10),
        max_body_bytes: 32 << 20,
        allow_insecure: true,
        max_requests_per_second: 100_000.0,
        probe_max: Duration::from_secs(1),
    })
    .expect("client");
    (sim, Arc::new(client))
}

/// An idle webhook costs one request per poll; a busy one
/// ceil((new + 1) / 100) when nothing shifts, within the budget formula
/// ceil(new / 100) + 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_per_poll_follow_the_formula() {
    requests_per_poll(Order::NewestFirst, true).await;
}

/// Oldest-first listings stay within the same budget formula (the newest
/// page is the last one, found from a total that may have moved).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oldest_first_requests_stay_within_the_formula() {
    requests_per_poll(Order::OldestFirst, false).await;
}

async fn requests_per_poll(order: Order, exact: bool) {
    let hook = "campaigns/c1/webhooks/w1";
    let (sim, client) = sim_and_client(54, order, &[hook]).await;
    let target: Target = hook.parse().expect("t");
    sim.generate(&target, 500);
    sim.finish_pending();
    let config = PollConfig {
        interval: Duration::from_secs(1),
        max_pages: 10,
        per_page: 100,
        failures: FailurePolicy::default(),
    };
    let mut state = TargetState::default();
    let mut stats = PollStats::default();
    poll_once(&*client, &target, &config, &mut state, &mut stats)
        .await
        .expect("baseline");
    let counted = |state: &TargetState| state.counts.attempts.values().sum::<u64>();
    // 899 and 999 new entries need all ten pages of the budget or more.
    for new in [0usize, 0, 1, 50, 99, 100, 150, 250, 899, 999, 0] {
        sim.generate(&target, new);
        sim.finish_pending();
        let before = sim.requests(&target);
        let goal = counted(&state) + new as u64;
        let mut polls = 0;
        loop {
            poll_once(&*client, &target, &config, &mut state, &mut stats)
                .await
                .expect("poll");
            polls += 1;
            if counted(&state) == goal || polls == 3 {
                break;
            }
        }
        assert_eq!(counted(&state), goal, "{order:?}, {new} new entries");
        let used = sim.requests(&target) - before;
        // A burst beyond the page budget is finished by later polls, each
        // reading the newest page and the page where the burst met old ground.
        let formula = (new as u64).div_ceil(100) + 1 + 2 * (polls - 1);
        if exact {
            assert_eq!(used, (new as u64 + 1).div_ceil(100), "{new} new entries");
        }
        assert!(
            used <= formula,
            "{order:?}, {new} new entries: {used} > {formula}"
        );
    }
}

/// A slow API and many webhooks polled at once: requests in flight stop at
/// the client's cap instead of one connection per poller, and every poll
/// still finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_are_capped() {
    let names: Vec<String> = (0..100)
        .map(|i| format!("campaigns/c{}/webhooks/w{i}", i / 10))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let (sim, client) = sim_and_client(61, Order::NewestFirst, &refs).await;
    // Every first read takes 400 ms: without a cap, all 100 would be in
    // flight together.
    sim.inject(FaultRule {
        target: None,
        fault: Fault::Delay { ms: 400 },
        count: 100,
    });
    let polls: Vec<_> = names
        .iter()
        .map(|name| {
            let client = Arc::clone(&client);
            let target: Target = name.parse().expect("target");
            tokio::spawn(async move {
                let config = PollConfig {
                    interval: Duration::from_secs(1),
                    max_pages: 10,
                    per_page: 100,
                    failures: FailurePolicy::default(),
                };
                let mut state = TargetState::default();
                let mut stats = PollStats::default();
                poll_once(&*client, &target, &config, &mut state, &mut stats).await
            })
        })
        .collect();
    for poll in polls {
        poll.await.expect("poll task").expect("poll");
    }
    let most = sim.max_log_requests_in_flight();
    assert!(most <= MAX_IN_FLIGHT, "{most} requests in flight at once");
    assert!(
        most >= MAX_IN_FLIGHT / 2,
        "only {most} in flight: the cap was never reached, so nothing was tested"
    );
}
