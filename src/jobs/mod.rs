//! Background work that every replica runs: the deadline sweeper (system
//! timeouts), the purge of old request ids, and the retention purge of old
//! history. `sweeper::sweep_once` and `retention::purge_once` are one step
//! each: the test replicas run without the background loops unless a test is
//! about real time, and call those steps instead (`TestApp::sweep`).

pub mod retention;
pub mod sweeper;
