//! The output encoders: each output's fields in the order of its registered schema, framed with
//! that schema's header; the bytes `schemas/fastwrite.py` writes for the same values.

use sha2::{Digest, Sha256};

use crate::avro::{put_bytes, put_double, put_long, put_str};
use crate::event::{Event, Rejected, Value};
use crate::quality::Assessment;
use crate::route::{Fetched, Kernel};
use crate::rules::{self, Consent, Outcome};

const MESSAGE_CHARS: usize = 1000;
const TIERS: [&str; 2] = ["free", "data_sharing"];
const PLANS: [&str; 4] = ["per_unit", "revenue_share", "credits", "dividend"];

macro_rules! fields {
    ($name:ident { $($variant:ident = $text:literal),* $(,)? }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($variant),* }
        impl $name {
            pub fn parse(name: &str) -> Result<Self, String> {
                match name {
                    $($text => Ok($name::$variant),)*
                    other => Err(format!("the kernel writes no field {other:?} in {}", stringify!($name))),
                }
            }
        }
    };
}

fields!(DecisionField { EventId = "event_id", UserId = "user_id", Category = "category", DecidedAt = "decided_at",
    Outcomes = "outcomes", ConsentVersion = "consent_version", Input = "input" });
fields!(TrainingField { Pseudonym = "pseudonym", RecordId = "record_id", KeyId = "key_id", EventId = "event_id",
    Purpose = "purpose", Category = "category", OccurredAt = "occurred_at", Fields = "fields",
    ReceiptId = "receipt_id", ConsentVersion = "consent_version" });
fields!(ContributionField { EventId = "event_id", RecordId = "record_id", KeyId = "key_id", Purpose = "purpose",
    UserId = "user_id", Category = "category", Units = "units", Quality = "quality", Fingerprint = "fingerprint",
    OccurredAt = "occurred_at", Tier = "tier", Plan = "plan", ReceiptId = "receipt_id",
    ConsentVersion = "consent_version" });
fields!(DeadLetterField { Key = "key", Value = "value", ValueLength = "value_length",
    ValueSha256 = "value_sha256", Truncated = "truncated", Topic = "topic", Partition = "partition",
    Offset = "offset", Timestamp = "timestamp", ErrorClass = "error_class", Message = "message",
    FailedAt = "failed_at", Worker = "worker" });

impl Kernel {
    pub(crate) fn decision(
        &self,
        record: &Fetched<'_>,
        event: &Event<'_>,
        outcomes: &[Outcome],
        consent: &Consent,
        now_ms: i64,
    ) -> Vec<u8> {
        let mut b = self.config.decisions.header.clone();
        for field in &self.config.decisions.fields {
            match field {
                DecisionField::EventId => put_str(&mut b, event.event_id),
                DecisionField::UserId => put_str(&mut b, event.user_id),
                DecisionField::Category => put_str(&mut b, event.category),
                DecisionField::DecidedAt => put_long(&mut b, now_ms),
                DecisionField::Outcomes => {
                    if !outcomes.is_empty() {
                        put_long(&mut b, outcomes.len() as i64);
                        for outcome in outcomes {
                            match *outcome {
                                Outcome::Passed { purpose, .. } => {
                                    put_str(&mut b, &self.config.catalog.purposes[purpose].name);
                                    b.extend_from_slice(&[1, 0]);
                                }
                                Outcome::Dropped { purpose, reason } => {
                                    put_str(&mut b, &self.config.catalog.purposes[purpose].name);
                                    b.extend_from_slice(&[0, 2]);
                                    put_long(&mut b, i64::from(reason));
                                }
                            }
                        }
                    }
                    b.push(0);
                }
                DecisionField::ConsentVersion => put_optional_long(&mut b, consent.version()),
                DecisionField::Input => {
                    put_str(&mut b, record.topic);
                    put_long(&mut b, i64::from(record.partition));
                    put_long(&mut b, record.offset);
                }
            }
        }
        b
    }

    pub(crate) fn training(
        &self,
        purpose: usize,
        event: &Event<'_>,
        nym: &str,
        rid: &str,
        receipt: &str,
        version: i64,
    ) -> Vec<u8> {
        let plan = &self.config.training[purpose];
        let info = &self.config.catalog.purposes[purpose];
        let mut b = plan.header.clone();
        for field in &plan.fields {
            match field {
                TrainingField::Pseudonym => put_str(&mut b, nym),
                TrainingField::RecordId => put_str(&mut b, rid),
                TrainingField::KeyId => put_str(&mut b, &self.key_id),
                TrainingField::EventId => put_str(&mut b, event.event_id),
                TrainingField::Purpose => put_str(&mut b, &info.name),
                TrainingField::Category => put_str(&mut b, event.category),
                TrainingField::OccurredAt => put_long(&mut b, event.occurred_at),
                TrainingField::Fields => {
                    let keep = info.keep.get(event.category).map(Vec::as_slice).unwrap_or_default();
                    let kept: Vec<(&str, Value<'_>)> =
                        keep.iter().filter_map(|name| event.field(name).map(|v| (name.as_str(), v))).collect();
                    if !kept.is_empty() {
                        put_long(&mut b, kept.len() as i64);
                        for (name, value) in kept {
                            put_str(&mut b, name);
                            match value {
                                Value::Str(s) => {
                                    b.push(0);
                                    put_str(&mut b, s);
                                }
                                Value::Double(d) => {
                                    b.push(2);
                                    put_double(&mut b, d);
                                }
                            }
                        }
                    }
                    b.push(0);
                }
                TrainingField::ReceiptId => put_str(&mut b, receipt),
                TrainingField::ConsentVersion => put_long(&mut b, version),
            }
        }
        b
    }

    pub(crate) fn contribution(
        &self,
        purpose: usize,
        event: &Event<'_>,
        state: &rules::State,
        receipt: &str,
        rid: &str,
        assessed: Assessment,
    ) -> Vec<u8> {
        let mut b = self.config.contributions.header.clone();
        for field in &self.config.contributions.fields {
            match field {
                ContributionField::EventId => put_str(&mut b, event.event_id),
                ContributionField::RecordId => put_str(&mut b, rid),
                ContributionField::KeyId => put_str(&mut b, &self.key_id),
                ContributionField::Purpose => put_str(&mut b, &self.config.catalog.purposes[purpose].name),
                ContributionField::UserId => put_str(&mut b, event.user_id),
                ContributionField::Category => put_str(&mut b, event.category),
                ContributionField::Units => put_long(&mut b, 1),
                ContributionField::Quality => {
                    b.push(2);
                    put_double(&mut b, assessed.quality);
                }
                ContributionField::Fingerprint => put_optional_long(&mut b, assessed.fingerprint),
                ContributionField::OccurredAt => put_long(&mut b, event.occurred_at),
                ContributionField::Tier => put_long(&mut b, symbol(&TIERS, &state.tier)),
                ContributionField::Plan => match &state.plan {
                    None => b.push(0),
                    Some(plan) => {
                        b.push(2);
                        put_long(&mut b, symbol(&PLANS, plan));
                    }
                },
                ContributionField::ReceiptId => put_str(&mut b, receipt),
                ContributionField::ConsentVersion => put_long(&mut b, state.version),
            }
        }
        b
    }

    pub(crate) fn dead_letter(&self, record: &Fetched<'_>, rejected: &Rejected, now_ms: i64) -> Vec<u8> {
        let bound = self.config.dlq_value_bytes;
        let mut b = self.config.dead_letters.header.clone();
        for field in &self.config.dead_letters.fields {
            match field {
                DeadLetterField::Key => put_optional_bytes(&mut b, record.key.map(|k| &k[..k.len().min(bound)])),
                DeadLetterField::Value => put_optional_bytes(&mut b, record.value.map(|v| &v[..v.len().min(bound)])),
                DeadLetterField::ValueLength => put_optional_long(&mut b, record.value.map(|v| v.len() as i64)),
                DeadLetterField::ValueSha256 => match record.value {
                    None => b.push(0),
                    Some(v) => {
                        b.push(2);
                        put_str(&mut b, &hex(&Sha256::digest(v)));
                    }
                },
                DeadLetterField::Truncated => {
                    let cut =
                        record.key.is_some_and(|k| k.len() > bound) || record.value.is_some_and(|v| v.len() > bound);
                    b.push(u8::from(cut));
                }
                DeadLetterField::Topic => put_str(&mut b, record.topic),
                DeadLetterField::Partition => put_long(&mut b, i64::from(record.partition)),
                DeadLetterField::Offset => put_long(&mut b, record.offset),
                DeadLetterField::Timestamp => put_optional_long(&mut b, record.timestamp.filter(|&ts| ts >= 0)),
                DeadLetterField::ErrorClass => put_str(&mut b, rejected.class),
                DeadLetterField::Message => put_str(&mut b, truncate_chars(&rejected.message, MESSAGE_CHARS)),
                DeadLetterField::FailedAt => put_long(&mut b, now_ms),
                DeadLetterField::Worker => put_str(&mut b, &self.config.worker),
            }
        }
        b
    }
}

/// The index of an enum symbol; the caller checked the symbol (see `State` conversion).
fn symbol(symbols: &[&str], value: &str) -> i64 {
    symbols.iter().position(|s| *s == value).map_or(0, |i| i as i64)
}

pub fn valid_tier(tier: &str) -> bool {
    TIERS.contains(&tier)
}

pub fn valid_plan(plan: &str) -> bool {
    PLANS.contains(&plan)
}

fn put_optional_long(b: &mut Vec<u8>, value: Option<i64>) {
    match value {
        None => b.push(0),
        Some(v) => {
            b.push(2);
            put_long(b, v);
        }
    }
}

fn put_optional_bytes(b: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        None => b.push(0),
        Some(v) => {
            b.push(2);
            put_bytes(b, v);
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn truncate_chars(text: &str, chars: usize) -> &str {
    match text.char_indices().nth(chars) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}
