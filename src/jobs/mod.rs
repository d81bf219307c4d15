//! Background work that every replica runs: the deadline sweeper (system
//! timeouts) and the purge of old request ids. `sweeper::sweep_once` is one
//! step of it: the test replicas run without the background loop unless a
//! test is about real time, and call that step instead (`TestApp::sweep`).

pub mod sweeper;
