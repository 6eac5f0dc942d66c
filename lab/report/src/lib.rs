//! Reporters: consumers of a run's [`lab_model::RunEvent`]s that print or write them.
#![forbid(unsafe_code)]
