//! consentgate's compiled gate kernel: one fetched batch in, encoded outputs per topic out.
//!
//! The Python modules stay the readable reference (`consentgate/kernel/reference.py`,
//! `consentgate/kernel/routing.py`, `consentgate/decision.py`, `consentgate/quality.py`,
//! `consentgate/pseudonyms.py`); property and fuzz tests hold this crate to them byte for byte.
//! No `unsafe`: every read of untrusted bytes is bounds-checked.
#![forbid(unsafe_code)]

pub mod avro;
pub mod encode;
pub mod event;
pub mod keyed;
pub mod quality;
pub mod route;
pub mod rules;
pub mod table;
pub mod unicode;

#[cfg(feature = "python")]
mod python;
#[cfg(feature = "python")]
mod table_py;
