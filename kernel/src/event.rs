//! Strict decoding of a Confluent-framed ActivityEvent and the contract checks that follow it.
//!
//! Mirrors `consentgate/kernel/reference.py` (`decode_activity`, `check_event`) and
//! `consentgate/kernel/routing.py` (`check_time`): same checks, same order, same messages.

use crate::avro::{Malformed, Reader};
use crate::unicode;

pub const MAX_ID_CHARS: usize = 200;
pub const MIN_MILLIS: i64 = -62_135_596_800_000;
pub const MAX_MILLIS: i64 = 253_402_300_799_999;
pub const BRANCHES: [&str; 6] =
    ["PostPayload", "SearchPayload", "ConversationPayload", "ClickPayload", "SignalPayload", "GenericPayload"];
const BRANCH_FIELDS: [&[&str]; 5] = [&["text"], &["query"], &["text", "thread_id"], &["item_id", "url"], &["kind"]];

/// A payload value: strings, or the signal's double.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Str(&'a str),
    Double(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event<'a> {
    pub schema_id: u32,
    pub event_id: &'a str,
    pub user_id: &'a str,
    pub category: &'a str,
    pub occurred_at: i64,
    pub source: &'a str,
    pub branch: usize,
    /// Field name -> value, in the order a Python dict of the payload has them.
    pub payload: Vec<(&'a str, Value<'a>)>,
}

impl<'a> Event<'a> {
    pub fn field(&self, name: &str) -> Option<Value<'a>> {
        self.payload.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }
}

/// The error class (as the DLQ records it) and message of a record that is not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub class: &'static str,
    pub message: String,
}

impl Rejected {
    pub fn new(class: &'static str, message: String) -> Self {
        Rejected { class, message }
    }
}

impl From<Malformed> for Rejected {
    fn from(m: Malformed) -> Self {
        Rejected::new("UndecodableRecord", m.message())
    }
}

/// The writer schema id of a framed record, if it is framed at all.
pub fn schema_id(data: &[u8]) -> Option<u32> {
    if data.len() >= 5 && data[0] == 0 {
        Some(u32::from_be_bytes([data[1], data[2], data[3], data[4]]))
    } else {
        None
    }
}

pub fn decode(data: &[u8]) -> Result<Event<'_>, Malformed> {
    let schema_id = schema_id(data)
        .ok_or_else(|| Malformed::new("not Confluent-framed (no magic byte 0 and 4-byte schema id)", 0))?;
    let mut r = Reader::new(data, 5);
    let event_id = r.string()?;
    let user_id = r.string()?;
    let category = r.string()?;
    let at = r.pos;
    let occurred_at = r.long()?;
    if !(MIN_MILLIS..=MAX_MILLIS).contains(&occurred_at) {
        return Err(Malformed::new(format!("timestamp {occurred_at} outside years 1..9999"), at));
    }
    let source = r.string()?;
    let at = r.pos;
    let index = r.long()?;
    if !(0..BRANCHES.len() as i64).contains(&index) {
        return Err(Malformed::new(format!("payload union index {index} out of range"), at));
    }
    let branch = index as usize;
    let payload = match branch {
        5 => r.string_map()?.into_iter().map(|(k, v)| (k, Value::Str(v))).collect(),
        4 => {
            let kind = r.string()?;
            vec![("kind", Value::Str(kind)), ("value", Value::Double(r.double()?))]
        }
        _ => {
            let mut fields = Vec::with_capacity(2);
            for name in BRANCH_FIELDS[branch] {
                fields.push((*name, Value::Str(r.string()?)));
            }
            fields
        }
    };
    if !r.at_end() {
        return Err(Malformed::new(format!("{} trailing bytes", r.remaining()), r.pos));
    }
    Ok(Event { schema_id, event_id, user_id, category, occurred_at, source, branch, payload })
}

/// `consentgate.identifiers.identifier_problem`.
fn identifier_problem(value: &str) -> Option<String> {
    if value.is_empty() {
        return Some("is empty".to_owned());
    }
    let chars = value.chars().count();
    if chars > MAX_ID_CHARS {
        return Some(format!("has {chars} characters (at most {MAX_ID_CHARS})"));
    }
    value
        .chars()
        .enumerate()
        .find(|&(_, c)| unicode::is_id_forbidden(c))
        .map(|(i, c)| format!("has a control or unassigned character U+{:04X} at position {i}", c as u32))
}

/// The payload branch each built-in category must use (others may use any branch).
fn expected_branch(category: &str) -> Option<usize> {
    match category {
        "post" => Some(0),
        "search" => Some(1),
        "conversation" => Some(2),
        "click" => Some(3),
        "signal" => Some(4),
        _ => None,
    }
}

pub fn check(event: &Event<'_>) -> Result<(), Rejected> {
    if event.event_id.is_empty() || event.user_id.is_empty() {
        let missing = if event.event_id.is_empty() { "event_id" } else { "user_id" };
        return Err(Rejected::new("MissingIdentifier", format!("record has an empty {missing}")));
    }
    for (name, value) in [("event_id", event.event_id), ("user_id", event.user_id), ("category", event.category)] {
        if let Some(problem) = identifier_problem(value) {
            return Err(Rejected::new("InvalidIdentifier", format!("{name} {problem}")));
        }
    }
    if let Some(expected) = expected_branch(event.category) {
        if expected != event.branch {
            return Err(Rejected::new(
                "PayloadMismatch",
                format!(
                    "category {} needs payload {}, got {}",
                    unicode::repr(event.category),
                    BRANCHES[expected],
                    BRANCHES[event.branch]
                ),
            ));
        }
    }
    Ok(())
}

pub fn check_time(occurred_at: i64, now_ms: i64, clock_skew_ms: i64) -> Result<(), Rejected> {
    if i128::from(occurred_at) > i128::from(now_ms) + i128::from(clock_skew_ms) {
        return Err(Rejected::new(
            "ImpossibleTimestamp",
            format!(
                "occurred_at {} is beyond the clock-skew allowance ({} + {clock_skew_ms} ms)",
                iso(occurred_at),
                iso(now_ms)
            ),
        ));
    }
    if occurred_at < 0 {
        return Err(Rejected::new("ImpossibleTimestamp", format!("occurred_at {} is before 1970", iso(occurred_at))));
    }
    Ok(())
}

/// Python's `datetime.isoformat()` of a UTC time given in epoch milliseconds.
pub fn iso(millis: i64) -> String {
    let days = millis.div_euclid(86_400_000);
    let in_day = millis.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let (h, min, s, ms) = (in_day / 3_600_000, in_day / 60_000 % 60, in_day / 1000 % 60, in_day % 1000);
    if ms == 0 {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}+00:00")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{:06}+00:00", ms * 1000)
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day) (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_matches_python_isoformat() {
        assert_eq!(iso(0), "1970-01-01T00:00:00+00:00");
        assert_eq!(iso(1_700_000_000_123), "2023-11-14T22:13:20.123000+00:00");
        assert_eq!(iso(-1), "1969-12-31T23:59:59.999000+00:00");
        assert_eq!(iso(MIN_MILLIS), "0001-01-01T00:00:00+00:00");
        assert_eq!(iso(MAX_MILLIS), "9999-12-31T23:59:59.999000+00:00");
    }

    #[test]
    fn trailing_bytes_and_bad_union_indexes_are_refused() {
        // magic, id 1, event "e", user "u", category "post", time 0, source "s", branch 0, text "hi"
        let mut rec = vec![0, 0, 0, 0, 1, 2, b'e', 2, b'u', 8, b'p', b'o', b's', b't', 0, 2, b's', 0, 4, b'h', b'i'];
        let event = decode(&rec).expect("well formed");
        assert_eq!(event.field("text"), Some(Value::Str("hi")));
        rec.push(0);
        assert_eq!(decode(&rec).unwrap_err(), Malformed::new("1 trailing bytes", 21));
        rec.pop();
        rec[17] = 1; // zigzag -1
        assert_eq!(decode(&rec).unwrap_err(), Malformed::new("payload union index -1 out of range", 17));
    }
}
