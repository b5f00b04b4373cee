//! The access policy as the engine sees it: what a would-be flow looks like to a policy
//! ([`NewFlow`]), what the policy answers ([`Decision`]) and the [`Policy`] trait the rules
//! crate implements. It depends on nothing but the interface numbering.

use crate::config::IfaceId;

/// What policy sees of a packet that would create a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewFlow {
    /// Ingress interface.
    pub ingress: IfaceId,
    /// IP protocol.
    pub proto: u8,
    /// Source address.
    pub src: u32,
    /// Destination address (before any forward is applied).
    pub dst: u32,
    /// Source port (0 when none).
    pub sport: u16,
    /// Destination port (0 when none).
    pub dport: u16,
    /// ICMP type and code, for ICMP.
    pub icmp: Option<(u8, u8)>,
    /// Interface the flow would leave on.
    pub egress: Option<IfaceId>,
}

/// A policy decision, naming the rule that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Create the flow.
    Permit {
        /// Rule id (0 = default).
        rule: u32,
    },
    /// Drop the packet.
    Deny {
        /// Rule id (0 = implicit deny).
        rule: u32,
    },
}

/// Access policy evaluated on the first packet of a flow. The rules crate implements it.
pub trait Policy: Send + Sync + core::fmt::Debug {
    /// Decides whether `f` may create a flow (counting rule hits).
    fn check(&self, f: &NewFlow) -> Decision;

    /// The same decision without side effects (what-if evaluation on reload).
    fn would_permit(&self, f: &NewFlow) -> bool {
        matches!(self.check(f), Decision::Permit { .. })
    }

    /// The name of the access list rule `rule` belongs to (for log lines).
    fn list_of(&self, _rule: u32) -> Option<String> {
        None
    }

    /// The policy as `Any`, so the control plane can show its rules (None: nothing to show).
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
}

/// Permits everything (the policy when no access list is bound).
#[derive(Debug, Clone, Copy, Default)]
pub struct PermitAll;

impl Policy for PermitAll {
    fn check(&self, _: &NewFlow) -> Decision {
        Decision::Permit { rule: 0 }
    }
}
