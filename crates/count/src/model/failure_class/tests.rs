use super::FailureClass::*;
use super::*;

fn check(class: FailureClass, texts: &[&str]) {
    assert!(texts.len() >= 6, "need at least 6 samples for {class:?}");
    for t in texts {
        assert_eq!(classify(None, Some(t), None, None), class, "text: {t}");
    }
}

#[test]
fn timeout_texts() {
    check(Timeout, &["timeout of 10000ms exceeded", "ECONNABORTED: timeout of 30000ms exceeded",
        "connect ETIMEDOUT 10.0.0.5:443", "ESOCKETTIMEDOUT",
        r#"Post "https://x.example/hook": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"#,
        r#"Post "https://x.example/hook": net/http: TLS handshake timeout"#,
        r#"Post "https://x.example/hook": dial tcp 10.0.0.5:443: i/o timeout"#,
        "HTTPSConnectionPool(host='x.example', port=443): Read timed out. (read timeout=10)",
        "HTTPSConnectionPool(host='x.example', port=443): Max retries exceeded with url: /hook (Caused by ConnectTimeoutError(<urllib3.connection.HTTPSConnection object at 0x7f3a2c1d0>, 'Connection to x.example timed out. (connect timeout=10)'))",
        "httpx.ReadTimeout: The read operation timed out", "_ssl.c:1059: The handshake operation timed out",
        "java.net.SocketTimeoutException: Read timed out", "java.net.ConnectException: Connection timed out: connect",
        "java.net.http.HttpConnectTimeoutException: HTTP connect timed out",
        "The request was canceled due to the configured HttpClient.Timeout of 30 seconds elapsing.",
        "A connection attempt failed because the connected party did not properly respond after a period of time, or established connection failed because connected host has failed to respond. (x.example:443)",
        "Operation timed out after 30001 milliseconds with 0 bytes received",
        "Failed to connect to x.example port 443 after 10002 ms: Timeout was reached"]);
}

#[test]
fn dns_texts() {
    check(Dns, &["getaddrinfo ENOTFOUND hooks.example.com", "getaddrinfo EAI_AGAIN hooks.example.com",
        r#"Post "https://x/hook": dial tcp: lookup x on 10.0.0.2:53: no such host"#,
        r#"Post "https://x/hook": dial tcp: lookup x on 10.0.0.2:53: server misbehaving"#,
        r#"Post "https://x/hook": dial tcp: lookup x on 10.0.0.2:53: read udp 10.0.0.3:41234->10.0.0.2:53: i/o timeout"#,
        "HTTPSConnectionPool(host='x.example', port=443): Max retries exceeded with url: /hook (Caused by NewConnectionError('<urllib3.connection.HTTPSConnection object at 0x7f3a2c1d0>: Failed to establish a new connection: [Errno -2] Name or service not known'))",
        "HTTPSConnectionPool(host='x.example', port=443): Max retries exceeded with url: /hook (Caused by NameResolutionError(\"<urllib3.connection.HTTPSConnection object at 0x7f3a2c1d0>: Failed to resolve 'x.example' ([Errno -3] Temporary failure in name resolution)\"))",
        "[Errno 8] nodename nor servname provided, or not known", "httpx.ConnectError: [Errno -2] Name or service not known",
        "java.net.UnknownHostException: hooks.example.com", "No such host is known. (hooks.example.com:443)",
        "Could not resolve host: hooks.example.com", "Resolving timed out after 5000 milliseconds",
        "error sending request for url (https://x.example/hook): error trying to connect: dns error: failed to lookup address information: Name or service not known"]);
}

#[test]
fn tls_texts() {
    check(Tls, &["HTTPSConnectionPool(host='x', port=443): Max retries exceeded with url: /hook (Caused by SSLError(SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: certificate has expired (_ssl.c:1006)')))",
        r#"Post "https://x/hook": x509: certificate has expired or is not yet valid"#,
        r#"Post "https://x/hook": tls: failed to verify certificate: x509: certificate signed by unknown authority"#,
        r#"Post "https://x/hook": remote error: tls: handshake failure"#,
        r#"Post "https://x/hook": http: server gave HTTP response to HTTPS client"#,
        "certificate has expired", "CERT_HAS_EXPIRED", "UNABLE_TO_VERIFY_LEAF_SIGNATURE", "unable to verify the first certificate",
        "self signed certificate in certificate chain", "self-signed certificate in certificate chain", "DEPTH_ZERO_SELF_SIGNED_CERT",
        "Hostname/IP does not match certificate's altnames: Host: x.example. is not in the cert's altnames: DNS:*.other.example",
        "ERR_TLS_CERT_ALTNAME_INVALID",
        "write EPROTO 140000000:error:0A00010B:SSL routines:ssl3_get_record:wrong version number:../deps/openssl/openssl/ssl/record/ssl3_record.c:355:",
        "Client network socket disconnected before secure TLS connection was established",
        "javax.net.ssl.SSLHandshakeException: PKIX path building failed: sun.security.provider.certpath.SunCertPathBuilderException: unable to find valid certification path to requested target",
        "The SSL connection could not be established, see inner exception.",
        "SSL certificate problem: unable to get local issuer certificate",
        "OpenSSL SSL_connect: SSL_ERROR_SYSCALL in connection to x.example:443",
        "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca (_ssl.c:1006)",
        "SSLError(SSLEOFError(8, 'EOF occurred in violation of protocol (_ssl.c:1006)'))"]);
}

#[test]
fn refused_texts() {
    check(ConnectionRefused, &["connect ECONNREFUSED 10.0.0.5:443",
        r#"Post "https://x/hook": dial tcp 10.0.0.5:443: connect: connection refused"#,
        "HTTPSConnectionPool(host='x.example', port=443): Max retries exceeded with url: /hook (Caused by NewConnectionError('<urllib3.connection.HTTPSConnection object at 0x7f3a2c1d0>: Failed to establish a new connection: [Errno 111] Connection refused'))",
        "httpx.ConnectError: [Errno 111] Connection refused", "ConnectionRefusedError: [Errno 111] Connection refused",
        "java.net.ConnectException: Connection refused (Connection refused)",
        "No connection could be made because the target machine actively refused it. (x.example:443)",
        "Failed to connect to x.example port 443 after 2 ms: Couldn't connect to server",
        "Cannot connect to host x.example:443 ssl:default [Connect call failed ('10.0.0.5', 443)]",
        "connect EHOSTUNREACH 10.0.0.5:443", "connect ENETUNREACH 10.0.0.5:443",
        r#"Post "https://x/hook": dial tcp 10.0.0.5:443: connect: no route to host"#,
        "dial tcp 10.0.0.5:443: connect: network is unreachable"]);
}

#[test]
fn reset_texts() {
    check(ConnectionReset, &["read ECONNRESET", "socket hang up", "write EPIPE", "ECONNABORTED", "java.io.EOFException",
        r#"Post "https://x/hook": EOF"#, r#"Post "https://x/hook": unexpected EOF"#,
        r#"Post "https://x/hook": http: server closed idle connection"#,
        "read tcp 10.0.0.3:51234->10.0.0.5:443: read: connection reset by peer",
        "write tcp 10.0.0.3:51234->10.0.0.5:443: write: broken pipe",
        "('Connection aborted.', RemoteDisconnected('Remote end closed connection without response'))",
        "('Connection aborted.', ConnectionResetError(104, 'Connection reset by peer'))",
        "httpx.RemoteProtocolError: Server disconnected without sending a response.",
        "java.net.SocketException: Connection reset",
        "Unable to read data from the transport connection: An existing connection was forcibly closed by the remote host..",
        "The response ended prematurely. (ResponseEnded)", "Recv failure: Connection reset by peer", "Empty reply from server"]);
}

#[test]
fn other_texts() {
    check(
        Other,
        &[
            "",
            "   ",
            "An error occurred while sending the request.",
            "TypeError: fetch failed",
            "A task was canceled.",
            "GEOFENCE check failed",
            "ResourceNotFound",
            "receiver returned invalid JSON",
            "HTTP 200 but body was not 'ok'",
            "http://10.0.0.5:500/status/503",
            "HTTP 5000 things",
            "🙂 ünïcödé ß İ",
        ],
    );
    assert_eq!(classify(None, None, None, None), Other);
}

#[test]
fn status_codes() {
    for code in [400, 401, 403, 404, 408, 410, 422, 429, 499] {
        assert_eq!(
            classify(
                Some(code),
                Some("Request Timeout ECONNRESET"),
                Some(1e9),
                Some(1.0)
            ),
            Http4xx
        );
    }
    for code in [500, 502, 503, 504, 599] {
        assert_eq!(
            classify(Some(code), Some("504 Gateway Timeout"), None, None),
            Http5xx
        );
    }
    for code in [100, 200, 204, 301, 302, 399] {
        assert_eq!(
            classify(Some(code), None, Some(30_000.0), Some(30_000.0)),
            Other,
            "{code}"
        );
    }
    assert_eq!(
        classify(Some(302), Some("timeout of 5000ms exceeded"), None, None),
        Timeout
    );
    for code in [0, -1, 600, 1000, i64::MIN, i64::MAX] {
        assert_eq!(
            classify(
                Some(code),
                Some("connect ECONNREFUSED 10.0.0.5:443"),
                None,
                None
            ),
            ConnectionRefused
        );
        assert_eq!(
            classify(Some(code), None, Some(30_000.0), Some(30_000.0)),
            Timeout
        );
    }
}

#[test]
fn status_in_text() {
    for (t, class) in [("HTTP 500 from receiver", Http5xx), ("HTTP 404 from receiver", Http4xx),
        ("Request failed with status code 503", Http5xx), ("Request failed with status code 429", Http4xx),
        ("HTTP/1.1 502 Bad Gateway", Http5xx), ("HTTP 504 Gateway Timeout", Http5xx),
        ("Response status code does not indicate success: 403 (Forbidden).", Http4xx),
        ("500 Server Error: Internal Server Error for url: https://x.example/hook", Http5xx),
        ("requests.exceptions.HTTPError: 404 Client Error: Not Found for url: https://x.example/hook", Http4xx),
        ("{\"statusCode\": 410}", Http4xx), ("receiver answered status=500", Http5xx)] {
        assert_eq!(classify(None, Some(t), None, None), class, "{t}");
    }
}

#[test]
fn duration_fallback() {
    let generic = Some("An error occurred while sending the request.");
    assert_eq!(
        classify(None, None, Some(29_000.0), Some(30_000.0)),
        Timeout
    );
    assert_eq!(
        classify(None, generic, Some(30_000.0), Some(30_000.0)),
        Timeout
    );
    assert_eq!(classify(None, None, Some(28_499.0), Some(30_000.0)), Other);
    assert_eq!(
        classify(
            None,
            Some("read ECONNRESET"),
            Some(30_000.0),
            Some(30_000.0)
        ),
        ConnectionReset
    );
    assert_eq!(classify(None, None, None, Some(30_000.0)), Other);
    assert_eq!(classify(None, None, Some(30_000.0), None), Other);
    for (d, t) in [
        (f64::NAN, 1.0),
        (1.0, f64::NAN),
        (f64::INFINITY, 1.0),
        (5.0, 0.0),
        (5.0, -1.0),
        (1.0, f64::INFINITY),
    ] {
        assert_eq!(classify(None, None, Some(d), Some(t)), Other, "{d} {t}");
    }
}

#[test]
fn scan_is_bounded_and_boundary_safe() {
    let near = format!("{} ECONNREFUSED", "a".repeat(1000));
    assert_eq!(classify(None, Some(&near), None, None), ConnectionRefused);
    let far = format!("{} ECONNREFUSED", "a".repeat(SCAN_LIMIT));
    assert_eq!(classify(None, Some(&far), None, None), Other);
    // A word cut at the limit must not count as whole.
    let cut = format!("{} EOFENCE", "a".repeat(SCAN_LIMIT - 4));
    assert_eq!(classify(None, Some(&cut), None, None), Other);
    for pad in 1020..1030 {
        let s = "a".repeat(pad) + &"é".repeat(3) + " EOF";
        assert_eq!(classify(None, Some(&s), None, None), Other, "{pad}");
    }
    assert_eq!(
        classify(None, Some(&"x".repeat(8 << 20)), None, None),
        Other
    );
}

#[test]
fn labels_and_markers() {
    for c in FailureClass::ALL {
        assert_eq!(FailureClass::from_str_label(c.as_str()), Some(c));
        assert!(c
            .as_str()
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
        assert!(!c.describe().is_empty());
    }
    assert!(FailureClass::ALL.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(FailureClass::from_str_label("Timeout"), None);
    // Markers are matched against a lowercased copy, so they must be lowercase.
    for m in RULES.iter().flat_map(|r| r.1.iter().chain(r.2)) {
        assert!(
            !m.is_empty() && m.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()),
            "{m}"
        );
    }
}

#[test]
fn random_inputs_never_panic() {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let pieces = [
        "EOF",
        "geo",
        "é",
        "日本",
        "😀",
        "\u{0}",
        "\u{FFFD}",
        "timeout",
        "HTTP ",
        "HTTP/1.1 ",
        "status code ",
        "5",
        "0",
        "4",
        " ",
        ":",
        "=",
        "\"",
        "ECONNRESET",
        "x509",
        "İ",
        "ß",
        "server error",
        "/",
    ];
    for round in 0..4_000 {
        let len = (next() % 1600) as usize;
        let text = if round % 2 == 0 {
            String::from_utf8_lossy(&(0..len).map(|_| next() as u8).collect::<Vec<u8>>())
                .into_owned()
        } else {
            (0..len / 4)
                .map(|_| pieces[(next() % pieces.len() as u64) as usize])
                .collect()
        };
        let status =
            [None, Some(next() as i64), Some((next() % 700) as i64)][(next() % 3) as usize];
        let duration = (next() % 2 == 0).then(|| f64::from_bits(next()));
        let timeout = (next() % 2 == 0).then(|| f64::from_bits(next()));
        let class = classify(status, Some(&text), duration, timeout);
        assert_eq!(FailureClass::from_str_label(class.as_str()), Some(class));
    }
}
