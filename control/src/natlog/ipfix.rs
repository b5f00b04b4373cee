//! IPFIX (RFC 7011) messages carrying NAT events with the information elements and event
//! numbers of RFC 8158: one template per kind of record, data sets of records, a message
//! header whose sequence number counts the data records sent before it.

/// natEvent values (RFC 8158, section 4.1).
pub mod event {
    /// NAT addresses exhausted.
    pub const ADDRESSES_EXHAUSTED: u8 = 3;
    /// NAT44 session create.
    pub const SESSION_CREATE: u8 = 4;
    /// NAT44 session delete.
    pub const SESSION_DELETE: u8 = 5;
    /// Quota exceeded.
    pub const QUOTA_EXCEEDED: u8 = 13;
    /// Port block allocation.
    pub const BLOCK_ALLOCATE: u8 = 16;
    /// Port block de-allocation.
    pub const BLOCK_RELEASE: u8 = 17;
}

/// natQuotaExceededEvent: maximum entries per user (RFC 8158, section 4.3).
const QUOTA_PER_USER: u32 = 3;

// information element numbers (IANA IPFIX registry)
const OBSERVATION_TIME_MS: u16 = 323;
const NAT_EVENT: u16 = 230;
const SOURCE_V4: u16 = 8;
const DESTINATION_V4: u16 = 12;
const POST_NAT_SOURCE_V4: u16 = 225;
const POST_NAT_DESTINATION_V4: u16 = 226;
const PROTOCOL: u16 = 4;
const SOURCE_PORT: u16 = 7;
const DESTINATION_PORT: u16 = 11;
const POST_NAPT_SOURCE_PORT: u16 = 227;
const POST_NAPT_DESTINATION_PORT: u16 = 228;
const PORT_RANGE_START: u16 = 361;
const PORT_RANGE_END: u16 = 362;
const PORT_RANGE_STEP: u16 = 363;
const PORT_RANGE_PORTS: u16 = 364;
const NAT_POOL_ID: u16 = 283;
const QUOTA_EXCEEDED_EVENT: u16 = 466;
const MAX_ENTRIES_PER_USER: u16 = 473;

/// Template ids (data sets carry them as their set id).
pub mod template {
    /// NAT44 session create/delete.
    pub const SESSION: u16 = 256;
    /// Port block allocation/de-allocation.
    pub const BLOCK: u16 = 257;
    /// NAT addresses exhausted.
    pub const EXHAUSTED: u16 = 258;
    /// Quota exceeded (entries per user).
    pub const QUOTA: u16 = 259;
}

const TEMPLATES: [(u16, &[(u16, u16)]); 4] = [
    (
        template::SESSION,
        &[
            (OBSERVATION_TIME_MS, 8),
            (NAT_EVENT, 1),
            (PROTOCOL, 1),
            (SOURCE_V4, 4),
            (SOURCE_PORT, 2),
            (POST_NAT_SOURCE_V4, 4),
            (POST_NAPT_SOURCE_PORT, 2),
            (DESTINATION_V4, 4),
            (DESTINATION_PORT, 2),
            (POST_NAT_DESTINATION_V4, 4),
            (POST_NAPT_DESTINATION_PORT, 2),
        ],
    ),
    (
        template::BLOCK,
        &[
            (OBSERVATION_TIME_MS, 8),
            (NAT_EVENT, 1),
            (SOURCE_V4, 4),
            (POST_NAT_SOURCE_V4, 4),
            (PORT_RANGE_START, 2),
            (PORT_RANGE_END, 2),
            (PORT_RANGE_STEP, 2),
            (PORT_RANGE_PORTS, 2),
        ],
    ),
    (template::EXHAUSTED, &[(OBSERVATION_TIME_MS, 8), (NAT_EVENT, 1), (NAT_POOL_ID, 4)]),
    (
        template::QUOTA,
        &[
            (OBSERVATION_TIME_MS, 8),
            (NAT_EVENT, 1),
            (QUOTA_EXCEEDED_EVENT, 4),
            (MAX_ENTRIES_PER_USER, 4),
            (SOURCE_V4, 4),
        ],
    ),
];

/// One NAT event as exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// A translation was created (`create`) or deleted: before and after translation.
    Session {
        /// Create or delete.
        create: bool,
        /// Wall-clock milliseconds since the epoch.
        at_ms: u64,
        /// IP protocol.
        proto: u8,
        /// (source, source port, destination, destination port) as the inside host sent it.
        pre: (u32, u16, u32, u16),
        /// The same after translation.
        post: (u32, u16, u32, u16),
    },
    /// A port block was given to `host` (`allocate`) or given back.
    Block {
        /// Allocation or release.
        allocate: bool,
        /// Wall-clock milliseconds.
        at_ms: u64,
        /// The inside host.
        host: u32,
        /// The outside address.
        addr: u32,
        /// First and last port.
        ports: (u16, u16),
    },
    /// An outside address (pool entry `pool`) had no free block.
    Exhausted {
        /// Wall-clock milliseconds.
        at_ms: u64,
        /// Which address of the pool (0: the outside address).
        pool: u32,
    },
    /// `host` held all `max` blocks it may hold and needed another.
    Quota {
        /// Wall-clock milliseconds.
        at_ms: u64,
        /// The inside host.
        host: u32,
        /// Its limit.
        max: u32,
    },
}

impl Record {
    fn template(&self) -> u16 {
        match self {
            Record::Session { .. } => template::SESSION,
            Record::Block { .. } => template::BLOCK,
            Record::Exhausted { .. } => template::EXHAUSTED,
            Record::Quota { .. } => template::QUOTA,
        }
    }

    fn encode(&self, v: &mut Vec<u8>) {
        match *self {
            Record::Session { create, at_ms, proto, pre, post } => {
                v.extend_from_slice(&at_ms.to_be_bytes());
                v.push(if create { event::SESSION_CREATE } else { event::SESSION_DELETE });
                v.push(proto);
                for (a, p) in [(pre.0, pre.1), (post.0, post.1), (pre.2, pre.3), (post.2, post.3)] {
                    v.extend_from_slice(&a.to_be_bytes());
                    v.extend_from_slice(&p.to_be_bytes());
                }
            }
            Record::Block { allocate, at_ms, host, addr, ports } => {
                v.extend_from_slice(&at_ms.to_be_bytes());
                v.push(if allocate { event::BLOCK_ALLOCATE } else { event::BLOCK_RELEASE });
                v.extend_from_slice(&host.to_be_bytes());
                v.extend_from_slice(&addr.to_be_bytes());
                v.extend_from_slice(&ports.0.to_be_bytes());
                v.extend_from_slice(&ports.1.to_be_bytes());
                v.extend_from_slice(&1u16.to_be_bytes());
                v.extend_from_slice(&(ports.1.wrapping_sub(ports.0).wrapping_add(1)).to_be_bytes());
            }
            Record::Exhausted { at_ms, pool } => {
                v.extend_from_slice(&at_ms.to_be_bytes());
                v.push(event::ADDRESSES_EXHAUSTED);
                v.extend_from_slice(&pool.to_be_bytes());
            }
            Record::Quota { at_ms, host, max } => {
                v.extend_from_slice(&at_ms.to_be_bytes());
                v.push(event::QUOTA_EXCEEDED);
                v.extend_from_slice(&QUOTA_PER_USER.to_be_bytes());
                v.extend_from_slice(&max.to_be_bytes());
                v.extend_from_slice(&host.to_be_bytes());
            }
        }
    }
}

/// The largest message built (fits a 1500-byte MTU with IPv4 and UDP headers).
pub const MAX_MESSAGE: usize = 1400;

/// Builds the messages of one exporting process and observation domain.
#[derive(Debug)]
pub struct Encoder {
    domain: u32,
    /// Data records sent so far (the next message's sequence number).
    sequence: u32,
}

impl Encoder {
    /// An encoder for observation domain `domain`.
    pub fn new(domain: u32) -> Encoder {
        Encoder { domain, sequence: 0 }
    }

    fn header(&self, v: &mut Vec<u8>, export_secs: u32) {
        v.extend_from_slice(&10u16.to_be_bytes());
        v.extend_from_slice(&0u16.to_be_bytes()); // length, set when done
        v.extend_from_slice(&export_secs.to_be_bytes());
        v.extend_from_slice(&self.sequence.to_be_bytes());
        v.extend_from_slice(&self.domain.to_be_bytes());
    }

    fn finish(v: &mut [u8]) {
        let len = v.len() as u16;
        v[2..4].copy_from_slice(&len.to_be_bytes());
    }

    /// A message with every template (sent first and then periodically: a collector that
    /// started late, or lost one over UDP, learns them again).
    pub fn templates(&self, export_secs: u32) -> Vec<u8> {
        let mut v = Vec::with_capacity(256);
        self.header(&mut v, export_secs);
        let set_at = v.len();
        v.extend_from_slice(&2u16.to_be_bytes());
        v.extend_from_slice(&0u16.to_be_bytes());
        for (id, fields) in TEMPLATES {
            v.extend_from_slice(&id.to_be_bytes());
            v.extend_from_slice(&(fields.len() as u16).to_be_bytes());
            for &(ie, len) in fields {
                v.extend_from_slice(&ie.to_be_bytes());
                v.extend_from_slice(&len.to_be_bytes());
            }
        }
        let set_len = (v.len() - set_at) as u16;
        v[set_at + 2..set_at + 4].copy_from_slice(&set_len.to_be_bytes());
        Self::finish(&mut v);
        v
    }

    /// Messages carrying `records` in order, each at most [`MAX_MESSAGE`] bytes; a run of
    /// records of one template shares a data set.
    pub fn data(&mut self, export_secs: u32, records: &[Record]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut v = Vec::new();
        let mut set: Option<(u16, usize)> = None; // (template, where its header is)
        let mut in_msg = 0u32;
        let mut rec = Vec::with_capacity(64);
        for r in records {
            rec.clear();
            r.encode(&mut rec);
            let t = r.template();
            let need = rec.len() + if set.is_some_and(|(s, _)| s == t) { 0 } else { 4 };
            if !v.is_empty() && v.len() + need > MAX_MESSAGE {
                close_set(&mut v, set.take());
                Self::finish(&mut v);
                out.push(std::mem::take(&mut v));
                self.sequence = self.sequence.wrapping_add(in_msg);
                in_msg = 0;
            }
            if v.is_empty() {
                self.header(&mut v, export_secs);
            }
            if set.is_none_or(|(s, _)| s != t) {
                close_set(&mut v, set.take());
                set = Some((t, v.len()));
                v.extend_from_slice(&t.to_be_bytes());
                v.extend_from_slice(&0u16.to_be_bytes());
            }
            v.extend_from_slice(&rec);
            in_msg += 1;
        }
        if !v.is_empty() {
            close_set(&mut v, set);
            Self::finish(&mut v);
            out.push(v);
            self.sequence = self.sequence.wrapping_add(in_msg);
        }
        out
    }
}

fn close_set(v: &mut [u8], set: Option<(u16, usize)>) {
    if let Some((_, at)) = set {
        let len = (v.len() - at) as u16;
        v[at + 2..at + 4].copy_from_slice(&len.to_be_bytes());
    }
}

#[cfg(test)]
#[path = "ipfix_tests.rs"]
mod tests;
