//! Kyuafile evaluation (written next).
