//! Load and switching helpers for zero-downtime tests, from the test kit:
//!
//! - [`DevConsulServer`]: the dev stack's Consul API on `127.0.0.1:0`, so
//!   discovery runs against the same server `switchyard dev` uses.
//! - [`register`]: an instance registered through the real Consul client,
//!   tagged `[colour, role, version=vN]`, with a TTL check reported passing.
//! - [`LoadGen`]: N keep-alive clients hammering one URL, recording each
//!   request as a `switchyard_loadcheck::Sample` (start, end, version).
//! - [`Clock`]: one time base for the load and the switch log, so the
//!   verdict compares like with like.

pub use switchyard_testkit::{Clock, DevConsulServer, LoadGen, register};
