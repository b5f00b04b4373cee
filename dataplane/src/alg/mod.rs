//! Application-level gateways: inspectors that read a control protocol to open, translate
//! and close the secondary flows it negotiates.
//!
//! [`pptp`] is "fixup protocol pptp 1723": it follows PPTP control connections, gives
//! every call a unique Call ID on the outside, rewrites Call IDs in control messages, and
//! creates the call's GRE flows in the connection table.

pub mod pptp;
