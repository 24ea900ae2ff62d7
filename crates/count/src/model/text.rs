//! Text from the API made fit to keep and to show: capped in bytes on a
//! char boundary, without control characters.

/// The longest prefix of `s` of at most `max` bytes that ends on a char
/// boundary (a cut inside a char would not be text).
pub fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The first `max` bytes of `s` (cut on a char boundary), without control
/// characters: line breaks and tabs become a space so words stay apart,
/// other controls go, and so do the bidirectional overrides, which would
/// reorder the text around them on a page. Never longer than `max`.
pub fn clean(s: &str, max: usize) -> Box<str> {
    let s = cut(s, max);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\t' | '\n' | '\r' => out.push(' '),
            c if c.is_control() || is_bidi_control(c) => {}
            c => out.push(c),
        }
    }
    // Exactly as long as kept: these live as long as the webhook's state.
    out.into_boxed_str()
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_never_splits_a_char() {
        assert_eq!(cut("héllo", 2), "h");
        assert_eq!(cut("héllo", 3), "hé");
        assert_eq!(cut("abc", 10), "abc");
        assert_eq!(cut("€", 2), "");
    }

    #[test]
    fn clean_strips_controls_after_the_cut() {
        assert_eq!(
            &*clean("a\u{0}b\u{1b}[31mc\r\nd\u{7f}\u{85}e\u{202e}f", 100),
            "ab[31mc  def"
        );
        let long = format!("{}\u{0}", "é".repeat(300));
        let kept = clean(&long, 512);
        assert_eq!(kept.len(), 512);
        assert!(kept.chars().all(|c| c == 'é'));
        assert_eq!(&*clean("<script>alert(1)</script>", 8), "<script>");
    }
}
