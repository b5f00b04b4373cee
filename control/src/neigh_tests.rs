//! Tables built from rtnetlink messages as the kernel sends them, one change at a time.

use super::*;
use netlink_packet_route::neighbour::NeighbourHeader;
use netlink_packet_route::route::RouteNextHop;

const IN: IfaceId = IfaceId(0);
const OUT: IfaceId = IfaceId(1);
const MAC_IN: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_OUT: [u8; 6] = [2, 0, 0, 0, 0, 2];

fn ip(s: &str) -> u32 {
    u32::from(s.parse::<Ipv4Addr>().expect("address"))
}

fn link(index: u32, name: &str, mac: [u8; 6]) -> RouteNetlinkMessage {
    let mut l = LinkMessage::default();
    l.header.index = index;
    l.attributes = vec![LinkAttribute::IfName(name.into()), LinkAttribute::Address(mac.to_vec())];
    RouteNetlinkMessage::NewLink(l)
}

fn route(dst: &str, len: u8, metric: u32, kind: RouteType, hops: &[(u32, &str)]) -> RouteMessage {
    let mut r = RouteMessage::default();
    r.header.address_family = AddressFamily::Inet;
    r.header.destination_prefix_length = len;
    r.header.table = RouteHeader::RT_TABLE_MAIN;
    r.header.kind = kind;
    r.attributes.push(RouteAttribute::Destination(RouteAddress::Inet(dst.parse().expect("address"))));
    r.attributes.push(RouteAttribute::Priority(metric));
    let gw =
        |g: &str| (!g.is_empty()).then(|| RouteAttribute::Gateway(RouteAddress::Inet(g.parse().expect("address"))));
    if let [(oif, g)] = hops {
        r.attributes.push(RouteAttribute::Oif(*oif));
        r.attributes.extend(gw(g));
    } else if !hops.is_empty() {
        let hops = hops
            .iter()
            .map(|(oif, g)| {
                let mut h = RouteNextHop::default();
                h.interface_index = *oif;
                h.attributes.extend(gw(g));
                h
            })
            .collect();
        r.attributes.push(RouteAttribute::MultiPath(hops));
    }
    r
}

fn neigh(ifindex: u32, addr: &str, mac: Option<[u8; 6]>, state: NeighbourState) -> NeighbourMessage {
    let mut n = NeighbourMessage::default();
    n.header = NeighbourHeader { family: AddressFamily::Inet, ifindex, state, ..NeighbourHeader::default() };
    n.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(addr.parse().expect("address"))));
    n.attributes.extend(mac.map(|m| NeighbourAttribute::LinkLayerAddress(m.to_vec())));
    n
}

/// in0 (index 5) holds 10.0.0.0/24, out0 (index 7) 198.51.100.0/24 and the default route.
fn lab() -> KernelState {
    let mut s = KernelState::default();
    for m in [
        link(5, "in0", MAC_IN),
        link(7, "out0", MAC_OUT),
        link(9, "other", [9; 6]),
        RouteNetlinkMessage::NewRoute(route("10.0.0.0", 24, 0, RouteType::Unicast, &[(5, "")])),
        RouteNetlinkMessage::NewRoute(route("198.51.100.0", 24, 0, RouteType::Unicast, &[(7, "")])),
        RouteNetlinkMessage::NewRoute(route("0.0.0.0", 0, 0, RouteType::Unicast, &[(7, "198.51.100.1")])),
    ] {
        assert!(s.apply(&m));
    }
    s
}

fn view(s: &KernelState) -> KernelNeighbours {
    let k = KernelNeighbours::new(None);
    k.publish(s.tables(&["in0".into(), "out0".into()]));
    k
}

#[test]
fn longest_prefix_picks_the_next_hop() {
    let mut s = lab();
    // a more specific route through a router on the inside
    s.apply(&RouteNetlinkMessage::NewRoute(route("10.1.0.0", 16, 0, RouteType::Unicast, &[(5, "10.0.0.254")])));
    s.apply(&RouteNetlinkMessage::NewNeighbour(neigh(5, "10.0.0.254", Some([0xaa; 6]), NeighbourState::Reachable)));
    s.apply(&RouteNetlinkMessage::NewNeighbour(neigh(7, "198.51.100.1", Some([0xbb; 6]), NeighbourState::Stale)));
    let k = view(&s);
    assert_eq!(k.lookup(IN, ip("10.1.2.3"), 0), NextHop::Resolved((MAC_IN, [0xaa; 6])));
    assert_eq!(k.lookup(IN, ip("10.0.0.7"), 0), NextHop::Unresolved(ip("10.0.0.7")));
    assert_eq!(k.lookup(OUT, ip("203.0.113.9"), 0), NextHop::Resolved((MAC_OUT, [0xbb; 6])));
    assert_eq!(k.lookup(OUT, ip("198.51.100.20"), 0), NextHop::Unresolved(ip("198.51.100.20")));
    // the default route goes out of out0 only: on in0 an unknown destination is on the link
    assert_eq!(k.lookup(IN, ip("203.0.113.9"), 0), NextHop::Unresolved(ip("203.0.113.9")));
}

#[test]
fn a_stale_neighbour_is_used_and_asked_for_once() {
    let mut s = lab();
    s.apply(&RouteNetlinkMessage::NewNeighbour(neigh(7, "198.51.100.1", Some([0xbb; 6]), NeighbourState::Stale)));
    let k = view(&s);
    for _ in 0..10 {
        assert!(matches!(k.lookup(OUT, ip("203.0.113.9"), 0), NextHop::Resolved(_)));
    }
    assert_eq!(k.take_requests().collect::<Vec<_>>(), vec![(7, ip("198.51.100.1"))]);
}

#[test]
fn incomplete_and_failed_entries_are_not_resolved_and_deletion_forgets() {
    let mut s = lab();
    let n = |st, mac| RouteNetlinkMessage::NewNeighbour(neigh(5, "10.0.0.7", mac, st));
    for (st, mac, resolved) in [
        (NeighbourState::Incomplete, None, false),
        (NeighbourState::Reachable, Some([1; 6]), true),
        (NeighbourState::Delay, Some([1; 6]), true),
        (NeighbourState::Probe, Some([1; 6]), true),
        (NeighbourState::Failed, None, false),
        (NeighbourState::Permanent, Some([3; 6]), true),
    ] {
        s.apply(&n(st, mac));
        let k = view(&s);
        assert_eq!(k.resolved(IN, ip("10.0.0.7")).is_some(), resolved, "{st:?}");
    }
    assert!(s.apply(&RouteNetlinkMessage::DelNeighbour(neigh(5, "10.0.0.7", None, NeighbourState::None))));
    assert_eq!(view(&s).resolved(IN, ip("10.0.0.7")), None);
    assert!(!s.apply(&RouteNetlinkMessage::DelNeighbour(neigh(5, "10.0.0.7", None, NeighbourState::None))));
}

#[test]
fn multipath_spreads_by_hash_over_the_hops_on_the_interface() {
    let mut s = lab();
    s.apply(&RouteNetlinkMessage::NewRoute(route(
        "192.0.2.0",
        24,
        0,
        RouteType::Unicast,
        &[(7, "198.51.100.1"), (7, "198.51.100.2"), (9, "203.0.113.1")],
    )));
    let k = view(&s);
    let hops: std::collections::HashSet<_> = (0..64)
        .map(|h| match k.lookup(OUT, ip("192.0.2.1"), h) {
            NextHop::Unresolved(nh) => nh,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(hops, [ip("198.51.100.1"), ip("198.51.100.2")].into_iter().collect());
}

#[test]
fn refusing_routes_lower_metrics_and_deleted_routes() {
    let mut s = lab();
    s.apply(&RouteNetlinkMessage::NewRoute(route("203.0.113.0", 24, 0, RouteType::BlackHole, &[])));
    assert_eq!(view(&s).lookup(OUT, ip("203.0.113.5"), 0), NextHop::NoRoute);
    // a second default through another gateway with a lower metric wins
    s.apply(&RouteNetlinkMessage::NewRoute(route("0.0.0.0", 0, 0, RouteType::Unicast, &[(7, "198.51.100.1")])));
    let dflt2 = route("0.0.0.0", 0, 10, RouteType::Unicast, &[(7, "198.51.100.9")]);
    s.apply(&RouteNetlinkMessage::NewRoute(dflt2.clone()));
    assert_eq!(view(&s).lookup(OUT, ip("8.8.8.8"), 0), NextHop::Unresolved(ip("198.51.100.1")));
    s.apply(&RouteNetlinkMessage::DelRoute(route("0.0.0.0", 0, 0, RouteType::Unicast, &[(7, "198.51.100.1")])));
    assert_eq!(view(&s).lookup(OUT, ip("8.8.8.8"), 0), NextHop::Unresolved(ip("198.51.100.9")));
    s.apply(&RouteNetlinkMessage::DelRoute(dflt2));
    s.apply(&RouteNetlinkMessage::DelRoute(route("203.0.113.0", 24, 0, RouteType::BlackHole, &[])));
    // nothing left through out0 but its own subnet: anything else is taken to be on the link
    assert_eq!(view(&s).lookup(OUT, ip("8.8.8.8"), 0), NextHop::Unresolved(ip("8.8.8.8")));
}

#[test]
fn other_tables_and_families_are_ignored() {
    let mut s = lab();
    let mut r = route("8.8.8.0", 24, 0, RouteType::Unicast, &[(7, "198.51.100.77")]);
    r.header.table = 100;
    assert!(!s.apply(&RouteNetlinkMessage::NewRoute(r)));
    let mut n = neigh(7, "198.51.100.1", Some([1; 6]), NeighbourState::Reachable);
    n.header.family = AddressFamily::Inet6;
    assert!(!s.apply(&RouteNetlinkMessage::NewNeighbour(n)));
}

#[test]
fn addresses_follow_the_link_and_vanish_with_it() {
    let mut s = lab();
    let addr = |a: &str, len| {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.index = 7;
        m.header.prefix_len = len;
        m.attributes.push(AddressAttribute::Local(IpAddr::V4(a.parse().expect("address"))));
        m
    };
    assert!(s.apply(&RouteNetlinkMessage::NewAddress(addr("198.51.100.2", 24))));
    assert!(!s.apply(&RouteNetlinkMessage::NewAddress(addr("198.51.100.2", 24))));
    assert_eq!(s.addresses("out0"), vec![("198.51.100.2".parse().expect("address"), 24)]);
    assert!(s.apply(&RouteNetlinkMessage::DelAddress(addr("198.51.100.2", 24))));
    assert!(s.addresses("out0").is_empty());
    s.apply(&RouteNetlinkMessage::NewAddress(addr("198.51.100.3", 24)));
    let mut gone = LinkMessage::default();
    gone.header.index = 7;
    assert!(s.apply(&RouteNetlinkMessage::DelLink(gone)));
    assert!(s.addresses("out0").is_empty());
    // a device the kernel does not have gives an empty table, and lookups there find nothing
    assert_eq!(view(&s).lookup(OUT, ip("198.51.100.5"), 0), NextHop::Unresolved(ip("198.51.100.5")));
    assert_eq!(view(&s).resolved(OUT, ip("198.51.100.5")), None);
}
