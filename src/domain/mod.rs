//! Pure rules of the product: no I/O, no tonic, no SQL. Handlers hand these
//! functions already-parsed values; the store persists what they decide.

pub mod access;
pub mod assignment;
pub mod availability;
pub mod booking;
pub mod capacity;
pub mod clocks;
pub mod command;
pub mod config;
pub mod error;
pub mod history;
pub mod input;
pub mod model;
pub mod openings;
pub mod query;
pub mod report;
pub mod session;
pub mod webhook;

pub use error::{Error, FieldViolation, Reason, Resource, Result, Violations};
