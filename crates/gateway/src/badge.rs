//! A flat two-part SVG badge (label | value) with no external fonts or resources.

use std::fmt::Write as _;

/// Approximate advance width of a character at 11 px in Verdana/DejaVu Sans, in px.
fn char_width(c: char) -> f32 {
    match c {
        'i' | 'j' | 'l' | '.' | ',' | ':' | ';' | '!' | '|' | '\'' => 3.5,
        'f' | 'r' | 't' | 'I' | ' ' | '(' | ')' | '[' | ']' | '-' => 4.5,
        'm' | 'w' | 'M' | 'W' | '@' | '%' => 10.0,
        c if c.is_ascii_uppercase() || c.is_ascii_digit() => 7.5,
        c if c.is_ascii() => 6.6,
        _ => 8.0,
    }
}

fn text_width(s: &str) -> u32 {
    // Bounded by the caller (label ≤ 40 characters, fixed value strings).
    s.chars().map(char_width).sum::<f32>().ceil() as u32
}

/// Escapes text for XML content and attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 does not allow.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{FFFD}'),
            '\u{FFFE}' | '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// The badge: `label` on grey, `value` on `color` (a `#rrggbb` literal).
pub(crate) fn render(label: &str, value: &str, color: &str) -> String {
    const PAD: u32 = 10;
    let lw = text_width(label) + PAD;
    let vw = text_width(value) + PAD;
    let w = lw + vw;
    let (l, v) = (escape(label), escape(value));
    let mut svg = String::with_capacity(1024);
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="20" role="img" aria-label="{l}: {v}"><title>{l}: {v}</title><linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient><clipPath id="r"><rect width="{w}" height="20" rx="3" fill="#fff"/></clipPath><g clip-path="url(#r)"><rect width="{lw}" height="20" fill="#555"/><rect x="{lw}" width="{vw}" height="20" fill="{color}"/><rect width="{w}" height="20" fill="url(#s)"/></g><g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="11"><text x="{lx}" y="15" fill="#010101" fill-opacity=".3" textLength="{lt}" lengthAdjust="spacingAndGlyphs">{l}</text><text x="{lx}" y="14" textLength="{lt}" lengthAdjust="spacingAndGlyphs">{l}</text><text x="{vx}" y="15" fill="#010101" fill-opacity=".3" textLength="{vt}" lengthAdjust="spacingAndGlyphs">{v}</text><text x="{vx}" y="14" textLength="{vt}" lengthAdjust="spacingAndGlyphs">{v}</text></g></svg>"##,
        lx = lw / 2,
        lt = lw - PAD,
        vx = lw + vw / 2,
        vt = vw - PAD,
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn badge_escapes_text_and_carries_the_colour() {
        let svg = render("a<b>&\"'\u{1}", "away", "#d4a72c");
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.contains("a&lt;b&gt;&amp;&quot;&apos;\u{FFFD}"));
        assert!(svg.contains("fill=\"#d4a72c\""));
        assert!(!svg.contains("<b>"));
        assert!(!svg.contains("http://fonts"), "no external fonts");
    }
}
