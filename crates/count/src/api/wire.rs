//! The shapes of the API's answers, read leniently: a field of the wrong
//! type reads as absent, and one hostile entry never fails a whole page.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

pub use super::raw_text::TEXT_CAP;
use super::raw_text::{raw_body, raw_text};

/// One page of a webhook's delivery log.
#[derive(Debug, Clone, Default)]
pub struct LogPage {
    /// The entries in the order the API listed them.
    pub entries: Vec<LogEntry>,
    /// `pagination.total`: how many entries the log holds (a hint).
    pub total: Option<u64>,
}

/// One delivery attempt as the API lists it. Every field is optional because
/// the API documents none of them as always present; a field of the wrong
/// type reads as absent rather than failing the page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogEntry {
    /// Log entry id: the dedupe key.
    pub id: Option<String>,
    /// Event name, e.g. `campaign.started`.
    pub event: Option<String>,
    /// 1 for the first try, rising with each retry.
    pub attempt: Option<i64>,
    /// `success`, `failed`, `pending`, or anything else.
    pub status: Option<String>,
    /// HTTP status the receiver answered; absent on timeouts.
    pub http_status: Option<i64>,
    /// How long the attempt took.
    pub duration_ms: Option<f64>,
    /// When the receiver got it (RFC 3339).
    pub delivered_at: Option<String>,
    /// When the attempt was created (RFC 3339).
    pub created_at: Option<String>,
    /// Why the attempt failed, in the API's words: at most [`TEXT_CAP`]
    /// bytes. Read only for attempts that did not succeed, as is
    /// `response_body`: nothing shows them for a success, and copying them
    /// out of every entry cost a third of reading a page.
    pub error: Option<String>,
    /// What the receiver answered, as text (a body that is not a JSON string
    /// is its compact JSON text): at most [`TEXT_CAP`] bytes.
    pub response_body: Option<String>,
}

/// A campaign or agent, as the listing endpoints show it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Owner {
    /// Campaign or agent id.
    #[serde(deserialize_with = "id_string")]
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
}

/// A webhook, as the listing endpoints and its own object show it: its
/// identity and the settings that decide what its attempts mean (how many
/// retries an event gets, how long a receiver may take). Each setting reads
/// as unknown when absent or of the wrong type, never failing the listing.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct WebhookInfo {
    /// Webhook id.
    #[serde(deserialize_with = "id_string")]
    pub id: String,
    /// Display name.
    #[serde(default, deserialize_with = "lenient_string")]
    pub name: Option<String>,
    /// Whether deliveries are on; a webhook without the field counts as enabled.
    #[serde(default = "enabled_default", deserialize_with = "lenient_enabled")]
    pub enabled: bool,
    /// Automatic retries after a failed attempt (documented 0–10).
    #[serde(default, deserialize_with = "lenient_u32")]
    pub max_retries: Option<u32>,
    /// Seconds the platform waits for the receiver (documented 5–120).
    #[serde(default, deserialize_with = "lenient_u32")]
    pub timeout: Option<u32>,
    /// The events it is subscribed to; `None` when the field is absent.
    #[serde(default, deserialize_with = "lenient_strings")]
    pub events: Option<Vec<String>>,
}

fn enabled_default() -> bool {
    true
}

fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(as_string(Value::deserialize(d)?))
}

fn lenient_enabled<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Bool(b) => b,
        Value::Number(n) => n.as_i64() != Some(0),
        Value::String(s) => !matches!(s.trim(), "false" | "0" | "no" | "off" | "disabled"),
        _ => true,
    })
}

fn lenient_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    Ok(as_i64(&Value::deserialize(d)?).and_then(|n| u32::try_from(n).ok()))
}

fn lenient_strings<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => Some(items.into_iter().filter_map(as_string).collect()),
        _ => None,
    })
}

/// Ids may come as strings or numbers.
fn id_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    as_string(Value::deserialize(d)?)
        .ok_or_else(|| de::Error::custom("id is not a string or number"))
}

/// Parses an API timestamp (RFC 3339) into Unix milliseconds.
pub fn parse_timestamp_ms(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// `{success, data, pagination, message}`: `D` is a list for the listing
/// endpoints and an object for a single webhook.
#[derive(Debug, Deserialize)]
#[serde(bound = "D: Deserialize<'de>")]
pub struct Envelope<D> {
    /// `false` when the API reports an error in a 2xx answer.
    pub success: Option<bool>,
    /// The payload.
    pub data: Option<D>,
    /// Present on the listing endpoints.
    pub pagination: Option<Pagination>,
    /// The API's message, on errors.
    pub message: Option<String>,
}

/// The `pagination` object of a listing answer.
#[derive(Debug, Deserialize)]
pub struct Pagination {
    /// How many items the whole listing has, if the API says.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub total: Option<u64>,
}

fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(as_i64(&Value::deserialize(d)?).and_then(|n| u64::try_from(n).ok()))
}

fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|f: &f64| f.is_finite())
}

fn as_string(v: Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Entries are read field by field so that one hostile entry (wrong types,
/// not even an object) reads as an entry with missing fields instead of
/// failing the whole page. Fields we do not use, however large, are skipped
/// without being built.
impl<'de> Deserialize<'de> for LogEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(EntryVisitor)
    }
}

struct EntryVisitor;

/// The key of a log entry's field, recognised without allocating it (every
/// entry has a dozen keys, most of them for fields we skip).
enum EntryField {
    Id,
    Event,
    Status,
    Attempt,
    HttpStatus,
    DurationMs,
    DeliveredAt,
    CreatedAt,
    Error,
    ResponseBody,
    Other,
}

impl<'de> Deserialize<'de> for EntryField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_identifier(EntryFieldVisitor)
    }
}

struct EntryFieldVisitor;

impl Visitor<'_> for EntryFieldVisitor {
    type Value = EntryField;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<EntryField, E> {
        Ok(match key {
            "id" => EntryField::Id,
            "event" => EntryField::Event,
            "status" => EntryField::Status,
            "attempt" => EntryField::Attempt,
            "http_status" => EntryField::HttpStatus,
            "duration_ms" => EntryField::DurationMs,
            "delivered_at" => EntryField::DeliveredAt,
            "created_at" => EntryField::CreatedAt,
            "error" => EntryField::Error,
            "response_body" => EntryField::ResponseBody,
            _ => EntryField::Other,
        })
    }
}

impl<'de> Visitor<'de> for EntryVisitor {
    type Value = LogEntry;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a log entry")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LogEntry, A::Error> {
        let mut e = LogEntry::default();
        let (mut error, mut response_body) = (None, None);
        while let Some(key) = map.next_key::<EntryField>()? {
            match key {
                EntryField::Id => e.id = as_string(map.next_value()?),
                EntryField::Event => e.event = as_string(map.next_value()?),
                EntryField::Status => e.status = as_string(map.next_value()?),
                EntryField::Attempt => e.attempt = as_i64(&map.next_value()?),
                EntryField::HttpStatus => e.http_status = as_i64(&map.next_value()?),
                EntryField::DurationMs => e.duration_ms = as_f64(&map.next_value()?),
                EntryField::DeliveredAt => e.delivered_at = as_string(map.next_value()?),
                EntryField::CreatedAt => e.created_at = as_string(map.next_value()?),
                // Taken raw, not as `Value`: a large body is then never
                // built whole, and escapes serde_json refuses in strings
                // (a lone surrogate, as JavaScript writes for broken text)
                // cannot fail the page. Null reads as absent, for nothing.
                EntryField::Error => error = map.next_value::<Option<&'de RawValue>>()?,
                EntryField::ResponseBody => {
                    response_body = map.next_value::<Option<&'de RawValue>>()?;
                }
                EntryField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        // Copied out once the status is known, whatever the fields' order.
        let succeeded = e
            .status
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("success"));
        if !succeeded {
            e.error = error.and_then(|raw| raw_text(raw.get()));
            e.response_body = response_body.map(|raw| raw_body(raw.get()));
        }
        Ok(e)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<LogEntry, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(LogEntry::default())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<LogEntry, E> {
        Ok(LogEntry::default())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<LogEntry, E> {
        Ok(LogEntry::default())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<LogEntry, E> {
        Ok(LogEntry::default())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<LogEntry, E> {
        Ok(LogEntry::default())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<LogEntry, E> {
        Ok(LogEntry::default())
    }
    fn visit_unit<E: de::Error>(self) -> Result<LogEntry, E> {
        Ok(LogEntry::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(json: &str) -> Vec<LogEntry> {
        serde_json::from_slice(json.as_bytes()).expect("entries parse")
    }

    /// Settings of the wrong type read as unknown; the webhook is still listed.
    #[test]
    fn webhook_settings_read_leniently() {
        let hooks: Vec<WebhookInfo> = serde_json::from_str(
            r#"[
            {"id":"w1","name":"CRM","enabled":true,"max_retries":0,"timeout":10,"events":["campaign.started","campaign_call.failed"]},
            {"id":7,"enabled":"false","max_retries":"5","timeout":120.0,"events":"all"},
            {"id":"w3","name":null,"max_retries":-1,"timeout":{"s":30},"events":[1,"x",null]}
        ]"#,
        )
        .expect("listing parses");
        assert_eq!(
            (hooks[0].max_retries, hooks[0].timeout, hooks[0].enabled),
            (Some(0), Some(10), true)
        );
        assert_eq!(
            hooks[0].events.as_deref(),
            Some(
                &[
                    "campaign.started".to_string(),
                    "campaign_call.failed".to_string()
                ][..]
            )
        );
        assert_eq!(hooks[1].id, "7");
        assert_eq!(
            (hooks[1].max_retries, hooks[1].timeout, hooks[1].enabled),
            (Some(5), Some(120), false)
        );
        assert_eq!(hooks[1].events, None);
        assert_eq!((hooks[2].max_retries, hooks[2].timeout), (None, None));
        assert_eq!(hooks[2].name, None);
        assert_eq!(
            hooks[2].events.as_deref(),
            Some(&["1".to_string(), "x".to_string()][..])
        );
    }

    #[test]
    fn error_and_body_read_leniently() {
        let e = entries(
            r#"[
            {"id":"a","error":"HTTP 500 from receiver","response_body":"{\"error\":\"internal\"}"},
            {"id":"b","error":42,"response_body":{ "error" : "internal", "n": [1, 2.5] }},
            {"id":"c","error":{"x":1},"response_body":[ ]},
            {"id":"d","error":true,"response_body":12.50},
            {"id":"e","error":null,"response_body":null},
            {"id":"f","error":[1],"response_body":false},
            {"id":"g"}
        ]"#,
        );
        let got: Vec<(Option<&str>, Option<&str>)> = e
            .iter()
            .map(|e| (e.error.as_deref(), e.response_body.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    Some("HTTP 500 from receiver"),
                    Some(r#"{"error":"internal"}"#)
                ),
                (Some("42"), Some(r#"{"error":"internal","n":[1,2.5]}"#)),
                (None, Some("[]")),
                (None, Some("12.50")),
                (None, None),
                (None, Some("false")),
                (None, None),
            ]
        );
    }

    /// A success's error and body are not copied out, wherever the status
    /// stands among the fields; any other status's are.
    #[test]
    fn only_attempts_that_did_not_succeed_carry_error_and_body() {
        let e = entries(
            r#"[
            {"error":"e1","response_body":"b1","status":"success"},
            {"status":"SUCCESS","error":"e2","response_body":{"ok":true}},
            {"error":"e3","response_body":"b3","status":"failed"},
            {"status":"pending","error":"e4","response_body":"b4"},
            {"status":7,"error":"e5"}
        ]"#,
        );
        let got: Vec<(Option<&str>, Option<&str>)> = e
            .iter()
            .map(|e| (e.error.as_deref(), e.response_body.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                (None, None),
                (None, None),
                (Some("e3"), Some("b3")),
                (Some("e4"), Some("b4")),
                (Some("e5"), None),
            ]
        );
    }

    #[test]
    fn a_200_kb_body_is_capped_and_the_entry_still_reads() {
        let big = "<p>".repeat(70_000);
        let json = format!(
            r#"[{{"response_body":"{big}","error":"{big}","id":"after","status":"failed"}},
                {{"response_body":{{"rows":[{rows}]}},"id":"obj"}}]"#,
            rows = vec!["\"x\""; 50_000].join(", ")
        );
        assert!(json.len() > 400_000);
        let e = entries(&json);
        assert_eq!(e[0].id.as_deref(), Some("after"));
        assert_eq!(e[0].status.as_deref(), Some("failed"));
        for text in [&e[0].response_body, &e[0].error] {
            let text = text.as_deref().expect("kept");
            assert!(text.len() <= TEXT_CAP && text.len() > TEXT_CAP - 4);
            assert!(big.starts_with(text));
        }
        let obj = e[1].response_body.as_deref().expect("kept");
        assert_eq!(obj.len(), TEXT_CAP);
        assert!(obj.starts_with(r#"{"rows":["x","x""#));
        assert_eq!(e[1].id.as_deref(), Some("obj"));
    }

    #[test]
    fn escapes_serde_json_refuses_in_strings_do_not_fail_the_page() {
        // Lone surrogates, as JavaScript's JSON.stringify writes broken text.
        let e = entries(
            r#"[{"id":"a","error":"bad \ud800 text","response_body":"\udfff<b>\u0000\u001b[31m</b>"},
                {"id":"b","response_body":"\ud83d\ude00"}]"#,
        );
        assert_eq!(e[0].error.as_deref(), Some("bad \u{fffd} text"));
        assert_eq!(
            e[0].response_body.as_deref(),
            Some("\u{fffd}<b>\u{0}\u{1b}[31m</b>")
        );
        assert_eq!(e[1].response_body.as_deref(), Some("😀"));
    }
}
