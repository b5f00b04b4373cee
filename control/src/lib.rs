//! xgw's control plane: command-line parsing shared by the binaries and the offline replay
//! front end. The daemon's kernel wiring (XDP, AF_XDP workers, control socket) lands here
//! too; this crate is the only place `anyhow` is used.
#![deny(unsafe_code)]

pub mod asa;
pub mod ctl;
pub mod daemon;
pub mod egress;
pub mod neigh;
pub mod netlink;
pub mod offload;
pub mod replay_cmd;
pub mod rules_cmd;
