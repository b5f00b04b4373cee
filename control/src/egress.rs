//! Which interfaces the XDP fast path may send frames out of.
//!
//! An XDP redirect hands a frame to the egress driver's `ndo_xdp_xmit`. A driver without
//! it, or a veth whose *peer* runs neither an XDP program nor GRO (the default of every
//! container, namespace and most VM set-ups), drops the frame there, and the XDP program is
//! never told: a fast path that redirected into such a device would black-hole every flow
//! after its first packets. The kernel says which devices can take redirected frames: the
//! `NETDEV_XDP_ACT_NDO_XMIT` bit of the device's `xdp_features` (generic netlink family
//! `netdev`, Linux 6.3 and later), which for a veth follows its peer's settings (measured
//! here: a veth shows the bit exactly while its peer has GRO on or an XDP program).
//!
//! [`EgressGuard`] asks the kernel for that bit at start-up and every 200 ms after, and
//! marks each interface in the fast path's `EGRESS_OK` arrays only while the bit is set. The
//! XDP program checks the mark before it rewrites a packet and leaves packets towards an
//! unmarked egress to the AF_XDP workers (counted as `egress_unproven`), whose transmit path
//! works for every device. A program attached in generic (SKB) mode redirects through the
//! normal transmit path, which every device takes: its array marks every interface.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, PoisonError};

use aya::maps::{Array, MapData};
use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, NetlinkHeader, NetlinkMessage, NetlinkPayload, Nla, NlaBuffer, NlasIterator,
    Parseable, ParseableParametrized, NLM_F_REQUEST,
};
use netlink_packet_generic::ctrl::nlas::{GenlCtrlAttrs, McastGrpAttrs};
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};
use netlink_sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr};
use xgw_dataplane::counters::SharedCounter;

/// `NETDEV_CMD_DEV_GET` of the `netdev` generic netlink family.
const NETDEV_CMD_DEV_GET: u8 = 1;
/// `NETDEV_A_DEV_IFINDEX`.
const NETDEV_A_DEV_IFINDEX: u16 = 1;
/// `NETDEV_A_DEV_XDP_FEATURES`.
const NETDEV_A_DEV_XDP_FEATURES: u16 = 3;
/// `NETDEV_XDP_ACT_NDO_XMIT`: the device takes frames redirected to it by XDP.
pub const XDP_ACT_NDO_XMIT: u64 = 1 << 2;

/// A message of the `netdev` family: a command and its attributes.
#[derive(Debug, Clone)]
struct Netdev {
    cmd: u8,
    nlas: Vec<DefaultNla>,
}

impl GenlFamily for Netdev {
    fn family_name() -> &'static str {
        "netdev"
    }
    fn command(&self) -> u8 {
        self.cmd
    }
    fn version(&self) -> u8 {
        1
    }
}

impl Emitable for Netdev {
    fn buffer_len(&self) -> usize {
        self.nlas.as_slice().buffer_len()
    }
    fn emit(&self, buffer: &mut [u8]) {
        self.nlas.as_slice().emit(buffer)
    }
}

impl ParseableParametrized<[u8], GenlHeader> for Netdev {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        let nlas = NlasIterator::new(buf)
            .map(|n| n.and_then(|n: NlaBuffer<&[u8]>| DefaultNla::parse(&n)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Netdev { cmd: header.cmd, nlas })
    }
}

/// A generic netlink socket that asks the kernel for devices' XDP features.
#[derive(Debug)]
pub struct XdpFeatures {
    sock: Socket,
    family: u16,
    /// The family's `mgmt` multicast group: device added, removed or changed.
    mgmt_group: Option<u32>,
    seq: u32,
    buf: Vec<u8>,
}

fn request<F>(sock: &Socket, buf: &mut Vec<u8>, seq: u32, family: u16, payload: F) -> std::io::Result<Vec<F>>
where
    F: GenlFamily + Emitable + ParseableParametrized<[u8], GenlHeader> + std::fmt::Debug,
{
    let mut g = GenlMessage::from_payload(payload);
    if family != 0 {
        g.set_resolved_family_id(family);
    }
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST;
    header.sequence_number = seq;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(g));
    msg.finalize();
    let mut out = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut out);
    sock.send(&out, 0)?;
    buf.clear();
    buf.resize(16384, 0);
    let n = sock.recv(&mut &mut buf[..], 0)?;
    let mut answers = Vec::new();
    let mut off = 0;
    while off < n {
        let m = NetlinkMessage::<GenlMessage<F>>::deserialize(&buf[off..n])
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
        let len = m.header.length as usize;
        match m.payload {
            NetlinkPayload::InnerMessage(g) => answers.push(g.payload),
            NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
            _ => {}
        }
        if len == 0 {
            break;
        }
        off += (len + 3) & !3;
    }
    Ok(answers)
}

impl XdpFeatures {
    /// Opens the socket and resolves the `netdev` family; `Ok(None)` when the kernel has no
    /// such family (before Linux 6.3: it does not say which devices take redirects).
    pub fn open() -> std::io::Result<Option<XdpFeatures>> {
        let mut sock = Socket::new(NETLINK_GENERIC)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        let mut buf = Vec::new();
        let ctrl = GenlCtrl { cmd: GenlCtrlCmd::GetFamily, nlas: vec![GenlCtrlAttrs::FamilyName("netdev".into())] };
        let answers = match request(&sock, &mut buf, 1, 0, ctrl) {
            Ok(a) => a,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(e),
        };
        let family = answers.iter().flat_map(|a| a.nlas.iter()).find_map(|n| {
            if let GenlCtrlAttrs::FamilyId(id) = n {
                Some(*id)
            } else {
                None
            }
        });
        let mgmt_group = answers.iter().flat_map(|a| a.nlas.iter()).find_map(|n| match n {
            GenlCtrlAttrs::McastGroups(groups) => groups.iter().find_map(|g| {
                let named = g.iter().any(|a| matches!(a, McastGrpAttrs::Name(n) if n == "mgmt"));
                g.iter().find_map(|a| match a {
                    McastGrpAttrs::Id(id) if named => Some(*id),
                    _ => None,
                })
            }),
            _ => None,
        });
        Ok(family.map(|family| XdpFeatures { sock, family, mgmt_group, seq: 2, buf }))
    }

    /// The `xdp_features` bits of device `ifindex`.
    pub fn of(&mut self, ifindex: u32) -> std::io::Result<u64> {
        self.seq = self.seq.wrapping_add(1);
        let q = Netdev {
            cmd: NETDEV_CMD_DEV_GET,
            nlas: vec![DefaultNla::new(NETDEV_A_DEV_IFINDEX, ifindex.to_ne_bytes().to_vec())],
        };
        let answers = request(&self.sock, &mut self.buf, self.seq, self.family, q)?;
        for a in &answers {
            for n in &a.nlas {
                if n.kind() == NETDEV_A_DEV_XDP_FEATURES && n.value_len() == 8 {
                    let mut v = [0u8; 8];
                    n.emit_value(&mut v);
                    return Ok(u64::from_ne_bytes(v));
                }
            }
        }
        Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "no xdp_features in the kernel's answer"))
    }
}

/// What is known of one egress interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum EgressState {
    /// Not checked yet.
    Unknown = 0,
    /// The kernel says it takes XDP redirects: in the fast path's devmaps.
    Proven = 1,
    /// It does not (or the kernel cannot say): out of the devmaps; its flows go through
    /// the AF_XDP workers.
    Refused = 2,
}

impl EgressState {
    fn from_u8(v: u8) -> EgressState {
        match v {
            1 => EgressState::Proven,
            2 => EgressState::Refused,
            _ => EgressState::Unknown,
        }
    }

    /// Name in listings and metrics.
    pub fn name(self) -> &'static str {
        match self {
            EgressState::Unknown => "unknown",
            EgressState::Proven => "redirect_ok",
            EgressState::Refused => "redirect_refused",
        }
    }
}

/// One interface of the engine configuration, as an egress of the fast path.
#[derive(Debug)]
pub struct Egress {
    /// Device name.
    pub device: String,
    ifindex: u32,
    state: AtomicU8,
    /// Times the kernel's answer changed from taking redirects to not taking them.
    pub refusals: SharedCounter,
}

impl Egress {
    /// What is known now.
    pub fn state(&self) -> EgressState {
        EgressState::from_u8(self.state.load(Ordering::Relaxed))
    }
}

/// Keeps the fast path's devmaps to the interfaces that take XDP redirects.
pub struct EgressGuard {
    egress: Vec<Egress>,
    /// The `EGRESS_OK` array of every program instance attached in native (driver) mode.
    native_ok: Vec<Mutex<Array<MapData, u32>>>,
    features: Mutex<Option<XdpFeatures>>,
    /// Checks that failed (the kernel did not answer).
    pub errors: SharedCounter,
}

impl core::fmt::Debug for EgressGuard {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EgressGuard").field("egress", &self.egress).finish()
    }
}

impl EgressGuard {
    /// A guard over `devices` (`(name, ifindex)` by the engine's interface number) and the
    /// `EGRESS_OK` arrays of the program instances attached in native mode.
    pub fn new(devices: Vec<(String, u32)>, native_ok: Vec<Array<MapData, u32>>) -> std::io::Result<EgressGuard> {
        let features = XdpFeatures::open()?;
        if features.is_none() {
            tracing::warn!(
                "this kernel does not say which devices take XDP redirects (no `netdev` netlink family, \
                 Linux < 6.3): the fast path sends nothing out; every packet goes through the AF_XDP workers"
            );
        }
        Ok(EgressGuard {
            egress: devices
                .into_iter()
                .map(|(device, ifindex)| Egress {
                    device,
                    ifindex,
                    state: AtomicU8::new(0),
                    refusals: SharedCounter::default(),
                })
                .collect(),
            native_ok: native_ok.into_iter().map(Mutex::new).collect(),
            features: Mutex::new(features),
            errors: SharedCounter::default(),
        })
    }

    /// The interfaces and what is known of them.
    pub fn egress(&self) -> &[Egress] {
        &self.egress
    }

    /// Follows the `netdev` family's `mgmt` notifications (a device's XDP features changed:
    /// a veth peer turned GRO on or off) and checks again at once, until `stop`; returns at
    /// once when the kernel has no such group. The control loop's 200 ms check stays as the
    /// fallback.
    pub fn watch(self: std::sync::Arc<Self>, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
        let group = self.features.lock().unwrap_or_else(PoisonError::into_inner).as_ref().and_then(|f| f.mgmt_group);
        let Some(group) = group else { return };
        let sock = Socket::new(NETLINK_GENERIC).and_then(|mut s| {
            s.bind_auto()?;
            s.add_membership(group)?;
            s.set_non_blocking(true)?;
            Ok(s)
        });
        let sock = match sock {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "netdev notifications not available: egresses are checked every 200 ms");
                return;
            }
        };
        let mut buf = vec![0u8; 8192];
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let mut fds = [rustix::event::PollFd::new(&sock, rustix::event::PollFlags::IN)];
            let timeout = rustix::time::Timespec { tv_sec: 0, tv_nsec: 200_000_000 };
            let _ = rustix::event::poll(&mut fds, Some(&timeout));
            let mut any = false;
            while sock.recv(&mut &mut buf[..], 0).is_ok() {
                any = true;
            }
            if any {
                self.check();
            }
        }
    }

    /// Asks the kernel about every interface and updates the devmaps where the answer
    /// changed (at start-up, on every `mgmt` notification, and every 200 ms).
    pub fn check(&self) {
        let mut features = self.features.lock().unwrap_or_else(PoisonError::into_inner);
        for (i, e) in self.egress.iter().enumerate() {
            let ok = match features.as_mut().map(|f| f.of(e.ifindex)) {
                Some(Ok(bits)) => bits & XDP_ACT_NDO_XMIT != 0,
                Some(Err(err)) => {
                    self.errors.inc();
                    tracing::debug!(device = %e.device, error = %err, "xdp_features not read");
                    false
                }
                None => false,
            };
            let new = if ok { EgressState::Proven } else { EgressState::Refused };
            let old = EgressState::from_u8(e.state.swap(new as u8, Ordering::Relaxed));
            if old == new {
                continue;
            }
            for m in &self.native_ok {
                let mut m = m.lock().unwrap_or_else(PoisonError::into_inner);
                if let Err(err) = m.set(i as u32, u32::from(ok), 0) {
                    tracing::warn!(device = %e.device, error = %err, "fast path devmap not updated");
                }
            }
            match (old, new) {
                (_, EgressState::Proven) => {
                    tracing::info!(device = %e.device, "takes XDP redirects: the fast path sends flows out of it")
                }
                (_, _) => {
                    e.refusals.inc();
                    tracing::warn!(
                        device = %e.device,
                        "does not take XDP redirects (a veth whose peer has neither GRO nor an XDP program, \
                         or a driver without ndo_xdp_xmit): flows leaving through it stay with the AF_XDP workers"
                    );
                }
            }
        }
    }
}
