//! hmq

pub mod cli;
pub mod config;
