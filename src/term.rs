//! Escaping for human output: names and hosts come from snapshots (anyone holding the
//! backup-only key can write one) and from servers, so they must not reach a terminal raw
//! where an escape sequence (`ESC[2J`, `ESC]0;…BEL`) would drive the operator's terminal,
//! or a newline or bidi override would forge a line. JSON output needs none of this.

use std::borrow::Cow;
use std::fmt;

/// Whether `c` is a control character (C0, DEL, C1) or an invisible bidi override/isolate.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

fn escape_with(s: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !s.chars().any(|c| is_unsafe(c) && !keep(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            c if !is_unsafe(c) || keep(c) => out.push(c),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    Cow::Owned(out)
}

/// `s` on one line with every control character and bidi override written as an escape
/// (`\x1b`, `\n`, `\u{9b}`, `\u{202e}`): for one name, host, tag or error message.
pub fn escape(s: &str) -> Cow<'_, str> {
    escape_with(s, |_| false)
}

/// Like [`escape`] but keeps line breaks: for a whole block of human output whose lines
/// drydock laid out itself (a last line of defence behind [`esc`] at each name).
pub fn escape_lines(s: &str) -> Cow<'_, str> {
    escape_with(s, |c| c == '\n')
}

/// A value formatted with [`escape`]; width and alignment (`{:<8}`) still apply.
pub struct Escaped<T>(T);

/// Wrap a name from a snapshot or a server for `format!`: `format!("on {}", esc(&host))`.
pub fn esc<T: fmt::Display>(value: T) -> Escaped<T> {
    Escaped(value)
}

impl<T: fmt::Display> fmt::Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&escape(&self.0.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_and_bidi_are_escaped() {
        assert_eq!(
            escape("evil\x1b[2J\x1b]0;pwned\x07"),
            "evil\\x1b[2J\\x1b]0;pwned\\x07"
        );
        assert_eq!(escape("a\nb\tc\rd\x7f"), "a\\nb\\tc\\rd\\x7f");
        assert_eq!(escape("csi\u{9b}2J"), "csi\\u{9b}2J");
        assert_eq!(escape("txt.\u{202e}exe"), "txt.\\u{202e}exe");
        assert_eq!(escape("\u{2066}x\u{2069}"), "\\u{2066}x\\u{2069}");
        assert_eq!(escape_lines("a\x1b\nb\n"), "a\\x1b\nb\n");
    }

    #[test]
    fn ordinary_text_is_untouched_and_borrowed() {
        for s in ["harbor-01", "ünïcode ✓/tls.key", "..data", "a\\x1b", ""] {
            assert!(matches!(escape(s), Cow::Borrowed(b) if b == s));
        }
        assert_eq!(format!("[{:<6}]", esc("a\x07")), "[a\\x07 ]");
        assert_eq!(
            format!("{}", esc(std::path::Path::new("/x/\x1b").display())),
            "/x/\\x1b"
        );
    }
}
