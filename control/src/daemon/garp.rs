//! Gratuitous ARP for the addresses xgwd puts on the outside device: a router that still
//! has one of them at another box's MAC (this gateway replaced another, or the pool moved
//! here) sends the replies there until its cache entry expires — hours on some routers. An
//! ARP request for the address from the address itself, broadcast, makes every host on the
//! subnet that knows the address take the new MAC (Linux: an existing entry only). keepalived
//! does the same for its virtual addresses; the kernel does it only for a device's addresses
//! when the device comes up or changes its MAC (`arp_notify`), not for an address added later.
#![allow(unsafe_code, reason = "AF_PACKET sockets and link-layer addresses have no safe wrapper in std or rustix")]

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use etherparse::{ArpEthIpv4Packet, ArpOperation, EtherType, Ethernet2Header};

/// How many announcements, and how far apart (as `arping -U -c 3` does).
const REPEAT: (usize, Duration) = (3, Duration::from_secs(1));

/// The minimum Ethernet frame without its FCS.
const FRAME: usize = 60;

/// The gratuitous ARP request for `addr` from `mac`: broadcast, sender and target `addr`,
/// padded to the minimum frame.
pub(super) fn frame(mac: [u8; 6], addr: Ipv4Addr) -> [u8; FRAME] {
    let eth = Ethernet2Header { source: mac, destination: [0xff; 6], ether_type: EtherType::ARP };
    let arp = ArpEthIpv4Packet {
        operation: ArpOperation::REQUEST,
        sender_mac: mac,
        sender_ipv4: addr.octets(),
        // unknown, as in any request
        target_mac: [0; 6],
        target_ipv4: addr.octets(),
    };
    let mut f = [0u8; FRAME];
    f[..Ethernet2Header::LEN].copy_from_slice(&eth.to_bytes());
    f[Ethernet2Header::LEN..Ethernet2Header::LEN + ArpEthIpv4Packet::LEN].copy_from_slice(&arp.to_bytes());
    f
}

/// The MAC address of `device` (its sysfs `address`).
fn mac_of(device: &str) -> std::io::Result<[u8; 6]> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{device}/address"))?;
    let bytes: Vec<u8> = text.trim().split(':').filter_map(|h| u8::from_str_radix(h, 16).ok()).collect();
    <[u8; 6]>::try_from(bytes.as_slice())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("MAC address `{}`", text.trim())))
}

/// Sends one frame out of interface `ifindex` through `sock` (an AF_PACKET raw socket).
fn send(sock: &OwnedFd, ifindex: u32, frame: &[u8]) -> std::io::Result<()> {
    // SAFETY: sockaddr_ll is plain data; all zeroes is a valid value, filled in below.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = (libc::ETH_P_ARP as u16).to_be();
    to.sll_ifindex = i32::try_from(ifindex).unwrap_or(0);
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    // SAFETY: `frame` is valid for `frame.len()` bytes and `to` for its size for the call;
    // sendto only reads them.
    let n = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&raw const to).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Announces `addrs` on `device` (interface `ifindex`) from a thread of its own: the first
/// round at once, then [`REPEAT`]. A failure is logged, never fatal: the addresses still
/// work for every host that asks by ARP.
pub(super) fn announce(device: &str, ifindex: u32, addrs: &[Ipv4Addr]) {
    if addrs.is_empty() {
        return;
    }
    let (device, addrs) = (device.to_string(), addrs.to_vec());
    let run = move || -> std::io::Result<()> {
        let mac = mac_of(&device)?;
        // SAFETY: socket(2) with constant arguments; the result is checked before use and
        // owned (closed) by the OwnedFd from then on. Protocol 0: it receives nothing.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new, valid descriptor nothing else owns.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        for round in 0..REPEAT.0 {
            if round > 0 {
                std::thread::sleep(REPEAT.1);
            }
            for &a in &addrs {
                send(&sock, ifindex, &frame(mac, a))?;
            }
            if round == 0 {
                tracing::info!(%device, addresses = addrs.len(), "NAT pool addresses announced (gratuitous ARP)");
            }
        }
        Ok(())
    };
    let name = "xgw-garp".to_string();
    let spawned = std::thread::Builder::new().name(name).spawn(move || {
        if let Err(e) = run() {
            tracing::warn!("announcing the NAT pool addresses (gratuitous ARP): {e}");
        }
    });
    if let Err(e) = spawned {
        tracing::warn!("announcing the NAT pool addresses (gratuitous ARP): {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gratuitous_request_is_from_and_for_the_address() {
        let mac = [2, 0, 0, 0, 0, 7];
        let addr = Ipv4Addr::new(198, 51, 100, 50);
        let f = frame(mac, addr);
        let (eth, rest) = Ethernet2Header::from_slice(&f).expect("Ethernet");
        assert_eq!((eth.destination, eth.source, eth.ether_type), ([0xff; 6], mac, EtherType::ARP));
        let arp = etherparse::ArpPacket::from_slice(rest).expect("ARP").try_eth_ipv4().expect("Ethernet/IPv4");
        assert_eq!(arp.operation, ArpOperation::REQUEST);
        assert_eq!((arp.sender_mac, arp.sender_ipv4_addr()), (mac, addr), "from the address");
        assert_eq!((arp.target_mac, arp.target_ipv4_addr()), ([0; 6], addr), "for the address");
        let used = Ethernet2Header::LEN + ArpEthIpv4Packet::LEN;
        assert!(f.len() == 60 && f[used..].iter().all(|&b| b == 0), "padded with zeroes to 60 bytes");
    }
}
