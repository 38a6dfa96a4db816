//! The write lease's messages on the wire: fixed-size UDP datagrams authenticated with
//! HMAC-SHA256 under a key shared by the pair and the witness.
//!
//! ```text
//!  0..4   magic "XVL1"
//!  4      kind: 1 request, 2 grant, 3 refuse, 4 release
//!  5      priority: the requester's (request), the holder's (refuse)
//!  6..8   zero
//!  8..24  from: the sender's node address (IPv4 as ::ffff:a.b.c.d)
//! 24..40  to: the node a grant or refusal answers
//! 40..56  holder: the node a refusal names as holding the voter's grant
//! 56..64  seq: the sender's counter (request, release) or the request's (answers)
//! 64..68  milliseconds: the lease asked for (request) or granted (grant), or the holder's
//!         remaining time at this voter (refuse)
//! 68..72  zero
//! 72..104 HMAC-SHA256 of bytes 0..72
//! ```

use std::net::{IpAddr, Ipv6Addr};

use hmac::{Hmac, Mac as _};
use sha2::Sha256;

/// The length of every message.
pub const LEN: usize = 104;
const BODY: usize = 72;
const MAGIC: &[u8; 4] = b"XVL1";

/// A node's identity: the address it sends from. Claims compare priority first, then this
/// address (as the 16-byte IPv6 form), as VRRP breaks ties.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub [u8; 16]);

impl NodeId {
    pub fn new(addr: IpAddr) -> Self {
        Self(match addr {
            IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            IpAddr::V6(a) => a.octets(),
        })
    }

    pub fn addr(self) -> IpAddr {
        Ipv6Addr::from(self.0).to_canonical()
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr().fmt(f)
    }
}

/// What one message says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Msg {
    /// `from` asks for the voter's grant for `lease_ms`, with its claim's priority.
    Request {
        from: NodeId,
        priority: u8,
        seq: u64,
        lease_ms: u32,
    },
    /// `from` (a voter) grants `to` the lease for `lease_ms` from when it received request `seq`.
    Grant {
        from: NodeId,
        to: NodeId,
        seq: u64,
        lease_ms: u32,
    },
    /// `from` (a voter) refuses request `seq` of `to`: its grant is held by `holder` (at
    /// `priority`) for `remaining_ms` more; in its quiet period after a start the holder is
    /// nobody (all zeros).
    Refuse {
        from: NodeId,
        to: NodeId,
        seq: u64,
        holder: NodeId,
        priority: u8,
        remaining_ms: u32,
    },
    /// `from` gives back the grant it holds at the receiving voter.
    Release { from: NodeId, seq: u64 },
}

impl Msg {
    /// The sender.
    pub fn from(&self) -> NodeId {
        match *self {
            Msg::Request { from, .. }
            | Msg::Grant { from, .. }
            | Msg::Refuse { from, .. }
            | Msg::Release { from, .. } => from,
        }
    }
}

/// Why a datagram was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("length {0}, expected {LEN}")]
    Length(usize),
    #[error("not a write-lease message (magic)")]
    Magic,
    #[error("authentication failed (wrong key, or altered)")]
    Auth,
    #[error("unknown message kind {0}")]
    Kind(u8),
}

fn mac(key: &[u8], body: &[u8]) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256>>::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(body);
    m
}

fn put_id(buf: &mut [u8], at: usize, id: NodeId) {
    buf[at..at + 16].copy_from_slice(&id.0);
}

fn id_at(buf: &[u8], at: usize) -> NodeId {
    let mut b = [0; 16];
    b.copy_from_slice(&buf[at..at + 16]);
    NodeId(b)
}

/// The message as sent, authenticated with `key`.
pub fn encode(msg: &Msg, key: &[u8]) -> [u8; LEN] {
    let mut b = [0u8; LEN];
    b[..4].copy_from_slice(MAGIC);
    let (kind, priority, to, holder, seq, ms) = match *msg {
        Msg::Request {
            priority,
            seq,
            lease_ms,
            ..
        } => (1, priority, None, None, seq, lease_ms),
        Msg::Grant {
            to, seq, lease_ms, ..
        } => (2, 0, Some(to), None, seq, lease_ms),
        Msg::Refuse {
            to,
            seq,
            holder,
            priority,
            remaining_ms,
            ..
        } => (3, priority, Some(to), Some(holder), seq, remaining_ms),
        Msg::Release { seq, .. } => (4, 0, None, None, seq, 0),
    };
    b[4] = kind;
    b[5] = priority;
    put_id(&mut b, 8, msg.from());
    if let Some(to) = to {
        put_id(&mut b, 24, to);
    }
    if let Some(holder) = holder {
        put_id(&mut b, 40, holder);
    }
    b[56..64].copy_from_slice(&seq.to_be_bytes());
    b[64..68].copy_from_slice(&ms.to_be_bytes());
    let tag = mac(key, &b[..BODY]).finalize().into_bytes();
    b[BODY..].copy_from_slice(&tag);
    b
}

/// A received datagram, checked: length, magic, then the HMAC (in constant time), then kind.
pub fn decode(bytes: &[u8], key: &[u8]) -> Result<Msg, DecodeError> {
    if bytes.len() != LEN {
        return Err(DecodeError::Length(bytes.len()));
    }
    if &bytes[..4] != MAGIC {
        return Err(DecodeError::Magic);
    }
    mac(key, &bytes[..BODY])
        .verify_slice(&bytes[BODY..])
        .map_err(|_| DecodeError::Auth)?;
    let from = id_at(bytes, 8);
    let to = id_at(bytes, 24);
    let holder = id_at(bytes, 40);
    let seq = u64::from_be_bytes(bytes[56..64].try_into().expect("8 bytes"));
    let ms = u32::from_be_bytes(bytes[64..68].try_into().expect("4 bytes"));
    let priority = bytes[5];
    Ok(match bytes[4] {
        1 => Msg::Request {
            from,
            priority,
            seq,
            lease_ms: ms,
        },
        2 => Msg::Grant {
            from,
            to,
            seq,
            lease_ms: ms,
        },
        3 => Msg::Refuse {
            from,
            to,
            seq,
            holder,
            priority,
            remaining_ms: ms,
        },
        4 => Msg::Release { from, seq },
        k => return Err(DecodeError::Kind(k)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(last: u8) -> NodeId {
        NodeId::new(IpAddr::from([192, 0, 2, last]))
    }

    #[test]
    fn every_message_survives_the_wire_and_a_flipped_bit_is_refused() {
        let key = b"shared secret";
        let msgs = [
            Msg::Request {
                from: id(1),
                priority: 200,
                seq: 7,
                lease_ms: 3000,
            },
            Msg::Grant {
                from: id(3),
                to: id(1),
                seq: 7,
                lease_ms: 3000,
            },
            Msg::Refuse {
                from: id(2),
                to: id(1),
                seq: 8,
                holder: id(2),
                priority: 100,
                remaining_ms: 1234,
            },
            Msg::Release {
                from: id(1),
                seq: 9,
            },
        ];
        for msg in msgs {
            let bytes = encode(&msg, key);
            assert_eq!(decode(&bytes, key), Ok(msg));
            assert_eq!(decode(&bytes, b"another key"), Err(DecodeError::Auth));
            for bit in 0..LEN * 8 {
                let mut bad = bytes;
                bad[bit / 8] ^= 1 << (bit % 8);
                assert!(decode(&bad, key).is_err(), "bit {bit} of {msg:?}");
            }
            assert_eq!(
                decode(&bytes[..LEN - 1], key),
                Err(DecodeError::Length(LEN - 1))
            );
        }
    }

    #[test]
    fn node_ids_order_like_addresses_and_print_as_them() {
        assert!(id(2) > id(1));
        assert_eq!(id(7).to_string(), "192.0.2.7");
        let v6 = NodeId::new("2001:db8::1".parse().unwrap());
        assert_eq!(v6.to_string(), "2001:db8::1");
    }
}
