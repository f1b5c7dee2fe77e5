//! One fetched batch to encoded output records: `consentgate/kernel/routing.py` in Rust.
//!
//! Outputs are encoded field by field in the order of the registered schema (the Python side
//! checks each field's type, see `consentgate/kernel/plan.py`), framed with that schema's header.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;

use crate::encode::{ContributionField, DeadLetterField, DecisionField, TrainingField};
use crate::event::{self, Event, Rejected};
use crate::keyed::Keyed;
use crate::quality::{self, Assessment, WordHashes};
use crate::rules::{self, Catalog, Consent, Outcome, DROP_REASONS};

/// How one output topic is written: its schema's fields in order and its Confluent header.
#[derive(Debug, Clone)]
pub struct Output<F> {
    pub fields: Vec<F>,
    pub header: Vec<u8>,
}

impl<F> Output<F> {
    pub fn new(names: &[String], header: Vec<u8>, parse: fn(&str) -> Result<F, String>) -> Result<Self, String> {
        Ok(Output { fields: names.iter().map(|n| parse(n)).collect::<Result<_, _>>()?, header })
    }
}

pub struct Config {
    pub catalog: Catalog,
    pub secret: Vec<u8>,
    pub decisions: Output<DecisionField>,
    pub dead_letters: Output<DeadLetterField>,
    pub contributions: Output<ContributionField>,
    /// one per catalog purpose, in catalog order
    pub training: Vec<Output<TrainingField>>,
    pub known_schema_ids: Vec<u32>,
    pub worker: String,
    pub clock_skew_ms: i64,
    pub max_record_bytes: usize,
    /// a dead letter keeps at most this much of the input's key and of its value
    pub dlq_value_bytes: usize,
}

pub struct Fetched<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<i64>,
}

pub type Encoded = (Option<Vec<u8>>, Vec<u8>);

/// Output index: 0 decisions, 1 dead letters, 2 contributions, 3 + p the training sink of purpose p.
pub const DECISIONS: usize = 0;
pub const DEAD_LETTERS: usize = 1;
pub const CONTRIBUTIONS: usize = 2;
pub const TRAINING: usize = 3;

#[derive(Debug, Default)]
pub struct BatchOut {
    pub outputs: Vec<Vec<Encoded>>,
    /// (purpose index, category, "passed" or the drop reason) -> count
    pub outcomes: HashMap<(usize, String, &'static str), u64>,
    pub dead_letters: HashMap<&'static str, u64>,
    pub decisions: u64,
    pub records_passed: u64,
    pub deferred: Vec<usize>,
}

pub struct Kernel {
    pub config: Config,
    word_hashes: Mutex<WordHashes>,
    pub(crate) keyed: Keyed,
    pub(crate) key_id: String,
}

enum Read<'a> {
    Event(Event<'a>),
    Deferred,
}

impl Kernel {
    pub fn new(config: Config) -> Self {
        let keyed = Keyed::new(&config.secret);
        let key_id = keyed.key_id();
        Kernel { config, keyed, key_id, word_hashes: Mutex::new(WordHashes::default()) }
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Route a batch; `lookup` gives a user's consent (`Err` stops the batch: it is the caller's).
    pub fn route<E>(
        &self,
        batch: &[Fetched<'_>],
        lookup: &mut dyn FnMut(&str) -> Result<Arc<Consent>, E>,
        now_ms: i64,
    ) -> Result<BatchOut, E> {
        let mut out =
            BatchOut { outputs: vec![Vec::new(); TRAINING + self.config.training.len()], ..Default::default() };
        for (index, record) in batch.iter().enumerate() {
            match self.read(record, now_ms) {
                Err(rejected) => {
                    let value = self.dead_letter(record, &rejected, now_ms);
                    out.outputs[DEAD_LETTERS].push((None, value));
                    *out.dead_letters.entry(rejected.class).or_default() += 1;
                }
                Ok(Read::Deferred) => out.deferred.push(index),
                Ok(Read::Event(event)) => {
                    let consent = lookup(event.user_id)?;
                    self.decide(record, &event, &consent, now_ms, &mut out);
                }
            }
        }
        Ok(out)
    }

    /// The route's work up to `stage` (1 decode, 2 + decide, 3 + keyed hashes, 4 + assessment),
    /// without encoding: for the bench's per-stage figures. Returns a count so nothing is optimised away.
    pub fn measure<E>(
        &self,
        batch: &[Fetched<'_>],
        lookup: &mut dyn FnMut(&str) -> Result<Arc<Consent>, E>,
        now_ms: i64,
        stage: u8,
    ) -> Result<u64, E> {
        let mut work = 0u64;
        for record in batch {
            let Ok(Read::Event(event)) = self.read(record, now_ms) else { continue };
            work += 1;
            if stage < 2 {
                continue;
            }
            let consent = lookup(event.user_id)?;
            let outcomes =
                rules::decide(&self.config.catalog, event.category, event.occurred_at * 1000, &consent, now_ms * 1000);
            let mut assessed = false;
            for outcome in outcomes {
                let Outcome::Passed { purpose, .. } = outcome else { continue };
                work += 1;
                if stage >= 3 {
                    let name = &self.config.catalog.purposes[purpose].name;
                    work += (self.keyed.pseudonym(name, event.user_id).len()
                        + self.keyed.record_id(name, event.event_id).len()) as u64;
                }
                if stage >= 4 && !assessed {
                    assessed = true;
                    work += u64::from(
                        quality::assess(
                            &event,
                            &mut self.word_hashes.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
                        )
                        .fingerprint
                        .is_some(),
                    );
                }
            }
        }
        Ok(work)
    }

    fn read<'a>(&self, record: &Fetched<'a>, now_ms: i64) -> Result<Read<'a>, Rejected> {
        let value = match record.value {
            Some(v) if !v.is_empty() => v,
            _ => return Err(Rejected::new("MissingValue", "input record has no value".to_owned())),
        };
        if value.len() > self.config.max_record_bytes {
            return Err(Rejected::new(
                "OversizedRecord",
                format!("record of {} bytes exceeds max_record_bytes={}", value.len(), self.config.max_record_bytes),
            ));
        }
        if let Some(id) = event::schema_id(value) {
            if !self.config.known_schema_ids.contains(&id) {
                return Ok(Read::Deferred);
            }
        }
        let decoded = event::decode(value)?;
        event::check(&decoded)?;
        event::check_time(decoded.occurred_at, now_ms, self.config.clock_skew_ms)?;
        Ok(Read::Event(decoded))
    }

    fn decide(&self, record: &Fetched<'_>, event: &Event<'_>, consent: &Consent, now_ms: i64, out: &mut BatchOut) {
        let cfg = &self.config;
        let outcomes = rules::decide(&cfg.catalog, event.category, event.occurred_at * 1000, consent, now_ms * 1000);
        let user_key = event.user_id.as_bytes().to_vec();
        out.outputs[DECISIONS].push((Some(user_key.clone()), self.decision(record, event, &outcomes, consent, now_ms)));
        out.decisions += 1;
        let mut assessment: Option<Assessment> = None;
        let mut passed_any = false;
        for outcome in &outcomes {
            match *outcome {
                Outcome::Dropped { purpose, reason } => {
                    *out.outcomes
                        .entry((purpose, event.category.to_owned(), DROP_REASONS[usize::from(reason)]))
                        .or_default() += 1;
                }
                Outcome::Passed { purpose, grant } => {
                    let Consent::Given(state) = consent else { unreachable!("a pass rests on a consent state") };
                    passed_any = true;
                    let name = &cfg.catalog.purposes[purpose].name;
                    let nym = self.keyed.pseudonym(name, event.user_id);
                    let rid = self.keyed.record_id(name, event.event_id);
                    let grant = &state.grants[grant];
                    let training = self.training(purpose, event, &nym, &rid, &grant.receipt_id, state.version);
                    out.outputs[TRAINING + purpose].push((Some(nym.into_bytes()), training));
                    let assessed = *assessment.get_or_insert_with(|| {
                        quality::assess(
                            event,
                            &mut self.word_hashes.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
                        )
                    });
                    let contribution = self.contribution(purpose, event, state, &grant.receipt_id, &rid, assessed);
                    out.outputs[CONTRIBUTIONS].push((Some(user_key.clone()), contribution));
                    *out.outcomes.entry((purpose, event.category.to_owned(), "passed")).or_default() += 1;
                }
            }
        }
        out.records_passed += u64::from(passed_any);
    }
}
