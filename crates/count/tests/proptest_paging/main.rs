//! Property tests of the collector's paging and dedupe logic.
//!
//! An in-memory model of the Talkover delivery-log API (a list of entries in
//! creation order, listed newest-first or oldest-first, paginated like the
//! real API) serves pages to [`poll_once`]. Arbitrary interleavings of new
//! entries, status changes, polls, restarts (the state alone survives),
//! lost commits, request failures and arrivals *between the page reads of
//! one poll* must converge, once traffic
//! stops and every attempt is final, to exactly the counts of the entries
//! created after the baseline: nothing lost, nothing counted twice. The
//! baseline is a moment, not a read: the first reads may fail for any
//! number of polls while entries arrive, and the model's clock may be
//! minutes ahead of or behind the host's.
//!
//! The property is checked without allowances, for both listing orders and
//! every page budget from one page up: the counts (attempts by event,
//! status and code, retries, durations by status) equal the truth exactly,
//! nothing is reported as missed or invalid, the collector catches up within
//! a bound linear in the number of new entries, and a further poll changes
//! nothing. The `regression_*` tests pin down minimal cases the random
//! search found.
//! Set `PROPTEST_PAGING_TRACE=1` to print what every poll read and left.

mod cases;
mod harness;
mod model;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use talkover_count::collect::LATENESS_MS;

use harness::*;
use model::*;

#[derive(Debug, Clone)]
enum Op {
    /// `n` new entries; each is in flight with chance `pending_pct`.
    Append { n: usize, pending_pct: u64 },
    /// The `k` oldest (or newest) in-flight entries turn final.
    Finish { k: usize, newest: bool },
    /// One poll.
    Poll,
    /// Restart: the state goes through the state file.
    Restart,
    /// Restart with another page budget and page size.
    RestartWith { max_pages: u32, per_page: u32 },
    /// Crash before the last poll's commit: the previous state comes back.
    LoseLastCommit,
    /// The next `k` requests fail with HTTP 500.
    Fail(u32),
    /// Entries arrive (and one may finish) just before a request is
    /// answered, with this chance per request.
    Arrivals(u64),
    /// The next entry is created more than the lateness window later.
    Jump,
}

#[derive(Debug, Clone)]
struct Case {
    listing: Listing,
    /// How far the API's clock is ahead of the host's.
    skew_ms: i64,
    /// Requests that fail from the start: the first reads.
    first_failures: u32,
    history: usize,
    max_pages: u32,
    per_page: u32,
    seed: u64,
    ops: Vec<Op>,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => Just(Op::Poll),
        3 => (1usize..8, 0u64..60).prop_map(|(n, pending_pct)| Op::Append { n, pending_pct }),
        1 => (8usize..80, 0u64..40).prop_map(|(n, pending_pct)| Op::Append { n, pending_pct }),
        2 => (1usize..6, any::<bool>()).prop_map(|(k, newest)| Op::Finish { k, newest }),
        1 => Just(Op::Restart),
        1 => (1u32..=4, 2u32..=7).prop_map(|(max_pages, per_page)| Op::RestartWith { max_pages, per_page }),
        1 => Just(Op::LoseLastCommit),
        1 => (1u32..4).prop_map(Op::Fail),
        1 => prop_oneof![Just(0u64), 10u64..60].prop_map(Op::Arrivals),
        1 => Just(Op::Jump),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop_oneof![Just(Listing::NewestFirst), Just(Listing::OldestFirst)],
        prop_oneof![
            Just(0i64),
            Just(120_000),
            Just(-120_000),
            -300_000i64..300_000
        ],
        prop_oneof![Just(0u32), 1u32..4, 4u32..40],
        prop_oneof![0usize..12, 0usize..300],
        1u32..=4,
        2u32..=7,
        any::<u64>(),
        proptest::collection::vec(op(), 0..40),
    )
        .prop_map(
            |(listing, skew_ms, first_failures, history, max_pages, per_page, seed, ops)| Case {
                listing,
                skew_ms,
                first_failures,
                history,
                max_pages,
                per_page,
                seed,
                ops,
            },
        )
}

fn run_case(case: &Case) -> Result<(), String> {
    let mut h = Harness::skewed(
        case.listing,
        case.seed,
        case.max_pages,
        case.per_page,
        case.skew_ms,
    );
    h.begin_watching(case.history, case.first_failures);
    for op in &case.ops {
        match *op {
            Op::Append { n, pending_pct } => h.model.world().append(n, pending_pct),
            Op::Finish { k, newest } => h.model.world().finish(k, newest),
            Op::Poll => {
                // Failures are expected under faults; what was read stays counted.
                let _ = h.poll();
            }
            Op::Restart => h.restart(),
            Op::RestartWith {
                max_pages,
                per_page,
            } => {
                h.restart();
                h.config.max_pages = max_pages;
                h.config.per_page = per_page;
            }
            Op::LoseLastCommit => h.lose_last_commit(),
            Op::Fail(k) => h.model.world().fail_next = k,
            Op::Arrivals(pct) => h.model.world().arrival_pct = pct,
            Op::Jump => h.model.world().last_ms += LATENESS_MS + 1_000,
        }
    }
    let bound = h.poll_bound();
    h.settle(bound)?;
    h.check()
}

proptest! {
    #![proptest_config(ProptestConfig {
        // 256 unless PROPTEST_CASES says otherwise.
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Any interleaving of traffic, polls, restarts, lost commits, request
    /// failures and arrivals during a poll converges, once traffic stops, to
    /// exactly the counts of the entries created after the baseline.
    #[test]
    fn interleavings_converge_to_exact_counts(case in case()) {
        run_case(&case)
            .map_err(|e| TestCaseError::fail(format!("{e}\nfailing case: {case:?}")))?;
    }
}
