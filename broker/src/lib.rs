//! hmq: an MQTT 3.1/3.1.1 broker.
//!
//! The data path, outside in: [`server`] accepts connections and hands each to a task in
//! [`connection`], which decodes packets with [`codec`], keeps the client's [`session`] state and
//! hands PUBLISH to the [`broker`], which finds subscribers in the [`router`] and pushes a shared
//! [`message`] onto each subscriber's bounded inbox.
//!
//! The model the operator reads too ([`config`], [`acl`], [`auth`], [`topic`]) lives in the
//! `hmq-model` crate and the wire codec ([`codec`]) in `hmq-codec`; both are re-exported here under
//! the paths the broker's modules use.
#![warn(missing_docs)]

pub use hmq_codec as codec;
pub use hmq_model::{acl, auth, config, topic};

pub mod broker;
pub mod cli;
pub mod cluster;
pub mod connection;
pub mod http;
pub mod message;
pub mod metrics;
pub mod persist;
pub mod router;
pub mod server;
pub mod session;
pub mod sys;
pub mod transport;
pub mod watch;
