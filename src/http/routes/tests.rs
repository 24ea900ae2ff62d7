use super::*;
use tokio_stream::StreamExt as _;

/// One piece, then the renderer lets go, having finished or not.
async fn body_after_render(finished: bool) -> Vec<Result<Bytes, String>> {
    let (tx, rx) = mpsc::channel(4);
    tx.send(Bytes::from("a 1\n")).await.expect("send");
    drop(tx);
    let http = HttpMetrics::register(&prometheus::Registry::new());
    let body = ScrapeBody {
        pieces: rx,
        finished: Arc::new(AtomicBool::new(finished)),
        ended: false,
        _in_flight: http.scrape_started(Exposition::Text, None),
    };
    body.map(|r| r.map_err(|e| e.to_string())).collect().await
}

#[tokio::test]
async fn a_render_cut_short_ends_the_body_with_an_error() {
    assert_eq!(body_after_render(true).await, [Ok(Bytes::from("a 1\n"))]);
    assert_eq!(
        body_after_render(false).await,
        [
            Ok(Bytes::from("a 1\n")),
            Err("rendering /metrics stopped before the end".to_string())
        ]
    );
}

#[test]
fn gzip_only_when_accepted() {
    let accepts = |value: &str| {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).expect("header"),
        );
        accepts_gzip(&h)
    };
    // What Prometheus sends.
    assert!(accepts("gzip"));
    assert!(accepts("deflate, GZIP;q=0.5"));
    assert!(accepts("*"));
    assert!(!accepts("gzip;q=0"));
    assert!(!accepts("identity"));
    assert!(!accepts_gzip(&HeaderMap::new()));
}

/// Without process metrics, which change from one render to the next.
fn stable(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.contains("process_")).collect()
}

#[test]
fn the_format_follows_the_accept_header() {
    let format = |value: &str| {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            HeaderValue::from_str(value).expect("header"),
        );
        negotiate(&h).format
    };
    // Prometheus 2.42 with --enable-feature=native-histograms, and without.
    assert_eq!(format("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"), Exposition::Protobuf);
    assert_eq!(format("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"), Exposition::OpenMetrics);
    assert_eq!(
        format("application/openmetrics-text;version=2.0.0,text/plain;q=0.5"),
        Exposition::Text
    );
    assert_eq!(format("*/*"), Exposition::Text);
    assert_eq!(format("text/plain;version=0.0.4"), Exposition::Text);
    assert_eq!(format("text/plain;q=0.9, application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.5"), Exposition::Text);
    // Another message, or the text encoding of protobuf, is not ours to send.
    assert_eq!(
        format("application/vnd.google.protobuf;proto=other.Message;encoding=delimited"),
        Exposition::Text
    );
    assert_eq!(
        format(
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text"
        ),
        Exposition::Text
    );
    assert_eq!(format("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0"), Exposition::Text);
    assert_eq!(negotiate(&HeaderMap::new()), Negotiated::plain());
}

/// Prometheus 3's headers, the `Content-Type` each gets, and headers
/// no scraper should send: never an error, the text format at worst.
#[test]
fn the_content_type_carries_the_version_and_escaping_asked_for() {
    let answer = |value: &str| {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            HeaderValue::from_str(value).expect("header"),
        );
        let n = negotiate(&h);
        (
            n.format,
            n.content_type.to_str().expect("ascii").to_string(),
        )
    };
    let om = |ct: &str| (Exposition::OpenMetrics, ct.to_string());
    let text = |ct: &str| (Exposition::Text, ct.to_string());
    // Prometheus 3.5's default, and with `metric_name_validation_scheme: legacy`.
    assert_eq!(
        answer("application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1"),
        om("application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=allow-utf-8")
    );
    assert_eq!(
        answer("application/openmetrics-text;version=1.0.0;escaping=underscores;q=0.5,*/*;q=0.1"),
        om("application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores")
    );
    // `scrape_protocols: [PrometheusText1.0.0]`.
    assert_eq!(
        answer("text/plain;version=1.0.0;escaping=values;q=0.2,*/*;q=0.1"),
        text("text/plain; version=1.0.0; charset=utf-8; escaping=values")
    );
    // Protobuf as Prometheus 3 asks for it: no escaping parameter.
    assert_eq!(
        answer("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.6,application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,*/*;q=0.1"),
        (
            Exposition::Protobuf,
            Exposition::Protobuf.content_type().to_string()
        )
    );
    // `dots` would rename every legacy name: the next range is served.
    assert_eq!(
        answer("application/openmetrics-text;version=1.0.0;escaping=dots;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.2"),
        om("application/openmetrics-text; version=0.0.1; charset=utf-8")
    );
    assert_eq!(
        answer("text/plain;version=1.0.0;escaping=dots"),
        text(Exposition::Text.content_type())
    );
    // An escaping scheme nobody defined reads as the legacy default.
    assert_eq!(
        answer("text/plain;version=1.0.0;escaping=nonsense"),
        text("text/plain; version=1.0.0; charset=utf-8; escaping=underscores")
    );
    // Malformed and unknown: the text format 0.0.4.
    for value in [
        "",
        ",,,;;;",
        "text/plain;version=9.9.9",
        "application/json",
        "garbage",
        ";q=1",
        "application/openmetrics-text;version=1.0.0;q=NaN",
        "application/openmetrics-text;version=1.0.0;q=-1",
        "application/openmetrics-text;version=x.y",
        "application/vnd.google.protobuf",
        "text/plain;version=1.0.0;escaping=dots;q=1,nonsense;q=0.5",
    ] {
        assert_eq!(
            answer(value),
            text(Exposition::Text.content_type()),
            "{value:?}"
        );
    }
}

#[test]
fn gzip_body_decodes_to_the_plain_body_and_a_cut_render_has_no_trailer() {
    use std::io::Read as _;
    let published = Published::new();
    let mut pieces = Vec::new();
    assert!(render_gzip(&published, Exposition::Text, |b| {
        pieces.extend_from_slice(&b);
        true
    }));
    let mut plain = String::new();
    flate2::read::GzDecoder::new(&pieces[..])
        .read_to_string(&mut plain)
        .expect("a whole gzip stream");
    assert_eq!(stable(&plain), stable(&published.render()));
    assert!(plain.contains("talkover_exporter_build_info"));

    // The scraper goes away after the first piece: no trailer is sent.
    let mut cut = Vec::new();
    assert!(!render_gzip(&published, Exposition::Text, |b| {
        cut.extend_from_slice(&b);
        false
    }));
    let mut partial = String::new();
    assert!(flate2::read::GzDecoder::new(&cut[..])
        .read_to_string(&mut partial)
        .is_err());
}

/// Not a benchmark: what each gzip level costs and saves on the body
/// of 10,000 webhooks, to choose `GZIP_LEVEL`.
/// `cargo test --release --lib -- --ignored gzip_levels --nocapture`.
#[test]
#[ignore = "timing, run by hand"]
fn gzip_levels() {
    let published = crate::metrics::busy_for_tests(10_000);
    let plain = published.render();
    for level in [1, 3, 6, 9] {
        let started = std::time::Instant::now();
        let mut e = GzEncoder::new(Vec::new(), Compression::new(level));
        e.write_all(plain.as_bytes()).expect("compress");
        let out = e.finish().expect("finish");
        eprintln!(
            "gzip level {level}: {} of {} bytes ({:.1} %), {:?}",
            out.len(),
            plain.len(),
            100.0 * out.len() as f64 / plain.len() as f64,
            started.elapsed()
        );
    }
}
