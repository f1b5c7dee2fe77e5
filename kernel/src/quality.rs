//! `consentgate/quality.py`'s assessment, bit for bit: the same words (Python's `\w` on
//! `str.lower()`, final sigma included), the same spam signs, the same float operations in the
//! same order, Python's `round(x, 3)`, and the same SimHash (BLAKE2b-64 per word, per-bit
//! majority computed in 16-bit lanes with their carries, as the Python's big-integer trick does).

use std::collections::{HashMap, HashSet};

use blake2::digest::{Update, VariableOutput};
use blake2::Blake2bVar;

use crate::event::{Event, Value};
use crate::unicode;

const SPAM_PHRASES: [&str; 10] = [
    "click here",
    "free money",
    "buy now",
    "limited offer",
    "you have won",
    "act now",
    "work from home",
    "100% free",
    "risk free",
    "dm me for",
];

/// BLAKE2b-64 of recently seen words (a platform's vocabulary repeats; hashing is the slow part),
/// bounded like quality.py's own cache.
#[derive(Debug, Default)]
pub struct WordHashes(HashMap<String, u64>);

const WORD_CACHE_LIMIT: usize = 200_000;

impl WordHashes {
    fn get(&mut self, word: &str) -> u64 {
        if let Some(&h) = self.0.get(word) {
            return h;
        }
        let mut out = [0u8; 8];
        let mut hasher = Blake2bVar::new(8).expect("8 is a valid BLAKE2b digest size");
        hasher.update(word.as_bytes());
        hasher.finalize_variable(&mut out).expect("the buffer is the digest size");
        let h = u64::from_le_bytes(out);
        if self.0.len() >= WORD_CACHE_LIMIT {
            self.0.clear();
        }
        self.0.insert(word.to_owned(), h);
        h
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assessment {
    pub quality: f64,
    pub fingerprint: Option<i64>,
}

/// (text field, words for full length) of the categories that carry text.
fn text_field(category: &str) -> Option<(&'static str, u32)> {
    match category {
        "post" => Some(("text", 12)),
        "search" => Some(("query", 3)),
        "conversation" => Some(("text", 8)),
        _ => None,
    }
}

pub fn assess(event: &Event<'_>, hashes: &mut WordHashes) -> Assessment {
    let Some((field, full_length)) = text_field(event.category) else {
        return Assessment { quality: 1.0, fingerprint: None };
    };
    let Some(Value::Str(text)) = event.field(field) else {
        return Assessment { quality: 0.0, fingerprint: None };
    };
    assess_text(text, full_length, hashes)
}

pub fn assess_text(text: &str, full_length: u32, hashes: &mut WordHashes) -> Assessment {
    let lowered = unicode::lower(text);
    let words = unicode::words(&lowered);
    if words.is_empty() {
        return Assessment { quality: 0.0, fingerprint: None };
    }
    let n = words.len() as f64;
    let length = {
        let fraction = n / f64::from(full_length);
        if fraction < 1.0 {
            fraction
        } else {
            1.0
        }
    };
    let distinct = words.iter().collect::<HashSet<_>>().len() as f64;
    let information = 0.5 + 0.5 * distinct / n;
    let quality = length * information * (1.0 - 0.25 * f64::from(spam_signs(text, &lowered)));
    let quality = if 0.0 > quality { 0.0 } else { quality };
    Assessment { quality: round3(quality), fingerprint: Some(simhash(&words, hashes)) }
}

/// 0..4; 4 for a spam phrase, else one per weaker sign (three signs count as four).
pub fn spam_signs(text: &str, lowered: &str) -> u32 {
    if SPAM_PHRASES.iter().any(|p| lowered.contains(p)) {
        return 4;
    }
    let mut signs = 0;
    if lowered.matches("http://").count() + lowered.matches("https://").count() >= 2 {
        signs += 1;
    }
    let upper = text.chars().filter(|&c| unicode::is_upper(c)).count();
    if upper >= 7 {
        let letters = text.chars().filter(|&c| unicode::is_alpha(c)).count();
        if letters >= 10 && (upper as f64) > 0.6 * letters as f64 {
            signs += 1;
        }
    }
    if has_run(text) {
        signs += 1;
    }
    if signs >= 3 {
        4
    } else {
        signs
    }
}

/// Python's `re.search(r"(.)\1{5,}", text)`: one character (not a newline) six times in a row.
fn has_run(text: &str) -> bool {
    let mut last = '\n';
    let mut run = 0;
    for c in text.chars() {
        if c == last && c != '\n' {
            run += 1;
            if run >= 6 {
                return true;
            }
        } else {
            last = c;
            run = 1;
        }
    }
    false
}

/// Python's `round(x, 3)`: the correctly rounded decimal (ties to even), read back.
fn round3(x: f64) -> f64 {
    format!("{x:.3}").parse().expect("a formatted float parses")
}

/// The 64-bit SimHash of `consentgate.quality.simhash`, as a signed 64-bit value.
pub fn simhash(words: &[&str], hashes: &mut WordHashes) -> i64 {
    let mut counts = [0i64; 64];
    for word in words {
        let h = hashes.get(word);
        for (bit, count) in counts.iter_mut().enumerate() {
            *count += ((h >> bit) & 1) as i64;
        }
    }
    // Python adds (0x8000 - threshold) to every 16-bit lane of one big integer and reads bit 15
    // of each lane; with more than 0x7FFF words a lane overflows into the next. Reproduce that
    // exactly: carry lane by lane, two's complement, floor division.
    let threshold = (words.len() / 2 + 1) as i64;
    let mut carry: i64 = 0;
    let mut value: u64 = 0;
    for (bit, count) in counts.iter().enumerate() {
        let lane = count + 0x8000 - threshold + carry;
        if lane.rem_euclid(0x1_0000) & 0x8000 != 0 {
            value |= 1 << bit;
        }
        carry = lane.div_euclid(0x1_0000);
    }
    value as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round3_ties_to_even_like_python() {
        assert_eq!(round3(0.0625), 0.062);
        assert_eq!(round3(0.1875), 0.188);
        assert_eq!(round3(0.5), 0.5);
        assert_eq!(round3(0.3335), 0.334); // 0.3335 is just above the tie in binary: Python says 0.334 too
    }

    #[test]
    fn spam_phrases_and_signs() {
        assert_eq!(spam_signs("Click HERE now", "click here now"), 4);
        assert_eq!(spam_signs("aaaaaa", "aaaaaa"), 1);
        assert_eq!(spam_signs("aaaaa\naaaaa", "aaaaa\naaaaa"), 0);
    }
}
