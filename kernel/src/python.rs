//! The Python bindings: `consentgate._kernel`. Python keeps the loop, the Kafka clients,
//! transactions and metrics; this only turns a fetched batch into encoded outputs.

use std::collections::HashMap;
use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use crate::encode;
use crate::event::{self, Value, BRANCHES};
use crate::quality;
use crate::route::{self, Config, Fetched, Output};
use crate::rules::{Catalog, Consent, Grant, Purpose, State};
use crate::table_py::ConsentTable;
use crate::unicode::UNIDATA_VERSION;

/// (topic, the registered schema's field names in order, Confluent header)
type OutputSpec = (String, Vec<String>, Vec<u8>);
/// (purpose, terms_version, [(category, fields kept)])
type PurposeSpec = (String, i64, Vec<(String, Vec<String>)>);
const CACHE_LIMIT: usize = 500_000;

fn value_error(message: String) -> PyErr {
    PyValueError::new_err(message)
}

#[pyclass(module = "consentgate._kernel")]
struct Kernel {
    inner: route::Kernel,
    topics: Vec<String>,
    erased_type: Py<PyAny>,
    micros: Py<PyAny>,
    /// user -> (the consent object last returned for them, its conversion): the view hands out
    /// the same immutable object until the user's consent changes, so identity means unchanged.
    cache: HashMap<String, (Py<PyAny>, Arc<Consent>)>,
}

fn output<F>(spec: &OutputSpec, parse: fn(&str) -> Result<F, String>) -> PyResult<Output<F>> {
    Output::new(&spec.1, spec.2.clone(), parse).map_err(value_error)
}

fn convert(obj: &Bound<'_, PyAny>, erased_type: &Bound<'_, PyAny>, micros: &Bound<'_, PyAny>) -> PyResult<Consent> {
    if obj.is_none() {
        return Ok(Consent::Missing);
    }
    if obj.is_instance(erased_type)? {
        return Ok(Consent::Erased);
    }
    let tier: String = obj.getattr("tier")?.extract()?;
    let plan: Option<String> = obj.getattr("plan")?.extract()?;
    if !encode::valid_tier(&tier) || !plan.as_deref().is_none_or(encode::valid_plan) {
        return Err(value_error(format!("consent state has an unknown tier or plan: {tier:?} {plan:?}")));
    }
    let mut grants = Vec::new();
    for grant in obj.getattr("grants")?.try_iter()? {
        let grant = grant?;
        let expires = grant.getattr("expires_at")?;
        grants.push(Grant {
            category: grant.getattr("category")?.extract()?,
            purpose: grant.getattr("purpose")?.extract()?,
            granted_at: micros.call1((grant.getattr("granted_at")?,))?.extract()?,
            expires_at: if expires.is_none() { None } else { Some(micros.call1((expires,))?.extract()?) },
            terms_version: grant.getattr("terms_version")?.extract()?,
            receipt_id: grant.getattr("receipt_id")?.extract()?,
        });
    }
    Ok(Consent::Given(State { version: obj.getattr("version")?.extract()?, tier, plan, grants }))
}

/// A fetched record as Python passes it: (key, value, topic, partition, offset, timestamp).
type Parts<'py> =
    (Option<Bound<'py, PyBytes>>, Option<Bound<'py, PyBytes>>, Bound<'py, PyString>, i32, i64, Option<i64>);

/// One batch item: a `Fetched` tuple, or a fetched `confluent_kafka.Message` (read through its accessors,
/// so the gate hands over what it consumed without building tuples).
fn parts<'py>(batch: &Bound<'py, PyAny>) -> PyResult<Vec<Parts<'py>>> {
    let mut out: Vec<Parts<'py>> = Vec::new();
    for item in batch.try_iter()? {
        let item = item?;
        if item.is_instance_of::<PyTuple>() {
            out.push(item.extract()?);
            continue;
        }
        // (type, ms): type 0 is TIMESTAMP_NOT_AVAILABLE
        let (kind, timestamp): (i32, i64) = item.call_method0(intern!(item.py(), "timestamp"))?.extract()?;
        out.push((
            item.call_method0(intern!(item.py(), "key"))?.extract()?,
            item.call_method0(intern!(item.py(), "value"))?.extract()?,
            item.call_method0(intern!(item.py(), "topic"))?.extract()?,
            item.call_method0(intern!(item.py(), "partition"))?.extract()?,
            item.call_method0(intern!(item.py(), "offset"))?.extract()?,
            (kind != 0).then_some(timestamp),
        ));
    }
    Ok(out)
}

fn fetched<'a>(parts: &'a [Parts<'_>]) -> PyResult<Vec<Fetched<'a>>> {
    parts
        .iter()
        .map(|(key, value, topic, partition, offset, timestamp)| {
            Ok(Fetched {
                key: key.as_ref().map(|k| k.as_bytes()),
                value: value.as_ref().map(|v| v.as_bytes()),
                topic: topic.to_str()?,
                partition: *partition,
                offset: *offset,
                timestamp: *timestamp,
            })
        })
        .collect()
}

/// A user's consent: once per batch from `lookup`, converted once per distinct consent object.
///
/// `lookup` is the view's `ConsentTable` (read natively; its `fallback` is called for a user whose
/// record is kept raw) or a callable `user -> ConsentState | Erased | None`.
fn consent_of(
    py: Python<'_>,
    user: &str,
    lookup: &Bound<'_, PyAny>,
    erased_type: &Bound<'_, PyAny>,
    micros: &Bound<'_, PyAny>,
    cache: &mut HashMap<String, (Py<PyAny>, Arc<Consent>)>,
    in_batch: &mut HashMap<String, Arc<Consent>>,
) -> PyResult<Arc<Consent>> {
    if let Some(found) = in_batch.get(user) {
        return Ok(found.clone());
    }
    let mut call = lookup.clone();
    if let Ok(table) = lookup.downcast::<ConsentTable>() {
        let table = table.try_borrow()?;
        if let Some(native) = table.consent(user) {
            let native = Arc::new(native);
            in_batch.insert(user.to_owned(), native.clone());
            return Ok(native);
        }
        let Some(fallback) = table.fallback(py) else {
            return Err(value_error("the consent table keeps this user's record raw and has no fallback".to_owned()));
        };
        call = fallback.into_bound(py);
    }
    let obj = call.call1((user,))?;
    let converted = match cache.get(user) {
        Some((seen, converted)) if seen.bind(py).is(&obj) => converted.clone(),
        _ => {
            let converted = Arc::new(convert(&obj, erased_type, micros)?);
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(user.to_owned(), (obj.unbind(), converted.clone()));
            converted
        }
    };
    in_batch.insert(user.to_owned(), converted.clone());
    Ok(converted)
}

#[pymethods]
impl Kernel {
    #[new]
    #[pyo3(signature = (*, categories, purposes, secret, decisions, dead_letters, contributions, training,
                        known_schema_ids, worker, clock_skew_ms, max_record_bytes, dlq_value_bytes, erased_type,
                        micros))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        categories: Vec<String>,
        purposes: Vec<PurposeSpec>,
        secret: Vec<u8>,
        decisions: OutputSpec,
        dead_letters: OutputSpec,
        contributions: OutputSpec,
        training: Vec<OutputSpec>,
        known_schema_ids: Vec<u32>,
        worker: String,
        clock_skew_ms: i64,
        max_record_bytes: usize,
        dlq_value_bytes: usize,
        erased_type: Py<PyAny>,
        micros: Py<PyAny>,
    ) -> PyResult<Self> {
        if training.len() != purposes.len() {
            return Err(value_error("one training output per purpose, in catalog order".to_owned()));
        }
        let purposes = purposes
            .into_iter()
            .map(|(name, terms_version, keep)| Purpose { name, terms_version, keep: keep.into_iter().collect() })
            .collect();
        let mut topics = vec![decisions.0.clone(), dead_letters.0.clone(), contributions.0.clone()];
        topics.extend(training.iter().map(|t| t.0.clone()));
        let config = Config {
            catalog: Catalog::new(categories, purposes),
            secret,
            decisions: output(&decisions, encode::DecisionField::parse)?,
            dead_letters: output(&dead_letters, encode::DeadLetterField::parse)?,
            contributions: output(&contributions, encode::ContributionField::parse)?,
            training: training.iter().map(|t| output(t, encode::TrainingField::parse)).collect::<PyResult<_>>()?,
            known_schema_ids,
            worker,
            clock_skew_ms,
            max_record_bytes,
            dlq_value_bytes,
        };
        Ok(Kernel { inner: route::Kernel::new(config), topics, erased_type, micros, cache: HashMap::new() })
    }

    /// Route one batch of `Fetched` tuples (key, value, topic, partition, offset, timestamp).
    ///
    /// Returns (outputs {topic: [(key, value)]}, outcomes {(purpose, category, result): n},
    /// dead letters {error class: n}, decisions, records passed, deferred indexes).
    fn route<'py>(
        &mut self,
        py: Python<'py>,
        batch: &Bound<'py, PyAny>,
        lookup: &Bound<'py, PyAny>,
        now_ms: i64,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let parts = parts(batch)?;
        let fetched = fetched(&parts)?;
        let Kernel { inner, topics, erased_type, micros, cache } = self;
        let (erased_type, micros) = (erased_type.bind(py), micros.bind(py));
        let mut in_batch = HashMap::new();
        let mut find = |user: &str| consent_of(py, user, lookup, erased_type, micros, cache, &mut in_batch);
        let out = inner.route(&fetched, &mut find, now_ms)?;
        let outputs = PyDict::new(py);
        for (topic, records) in topics.iter().zip(out.outputs) {
            let list = PyList::empty(py);
            for (key, value) in records {
                let key = key.map(|k| PyBytes::new(py, &k));
                list.append((key, PyBytes::new(py, &value)))?;
            }
            outputs.set_item(topic, list)?;
        }
        let outcomes = PyDict::new(py);
        for ((purpose, category, result), n) in out.outcomes {
            outcomes.set_item((&inner.config.catalog.purposes[purpose].name, category, result), n)?;
        }
        let dead = PyDict::new(py);
        for (class, n) in out.dead_letters {
            dead.set_item(class, n)?;
        }
        PyTuple::new(
            py,
            [
                outputs.into_any(),
                outcomes.into_any(),
                dead.into_any(),
                out.decisions.into_pyobject(py)?.into_any(),
                out.records_passed.into_pyobject(py)?.into_any(),
                PyList::new(py, out.deferred)?.into_any(),
            ],
        )
    }

    /// The route's work up to `stage` without encoding (1 decode, 2 decide, 3 keyed hashes, 4 assessment):
    /// the bench's per-stage figures.
    fn measure(
        &mut self,
        py: Python<'_>,
        batch: &Bound<'_, PyAny>,
        lookup: &Bound<'_, PyAny>,
        now_ms: i64,
        stage: u8,
    ) -> PyResult<u64> {
        let parts = parts(batch)?;
        let fetched = fetched(&parts)?;
        let Kernel { inner, erased_type, micros, cache, .. } = self;
        let (erased_type, micros) = (erased_type.bind(py), micros.bind(py));
        let mut in_batch = HashMap::new();
        let mut find = |user: &str| consent_of(py, user, lookup, erased_type, micros, cache, &mut in_batch);
        inner.measure(&fetched, &mut find, now_ms, stage)
    }

    /// Read records written with `schema_id` from now on (its writer schema is the reader's own).
    fn learn_schema_id(&mut self, schema_id: u32) {
        if !self.inner.config.known_schema_ids.contains(&schema_id) {
            self.inner.config.known_schema_ids.push(schema_id);
        }
    }

    /// The ActivityEvent writer schema ids decoded here (records with others are deferred).
    #[getter]
    fn known_schema_ids(&self) -> Vec<u32> {
        self.inner.config.known_schema_ids.clone()
    }

    /// The key id written beside every keyed hash.
    #[getter]
    fn key_id(&self) -> String {
        self.inner.key_id().to_owned()
    }
}

/// Decode and check many framed ActivityEvents (for the fuzz test and the bench).
///
/// Each result is ("ok", (schema_id, event_id, user_id, category, occurred_at, source, branch,
/// [(field, value)])) or (error class, message).
#[pyfunction]
fn decode_many<'py>(py: Python<'py>, values: Vec<Vec<u8>>) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    for data in &values {
        let result = event::decode(data).map_err(event::Rejected::from).and_then(|e| event::check(&e).map(|()| e));
        match result {
            Ok(e) => {
                let payload = PyList::empty(py);
                for (k, v) in &e.payload {
                    match v {
                        Value::Str(s) => payload.append((*k, *s))?,
                        Value::Double(d) => payload.append((*k, *d))?,
                    }
                }
                let fields = (
                    e.schema_id,
                    e.event_id,
                    e.user_id,
                    e.category,
                    e.occurred_at,
                    e.source,
                    BRANCHES[e.branch],
                    payload,
                );
                out.append(("ok", fields))?;
            }
            Err(rejected) => out.append((rejected.class, rejected.message))?,
        }
    }
    Ok(out)
}

/// `consentgate.quality.assess` for a text category: (quality, fingerprint or None).
#[pyfunction]
fn assess_text(category: &str, text: &str) -> PyResult<(f64, Option<i64>)> {
    let full = match category {
        "post" => 12,
        "search" => 3,
        "conversation" => 8,
        other => return Err(value_error(format!("{other:?} carries no text"))),
    };
    let a = quality::assess_text(text, full, &mut quality::WordHashes::default());
    Ok((a.quality, a.fingerprint))
}

#[pymodule]
fn _kernel(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Kernel>()?;
    m.add_class::<ConsentTable>()?;
    m.add_function(wrap_pyfunction!(decode_many, m)?)?;
    m.add_function(wrap_pyfunction!(assess_text, m)?)?;
    m.add("UNIDATA_VERSION", UNIDATA_VERSION)?;
    Ok(())
}
