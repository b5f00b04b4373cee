//! PPTP conversations in scenarios: an inside PNS opens a control connection to a far PAC
//! and asks for one call, message by message (the Outgoing-Call-Request possibly coalesced
//! with an Echo-Request before it in one segment, and possibly split in two segments
//! anywhere, even inside the Call ID); the oracle learns the translated port and
//! Call ID from what the engine forwards, so the PAC's answers and GRE go where a real PAC's
//! would. Messages are built here, independently of the engine's PPTP code.

use crate::frames::{gre, tcp_segment};
use crate::oracle::Expect;
use crate::{INSIDE, OUTSIDE, OUTSIDE_ADDR};
use xgw_dataplane::IfaceId;

const MAGIC: u32 = 0x1a2b_3c4d;
const SCCRQ: u16 = 1;
const SCCRP: u16 = 2;
const OCRQ: u16 = 7;
const OCRP: u16 = 8;
const ECHO_RQ: u16 = 5;
const ECHO_RP: u16 = 6;
/// Where the OCRQ's Call ID sits in the message.
const CALL_ID_AT: usize = 12;

/// A control message of type `t`, `len` bytes, with 16-bit fields at the given offsets.
pub fn message(t: u16, len: usize, fields: &[(usize, u16)]) -> Vec<u8> {
    let mut m = vec![0u8; len];
    m[0..2].copy_from_slice(&(len as u16).to_be_bytes());
    m[2..4].copy_from_slice(&1u16.to_be_bytes());
    m[4..8].copy_from_slice(&MAGIC.to_be_bytes());
    m[8..10].copy_from_slice(&t.to_be_bytes());
    for &(at, v) in fields {
        m[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }
    m
}

/// One conversation and what the oracle learnt of it.
#[derive(Debug, Clone)]
pub struct Conv {
    /// The PNS (inside) and its source port.
    pub host: [u8; 4],
    /// Its TCP source port.
    pub sport: u16,
    /// The PAC (far host).
    pub server: [u8; 4],
    /// The PNS's Call ID.
    pub call_id: u16,
    /// The PAC's Call ID.
    pub pac_id: u16,
    /// Where the script is.
    pub stage: u8,
    split: usize,
    /// An Echo-Request travels in the same segment(s) just before the OCRQ.
    coalesce: bool,
    client_isn: u32,
    /// Client bytes sent so far (stream offset of the next one).
    sent: u32,
    /// Server bytes sent so far.
    answered: u32,
    /// Stream offset where the OCRQ starts.
    ocrq_at: u32,
    /// The outside port the control connection was translated to.
    pub out_port: Option<u16>,
    /// The translated Call ID's bytes, as seen leaving.
    xlat: [Option<u8>; 2],
    gre_seq: u32,
    /// Time passed since: the script stops (its call may have ended).
    pub stale: bool,
}

/// The established stage: the call is up.
pub const UP: u8 = 8;

impl Conv {
    /// A new conversation; `n` keeps its numbers distinct from the others'.
    pub fn new(host: [u8; 4], server: [u8; 4], call_id: u16, split: u8, coalesce: bool, n: usize) -> Conv {
        Conv {
            host,
            sport: 40_000 + n as u16,
            server,
            call_id,
            pac_id: 0x4000 + n as u16 * 7,
            stage: 0,
            split: usize::from(split) % if coalesce { 184 } else { 168 },
            coalesce,
            client_isn: 1_000 + n as u32 * 100_000,
            sent: 0,
            answered: 0,
            ocrq_at: 0,
            out_port: None,
            xlat: [None, None],
            gre_seq: 0,
            stale: false,
        }
    }

    /// The translated Call ID, once both its bytes were seen leaving.
    pub fn xlat_id(&self) -> Option<u16> {
        Some(u16::from_be_bytes([self.xlat[0]?, self.xlat[1]?]))
    }

    fn client(&mut self, payload: &[u8], flags: u8) -> Vec<u8> {
        let seq = self.client_isn.wrapping_add(1).wrapping_add(self.sent);
        self.sent += payload.len() as u32;
        tcp_segment((self.host, self.sport), (self.server, 1723), seq, 5_001 + self.answered, flags, payload)
    }

    fn server(&mut self, payload: &[u8], flags: u8) -> Option<Vec<u8>> {
        let port = self.out_port?;
        let seq = 5_001 + self.answered;
        self.answered += payload.len() as u32;
        let ack = self.client_isn.wrapping_add(1).wrapping_add(self.sent);
        Some(tcp_segment((self.server, 1723), (OUTSIDE_ADDR, port), seq, ack, flags, payload))
    }

    /// The script's next frame, or `None` while it waits for something it has not learnt.
    pub fn next_frame(&mut self) -> Option<(Vec<u8>, IfaceId, Expect)> {
        let to_client = Expect::DeliverTo(self.host, self.sport);
        let f = match self.stage {
            0 => {
                let f = tcp_segment((self.host, self.sport), (self.server, 1723), self.client_isn, 0, 0x02, b"");
                (f, INSIDE, Expect::Nothing)
            }
            1 => {
                let port = self.out_port?;
                let ack = self.client_isn.wrapping_add(1);
                (tcp_segment((self.server, 1723), (OUTSIDE_ADDR, port), 5_000, ack, 0x12, b""), OUTSIDE, to_client)
            }
            2 => (self.client(b"", 0x10), INSIDE, Expect::Nothing),
            3 => (self.client(&message(SCCRQ, 156, &[(12, 0x0100)]), 0x18), INSIDE, Expect::Nothing),
            4 => (self.server(&message(SCCRP, 156, &[(12, 0x0100), (14, 1)]), 0x18)?, OUTSIDE, to_client),
            5 | 6 => {
                let mut m = if self.coalesce { message(ECHO_RQ, 16, &[(12, 0)]) } else { Vec::new() };
                let before = m.len() as u32;
                m.extend_from_slice(&message(OCRQ, 168, &[(CALL_ID_AT, self.call_id), (14, 1)]));
                if self.stage == 5 {
                    self.ocrq_at = self.sent + before;
                }
                let part = match (self.stage, self.split) {
                    (5, 0) => {
                        self.stage = 6; // unsplit: one segment
                        &m[..]
                    }
                    (5, s) => &m[..s],
                    (_, s) => &m[s..],
                };
                (self.client(part, 0x18), INSIDE, Expect::Nothing)
            }
            7 => {
                let xlat = self.xlat_id()?;
                let m = message(OCRP, 32, &[(12, self.pac_id), (14, xlat), (16, 0x0100)]);
                let e = Expect::OcrpTo { host: self.host, port: self.sport, call_id: self.call_id };
                (self.server(&m, 0x18)?, OUTSIDE, e)
            }
            s if s % 2 == 0 => (self.client(&message(ECHO_RQ, 16, &[(12, 0)]), 0x18), INSIDE, Expect::Nothing),
            _ => (self.server(&message(ECHO_RP, 20, &[(12, 0), (16, 1)]), 0x18)?, OUTSIDE, to_client),
        };
        self.stage = if self.stage == u8::MAX { UP } else { self.stage + 1 };
        Some(f)
    }

    /// GRE of this call from its client (key: the PAC's Call ID).
    pub fn gre_from_client(&mut self) -> Vec<u8> {
        self.gre_seq += 1;
        gre(self.host, self.server, self.pac_id, self.gre_seq)
    }

    /// GRE from its server with key `key` (the translated Call ID, or a forged one).
    pub fn gre_from_server(&mut self, key: u16) -> Vec<u8> {
        self.gre_seq += 1;
        gre(self.server, OUTSIDE_ADDR, key, self.gre_seq)
    }

    /// Learns from a segment of this connection that left on the outside (TCP source port
    /// `port`, stream offset `off` of its first payload byte): the translated port, and the
    /// translated Call ID's bytes if the segment carries them.
    pub fn learn(&mut self, port: u16, seq: u32, payload: &[u8]) {
        self.out_port.get_or_insert(port);
        let off = seq.wrapping_sub(self.client_isn.wrapping_add(1));
        for (i, b) in self.xlat.iter_mut().enumerate() {
            let at = self.ocrq_at + (CALL_ID_AT + i) as u32;
            if self.stage > 5 && at >= off && at - off < payload.len() as u32 {
                *b = Some(payload[(at - off) as usize]);
            }
        }
    }
}
