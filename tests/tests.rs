//! End-to-end tests, built as one test binary: real servers on
//! `127.0.0.1:0`, real sockets, real clients.

#![allow(clippy::unwrap_used)]

mod support;

mod bad_input;
mod cli;
mod cutover;
mod dev;
mod discovery;
mod edge;
mod faults;
mod lock;
mod operators;
mod prometheus;
mod proxy;
mod registration;
mod secure;
mod status_page;
mod switch_under_load;
mod upgrade;
