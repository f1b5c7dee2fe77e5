//! The consent view's compact table: user -> one packed record, behind an open-addressing index.
//!
//! Values arrive as consent.state's raw Confluent-framed ConsentState bytes. A record written with a
//! schema id whose writer schema is exactly the registered contract is decoded strictly here (the
//! checks of `consentgate/schemas/strict.py` and fastavro's timestamp range) and packed: category and
//! purpose interned, canonical UUID receipts as 16 bytes, times as varint deltas. Any other schema id
//! is kept raw for the Python codec (a newer writer schema resolves there); an empty value is the
//! erasure tombstone; a record that cannot be read is kept as `Corrupt` (the user fails closed).
//!
//! Records live in 1 MiB segments; a replaced record's bytes are garbage until a compaction copies
//! the live records into fresh segments. Keys are hashed with a per-process random SipHash key.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use crate::avro::{Malformed, Reader};
use crate::event::{MAX_MILLIS, MIN_MILLIS};
use crate::rules::{self, Consent};

pub const TIERS: [&str; 2] = ["free", "data_sharing"];
pub const PLANS: [&str; 4] = ["per_unit", "revenue_share", "credits", "dividend"];

const SEGMENT: usize = 1 << 20;
const SEGMENT_BITS: u32 = 20;
const OFFSET_BITS: u32 = 44;
const OFFSET_MASK: u64 = (1 << OFFSET_BITS) - 1;
const MAX_INTERNED: usize = 1 << 14;
const MAX_SCHEMA_IDS: usize = 10_000;
/// Compaction runs once garbage exceeds both this and the live bytes.
const MIN_GARBAGE: usize = 64 << 20;

const KIND_STATE: u8 = 0;
const KIND_ERASED: u8 = 1;
const KIND_CORRUPT: u8 = 2;
const KIND_RAW: u8 = 3;

const RECEIPT_TEXT: u8 = 0;
const RECEIPT_UUID_LOWER: u8 = 1;
const RECEIPT_UUID_UPPER: u8 = 2;

/// A grant as the ConsentState schema holds it; times in epoch milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant<S> {
    pub category: S,
    pub purpose: S,
    pub granted_at: i64,
    pub expires_at: Option<i64>,
    pub terms_version: i32,
    pub receipt_id: S,
}

/// A ConsentState as the schema holds it (the user id is the table's key); `tier` and `plan` are
/// indexes into `TIERS` and `PLANS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State<S> {
    pub version: i64,
    pub updated_at: i64,
    pub tier: u8,
    pub plan: Option<u8>,
    pub grants: Vec<Grant<S>>,
}

/// What the table holds for a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found<'a> {
    State(State<String>),
    Erased,
    Corrupt,
    /// written with a schema id the table does not read: the Python codec decodes it
    Raw(&'a [u8]),
}

/// Decoded from a record's bytes, borrowing its strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded<'a> {
    pub user_id: &'a str,
    pub state: State<&'a str>,
}

fn time(reader: &mut Reader<'_>) -> Result<i64, Malformed> {
    let at = reader.pos;
    let millis = reader.long()?;
    if !(MIN_MILLIS..=MAX_MILLIS).contains(&millis) {
        return Err(Malformed::new(format!("timestamp {millis} ms is outside the datetime range"), at));
    }
    Ok(millis)
}

fn index(reader: &mut Reader<'_>, what: &str, count: usize) -> Result<u8, Malformed> {
    let at = reader.pos;
    let n = reader.long()?;
    if !(0..count as i64).contains(&n) {
        return Err(Malformed::new(format!("{what} {n} is not one of 0..{}", count - 1), at));
    }
    Ok(n as u8)
}

fn grant<'a>(reader: &mut Reader<'a>) -> Result<Grant<&'a str>, Malformed> {
    let category = reader.string()?;
    let purpose = reader.string()?;
    let granted_at = time(reader)?;
    let expires_at = if index(reader, "union index", 2)? == 1 { Some(time(reader)?) } else { None };
    let at = reader.pos;
    let terms_version = i32::try_from(reader.long()?).map_err(|_| Malformed::new("int does not fit 32 bits", at))?;
    let receipt_id = reader.string()?;
    Ok(Grant { category, purpose, granted_at, expires_at, terms_version, receipt_id })
}

/// Strictly decode a ConsentState body (after the 5-byte frame) written with the registered schema.
pub fn decode(data: &[u8]) -> Result<Decoded<'_>, Malformed> {
    let mut reader = Reader::new(data, 5);
    let user_id = reader.string()?;
    let version = reader.long()?;
    let updated_at = time(&mut reader)?;
    let tier = index(&mut reader, "enum index", TIERS.len())?;
    let plan = match index(&mut reader, "union index", 2)? {
        0 => None,
        _ => Some(index(&mut reader, "enum index", PLANS.len())?),
    };
    let mut grants = Vec::new();
    loop {
        let start = reader.pos;
        let count = reader.long()?;
        if count == 0 {
            break;
        }
        let mut block_end = None;
        if count < 0 {
            let size_at = reader.pos;
            let size = reader.long()?;
            if size < 0 || size as u64 > reader.remaining() as u64 {
                return Err(Malformed::new(format!("array block of {size} bytes past the end"), size_at));
            }
            block_end = Some(reader.pos + size as usize);
        }
        // a grant takes at least 6 bytes: refuse a count the bytes cannot hold before looping over it
        if u128::from(count.unsigned_abs()) * 6 > reader.remaining() as u128 {
            return Err(Malformed::new(format!("array block of {} grants past the end", count.unsigned_abs()), start));
        }
        for _ in 0..count.unsigned_abs() {
            grants.push(grant(&mut reader)?);
        }
        if block_end.is_some_and(|end| end != reader.pos) {
            return Err(Malformed::new("array block size does not match its grants", start));
        }
    }
    if !reader.at_end() {
        return Err(Malformed::new("bytes after the record", reader.pos));
    }
    Ok(Decoded { user_id, state: State { version, updated_at, tier, plan, grants } })
}

fn put_uvarint(out: &mut Vec<u8>, mut n: u64) {
    while n > 0x7F {
        out.push((n as u8 & 0x7F) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn uvarint_len(n: u64) -> usize {
    (64 - n.max(1).leading_zeros() as usize).div_ceil(7)
}

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn unzigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

/// Reads the table's own packed records (written by this module, so a malformed one is a bug).
struct Packed<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Packed<'a> {
    fn byte(&mut self) -> u8 {
        self.pos += 1;
        self.data[self.pos - 1]
    }

    fn uvarint(&mut self) -> u64 {
        let mut value = 0u64;
        let mut shift = 0;
        loop {
            let b = self.byte();
            value |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return value;
            }
            shift += 7;
        }
    }

    fn varint(&mut self) -> i64 {
        unzigzag(self.uvarint())
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        self.pos += n;
        &self.data[self.pos - n..self.pos]
    }

    fn string(&mut self) -> String {
        let n = self.uvarint() as usize;
        String::from_utf8(self.bytes(n).to_vec()).expect("the table packs valid UTF-8 only")
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    put_uvarint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Per byte: its hex digit value, | LOWER or UPPER for a letter, or INVALID.
const HEX: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut c = 0;
    while c < 256 {
        table[c] = match c as u8 {
            b'0'..=b'9' => c as u8 - b'0',
            b'a'..=b'f' => (c as u8 - b'a' + 10) | LOWER,
            b'A'..=b'F' => (c as u8 - b'A' + 10) | UPPER,
            _ => INVALID,
        };
        c += 1;
    }
    table
};
const LOWER: u8 = 0x10;
const UPPER: u8 = 0x20;
const INVALID: u8 = 0x40;

/// A canonical UUID string (8-4-4-4-12 hex digits, one case) as 16 bytes and the case it was in.
fn uuid_bytes(s: &str) -> Option<([u8; 16], u8)> {
    let b = s.as_bytes();
    if b.len() != 36 || b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
        return None;
    }
    let mut out = [0u8; 16];
    let mut seen = 0u8;
    let mut n = 0;
    for (i, &c) in b.iter().enumerate() {
        if i == 8 || i == 13 || i == 18 || i == 23 {
            continue;
        }
        let v = HEX[usize::from(c)];
        seen |= v;
        out[n / 2] |= (v & 0xF) << (4 * (1 - n % 2));
        n += 1;
    }
    match seen & (LOWER | UPPER | INVALID) {
        0 | LOWER => Some((out, RECEIPT_UUID_LOWER)),
        UPPER => Some((out, RECEIPT_UUID_UPPER)),
        _ => None,
    }
}

fn uuid_string(bytes: &[u8], kind: u8) -> String {
    let digits: &[u8; 16] = if kind == RECEIPT_UUID_UPPER { b"0123456789ABCDEF" } else { b"0123456789abcdef" };
    let mut out = String::with_capacity(36);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(digits[usize::from(b >> 4)] as char);
        out.push(digits[usize::from(b & 0xF)] as char);
    }
    out
}

/// A key as stored: a header (length << 1 | 1 when it is a lowercase UUID) and its bytes or 16.
fn encode_key(key: &[u8], out: &mut Vec<u8>) {
    match std::str::from_utf8(key).ok().and_then(uuid_bytes) {
        Some((bytes, RECEIPT_UUID_LOWER)) => {
            put_uvarint(out, 16 << 1 | 1);
            out.extend_from_slice(&bytes);
        }
        _ => {
            put_uvarint(out, (key.len() as u64) << 1);
            out.extend_from_slice(key);
        }
    }
}

/// (category, purpose) pairs as small ids; bounded, so hostile input cannot grow it without end.
#[derive(Default)]
struct Pairs {
    names: Vec<(Box<str>, Box<str>)>,
    ids: HashMap<Box<str>, HashMap<Box<str>, u32>>,
}

impl Pairs {
    /// The pair's reference: its id + 1, or 0 when it is written literally after the grant's head.
    fn id(&mut self, category: &str, purpose: &str) -> u64 {
        if self.names.len() <= 32 {
            // a catalog's few pairs: comparing them beats hashing
            if let Some(at) = self.names.iter().position(|(c, p)| **c == *category && **p == *purpose) {
                return at as u64 + 1;
            }
        } else if let Some(&id) = self.ids.get(category).and_then(|p| p.get(purpose)) {
            return u64::from(id) + 1;
        }
        if self.names.len() >= MAX_INTERNED {
            return 0;
        }
        let id = self.names.len() as u32;
        self.names.push((category.into(), purpose.into()));
        self.ids.entry(category.into()).or_default().insert(purpose.into(), id);
        u64::from(id) + 1
    }

    fn get(&self, reference: u64, r: &mut Packed<'_>) -> (String, String) {
        if reference > 0 {
            let (category, purpose) = &self.names[(reference - 1) as usize];
            return (category.to_string(), purpose.to_string());
        }
        (r.string(), r.string())
    }

    fn bytes(&self) -> usize {
        self.names.iter().map(|(c, p)| 2 * (c.len() + p.len()) + 96).sum::<usize>()
    }
}

/// user -> packed record. See the module documentation.
pub struct Table {
    slots: Vec<u64>,
    segments: Vec<Vec<u8>>,
    len: usize,
    live: usize,
    garbage: usize,
    hasher: RandomState,
    pairs: Pairs,
    /// schema id -> read natively (its writer schema is exactly the contract)
    schema_ids: HashMap<u32, bool>,
    scratch: Vec<u8>,
}

impl Default for Table {
    fn default() -> Self {
        Self::new()
    }
}

impl Table {
    pub fn new() -> Self {
        Table {
            slots: vec![0; 1024],
            segments: Vec::new(),
            len: 0,
            live: 0,
            garbage: 0,
            hasher: RandomState::new(),
            pairs: Pairs::default(),
            schema_ids: HashMap::new(),
            scratch: Vec::new(),
        }
    }

    /// Users held (erased and corrupt ones included).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes allocated: index, segments, interned strings.
    pub fn memory(&self) -> usize {
        self.slots.capacity() * 8
            + self.segments.iter().map(Vec::capacity).sum::<usize>()
            + self.pairs.bytes()
            + self.schema_ids.capacity() * 8
    }

    /// Records written with `schema_id` are (or are not) read natively from now on.
    pub fn learn_schema_id(&mut self, schema_id: u32, native: bool) {
        if self.schema_ids.len() >= MAX_SCHEMA_IDS {
            self.schema_ids.clear();
        }
        self.schema_ids.insert(schema_id, native);
    }

    /// Whether the table already knows how it reads `schema_id`.
    pub fn knows_schema_id(&self, schema_id: u32) -> Option<bool> {
        self.schema_ids.get(&schema_id).copied()
    }

    /// Store a user's raw consent.state value (empty: erased). `classify` says whether a schema id the
    /// table has not met is read natively (None: cannot tell now, so the record is kept raw).
    /// Returns why the record cannot be read, if it cannot: the user is then held as corrupt.
    pub fn put(
        &mut self,
        key: &[u8],
        value: &[u8],
        classify: &mut dyn FnMut(u32) -> Option<bool>,
    ) -> Option<String> {
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        encode_key(key, &mut out);
        let problem = self.pack(key, value, classify, &mut out);
        if problem.is_some() {
            let key_len = self.key_len(&out);
            out.truncate(key_len);
            out.push(KIND_CORRUPT);
        }
        self.store(&out);
        self.scratch = out;
        problem
    }

    /// Hold the user as corrupt (their record was found unreadable elsewhere).
    pub fn mark_corrupt(&mut self, key: &[u8]) {
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        encode_key(key, &mut out);
        out.push(KIND_CORRUPT);
        self.store(&out);
        self.scratch = out;
    }

    fn key_len(&self, record: &[u8]) -> usize {
        let mut r = Packed { data: record, pos: 0 };
        let head = r.uvarint() as usize;
        r.pos + (head >> 1)
    }

    fn pack(
        &mut self,
        key: &[u8],
        value: &[u8],
        classify: &mut dyn FnMut(u32) -> Option<bool>,
        out: &mut Vec<u8>,
    ) -> Option<String> {
        if value.is_empty() {
            out.push(KIND_ERASED);
            return None;
        }
        if value.len() < 5 || value[0] != 0 {
            return Some("not a Confluent-framed record (magic byte 0 and a 4-byte schema id)".to_owned());
        }
        let schema_id = u32::from_be_bytes([value[1], value[2], value[3], value[4]]);
        let native = match self.schema_ids.get(&schema_id) {
            Some(&native) => native,
            None => match classify(schema_id) {
                Some(native) => {
                    self.learn_schema_id(schema_id, native);
                    native
                }
                None => false,
            },
        };
        if !native {
            out.push(KIND_RAW);
            put_uvarint(out, value.len() as u64);
            out.extend_from_slice(value);
            return None;
        }
        let decoded = match decode(value) {
            Ok(decoded) => decoded,
            Err(m) => return Some(format!("cannot decode as ConsentState: {} at byte {}", m.detail, m.position)),
        };
        if decoded.user_id.as_bytes() != key {
            return Some("its key and user_id differ".to_owned());
        }
        let state = &decoded.state;
        out.push(KIND_STATE | state.tier << 2 | state.plan.map_or(0, |p| p + 1) << 3);
        put_uvarint(out, zigzag(state.version));
        put_uvarint(out, zigzag(state.updated_at));
        put_uvarint(out, state.grants.len() as u64);
        for g in &state.grants {
            let receipt = uuid_bytes(g.receipt_id);
            let kind = receipt.map_or(RECEIPT_TEXT, |r| r.1);
            // the head: pair reference << 3 | receipt kind << 1 | expires (one byte for the first 15 pairs)
            let pair = self.pairs.id(g.category, g.purpose);
            put_uvarint(out, pair << 3 | u64::from(kind) << 1 | u64::from(g.expires_at.is_some()));
            if pair == 0 {
                put_string(out, g.category);
                put_string(out, g.purpose);
            }
            put_uvarint(out, zigzag(g.granted_at.wrapping_sub(state.updated_at)));
            if let Some(expires) = g.expires_at {
                put_uvarint(out, zigzag(expires.wrapping_sub(g.granted_at)));
            }
            put_uvarint(out, zigzag(i64::from(g.terms_version)));
            match receipt {
                Some((bytes, _)) => out.extend_from_slice(&bytes),
                None => put_string(out, g.receipt_id),
            }
        }
        None
    }

    fn hash(&self, encoded_key: &[u8]) -> u64 {
        self.hasher.hash_one(encoded_key)
    }

    /// The record at `offset`: its bytes after the length prefix.
    fn record(&self, offset: u64) -> &[u8] {
        let segment = &self.segments[(offset >> SEGMENT_BITS) as usize];
        let mut r = Packed { data: segment, pos: (offset & ((1 << SEGMENT_BITS) - 1)) as usize };
        let n = r.uvarint() as usize;
        r.bytes(n)
    }

    /// (slot index, offset) of the user whose encoded key is `encoded`, or the empty slot to fill.
    fn find(&self, encoded: &[u8], hash: u64) -> (usize, Option<u64>) {
        let mask = self.slots.len() - 1;
        let tag = hash >> OFFSET_BITS;
        let mut i = hash as usize & mask;
        loop {
            let slot = self.slots[i];
            if slot == 0 {
                return (i, None);
            }
            if slot >> OFFSET_BITS == tag {
                let offset = (slot & OFFSET_MASK) - 1;
                if self.record(offset).starts_with(encoded) {
                    return (i, Some(offset));
                }
            }
            i = (i + 1) & mask;
        }
    }

    /// Append a record (length-prefixed) to the segments; its offset.
    fn append(&mut self, record: &[u8]) -> u64 {
        let mut head = Vec::with_capacity(3);
        put_uvarint(&mut head, record.len() as u64);
        let size = head.len() + record.len();
        let fits = self.segments.last().is_some_and(|s| s.capacity() >= SEGMENT && s.len() + size <= SEGMENT);
        if !fits {
            self.segments.push(Vec::with_capacity(size.max(SEGMENT)));
        }
        let index = self.segments.len() - 1;
        let segment = &mut self.segments[index];
        let offset = ((index as u64) << SEGMENT_BITS) | segment.len() as u64;
        segment.extend_from_slice(&head);
        segment.extend_from_slice(record);
        if size > SEGMENT {
            // a record larger than a segment fills its own; nothing is appended after it
            segment.shrink_to_fit();
        }
        self.live += size;
        offset
    }

    fn store(&mut self, record: &[u8]) {
        let encoded = &record[..self.key_len(record)];
        let hash = self.hash(encoded);
        let (at, existing) = self.find(encoded, hash);
        if let Some(old) = existing {
            let size = self.record(old).len();
            let size = size + uvarint_len(size as u64);
            self.live -= size;
            self.garbage += size;
        }
        let offset = self.append(record);
        self.slots[at] = (hash >> OFFSET_BITS) << OFFSET_BITS | (offset + 1);
        if existing.is_none() {
            self.len += 1;
            if self.len * 5 > self.slots.len() * 4 {
                self.rebuild(self.slots.len() * 2, false);
            }
        } else if self.garbage > MIN_GARBAGE && self.garbage > self.live {
            self.rebuild(self.slots.len(), true);
        }
    }

    /// Re-index into `capacity` slots; with `compact`, also copy the live records into fresh segments.
    fn rebuild(&mut self, capacity: usize, compact: bool) {
        let old = std::mem::replace(&mut self.slots, vec![0; capacity]);
        let segments = if compact {
            self.live = 0;
            self.garbage = 0;
            std::mem::take(&mut self.segments)
        } else {
            Vec::new()
        };
        let mask = capacity - 1;
        for slot in old.into_iter().filter(|&s| s != 0) {
            let mut offset = (slot & OFFSET_MASK) - 1;
            if compact {
                let segment = &segments[(offset >> SEGMENT_BITS) as usize];
                let mut r = Packed { data: segment, pos: (offset & ((1 << SEGMENT_BITS) - 1)) as usize };
                let n = r.uvarint() as usize;
                offset = self.append(r.bytes(n));
            }
            let record = self.record(offset);
            let hash = self.hash(&record[..self.key_len(record)]);
            let mut i = hash as usize & mask;
            while self.slots[i] != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = (hash >> OFFSET_BITS) << OFFSET_BITS | (offset + 1);
        }
    }

    /// What the table holds for `key`, if anything.
    pub fn get(&self, key: &[u8]) -> Option<Found<'_>> {
        let mut encoded = Vec::with_capacity(key.len() + 2);
        encode_key(key, &mut encoded);
        let (_, offset) = self.find(&encoded, self.hash(&encoded));
        let record = self.record(offset?);
        let mut r = Packed { data: record, pos: encoded.len() };
        let head = r.byte();
        Some(match head & 3 {
            KIND_ERASED => Found::Erased,
            KIND_CORRUPT => Found::Corrupt,
            KIND_RAW => {
                let n = r.uvarint() as usize;
                Found::Raw(r.bytes(n))
            }
            _ => Found::State(self.unpack(head, &mut r)),
        })
    }

    fn unpack(&self, head: u8, r: &mut Packed<'_>) -> State<String> {
        let tier = head >> 2 & 1;
        let plan = (head >> 3).checked_sub(1);
        let version = r.varint();
        let updated_at = r.varint();
        let count = r.uvarint() as usize;
        let mut grants = Vec::with_capacity(count);
        for _ in 0..count {
            let head = r.uvarint();
            let (category, purpose) = self.pairs.get(head >> 3, r);
            let granted_at = updated_at.wrapping_add(r.varint());
            let expires_at = (head & 1 == 1).then(|| granted_at.wrapping_add(r.varint()));
            let terms_version = r.varint() as i32;
            let receipt_id = match (head >> 1 & 3) as u8 {
                RECEIPT_TEXT => r.string(),
                kind => uuid_string(r.bytes(16), kind),
            };
            grants.push(Grant { category, purpose, granted_at, expires_at, terms_version, receipt_id });
        }
        State { version, updated_at, tier, plan, grants }
    }
}

/// The gate's view of a stored state (times in epoch microseconds), as `convert` builds it from Python.
pub fn consent(state: &State<String>) -> Consent {
    Consent::Given(rules::State {
        version: state.version,
        tier: TIERS[usize::from(state.tier)].to_owned(),
        plan: state.plan.map(|p| PLANS[usize::from(p)].to_owned()),
        grants: state
            .grants
            .iter()
            .map(|g| rules::Grant {
                category: g.category.clone(),
                purpose: g.purpose.clone(),
                granted_at: g.granted_at * 1000,
                expires_at: g.expires_at.map(|e| e * 1000),
                terms_version: i64::from(g.terms_version),
                receipt_id: g.receipt_id.clone(),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::avro::{put_long, put_str};

    const ID: u32 = 7;

    fn framed(user: &str, state: &State<&str>) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&ID.to_be_bytes());
        put_str(&mut out, user);
        put_long(&mut out, state.version);
        put_long(&mut out, state.updated_at);
        put_long(&mut out, i64::from(state.tier));
        match state.plan {
            None => put_long(&mut out, 0),
            Some(p) => {
                put_long(&mut out, 1);
                put_long(&mut out, i64::from(p));
            }
        }
        if !state.grants.is_empty() {
            put_long(&mut out, state.grants.len() as i64);
            for g in &state.grants {
                put_str(&mut out, g.category);
                put_str(&mut out, g.purpose);
                put_long(&mut out, g.granted_at);
                match g.expires_at {
                    None => put_long(&mut out, 0),
                    Some(e) => {
                        put_long(&mut out, 1);
                        put_long(&mut out, e);
                    }
                }
                put_long(&mut out, i64::from(g.terms_version));
                put_str(&mut out, g.receipt_id);
            }
        }
        put_long(&mut out, 0);
        out
    }

    fn sample(receipt: &str) -> State<&str> {
        State {
            version: 3,
            updated_at: 1_700_000_000_000,
            tier: 1,
            plan: Some(2),
            grants: vec![
                Grant {
                    category: "post",
                    purpose: "train_ai_system.recommendation",
                    granted_at: 1_690_000_000_000,
                    expires_at: Some(1_800_000_000_000),
                    terms_version: 3,
                    receipt_id: receipt,
                },
                Grant {
                    category: "search",
                    purpose: "é",
                    granted_at: MIN_MILLIS,
                    expires_at: Some(MAX_MILLIS),
                    terms_version: i32::MIN,
                    receipt_id: "",
                },
            ],
        }
    }

    fn owned(state: &State<&str>) -> State<String> {
        State {
            version: state.version,
            updated_at: state.updated_at,
            tier: state.tier,
            plan: state.plan,
            grants: state
                .grants
                .iter()
                .map(|g| Grant {
                    category: g.category.to_owned(),
                    purpose: g.purpose.to_owned(),
                    granted_at: g.granted_at,
                    expires_at: g.expires_at,
                    terms_version: g.terms_version,
                    receipt_id: g.receipt_id.to_owned(),
                })
                .collect(),
        }
    }

    fn native(_: u32) -> Option<bool> {
        Some(true)
    }

    #[test]
    fn states_round_trip_through_the_packed_form() {
        let mut table = Table::new();
        for receipt in ["0f8fad5b-d9cb-469f-a165-70867728950e", "0F8FAD5B-D9CB-469F-A165-70867728950E",
                        "0f8fad5b-D9cb-469f-a165-70867728950e", "r-1", "0f8fad5b-d9cb-469f-a165-70867728950", "ü"]
        {
            let state = sample(receipt);
            for user in ["u1", "9b2e0a4e-8f41-4c4b-9a57-3c1f1f4c0e11", "", "ü✓"] {
                assert_eq!(table.put(user.as_bytes(), &framed(user, &state), &mut native), None);
                assert_eq!(table.get(user.as_bytes()), Some(Found::State(owned(&state))), "{user} {receipt}");
            }
        }
        assert_eq!(table.len(), 4);
    }

    #[test]
    fn markers_and_raw_records() {
        let mut table = Table::new();
        let state = sample("r");
        assert_eq!(table.put(b"gone", b"", &mut native), None);
        assert_eq!(table.get(b"gone"), Some(Found::Erased));
        let mut other = framed("newer", &state);
        other[4] = 8;
        let mut asked = Vec::new();
        let mut newer_schema = |id: u32| {
            asked.push(id);
            Some(id == ID)
        };
        assert_eq!(table.put(b"newer", &other, &mut newer_schema), None);
        assert_eq!(table.put(b"newer2", &other, &mut newer_schema), None);
        assert_eq!(asked, [8], "a schema id is classified once");
        assert_eq!(table.get(b"newer"), Some(Found::Raw(&other)));
        let mut unsure = |_: u32| None;
        let mut unknown = framed("x", &state);
        unknown[4] = 9;
        assert_eq!(table.put(b"x", &unknown, &mut unsure), None);
        assert_eq!(table.knows_schema_id(9), None, "asked again next time");
        assert_eq!(table.get(b"x"), Some(Found::Raw(&unknown)));
        assert_eq!(table.get(b"nobody"), None);
    }

    #[test]
    fn unreadable_records_are_held_as_corrupt_with_the_reason() {
        let mut table = Table::new();
        let good = framed("u", &sample("r"));
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![0xff], "not a Confluent-framed record"),
            (good[..good.len() - 1].to_vec(), "truncated varint"),
            ([good.as_slice(), &[0]].concat(), "bytes after the record"),
            (framed("someone else", &sample("r")), "its key and user_id differ"),
            (framed("u", &State { updated_at: MAX_MILLIS + 1, ..sample("r") }), "outside the datetime range"),
            (framed("u", &State { tier: 2, ..sample("r") }), "enum index 2 is not one of 0..1"),
            (framed("u", &State { plan: Some(4), ..sample("r") }), "enum index 4 is not one of 0..3"),
        ];
        for (bytes, reason) in cases {
            table.put(b"u", &good, &mut native);
            let problem = table.put(b"u", &bytes, &mut native).expect("refused");
            assert!(problem.contains(reason), "{problem} / {reason}");
            assert_eq!(table.get(b"u"), Some(Found::Corrupt));
        }
        let mut wide = framed("u", &sample("r"));
        // terms_version of the first grant: 3 -> 2**31 (does not fit an int)
        let at = wide.windows(3).position(|w| w == [6, 2, b'r']).expect("terms then the receipt");
        wide.splice(at..at + 1, [0x80, 0x80, 0x80, 0x80, 0x10]);
        assert!(table.put(b"u", &wide, &mut native).unwrap().contains("int does not fit 32 bits"));
        table.mark_corrupt(b"fresh");
        assert_eq!(table.get(b"fresh"), Some(Found::Corrupt));
    }

    #[test]
    fn blocked_arrays_are_checked() {
        let state = State { grants: vec![sample("r").grants[0].clone()], ..sample("r") };
        let plain = framed("u", &state);
        let tail = plain.len() - 1; // the closing 0 count
        let count_at = framed("u", &State { grants: vec![], ..sample("r") }).len() - 1;
        let body = &plain[count_at + 1..tail];
        let block = |size: i64| {
            let mut out = plain[..count_at].to_vec();
            put_long(&mut out, -1);
            put_long(&mut out, size);
            out.extend_from_slice(body);
            out.push(0);
            out
        };
        let mut table = Table::new();
        assert_eq!(table.put(b"u", &block(body.len() as i64), &mut native), None);
        assert_eq!(table.get(b"u"), Some(Found::State(owned(&state))));
        assert!(table.put(b"u", &block(body.len() as i64 - 1), &mut native).unwrap().contains("does not match"));
        let mut huge = plain[..count_at].to_vec();
        put_long(&mut huge, i64::MAX);
        assert!(table.put(b"u", &huge, &mut native).unwrap().contains("past the end"));
    }

    #[test]
    fn growth_replacement_and_compaction_keep_every_user() {
        let mut table = Table::new();
        let users: Vec<String> = (0..50_000).map(|i| format!("user-{i}")).collect();
        for round in 0..3i64 {
            for user in &users {
                let state = State { version: round, ..sample(user) };
                assert_eq!(table.put(user.as_bytes(), &framed(user, &state), &mut native), None);
            }
        }
        // a big raw record in a segment of its own
        let mut big = framed("big", &sample(&"x".repeat(SEGMENT + 10)));
        big[4] = 99;
        assert_eq!(table.put(b"big", &big, &mut |_| Some(false)), None);
        assert_eq!(table.len(), users.len() + 1);
        for user in &users {
            let Some(Found::State(state)) = table.get(user.as_bytes()) else { panic!("{user}") };
            assert_eq!((state.version, state.grants[0].receipt_id.as_str()), (2, user.as_str()));
        }
        assert_eq!(table.get(b"big"), Some(Found::Raw(&big)));
        // force a compaction and check again
        table.garbage = MIN_GARBAGE + table.live + 1;
        table.put(b"user-0", &framed("user-0", &State { version: 9, ..sample("user-0") }), &mut native);
        assert_eq!(table.garbage, 0);
        assert!(matches!(table.get(b"user-0"), Some(Found::State(s)) if s.version == 9));
        assert!(matches!(table.get(b"user-49999"), Some(Found::State(s)) if s.version == 2));
        assert_eq!(table.get(b"big"), Some(Found::Raw(&big)));
        assert_eq!(table.len(), users.len() + 1);
    }

    #[test]
    fn pairs_past_the_interning_bound_are_written_literally() {
        let mut table = Table::new();
        let categories: Vec<String> = (0..MAX_INTERNED + 3).map(|i| format!("c{i}")).collect();
        for (i, category) in categories.iter().enumerate() {
            let mut state = sample("r");
            state.grants[0].category = category;
            let user = format!("u{i}");
            assert_eq!(table.put(user.as_bytes(), &framed(&user, &state), &mut native), None);
        }
        assert_eq!(table.pairs.names.len(), MAX_INTERNED);
        for (i, category) in categories.iter().enumerate().rev().take(5) {
            let Some(Found::State(state)) = table.get(format!("u{i}").as_bytes()) else { panic!() };
            assert_eq!((&state.grants[0].category, &state.grants[1].purpose), (category, &"é".to_owned()));
        }
    }

    #[test]
    fn consent_matches_what_convert_builds() {
        let Consent::Given(state) = consent(&owned(&sample("r"))) else { panic!() };
        assert_eq!((state.tier.as_str(), state.plan.as_deref()), ("data_sharing", Some("credits")));
        assert_eq!(state.grants[0].granted_at, 1_690_000_000_000_000);
        assert_eq!(state.grants[1].terms_version, i64::from(i32::MIN));
    }
}
