//! Reporters: consumers of a run's [`lab_model::RunEvent`]s that print or write them (TAP 14,
//! human progress, JUnit XML, JSON lines). They never schedule.
#![forbid(unsafe_code)]

pub mod human;
pub mod json;
pub mod junit;
pub mod reporter;
pub mod tap;

pub use human::HumanReporter;
pub use json::JsonReporter;
pub use junit::JunitReporter;
pub use reporter::{FanOut, ReportError, Reporter};
pub use tap::TapReporter;

#[cfg(test)]
mod fixture;
