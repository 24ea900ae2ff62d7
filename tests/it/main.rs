//! Integration tests: the real exporter and the real simulator over loopback
//! HTTP, and the real binary. One test binary so it links once.

mod binary;
mod browser;
mod counting;
mod endpoints;
mod failures;
mod faults;
mod hardening;
mod recovery;
mod restart;
mod scale;
mod settings;
mod startup;
#[path = "../support/mod.rs"]
mod support;
mod web;
