//! ringlb
