//! Peer text made safe to store and show: status messages, resource names, error details that
//! came from a server or a contact. Every source cleans such text with [`clip`] before it becomes
//! an observation, so that nothing a peer sends can forge or reorder a line of human output, and
//! no status message is larger than [`MAX_STATUS_CHARS`].

use std::borrow::Cow;

/// The longest status message kept, in characters; longer ones are cut (with `…`).
pub const MAX_STATUS_CHARS: usize = 1024;

/// `text` with every character that could forge or reorder a line of human output replaced:
/// line breaks, tabs and other whitespace controls (`\t \n \r`, U+0085, U+2028, U+2029)
/// become a space; other control characters (C0, DEL, C1) and the bidirectional overrides and
/// isolates (U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069) become U+FFFD.
pub fn sanitize(text: &str) -> Cow<'_, str> {
    fn replacement(c: char) -> Option<char> {
        match c {
            '\t' | '\n' | '\r' | '\u{b}' | '\u{c}' | '\u{85}' | '\u{2028}' | '\u{2029}' => {
                Some(' ')
            }
            '\u{61c}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}' => Some('\u{fffd}'),
            c if c.is_control() => Some('\u{fffd}'),
            _ => None,
        }
    }
    if !text.chars().any(|c| replacement(c).is_some()) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(text.chars().map(|c| replacement(c).unwrap_or(c)).collect())
}

/// At most `max` characters of `text`, [sanitised](sanitize), with `…` when cut.
pub fn clip(text: &str, max: usize) -> String {
    let text = match text.char_indices().nth(max) {
        Some((at, _)) => {
            let mut s = text.get(..at).unwrap_or_default().to_owned();
            s.push('…');
            s
        }
        None => text.to_owned(),
    };
    match sanitize(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(clean) => clean,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_cuts_on_character_boundaries() {
        assert_eq!(clip("abc", 5), "abc");
        assert_eq!(clip("äöüß", 2), "äö…");
    }

    #[test]
    fn line_breaks_become_spaces_and_controls_and_overrides_become_replacement_characters() {
        assert_eq!(sanitize("a\nb\tc\r\u{2028}d"), "a b c  d");
        assert_eq!(sanitize("x\u{1b}[31my\u{202e}z"), "x\u{fffd}[31my\u{fffd}z");
        assert!(matches!(sanitize("plain text, ünïcode"), Cow::Borrowed(_)));
        assert_eq!(clip("a\nb", 10), "a b");
    }
}
