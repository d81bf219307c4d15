//! Background work that every replica runs: the deadline sweeper (system
//! timeouts), the purge of old request ids, the retention purge of old
//! history, the census behind the metrics, and webhook dispatch and
//! delivery. `sweeper::sweep_once`, `retention::purge_once`,
//! `census::step` and `webhooks::step` are one step each: the test replicas
//! run without the background loops unless a test is about real time, and
//! call those steps instead (`TestApp::sweep`).

pub mod census;
pub mod retention;
pub mod sweeper;
pub mod webhooks;
