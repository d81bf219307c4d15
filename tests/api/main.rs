//! The integration suite: gRPC over loopback to the real server on a real
//! PostgreSQL. One binary, one private cluster, a fresh database per test.

mod abuse;
mod access;
mod assignment;
mod bad_input;
mod booking_rules;
mod capacity;
mod check_ins;
mod checker;
mod directory;
mod export;
mod faults;
mod flow;
mod fuzz;
mod governance;
mod hardening;
mod helpers;
mod history;
mod layers;
mod observability;
mod operations;
mod races;
mod reads;
mod receiver;
mod reschedule;
mod rest;
mod retention;
mod showing;
mod silent_proxy;
mod slots;
mod transitions;
mod watching;
mod webhooks;
