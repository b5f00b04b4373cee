//! A control connection's session and its calls: their states and IDs.

use crate::conntrack::{FlowKey, Rewrite};
use crate::time::Time;
use crate::wire::proto;
use stream::{Stream, StreamSync};

use super::*;

/// A call's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum CallState {
    /// OCRQ seen, waiting for the OCRP.
    Requested,
    /// ICRQ seen, waiting for the PNS's ICRP.
    Offered,
    /// ICRP accepted, waiting for ICCN.
    Accepted,
    /// Up: GRE flows exist.
    Established,
    /// CCRQ seen, waiting for CDN.
    Clearing,
}

/// One call on a control connection.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Call {
    /// Stable number of the call within its session.
    pub serial: u32,
    /// The PNS's own Call ID (as the inside host chose it).
    pub pns_id: u16,
    /// The Call ID the PAC knows the PNS by (translated, or equal to `pns_id`).
    pub xlat_id: u16,
    /// The PAC's Call ID, once known.
    pub pac_id: Option<u16>,
    /// State.
    pub state: CallState,
    /// Outgoing (OCRQ) or incoming (ICRQ).
    pub outgoing: bool,
    /// Key of the call's GRE flow (PNS → PAC direction), once created.
    pub gre: Option<FlowKey>,
    /// When the call was requested.
    pub created: Time,
}

/// A session's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum SessionState {
    /// Control connection open, SCCRP not yet seen.
    Opening,
    /// SCCRP accepted.
    Established,
    /// Stop-Control-Connection exchanged.
    Stopping,
    /// FIN or RST seen: calls end after the grace period.
    Closing,
}

/// One PPTP control connection.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Session {
    /// Id of the control connection's flow.
    pub flow_id: u64,
    /// Whether PNS Call IDs are translated (the PNS is behind PAT).
    pub translate: bool,
    /// The control flow's keys and rewrites, from which GRE flows are derived.
    pub ctl_keys: [FlowKey; 2],
    /// See `ctl_keys`.
    pub ctl_rewrite: [Rewrite; 2],
    /// State.
    pub state: SessionState,
    /// Calls.
    pub calls: Vec<Call>,
    /// When the session was created.
    pub created: Time,
    /// When its calls end (after FIN/RST).
    pub teardown_at: Option<Time>,
    #[serde(skip)]
    pub(super) streams: [Stream; 2],
    /// Per direction: the call the message being parsed concerns (a message can span
    /// segments), by serial.
    #[serde(skip)]
    pub(super) current: [Option<u32>; 2],
    #[serde(skip)]
    pub(super) next_serial: u32,
}

impl Session {
    /// The inside party's address (the PNS behind PAT, or the PAC behind a forward).
    pub fn inside_host(&self) -> u32 {
        if self.translate {
            self.ctl_keys[0].src
        } else {
            self.ctl_rewrite[0].dst
        }
    }

    /// The pool key: (the PNS's address as the PAC sees it, the PAC's address).
    pub(super) fn pool_key(&self) -> (u32, u32) {
        (self.ctl_rewrite[0].src, self.ctl_rewrite[0].dst)
    }

    /// Synchronisation of the PNS→PAC and PAC→PNS streams.
    pub fn sync(&self) -> [StreamSync; 2] {
        [self.streams[0].sync(), self.streams[1].sync()]
    }

    /// Sequence number of the next byte each stream (PNS→PAC, PAC→PNS) will parse.
    pub fn next_seq(&self) -> [u32; 2] {
        [self.streams[0].next_seq(), self.streams[1].next_seq()]
    }

    /// GRE flow of a call: keys and rewrites for both directions.
    pub(super) fn gre_flow(&self, c: &Call, pac_id: u16) -> ([FlowKey; 2], [Rewrite; 2]) {
        let (k, r) = (&self.ctl_keys, &self.ctl_rewrite);
        let key = |src, dst, id| FlowKey { src, dst, sport: crate::wire::gre::GRE_V1, dport: id, proto: proto::GRE };
        (
            [key(k[0].src, k[0].dst, pac_id), key(k[1].src, k[1].dst, c.xlat_id)],
            [
                Rewrite {
                    src: r[0].src,
                    dst: r[0].dst,
                    sport: crate::wire::gre::GRE_V1,
                    dport: pac_id,
                    egress: r[0].egress,
                },
                Rewrite {
                    src: r[1].src,
                    dst: r[1].dst,
                    sport: crate::wire::gre::GRE_V1,
                    dport: c.pns_id,
                    egress: r[1].egress,
                },
            ],
        )
    }
}
