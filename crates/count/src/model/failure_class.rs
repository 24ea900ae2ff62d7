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
mod tests;
