//! The `stats` answer: every counter family, each rendered from its one list.

use xgw_control_proto::answer::{self, DeviceCounters, Egress, Outside, PacketsBytes, PortCounters, XdpClasses};
use xgw_dataplane::{DropReason, Traffic};

use super::*;

/// A family's counters as a map, from the family's one list.
pub fn family(list: &[(&'static str, &'static str, u64)]) -> answer::Counters {
    list.iter().map(|(n, _, v)| (n.to_string(), *v)).collect()
}

/// The engine's traffic family summed over the workers: (name, help, value).
pub(super) fn traffic(d: &Daemon) -> Vec<(&'static str, &'static str, u64)> {
    let mut sum = Traffic::default().list();
    for c in &d.counters {
        for (s, (_, _, v)) in sum.iter_mut().zip(c.traffic.list()) {
            s.2 += v;
        }
    }
    sum
}

fn per_device(list: Vec<crate::ctl::XdpClasses>) -> Vec<DeviceCounters> {
    list.into_iter()
        .map(|(device, st)| DeviceCounters {
            device,
            counters: st.into_iter().map(|(n, p, _)| (n.to_string(), p)).collect(),
        })
        .collect()
}

/// Every counter of the daemon.
pub(super) fn stats(d: &Daemon) -> answer::Stats {
    let drops = DropReason::ALL
        .iter()
        .map(|r| (r.name().to_string(), d.counters.iter().map(|c| c.drops(*r)).sum::<u64>()))
        .filter(|(_, v)| *v != 0)
        .collect();
    let xdp = (d.xdp_classes)()
        .into_iter()
        .map(|(device, cls)| XdpClasses {
            device,
            classes: cls
                .into_iter()
                .filter(|c| c.1 > 0)
                .map(|(n, packets, bytes)| (n.to_string(), PacketsBytes { packets, bytes }))
                .collect(),
        })
        .collect();
    let fl = &d.shared.flows;
    let mut conntrack = family(&fl.stats.list());
    conntrack.insert("entries".into(), fl.len() as u64);
    conntrack.insert("limit".into(), fl.capacity() as u64);
    let mut pptp = family(&d.shared.pptp.stats.list());
    pptp.insert("calls_in_progress".into(), d.shared.pptp.calls_in_progress() as u64);
    answer::Stats {
        engine: family(&traffic(d)),
        workers: d.counters.len(),
        drops,
        conntrack,
        pptp,
        outside: Outside {
            address: std::net::Ipv4Addr::from(d.shared.outside_addr()).to_string(),
            prefix_len: d.shared.outside_net().1,
            changes: d.shared.address_changes.get(),
            flushed: d.shared.address_flushed.get(),
        },
        xdp,
        xdp_steering: per_device((d.xdp_steering)()),
        xdp_declined: per_device((d.xdp_declined)()),
        offload: d.offload.as_ref().map(|o| {
            let mut m = family(&fl.offload.stats.list());
            m.extend(family(&o.stats.list()));
            m.insert("flows".into(), o.len() as u64);
            m
        }),
        egress: d.egress.as_ref().map_or(vec![], |g| {
            g.egress()
                .iter()
                .map(|e| Egress {
                    device: e.device.clone(),
                    state: e.state().name().into(),
                    refusals: e.refusals.get(),
                })
                .collect()
        }),
        worker_classes: xgw_ebpf_common::class::NAMES
            .iter()
            .enumerate()
            .map(|(i, n)| (n.to_string(), d.workers.iter().map(|w| w.classes[i].get()).sum::<u64>()))
            .filter(|(_, v)| *v != 0)
            .collect(),
        worker_unclassified: d.workers.iter().map(|w| w.unclassified.get()).sum(),
        ports: d
            .ports
            .iter()
            .map(|(device, queue, st)| PortCounters {
                device: device.clone(),
                queue: *queue,
                counters: family(&st.list()),
            })
            .collect(),
        blocks: d.shared.blocks.as_ref().map(|b| {
            let mut m = family(&b.stats.list());
            m.insert("held".into(), b.list().len() as u64);
            m.insert("free".into(), b.free_counts().iter().map(|(_, n)| *n as u64).sum());
            m
        }),
        nat_log: d.natlog.as_ref().map(|l| family(&l.stats.list())),
    }
}
