//! Reduces failed webhook delivery attempts to a small, fixed set of failure
//! classes for use as a Prometheus label.
//!
//! Raw error texts embed hosts, IPs, ports and durations; as label values they
//! would make the series count unbounded. [`classify`] maps each attempt to one
//! [`FailureClass`] instead, with std only (no regex crate).

/// Why a final failed attempt failed, in aggregate: a fixed set (a metric label), never the raw text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FailureClass {
    /// The receiver did not answer in time (connect, TLS handshake, headers or body).
    Timeout,
    /// No connection could be made: refused, or host/network unreachable.
    ConnectionRefused,
    /// A connection existed but was closed or reset before a full response arrived.
    ConnectionReset,
    /// The receiver's hostname could not be resolved.
    Dns,
    /// TLS failed: handshake, protocol mismatch or certificate verification.
    Tls,
    /// The receiver answered with a 4xx status.
    Http4xx,
    /// The receiver answered with a 5xx status.
    Http5xx,
    /// Nothing recognisable; someone has to read the raw text in the logs.
    Other,
}

impl FailureClass {
    /// Every class, in `Ord` order, so an exporter can pre-register all label
    /// values and a class that never occurred reads 0 instead of being absent.
    pub const ALL: [FailureClass; 8] = [
        FailureClass::Timeout,
        FailureClass::ConnectionRefused,
        FailureClass::ConnectionReset,
        FailureClass::Dns,
        FailureClass::Tls,
        FailureClass::Http4xx,
        FailureClass::Http5xx,
        FailureClass::Other,
    ];

    /// The label value; stable snake_case, because dashboards and alerts key on it.
    pub const fn as_str(self) -> &'static str {
        match self {
            FailureClass::Timeout => "timeout",
            FailureClass::ConnectionRefused => "connection_refused",
            FailureClass::ConnectionReset => "connection_reset",
            FailureClass::Dns => "dns",
            FailureClass::Tls => "tls",
            FailureClass::Http4xx => "http_4xx",
            FailureClass::Http5xx => "http_5xx",
            FailureClass::Other => "other",
        }
    }

    /// Inverse of [`FailureClass::as_str`]. Exact match only: labels are written
    /// by us, so anything else is a bug or foreign data, not a spelling variant.
    pub fn from_str_label(s: &str) -> Option<FailureClass> {
        // Derived from `as_str` so the two cannot drift apart.
        Self::ALL.iter().copied().find(|c| c.as_str() == s)
    }

    /// One short sentence for a status page, addressed to the webhook's owner.
    pub fn describe(self) -> &'static str {
        match self {
            FailureClass::Timeout => "the receiver did not answer within the webhook's timeout",
            FailureClass::ConnectionRefused => {
                "the receiver could not be connected to (connection refused or host unreachable)"
            }
            FailureClass::ConnectionReset => {
                "the connection was closed or reset before a complete response arrived"
            }
            FailureClass::Dns => "the receiver's hostname could not be resolved",
            FailureClass::Tls => {
                "the TLS connection or certificate verification with the receiver failed"
            }
            FailureClass::Http4xx => "the receiver rejected the request with a 4xx HTTP status",
            FailureClass::Http5xx => "the receiver answered with a 5xx HTTP server error",
            FailureClass::Other => "the delivery failed for a reason that could not be classified",
        }
    }
}

/// Only this many leading bytes of an error text are scanned: every library's
/// telling words come early, the tail is mostly stack traces or response bodies
/// that could cause false matches, and it keeps a huge text cheap. It also lets
/// the lowercased copy live on the stack instead of being allocated per call.
const SCAN_LIMIT: usize = 1024;

/// Share of the webhook timeout from which an unexplained failure counts as a
/// timeout: platforms abort slightly early or log rounded durations.
const TIMEOUT_SHARE: f64 = 0.95;

/// A class, then substring markers, then word markers (lowercase ASCII). Words need
/// non-alphanumeric neighbours, because short codes otherwise match inside
/// ordinary words ("EOF" in "GEOFENCE", "ENOTFOUND" in "ResourceNotFound").
struct Rule(
    FailureClass,
    &'static [&'static str],
    &'static [&'static str],
);

/// Checked in this order; the first class with a matching marker wins, which
/// resolves texts carrying markers of several classes:
/// 1. Dns first: a lookup that timed out (Go `lookup x on ...: i/o timeout`,
///    curl `Resolving timed out`) never reached the receiver; the fix is DNS,
///    not a longer timeout.
/// 2. Timeout before Tls, so `net/http: TLS handshake timeout` and Python's
///    `The handshake operation timed out` count as slowness; and before
///    ConnectionReset, so axios' `ECONNABORTED` is a reset only when the text
///    does not also say `timeout of ...ms exceeded`.
/// 3. Tls before the connection classes: a peer hanging up mid-handshake
///    (`SSLEOFError: EOF occurred`, `disconnected before secure TLS connection`)
///    usually means a TLS misconfiguration, not a flaky network.
/// 4. ConnectionRefused, which also takes unreachable hosts and networks
///    (`EHOSTUNREACH`, `ENETUNREACH`, `No route to host`): in both cases no
///    connection was ever made, which is what the owner needs to know, and a
///    separate label would almost always read 0.
/// 5. ConnectionReset last, as its markers ("EOF", "connection closed") are the
///    most generic and also show up as symptoms inside the other classes.
const RULES: [Rule; 5] = [
    Rule(
        FailureClass::Dns,
        &[
            "getaddrinfo",
            "eai_",
            "no such host",
            "name or service not known",
            "name resolution",
            "could not resolve",
            "couldn't resolve",
            "failed to resolve",
            "nameresolutionerror",
            "nodename nor servname",
            "server misbehaving",
            "unknownhostexception",
            "unresolvedaddressexception",
            ": lookup ",
            "resolving timed out",
            "dns error",
            "failed to lookup address",
            "no address associated with hostname",
            "nxdomain",
        ],
        &["enotfound"],
    ),
    Rule(
        FailureClass::Timeout,
        // "timedout" covers ETIMEDOUT/ESOCKETTIMEDOUT; "timeout" covers ReadTimeout,
        // ConnectTimeout, Client.Timeout, i/o timeout, curl's "Timeout was reached".
        &[
            "timeout",
            "timed out",
            "timedout",
            "deadline exceeded",
            "deadlineexceeded",
            "did not properly respond after a period of time",
        ],
        &[],
    ),
    Rule(
        FailureClass::Tls,
        // No bare "ssl": aiohttp writes "ssl:default" into every connection error.
        &[
            "certificate",
            "x509",
            "tls:",
            "err_tls",
            "tls connection",
            "tlsv1",
            "ssl/tls",
            "[ssl",
            "_ssl.c",
            "ssl_",
            "sslv3",
            "sslerror",
            "sslcert",
            "ssleof",
            "ssl routines",
            "ssl connection",
            "javax.net.ssl",
            "sslhandshake",
            "sslexception",
            "handshake",
            "unknown ca",
            "wrong version number",
            "self signed",
            "self-signed",
            "self_signed",
            "altname",
            "cert_",
            "leaf_signature",
            "pkix",
            "schannel",
            "secure channel",
            "http response to https client",
            "bad record mac",
            "decryption failed",
        ],
        &[],
    ),
    Rule(
        FailureClass::ConnectionRefused,
        &[
            "connection refused",
            "connectionrefused",
            "actively refused",
            "errno 111",
            "winerror 10061",
            "no route to host",
            "unreachable",
            "connect call failed",
            "cannot connect to host",
            "couldn't connect",
            "could not connect",
            "failed to connect",
            "unable to connect",
            "connectexception",
        ],
        &["econnrefused", "ehostunreach", "enetunreach"],
    ),
    Rule(
        FailureClass::ConnectionReset,
        &[
            "socket hang up",
            "connection reset",
            "connectionreset",
            "broken pipe",
            "brokenpipe",
            "remotedisconnected",
            "remote end closed connection",
            "eofexception",
            "server closed",
            "connection aborted",
            "connectionaborted",
            "forcibly closed",
            "ended prematurely",
            "premature close",
            "server disconnected",
            "serverdisconnected",
            "other side closed",
            "empty reply from server",
            "nohttpresponseexception",
            "failed to respond",
            "connection closed",
            "received no bytes",
        ],
        &["econnreset", "epipe", "eof", "econnaborted"],
    ),
];

/// Classifies a failed attempt. `timeout_ms`: the webhook's timeout if known.
///
/// Rules, in order:
/// 1. `http_status` 400..=499 is [`FailureClass::Http4xx`], 500..=599 is
///    [`FailureClass::Http5xx`], whatever the text says: the receiver answered,
///    so even "408 Request Timeout" or "504 Gateway Timeout" is its verdict.
/// 2. Otherwise the error text decides (its first 1024 bytes, ASCII
///    case-insensitive). A 4xx/5xx status written in the text (`HTTP 500 from
///    receiver`, axios' `Request failed with status code 503`, `HTTP/1.1 502`,
///    requests' `404 Client Error: ...`) counts as in rule 1, for platforms that
///    log the status only in the message. Then per-class markers, in the order
///    documented on `RULES`. The text decides even next to a 1xx/2xx/3xx
///    status: such a "failure" is odd, and a text like "timeout" explains it
///    better than the status does.
/// 3. With no recognised text and no valid (100..=599) status, a `duration_ms`
///    of at least 95% of a known `timeout_ms` is [`FailureClass::Timeout`]:
///    some clients report their own timeout only as a cancellation (.NET's
///    "A task was canceled."), and the elapsed time is then the best evidence.
///    A valid 1xx/2xx/3xx status skips this because the receiver did answer;
///    other values (some platforms log 0 for "no response") count as absent.
/// 4. Anything else is [`FailureClass::Other`].
///
/// Never panics, and never allocates.
pub fn classify(
    http_status: Option<i64>,
    error: Option<&str>,
    duration_ms: Option<f64>,
    timeout_ms: Option<f64>,
) -> FailureClass {
    if let Some(class) = http_status.and_then(http_class) {
        return class;
    }
    if let Some(class) = error.and_then(classify_text) {
        return class;
    }
    let answered = matches!(http_status, Some(100..=599));
    match (duration_ms, timeout_ms) {
        // NaN, infinities and non-positive timeouts are broken logs, not evidence.
        (Some(d), Some(t))
            if !answered && d.is_finite() && t.is_finite() && t > 0.0 && d >= TIMEOUT_SHARE * t =>
        {
            FailureClass::Timeout
        }
        _ => FailureClass::Other,
    }
}

fn http_class(code: i64) -> Option<FailureClass> {
    match code {
        400..=499 => Some(FailureClass::Http4xx),
        500..=599 => Some(FailureClass::Http5xx),
        _ => None,
    }
}

fn classify_text(text: &str) -> Option<FailureClass> {
    let mut end = text.len().min(SCAN_LIMIT);
    // Cut on a char boundary so the copy stays valid UTF-8 and `str::contains`
    // (a fast substring search) can be used; 0 is always a boundary.
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut buf = [0u8; SCAN_LIMIT];
    let lower = buf.get_mut(..end)?;
    lower.copy_from_slice(text.as_bytes().get(..end)?);
    // Only A-Z change, so the bytes stay valid UTF-8; non-ASCII text is never
    // folded, which is fine because every marker is ASCII.
    lower.make_ascii_lowercase();
    let hay = std::str::from_utf8(lower).ok()?;
    if let Some(class) = status_in_text(hay.as_bytes()) {
        return Some(class);
    }
    let next = text.as_bytes().get(end..).unwrap_or_default();
    RULES
        .iter()
        .find(|r| r.1.iter().any(|m| hay.contains(m)) || r.2.iter().any(|m| has_word(hay, next, m)))
        .map(|r| r.0)
}

/// `next` is the unscanned rest of the text, consulted for the right-hand
/// neighbour so a word cut at the scan limit is not mistaken for a whole one.
fn has_word(hay: &str, next: &[u8], needle: &str) -> bool {
    let bytes = hay.as_bytes();
    let outside = |b: Option<&u8>| b.is_none_or(|b| !b.is_ascii_alphanumeric());
    hay.match_indices(needle).any(|(i, m)| {
        let after = bytes.get(i + m.len()).or_else(|| next.first());
        outside(i.checked_sub(1).and_then(|j| bytes.get(j))) && outside(after)
    })
}

/// A 4xx/5xx status spelled out in the (lowercased) text, if any.
fn status_in_text(hay: &[u8]) -> Option<FailureClass> {
    const PREFIXES: [&[u8]; 6] = [
        b"does not indicate success",
        b"status code",
        b"status_code",
        b"statuscode",
        b"status",
        b"http",
    ];
    for p in PREFIXES {
        for (i, _) in hay.windows(p.len()).enumerate().filter(|(_, w)| w == &p) {
            let mut j = i + p.len();
            if p == b"http" && hay.get(j) == Some(&b'/') {
                // Skip a protocol version such as "/1.1" or "/2" in a status line.
                while hay
                    .get(j)
                    .is_some_and(|b| b.is_ascii_digit() || *b == b'.' || *b == b'/')
                {
                    j += 1;
                }
            }
            // A separator is required so "https://h:500" and "/status/500" do not count.
            let start = j;
            while j - start < 3 && matches!(hay.get(j), Some(b' ' | b':' | b'=' | b'"')) {
                j += 1;
            }
            if let Some(class) = three_digits(hay, j)
                .filter(|_| j > start)
                .and_then(http_class)
            {
                return Some(class);
            }
        }
    }
    // Python requests' raise_for_status: "500 Server Error: ... for url: ...".
    for s in [&b"server error"[..], b"client error"] {
        for (i, _) in hay.windows(s.len()).enumerate().filter(|(_, w)| w == &s) {
            let Some(start) = i.checked_sub(4) else {
                continue;
            };
            let left = start
                .checked_sub(1)
                .and_then(|k| hay.get(k))
                .is_none_or(|b| !b.is_ascii_alphanumeric());
            if left && hay.get(i - 1) == Some(&b' ') {
                if let Some(class) = three_digits(hay, start).and_then(http_class) {
                    return Some(class);
                }
            }
        }
    }
    None
}

/// Exactly three digits at `at`, not the start of a longer number.
fn three_digits(hay: &[u8], at: usize) -> Option<i64> {
    let digits = hay.get(at..at.checked_add(3)?)?;
    if !digits.iter().all(u8::is_ascii_digit) || hay.get(at + 3).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0, |acc, d| acc * 10 + i64::from(d - b'0')),
    )
}

#[cfg(test)]
mod tests {
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
}
