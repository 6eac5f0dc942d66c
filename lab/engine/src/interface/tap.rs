//! The tap interface (written next).
