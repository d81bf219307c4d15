//! Pure rules of the product: no I/O, no tonic, no SQL. Handlers hand these
//! functions already-parsed values; the store persists what they decide.

pub(crate) mod access;
pub mod assignment;
pub(crate) mod availability;
pub mod booking;
pub mod capacity;
pub mod clocks;
pub(crate) mod command;
pub mod config;
pub(crate) mod error;
pub(crate) mod history;
pub mod input;
pub(crate) mod model;
pub(crate) mod openings;
pub(crate) mod query;
pub(crate) mod report;
pub(crate) mod session;
pub(crate) mod webhook;

pub use error::{Error, FieldViolation, Reason, Resource, Result, Violations};
