use super::*;
use crate::metrics::{Budget, Exposition, Published};
use crate::model::{
    AttemptKey, DeliveryCounts, PollStats, ATTEMPT_BUCKETS, DURATION_BUCKETS, LAG_BUCKETS,
};

#[test]
fn renders_escaped_labels_and_cumulative_buckets() {
    let target: Target = "agents/a1/webhooks/w1".parse().expect("target");
    let mut counts = DeliveryCounts::default();
    counts.attempts.insert(
        AttemptKey {
            event: "we\"ird\\\n".into(),
            status: "success".into(),
            code: "200".into(),
        },
        3,
    );
    let mut h = Histogram::default();
    h.observe(ATTEMPT_BUCKETS, 2.0);
    h.observe(ATTEMPT_BUCKETS, 3.0);
    counts.attempt_number.insert("failed".into(), h);
    let published = Published::new();
    published.publish(TargetSnapshot {
        target,
        counts,
        failures: Default::default(),
        stats: PollStats::default(),
        pending: 0,
        backlog: 0,
        settings: None,
    });
    let out = published.render();
    assert!(out.contains(
        r#"talkover_webhook_delivery_attempts_total{campaign_id="",agent_id="a1",webhook_id="w1",event="we\"ird\\\n",status="success",code="200"} 3"#
    ), "{out}");
    assert!(out.contains(r#"talkover_webhook_delivery_attempt_number_bucket{campaign_id="",agent_id="a1",webhook_id="w1",status="failed",le="1"} 0"#));
    assert!(out.contains(r#"talkover_webhook_delivery_attempt_number_bucket{campaign_id="",agent_id="a1",webhook_id="w1",status="failed",le="3"} 2"#));
    assert!(out.contains(r#"talkover_webhook_delivery_attempt_number_count{campaign_id="",agent_id="a1",webhook_id="w1",status="failed"} 2"#));
}

/// From its first read a webhook shows every result and each known
/// event's lost events at 0, and its settings; one whose settings are
/// not known says so and has no settings series.
#[test]
fn alerting_series_exist_at_zero_and_settings_are_served() {
    let published = Published::new();
    let known: Target = "campaigns/c1/webhooks/w1".parse().expect("t");
    let settings = crate::model::WebhookSettings::new(
        Some("CRM".into()),
        false,
        Some(0),
        Some(10),
        &["campaign.started".into(), "campaign_call.failed".into()],
    );
    let mut counts = DeliveryCounts::default();
    counts.start(1_000, &settings.events);
    published.publish(TargetSnapshot {
        target: known,
        counts,
        failures: Default::default(),
        stats: PollStats::default(),
        pending: 0,
        backlog: 0,
        settings: Some(settings),
    });
    let unknown: Target = "agents/a1/webhooks/w2".parse().expect("t");
    published.publish(TargetSnapshot {
        target: unknown,
        counts: DeliveryCounts::default(),
        failures: Default::default(),
        stats: PollStats::default(),
        pending: 0,
        backlog: 0,
        settings: None,
    });
    let out = published.render();
    let w1 = r#"campaign_id="c1",agent_id="",webhook_id="w1""#;
    let w2 = r#"campaign_id="",agent_id="a1",webhook_id="w2""#;
    for line in [
        format!(r#"talkover_webhook_info{{{w1},name="CRM",enabled="false",settings="known"}} 1"#),
        format!(r#"talkover_webhook_info{{{w2},name="",enabled="unknown",settings="unknown"}} 1"#),
        format!("talkover_webhook_max_retries{{{w1}}} 0"),
        format!("talkover_webhook_timeout_seconds{{{w1}}} 10"),
        format!(
            r#"talkover_webhook_deliveries_exhausted_total{{{w1},event="campaign.started"}} 0"#
        ),
        format!(
            r#"talkover_webhook_deliveries_exhausted_total{{{w1},event="campaign_call.failed"}} 0"#
        ),
    ] {
        assert!(out.contains(&format!("{line}\n")), "{line} not in\n{out}");
    }
    for result in crate::model::RESULTS {
        for w in [w1, w2] {
            let line =
                format!(r#"talkover_webhook_delivery_results_total{{{w},result="{result}"}} 0"#);
            assert!(out.contains(&line), "{line}");
        }
    }
    assert!(!out.contains(&format!("talkover_webhook_max_retries{{{w2}}}")));
    assert!(!out.contains(&format!("talkover_webhook_timeout_seconds{{{w2}}}")));
}

fn all_families() -> Budget {
    Budget {
        lag: true,
        attempt_number: true,
        duration_by_status: true,
        poll_stats: true,
        native_histograms: true,
    }
}

fn published_with(targets: usize) -> Published {
    let published = Published::with_budget(all_families());
    for i in 0..targets {
        let target: Target = format!("campaigns/c{i}/webhooks/w{i}").parse().expect("t");
        let mut counts = DeliveryCounts::default();
        counts.lag.observe(LAG_BUCKETS, 1.0);
        published.publish(TargetSnapshot {
            target,
            counts,
            failures: Default::default(),
            stats: PollStats::default(),
            pending: 0,
            backlog: 0,
            settings: None,
        });
    }
    published
}

#[test]
fn chunks_add_up_to_the_whole_body() {
    let published = published_with(1500);
    let mut chunks = Vec::new();
    let whole = published.render_chunks(Exposition::Text, &mut |chunk| {
        chunks.push(String::from_utf8(chunk).expect("text"));
        true
    });
    assert!(whole);
    assert!(chunks.len() > 2, "{} chunks", chunks.len());
    let (last, full) = chunks.split_last().expect("chunks");
    assert!(full.iter().all(|c| c.len() >= CHUNK_BYTES));
    assert!(last.ends_with('\n'));
    // Up to the process metrics, which move between two renders.
    let whole = published.render();
    let per_target = |body: &str| body.split("# HELP process_").next().map(str::to_owned);
    let joined = chunks.concat();
    assert!(
        per_target(&joined) == per_target(&whole),
        "chunks differ from the whole body"
    );
}

#[test]
fn rendering_stops_when_the_scraper_is_gone() {
    let published = published_with(1500);
    let mut calls = 0;
    let whole = published.render_chunks(Exposition::Text, &mut |_| {
        calls += 1;
        false
    });
    assert_eq!(calls, 1);
    assert!(!whole);
}

#[test]
fn a_webhook_without_lag_observations_has_no_lag_series() {
    let published = published_with(1);
    let idle: Target = "campaigns/c9/webhooks/idle".parse().expect("t");
    published.publish(TargetSnapshot {
        target: idle,
        counts: DeliveryCounts::default(),
        failures: Default::default(),
        stats: PollStats::default(),
        pending: 0,
        backlog: 0,
        settings: None,
    });
    let body = published.render();
    let lag_lines = |webhook: &str| {
        body.lines()
            .filter(|l| l.starts_with("talkover_webhook_delivery_lag_seconds"))
            .filter(|l| l.contains(&format!("webhook_id=\"{webhook}\"")))
            .count()
    };
    assert_eq!(lag_lines("w0"), LAG_BUCKETS.len() + 3);
    assert_eq!(lag_lines("idle"), 0);
    assert!(body.contains(r#"talkover_up{campaign_id="c9",agent_id="",webhook_id="idle"} 0"#));
}

/// OpenMetrics: counter families named without `_total`, `info` as a
/// type, the newest attempt as an exemplar on its attempts series and
/// duration bucket, `# EOF` last; the samples otherwise as in text.
#[test]
fn openmetrics_carries_exemplars_and_ends_with_eof() {
    let published = Published::new();
    let mut counts = DeliveryCounts::default();
    let key = AttemptKey {
        event: "campaign.started".into(),
        status: "failed".into(),
        code: "500".into(),
    };
    counts.attempts.insert(key.clone(), 2);
    let mut h = Histogram::default();
    let bucket = h.observe(DURATION_BUCKETS, 0.3);
    h.offer_exemplar(bucket, "log_9", 0.3, 1_700_000_000_123);
    counts.duration.insert("failed".into(), h);
    let ex = std::sync::Arc::make_mut(&mut counts.exemplars);
    ex.attempt(
        ("campaign.started", "failed", "500"),
        "log_\"9",
        1_700_000_000_123,
    );

    published.publish(TargetSnapshot {
        target: "agents/a1/webhooks/w1".parse().expect("t"),
        counts,
        failures: Default::default(),
        stats: PollStats::default(),
        pending: 0,
        backlog: 0,
        settings: None,
    });
    let mut body = Vec::new();
    assert!(published.render_chunks(Exposition::OpenMetrics, &mut |c| {
        body.extend_from_slice(&c);
        true
    }));
    let om = String::from_utf8(body).expect("utf-8");
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE talkover_webhook_delivery_attempts counter\n"));
    assert!(om.contains("# TYPE talkover_webhook info\n"));
    assert!(om.contains("# TYPE talkover_exporter_build info\n"));
    assert!(om.contains("# TYPE process_cpu_seconds counter\n") || !cfg!(target_os = "linux"));
    assert!(om.contains(
        r#"talkover_webhook_delivery_attempts_total{campaign_id="",agent_id="a1",webhook_id="w1",event="campaign.started",status="failed",code="500"} 2 # {log_id="log_\"9"} 1.0 1700000000.123"#
    ), "{om}");
    assert!(om.contains(
        r#"talkover_webhook_delivery_duration_seconds_bucket{campaign_id="",agent_id="a1",webhook_id="w1",status="failed",le="0.5"} 1 # {log_id="log_9"} 0.3 1700000000.123"#
    ), "{om}");
    // Buckets below the observation have no exemplar.
    assert!(om.contains(
        "talkover_webhook_delivery_duration_seconds_bucket{campaign_id=\"\",agent_id=\"a1\",webhook_id=\"w1\",status=\"failed\",le=\"0.25\"} 0\n"
    ));
    // The plain text format has none of it.
    let text = published.render();
    assert!(!text.contains("log_id") && !text.contains("# EOF"));
    let samples = |body: &str| -> Vec<String> {
        body.lines()
            .filter(|l| l.starts_with("talkover_"))
            .map(|l| {
                let sample = l.split(" # ").next().unwrap_or(l);
                // The registry's self-metrics print `0` as `0.0` in OpenMetrics.
                let (series, value) = sample.rsplit_once(' ').expect("a value");
                format!("{series} {}", value.parse::<f64>().expect("a number"))
            })
            .collect()
    };
    assert_eq!(samples(&om), samples(&text));
}

/// Without `--collector.poll-stats`, polling detail is one series set
/// for the exporter, not four series per webhook; with it, per webhook.
#[test]
fn poll_stats_are_exporter_wide_unless_asked_per_webhook() {
    let render = |budget: Budget| {
        let published = Published::with_budget(budget);
        for (target, backlog) in [("agents/a/webhooks/w1", 5), ("agents/a/webhooks/w2", 2)] {
            let mut stats = PollStats::default();
            let before = stats.requests.clone();
            *stats.requests.entry(("success", "200".into())).or_default() += 3;
            stats.polls += 1;
            stats.last_duration = Some(0.25);
            published.observe_poll(0.25, &before, &stats.requests);
            published.publish(TargetSnapshot {
                target: target.parse().expect("t"),
                counts: DeliveryCounts::default(),
                failures: Default::default(),
                stats,
                pending: 0,
                backlog,
                settings: None,
            });
        }
        published.render()
    };
    let detail = [
        "talkover_exporter_polls_total",
        "talkover_exporter_last_poll_duration_seconds",
        "talkover_exporter_api_requests_total",
        "talkover_exporter_backlog_entries",
    ];
    let wide = render(Budget::default());
    for family in detail {
        assert!(
            !wide
                .lines()
                .any(|l| l.starts_with(family) && l.contains("webhook_id")),
            "{family} per webhook by default:\n{wide}"
        );
    }
    assert!(
        wide.contains("\ntalkover_exporter_backlog_entries 7\n"),
        "{wide}"
    );
    assert!(
        wide.contains(
            "\ntalkover_exporter_api_requests_total{code=\"200\",outcome=\"success\"} 6\n"
        ),
        "{wide}"
    );
    let per_webhook = render(Budget {
        poll_stats: true,
        ..Budget::default()
    });
    for family in detail {
        assert!(
            per_webhook
                .lines()
                .any(|l| l.starts_with(family) && l.contains(r#"webhook_id="w1""#)),
            "{family} not per webhook with --collector.poll-stats:\n{per_webhook}"
        );
    }
    assert!(per_webhook.contains(
        r#"talkover_exporter_backlog_entries{campaign_id="",agent_id="a",webhook_id="w2"} 2"#
    ));
    assert!(!per_webhook.contains("\ntalkover_exporter_backlog_entries "));
    assert!(per_webhook.contains(
        r#"talkover_exporter_api_requests_total{campaign_id="",agent_id="a",webhook_id="w2",outcome="success",code="200"} 3"#
    ));
}

#[test]
fn the_budget_leaves_out_the_families_it_turns_off() {
    let family_lines = |budget: Budget, family: &str| {
        let published = Published::with_budget(budget);
        let mut counts = DeliveryCounts::default();
        for (status, v) in [("success", 0.3), ("failed", 7.0)] {
            let mut h = Histogram::default();
            h.observe(DURATION_BUCKETS, v);
            counts.duration.insert(status.into(), h.clone());
            counts.attempt_number.insert(status.into(), h);
        }
        counts.lag.observe(LAG_BUCKETS, 1.0);
        published.publish(TargetSnapshot {
            target: "agents/a/webhooks/w".parse().expect("t"),
            counts,
            failures: Default::default(),
            stats: PollStats::default(),
            pending: 0,
            backlog: 0,
            settings: None,
        });
        let body = published.render();
        body.lines()
            .filter(|l| l.starts_with(family))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let duration = "talkover_webhook_delivery_duration_seconds";
    assert!(family_lines(Budget::default(), "talkover_webhook_delivery_lag_seconds").is_empty());
    assert_eq!(
        family_lines(all_families(), "talkover_webhook_delivery_lag_seconds").len(),
        LAG_BUCKETS.len() + 3
    );
    let off = Budget {
        attempt_number: false,
        ..all_families()
    };
    assert!(family_lines(off, "talkover_webhook_delivery_attempt_number").is_empty());
    assert_eq!(
        family_lines(all_families(), duration).len(),
        2 * (DURATION_BUCKETS.len() + 3)
    );
    let merged = family_lines(
        Budget {
            duration_by_status: false,
            ..all_families()
        },
        duration,
    );
    assert_eq!(merged.len(), DURATION_BUCKETS.len() + 3);
    assert!(merged.iter().all(|l| !l.contains("status=")));
    assert!(merged.contains(&format!(
        r#"{duration}_count{{campaign_id="",agent_id="a",webhook_id="w"}} 2"#
    )));
    assert!(merged.contains(&format!(
        r#"{duration}_bucket{{campaign_id="",agent_id="a",webhook_id="w",le="0.5"}} 1"#
    )));
}
