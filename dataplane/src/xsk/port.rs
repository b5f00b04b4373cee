//! One AF_XDP socket ([`Port`]): its UMEM, its four rings and the bookkeeping that keeps
//! every frame in exactly one place (fill ring, RX ring, free list, TX ring, completion
//! ring, or a frame waiting for its next hop).

use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use xsk_rs::config::{BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig, XdpFlags};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, TxQueue, Umem};

use crate::config::IfaceId;
use crate::counters::Counter;

/// Why a port could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum XskError {
    /// A size was refused by xsk-rs.
    #[error("bad AF_XDP configuration: {0}")]
    Config(String),
    /// UMEM creation failed.
    #[error("cannot create UMEM: {0}")]
    Umem(String),
    /// Socket creation failed.
    #[error("cannot create AF_XDP socket on {device} queue {queue}: {reason}")]
    Socket {
        /// Device.
        device: String,
        /// Queue.
        queue: u32,
        /// What went wrong.
        reason: String,
    },
}

/// How to open a port.
#[derive(Debug, Clone)]
pub struct PortConfig {
    /// The engine's interface id of the device.
    pub iface: IfaceId,
    /// Kernel device name.
    pub device: String,
    /// Receive queue.
    pub queue: u32,
    /// UMEM frames (three quarters for receiving, a quarter for transmitting; see [`split`]).
    pub frames: u32,
    /// Try zero-copy (falls back to copy mode when the driver refuses).
    pub zero_copy: bool,
}

crate::counter_family! {
    /// Per-port counters.
    pub struct PortStats: Counter {
        /// Frames received.
        rx,
        /// Frames transmitted.
        tx,
        /// Frames not transmitted: no free TX frame.
        tx_no_frame,
        /// Frames not transmitted: their next hop was not resolved within 3 s of waiting.
        tx_no_neighbour,
        /// Frames that waited for their next hop to be resolved (sent later, or counted in
        /// `tx_no_neighbour`).
        tx_neigh_waited,
        /// Frames not transmitted: too many frames already waited for their next hop (64) or
        /// for any next hop of the worker (512).
        tx_neigh_queue_full,
        /// Frames not transmitted: the route to their destination is a blackhole, unreachable or
        /// prohibit route.
        tx_no_route,
        /// Frames the engine handed to the host after they reached userspace (lost: the XDP
        /// program should have passed them to the kernel).
        to_host_lost,
        /// Frames the kernel redirected to this socket but dropped before it (the kernel's
        /// `rx_dropped`: a frame larger than a UMEM frame — a neighbour's GSO super-frame seen
        /// by generic XDP — or no free receive buffer). Read from the kernel once a second.
        xsk_rx_dropped,
        /// Frames the kernel dropped because the socket's receive ring was full (its
        /// `rx_ring_full`). Read once a second.
        xsk_rx_ring_full,
        /// Transmit kicks (sendto): in copy mode the kernel sends at most 32 frames a kick,
        /// so a batch may take two.
        tx_kicks,
        /// Times this port's free transmit frames fell below a batch, so that its worker
        /// received only as many frames as it could send: the rest waited in the kernel's
        /// receive rings (and, when those filled, were dropped there, counted in
        /// `xsk_rx_dropped`/`xsk_rx_ring_full`) instead of being received, translated and then
        /// dropped for want of a transmit frame (`tx_no_frame`).
        tx_backpressure,
    }
}

pub(super) const FRAME_SIZE: u32 = 2048;

pub(super) const BATCH: usize = 64;

/// How long a worker receives only as many frames as its shortest transmit side can take.
/// A transmit side whose device stays busy longer (a stopped queue that is not woken) must
/// not hold up the traffic of the worker's other interfaces: after this the worker receives
/// full batches again, and frames for the stuck side are dropped as `tx_no_frame`.
pub(super) const BACKPRESSURE_LIMIT: std::time::Duration = std::time::Duration::from_millis(10);

/// How many frames a worker may receive next, when the port with the fewest free transmit
/// frames has `room` of them and has been short of a batch for `short_for`.
pub(super) fn rx_allowance(room: usize, short_for: std::time::Duration) -> usize {
    if room >= BATCH || short_for >= BACKPRESSURE_LIMIT {
        BATCH
    } else {
        room
    }
}

/// Most transmit kicks per flush: what one batch brings, at 32 frames a kick in copy mode.
const KICKS_PER_FLUSH: u32 = (BATCH as u32).div_ceil(32);

/// One AF_XDP socket with its UMEM and rings.
pub struct Port {
    /// The engine's interface id.
    pub iface: IfaceId,
    /// Device name.
    pub device: String,
    /// Receive queue.
    pub queue: u32,
    pub(super) umem: Umem,
    pub(super) fq: FillQueue,
    pub(super) cq: CompQueue,
    pub(super) tx: TxQueue,
    pub(super) rx: RxQueue,
    pub(super) free_tx: Vec<FrameDesc>,
    pub(super) in_fill: usize,
    pub(super) outstanding_tx: usize,
    pub(super) rx_frames: usize,
    pub(super) tx_frames: usize,
    /// Slots of the TX ring.
    pub(super) tx_ring: u32,
    /// Counters.
    pub stats: Arc<PortStats>,
}

impl core::fmt::Debug for Port {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Port").field("device", &self.device).field("queue", &self.queue).finish()
    }
}

/// (receive, transmit) frames of a UMEM of `frames` (a power of two, at least 64): three
/// quarters receive. Receive frames absorb bursts while the worker is busy (in copy mode a
/// transmit kick runs the receiving side's processing inline on veth, and a flood's first
/// milliseconds bring thousands of new flows before the new-flow guard holds it); transmit
/// frames only wait for the ring and the completion, a batch or a few at a time, plus at
/// most 512 frames waiting for a neighbour per worker.
pub(super) fn split(frames: u32) -> (u32, u32) {
    (frames - frames / 4, frames / 4)
}

pub(super) fn qsize(n: u32) -> Result<QueueSize, XskError> {
    QueueSize::new(n).map_err(|e| XskError::Config(e.to_string()))
}

impl Port {
    /// Opens an AF_XDP socket on `cfg.device` queue `cfg.queue`. libxdp does not load a
    /// program: the caller puts [`Port::raw_fd`] into its own XSKMAP.
    pub fn open(cfg: &PortConfig) -> Result<Port, XskError> {
        let frames = cfg.frames.next_power_of_two().max(64);
        let (rx_frames, tx_frames) = split(frames);
        // rings are powers of two: the fill and RX rings hold every receive frame
        let (rx_ring, tx_ring) = (rx_frames.next_power_of_two(), tx_frames);
        let umem_cfg = UmemConfig::builder()
            .frame_size(FrameSize::new(FRAME_SIZE).map_err(|e| XskError::Config(e.to_string()))?)
            .fill_queue_size(qsize(rx_ring)?)
            .comp_queue_size(qsize(tx_ring)?)
            .build()
            .map_err(|e| XskError::Config(e.to_string()))?;
        let count = NonZeroU32::new(frames).ok_or_else(|| XskError::Config("zero frames".into()))?;
        let (umem, mut descs) = Umem::new(umem_cfg, count, false).map_err(|e| XskError::Umem(e.to_string()))?;
        let iface =
            Interface::new(std::ffi::CString::new(cfg.device.clone()).map_err(|e| XskError::Config(e.to_string()))?);
        let mut last_err = String::new();
        let binds: &[BindFlags] =
            if cfg.zero_copy { &[BindFlags::XDP_ZEROCOPY, BindFlags::XDP_COPY] } else { &[BindFlags::XDP_COPY] };
        for bind in binds {
            let sock_cfg = SocketConfig::builder()
                .rx_queue_size(qsize(rx_ring)?)
                .tx_queue_size(qsize(tx_ring)?)
                .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
                .xdp_flags(XdpFlags::empty())
                .bind_flags(*bind | BindFlags::XDP_USE_NEED_WAKEUP)
                .build();
            // SAFETY: the UMEM is new and not shared with any other socket, so the shared-UMEM
            // precondition of `Socket::new` (inhibit prog load when the pair is already
            // bound) does not arise; and we inhibit prog load anyway.
            match unsafe { xsk_rs::Socket::new(sock_cfg, &umem, &iface, cfg.queue) } {
                Ok((tx, rx, Some((mut fq, cq)))) => {
                    let rx_descs = descs.split_off(tx_frames as usize);
                    // SAFETY: these descriptors belong to `umem` and are in no ring yet.
                    let filled = unsafe { fq.produce(&rx_descs) };
                    return Ok(Port {
                        iface: cfg.iface,
                        device: cfg.device.clone(),
                        queue: cfg.queue,
                        umem,
                        fq,
                        cq,
                        tx,
                        rx,
                        free_tx: descs,
                        in_fill: filled,
                        outstanding_tx: 0,
                        rx_frames: rx_frames as usize,
                        tx_frames: tx_frames as usize,
                        tx_ring,
                        stats: Arc::new(PortStats::default()),
                    });
                }
                Ok(_) => last_err = "the UMEM's fill and completion rings went to another socket".into(),
                Err(e) => last_err = e.to_string(),
            }
        }
        Err(XskError::Socket { device: cfg.device.clone(), queue: cfg.queue, reason: last_err })
    }

    /// The socket's file descriptor, for the XDP program's XSKMAP.
    pub fn raw_fd(&self) -> RawFd {
        self.rx.fd().as_raw_fd()
    }

    /// (receive frames the kernel holds, transmit frames free or in flight), against the
    /// numbers set at start: equal when no frame leaked.
    pub fn frames_accounted(&self) -> ((usize, usize), (usize, usize)) {
        ((self.in_fill, self.rx_frames), (self.free_tx.len() + self.outstanding_tx, self.tx_frames))
    }

    /// Has the kernel send what the TX ring holds, with at most [`KICKS_PER_FLUSH`] kicks.
    /// In copy mode (veth, drivers without zero-copy) a kick sends at most 32 frames,
    /// synchronously, so one kick per batch of 64 left half of a busy worker's frames in a
    /// filling ring; kicking until the ring is empty instead kept the worker in the kernel
    /// for as long as the ring took to drain, while the receive processing it shares the
    /// machine with waited (the flood test's inside ring overflowed). Two kicks send what
    /// one batch brings; a kick that takes nothing (the device busy, or a zero-copy driver
    /// sending on its own time) ends the round.
    pub(super) fn kick_tx(&mut self) {
        let mut free = self.tx.nb_free_exact();
        let mut kicks = 0;
        while free < self.tx_ring && kicks < KICKS_PER_FLUSH {
            let _ = self.tx.wakeup();
            kicks += 1;
            let now = self.tx.nb_free_exact();
            if now == free {
                break;
            }
            free = now;
        }
        self.stats.tx_kicks.add(u64::from(kicks));
    }

    /// True when the TX ring holds frames the kernel has not taken yet.
    pub(super) fn tx_unsent(&mut self) -> bool {
        self.tx.nb_free_exact() < self.tx_ring
    }

    /// (frames in the TX ring the kernel has not taken yet, frames it took and has not
    /// completed): where the transmit frames that are neither free nor held by the worker are.
    pub(super) fn tx_in_kernel(&mut self) -> (usize, usize) {
        let in_ring = (self.tx_ring.saturating_sub(self.tx.nb_free_exact())) as usize;
        (in_ring, self.outstanding_tx.saturating_sub(in_ring))
    }

    /// Takes back transmitted frames from the completion ring.
    pub(super) fn reap(&mut self) {
        let mut done = [FrameDesc::default(); BATCH];
        loop {
            // SAFETY: descriptors from this port's completion ring belong to its UMEM.
            let n = unsafe { self.cq.consume(&mut done) };
            if n == 0 {
                break;
            }
            self.free_tx.extend_from_slice(&done[..n]);
            self.outstanding_tx -= n.min(self.outstanding_tx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{rx_allowance, split, BACKPRESSURE_LIMIT, BATCH};
    use std::time::Duration;

    #[test]
    fn a_worker_receives_only_what_its_shortest_transmit_side_can_send_for_a_while() {
        let ms = Duration::from_millis;
        // (free frames on the shortest transmit side, short for, frames the worker may receive)
        let table = [
            (2048, ms(0), BATCH),          // plenty: a whole batch
            (BATCH, ms(0), BATCH),         // exactly a batch
            (BATCH - 1, ms(0), BATCH - 1), // short: only what can be sent
            (10, ms(3), 10),
            (0, ms(0), 0), // nothing free: receive nothing, the ring holds the frames
            (0, BACKPRESSURE_LIMIT - ms(1), 0),
            (0, BACKPRESSURE_LIMIT, BATCH), // stuck too long: full batches again (and drops)
            (5, ms(500), BATCH),
        ];
        for (room, short_for, want) in table {
            assert_eq!(rx_allowance(room, short_for), want, "room {room}, short for {short_for:?}");
        }
    }

    #[test]
    fn three_quarters_of_the_frames_receive_and_the_rings_hold_them() {
        for (frames, rx, tx) in [(64, 48, 16), (4096, 3072, 1024), (8192, 6144, 2048), (16384, 12288, 4096)] {
            assert_eq!(split(frames), (rx, tx), "{frames} frames");
            assert_eq!(rx + tx, frames);
            // the fill ring holds every receive frame; the TX ring every transmit frame
            assert!(rx.next_power_of_two() >= rx && rx.next_power_of_two() <= frames);
            assert!(tx.is_power_of_two());
        }
    }
}
