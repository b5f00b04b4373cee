//! The kernel's links, addresses, IPv4 routes and neighbours as the workers need them.
//!
//! [`KernelState`] is the netlink thread's copy of the kernel's tables, changed one
//! rtnetlink message at a time (a dump at start, then every notification, read by
//! the netlink thread). From it [`Tables`] are built: per interface of the engine, its MAC
//! address, a longest-prefix-match trie of the main table's routes through it (a multipath
//! route keeps the next hops on that interface) and its neighbours. Workers read the
//! newest [`Tables`] through [`KernelNeighbours`] without a lock; a next hop without a MAC
//! address is asked for through the netlink thread, which asks the kernel to resolve it
//! (`RTM_NEWNEIGH` with `NTF_USE`), and the answer arrives as a notification.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use crossbeam::queue::ArrayQueue;
use ipnet::Ipv4Net;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use prefix_trie::PrefixMap;
use xgw_dataplane::neighbour::{Macs, Neighbours, NextHop};
use xgw_dataplane::IfaceId;

/// A route of the main table: where its packets go.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// Next hops (interface index, gateway; 0 = the destination is on the link).
    Via(Vec<(u32, u32)>),
    /// Blackhole, unreachable or prohibit.
    Refuse,
}

/// One neighbour entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Neigh {
    mac: Option<[u8; 6]>,
    state: NeighbourState,
}

impl Neigh {
    /// A MAC address frames may be sent to (the kernel's `NUD_VALID`).
    fn usable(&self) -> Option<[u8; 6]> {
        match self.state {
            NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
            | NeighbourState::Noarp => self.mac,
            _ => None,
        }
    }
}

/// The netlink thread's copy of the kernel's tables.
#[derive(Debug, Default)]
pub struct KernelState {
    /// ifindex → (name, MAC)
    links: HashMap<u32, (String, [u8; 6])>,
    /// (ifindex, address, prefix length)
    addrs: Vec<(u32, Ipv4Addr, u8)>,
    /// (destination, prefix length, tos, metric) → target, main table only
    routes: HashMap<(u32, u8, u8, u32), Target>,
    /// (ifindex, address) → entry
    neighs: HashMap<(u32, u32), Neigh>,
}

fn v4(a: &IpAddr) -> Option<Ipv4Addr> {
    match a {
        IpAddr::V4(a) => Some(*a),
        IpAddr::V6(_) => None,
    }
}

fn route_v4(a: &RouteAddress) -> Option<u32> {
    match a {
        RouteAddress::Inet(a) => Some(u32::from(*a)),
        _ => None,
    }
}

impl KernelState {
    /// Forgets everything (before a new dump).
    pub fn clear(&mut self) {
        *self = KernelState::default();
    }

    /// Applies one message; true when it changed something.
    pub fn apply(&mut self, msg: &RouteNetlinkMessage) -> bool {
        match msg {
            RouteNetlinkMessage::NewLink(l) => self.link(l, true),
            RouteNetlinkMessage::DelLink(l) => self.link(l, false),
            RouteNetlinkMessage::NewAddress(a) => self.address(a, true),
            RouteNetlinkMessage::DelAddress(a) => self.address(a, false),
            RouteNetlinkMessage::NewRoute(r) => self.route(r, true),
            RouteNetlinkMessage::DelRoute(r) => self.route(r, false),
            RouteNetlinkMessage::NewNeighbour(n) => self.neighbour(n, true),
            RouteNetlinkMessage::DelNeighbour(n) => self.neighbour(n, false),
            _ => false,
        }
    }

    fn link(&mut self, l: &LinkMessage, new: bool) -> bool {
        let index = l.header.index;
        if !new {
            self.neighs.retain(|(i, _), _| *i != index);
            self.addrs.retain(|(i, _, _)| *i != index);
            return self.links.remove(&index).is_some();
        }
        let mut entry = self.links.get(&index).cloned().unwrap_or_default();
        for a in &l.attributes {
            match a {
                LinkAttribute::IfName(n) => entry.0.clone_from(n),
                LinkAttribute::Address(m) if m.len() == 6 => entry.1.copy_from_slice(m),
                _ => {}
            }
        }
        self.links.insert(index, entry.clone()) != Some(entry)
    }

    fn address(&mut self, a: &AddressMessage, new: bool) -> bool {
        if a.header.family != AddressFamily::Inet {
            return false;
        }
        let local = a.attributes.iter().find_map(|x| match x {
            AddressAttribute::Local(l) => v4(l),
            _ => None,
        });
        let addr = local.or_else(|| {
            a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Address(l) => v4(l),
                _ => None,
            })
        });
        let Some(addr) = addr else { return false };
        let e = (a.header.index, addr, a.header.prefix_len);
        let had = self.addrs.iter().position(|x| *x == e);
        match (new, had) {
            (true, None) => self.addrs.push(e),
            (false, Some(i)) => {
                self.addrs.remove(i);
            }
            _ => return false,
        }
        true
    }

    fn route(&mut self, r: &RouteMessage, new: bool) -> bool {
        if r.header.address_family != AddressFamily::Inet {
            return false;
        }
        let table = r
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::Table(t) => Some(*t),
                _ => None,
            })
            .unwrap_or(u32::from(r.header.table));
        if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
            return false;
        }
        let (mut dst, mut metric, mut oif, mut gw, mut multi) = (0, 0, 0, 0, Vec::new());
        for a in &r.attributes {
            match a {
                RouteAttribute::Destination(d) => dst = route_v4(d).unwrap_or(0),
                RouteAttribute::Priority(p) => metric = *p,
                RouteAttribute::Oif(o) => oif = *o,
                RouteAttribute::Gateway(g) => gw = route_v4(g).unwrap_or(0),
                RouteAttribute::MultiPath(hops) => {
                    for h in hops {
                        let g = h
                            .attributes
                            .iter()
                            .find_map(|a| match a {
                                RouteAttribute::Gateway(g) => route_v4(g),
                                _ => None,
                            })
                            .unwrap_or(0);
                        multi.push((h.interface_index, g));
                    }
                }
                _ => {}
            }
        }
        let key = (dst, r.header.destination_prefix_length, r.header.tos, metric);
        if !new {
            return self.routes.remove(&key).is_some();
        }
        let target = match r.header.kind {
            RouteType::Unicast if !multi.is_empty() => Target::Via(multi),
            RouteType::Unicast => Target::Via(vec![(oif, gw)]),
            RouteType::BlackHole | RouteType::Unreachable | RouteType::Prohibit => Target::Refuse,
            _ => return false,
        };
        self.routes.insert(key, target.clone()) != Some(target)
    }

    fn neighbour(&mut self, n: &NeighbourMessage, new: bool) -> bool {
        if n.header.family != AddressFamily::Inet {
            return false;
        }
        let Some(addr) = n.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => Some(u32::from(*a)),
            _ => None,
        }) else {
            return false;
        };
        let key = (n.header.ifindex, addr);
        if !new {
            return self.neighs.remove(&key).is_some();
        }
        let mac = n.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::LinkLayerAddress(m) if m.len() == 6 => {
                let mut o = [0u8; 6];
                o.copy_from_slice(m);
                Some(o)
            }
            _ => None,
        });
        let old = self.neighs.get(&key).copied();
        // a notification without an address (INCOMPLETE, FAILED) keeps no stale one
        let e = Neigh { mac, state: n.header.state };
        self.neighs.insert(key, e);
        old != Some(e)
    }

    /// The interface index of `device`, if the kernel has it.
    pub fn ifindex(&self, device: &str) -> Option<u32> {
        self.links.iter().find(|(_, (n, _))| n == device).map(|(i, _)| *i)
    }

    /// The IPv4 addresses of `device` (address, prefix length), in the kernel's order.
    pub fn addresses(&self, device: &str) -> Vec<(Ipv4Addr, u8)> {
        let Some(i) = self.ifindex(device) else { return Vec::new() };
        self.addrs.iter().filter(|(x, _, _)| *x == i).map(|(_, a, l)| (*a, *l)).collect()
    }

    /// The tables of the engine's interfaces `devices` (in the engine's order).
    pub fn tables(&self, devices: &[String]) -> Tables {
        let ifaces = devices
            .iter()
            .map(|d| {
                let Some(index) = self.ifindex(d) else { return IfaceTable::default() };
                let mut best: HashMap<(u32, u8), (u32, Target)> = HashMap::new();
                for ((dst, len, _tos, metric), t) in &self.routes {
                    let t = match t {
                        Target::Via(h) => {
                            let here: Vec<_> = h.iter().copied().filter(|(o, _)| *o == index).collect();
                            if here.is_empty() {
                                continue;
                            }
                            Target::Via(here)
                        }
                        Target::Refuse => Target::Refuse,
                    };
                    let e = best.entry((*dst, *len)).or_insert((*metric, t.clone()));
                    if *metric < e.0 {
                        *e = (*metric, t);
                    }
                }
                let mut routes = PrefixMap::new();
                for ((dst, len), (_, t)) in best {
                    if let Ok(net) = Ipv4Net::new(Ipv4Addr::from(dst), len) {
                        let hops = match t {
                            Target::Via(h) => Some(h.into_iter().map(|(_, g)| g).collect()),
                            Target::Refuse => None,
                        };
                        routes.insert(net.trunc(), hops);
                    }
                }
                let neighs = self
                    .neighs
                    .iter()
                    .filter(|((i, _), _)| *i == index)
                    .filter_map(|((_, a), n)| {
                        let mac = n.usable()?;
                        Some((
                            *a,
                            Entry { mac, stale: n.state == NeighbourState::Stale, asked: AtomicBool::new(false) },
                        ))
                    })
                    .collect();
                IfaceTable { ifindex: index, mac: self.links[&index].1, routes, neighs }
            })
            .collect();
        Tables { ifaces }
    }
}

/// A resolved neighbour as the workers see it.
#[derive(Debug)]
struct Entry {
    mac: [u8; 6],
    /// The kernel has not confirmed it lately: the first use asks it to (like its own
    /// forwarding does), so a neighbour that moved is found again.
    stale: bool,
    asked: AtomicBool,
}

#[derive(Debug, Default)]
struct IfaceTable {
    ifindex: u32,
    mac: [u8; 6],
    /// prefix → gateways (0 = on the link), or `None` for a refusing route
    routes: PrefixMap<Ipv4Net, Option<Vec<u32>>>,
    neighs: HashMap<u32, Entry>,
}

/// What the workers read: per engine interface, its routes and resolved neighbours.
#[derive(Debug, Default)]
pub struct Tables {
    ifaces: Vec<IfaceTable>,
}

impl Tables {
    /// The next hop towards `dst` through interface `iface` (`None`: a refusing route). A
    /// destination no route through the interface covers is taken to be on its link.
    fn next_hop(&self, iface: usize, dst: u32, hash: u32) -> Option<u32> {
        let t = self.ifaces.get(iface)?;
        let host = Ipv4Net::new(Ipv4Addr::from(dst), 32).ok()?;
        match t.routes.get_lpm(&host) {
            None => Some(dst),
            Some((_, None)) => None,
            Some((_, Some(gws))) if gws.is_empty() => Some(dst),
            Some((_, Some(gws))) => {
                let g = gws[hash as usize % gws.len()];
                Some(if g == 0 { dst } else { g })
            }
        }
    }
}

/// The workers' and the fast path's source of next hops, filled by the netlink thread.
#[derive(Debug)]
pub struct KernelNeighbours {
    tables: ArcSwap<Tables>,
    generation: AtomicU64,
    /// (interface index, next hop) the netlink thread should ask the kernel to resolve
    requests: ArrayQueue<(u32, u32)>,
    /// Requests that found the queue full (the kernel is asked again by a later frame).
    pub requests_lost: AtomicU64,
    wake: Option<std::os::fd::OwnedFd>,
}

impl KernelNeighbours {
    /// Empty tables; `wake` is written to when a request is queued (an eventfd the netlink
    /// thread polls).
    pub fn new(wake: Option<std::os::fd::OwnedFd>) -> KernelNeighbours {
        KernelNeighbours {
            tables: ArcSwap::from_pointee(Tables::default()),
            generation: AtomicU64::new(0),
            requests: ArrayQueue::new(1024),
            requests_lost: AtomicU64::new(0),
            wake,
        }
    }

    /// Makes `t` the tables the workers read.
    pub fn publish(&self, t: Tables) {
        self.tables.store(Arc::new(t));
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Takes the queued resolution requests.
    pub fn take_requests(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        std::iter::from_fn(|| self.requests.pop())
    }

    fn ask(&self, ifindex: u32, nh: u32) {
        if self.requests.push((ifindex, nh)).is_err() {
            self.requests_lost.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Some(fd) = &self.wake {
            let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
        }
    }
}

impl Neighbours for KernelNeighbours {
    fn lookup(&self, egress: IfaceId, dst: u32, hash: u32) -> NextHop {
        let t = self.tables.load();
        let i = usize::from(egress.0);
        let Some(nh) = t.next_hop(i, dst, hash) else { return NextHop::NoRoute };
        let Some(it) = t.ifaces.get(i) else { return NextHop::NoRoute };
        match it.neighs.get(&nh) {
            Some(e) => {
                if e.stale && !e.asked.swap(true, Ordering::Relaxed) {
                    self.ask(it.ifindex, nh);
                }
                NextHop::Resolved((it.mac, e.mac))
            }
            None => NextHop::Unresolved(nh),
        }
    }

    fn resolved(&self, egress: IfaceId, nh: u32) -> Option<Macs> {
        let t = self.tables.load();
        let it = t.ifaces.get(usize::from(egress.0))?;
        it.neighs.get(&nh).map(|e| (it.mac, e.mac))
    }

    fn request(&self, egress: IfaceId, nh: u32) {
        let ifindex = self.tables.load().ifaces.get(usize::from(egress.0)).map_or(0, |t| t.ifindex);
        if ifindex != 0 {
            self.ask(ifindex, nh);
        }
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

#[cfg(test)]
#[path = "neigh_tests.rs"]
mod tests;
