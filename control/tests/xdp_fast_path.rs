//! The XDP fast path against the engine, byte for byte: flows are set up in an engine, their
//! directions installed in the XDP program's map exactly as xgwd installs them
//! (`offload::entry`), and random packets of those flows are run through both the engine and
//! the program (BPF_PROG_TEST_RUN). The program must redirect each one with the very bytes
//! the engine produced (plus the next hop's MACs), count them, and leave alone every packet
//! the engine must see (SYN/FIN/RST, TTL 1, fragments, bad header checksums, unknown flows).
//! Needs root (loading BPF programs).
#![allow(clippy::expect_used, reason = "test and benchmark tooling: a failed step ends the run with its message")]

use std::sync::Arc;

use aya::maps::{Array, DevMap, HashMap as BpfHashMap};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use etherparse::PacketBuilder;
use xgw_control::offload::entry;
use xgw_dataplane::conntrack::{Flow, FlowKey, FlowKind, L4State, Rewrite};
use xgw_dataplane::{Engine, EngineConfig, FrameBuf, IfaceId, RxMeta, Shared, Time, Verdict};
use xgw_ebpf_common::{FastFlow, FastKey, XdpConfig};

const INSIDE: IfaceId = IfaceId(0);
const OUTSIDE: IfaceId = IfaceId(1);
const P: [u8; 4] = [203, 0, 113, 1];
const S: [u8; 4] = [198, 51, 100, 20];
const C: [u8; 4] = [10, 0, 0, 5];
const SMAC: [u8; 6] = [2, 0, 0, 0, 1, 1];
const DMAC: [u8; 6] = [2, 0, 0, 0, 2, 2];
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn run_engine(e: &mut Engine, frame: &[u8], iface: IfaceId) -> (Verdict, Vec<u8>) {
    let mut buf = frame.to_vec();
    buf.resize(2048, 0);
    let mut f = FrameBuf { buf: &mut buf[..], len: frame.len() };
    let v = e.process(&mut f, RxMeta { iface }, Time::from_secs(1));
    let n = f.len;
    (v, buf[..n].to_vec())
}

fn eth() -> etherparse::Ethernet2Header {
    etherparse::Ethernet2Header {
        source: [2, 0, 0, 0, 9, 9],
        destination: [2, 0, 0, 0, 8, 8],
        ether_type: etherparse::EtherType::IPV4,
    }
}

/// A TCP frame with random flags from those that leave an established state alone.
fn tcp_frame(r: &mut Rng, src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16, ttl: u8, flags: u8) -> Vec<u8> {
    let mut t = etherparse::TcpHeader::new(sp, dp, r.next() as u32, 65535);
    // a bare SYN (2) opens; SYN with 16 is the SYN-ACK; everything else carries an ACK
    t.ack = flags & 2 == 0 || flags & 16 != 0;
    t.acknowledgment_number = r.next() as u32;
    t.psh = flags & 8 != 0;
    t.urg = flags & 32 != 0;
    t.syn = flags & 2 != 0;
    t.fin = flags & 1 != 0;
    t.rst = flags & 4 != 0;
    let payload: Vec<u8> = (0..r.below(200)).map(|_| r.next() as u8).collect();
    let mut v = Vec::new();
    PacketBuilder::ethernet2(eth().source, eth().destination)
        .ipv4(src, dst, ttl)
        .tcp_header(t)
        .write(&mut v, &payload)
        .expect("build");
    v
}

fn udp_frame(r: &mut Rng, src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16, ttl: u8, no_checksum: bool) -> Vec<u8> {
    let payload: Vec<u8> = (0..r.below(300)).map(|_| r.next() as u8).collect();
    let mut v = Vec::new();
    PacketBuilder::ethernet2(eth().source, eth().destination)
        .ipv4(src, dst, ttl)
        .udp(sp, dp)
        .write(&mut v, &payload)
        .expect("build");
    if no_checksum {
        v[14 + 20 + 6] = 0;
        v[14 + 20 + 7] = 0;
    }
    v
}

/// Enhanced GRE (PPTP) with a random choice of sequence and acknowledgement numbers.
fn gre_frame(r: &mut Rng, src: [u8; 4], dst: [u8; 4], call_id: u16, ttl: u8) -> Vec<u8> {
    let payload: Vec<u8> = (0..r.below(100) + 1).map(|_| r.next() as u8).collect();
    let (seq, ack) = (r.below(2) == 1, r.below(2) == 1);
    let mut g = vec![0x20 | if seq { 0x10 } else { 0 }, 0x01 | if ack { 0x80 } else { 0 }, 0x88, 0x0b];
    g.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    g.extend_from_slice(&call_id.to_be_bytes());
    if seq {
        g.extend_from_slice(&(r.next() as u32).to_be_bytes());
    }
    if ack {
        g.extend_from_slice(&(r.next() as u32).to_be_bytes());
    }
    g.extend_from_slice(&payload);
    let mut v = Vec::new();
    PacketBuilder::ethernet2(eth().source, eth().destination)
        .ipv4(src, dst, ttl)
        .write(&mut v, etherparse::IpNumber(47), &g)
        .expect("build");
    v
}

fn u(a: [u8; 4]) -> u32 {
    u32::from_be_bytes(a)
}

/// An engine with an assured TCP flow, an assured UDP flow and a PPTP call's GRE flow (the
/// client's Call ID 0x0100 translated to 0x8a01 on the outside, the server's 0x4000).
/// Returns (engine, tcp outside port, udp outside port).
fn engine_with_flows() -> (Engine, u16, u16) {
    let mut e = Engine::new(Arc::new(Shared::new(EngineConfig::example()).expect("config")));
    let mut r = Rng(7);
    let (v, syn) = run_engine(&mut e, &tcp_frame(&mut r, C, S, 5555, 443, 64, 2), INSIDE);
    assert_eq!(v, Verdict::Forward(OUTSIDE));
    let tport = u16::from_be_bytes([syn[34], syn[35]]);
    let (v, _) = run_engine(&mut e, &tcp_frame(&mut r, S, P, 443, tport, 64, 18), OUTSIDE);
    assert_eq!(v, Verdict::Forward(INSIDE));
    let (v, _) = run_engine(&mut e, &tcp_frame(&mut r, C, S, 5555, 443, 64, 0), INSIDE);
    assert_eq!(v, Verdict::Forward(OUTSIDE));

    let (v, q) = run_engine(&mut e, &udp_frame(&mut r, C, S, 5000, 4500, 64, false), INSIDE);
    assert_eq!(v, Verdict::Forward(OUTSIDE));
    let uport = u16::from_be_bytes([q[34], q[35]]);
    run_engine(&mut e, &udp_frame(&mut r, S, P, 4500, uport, 64, false), OUTSIDE);
    run_engine(&mut e, &udp_frame(&mut r, C, S, 5000, 4500, 64, false), INSIDE);

    // the GRE flow as the PPTP inspector creates it for a call
    let orig = FlowKey { src: u(C), dst: u(S), sport: 1, dport: 0x4000, proto: 47 };
    let reply = FlowKey { src: u(S), dst: u(P), sport: 1, dport: 0x8a01, proto: 47 };
    e.shared()
        .flows
        .insert(
            orig,
            [reply],
            |_| {
                let mut f = Flow::new(
                    [orig, reply],
                    [
                        Rewrite { src: u(P), dst: u(S), sport: 1, dport: 0x4000, egress: OUTSIDE },
                        Rewrite { src: u(S), dst: u(C), sport: 1, dport: 0x0100, egress: INSIDE },
                    ],
                    L4State::Other,
                    FlowKind::Related,
                    Time::ZERO,
                );
                f.status |= xgw_dataplane::conntrack::status::SEEN_REPLY;
                f
            },
            Time::ZERO,
        )
        .expect("gre flow");
    (e, tport, uport)
}

struct Prog {
    bpf: aya::Ebpf,
}

impl Prog {
    fn load(cfg: &EngineConfig) -> Prog {
        Prog::load_with(cfg, true)
    }

    /// The program with its devmap set; `egress_ok` marks both interfaces as taking
    /// redirects, as xgwd does when the kernel says so.
    fn load_with(cfg: &EngineConfig, egress_ok: bool) -> Prog {
        let mut bpf = aya::Ebpf::load(aya::include_bytes_aligned!(env!("XGW_XDP_OBJECT"))).expect("load object");
        Array::<_, XdpConfig>::try_from(bpf.map_mut("CONFIG").expect("CONFIG"))
            .expect("array")
            .set(0, xgw_control::daemon::xdp_config(cfg), 0)
            .expect("config");
        let mut tx = DevMap::try_from(bpf.map_mut("TX").expect("TX")).expect("devmap");
        for i in 0..2 {
            tx.set(i, 1, None, 0).expect("devmap entry (lo)");
        }
        let mut ok = Array::<_, u32>::try_from(bpf.map_mut("EGRESS_OK").expect("EGRESS_OK")).expect("array");
        for i in 0..2 {
            ok.set(i, u32::from(egress_ok), 0).expect("egress mark");
        }
        let prog: &mut Xdp = bpf.program_mut("xgw_xdp").expect("program").try_into().expect("xdp");
        prog.load().expect("the verifier accepts the program");
        Prog { bpf }
    }

    fn install(&mut self, flow: &Flow) {
        let mut m: BpfHashMap<_, FastKey, FastFlow> =
            BpfHashMap::try_from(self.bpf.map_mut("FLOWS").expect("FLOWS")).expect("hash");
        for d in 0..2 {
            let (k, v) = entry(flow, d, SMAC, DMAC);
            m.insert(k, v, 0).expect("insert");
        }
    }

    /// The program with every flow of `e` installed, both directions.
    fn with_flows_of(e: &Engine, egress_ok: bool) -> Prog {
        let mut prog = Prog::load_with(e.shared().config(), egress_ok);
        for f in &flows_of(e) {
            prog.install(f);
        }
        prog
    }

    fn counts(&self, flow: &Flow, d: usize) -> (u64, u64) {
        let m: BpfHashMap<_, FastKey, FastFlow> =
            BpfHashMap::try_from(self.bpf.map("FLOWS").expect("FLOWS")).expect("hash");
        let v = m.get(&entry(flow, d, SMAC, DMAC).0, 0).expect("entry");
        (v.packets, v.bytes)
    }

    /// Packets the fast path left to the engine, by reason (summed over CPUs).
    fn declined(&self, reason: u32) -> u64 {
        let m: aya::maps::PerCpuArray<_, xgw_ebpf_common::Counter> =
            aya::maps::PerCpuArray::try_from(self.bpf.map("FAST_DECLINED").expect("FAST_DECLINED")).expect("percpu");
        m.get(&reason, 0).map(|v| v.iter().map(|c| c.packets).sum()).unwrap_or(0)
    }

    fn run(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        let prog: &Xdp = self.bpf.program("xgw_xdp").expect("program").try_into().expect("xdp");
        let mut out = vec![0u8; frame.len() + 256];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.data_out = Some(&mut out);
        let res = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
        out.truncate(res.data_size_out as usize);
        (res.return_value, out)
    }
}

fn flows_of(e: &Engine) -> Vec<Flow> {
    let mut v = Vec::new();
    e.shared().flows.for_each(|_, f| v.push(*f));
    v
}

#[test]
fn xdp_rewrites_exactly_like_the_engine() {
    assert!(is_root(), "loading BPF programs needs root (run through tools/test)");
    let (mut e, tport, uport) = engine_with_flows();
    let prog = Prog::with_flows_of(&e, true);
    let flows = flows_of(&e);
    assert_eq!(flows.len(), 3);
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let mut sent = std::collections::HashMap::<(u64, usize), (u64, u64)>::new();
    for i in 0..600 {
        let ttl = 2 + r.below(254) as u8;
        let flags = [0u8, 8, 32, 40][r.below(4) as usize];
        let no_sum = r.below(4) == 0;
        let (frame, iface) = match i % 6 {
            0 => (tcp_frame(&mut r, C, S, 5555, 443, ttl, flags), INSIDE),
            1 => (tcp_frame(&mut r, S, P, 443, tport, ttl, flags), OUTSIDE),
            2 => (udp_frame(&mut r, C, S, 5000, 4500, ttl, no_sum), INSIDE),
            3 => (udp_frame(&mut r, S, P, 4500, uport, ttl, no_sum), OUTSIDE),
            4 => (gre_frame(&mut r, C, S, 0x4000, ttl), INSIDE),
            _ => (gre_frame(&mut r, S, P, 0x8a01, ttl), OUTSIDE),
        };
        let (v, want) = run_engine(&mut e, &frame, iface);
        assert!(matches!(v, Verdict::Forward(_)), "engine: {v:?} for packet {i}");
        let (action, got) = prog.run(&frame);
        assert_eq!(action, XDP_REDIRECT, "packet {i} was not taken by the fast path");
        assert_eq!(&got[0..6], &DMAC, "packet {i}: next hop MAC");
        assert_eq!(&got[6..12], &SMAC, "packet {i}: egress MAC");
        assert_eq!(&got[12..], &want[12..], "packet {i} ({:?}): XDP and engine bytes differ", i % 6);
        let f = flows.iter().find(|f| f.proto() == frame[23]).expect("flow");
        let d = usize::from(iface == OUTSIDE);
        let ip_len = u64::from(u16::from_be_bytes([frame[16], frame[17]]));
        let c = sent.entry((f.id, d)).or_default();
        c.0 += 1;
        c.1 += ip_len;
    }
    for f in &flows {
        for d in 0..2 {
            assert_eq!(prog.counts(f, d), sent[&(f.id, d)], "flow {} direction {d}: counters", f.id);
        }
    }
}

#[test]
fn xdp_leaves_what_the_engine_must_see() {
    assert!(is_root(), "loading BPF programs needs root (run through tools/test)");
    let (e, tport, uport) = engine_with_flows();
    let prog = Prog::with_flows_of(&e, true);
    let mut r = Rng(3);
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("SYN", tcp_frame(&mut r, C, S, 5555, 443, 64, 2)),
        ("FIN", tcp_frame(&mut r, C, S, 5555, 443, 64, 1)),
        ("RST", tcp_frame(&mut r, S, P, 443, tport, 64, 4)),
        ("TTL 1", tcp_frame(&mut r, C, S, 5555, 443, 1, 0)),
        ("unknown flow", tcp_frame(&mut r, C, S, 5556, 443, 64, 0)),
        ("unknown call", gre_frame(&mut r, S, P, 0x8a02, 64)),
    ];
    let mut bad = tcp_frame(&mut r, C, S, 5555, 443, 64, 0);
    bad[24] ^= 0x55;
    cases.push(("bad header checksum", bad));
    let mut frag = udp_frame(&mut r, C, S, 5000, 4500, 64, false);
    frag[20] |= 0x20; // more fragments
    let h = etherparse::Ipv4HeaderSlice::from_slice(&frag[14..34]).expect("ip").to_header();
    frag[24..26].copy_from_slice(&h.calc_header_checksum().to_be_bytes());
    cases.push(("first fragment", frag));
    let mut gre_c = gre_frame(&mut r, C, S, 0x4000, 64);
    gre_c[34] |= 0x80; // checksum present: not PPTP's enhanced GRE
    cases.push(("GRE with C bit", gre_c));
    // a sender's transmit checksum offload: the engine must finish these checksums
    let mut partial_tcp = tcp_frame(&mut r, C, S, 5555, 443, 64, 8);
    make_partial(&mut partial_tcp);
    cases.push(("partial TCP checksum", partial_tcp));
    let mut partial_udp = udp_frame(&mut r, S, P, 4500, uport, 64, false);
    make_partial(&mut partial_udp);
    cases.push(("partial UDP checksum", partial_udp));
    for (name, frame) in cases {
        let (action, got) = prog.run(&frame);
        assert_eq!(action, XDP_PASS, "{name}: the fast path must leave it (no AF_XDP socket here: pass)");
        // handed on with its class in 4 bytes of metadata in front, the frame itself untouched
        assert_eq!(got.len(), frame.len() + 4, "{name}");
        assert_eq!(&got[4..], &frame[..], "{name}: left untouched");
    }
    // none of them was counted
    for f in &flows_of(&e) {
        for d in 0..2 {
            assert_eq!(prog.counts(f, d), (0, 0), "flow {}", f.id);
        }
    }
    assert_eq!(prog.declined(xgw_ebpf_common::declined::PARTIAL_CSUM), 2);
}

/// Sets a TCP or UDP frame's checksum to the folded pseudo-header sum alone, as a sender
/// with transmit checksum offload hands it over (computed here with the plain sum).
fn make_partial(frame: &mut [u8]) {
    let total = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
    let proto = frame[23];
    let mut s: u32 = u32::from(proto) + (total - 20) as u32;
    for c in frame[26..34].chunks(2) {
        s += u32::from(c[0]) << 8 | u32::from(c[1]);
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    let at = 34 + if proto == 6 { 16 } else { 6 };
    frame[at..at + 2].copy_from_slice(&(s as u16).to_be_bytes());
}

#[test]
fn xdp_leaves_flows_whose_egress_takes_no_redirects() {
    assert!(is_root(), "loading BPF programs needs root (run through tools/test)");
    let (e, tport, uport) = engine_with_flows();
    let prog = Prog::with_flows_of(&e, false);
    let mut r = Rng(5);
    let frames = [
        tcp_frame(&mut r, C, S, 5555, 443, 64, 8),
        tcp_frame(&mut r, S, P, 443, tport, 64, 0),
        udp_frame(&mut r, S, P, 4500, uport, 64, false),
        gre_frame(&mut r, S, P, 0x8a01, 64),
    ];
    for frame in &frames {
        let (action, got) = prog.run(frame);
        assert_eq!(action, XDP_PASS, "towards an egress not proven, the engine's");
        assert_eq!(&got[4..], &frame[..], "left untouched");
    }
    assert_eq!(prog.declined(xgw_ebpf_common::declined::EGRESS_UNPROVEN), frames.len() as u64);
    for f in &flows_of(&e) {
        for d in 0..2 {
            assert_eq!(prog.counts(f, d), (0, 0), "flow {}", f.id);
        }
    }
}

#[test]
fn with_the_fast_path_off_xdp_does_not_look_flows_up() {
    assert!(is_root(), "loading BPF programs needs root (run through tools/test)");
    let (e, tport, _) = engine_with_flows();
    let mut prog = Prog::with_flows_of(&e, true);
    let mut r = Rng(6);
    let frame = tcp_frame(&mut r, S, P, 443, tport, 64, 0);
    assert_eq!(prog.run(&frame).0, XDP_REDIRECT, "fast path on: the installed flow is translated in XDP");
    let off = XdpConfig { fast_path: 0, ..xgw_control::daemon::xdp_config(e.shared().config()) };
    Array::<_, XdpConfig>::try_from(prog.bpf.map_mut("CONFIG").expect("CONFIG"))
        .expect("array")
        .set(0, off, 0)
        .expect("config");
    let (action, got) = prog.run(&frame);
    assert_eq!(action, XDP_PASS, "fast path off: no lookup, the frame goes towards the workers");
    assert_eq!(&got[4..], &frame[..], "left untouched");
    let counted: u64 = flows_of(&e).iter().flat_map(|f| [prog.counts(f, 0).0, prog.counts(f, 1).0]).sum();
    assert_eq!(counted, 1, "only the run with the fast path on reached an entry");
}

/// Next hops whose MACs a test can change.
struct TestNeighbours(std::sync::Mutex<[u8; 6]>);

impl xgw_dataplane::neighbour::Neighbours for TestNeighbours {
    fn lookup(&self, _: IfaceId, _: u32, _: u32) -> xgw_dataplane::neighbour::NextHop {
        xgw_dataplane::neighbour::NextHop::Resolved((SMAC, *self.0.lock().expect("lock")))
    }
    fn request(&self, _: IfaceId, _: u32) {}
    fn resolved(&self, _: IfaceId, _: u32) -> Option<([u8; 6], [u8; 6])> {
        Some((SMAC, *self.0.lock().expect("lock")))
    }
    fn generation(&self) -> u64 {
        0
    }
}

/// xgwd's userspace half against real maps: installing offered flows into the map of the
/// interface each direction arrives on, folding the program's counters and last-seen time
/// back, taking a flow back when its next hop's MAC changes (found by a check of the next
/// hops alone), refusing (and counting) when a map is full while the installed flows stay.
#[test]
fn offload_installs_folds_back_and_refuses_when_full() {
    use xgw_control::offload::XdpOffload;
    use xgw_dataplane::conntrack::status;
    assert!(is_root(), "creating BPF maps needs root (run through tools/test)");
    // one program instance per interface, as xgwd loads them; each map holds one direction of
    // a flow, and 2 entries each: two flows
    let mut objs: Vec<aya::Ebpf> = (0..2)
        .map(|_| {
            aya::EbpfLoader::new()
                .map_max_entries("FLOWS", 2)
                .load(xgw_control::daemon::xdp_object())
                .expect("load object")
        })
        .collect();
    // the offloader owns the maps; the test keeps second handles on them (the XDP program's view)
    let mut maps = Vec::new();
    let mut views: Vec<BpfHashMap<aya::maps::MapData, FastKey, FastFlow>> = Vec::new();
    for o in &mut objs {
        let m = o.take_map("FLOWS").expect("FLOWS");
        let aya::maps::Map::HashMap(data) = &m else { panic!("FLOWS is a hash map") };
        use std::os::fd::AsFd;
        let fd = data.fd().as_fd().try_clone_to_owned().expect("dup");
        views.push(
            BpfHashMap::try_from(aya::maps::Map::HashMap(aya::maps::MapData::from_fd(fd).expect("map"))).expect("hash"),
        );
        maps.push(BpfHashMap::try_from(m).expect("hash"));
    }
    let neigh = Arc::new(TestNeighbours(std::sync::Mutex::new(DMAC)));
    let mono_base = xgw_control::offload::monotonic_ns();
    let off = Arc::new(XdpOffload::new(maps, neigh.clone(), mono_base));
    let (e, _, _) = engine_with_flows();
    let sh = e.shared();
    sh.flows.offload.connect(off.clone());
    let flows = flows_of(&e);
    let slot_of = |f: &Flow| sh.flows.lookup(&f.keys[0]).expect("live").slot();
    // offer every flow as the engine would (status bit, then the request)
    for f in &flows {
        sh.flows.with_slot(slot_of(f), |x| x.status |= status::OFFLOAD);
        off.install(sh, slot_of(f), f.id);
    }
    assert_eq!(off.len(), 2, "two flows fit (2 entries per interface map), the third is refused");
    assert_eq!(off.stats.map_full.get(), 1);
    let refused = flows.iter().find(|f| !off.contains(f.id)).expect("one refused");
    assert!(views.iter().all(|v| v.get(&entry(refused, 0, SMAC, DMAC).0, 0).is_err()), "nothing half-installed");
    // each installed direction sits in the map of the interface it arrives on, and only there
    let f = *flows.iter().find(|f| off.contains(f.id)).expect("installed");
    for d in 0..2 {
        let iface = usize::from(xgw_control::offload::ingress_of(&f, d).0);
        let (k, v) = entry(&f, d, SMAC, DMAC);
        assert_eq!(views[iface].get(&k, 0).expect("entry"), v);
        assert!(views[1 - iface].get(&k, 0).is_err());
    }
    // the program counted 1000 packets on the reply direction 5 s after engine time zero
    let d = 1;
    let iface = usize::from(xgw_control::offload::ingress_of(&f, d).0);
    let (k, mut v) = entry(&f, d, SMAC, DMAC);
    v.packets = 1000;
    v.bytes = 64_000;
    v.last_seen = mono_base + 5_000_000_000;
    views[iface].insert(k, v, 0).expect("write counters");
    let before = sh.flows.with_slot(slot_of(&f), |x| *x).expect("live");
    off.sync(sh);
    let after = sh.flows.with_slot(slot_of(&f), |x| *x).expect("live");
    assert_eq!(after.packets[1], before.packets[1] + 1000);
    assert_eq!(after.bytes[1], before.bytes[1] + 64_000);
    assert_eq!(after.last_seen, Time::from_secs(5));
    off.sync(sh);
    assert_eq!(sh.flows.with_slot(slot_of(&f), |x| x.packets[1]), Some(after.packets[1]), "folded once");
    // a check of the next hops alone (the neighbour tables changed) reads no counters and,
    // the MACs being the same, takes nothing back
    v.packets = 1500;
    views[iface].insert(k, v, 0).expect("write counters");
    off.check_macs(sh);
    assert_eq!(sh.flows.with_slot(slot_of(&f), |x| x.packets[1]), Some(after.packets[1]), "no counters read");
    assert!(flows.iter().filter(|x| off.contains(x.id)).count() == 2 && off.stats.mac_changed.get() == 0);
    // the next hop moved: both installed flows (one next hop here) are taken back by the
    // check, entries gone, and may be offered again
    let g = *flows.iter().find(|x| off.contains(x.id) && x.id != f.id).expect("the other installed flow");
    *neigh.0.lock().expect("lock") = [2, 0, 0, 0, 3, 3];
    off.check_macs(sh);
    assert!(!off.contains(f.id) && !off.contains(g.id));
    assert_eq!(off.stats.mac_changed.get(), 2);
    assert!(views[iface].get(&k, 0).is_err(), "entry removed");
    assert_eq!(sh.flows.with_slot(slot_of(&f), |x| x.status & status::OFFLOAD), Some(0));
    // offered again, installed with the new MAC; deleting it removes its entries first
    sh.flows.with_slot(slot_of(&g), |x| x.status |= status::OFFLOAD);
    off.install(sh, slot_of(&g), g.id);
    let (gk, gv) = entry(&g, 0, SMAC, [2, 0, 0, 0, 3, 3]);
    let gi = usize::from(xgw_control::offload::ingress_of(&g, 0).0);
    assert_eq!(views[gi].get(&gk, 0).expect("reinstalled"), gv);
    assert_eq!(sh.delete_flows(Time::from_secs(6), |x| x.id == g.id), 1);
    assert!(views[gi].get(&gk, 0).is_err(), "deleted flow's entry removed");
    assert_eq!(off.stats.removed.get(), 3);

    // the packet path's withdrawal (a FIN) only unmarks and queues; this thread deletes the
    // entries afterwards and folds in what the program counted until then
    let new_mac = [2, 0, 0, 0, 3, 3];
    let slot = slot_of(&f);
    sh.flows.with_slot(slot, |x| x.status |= status::OFFLOAD);
    off.install(sh, slot, f.id);
    assert!(off.contains(f.id));
    let (k, mut v) = entry(&f, 1, SMAC, new_mac);
    let before = sh.flows.with_slot(slot, |x| x.packets[1]).expect("live");
    v.packets = 50;
    views[iface].insert(k, v, 0).expect("write counters");
    sh.flows.with_slot(slot, |x| sh.flows.offload.withdraw_queued(slot, x));
    assert!(views[iface].get(&k, 0).is_ok(), "the packet path deleted nothing");
    let r = sh.flows.offload.pop_withdrawal().expect("queued");
    off.take_back(sh, r);
    assert!(views[iface].get(&k, 0).is_err() && !off.contains(f.id), "taken back");
    assert_eq!(sh.flows.with_slot(slot, |x| x.packets[1]), Some(before + 50), "last counts folded in");
    assert_eq!(off.stats.taken_back.get(), 1);
    // a withdrawal lost to a full queue: the periodic sync finds the unmarked flow
    sh.flows.with_slot(slot, |x| x.status |= status::OFFLOAD);
    off.install(sh, slot, f.id);
    assert!(views[iface].get(&k, 0).is_ok());
    sh.flows.with_slot(slot, |x| x.status &= !status::OFFLOAD);
    off.sync(sh);
    assert!(views[iface].get(&k, 0).is_err() && !off.contains(f.id), "sync took it back");
    assert_eq!(off.stats.taken_back.get(), 2);
}

/// The new-flow guard in the XDP program: each side held (`GUARD`, as `xgw-guard` writes it)
/// drops exactly the pure SYNs it names, counted `guarded`; a forwarded port is never held
/// as unsolicited; a hold past its deadline holds nothing.
#[test]
fn the_new_flow_guard_drops_only_the_pure_syns_it_holds() {
    use xgw_ebpf_common::{guard, steer, GuardKey};
    assert!(is_root(), "loading BPF programs needs root (run through tools/test)");
    const XDP_DROP: u32 = 1;
    const O: [u8; 4] = [192, 0, 2, 77];
    let mut cfg = EngineConfig::example();
    cfg.forwards.push(xgw_dataplane::config::PortForward {
        proto: 6,
        outside_port: 8080,
        inside_addr: C.into(),
        inside_port: 80,
    });
    let mut prog = Prog::load(&cfg);
    {
        let mut fw =
            Array::<_, u64>::try_from(prog.bpf.map_mut("FORWARDED_TCP").expect("FORWARDED_TCP")).expect("array");
        for (i, w) in xgw_control::daemon::forwarded_tcp(&cfg).iter().enumerate().filter(|(_, w)| **w != 0) {
            fw.set(i as u32, *w, 0).expect("bitmap word");
        }
    }
    let hold = |prog: &mut Prog, key: GuardKey, until: u64| {
        let mut m: BpfHashMap<_, GuardKey, u64> =
            BpfHashMap::try_from(prog.bpf.map_mut("GUARD").expect("GUARD")).expect("hash");
        m.insert(key, until, 0).expect("hold");
    };
    let guarded = |prog: &Prog| -> u64 {
        let m: aya::maps::PerCpuArray<_, xgw_ebpf_common::Counter> =
            aya::maps::PerCpuArray::try_from(prog.bpf.map("STEER_STATS").expect("STEER_STATS")).expect("percpu");
        m.get(&steer::GUARDED, 0).map(|v| v.iter().map(|c| c.packets).sum()).unwrap_or(0)
    };
    let later = xgw_control::offload::monotonic_ns() + 60_000_000_000;
    let mut r = Rng(11);
    let (syn, ack, synack) = (2u8, 16u8, 18u8);
    let mut expect_drops = 0;
    let mut check =
        |prog: &Prog, r: &mut Rng, name: &str, src: [u8; 4], dst: [u8; 4], dport: u16, flags: u8, held: bool| {
            let (action, _) = prog.run(&tcp_frame(r, src, dst, 40_000, dport, 64, flags));
            assert_eq!(action, if held { XDP_DROP } else { XDP_PASS }, "{name}");
            expect_drops += u64::from(held);
            assert_eq!(guarded(prog), expect_drops, "{name}: counted guarded");
        };
    // nothing held: every SYN goes on (XDP_PASS here: no AF_XDP socket)
    check(&prog, &mut r, "no hold, unsolicited SYN", O, P, 1000, syn, false);
    check(&prog, &mut r, "no hold, inside SYN", C, S, 443, syn, false);

    hold(&mut prog, GuardKey { addr: u(P), port: 0, side: guard::UNSOLICITED, pad: 0 }, later);
    check(&prog, &mut r, "unsolicited SYN to the held address", O, P, 1000, syn, true);
    check(&prog, &mut r, "another port of it", [198, 18, 0, 1], P, 25, syn, true);
    check(&prog, &mut r, "its forwarded port", O, P, 8080, syn, false);
    check(&prog, &mut r, "an ACK to it", O, P, 1000, ack, false);
    check(&prog, &mut r, "a SYN-ACK to it", O, P, 1000, synack, false);
    check(&prog, &mut r, "an inside host's SYN elsewhere", C, S, 443, syn, false);

    hold(&mut prog, GuardKey { addr: u(C), port: 0, side: guard::INSIDE_SOURCE, pad: 0 }, later);
    check(&prog, &mut r, "the held inside host's SYN", C, S, 443, syn, true);
    check(&prog, &mut r, "the held inside host's ACK", C, S, 443, ack, false);
    check(&prog, &mut r, "another inside host's SYN", [10, 0, 0, 6], S, 443, syn, false);

    hold(&mut prog, GuardKey { addr: u(P), port: 8080, side: guard::FORWARDED_PORT, pad: 0 }, later);
    check(&prog, &mut r, "a SYN to the held forwarded port", O, P, 8080, syn, true);

    // deadlines passed: nothing is held any more
    let past = xgw_control::offload::monotonic_ns() - 1;
    hold(&mut prog, GuardKey { addr: u(P), port: 0, side: guard::UNSOLICITED, pad: 0 }, past);
    hold(&mut prog, GuardKey { addr: u(P), port: 8080, side: guard::FORWARDED_PORT, pad: 0 }, past);
    check(&prog, &mut r, "an expired unsolicited hold", O, P, 1000, syn, false);
    check(&prog, &mut r, "an expired forwarded-port hold", O, P, 8080, syn, false);
}

/// The counter sync reads each map in batches of `flowmap::BATCH`: a map holding more than
/// two batches' worth is read through, every entry once, with its values.
#[test]
fn a_batch_read_goes_through_the_whole_map() {
    use xgw_control::flowmap::{BatchRead, BATCH};
    assert!(is_root(), "creating BPF maps needs root (run through tools/test)");
    let n = 2 * BATCH + 500;
    let mut obj = aya::EbpfLoader::new()
        .map_max_entries("FLOWS", u32::try_from(n).expect("size"))
        .load(xgw_control::daemon::xdp_object())
        .expect("load object");
    let mut map: BpfHashMap<_, FastKey, FastFlow> =
        BpfHashMap::try_from(obj.take_map("FLOWS").expect("FLOWS")).expect("hash");
    let key = |i: usize| FastKey { src: i as u32, dst: 7, sport: 1, dport: (i % 65_536) as u16, proto: 17 };
    for i in 0..n {
        map.insert(key(i), FastFlow { packets: i as u64, bytes: 3 * i as u64, ..FastFlow::default() }, 0)
            .expect("insert");
    }
    let mut read = BatchRead::default();
    let mut got = std::collections::HashMap::new();
    let mut calls = 0;
    while !read.done() {
        let k = read.next(&map, &mut got).expect("batch read");
        assert!(k <= BATCH);
        calls += 1;
        assert!(calls <= 10, "a read through ends");
    }
    assert!(calls >= 3, "{n} entries take more than two batches (took {calls})");
    assert_eq!(got.len(), n, "every entry once");
    for i in 0..n {
        let v = got.get(&key(i)).expect("read");
        assert_eq!((v.packets, v.bytes), (i as u64, 3 * i as u64));
    }
    // read again from the start after a change: the change is seen
    map.insert(key(5), FastFlow { packets: 1_000_000, ..FastFlow::default() }, 0).expect("update");
    read.restart();
    got.clear();
    while !read.done() {
        read.next(&map, &mut got).expect("batch read");
    }
    assert_eq!(got.len(), n);
    assert_eq!(got[&key(5)].packets, 1_000_000);
}
