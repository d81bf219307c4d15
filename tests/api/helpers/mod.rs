//! `spawn_app()`: a fresh database on the suite's private PostgreSQL, the real
//! server on a random loopback port, and real gRPC clients with tokens; one
//! helper per RPC ([`Caller`]); the real binary for tests that signal or
//! measure a process ([`spawn_binary`]); and the suite's scale.

mod binary;
mod caller;
mod cluster;
mod replicas;
mod tokens;
mod world;

pub use binary::*;
pub use caller::*;
pub use cluster::*;
pub use replicas::*;
pub use tokens::*;
pub use world::*;
