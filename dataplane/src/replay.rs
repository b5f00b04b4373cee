//! Offline replay: frames from capture files through the engine, what leaves each interface
//! into capture files, and a summary of verdicts and counters.
//!
//! This is an outer I/O layer like the AF_XDP workers: it reads pcap or pcapng (Ethernet,
//! raw IPv4, Linux cooked and BSD loopback link types, normalised to Ethernet), orders the
//! frames by capture time, feeds each to [`Engine::process`] with the capture timestamp as
//! `now`, and sweeps expired flows as capture time advances. Replay is deterministic: the
//! same inputs give the same outputs.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::DataLink;
use pcap_parser::pcapng::Block;
use pcap_parser::traits::PcapNGPacketBlock;
use pcap_parser::{create_reader, PcapBlockOwned, PcapError};

use crate::config::IfaceId;
use crate::engine::{Engine, FrameBuf, RxMeta, Verdict};
use crate::time::Time;
use crate::wire::ethernet::{ETHERTYPE_IPV4, ETHERTYPE_IPV6};

/// Why a capture could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The file is neither pcap nor pcapng, or is corrupt.
    #[error("{file}: not a readable pcap/pcapng capture: {msg}")]
    BadCapture {
        /// File name.
        file: String,
        /// What the reader said.
        msg: String,
    },
    /// A link type this replay cannot turn into Ethernet frames.
    #[error("{file}: unsupported link type {linktype}")]
    UnsupportedLinkType {
        /// File name.
        file: String,
        /// The link type.
        linktype: String,
    },
    /// Writing an output capture failed.
    #[error("writing output capture: {0}")]
    Write(String),
}

/// One frame from a capture, already normalised to Ethernet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Capture timestamp.
    pub ts: Duration,
    /// The frame.
    pub frame: Vec<u8>,
}

/// Reads every frame of a pcap or pcapng capture (`file` names it in errors). Reading
/// uses pcap-parser, which accepts records whose original length exceeds the snap length
/// (fuzzed captures do that) and either byte order; writing uses pcap-file.
pub fn read_capture(mut r: impl Read, file: &str) -> Result<Vec<Record>, ReplayError> {
    let mut data = Vec::new();
    r.read_to_end(&mut data).map_err(|e| bad(file, e))?;
    let mut rd = create_reader(data.len().max(65536) + 1, &data[..]).map_err(|e| bad(file, format!("{e:?}")))?;
    let mut legacy: Option<(DataLink, bool)> = None;
    // per pcapng interface: link type and timestamp units per second
    let mut ifs: Vec<(DataLink, u64)> = Vec::new();
    let mut out = Vec::new();
    loop {
        let (used, rec) = match rd.next() {
            Ok((used, block)) => {
                let rec = match block {
                    PcapBlockOwned::LegacyHeader(h) => {
                        // the low 16 bits are the link type; the upper ones carry FCS flags
                        legacy = Some((DataLink::from((h.network.0 as u32) & 0xffff), h.is_nanosecond_precision()));
                        None
                    }
                    PcapBlockOwned::Legacy(p) => {
                        let (link, nanos) = legacy.ok_or_else(|| bad(file, "record before header"))?;
                        let frac = if nanos { u64::from(p.ts_usec) } else { u64::from(p.ts_usec) * 1000 };
                        let ts = Duration::from_secs(u64::from(p.ts_sec)) + Duration::from_nanos(frac);
                        to_ethernet(link, p.data, file)?.map(|frame| Record { ts, frame })
                    }
                    PcapBlockOwned::NG(Block::SectionHeader(_)) => {
                        ifs.clear();
                        None
                    }
                    PcapBlockOwned::NG(Block::InterfaceDescription(i)) => {
                        let units = match i.if_tsresol {
                            r if r & 0x80 != 0 => 1u64.checked_shl(u32::from(r & 0x7f)).unwrap_or(1_000_000),
                            r => 10u64.checked_pow(u32::from(r)).unwrap_or(1_000_000),
                        };
                        ifs.push((DataLink::from(i.linktype.0 as u32), units.max(1)));
                        None
                    }
                    PcapBlockOwned::NG(Block::EnhancedPacket(p)) => {
                        let (link, units) = ifs
                            .get(p.if_id as usize)
                            .copied()
                            .ok_or_else(|| bad(file, "packet names an undeclared interface"))?;
                        let raw = (u64::from(p.ts_high) << 32) | u64::from(p.ts_low);
                        let ts = Duration::from_secs(raw / units)
                            + Duration::from_nanos((raw % units) * 1_000_000_000 / units);
                        to_ethernet(link, p.packet_data(), file)?.map(|frame| Record { ts, frame })
                    }
                    PcapBlockOwned::NG(Block::SimplePacket(p)) => {
                        let (link, _) = ifs.first().copied().ok_or_else(|| bad(file, "packet before any interface"))?;
                        to_ethernet(link, p.packet_data(), file)?.map(|frame| Record { ts: Duration::ZERO, frame })
                    }
                    PcapBlockOwned::NG(_) => None,
                };
                (used, rec)
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => {
                // the whole file is in the buffer: incomplete means truncated
                if out.is_empty() && legacy.is_none() && ifs.is_empty() {
                    return Err(bad(file, "truncated before the first record"));
                }
                break;
            }
            Err(e) => return Err(bad(file, format!("{e:?}"))),
        };
        if let Some(r) = rec {
            out.push(r);
        }
        rd.consume(used);
    }
    Ok(out)
}

fn bad(file: &str, e: impl std::fmt::Display) -> ReplayError {
    ReplayError::BadCapture { file: file.to_string(), msg: e.to_string() }
}

fn eth_with(ethertype: u16, src_mac: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn ip_ethertype(p: &[u8]) -> u16 {
    match p.first().map(|b| b >> 4) {
        Some(6) => ETHERTYPE_IPV6,
        _ => ETHERTYPE_IPV4,
    }
}

/// Turns one captured packet into an Ethernet frame. `None` skips a packet that carries
/// nothing (an empty record).
fn to_ethernet(link: DataLink, data: &[u8], file: &str) -> Result<Option<Vec<u8>>, ReplayError> {
    const SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
    if data.is_empty() {
        return Ok(None);
    }
    Ok(Some(match link {
        DataLink::ETHERNET => data.to_vec(),
        DataLink::RAW | DataLink::IPV4 => eth_with(ip_ethertype(data), SRC, data),
        DataLink::LINUX_SLL => {
            if data.len() < 16 {
                return Ok(Some(data.to_vec())); // the engine counts it as truncated
            }
            let mut mac = SRC;
            mac.copy_from_slice(&data[6..12]);
            eth_with(u16::from_be_bytes([data[14], data[15]]), mac, &data[16..])
        }
        DataLink::NULL | DataLink::LOOP => {
            if data.len() < 4 {
                return Ok(Some(data.to_vec()));
            }
            eth_with(ip_ethertype(&data[4..]), SRC, &data[4..])
        }
        other => {
            return Err(ReplayError::UnsupportedLinkType { file: file.to_string(), linktype: format!("{other:?}") })
        }
    }))
}

/// A frame to replay, with the interface it arrives on.
#[derive(Debug, Clone)]
pub struct Input {
    /// Capture timestamp.
    pub ts: Duration,
    /// Ingress interface.
    pub iface: IfaceId,
    /// The frame.
    pub frame: Vec<u8>,
}

/// Assigns an interface to each record: inside when the IPv4 source is in one of `inside`
/// prefixes, else `outside`. For single captures taken at one point of a network.
pub fn assign_by_source(
    records: Vec<Record>,
    inside: &[(Ipv4Addr, u8)],
    inside_if: IfaceId,
    outside_if: IfaceId,
) -> Vec<Input> {
    records
        .into_iter()
        .map(|r| {
            let src = ipv4_src(&r.frame);
            let is_inside = src.is_some_and(|s| {
                inside.iter().any(|(net, len)| {
                    let m = crate::config::prefix_mask(*len);
                    s & m == u32::from(*net) & m
                })
            });
            Input { ts: r.ts, iface: if is_inside { inside_if } else { outside_if }, frame: r.frame }
        })
        .collect()
}

fn ipv4_src(frame: &[u8]) -> Option<u32> {
    let eth = crate::wire::ethernet::Frame::new_checked(frame).ok()?;
    if eth.ethertype() != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = crate::wire::ipv4::Packet::new_quoted(&frame[eth.payload_offset()..]).ok()?;
    Some(ip.src_addr())
}

/// What one replay did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Summary {
    /// Frames replayed.
    pub frames: u64,
    /// Frames forwarded, per egress interface index.
    pub forwarded: BTreeMap<u8, u64>,
    /// Frames handed to the host.
    pub to_host: u64,
    /// Drops per reason name.
    pub drops: BTreeMap<String, u64>,
    /// Flows created.
    pub flows_created: u64,
    /// Flows live at the end.
    pub flows_live: usize,
    /// ICMP errors generated.
    pub icmp_generated: u64,
}

/// The verdict and resulting bytes of one replayed frame.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Capture timestamp.
    pub ts: Duration,
    /// Ingress interface.
    pub ingress: IfaceId,
    /// Verdict.
    pub verdict: Verdict,
    /// The frame after processing (rewritten, or unchanged when dropped/to host).
    pub frame: Vec<u8>,
}

/// Runs `inputs` (sorted by timestamp, stable) through `engine`, returning per-frame
/// outcomes and a summary. Flows are swept every `sweep_every` of capture time.
pub fn run(engine: &mut Engine, mut inputs: Vec<Input>, sweep_every: Duration) -> (Vec<Outcome>, Summary) {
    inputs.sort_by_key(|i| i.ts);
    let mut out = Vec::with_capacity(inputs.len());
    let mut summary = Summary::default();
    let mut buf = vec![0u8; 4096];
    let mut last_sweep = Duration::ZERO;
    for inp in inputs {
        let now = Time(u64::try_from(inp.ts.as_nanos()).unwrap_or(u64::MAX));
        if inp.ts >= last_sweep + sweep_every {
            let cap = engine.shared().flows.capacity();
            engine.shared().sweep(now, cap);
            last_sweep = inp.ts;
        }
        let n = inp.frame.len().min(buf.len());
        buf[..n].copy_from_slice(&inp.frame[..n]);
        let mut frame = FrameBuf { buf: &mut buf[..], len: n };
        let verdict = engine.process(&mut frame, RxMeta { iface: inp.iface }, now);
        summary.frames += 1;
        match verdict {
            Verdict::Forward(i) => *summary.forwarded.entry(i.0).or_default() += 1,
            Verdict::ToHost => summary.to_host += 1,
            Verdict::Drop(r) => *summary.drops.entry(r.name().to_string()).or_default() += 1,
        }
        let bytes = match verdict {
            Verdict::Forward(_) => frame.bytes().to_vec(),
            _ => inp.frame,
        };
        out.push(Outcome { ts: inp.ts, ingress: inp.iface, verdict, frame: bytes });
    }
    summary.flows_created = engine.counters().traffic.flows_created.get();
    summary.flows_live = engine.shared().flows.len();
    summary.icmp_generated = engine.counters().traffic.icmp_generated.get();
    (out, summary)
}

/// Writes the frames that left interface `iface` as an Ethernet pcap.
pub fn write_egress(outcomes: &[Outcome], iface: IfaceId, w: impl Write) -> Result<usize, ReplayError> {
    let header = PcapHeader { datalink: DataLink::ETHERNET, ..PcapHeader::default() };
    let mut wr = PcapWriter::with_header(w, header).map_err(|e| ReplayError::Write(e.to_string()))?;
    let mut n = 0;
    for o in outcomes.iter().filter(|o| o.verdict == Verdict::Forward(iface)) {
        let len = u32::try_from(o.frame.len()).unwrap_or(u32::MAX);
        wr.write_packet(&PcapPacket::new(o.ts, len, &o.frame)).map_err(|e| ReplayError::Write(e.to_string()))?;
        n += 1;
    }
    Ok(n)
}

/// Writes an Ethernet pcap of arbitrary frames (tests and fixture generation).
pub fn write_frames(frames: &[(Duration, Vec<u8>)], w: impl Write) -> Result<(), ReplayError> {
    let header = PcapHeader { datalink: DataLink::ETHERNET, ..PcapHeader::default() };
    let mut wr = PcapWriter::with_header(w, header).map_err(|e| ReplayError::Write(e.to_string()))?;
    for (ts, f) in frames {
        let len = u32::try_from(f.len()).unwrap_or(u32::MAX);
        wr.write_packet(&PcapPacket::new(*ts, len, f)).map_err(|e| ReplayError::Write(e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_a_clear_error() {
        let e = read_capture(&b"definitely not a capture"[..], "x.pcap").expect_err("refused");
        assert!(e.to_string().starts_with("x.pcap: not a readable pcap"), "{e}");
        let e = read_capture(&b""[..], "empty.pcap").expect_err("refused");
        assert!(e.to_string().contains("empty.pcap"), "{e}");
    }

    #[test]
    fn pcap_round_trip_and_raw_ip() {
        let frames = vec![(Duration::from_millis(5), vec![0xaa; 60])];
        let mut buf = Vec::new();
        write_frames(&frames, &mut buf).expect("write");
        let back = read_capture(&buf[..], "t.pcap").expect("read");
        assert_eq!(back, vec![Record { ts: Duration::from_millis(5), frame: vec![0xaa; 60] }]);
        let raw = to_ethernet(DataLink::RAW, &[0x45, 0, 0, 20], "t").expect("ok").expect("frame");
        assert_eq!(&raw[12..14], &ETHERTYPE_IPV4.to_be_bytes());
        assert!(to_ethernet(DataLink::USB_LINUX, &[1], "t").is_err());
    }
}
