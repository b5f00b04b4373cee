//! xgw's packet engine.
//!
//! This crate owns everything that decides what happens to one packet: the typed views
//! over frame bytes ([`wire`]), RFC 1624 checksum arithmetic ([`checksum`]), the
//! connection table ([`conntrack`]), port address translation ([`nat`]), IPv4 fragment
//! tracking ([`frag`]), the named drop reasons and counters ([`counters`]) and the
//! engine that ties them together ([`engine::Engine`]), and the access policy's interface
//! ([`policy`]).
//!
//! The engine is sans-IO: [`engine::Engine::process`] takes one frame (borrowed, rewritten
//! in place), the interface it arrived on and the current time, and returns a
//! [`engine::Verdict`]. It never reads a clock, opens a socket or allocates per packet.
//! The outer layers — offline pcap replay ([`replay`]), the AF_XDP workers (`xsk`, behind
//! the `xsk` feature, the only module allowed `unsafe`), the daemon — feed it.
#![deny(unsafe_code)]

pub mod alg;
pub mod checksum;
pub mod config;
pub mod conntrack;
pub mod counters;
pub mod engine;
pub mod frag;
pub mod mem;
pub mod nat;
pub mod neighbour;
pub mod policy;
pub mod replay;
pub mod time;
pub mod wire;
#[cfg(feature = "xsk")]
pub mod xsk;

pub use config::{EngineConfig, IfaceConfig, IfaceId, Role};
pub use counters::{Counters, DropReason, Traffic};
pub use engine::{Engine, FrameBuf, RxMeta, Shared, Verdict};
pub use time::Time;
