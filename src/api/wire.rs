//! The shapes of the API's answers, read leniently: a field of the wrong
//! type reads as absent, and one hostile entry never fails a whole page.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

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

/// A webhook, as the listing endpoints show it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct WebhookInfo {
    /// Webhook id.
    #[serde(deserialize_with = "id_string")]
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Whether deliveries are on; a webhook without the field counts as enabled.
    #[serde(default = "enabled_default")]
    pub enabled: bool,
}

fn enabled_default() -> bool {
    true
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

#[derive(Deserialize)]
#[serde(bound = "T: Deserialize<'de>")]
pub(super) struct Envelope<T> {
    pub(super) success: Option<bool>,
    pub(super) data: Option<Vec<T>>,
    pub(super) pagination: Option<Pagination>,
    pub(super) message: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct Pagination {
    #[serde(default, deserialize_with = "lenient_u64")]
    pub(super) total: Option<u64>,
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
                EntryField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
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
