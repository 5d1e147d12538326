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
//! Versioning: a node speaks versions [`OLDEST`] to [`VERSION`]. The dialer offers its newest in
//! `Hello`; an acceptor that speaks it answers with it in `Challenge`, and one that does not (a
//! node of the previous release) refuses with `Refused`, after which the dialer dials again
//! offering the older version, and remembers it for that address. A link runs at the version
//! both agreed on: frames of a newer version are never sent on it. What each version adds:
//!
//! * 1: routes, messages (`Publish`), retained messages, `Evict`, acknowledgements, heartbeat.
//! * 2: messages carry a cluster-wide id (`Publish2`), and persistent sessions move between
//!   nodes: `Claim`/`ClaimReply` when a client connects, `Handover` and `HandoverDone` to move a
//!   session's state, `SessionForward` for what still arrives at the old node, `SessionTable`
//!   when a link comes up (to settle sessions held on both sides after a partition or a crash).

use bytes::Bytes;
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};

/// Newest protocol version this node speaks.
pub const VERSION: u16 = 2;

/// Oldest protocol version this node speaks (that of the previous release).
pub const OLDEST: u16 = 1;

/// A message's cluster-wide identity: its origin node's epoch and a counter there. Lets a node
/// that receives the same message on two paths (while a session moves) deliver it once.
pub type Mid = (u64, u64);

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

    // --- version 2 ---
    /// Dialer → acceptor: a message, with its cluster-wide id (instead of `Publish`).
    Publish2 {
        /// The message's id.
        mid: Mid,
        /// Written on an earlier link to the acceptor, which did not acknowledge it before that
        /// link ended: the acceptor may have delivered it already (it restarted since).
        resent: bool,
        /// The message.
        forward: std::sync::Arc<Forward>,
    },
    /// Dialer → acceptor: a client connected to the dialer (at `claim`). The acceptor gives up
    /// its session of that client id if its own claim is older: hands it over (`resume`) or
    /// discards it (a clean session), and answers with `ClaimReply` on this link.
    Claim {
        /// The client id.
        client_id: String,
        /// The new connection's claim (see `cluster::claim_now`).
        claim: u64,
        /// Clean session 0: the client wants its session.
        resume: bool,
    },
    /// Acceptor → dialer: the answer to `Claim`: whether a handover of the session follows
    /// (on the acceptor's own link to the dialer).
    ClaimReply {
        /// The client id.
        client_id: String,
        /// The claim answered.
        claim: u64,
        /// A handover follows.
        handing_over: bool,
        /// Nothing here, but the session moved from here to this node moments ago: ask it
        /// (the claim may have reached it before the session did).
        moved_to: Option<String>,
    },
    /// Dialer → acceptor: a part of a session's state moving to the acceptor (which holds or
    /// claimed the session with a newer claim, or takes it over from a node that leaves).
    Handover {
        /// The client id.
        client_id: String,
        /// The claim the session moves to (the acceptor's).
        claim: u64,
        /// This part.
        part: HandoverPart,
    },
    /// Acceptor → dialer: the session `client_id` arrived whole (and is stored, with a durable
    /// store): the dialer may forget it.
    HandoverDone {
        /// The client id.
        client_id: String,
        /// The claim it moved to.
        claim: u64,
    },
    /// Dialer → acceptor: a message for a session that moved from the dialer to the acceptor
    /// (it still reached the dialer through routes that had not caught up).
    SessionForward {
        /// The client id.
        client_id: String,
        /// The message's id.
        mid: Mid,
        /// QoS for the session.
        qos: u8,
        /// The message.
        forward: std::sync::Arc<Forward>,
    },
    /// Dialer → acceptor, when a link comes up: the dialer's persistent sessions and their
    /// claims, in parts (`last` on the final one). The acceptor hands over any it holds with
    /// an older claim.
    SessionTable {
        /// (client id, claim) pairs.
        entries: Vec<(String, u64)>,
        /// The last part.
        last: bool,
    },
}

/// A part of a moving session (see `Frame::Handover`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HandoverPart {
    /// First: who the session is and what it subscribes to.
    Start(Box<SessionHeader>),
    /// Messages of its queue, in order (in flight ones first, with their packet ids).
    Messages(Vec<MovedMessage>),
    /// Last: the inbound QoS 2 packet ids awaiting PUBREL; the session is complete.
    End {
        /// Packet ids.
        awaiting_rel: Vec<u16>,
    },
}

/// What a moving session is, apart from its queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionHeader {
    /// Subscriptions: filter as the client sent it, granted QoS.
    pub subscriptions: Vec<(String, u8)>,
    /// User name of its last connection.
    pub username: Option<String>,
    /// Address of its last connection.
    pub ip: Option<String>,
    /// When it went offline, ms since the Unix epoch (`None`: it was connected until the move).
    pub offline_since_ms: Option<u64>,
}

/// One queued or in-flight message of a moving session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MovedMessage {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS for this session.
    pub qos: u8,
    /// QoS as published.
    pub published_qos: u8,
    /// RETAIN flag on the wire (a retained message for a new subscription).
    pub retain: bool,
    /// Retained stamp.
    pub stamp: u64,
    /// In flight: its packet id, and whether PUBREC was received (QoS 2, PUBREL step).
    pub inflight: Option<(u16, bool)>,
    /// Sent with DUP (it may have been delivered already).
    pub dup: bool,
    /// Its cluster-wide id.
    pub mid: Mid,
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
    /// The message's cluster-wide id: sent in `Publish2` (version 2), not part of the version 1
    /// encoding (so `Publish` stays what the previous release reads).
    #[serde(skip)]
    pub mid: Mid,
    /// Carried by `Publish2` (see there); not part of the version 1 encoding.
    #[serde(skip)]
    pub resent: bool,
    /// The sender keeps it in its durable store until the peer acknowledges it (its `O` key);
    /// never on the wire.
    #[serde(skip)]
    pub journaled: bool,
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
            Frame::Publish2 { .. } => "Publish2",
            Frame::Claim { .. } => "Claim",
            Frame::ClaimReply { .. } => "ClaimReply",
            Frame::Handover { .. } => "Handover",
            Frame::HandoverDone { .. } => "HandoverDone",
            Frame::SessionForward { .. } => "SessionForward",
            Frame::SessionTable { .. } => "SessionTable",
        }
    }

    /// The protocol version that introduced this frame: it is sent only on links of that
    /// version or newer.
    pub fn version(&self) -> u16 {
        match self {
            Frame::Publish2 { .. }
            | Frame::Claim { .. }
            | Frame::ClaimReply { .. }
            | Frame::Handover { .. }
            | Frame::HandoverDone { .. }
            | Frame::SessionForward { .. }
            | Frame::SessionTable { .. } => 2,
            _ => 1,
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
                mid: (0, 0),
                resent: false,
                journaled: false,
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

    fn forward(mid: Mid) -> std::sync::Arc<Forward> {
        std::sync::Arc::new(Forward {
            seq: 3,
            topic: "t".into(),
            payload: Bytes::from_static(b"p"),
            qos: 1,
            retain: false,
            stamp: 0,
            plain: true,
            groups: Vec::new(),
            mid,
            resent: false,
            journaled: false,
        })
    }

    #[test]
    fn version_1_frames_keep_the_encoding_the_previous_release_reads() {
        // The message id is not part of `Publish`: the bytes are those of version 1, and the
        // variant indices of version 1 frames are unchanged (version 2 ones come after).
        let with_id = Frame::Publish(forward((5, 6))).encode().unwrap();
        let without = Frame::Publish(forward((0, 0))).encode().unwrap();
        assert_eq!(with_id, without);
        let v1_last = Frame::Pong.encode().unwrap()[0];
        let v2_first = Frame::Publish2 {
            mid: (1, 2),
            resent: false,
            forward: forward((1, 2)),
        }
        .encode()
        .unwrap()[0];
        assert_eq!(v2_first, v1_last + 1);
        assert_eq!(Frame::Pong.version(), 1);
    }

    #[test]
    fn version_2_frames_round_trip() {
        let frames = [
            Frame::Publish2 {
                mid: (u64::MAX, 7),
                resent: true,
                forward: forward((u64::MAX, 7)),
            },
            Frame::Claim {
                client_id: "dev".into(),
                claim: 1 << 40,
                resume: true,
            },
            Frame::ClaimReply {
                client_id: "dev".into(),
                claim: 9,
                handing_over: false,
                moved_to: Some("hmq-2".into()),
            },
            Frame::Handover {
                client_id: "dev".into(),
                claim: 9,
                part: HandoverPart::Start(Box::new(SessionHeader {
                    subscriptions: vec![("a/#".into(), 1)],
                    username: Some("u".into()),
                    ip: Some("10.0.0.1".into()),
                    offline_since_ms: None,
                })),
            },
            Frame::Handover {
                client_id: "dev".into(),
                claim: 9,
                part: HandoverPart::Messages(vec![MovedMessage {
                    topic: "a/b".into(),
                    payload: Bytes::from_static(b"x"),
                    qos: 2,
                    published_qos: 2,
                    retain: false,
                    stamp: 0,
                    inflight: Some((7, true)),
                    dup: true,
                    mid: (1, 1),
                }]),
            },
            Frame::Handover {
                client_id: "dev".into(),
                claim: 9,
                part: HandoverPart::End {
                    awaiting_rel: vec![1, 65535],
                },
            },
            Frame::HandoverDone {
                client_id: "dev".into(),
                claim: 9,
            },
            Frame::SessionTable {
                entries: vec![("dev".into(), 9)],
                last: true,
            },
        ];
        for f in &frames {
            assert_eq!(f.version(), 2, "{}", f.kind());
            let back = Frame::decode(&f.encode().unwrap()).unwrap();
            match (&back, f) {
                (
                    Frame::Publish2 {
                        mid,
                        resent,
                        forward,
                    },
                    Frame::Publish2 {
                        mid: want,
                        resent: was,
                        ..
                    },
                ) => {
                    assert_eq!((mid, resent), (want, was));
                    assert_eq!(forward.topic, "t");
                }
                _ => assert_eq!(&back, f),
            }
        }
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
