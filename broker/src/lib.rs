//! hmq: an MQTT 3.1/3.1.1 broker.
//!
//! The data path, outside in: [`server`] accepts connections and hands each to a task in
//! [`connection`], which decodes packets with [`codec`], keeps the client's [`session`] state and
//! hands PUBLISH to the [`broker`], which finds subscribers in the [`router`] and pushes a shared
//! [`message`] onto each subscriber's bounded inbox. [`config`] and [`cli`] are pure and shared with
//! the Kubernetes operator.
#![warn(missing_docs)]

pub mod acl;
pub mod auth;
pub mod broker;
pub mod cli;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod connection;
pub mod http;
pub mod message;
pub mod metrics;
pub mod router;
pub mod server;
pub mod session;
pub mod sys;
pub mod topic;
pub mod transport;
pub mod watch;
