//! The one test kit, shared by every test binary: child processes (the
//! real binary, Prometheus, Alertmanager) killed when a test ends, free
//! loopback ports, HTTP helpers, a parser for scrapes, waiting, and an
//! in-process simulator and exporter.
//!
//! Each test binary uses part of it, so unused items are not warned about.
#![allow(dead_code, unused_imports)]

mod http;
mod inproc;
mod process;
mod prom;
mod scrape;
mod wait;

pub use http::*;
pub use inproc::*;
pub use process::*;
pub use prom::*;
pub use scrape::*;
pub use wait::*;
