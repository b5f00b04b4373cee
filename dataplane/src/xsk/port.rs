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
    /// UMEM frames (half for receiving, half for transmitting).
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
        /// Transmit kicks (sendto; in copy mode the kernel sends at most 32 frames a kick).
        tx_kicks,
    }
}

pub(super) const FRAME_SIZE: u32 = 2048;

pub(super) const BATCH: usize = 64;

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
    /// Counters.
    pub stats: Arc<PortStats>,
}

impl core::fmt::Debug for Port {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Port").field("device", &self.device).field("queue", &self.queue).finish()
    }
}

pub(super) fn qsize(n: u32) -> Result<QueueSize, XskError> {
    QueueSize::new(n).map_err(|e| XskError::Config(e.to_string()))
}

impl Port {
    /// Opens an AF_XDP socket on `cfg.device` queue `cfg.queue`. libxdp does not load a
    /// program: the caller puts [`Port::raw_fd`] into its own XSKMAP.
    pub fn open(cfg: &PortConfig) -> Result<Port, XskError> {
        let frames = cfg.frames.next_power_of_two().max(64);
        let half = frames / 2;
        let umem_cfg = UmemConfig::builder()
            .frame_size(FrameSize::new(FRAME_SIZE).map_err(|e| XskError::Config(e.to_string()))?)
            .fill_queue_size(qsize(half)?)
            .comp_queue_size(qsize(half)?)
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
                .rx_queue_size(qsize(half)?)
                .tx_queue_size(qsize(half)?)
                .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
                .xdp_flags(XdpFlags::empty())
                .bind_flags(*bind | BindFlags::XDP_USE_NEED_WAKEUP)
                .build();
            // SAFETY: the UMEM is new and not shared with any other socket, so the shared-UMEM
            // precondition of `Socket::new` (inhibit prog load when the pair is already
            // bound) does not arise; and we inhibit prog load anyway.
            match unsafe { xsk_rs::Socket::new(sock_cfg, &umem, &iface, cfg.queue) } {
                Ok((tx, rx, Some((mut fq, cq)))) => {
                    let rx_descs = descs.split_off(half as usize);
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
                        rx_frames: half as usize,
                        tx_frames: half as usize,
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
