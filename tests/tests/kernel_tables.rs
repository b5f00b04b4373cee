//! The daemon's copy of the kernel's routes and neighbours, read through rtnetlink in a
//! namespace of its own: a dump at start, then notifications only, and resolution asked of
//! the kernel. The neighbour is a veth peer at the kernel's defaults.
#![allow(clippy::expect_used, reason = "test and benchmark tooling: a failed step ends the run with its message")]

use std::net::Ipv4Addr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use xgw_dataplane::neighbour::{Neighbours, NextHop};
use xgw_dataplane::IfaceId;
use xgw_tests::Lab;

fn ip(s: &str) -> u32 {
    u32::from(s.parse::<Ipv4Addr>().expect("address"))
}

fn mac_of(lab: &Lab, role: &str, dev: &str) -> [u8; 6] {
    let s = lab.exec_ok(role, &["cat", &format!("/sys/class/net/{dev}/address")]);
    let mut m = [0u8; 6];
    for (b, p) in m.iter_mut().zip(s.trim().split(':')) {
        *b = u8::from_str_radix(p, 16).expect("hex");
    }
    m
}

/// Waits up to `limit` for `f` to hold; how long it took.
fn within(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

#[test]
fn routes_and_neighbours_follow_the_kernel_and_resolution_is_asked_for() {
    let mut lab = Lab::new();
    lab.add_ns("gw");
    lab.add_ns("peer");
    lab.link("gw", "in0", "10.77.0.1/24", "peer", "p0", "10.77.0.2/24");
    let (own, theirs) = (mac_of(&lab, "gw", "in0"), mac_of(&lab, "peer", "p0"));
    let gw_ns = lab.ns("gw");
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    // the tables are read from inside the gateway's namespace: a thread that moved there
    // (threads it starts stay there too)
    let (neigh, thread) = std::thread::spawn(move || {
        let f = std::fs::File::open(format!("/run/netns/{gw_ns}")).expect("namespace");
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&f),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .expect("setns");
        xgw_control::netlink::start(vec!["in0".into()], stop2, Box::new(|_| {})).expect("netlink")
    })
    .join()
    .expect("thread");
    let i = IfaceId(0);

    // unknown neighbour: not resolved until asked; asked, it is resolved by the kernel
    assert_eq!(neigh.lookup(i, ip("10.77.0.2"), 0), NextHop::Unresolved(ip("10.77.0.2")));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(neigh.resolved(i, ip("10.77.0.2")), None, "nobody asked: nothing resolved it");
    let g = neigh.generation();
    neigh.request(i, ip("10.77.0.2"));
    let took = within(Duration::from_secs(2), || neigh.resolved(i, ip("10.77.0.2")).is_some())
        .expect("the kernel resolved the asked-for neighbour and told us");
    println!("neighbour resolved {took:?} after the request");
    assert!(neigh.generation() > g);
    assert_eq!(neigh.resolved(i, ip("10.77.0.2")), Some((own, theirs)));

    // a route added through the neighbour is followed (notification, no polling)
    lab.exec_ok("gw", &["ip", "route", "add", "192.0.2.0/24", "via", "10.77.0.2", "dev", "in0"]);
    let took =
        within(Duration::from_secs(1), || neigh.lookup(i, ip("192.0.2.9"), 0) == NextHop::Resolved((own, theirs)))
            .expect("route followed");
    println!("route followed after {took:?}");
    lab.exec_ok("gw", &["ip", "route", "add", "blackhole", "192.0.2.128/25"]);
    // a blackhole has no device: it refuses on every interface
    within(Duration::from_secs(1), || neigh.lookup(i, ip("192.0.2.200"), 0) == NextHop::NoRoute)
        .expect("blackhole followed");
    assert_eq!(neigh.lookup(i, ip("192.0.2.9"), 0), NextHop::Resolved((own, theirs)));
    lab.exec_ok("gw", &["ip", "route", "del", "192.0.2.0/24"]);
    within(Duration::from_secs(1), || neigh.lookup(i, ip("192.0.2.9"), 0) == NextHop::Unresolved(ip("192.0.2.9")))
        .expect("route deletion followed");

    // a deleted neighbour is forgotten
    lab.exec_ok("gw", &["ip", "neigh", "del", "10.77.0.2", "dev", "in0"]);
    within(Duration::from_secs(1), || neigh.resolved(i, ip("10.77.0.2")).is_none()).expect("deletion followed");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    thread.join().expect("netlink thread");
}
