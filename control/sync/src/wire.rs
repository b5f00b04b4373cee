//! The sync link's message format: one message per UDP datagram, big-endian.
//!
//! ```text
//!  0  magic "XGWS"          4 bytes
//!  4  version               1 (VERSION)
//!  5  kind                  1 (Kind)
//!  6  flags                 1 (bit 0: a MAC follows the payload)
//!  7  reserved              1 (0)
//!  8  seq                   4 (Data: its number; Alive: the sender's next; Hello: its first)
//! 12  a                     4 (Ack: received up to and including; Nack: first missing; Alive: first)
//! 16  b                     4 (Nack: last missing; Data, Alive, Hello: the sender's session)
//! 20  payload length        2 (at most MAX_PAYLOAD; records, Data only)
//! 22  reserved              2 (0)
//! 24  payload
//!  …  HMAC-SHA256 of everything before it, 32 bytes (when flagged)
//! ```

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The format's version; a message of another version is refused.
pub const VERSION: u8 = 1;
/// The header's length.
pub const HEADER_LEN: usize = 24;
/// The MAC's length.
pub const MAC_LEN: usize = 32;
/// The most payload one message carries (a datagram stays under a 1500-byte MTU).
pub const MAX_PAYLOAD: usize = 1400;
const MAGIC: [u8; 4] = *b"XGWS";
const HAS_MAC: u8 = 1;

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Records, numbered.
    Data = 1,
    /// Everything up to `a` arrived.
    Ack = 2,
    /// `a..=b` are missing: send them again.
    Nack = 3,
    /// Nothing to say; I am here (my next sequence number is `seq`, my first was `a`).
    Alive = 4,
    /// Send me everything (a bulk resync).
    Resync = 5,
    /// I (re)started: my first Data message is `seq`, my session `b`.
    Hello = 6,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Data,
            2 => Kind::Ack,
            3 => Kind::Nack,
            4 => Kind::Alive,
            5 => Kind::Resync,
            6 => Kind::Hello,
            _ => return None,
        })
    }
}

/// A message, decoded or to encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its kind.
    pub kind: Kind,
    /// Sequence number (see the layout).
    pub seq: u32,
    /// First field (see the layout).
    pub a: u32,
    /// Second field (see the layout).
    pub b: u32,
    /// Records (Data only).
    pub payload: Vec<u8>,
}

/// Why a datagram was refused (each is counted under its name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Shorter than its header, or its length fields disagree with its size.
    Truncated,
    /// Not "XGWS".
    BadMagic,
    /// Another version of the format.
    BadVersion,
    /// An unknown kind, unknown flags, non-zero reserved bytes, a payload where none belongs
    /// or one too long.
    Malformed,
    /// A key is configured and the message carries no MAC.
    MacMissing,
    /// The MAC does not verify.
    BadMac,
}

impl Refused {
    /// Every reason, in counter order.
    pub const ALL: [Refused; 6] = [
        Refused::Truncated,
        Refused::BadMagic,
        Refused::BadVersion,
        Refused::Malformed,
        Refused::MacMissing,
        Refused::BadMac,
    ];

    /// The counter name.
    pub fn name(self) -> &'static str {
        match self {
            Refused::Truncated => "sync_truncated",
            Refused::BadMagic => "sync_bad_magic",
            Refused::BadVersion => "sync_bad_version",
            Refused::Malformed => "sync_malformed",
            Refused::MacMissing => "sync_mac_missing",
            Refused::BadMac => "sync_bad_mac",
        }
    }
}

fn mac_of(key: &[u8], data: &[u8]) -> [u8; MAC_LEN] {
    // HMAC accepts keys of any length
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    m.update(data);
    m.finalize().into_bytes().into()
}

impl Message {
    /// A message without payload.
    pub fn control(kind: Kind, seq: u32, a: u32, b: u32) -> Message {
        Message { kind, seq, a, b, payload: Vec::new() }
    }

    /// The datagram, with a MAC when `key` is given. The payload must fit
    /// ([`MAX_PAYLOAD`]); a longer one is cut there (callers fill messages with
    /// the record module's `Batch`, which never overfills).
    pub fn encode(&self, key: Option<&[u8]>) -> Vec<u8> {
        let payload = &self.payload[..self.payload.len().min(MAX_PAYLOAD)];
        let mut v = Vec::with_capacity(HEADER_LEN + payload.len() + MAC_LEN);
        v.extend_from_slice(&MAGIC);
        v.extend_from_slice(&[VERSION, self.kind as u8, if key.is_some() { HAS_MAC } else { 0 }, 0]);
        for x in [self.seq, self.a, self.b] {
            v.extend_from_slice(&x.to_be_bytes());
        }
        v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(payload);
        if let Some(k) = key {
            let m = mac_of(k, &v);
            v.extend_from_slice(&m);
        }
        v
    }

    /// Checks and decodes a datagram; with `key`, only a message whose MAC verifies.
    pub fn decode(d: &[u8], key: Option<&[u8]>) -> Result<Message, Refused> {
        if d.len() < HEADER_LEN {
            return Err(Refused::Truncated);
        }
        if d[0..4] != MAGIC {
            return Err(Refused::BadMagic);
        }
        if d[4] != VERSION {
            return Err(Refused::BadVersion);
        }
        let kind = Kind::from_u8(d[5]).ok_or(Refused::Malformed)?;
        let flags = d[6];
        if flags & !HAS_MAC != 0 || d[7] != 0 || d[22..24] != [0, 0] {
            return Err(Refused::Malformed);
        }
        let be = |o: usize| u32::from_be_bytes([d[o], d[o + 1], d[o + 2], d[o + 3]]);
        let len = usize::from(u16::from_be_bytes([d[20], d[21]]));
        if len > MAX_PAYLOAD || (len > 0 && kind != Kind::Data) {
            return Err(Refused::Malformed);
        }
        let mac_len = if flags & HAS_MAC != 0 { MAC_LEN } else { 0 };
        if d.len() != HEADER_LEN + len + mac_len {
            return Err(Refused::Truncated);
        }
        match (key, mac_len) {
            (Some(_), 0) => return Err(Refused::MacMissing),
            (Some(k), _) => {
                // hmac's verify compares in constant time
                let mut m = <Hmac<Sha256> as Mac>::new_from_slice(k).map_err(|_| Refused::BadMac)?;
                m.update(&d[..HEADER_LEN + len]);
                if m.verify_slice(&d[HEADER_LEN + len..]).is_err() {
                    return Err(Refused::BadMac);
                }
            }
            (None, _) => {}
        }
        Ok(Message { kind, seq: be(8), a: be(12), b: be(16), payload: d[HEADER_LEN..HEADER_LEN + len].to_vec() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_and_without_a_key() {
        let m = Message { kind: Kind::Data, seq: 7, a: 0, b: 0, payload: vec![1, 2, 3] };
        for key in [None, Some(&b"secret"[..])] {
            let d = m.encode(key);
            assert_eq!(Message::decode(&d, key), Ok(m.clone()));
        }
    }

    #[test]
    fn refuses_what_it_must_with_the_right_reason() {
        let key = Some(&b"k"[..]);
        let good = Message::control(Kind::Nack, 0, 3, 9).encode(key);
        type Case<'a> = (&'a str, Vec<u8>, Option<&'a [u8]>, Refused);
        let cases: Vec<Case<'_>> = vec![
            ("short", good[..10].to_vec(), key, Refused::Truncated),
            (
                "magic",
                {
                    let mut d = good.clone();
                    d[0] = b'Y';
                    d
                },
                key,
                Refused::BadMagic,
            ),
            (
                "version",
                {
                    let mut d = good.clone();
                    d[4] = 2;
                    d
                },
                key,
                Refused::BadVersion,
            ),
            (
                "kind",
                {
                    let mut d = good.clone();
                    d[5] = 99;
                    d
                },
                key,
                Refused::Malformed,
            ),
            (
                "flags",
                {
                    let mut d = good.clone();
                    d[6] |= 2;
                    d
                },
                key,
                Refused::Malformed,
            ),
            (
                "reserved",
                {
                    let mut d = good.clone();
                    d[23] = 1;
                    d
                },
                key,
                Refused::Malformed,
            ),
            (
                "payload on a NACK",
                {
                    let mut d = good.clone();
                    d[21] = 1;
                    d
                },
                key,
                Refused::Malformed,
            ),
            (
                "one byte more",
                {
                    let mut d = good.clone();
                    d.push(0);
                    d
                },
                key,
                Refused::Truncated,
            ),
            ("no MAC", Message::control(Kind::Nack, 0, 3, 9).encode(None), key, Refused::MacMissing),
            ("wrong key", good.clone(), Some(&b"other"[..]), Refused::BadMac),
            (
                "a field changed",
                {
                    let mut d = good.clone();
                    d[15] ^= 1;
                    d
                },
                key,
                Refused::BadMac,
            ),
        ];
        for (what, d, k, want) in cases {
            assert_eq!(Message::decode(&d, k), Err(want), "{what}");
        }
        // without a key configured, a MAC is accepted unverified (the peer may be keyed)
        assert!(Message::decode(&good, None).is_ok());
    }
}
