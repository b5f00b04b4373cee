//! The netlink thread: keeps [`KernelNeighbours`] current from the kernel's rtnetlink
//! messages and asks the kernel to resolve the next hops workers wait for.
//!
//! It subscribes to link, IPv4 address, IPv4 route and neighbour notifications first, then
//! dumps the four tables on a second socket, so no change falls between dump and
//! subscription; after that it only reads notifications (no polling). A lost notification
//! (the socket's buffer overran: `ENOBUFS`) makes it dump everything again. A next hop a
//! worker asks for (through an eventfd, which wakes the thread at once) is handed to the
//! kernel as `RTM_NEWNEIGH` with `NTF_USE` — what the kernel's own forwarding does — which
//! starts ARP and makes the kernel notify the answer. Each change is published as new
//! [`crate::neigh::Tables`] together with the outside addresses a rules file's `address
//! auto` follows.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::AddressMessage;
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourHeader, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::RouteMessage;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::neigh::{KernelNeighbours, KernelState};

/// rtnetlink multicast groups (`RTNLGRP_*`).
const GROUPS: [u32; 4] = [1 /* LINK */, 3 /* NEIGH */, 5 /* IPV4_IFADDR */, 7 /* IPV4_ROUTE */];
/// A next hop is handed to the kernel at most this often (it probes on its own meanwhile).
const ASK_AGAIN: Duration = Duration::from_millis(500);

/// Called with the kernel's state after every change (the daemon follows addresses here).
pub type OnChange = Box<dyn FnMut(&KernelState) + Send>;

/// The thread's sockets and state.
struct Netlink {
    events: Socket,
    requests: Socket,
    wake: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
    state: KernelState,
    devices: Vec<String>,
    asked: HashMap<(u32, u32), Instant>,
}

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}

/// Calls `f` with every rtnetlink message in `buf`; true when a dump's `NLMSG_DONE` was seen.
pub(crate) fn each_message(buf: &[u8], mut f: impl FnMut(RouteNetlinkMessage)) -> std::io::Result<bool> {
    let mut off = 0;
    while off + 16 <= buf.len() {
        let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[off..]).map_err(io_err)?;
        let len = m.header.length as usize;
        match m.payload {
            NetlinkPayload::InnerMessage(msg) => f(msg),
            NetlinkPayload::Done(_) => return Ok(true),
            NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
            _ => {}
        }
        if len == 0 {
            break;
        }
        off += (len + 3) & !3;
    }
    Ok(false)
}

impl Netlink {
    fn open(devices: Vec<String>, wake: OwnedFd) -> Result<Netlink> {
        let mut events = Socket::new(NETLINK_ROUTE).context("netlink socket")?;
        events.bind_auto()?;
        events.set_rx_buf_sz(4 << 20)?;
        for g in GROUPS {
            events.add_membership(g).context("joining an rtnetlink group")?;
        }
        events.set_non_blocking(true)?;
        let mut requests = Socket::new(NETLINK_ROUTE)?;
        requests.bind_auto()?;
        requests.connect(&SocketAddr::new(0, 0))?;
        Ok(Netlink {
            events,
            requests,
            wake,
            seq: 0,
            buf: vec![0u8; 1 << 16],
            state: KernelState::default(),
            devices,
            asked: HashMap::new(),
        })
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> std::io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut m = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        m.finalize();
        let mut out = vec![0u8; m.buffer_len()];
        m.serialize(&mut out);
        self.requests.send(&out, 0)?;
        Ok(())
    }

    /// Reads the whole of the kernel's four tables afresh.
    fn dump(&mut self) -> std::io::Result<()> {
        self.state.clear();
        let mut link = LinkMessage::default();
        link.header.interface_family = AddressFamily::Unspec;
        let mut addr = AddressMessage::default();
        addr.header.family = AddressFamily::Inet;
        let mut route = RouteMessage::default();
        route.header.address_family = AddressFamily::Inet;
        let mut neigh = NeighbourMessage::default();
        neigh.header.family = AddressFamily::Inet;
        for q in [
            RouteNetlinkMessage::GetLink(link),
            RouteNetlinkMessage::GetAddress(addr),
            RouteNetlinkMessage::GetRoute(route),
            RouteNetlinkMessage::GetNeighbour(neigh),
        ] {
            self.send(q, NLM_F_DUMP)?;
            loop {
                let n = self.requests.recv(&mut &mut self.buf[..], 0)?;
                let state = &mut self.state;
                if each_message(&self.buf[..n], |m| {
                    state.apply(&m);
                })? {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Applies every queued notification; true when one changed the tables. An overrun
    /// socket (notifications lost) means a full dump.
    fn read_events(&mut self) -> std::io::Result<bool> {
        let mut changed = false;
        loop {
            match self.events.recv(&mut &mut self.buf[..], 0) {
                Ok(n) => {
                    let state = &mut self.state;
                    each_message(&self.buf[..n], |m| changed |= state.apply(&m))?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(changed),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    tracing::warn!("rtnetlink notifications were lost: reading the kernel's tables again");
                    self.dump()?;
                    changed = true;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Hands the next hops workers wait for to the kernel's neighbour resolution.
    fn ask(&mut self, neigh: &KernelNeighbours) {
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&self.wake, &mut buf);
        let now = Instant::now();
        let wanted: Vec<(u32, u32)> = neigh.take_requests().collect();
        for (ifindex, nh) in wanted {
            if self.asked.get(&(ifindex, nh)).is_some_and(|t| now.duration_since(*t) < ASK_AGAIN) {
                continue;
            }
            self.asked.insert((ifindex, nh), now);
            let mut m = NeighbourMessage::default();
            m.header = NeighbourHeader {
                family: AddressFamily::Inet,
                ifindex,
                state: NeighbourState::Incomplete,
                flags: NeighbourFlags::Use,
                ..NeighbourHeader::default()
            };
            m.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(nh.into())));
            if let Err(e) = self.send(RouteNetlinkMessage::NewNeighbour(m), NLM_F_CREATE | NLM_F_REPLACE) {
                tracing::debug!(error = %e, next_hop = %std::net::Ipv4Addr::from(nh), "neighbour resolution request");
            }
        }
        if self.asked.len() > 4096 {
            self.asked.retain(|_, t| now.duration_since(*t) < ASK_AGAIN);
        }
    }

    fn publish(&self, neigh: &KernelNeighbours, on_change: &mut OnChange) {
        neigh.publish(self.state.tables(&self.devices));
        on_change(&self.state);
    }

    fn run(mut self, neigh: &KernelNeighbours, stop: &AtomicBool, mut on_change: OnChange) {
        while !stop.load(Ordering::Relaxed) {
            let wake_ready = {
                let mut fds = [
                    rustix::event::PollFd::new(&self.events, rustix::event::PollFlags::IN),
                    rustix::event::PollFd::new(&self.wake, rustix::event::PollFlags::IN),
                ];
                let timeout = rustix::time::Timespec { tv_sec: 0, tv_nsec: 200_000_000 };
                let _ = rustix::event::poll(&mut fds, Some(&timeout));
                !fds[1].revents().is_empty()
            };
            if wake_ready {
                self.ask(neigh);
            }
            // the kernel's answers to requests (errors for vanished devices) are not needed
            while self.requests.recv(&mut &mut self.buf[..], libc::MSG_DONTWAIT).is_ok() {}
            match self.read_events() {
                Ok(true) => self.publish(neigh, &mut on_change),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "rtnetlink: reading the kernel's tables again");
                    std::thread::sleep(Duration::from_millis(100));
                    if self.dump().is_ok() {
                        self.publish(neigh, &mut on_change);
                    }
                }
            }
        }
    }
}

/// Reads the kernel's tables for the engine's interfaces `devices` and starts the thread
/// that follows them. `on_change` sees the state after the first dump and every change.
pub fn start(
    devices: Vec<String>,
    stop: Arc<AtomicBool>,
    mut on_change: OnChange,
) -> Result<(Arc<KernelNeighbours>, std::thread::JoinHandle<()>)> {
    let wake = rustix::event::eventfd(0, rustix::event::EventfdFlags::NONBLOCK | rustix::event::EventfdFlags::CLOEXEC)
        .context("eventfd")?;
    let neigh = Arc::new(KernelNeighbours::new(Some(wake.try_clone()?)));
    let mut nl = Netlink::open(devices, wake)?;
    nl.dump().context("dumping the kernel's links, addresses, routes and neighbours")?;
    // notifications that arrived during the dump are applied on top of it
    let _ = nl.read_events();
    nl.publish(&neigh, &mut on_change);
    let n = Arc::clone(&neigh);
    let handle = std::thread::Builder::new().name("xgw-netlink".into()).spawn(move || nl.run(&n, &stop, on_change))?;
    Ok((neigh, handle))
}
