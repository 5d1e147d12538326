//! hmq-model: what the broker and the Kubernetes operator both read, and nothing that runs.
//!
//! [`config`] is `hmq.config` (types, defaults, validation, errors that name file, line and key),
//! [`acl`] is `acl.conf` (grammar and per-client evaluation), [`auth`] is the password-file
//! format (Mosquitto's hashes, `hmq passwd`'s file edit, the verified-credentials cache) and
//! [`topic`] the topic name and filter rules the ACL and the broker's router agree on.
//!
//! No tokio and no network code: the operator validates and renders a cluster's configuration
//! with the very parsers the broker starts with, without compiling the broker's server. The
//! broker crate re-exports these modules under their old paths (`hmq::config`, ...).
#![warn(missing_docs)]

pub mod acl;
pub mod auth;
pub mod config;
pub mod topic;
