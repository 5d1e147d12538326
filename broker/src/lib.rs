//! hmq
