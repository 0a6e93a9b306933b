//! What a reaction may be: one emoji (a Unicode emoji sequence: a
//! pictograph with its modifiers, joiners, variation selectors, keycaps,
//! flags or tags) or a `:shortcode:` of lowercase letters, digits, `_`, `+`
//! and `-` (custom emoji of an app). Anything else — words, several emoji,
//! markup, control characters — is refused, so a reaction is always small
//! and renders as one thing.

use crate::codes::{ErrorCode, EventError};

/// The longest reaction, in bytes (family and flag sequences run to ~35).
pub const MAX_EMOJI_BYTES: usize = 64;

pub fn check_emoji(emoji: &str) -> Result<(), EventError> {
    if is_shortcode(emoji) || is_emoji_sequence(emoji) {
        return Ok(());
    }
    Err(EventError::new(
        ErrorCode::InvalidEmoji,
        format!(
            "reaction {:?} is neither one emoji nor a :shortcode: (lowercase letters, digits, _ + -; at most 32)",
            emoji.chars().take(40).collect::<String>()
        ),
    ))
}

fn is_shortcode(text: &str) -> bool {
    let Some(name) = text.strip_prefix(':').and_then(|t| t.strip_suffix(':')) else {
        return false;
    };
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_+-".contains(&b))
}

/// A pictograph (or a keycap base or a pair of regional indicators) that
/// may be followed by modifiers and joined to further pictographs.
fn is_emoji_sequence(text: &str) -> bool {
    if text.is_empty() || text.len() > MAX_EMOJI_BYTES {
        return false;
    }
    let chars: Vec<char> = text.chars().collect();
    // Keycaps: 0-9 # * then (FE0F) 20E3.
    if matches!(chars[0], '0'..='9' | '#' | '*') {
        return matches!(chars[1..], ['\u{20E3}'] | ['\u{FE0F}', '\u{20E3}']);
    }
    // Flags: exactly two regional indicators.
    if chars.iter().all(|c| is_regional_indicator(*c)) {
        return chars.len() == 2;
    }
    let mut expect_pictograph = true;
    for c in chars {
        if expect_pictograph {
            if !is_pictograph(c) {
                return false;
            }
            expect_pictograph = false;
        } else if c == '\u{200D}' {
            expect_pictograph = true;
        } else if !is_modifier(c) {
            return false;
        }
    }
    !expect_pictograph
}

fn is_regional_indicator(c: char) -> bool {
    ('\u{1F1E6}'..='\u{1F1FF}').contains(&c)
}

fn is_pictograph(c: char) -> bool {
    matches!(c,
        '\u{00A9}' | '\u{00AE}' | '\u{203C}' | '\u{2049}' | '\u{2122}' | '\u{2139}'
        | '\u{2194}'..='\u{21AA}' | '\u{231A}'..='\u{23FF}' | '\u{24C2}'
        | '\u{25AA}'..='\u{27BF}' | '\u{2934}' | '\u{2935}' | '\u{2B05}'..='\u{2B55}'
        | '\u{3030}' | '\u{303D}' | '\u{3297}' | '\u{3299}'
        | '\u{1F000}'..='\u{1F1E5}' | '\u{1F200}'..='\u{1F3FA}' | '\u{1F400}'..='\u{1FAFF}')
}

/// Skin tones, variation selectors and tag characters (subdivision flags).
fn is_modifier(c: char) -> bool {
    matches!(c, '\u{1F3FB}'..='\u{1F3FF}' | '\u{FE0E}' | '\u{FE0F}' | '\u{E0020}'..='\u{E007F}')
}

#[cfg(test)]
mod tests;
