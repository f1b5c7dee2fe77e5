//! SPEC §3's rules, as `consentgate/decision.py` applies them. Times in epoch microseconds.

use std::collections::{HashMap, HashSet};

pub const DROP_REASONS: [&str; 7] =
    ["no_consent_record", "erased", "no_grant", "grant_after_event", "expired", "stale_terms", "unknown_category"];
pub const UNKNOWN_CATEGORY: u8 = 6;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub category: String,
    pub purpose: String,
    pub granted_at: i64,
    pub expires_at: Option<i64>,
    pub terms_version: i64,
    pub receipt_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub version: i64,
    pub tier: String,
    pub plan: Option<String>,
    pub grants: Vec<Grant>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Consent {
    Missing,
    Erased,
    Given(State),
}

impl Consent {
    pub fn version(&self) -> Option<i64> {
        match self {
            Consent::Given(state) => Some(state.version),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Purpose {
    pub name: String,
    pub terms_version: i64,
    /// category -> the fields this purpose keeps of it, in catalog order
    pub keep: HashMap<String, Vec<String>>,
}

#[derive(Debug, Clone)]
pub struct Catalog {
    pub categories: HashSet<String>,
    pub purposes: Vec<Purpose>,
    by_category: HashMap<String, Vec<usize>>,
}

impl Catalog {
    pub fn new(categories: Vec<String>, purposes: Vec<Purpose>) -> Self {
        let by_category = categories
            .iter()
            .map(|c| (c.clone(), (0..purposes.len()).filter(|&i| purposes[i].keep.contains_key(c)).collect()))
            .collect();
        Catalog { categories: categories.into_iter().collect(), purposes, by_category }
    }
}

/// One purpose's outcome: passed (with the index of the grant it rests on) or a drop reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Passed { purpose: usize, grant: usize },
    Dropped { purpose: usize, reason: u8 },
}

pub fn decide(catalog: &Catalog, category: &str, occurred_at: i64, consent: &Consent, now: i64) -> Vec<Outcome> {
    let Some(purposes) = catalog.by_category.get(category) else {
        return (0..catalog.purposes.len())
            .map(|purpose| Outcome::Dropped { purpose, reason: UNKNOWN_CATEGORY })
            .collect();
    };
    purposes.iter().map(|&p| outcome(&catalog.purposes[p], p, category, occurred_at, consent, now)).collect()
}

fn outcome(purpose: &Purpose, index: usize, category: &str, occurred_at: i64, consent: &Consent, now: i64) -> Outcome {
    let drop = |reason: u8| Outcome::Dropped { purpose: index, reason };
    let state = match consent {
        Consent::Missing => return drop(0),
        Consent::Erased => return drop(1),
        Consent::Given(state) => state,
    };
    let Some(at) = state.grants.iter().position(|g| g.category == category && g.purpose == purpose.name) else {
        return drop(2);
    };
    let grant = &state.grants[at];
    if grant.granted_at > occurred_at {
        return drop(3);
    }
    if let Some(expires) = grant.expires_at {
        if expires <= occurred_at || expires <= now {
            return drop(4);
        }
    }
    if grant.terms_version < purpose.terms_version {
        return drop(5);
    }
    Outcome::Passed { purpose: index, grant: at }
}
