//! NAT pool addresses on the outside subnet, held by the kernel. The upstream router reaches
//! an on-link pool address by ARP, and the kernel answers ARP only for addresses it owns, so
//! xgwd adds each such address to the outside device as a /32 while it runs (the XDP program
//! still takes every IPv4 packet to them: they are transit, the engine's). On exit it removes
//! the ones it added, and only those: it marks them (`IFA_PROTO`), so that after a crash the
//! next start knows the ones left behind as its own; it announces the ones it holds
//! (gratuitous ARP, [`super::garp`]). A pool routed to the gateway (off the
//! subnet, as in the scale-out lab) needs nothing; an HA pair's on-link pool belongs in
//! keepalived's virtual addresses, so that only the master holds it.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{bail, Context, Result};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressProtocol, AddressScope};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use xgw_dataplane::EngineConfig;

/// The mark (`IFA_PROTO`) on the addresses xgwd adds: not one of the kernel's (0-3).
const XGW_PROTO: u8 = 0x58;

/// The pool addresses on the outside subnet but the outside address itself (the kernel's
/// already): those nobody answers ARP for unless the kernel holds them.
pub fn on_link(cfg: &EngineConfig) -> Vec<Ipv4Addr> {
    let Some((_, o)) = cfg.outside() else { return Vec::new() };
    cfg.nat.pool.iter().copied().filter(|a| o.contains(u32::from(*a)) && *a != o.addr).collect()
}

/// The pool addresses xgwd added to the outside device; removed when dropped.
pub(super) struct PoolAddrs {
    device: String,
    ifindex: u32,
    added: Vec<Ipv4Addr>,
}

impl PoolAddrs {
    /// Adds `addrs` to `device` as /32s; one the device has already is left as it is (and is
    /// not removed on exit).
    pub(super) fn hold(device: &str, addrs: &[Ipv4Addr]) -> Result<PoolAddrs> {
        let mut held =
            PoolAddrs { device: device.to_string(), ifindex: super::xdp::ifindex(device)?, added: Vec::new() };
        for &a in addrs {
            match request(held.ifindex, a, true) {
                Ok(()) => held.added.push(a),
                // the administrator's (left as it is), or ours from a run that crashed
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    if marked(held.ifindex, a)? {
                        held.added.push(a);
                    }
                }
                Err(e) => bail!("adding pool address {a}/32 to `{device}`: {e}"),
            }
        }
        if !addrs.is_empty() {
            tracing::info!(%device, added = held.added.len(), of = addrs.len(), "NAT pool addresses held on the outside device (the kernel answers ARP for them)");
        }
        // a router may still have them at another box's MAC
        super::garp::announce(device, held.ifindex, &held.added);
        Ok(held)
    }
}

impl Drop for PoolAddrs {
    fn drop(&mut self) {
        for &a in &self.added {
            if let Err(e) = request(self.ifindex, a, false) {
                tracing::warn!(device = %self.device, address = %a, "removing a pool address: {e}");
            }
        }
    }
}

/// Adds (`add`) or removes `a`/32 on interface `ifindex` and waits for the kernel's answer.
fn request(ifindex: u32, a: Ipv4Addr, add: bool) -> std::io::Result<()> {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.prefix_len = 32;
    msg.header.scope = AddressScope::Universe;
    msg.header.index = ifindex;
    msg.attributes.push(AddressAttribute::Local(IpAddr::V4(a)));
    msg.attributes.push(AddressAttribute::Address(IpAddr::V4(a)));
    if add {
        msg.attributes.push(AddressAttribute::Protocol(AddressProtocol::Other(XGW_PROTO)));
    }
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK | if add { NLM_F_CREATE | NLM_F_EXCL } else { 0 };
    header.sequence_number = 1;
    let payload = if add { RouteNetlinkMessage::NewAddress(msg) } else { RouteNetlinkMessage::DelAddress(msg) };
    let sock = send(header, payload)?;
    let mut buf = vec![0u8; 8192];
    let n = sock.recv(&mut &mut buf[..], 0)?;
    // the acknowledgement: an error with a code is the kernel's refusal
    crate::netlink::each_message(&buf[..n], |_| {})?;
    Ok(())
}

/// A fresh rtnetlink socket with `payload` sent on it.
fn send(header: NetlinkHeader, payload: RouteNetlinkMessage) -> std::io::Result<Socket> {
    let mut m = NetlinkMessage::new(header, NetlinkPayload::from(payload));
    m.finalize();
    let mut out = vec![0u8; m.buffer_len()];
    m.serialize(&mut out);
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind_auto()?;
    sock.connect(&SocketAddr::new(0, 0))?;
    sock.send(&out, 0)?;
    Ok(sock)
}

/// True when interface `ifindex` holds `a` with xgwd's mark (left by a run that crashed).
fn marked(ifindex: u32, a: Ipv4Addr) -> std::io::Result<bool> {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = 1;
    let sock = send(header, RouteNetlinkMessage::GetAddress(msg))?;
    let mut buf = vec![0u8; 1 << 16];
    let mut found = false;
    loop {
        let n = sock.recv(&mut &mut buf[..], 0)?;
        let done = crate::netlink::each_message(&buf[..n], |m| {
            if let RouteNetlinkMessage::NewAddress(m) = m {
                let has = |x: AddressAttribute| m.attributes.contains(&x);
                found |= m.header.index == ifindex
                    && has(AddressAttribute::Local(IpAddr::V4(a)))
                    && has(AddressAttribute::Protocol(AddressProtocol::Other(XGW_PROTO)));
            }
        })?;
        if done || n == 0 {
            return Ok(found);
        }
    }
}

/// Holds the on-link pool addresses of `cfg` on the outside device, unless an HA pair owns
/// them (then keepalived must, as virtual addresses: a warning says so).
pub(super) fn hold_for(cfg: &EngineConfig, ha: bool) -> Result<Option<PoolAddrs>> {
    let addrs = on_link(cfg);
    let Some((_, o)) = cfg.outside() else { return Ok(None) };
    if addrs.is_empty() {
        return Ok(None);
    }
    if ha {
        tracing::warn!(
            device = %o.device,
            "the NAT pool has addresses on the outside subnet: in an HA pair list them in keepalived's virtual_ipaddress, or the upstream's replies to them are lost"
        );
        return Ok(None);
    }
    PoolAddrs::hold(&o.device, &addrs).context("holding the NAT pool's on-link addresses").map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_held_addresses_are_the_pools_on_the_outside_subnet_but_its_own() {
        let mut cfg = EngineConfig::example(); // outside 203.0.113.1/24
        assert!(on_link(&cfg).is_empty(), "no pool, nothing held");
        cfg.nat.pool = ["203.0.113.10", "198.51.100.7", "203.0.113.1", "203.0.113.11"]
            .iter()
            .map(|a| a.parse().expect("address"))
            .collect();
        let want: Vec<Ipv4Addr> = ["203.0.113.10", "203.0.113.11"].iter().map(|a| a.parse().expect("a")).collect();
        assert_eq!(on_link(&cfg), want);
    }
}
