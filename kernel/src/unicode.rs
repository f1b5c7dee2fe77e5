//! Python's Unicode behaviour that quality.py relies on, from tables generated out of Python's
//! own database at build time (`unicode_tables.py`): `\w`, `str.lower` (final sigma included),
//! `str.isupper`, `str.isalpha`.

mod tables {
    include!(concat!(env!("OUT_DIR"), "/unicode_tables.rs"));
}

pub use tables::UNIDATA_VERSION;

fn in_table(table: &[(u32, u32)], c: char) -> bool {
    let c = c as u32;
    table
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// Python `re`'s `\w` for str patterns.
pub fn is_word(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphanumeric() || c == '_'
    } else {
        in_table(tables::WORD, c)
    }
}

pub fn is_upper(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_uppercase()
    } else {
        in_table(tables::UPPER, c)
    }
}

pub fn is_alpha(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphabetic()
    } else {
        in_table(tables::ALPHA, c)
    }
}

fn is_case_ignorable(c: char) -> bool {
    in_table(tables::CASE_IGNORABLE, c)
}

fn is_cased(c: char) -> bool {
    in_table(tables::CASED, c)
}

/// Python's `str.lower()`.
pub fn lower(text: &str) -> String {
    if text.is_ascii() {
        return text.to_ascii_lowercase();
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii() {
            out.push(c.to_ascii_lowercase());
        } else if c == '\u{3a3}' {
            out.push(if final_sigma(&chars, i) { '\u{3c2}' } else { '\u{3c3}' });
        } else {
            match tables::LOWER.binary_search_by_key(&(c as u32), |&(code, _)| code) {
                Ok(at) => out.push_str(tables::LOWER[at].1),
                Err(_) => out.push(c),
            }
        }
    }
    out
}

/// CPython's `handle_capital_sigma`: cased, case-ignorable*, SIGMA, not (case-ignorable*, cased).
fn final_sigma(chars: &[char], i: usize) -> bool {
    let before = chars[..i].iter().rev().find(|&&c| !is_case_ignorable(c));
    let mut final_ = matches!(before, Some(&c) if is_cased(c));
    if final_ && i + 1 < chars.len() {
        let after = chars[i + 1..].iter().find(|&&c| !is_case_ignorable(c));
        final_ = match after {
            None => true,
            Some(&c) => !is_cased(c),
        };
    }
    final_
}

/// `re.findall(r"\w+", text)`.
pub fn words(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    for (at, c) in text.char_indices() {
        match (is_word(c), start) {
            (true, None) => start = Some(at),
            (false, Some(s)) => {
                out.push(&text[s..at]);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(&text[s..]);
    }
    out
}

/// `unicodedata.category(c)` is one of Cc, Cf, Cs, Co, Cn, Zl, Zp (consentgate.identifiers).
pub fn is_id_forbidden(c: char) -> bool {
    in_table(tables::ID_FORBIDDEN, c)
}

/// Python's `repr()` of a string.
pub fn repr(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') { '"' } else { '\'' };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            _ if c == quote => {
                out.push('\\');
                out.push(c);
            }
            _ if c == ' '
                || (c.is_ascii() && !c.is_ascii_control())
                || (!c.is_ascii() && in_table(tables::PRINTABLE, c)) =>
            {
                out.push(c)
            }
            _ if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            _ if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            _ => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push(quote);
    out
}
