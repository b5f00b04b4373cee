//! AF_XDP ports and the worker loop: the outer I/O layer that feeds the engine from the
//! kernel's XDP redirect and transmits its verdicts.
//!
//! A [`Port`] is one AF_XDP socket (xsk-rs, libxdp's own program loading inhibited: xgw's
//! XDP program holds the XSKMAP) on one interface's receive queue, with its own UMEM. Three
//! quarters of the UMEM frames serve receiving (they cycle fill ring → RX ring → fill ring),
//! a quarter transmitting (free list → TX ring → completion ring → free list); the counts are
//! checked by [`Port::frames_accounted`]. A [`Worker`] owns the ports of one queue index on every
//! interface, so both directions of a flow are handled without any lock around rings, and
//! runs batches: RX → engine → TX on the egress port, with MAC addresses from a
//! [`Neighbours`] source the daemon keeps current from the kernel's tables. A batch takes no
//! more frames than the port with the fewest free TX frames can send (transmit
//! backpressure): a frame that is received, translated and then finds no TX frame costs a
//! worker its whole path for nothing, while one left in the kernel's RX ring costs nothing.
//!
//! This is the only module of the crate that uses `unsafe`: xsk-rs's ring and frame
//! accessors are `unsafe fn`s whose contract is that descriptors belong to the UMEM they are
//! used with and are not in two rings at once — which the frame bookkeeping here guarantees.
#![allow(unsafe_code, reason = "xsk-rs's ring and frame accessors are unsafe fns; every block says why it holds")]

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xsk_rs::FrameDesc;

use crate::config::IfaceId;
use crate::counters::SharedCounter;
use crate::engine::{Engine, FrameBuf, RxMeta, Verdict};
use crate::neighbour::Neighbours;
use crate::neighbour::{flow_hash, Macs, NextHop, Refused, Waiting};
use crate::time::Time;

mod idle;
mod port;

use idle::Idle;
use port::{rx_allowance, BATCH, FRAME_SIZE};
pub use port::{Port, PortConfig, PortStats, XskError};

/// Frames that may wait for one next hop (the kernel's `unres_qlen_bytes` holds about 140
/// full-sized frames), and for all next hops of a worker.
const WAIT_PER_NEXT_HOP: usize = 64;

const WAIT_TOTAL: usize = 512;

/// How often waiting frames are looked at when no neighbour changed (to give up old ones).
const WAIT_CHECK: Duration = Duration::from_millis(50);

/// Number of class codes the XDP program can put in a frame's metadata.
pub const CLASSES: usize = 32;

/// Worker-wide counters.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Batches run.
    pub batches: SharedCounter,
    /// Polls that found nothing.
    pub idle_polls: SharedCounter,
    /// Frames received per class, as the XDP program classified them (its metadata).
    pub classes: [SharedCounter; CLASSES],
    /// Frames whose metadata held no valid class.
    pub unclassified: SharedCounter,
}

/// The class the XDP program wrote in the 4 bytes of metadata in front of a received frame.
fn frame_class(data: &[u8]) -> Option<usize> {
    // SAFETY: a received frame's data starts XDP_PACKET_HEADROOM (256) bytes into its UMEM
    // frame, or later; the XDP program's metadata sits in the 4 bytes just before it, inside
    // the same frame and the same mmap'd UMEM region, which stays mapped while `data` lives.
    // The read is unaligned-safe and any bit pattern is a valid u32.
    let v = unsafe { core::ptr::read_unaligned(data.as_ptr().sub(4).cast::<u32>()) };
    usize::try_from(v).ok().filter(|&c| c < CLASSES)
}

/// One worker thread's state: the ports of one queue index on every interface.
pub struct Worker {
    engine: Engine,
    ports: Vec<Port>,
    neighbours: Arc<dyn Neighbours>,
    stop: Arc<AtomicBool>,
    base: Instant,
    /// BATCH frame-sized slots the engine works in (a received batch is copied here so its
    /// descriptors go straight back to the fill ring).
    scratch: Vec<u8>,
    lens: [usize; BATCH],
    metas: [RxMeta; BATCH],
    verdicts: [Verdict; BATCH],
    rx_descs: Vec<FrameDesc>,
    pending_tx: Vec<Vec<FrameDesc>>,
    /// TX frames (MAC addresses still to be written) waiting for their next hop.
    waiting: Waiting<FrameDesc>,
    /// The neighbours' generation when the waiting frames were last looked at, and when.
    waiting_seen: (u64, Instant),
    /// Since when some port has had fewer than a batch of free transmit frames.
    tx_short_since: Option<Instant>,
    /// When a port's want of transmit frames was last logged.
    tx_short_logged: Option<Instant>,
    /// Counters.
    pub stats: Arc<WorkerStats>,
}

impl core::fmt::Debug for Worker {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Worker").field("ports", &self.ports).finish()
    }
}

impl Worker {
    /// A worker running `engine` on `ports`; `base` is the instant engine time counts from
    /// (shared with the sweeper).
    pub fn new(
        engine: Engine,
        ports: Vec<Port>,
        neighbours: Arc<dyn Neighbours>,
        stop: Arc<AtomicBool>,
        base: Instant,
    ) -> Worker {
        let n = ports.len();
        Worker {
            engine,
            ports,
            neighbours,
            stop,
            base,
            scratch: vec![0u8; BATCH * FRAME_SIZE as usize],
            lens: [0; BATCH],
            metas: [RxMeta { iface: IfaceId(0) }; BATCH],
            verdicts: [Verdict::ToHost; BATCH],
            rx_descs: vec![FrameDesc::default(); BATCH],
            pending_tx: (0..n).map(|_| Vec::with_capacity(BATCH)).collect(),
            waiting: Waiting::new(WAIT_PER_NEXT_HOP, WAIT_TOTAL),
            waiting_seen: (0, base),
            tx_short_since: None,
            tx_short_logged: None,
            stats: Arc::new(WorkerStats::default()),
        }
    }

    /// The ports (for counters and frame accounting).
    pub fn ports(&self) -> &[Port] {
        &self.ports
    }

    /// Runs until the stop flag is set; returns the ports for a final accounting.
    pub fn run(mut self) -> Vec<Port> {
        let mut idle = 0u32;
        let mut last_kernel_stats = Instant::now();
        let mut rounds = 0u32;
        while !self.stop.load(Ordering::Relaxed) {
            rounds = rounds.wrapping_add(1);
            if rounds.is_multiple_of(1024) && last_kernel_stats.elapsed() >= Duration::from_secs(1) {
                last_kernel_stats = Instant::now();
                self.read_kernel_stats();
            }
            if !self.waiting.is_empty() {
                self.release_waiting();
            }
            let mut work = 0;
            let mut held = false;
            for p in 0..self.ports.len() {
                let allowed = self.rx_allowance();
                held |= allowed < BATCH;
                if allowed > 0 {
                    work += self.rx_batch(p, allowed);
                }
            }
            self.flush_tx();
            for p in &mut self.ports {
                p.reap();
            }
            if held && work == 0 {
                // every frame the transmit side can take is in its ring: let the receiving
                // side of the device it waits for (here on this machine, a veth peer's NAPI,
                // or the driver's completion) run, then look again
                std::thread::yield_now();
                continue;
            }
            if work == 0 {
                idle = idle.saturating_add(1);
                let unsent = self.ports.iter_mut().any(|p| p.tx_unsent());
                match idle::next_step(idle, unsent, !self.waiting.is_empty()) {
                    Idle::Spin => {}
                    // the next round's flush kicks the refused frames again
                    Idle::Yield => std::thread::yield_now(),
                    Idle::Sleep(nap) => {
                        // sleep in poll() on every port's socket
                        self.stats.idle_polls.inc();
                        self.poll_all(nap);
                    }
                }
            } else {
                idle = 0;
                self.stats.batches.inc();
            }
        }
        // frames still waiting for a neighbour are not sent
        let mut waiting = std::mem::replace(&mut self.waiting, Waiting::new(0, 0));
        waiting.drain(|egress, desc| {
            if let Some(ei) = self.port_index(egress) {
                self.ports[ei].free_tx.push(desc);
                self.ports[ei].stats.tx_no_neighbour.inc();
            }
        });
        // let in-flight transmissions complete so the accounting is exact
        for _ in 0..100 {
            for p in &mut self.ports {
                p.reap();
            }
            if self.ports.iter().all(|p| p.outstanding_tx == 0) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        self.ports
    }

    /// Copies the kernel's drop counters of every socket into the ports' counters (one
    /// getsockopt per socket, once a second).
    fn read_kernel_stats(&mut self) {
        for p in &mut self.ports {
            if let Ok(s) = p.rx.fd_mut().xdp_statistics() {
                p.stats.xsk_rx_dropped.set(s.rx_dropped());
                p.stats.xsk_rx_ring_full.set(s.rx_ring_full());
            }
        }
    }

    fn poll_all(&mut self, timeout: Duration) {
        let mut fds: Vec<libc::pollfd> =
            self.ports.iter().map(|p| libc::pollfd { fd: p.raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(10);
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structures for the duration of
        // the call; poll(2) only writes their `revents` fields.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    }

    fn port_index(&self, iface: IfaceId) -> Option<usize> {
        self.ports.iter().position(|p| p.iface == iface)
    }

    /// How many frames the next receive batch may take: a whole batch, or, while some port
    /// has fewer free transmit frames than that (its device busy, its frames waiting in the
    /// TX ring), only as many as that port can still send — whichever port a frame turns
    /// out to leave by. Frames the worker could only drop after translating them stay in
    /// the kernel's receive ring meanwhile, for at most [`port::BACKPRESSURE_LIMIT`].
    fn rx_allowance(&mut self) -> usize {
        let mut room = usize::MAX;
        let mut short = None;
        for (i, p) in self.ports.iter_mut().enumerate() {
            if p.free_tx.len() < BATCH {
                p.reap();
            }
            if p.free_tx.len() < room {
                room = p.free_tx.len();
                short = Some(i);
            }
        }
        if room >= BATCH {
            self.tx_short_since = None;
            return BATCH;
        }
        let since = match self.tx_short_since {
            Some(t) => t,
            None => {
                if let Some(i) = short {
                    self.ports[i].stats.tx_backpressure.inc();
                }
                *self.tx_short_since.insert(Instant::now())
            }
        };
        rx_allowance(room, since.elapsed())
    }

    fn rx_batch(&mut self, pi: usize, allowed: usize) -> usize {
        let now = Time(u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX));
        let take = allowed.min(self.rx_descs.len());
        // SAFETY: descriptors from this port's RX ring belong to its UMEM; they are put back
        // on its fill ring below before the next batch, so none is in two rings at once.
        let n = unsafe { self.ports[pi].rx.consume(&mut self.rx_descs[..take]) };
        if n == 0 {
            if self.ports[pi].fq.needs_wakeup() {
                let p = &mut self.ports[pi];
                let _ = p.fq.wakeup(p.rx.fd_mut(), 0);
            }
            return 0;
        }
        let iface = self.ports[pi].iface;
        self.ports[pi].in_fill -= n.min(self.ports[pi].in_fill);
        let slot = FRAME_SIZE as usize;
        let n = n.min(BATCH);
        for i in 0..n {
            let desc = self.rx_descs[i];
            // SAFETY: `desc` came from this port's RX ring (see above) and is read before
            // it is handed back to the kernel.
            let data = unsafe { self.ports[pi].umem.data(&desc) };
            let c = data.contents();
            match frame_class(c) {
                Some(k) => self.stats.classes[k].inc(),
                None => self.stats.unclassified.inc(),
            }
            let len = c.len().min(slot);
            self.scratch[i * slot..i * slot + len].copy_from_slice(&c[..len]);
            self.lens[i] = len;
            self.metas[i] = RxMeta { iface };
        }
        self.ports[pi].stats.rx.add(n as u64);
        {
            let mut frames: [FrameBuf<'_>; BATCH] = std::array::from_fn(|_| FrameBuf { buf: &mut [], len: 0 });
            for ((f, buf), &len) in frames.iter_mut().zip(self.scratch.chunks_exact_mut(slot)).zip(&self.lens) {
                *f = FrameBuf { buf, len };
            }
            self.engine.process_batch(&mut frames[..n], &self.metas[..n], now, &mut self.verdicts[..n]);
            for (f, len) in frames.iter().zip(self.lens.iter_mut()).take(n) {
                *len = f.len;
            }
        }
        for i in 0..n {
            match self.verdicts[i] {
                Verdict::Forward(egress) => self.stage_tx(egress, i),
                Verdict::ToHost => self.ports[pi].stats.to_host_lost.inc(),
                Verdict::Drop(_) => {}
            }
        }
        let p = &mut self.ports[pi];
        // SAFETY: the descriptors were consumed from this port's RX ring above and are in no
        // other ring: they go back to the kernel for receiving.
        let back = unsafe { p.fq.produce(&self.rx_descs[..n]) };
        p.in_fill += back;
        n
    }

    /// Copies processed frame `i` (scratch slot `i`) into a free TX frame of the egress
    /// port, with the MAC addresses of the next hop; a frame whose next hop is not resolved
    /// yet waits for it.
    fn stage_tx(&mut self, egress: IfaceId, i: usize) {
        let Some(ei) = self.port_index(egress) else { return };
        let slot = FRAME_SIZE as usize;
        let len = self.lens[i];
        let frame = &mut self.scratch[i * slot..i * slot + len];
        // the next hop is the IPv4 destination's, wherever the IP header starts (after an
        // 802.1Q tag too): the engine forwards only frames it parsed, so both views hold
        let Some((src, dst)) = crate::wire::ethernet::Frame::new_checked(&frame[..])
            .ok()
            .map(|e| e.payload_offset())
            .and_then(|l3| crate::wire::ipv4::Packet::new_checked(&frame[l3..]).ok())
            .map(|ip| (ip.src_addr(), ip.dst_addr()))
        else {
            return;
        };
        let macs = match self.neighbours.lookup(egress, dst, flow_hash(src, dst)) {
            NextHop::Resolved(m) => Some(m),
            NextHop::Unresolved(nh) => {
                if self.waiting.is_empty() {
                    // the first to wait: the next release looks at the neighbours afresh
                    self.waiting_seen.0 = self.neighbours.generation();
                }
                self.ports[ei].stats.tx_neigh_waited.inc();
                self.park(ei, egress, nh, i);
                None
            }
            NextHop::NoRoute => {
                self.ports[ei].stats.tx_no_route.inc();
                None
            }
        };
        let Some(macs) = macs else { return };
        let Some(desc) = self.copy_to_tx(ei, i, Some(macs)) else { return };
        self.queue_tx(ei, desc);
    }

    /// Copies scratch slot `i` into a free TX frame of port `ei`, MAC addresses written
    /// when known; `None` (counted) when the port has no free TX frame.
    fn copy_to_tx(&mut self, ei: usize, i: usize, macs: Option<Macs>) -> Option<FrameDesc> {
        let slot = FRAME_SIZE as usize;
        let len = self.lens[i];
        if let Some((src_mac, dst_mac)) = macs {
            let frame = &mut self.scratch[i * slot..i * slot + len];
            frame[0..6].copy_from_slice(&dst_mac);
            frame[6..12].copy_from_slice(&src_mac);
        }
        if self.ports[ei].free_tx.is_empty() {
            self.ports[ei].reap();
        }
        let p = &mut self.ports[ei];
        let Some(mut desc) = p.free_tx.pop() else {
            p.stats.tx_no_frame.inc();
            self.log_tx_shortage(ei);
            return None;
        };
        let p = &mut self.ports[ei];
        // SAFETY: `desc` is a free TX frame of this port's UMEM (not in any ring).
        let mut data = unsafe { p.umem.data_mut(&mut desc) };
        // xsk-rs's cursor writes after the descriptor's length, which a frame from the
        // completion ring has at 0 but one given back to the free list (refused by the wait
        // queue, given up waiting, ring full) still has at its old frame's: start afresh, or
        // the new frame would be sent behind the old one's bytes
        let mut cursor = data.cursor();
        cursor.set_pos(0);
        if cursor.write_all(&self.scratch[i * slot..i * slot + len]).is_err() {
            cursor.set_pos(0);
            p.free_tx.push(desc);
            p.stats.tx_no_frame.inc();
            return None;
        }
        Some(desc)
    }

    /// Says where port `ei`'s transmit frames are when one was wanted and none was free, at
    /// most once a second per worker: the frames the worker holds (written and not yet in the
    /// ring, waiting for a next hop) against those the kernel holds (in the TX ring, sent and
    /// not completed — in copy mode a frame completes when the receiver frees its copy).
    fn log_tx_shortage(&mut self, ei: usize) {
        if self.tx_short_logged.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return;
        }
        self.tx_short_logged = Some(Instant::now());
        let waiting = self.waiting.len_on(self.ports[ei].iface);
        let pending = self.pending_tx[ei].len();
        let p = &mut self.ports[ei];
        let (in_ring, in_flight) = p.tx_in_kernel();
        tracing::warn!(
            device = %p.device,
            queue = p.queue,
            frames = p.tx_frames,
            free = p.free_tx.len(),
            pending,
            waiting,
            in_ring,
            in_flight,
            "no free transmit frame: frames dropped (tx_no_frame)"
        );
    }

    /// Puts a written TX frame of port `ei` on its way (flushed with the batch).
    fn queue_tx(&mut self, ei: usize, desc: FrameDesc) {
        self.pending_tx[ei].push(desc);
        if self.pending_tx[ei].len() >= BATCH {
            self.flush_port(ei);
        }
    }

    /// Lets frame `i` wait in a TX frame of port `ei` for next hop `nh`.
    fn park(&mut self, ei: usize, egress: IfaceId, nh: u32, i: usize) {
        let Some(desc) = self.copy_to_tx(ei, i, None) else { return };
        let now = Time(u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX));
        match self.waiting.park(egress, nh, desc, now) {
            Ok(true) => self.neighbours.request(egress, nh),
            Ok(false) => {}
            Err((desc, Refused::NextHopFull | Refused::Full)) => {
                let p = &mut self.ports[ei];
                p.free_tx.push(desc);
                p.stats.tx_neigh_queue_full.inc();
            }
        }
    }

    /// Sends the waiting frames whose next hop is now resolved and gives up those that
    /// waited too long; runs when the neighbours changed, or every [`WAIT_CHECK`].
    fn release_waiting(&mut self) {
        let generation = self.neighbours.generation();
        if generation == self.waiting_seen.0 && self.waiting_seen.1.elapsed() < WAIT_CHECK {
            return;
        }
        self.waiting_seen = (generation, Instant::now());
        let now = Time(u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX));
        let neighbours = Arc::clone(&self.neighbours);
        let mut waiting = std::mem::replace(&mut self.waiting, Waiting::new(0, 0));
        waiting.release(
            now,
            |egress, nh| neighbours.resolved(egress, nh),
            |egress, mut desc, macs| {
                let Some(ei) = self.port_index(egress) else { return };
                let Some((src_mac, dst_mac)) = macs else {
                    // waited too long
                    let p = &mut self.ports[ei];
                    p.free_tx.push(desc);
                    p.stats.tx_no_neighbour.inc();
                    return;
                };
                // SAFETY: `desc` is a TX frame of this port's UMEM, written in `park` and held
                // by the waiting queue only (in no ring) until now.
                let mut data = unsafe { self.ports[ei].umem.data_mut(&mut desc) };
                let frame = data.contents_mut();
                if frame.len() >= 12 {
                    frame[0..6].copy_from_slice(&dst_mac);
                    frame[6..12].copy_from_slice(&src_mac);
                }
                self.queue_tx(ei, desc);
            },
        );
        self.waiting = waiting;
    }

    fn flush_tx(&mut self) {
        for ei in 0..self.ports.len() {
            if !self.pending_tx[ei].is_empty() {
                self.flush_port(ei);
            } else if self.ports[ei].tx.needs_wakeup() && self.ports[ei].tx_unsent() {
                // frames left in the ring by the last flush's kicks: send them now rather
                // than when the next frame for this port comes
                self.ports[ei].kick_tx();
            }
        }
    }

    fn flush_port(&mut self, ei: usize) {
        let p = &mut self.ports[ei];
        let pending = &mut self.pending_tx[ei];
        // SAFETY: every pending descriptor is a frame of this port's UMEM written above and
        // in no ring; the ones the TX ring does not take stay pending for the next flush.
        let sent = unsafe { p.tx.produce(pending) };
        p.outstanding_tx += sent;
        p.stats.tx.add(sent as u64);
        pending.drain(..sent);
        if p.tx.needs_wakeup() || sent > 0 {
            p.kick_tx();
        }
        if !pending.is_empty() {
            // the ring is full: give the frames back rather than hold them
            p.stats.tx_no_frame.add(pending.len() as u64);
            self.log_tx_shortage(ei);
            let p = &mut self.ports[ei];
            p.free_tx.append(&mut self.pending_tx[ei]);
        }
    }
}
