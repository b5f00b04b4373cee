//! The connection table: every tracked flow, both of its directions, and its precomputed
//! rewrite.
//!
//! A flow is stored once, in a fixed array of slots allocated at start-up (huge-page backed,
//! see [`crate::mem`]), each behind its own one-byte spin lock ([`lock`]). An index ([`index::FlowIndex`]:
//! lock-free seqlock reads, one writer mutex) maps the key a packet carries *as it arrives* —
//! one key per direction — to the slot and the direction. Lookup copies the slot reference
//! out of the index before locking the slot; insertion's staleness check is the only place
//! that locks a slot while holding the index's writer mutex, and no lock is taken on every
//! packet by every worker.
//!
//! Each direction carries a [`Rewrite`]: the addresses, ports (ICMP id, GRE key) and egress
//! interface the packet must leave with, and its [`CsumDelta`]. Both are plain data, computed
//! when the flow is stored, so the same description is applied by the engine or by the XDP
//! fast path ([`offload`] hands flows over and takes them back).

pub mod index;
pub mod lock;
pub mod offload;
pub mod tcp;

mod flow;
mod free;
mod table;

pub use flow::*;
pub use table::*;
