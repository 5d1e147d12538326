//! hmq

pub mod config;
