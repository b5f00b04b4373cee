//! xgwd, the daemon: its settings and start-up (`daemon`), the XDP and AF_XDP wiring, the
//! kernel's tables through rtnetlink (`netlink`, `neigh`), the egresses the fast path may use
//! (`egress`), the fast path's userspace half (`offload`, reading its maps in batches with
//! `flowmap`), the HA pair's role and state
//! sync (`ha`), the control socket and metrics
//! (`ctl`), ASA-style log lines (`asa`) and the offline replay front end (`replay_cmd`).
//! The CLI is its own package (`cli`), speaking `xgw-control-proto`.
#![deny(unsafe_code)]

pub mod asa;
pub mod ctl;
pub mod daemon;
pub mod egress;
pub mod flowmap;
pub mod ha;
pub mod natlog;
pub mod neigh;
pub mod netlink;
pub mod offload;
pub mod replay_cmd;
