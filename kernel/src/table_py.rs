//! `consentgate._kernel.ConsentTable`: the compact consent view (see `table.rs`) for Python and
//! for `Kernel.route`, which reads it without a Python call per user.

use std::borrow::Cow;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use crate::rules::Consent;
use crate::table::{self, Found, Table, PLANS, TIERS};

/// The value `get` returns for an erased user (consentgate.streams.consent_store.TOMBSTONE).
const TOMBSTONE: &[u8] = b"";
/// The value `get` returns for a user whose record could not be read (`CORRUPT`).
const CORRUPT: &[u8] = b"\xff";

/// user -> packed consent, filled from consent.state's raw values.
///
/// `classify(schema_id)` says whether records written with a schema id the table has not met are
/// in exactly the registered ConsentState schema (True: read natively; False: kept raw; None: cannot
/// tell now, kept raw). `fallback(user)` is what `Kernel.route` calls for a user kept raw.
#[pyclass(module = "consentgate._kernel")]
pub struct ConsentTable {
    table: Table,
    classify: Option<Py<PyAny>>,
    fallback: Option<Py<PyAny>>,
}

/// A key's bytes: its UTF-8, or (lone surrogates) Python's surrogatepass encoding, which no valid
/// user_id equals.
fn key<'a>(user: &'a Bound<'_, PyString>) -> PyResult<Cow<'a, [u8]>> {
    match user.to_str() {
        Ok(s) => Ok(Cow::Borrowed(s.as_bytes())),
        Err(_) => {
            let encoded = user.call_method1("encode", ("utf-8", "surrogatepass"))?;
            Ok(Cow::Owned(encoded.downcast::<PyBytes>()?.as_bytes().to_vec()))
        }
    }
}

impl ConsentTable {
    fn put_one(&mut self, py: Python<'_>, user: &Bound<'_, PyString>, value: &[u8]) -> PyResult<Option<String>> {
        let key = key(user)?;
        let mut failed: Option<PyErr> = None;
        let classify = self.classify.as_ref().map(|c| c.clone_ref(py));
        let mut ask = |schema_id: u32| -> Option<bool> {
            let classify = classify.as_ref()?;
            match classify.call1(py, (schema_id,)).and_then(|r| r.extract::<Option<bool>>(py)) {
                Ok(answer) => answer,
                Err(err) => {
                    failed = Some(err);
                    None
                }
            }
        };
        let problem = self.table.put(&key, value, &mut ask);
        match failed {
            Some(err) => Err(err),
            None => Ok(problem),
        }
    }

    /// A user's consent for the route, or None when their record is kept raw (Python decodes it).
    pub(crate) fn consent(&self, user: &str) -> Option<Consent> {
        match self.table.get(user.as_bytes()) {
            None | Some(Found::Corrupt) => Some(Consent::Missing),
            Some(Found::Erased) => Some(Consent::Erased),
            Some(Found::State(state)) => Some(table::consent(&state)),
            Some(Found::Raw(_)) => None,
        }
    }

    pub(crate) fn fallback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.fallback.as_ref().map(|f| f.clone_ref(py))
    }
}

#[pymethods]
impl ConsentTable {
    #[new]
    #[pyo3(signature = (classify=None, fallback=None))]
    fn new(classify: Option<Py<PyAny>>, fallback: Option<Py<PyAny>>) -> Self {
        ConsentTable { table: Table::new(), classify, fallback }
    }

    /// Store one raw consent.state value (b"": erased). Returns why it cannot be read, if it cannot
    /// (the user is then held as corrupt).
    fn put(&mut self, py: Python<'_>, user: &Bound<'_, PyString>, value: &[u8]) -> PyResult<Option<String>> {
        self.put_one(py, user, value)
    }

    /// Store many (user, value) pairs in order; returns [(user, why)] for those that cannot be read.
    fn put_many<'py>(
        &mut self,
        py: Python<'py>,
        items: &Bound<'py, PyAny>,
    ) -> PyResult<Vec<(Bound<'py, PyString>, String)>> {
        let mut problems = Vec::new();
        for item in items.try_iter()? {
            let item = item?;
            let pair = item.downcast::<PyTuple>()?;
            let user = pair.get_item(0)?;
            let user = user.downcast::<PyString>()?;
            let value = pair.get_item(1)?;
            if let Some(problem) = self.put_one(py, user, value.downcast::<PyBytes>()?.as_bytes())? {
                problems.push((user.clone(), problem));
            }
        }
        Ok(problems)
    }

    /// Hold the user as corrupt (their raw record proved unreadable to the codec).
    fn mark_corrupt(&mut self, user: &Bound<'_, PyString>) -> PyResult<()> {
        self.table.mark_corrupt(&key(user)?);
        Ok(())
    }

    /// None (no record), b"" (erased), b"\xff" (corrupt), the raw bytes (kept raw) or the state:
    /// (version, updated_at ms, tier, plan, ((category, purpose, granted_at ms, expires_at ms or None,
    /// terms_version, receipt_id), ...)).
    fn get<'py>(&self, py: Python<'py>, user: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
        let found = self.table.get(&key(user)?);
        Ok(match found {
            None => py.None().into_bound(py),
            Some(Found::Erased) => PyBytes::new(py, TOMBSTONE).into_any(),
            Some(Found::Corrupt) => PyBytes::new(py, CORRUPT).into_any(),
            Some(Found::Raw(raw)) => PyBytes::new(py, raw).into_any(),
            Some(Found::State(s)) => {
                let grants = PyTuple::new(
                    py,
                    s.grants.into_iter().map(|g| {
                        (g.category, g.purpose, g.granted_at, g.expires_at, g.terms_version, g.receipt_id)
                    }),
                )?;
                let plan = s.plan.map(|p| PLANS[usize::from(p)]);
                (s.version, s.updated_at, TIERS[usize::from(s.tier)], plan, grants).into_pyobject(py)?.into_any()
            }
        })
    }

    /// `fallback(user)`: what a Python lookup gets, so the table serves the reference kernel too.
    fn __call__<'py>(&self, py: Python<'py>, user: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
        match &self.fallback {
            Some(fallback) => fallback.bind(py).call1((user,)),
            None => Err(pyo3::exceptions::PyTypeError::new_err("the consent table has no fallback to call")),
        }
    }

    /// Read records written with `schema_id` natively (True) or keep them raw (False) from now on.
    fn learn_schema_id(&mut self, schema_id: u32, native: bool) {
        self.table.learn_schema_id(schema_id, native);
    }

    /// Bytes the table has allocated.
    fn memory(&self) -> usize {
        self.table.memory()
    }

    fn __len__(&self) -> usize {
        self.table.len()
    }

    #[getter]
    fn get_fallback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.fallback(py)
    }

    #[setter]
    fn set_fallback(&mut self, fallback: Option<Py<PyAny>>) {
        self.fallback = fallback;
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(c) = &self.classify {
            visit.call(c)?;
        }
        if let Some(f) = &self.fallback {
            visit.call(f)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.classify = None;
        self.fallback = None;
    }
}
