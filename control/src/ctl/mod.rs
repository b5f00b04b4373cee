//! The daemon's side of the control protocol ([`xgw_control_proto`]): the socket server
//! ([`serve`]), the listing forms of the engine's flows, the event hub behind `conntrack
//! watch`, and the Prometheus endpoint. Items are streamed, so a million flows never sit in
//! memory at once.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use xgw_control_proto::answer::ReloadReport;
use xgw_control_proto::{Request, VersionOnly};
use xgw_dataplane::{Counters, Shared, Time};

mod events;
mod handle;
mod metrics;
mod stats;
mod views;

use events::*;
pub use events::{EventHub, Subscription};
use handle::*;
pub use metrics::{render_metrics, serve_metrics};
pub use stats::family;
use stats::*;
use views::*;
pub use views::{view, xlate};

/// One interface's XDP counters: (device, [(class, packets, bytes)]).
pub type XdpClasses = (String, Vec<(&'static str, u64, u64)>);

/// What the daemon serves from.
pub struct Daemon {
    /// Shared engine state.
    pub shared: Arc<Shared>,
    /// Every worker's counters.
    pub counters: Vec<Arc<Counters>>,
    /// Engine time base.
    pub base: Instant,
    /// Reloads the access policy from the rules file (kill denied flows?) → its report.
    pub reload: Box<dyn Fn(bool) -> Result<ReloadReport, String> + Send + Sync>,
    /// XDP per-class counters of every interface.
    pub xdp_classes: Box<dyn Fn() -> Vec<XdpClasses> + Send + Sync>,
    /// XDP steering counters of every interface (kernel, xsk, dropped, fast).
    pub xdp_steering: Box<dyn Fn() -> Vec<XdpClasses> + Send + Sync>,
    /// Packets of offloaded flows the fast path left to the engine, per interface and reason.
    pub xdp_declined: Box<dyn Fn() -> Vec<XdpClasses> + Send + Sync>,
    /// The XDP fast path, when on.
    pub offload: Option<Arc<crate::offload::XdpOffload>>,
    /// Which interfaces take the fast path's redirects, when it is on.
    pub egress: Option<Arc<crate::egress::EgressGuard>>,
    /// Every worker's counters (frames per class as the XDP program marked them).
    pub workers: Vec<Arc<xgw_dataplane::xsk::WorkerStats>>,
    /// Every AF_XDP socket's counters: device, queue, counters (frames the engine forwarded
    /// but the worker could not transmit are counted here).
    pub ports: Vec<(String, u32, Arc<xgw_dataplane::xsk::PortStats>)>,
    /// The HA pair, when configured.
    pub ha: Option<Arc<crate::ha::Ha>>,
    /// NAT event logging, when on.
    pub natlog: Option<Arc<crate::natlog::NatLog>>,
}

impl core::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Daemon").field("workers", &self.counters.len()).finish()
    }
}

impl Daemon {
    fn now(&self) -> Time {
        Time(u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }
}

/// The uid of the process at the other end of a unix socket (SO_PEERCRED).
#[expect(unsafe_code, reason = "getsockopt(SO_PEERCRED) has no safe wrapper in std or libc")]
pub fn peer_uid(s: &UnixStream) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred { pid: 0, uid: u32::MAX, gid: u32::MAX };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given; SO_PEERCRED fills a
    // `ucred` on a connected unix socket, whose fd stays open for the call.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(cred.uid)
}

/// Listens on `path` (mode 0660) and answers requests, one thread per connection, until
/// the process ends.
pub fn serve(path: &Path, d: Arc<Daemon>) -> std::io::Result<()> {
    serve_with(path, d, Arc::new(EventHub::default()))
}

/// [`serve`] with the event hub given (xgwd's sync thread subscribes to it too).
pub fn serve_with(path: &Path, d: Arc<Daemon>, hub: Arc<EventHub>) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o660))?;
    {
        let (d, hub) = (Arc::clone(&d), Arc::clone(&hub));
        std::thread::Builder::new().name("xgw-events".into()).spawn(move || pump_events(&d, &hub))?;
    }
    std::thread::Builder::new().name("xgw-control".into()).spawn(move || {
        for conn in l.incoming().flatten() {
            let d = Arc::clone(&d);
            let hub = Arc::clone(&hub);
            let _ = std::thread::Builder::new().name("xgw-control-conn".into()).spawn(move || {
                let uid = peer_uid(&conn);
                let Ok(read) = conn.try_clone() else { return };
                let mut w = std::io::BufWriter::new(conn);
                for line in BufReader::new(read).lines() {
                    let Ok(line) = line else { break };
                    // the version first: a request of another version gets "not supported",
                    // not whatever its command fails to parse as
                    let r = match serde_json::from_str::<VersionOnly>(&line) {
                        Ok(v) if v.v != xgw_control_proto::VERSION => fail(
                            &mut w,
                            format!(
                                "protocol version {} not supported (this daemon speaks {})",
                                v.v,
                                xgw_control_proto::VERSION
                            ),
                        ),
                        _ => match serde_json::from_str::<Request>(&line) {
                            Ok(req) => handle(&d, &hub, &req, uid, &mut w),
                            Err(e) => fail(&mut w, format!("bad request: {e}")),
                        },
                    };
                    if r.is_err() || w.flush().is_err() {
                        break;
                    }
                }
            });
        }
    })?;
    Ok(())
}
