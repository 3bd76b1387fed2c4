//! Integration tests: the clients against a scripted HTTP server on loopback, checking what
//! they send (paths, query strings, headers, bodies) and how they read fixture answers.

#![allow(clippy::unwrap_used)]

mod consul;
mod nomad;
mod support;
mod tls;
