//! The plain interface (written next).
