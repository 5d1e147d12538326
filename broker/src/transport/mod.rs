//! Transports under MQTT: TLS (rustls), WebSocket (tokio-tungstenite) and the PROXY protocol
//! header. Each turns an accepted `TcpStream` into a byte stream the connection task reads MQTT
//! from, inside the connection's own task and within its connect deadline.

pub mod proxy;
pub mod tls;
pub mod ws;
