//! State replication between an active xgwd and its standby, without I/O: what goes on the
//! sync link and how it is made reliable. xgwd owns the UDP socket and the clock; this crate
//! owns the bytes and the bookkeeping.
//!
//! - [`wire`]: one message per datagram — a versioned header (kind, sequence number,
//!   acknowledgement fields), the records, and an optional HMAC-SHA256 over all of it with a
//!   key from the settings file. Decoding validates every field like a packet from the
//!   internet: anything malformed, of another version, or with a wrong MAC is refused with
//!   a reason to count.
//! - [`record`]: what a message carries — a flow (both keys, both rewrites, protocol state,
//!   status bits, kind, rule, remaining idle time) or a flow's removal — each checked on
//!   decode (known protocol, state and kind; interface numbers in range).
//! - [`channel`]: the reliability of conntrackd's FT-FW mode. The sender numbers its data
//!   messages and keeps them until acknowledged; the receiver acknowledges every few
//!   messages, asks for a gap with a NACK as soon as it sees one (and applies what it got:
//!   records are idempotent), and both sides send ALIVE when idle so that each knows the
//!   other is there. A NACK for messages no longer held makes the sender ask for a bulk
//!   resync instead.
//! - [`apply`]: the standby's side of a record — the flow created in its engine's table with
//!   the active gateway's keys and rewrites (so its outside port stays claimed) and the idle
//!   time it had left, or removed.

pub mod apply;
pub mod channel;
pub mod record;
pub mod wire;
