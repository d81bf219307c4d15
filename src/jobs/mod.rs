//! Background work that every replica runs: the deadline sweeper (system
//! timeouts) and the purge of old request ids. Each exposes a "one step"
//! function so tests can drive it deterministically.

pub mod sweeper;
