//! Test interfaces: how a test program is listed and run, and how its run becomes a result.

pub mod atf;
pub mod plain;
pub mod tap;
