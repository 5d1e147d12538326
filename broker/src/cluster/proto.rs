//! The inter-node protocol: the frames two hmq nodes exchange on a cluster link, their encoding,
//! and the shared-secret handshake.
//!
//! A link is a TCP connection (optionally TLS) opened by the *sending* node: everything node A
//! has for node B (routes, forwarded messages, evictions) travels on the link A dialled to B, and
//! B answers only with acknowledgements on it. Each frame is a 4-byte big-endian length followed
//! by the frame encoded with postcard (serde). The first frames are the handshake:
//!
//! ```text
//! dialer A                               acceptor B
//! Hello { version, name, epoch, nonce_a } ->
//!                                        <- Challenge { version, name, nonce_b }
//! Auth { proof_a }                        ->
//!                                        <- Welcome { proof_b, last_seq }
//! ```
//!
//! `proof_a = HMAC-SHA256(secret, "hmq-cluster-1 dialer" | nonce_a | nonce_b | A | B)` and
//! `proof_b` the same with "acceptor": each side proves it knows the shared secret without
//! sending it, and a recorded handshake cannot be replayed (fresh nonces). `last_seq` is the
//! last message sequence number B has from A's current epoch, so A resends only what B lacks.
//!
//! Versioning: `version` is [`VERSION`]; a node refuses a peer with another version with a
//! `Refused` frame that says why (rolling upgrades change it only with a compatible path).

use bytes::Bytes;
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};

/// Protocol version spoken on cluster links.
pub const VERSION: u16 = 1;

/// Largest frame accepted on a link, beyond the largest MQTT packet: topic, flags and groups.
pub const FRAME_OVERHEAD: usize = 64 * 1024;

/// A random nonce for the handshake.
pub type Nonce = [u8; 32];

/// One frame on a cluster link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Frame {
    /// Dialer → acceptor: who is calling.
    Hello {
        /// Protocol version.
        version: u16,
        /// The dialer's node name.
        name: String,
        /// The dialer's process epoch (changes at every start; sequence numbers restart).
        epoch: u64,
        /// The dialer's nonce.
        nonce: Nonce,
    },
    /// Acceptor → dialer: who answers, and its nonce.
    Challenge {
        /// Protocol version.
        version: u16,
        /// The acceptor's node name.
        name: String,
        /// The acceptor's nonce.
        nonce: Nonce,
    },
    /// Dialer → acceptor: proof of the secret.
    Auth {
        /// HMAC of the handshake (see the module documentation).
        proof: [u8; 32],
    },
    /// Acceptor → dialer: proof of the secret, and where to resume.
    Welcome {
        /// HMAC of the handshake (see the module documentation).
        proof: [u8; 32],
        /// The last message sequence number received from the dialer's epoch (0: none).
        last_seq: u64,
    },
    /// Either side: the link is refused, and why (then the connection closes).
    Refused {
        /// Why.
        reason: String,
    },
    /// Dialer → acceptor: the dialer's whole route table, replacing what the acceptor had.
    Routes {
        /// Every filter with a local subscriber on the dialer (shared ones as `$share/g/f`).
        filters: Vec<String>,
    },
    /// Dialer → acceptor: a filter got its first local subscriber.
    RouteAdd(String),
    /// Dialer → acceptor: a filter lost its last local subscriber.
    RouteDel(String),
    /// Dialer → acceptor: a message for the acceptor's local subscribers (shared with the
    /// outbox, so writing it clones nothing).
    Publish(std::sync::Arc<Forward>),
    /// Dialer → acceptor: a retained message from the dialer's store, sent when the link comes
    /// up (stored if newer, not delivered).
    Retained(Forward),
    /// Dialer → acceptor: a client connected to the dialer; the acceptor closes its
    /// connection and discards its session, if it has one.
    Evict {
        /// The client id.
        client_id: String,
    },
    /// Acceptor → dialer: every message up to this sequence number was processed.
    Ack {
        /// Sequence number.
        seq: u64,
    },
    /// Dialer → acceptor, every second: the link is alive (answered with `Pong`). A link on
    /// which nothing arrives for 5 s is closed by either side, so a dead network is noticed
    /// without waiting for TCP's retransmission timeout.
    Ping,
    /// Acceptor → dialer: the answer to `Ping`.
    Pong,
}

/// A message crossing a link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forward {
    /// Sequence number in the sender's epoch (0 for `Retained`, which is not acknowledged).
    pub seq: u64,
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS as published.
    pub qos: u8,
    /// RETAIN as published: the receiver stores (or with an empty payload, deletes) it too.
    pub retain: bool,
    /// When the origin received it, milliseconds since the Unix epoch (orders retained copies).
    pub stamp: u64,
    /// Deliver to the receiver's plain (non-shared) subscribers.
    pub plain: bool,
    /// The shared subscription groups the receiver delivers to (the sender picked the receiver
    /// for them, one node per group across the cluster).
    pub groups: Vec<String>,
}

/// Why a frame could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[error("cluster frame: {0}")]
pub struct FrameError(#[from] postcard::Error);

impl Frame {
    /// Encodes the frame body (the length prefix is the codec's).
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        Ok(postcard::to_stdvec(self)?)
    }

    /// Appends the frame to `buf` with its 4-byte big-endian length, encoding in place.
    pub fn encode_into(&self, buf: &mut Vec<u8>) -> Result<(), FrameError> {
        let start = buf.len();
        buf.extend_from_slice(&[0; 4]);
        let taken = std::mem::take(buf);
        let mut out = postcard::to_extend(self, taken)?;
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
        *buf = out;
        Ok(())
    }

    /// Decodes a frame body.
    pub fn decode(body: &[u8]) -> Result<Frame, FrameError> {
        Ok(postcard::from_bytes(body)?)
    }

    /// A short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "Hello",
            Frame::Challenge { .. } => "Challenge",
            Frame::Auth { .. } => "Auth",
            Frame::Welcome { .. } => "Welcome",
            Frame::Refused { .. } => "Refused",
            Frame::Routes { .. } => "Routes",
            Frame::RouteAdd(_) => "RouteAdd",
            Frame::RouteDel(_) => "RouteDel",
            Frame::Publish(_) => "Publish",
            Frame::Retained(_) => "Retained",
            Frame::Evict { .. } => "Evict",
            Frame::Ack { .. } => "Ack",
            Frame::Ping => "Ping",
            Frame::Pong => "Pong",
        }
    }
}

/// Which side of the handshake a proof is for.
#[derive(Debug, Clone, Copy)]
pub enum Side {
    /// The node that dialled.
    Dialer,
    /// The node that accepted.
    Acceptor,
}

/// The handshake proof of `side` (see the module documentation).
pub fn proof(
    secret: &[u8],
    side: Side,
    dialer_nonce: &Nonce,
    acceptor_nonce: &Nonce,
    dialer: &str,
    acceptor: &str,
) -> [u8; 32] {
    // HMAC accepts keys of any length; the error case cannot happen, and an all-zero proof
    // would only fail the handshake.
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret) else {
        return [0; 32];
    };
    mac.update(match side {
        Side::Dialer => b"hmq-cluster-1 dialer",
        Side::Acceptor => b"hmq-cluster-1 acceptor",
    });
    mac.update(dialer_nonce);
    mac.update(acceptor_nonce);
    // Lengths first, so that the names cannot be re-split.
    mac.update(&(dialer.len() as u32).to_be_bytes());
    mac.update(dialer.as_bytes());
    mac.update(&(acceptor.len() as u32).to_be_bytes());
    mac.update(acceptor.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Compares two proofs in constant time.
pub fn proofs_match(a: &[u8; 32], b: &[u8; 32]) -> bool {
    subtle::ConstantTimeEq::ct_eq(&a[..], &b[..]).into()
}

/// A fresh random nonce.
pub fn nonce() -> Nonce {
    let mut n = [0u8; 32];
    // getrandom fails only without an OS entropy source; a zero nonce still needs the secret.
    let _ = getrandom::fill(&mut n);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let frames = [
            Frame::Hello {
                version: VERSION,
                name: "hmq-0".into(),
                epoch: 7,
                nonce: [1; 32],
            },
            Frame::Routes {
                filters: vec!["a/+".into(), "$share/g/b/#".into()],
            },
            Frame::Publish(std::sync::Arc::new(Forward {
                seq: 9,
                topic: "a/b".into(),
                payload: Bytes::from_static(b"\x00\xffpayload"),
                qos: 1,
                retain: true,
                stamp: 123,
                plain: true,
                groups: vec!["g".into()],
            })),
            Frame::Ack { seq: u64::MAX },
            Frame::Ping,
            Frame::Pong,
        ];
        let mut stream = Vec::new();
        for f in &frames {
            assert_eq!(&Frame::decode(&f.encode().unwrap()).unwrap(), f);
            f.encode_into(&mut stream).unwrap();
        }
        // encode_into writes length-prefixed frames back to back.
        let mut rest = &stream[..];
        for f in &frames {
            let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            assert_eq!(&Frame::decode(&rest[4..4 + len]).unwrap(), f);
            rest = &rest[4 + len..];
        }
        assert!(rest.is_empty());
    }

    #[test]
    fn garbage_never_panics() {
        for body in [
            &b""[..],
            b"\xff\xff\xff\xff\xff",
            b"\x08\xff\xff\xff\xff\x0f",
            b"\x00",
        ] {
            let _ = Frame::decode(body);
        }
        // A string length far beyond the body is an error, not an allocation.
        assert!(Frame::decode(b"\x07\xff\xff\xff\xff\x0f").is_err());
    }

    #[test]
    fn proofs_depend_on_everything() {
        let base = proof(b"secret-1", Side::Dialer, &[1; 32], &[2; 32], "a", "b");
        assert_eq!(
            base,
            proof(b"secret-1", Side::Dialer, &[1; 32], &[2; 32], "a", "b")
        );
        for other in [
            proof(b"secret-2", Side::Dialer, &[1; 32], &[2; 32], "a", "b"),
            proof(b"secret-1", Side::Acceptor, &[1; 32], &[2; 32], "a", "b"),
            proof(b"secret-1", Side::Dialer, &[3; 32], &[2; 32], "a", "b"),
            proof(b"secret-1", Side::Dialer, &[1; 32], &[3; 32], "a", "b"),
            proof(b"secret-1", Side::Dialer, &[1; 32], &[2; 32], "ab", ""),
        ] {
            assert!(!proofs_match(&base, &other));
        }
    }
}
