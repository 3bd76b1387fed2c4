//! End-to-end tests, built as one test binary: real servers on
//! `127.0.0.1:0`, real sockets, real clients.

#![allow(clippy::unwrap_used)]

mod support;

mod dev;
mod discovery;
mod proxy;
mod switch_under_load;
