//! `error` and `response_body` taken from the raw JSON of an entry: capped
//! while they are copied out, so a large body is never built whole, and
//! decoded leniently, so no escape can fail the page.

use crate::model::cut;

/// Most bytes of `error` and `response_body` read from an entry. Both are
/// read for every entry, and bodies can be large: only what anyone keeps
/// (a failed attempt keeps 1 KiB of error and 512 bytes of body) is copied
/// out of the page.
pub const TEXT_CAP: usize = 1024;

/// A raw JSON string or number as text, capped; other types read as absent.
pub(super) fn raw_text(raw: &str) -> Option<String> {
    let raw = raw.trim();
    match raw.as_bytes().first()? {
        b'"' => Some(unescape_capped(raw)),
        b'-' | b'0'..=b'9' => Some(cut(raw, TEXT_CAP).to_string()),
        _ => None,
    }
}

/// A raw JSON value as text, capped: a string's contents, anything else
/// its compact JSON text (an API may hand on a JSON answer parsed).
pub(super) fn raw_body(raw: &str) -> String {
    let raw = raw.trim();
    if raw.starts_with('"') {
        unescape_capped(raw)
    } else {
        compact_capped(raw)
    }
}

/// Appends as much of `s` as fits under [`TEXT_CAP`]; false once full.
fn push_capped(out: &mut String, s: &str) -> bool {
    let room = TEXT_CAP - out.len();
    let part = cut(s, room);
    out.push_str(part);
    part.len() == s.len()
}

/// The contents of a raw JSON string (quotes included), its escapes
/// decoded, up to [`TEXT_CAP`] bytes. A lone surrogate becomes U+FFFD.
fn unescape_capped(quoted: &str) -> String {
    let inner = quoted.strip_prefix('"').unwrap_or(quoted);
    let inner = inner.strip_suffix('"').unwrap_or(inner);
    let mut out = String::with_capacity(inner.len().min(TEXT_CAP));
    let mut rest = inner;
    while let Some(at) = rest.find('\\') {
        if !push_capped(&mut out, &rest[..at]) {
            return out;
        }
        let (c, after) = unescape_one(&rest[at + 1..]);
        if out.len() + c.len_utf8() > TEXT_CAP {
            return out;
        }
        out.push(c);
        rest = after;
    }
    push_capped(&mut out, rest);
    out
}

/// One escape, `s` starting after its backslash: the char, and what follows.
fn unescape_one(s: &str) -> (char, &str) {
    let simple = |c: char| (c, s.get(1..).unwrap_or(""));
    match s.as_bytes().first() {
        Some(b'n') => simple('\n'),
        Some(b't') => simple('\t'),
        Some(b'r') => simple('\r'),
        Some(b'b') => simple('\u{8}'),
        Some(b'f') => simple('\u{c}'),
        Some(b'u') => {
            let Some(high) = hex4(s.get(1..5)) else {
                return simple(char::REPLACEMENT_CHARACTER);
            };
            let after = s.get(5..).unwrap_or("");
            if (0xD800..0xDC00).contains(&high) {
                if let Some(low) = after
                    .strip_prefix("\\u")
                    .and_then(|l| hex4(l.get(..4)))
                    .filter(|l| (0xDC00..0xE000).contains(l))
                {
                    let c = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
                    let c = char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER);
                    return (c, after.get(6..).unwrap_or(""));
                }
            }
            let c = char::from_u32(high).unwrap_or(char::REPLACEMENT_CHARACTER);
            (c, after)
        }
        // `"`, `\\`, `/`; anything else cannot pass serde_json's own check.
        Some(_) => {
            let c = s.chars().next().unwrap_or(char::REPLACEMENT_CHARACTER);
            (c, &s[c.len_utf8()..])
        }
        None => (char::REPLACEMENT_CHARACTER, s),
    }
}

fn hex4(s: Option<&str>) -> Option<u32> {
    u32::from_str_radix(s?, 16).ok()
}

/// Raw JSON without the whitespace between tokens, up to [`TEXT_CAP`] bytes.
fn compact_capped(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len().min(TEXT_CAP));
    let (mut in_string, mut escaped) = (false, false);
    for c in raw.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if c.is_ascii_whitespace() {
            continue;
        }
        if out.len() + c.len_utf8() > TEXT_CAP {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_decode_and_lone_surrogates_become_replacement_chars() {
        assert_eq!(unescape_capped(r#""a\"b\\c\/d\n\t""#), "a\"b\\c/d\n\t");
        assert_eq!(unescape_capped(r#""\ud83d\ude00 \u00e9""#), "😀 é");
        assert_eq!(unescape_capped(r#""x\ud800y""#), "x\u{fffd}y");
        assert_eq!(unescape_capped(r#""\udc00\ud800""#), "\u{fffd}\u{fffd}");
        // A high surrogate followed by an escape that is not a low one.
        assert_eq!(unescape_capped(r#""\ud800\u0041""#), "\u{fffd}A");
        assert_eq!(unescape_capped(r#""\u00""#), "\u{fffd}00");
        assert_eq!(unescape_capped(r#""trailing\""#), "trailing\u{fffd}");
    }

    #[test]
    fn text_is_cut_on_a_char_boundary_at_the_cap() {
        let euros = format!("\"{}\"", "€".repeat(400));
        let out = unescape_capped(&euros);
        assert_eq!(out.len(), 1023);
        assert!(out.chars().all(|c| c == '€'));
        // The cap falling inside an escape's char.
        let escaped = format!("\"{}\\u20ac\"", "a".repeat(TEXT_CAP - 1));
        assert_eq!(unescape_capped(&escaped), "a".repeat(TEXT_CAP - 1));
        let long = format!("[{}]", "1, ".repeat(1000));
        let out = compact_capped(&long);
        assert_eq!(out.len(), TEXT_CAP);
        assert!(out.starts_with("[1,1,1"));
    }

    #[test]
    fn compact_keeps_whitespace_inside_strings_only() {
        assert_eq!(
            compact_capped("{ \"a b\" : [ 1 , \"x \\\" y\" ] }"),
            r#"{"a b":[1,"x \" y"]}"#
        );
        assert_eq!(raw_body(" 12.50 "), "12.50");
        assert_eq!(raw_body("true"), "true");
        assert_eq!(raw_text("{}"), None);
        assert_eq!(raw_text("false"), None);
        assert_eq!(raw_text("-3"), Some("-3".into()));
    }
}
