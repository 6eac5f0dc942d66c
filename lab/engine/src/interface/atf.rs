//! The atf interface (written next).
