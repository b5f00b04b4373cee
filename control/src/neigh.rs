//! Next hops and MAC addresses from the kernel's own tables (`/proc/net/route`,
//! `/proc/net/arp`, `/sys/class/net/*/address`), refreshed by the control thread. Workers
//! read an immutable snapshot; an unknown next hop is queued for resolution, which the control
//! thread triggers by sending a datagram to it through the kernel (so the kernel ARPs), and
//! the frame that needed it is dropped and counted — the flow itself is never given up.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam::queue::ArrayQueue;
use xgw_dataplane::xsk::Neighbours;
use xgw_dataplane::{EngineConfig, IfaceId};

#[derive(Debug, Default, Clone)]
struct IfaceTable {
    device: String,
    mac: [u8; 6],
    /// (destination, mask, gateway), longest mask first
    routes: Vec<(u32, u32, u32)>,
    arp: HashMap<u32, [u8; 6]>,
}

/// The kernel's view, per interface of the engine configuration.
#[derive(Debug)]
pub struct KernelNeighbours {
    table: ArcSwap<Vec<IfaceTable>>,
    requests: ArrayQueue<(u8, u32)>,
    devices: Vec<String>,
    last_asked: std::sync::Mutex<HashMap<(u8, u32), Instant>>,
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut m = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in &mut m {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    Some(m)
}

fn hex_addr(s: &str) -> Option<u32> {
    let v = u32::from_str_radix(s, 16).ok()?;
    Some(u32::from(Ipv4Addr::from(v.to_le_bytes())))
}

impl KernelNeighbours {
    /// Tables for the interfaces of `cfg`, read now.
    pub fn new(cfg: &EngineConfig) -> Arc<KernelNeighbours> {
        let n = Arc::new(KernelNeighbours {
            table: ArcSwap::from_pointee(Vec::new()),
            requests: ArrayQueue::new(1024),
            devices: cfg.ifaces.iter().map(|i| i.device.clone()).collect(),
            last_asked: std::sync::Mutex::new(HashMap::new()),
        });
        n.refresh();
        n
    }

    /// Re-reads routes, neighbours and interface MACs.
    pub fn refresh(&self) {
        let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
        let arp = std::fs::read_to_string("/proc/net/arp").unwrap_or_default();
        let mut out: Vec<IfaceTable> = self
            .devices
            .iter()
            .map(|d| IfaceTable {
                device: d.clone(),
                mac: std::fs::read_to_string(format!("/sys/class/net/{d}/address"))
                    .ok()
                    .and_then(|s| parse_mac(&s))
                    .unwrap_or_default(),
                ..IfaceTable::default()
            })
            .collect();
        for line in routes.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                continue;
            }
            if let (Some(t), Some(dst), Some(gw), Some(mask)) =
                (out.iter_mut().find(|t| t.device == f[0]), hex_addr(f[1]), hex_addr(f[2]), hex_addr(f[7]))
            {
                t.routes.push((dst, mask, gw));
            }
        }
        for t in &mut out {
            t.routes.sort_by_key(|r| std::cmp::Reverse(r.1.count_ones()));
        }
        for line in arp.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 6 || f[2] == "0x0" {
                continue;
            }
            if let (Some(t), Ok(ip), Some(mac)) =
                (out.iter_mut().find(|t| t.device == f[5]), f[0].parse::<Ipv4Addr>(), parse_mac(f[3]))
            {
                t.arp.insert(u32::from(ip), mac);
            }
        }
        self.table.store(Arc::new(out));
    }

    /// Asks the kernel to resolve the next hops workers could not find (at most once a
    /// second per next hop): a datagram to the discard port through the egress device.
    pub fn resolve_pending(&self) {
        let mut asked = self.last_asked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some((iface, nh)) = self.requests.pop() {
            let now = Instant::now();
            if asked.get(&(iface, nh)).is_some_and(|t| now.duration_since(*t) < Duration::from_secs(1)) {
                continue;
            }
            asked.insert((iface, nh), now);
            let Some(dev) = self.devices.get(usize::from(iface)) else { continue };
            if let Ok(s) = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None) {
                let _ = s.bind_device(Some(dev.as_bytes()));
                let to = std::net::SocketAddr::from((Ipv4Addr::from(nh), 9));
                let _ = s.send_to(b"", &to.into());
            }
        }
    }
}

impl Neighbours for KernelNeighbours {
    fn macs(&self, egress: IfaceId, dst: u32) -> Option<([u8; 6], [u8; 6])> {
        let table = self.table.load();
        let t = table.get(usize::from(egress.0))?;
        let nh =
            t.routes.iter().find(|(d, m, _)| dst & m == *d).map_or(dst, |(_, _, gw)| if *gw == 0 { dst } else { *gw });
        match t.arp.get(&nh) {
            Some(mac) => Some((t.mac, *mac)),
            None => {
                let _ = self.requests.push((egress.0, nh));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_formats() {
        assert_eq!(parse_mac("aa:bb:0c:dd:ee:0f\n"), Some([0xaa, 0xbb, 0x0c, 0xdd, 0xee, 0x0f]));
        assert_eq!(parse_mac("zz"), None);
        // /proc/net/route prints the address's bytes as a little-endian integer
        assert_eq!(hex_addr("0101A8C0"), Some(u32::from(Ipv4Addr::new(192, 168, 1, 1))));
    }
}
