//! xgw-ppp: a stand-in for pppd on both ends of a PPTP tunnel, for machines whose kernel
//! has no PPP. It speaks async-HDLC-framed PPP (0x7E flags, 0x7D escapes, FCS-16), brings
//! LCP up (Configure-Request with a Magic-Number, acking the peer's) and then sends LCP
//! Echo-Requests whose data names the sender, answering the peer's. Every frame's token is
//! logged, so a test can tell which call each frame travelled on.
//!
//! - `xgw-ppp client --server ADDR --token NAME [--seconds N] [--idle-wait S] [--log FILE]` starts pptp-linux
//!   (`--nolaunchpppd`) with one end of a socket pair as its fd 0 and talks PPP on the other.
//! - Run with any other arguments (pptpd's `ppp` option execs it as if it were pppd, with the
//!   call's pty as stdin/stdout), it is the server side: it logs to
//!   `$XGW_PPP_LOG_DIR/server-<pid>.log` and names itself after the PPTP call it serves.
#![allow(clippy::expect_used, reason = "test and benchmark tooling: a failed step ends the run with its message")]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const LCP: u16 = 0xc021;

/// FCS-16 (RFC 1662): CRC-16/X.25, reflected polynomial 0x8408.
fn fcs16(data: &[u8]) -> u16 {
    let mut fcs: u16 = 0xffff;
    for &b in data {
        fcs ^= u16::from(b);
        for _ in 0..8 {
            fcs = if fcs & 1 != 0 { (fcs >> 1) ^ 0x8408 } else { fcs >> 1 };
        }
    }
    !fcs
}

/// Async-HDLC frames a PPP packet (address/control, protocol, payload).
fn frame(proto: u16, payload: &[u8]) -> Vec<u8> {
    let mut raw = vec![0xff, 0x03];
    raw.extend_from_slice(&proto.to_be_bytes());
    raw.extend_from_slice(payload);
    let f = fcs16(&raw);
    raw.extend_from_slice(&f.to_le_bytes());
    let mut out = vec![0x7e];
    for b in raw {
        if b == 0x7e || b == 0x7d || b < 0x20 {
            out.push(0x7d);
            out.push(b ^ 0x20);
        } else {
            out.push(b);
        }
    }
    out.push(0x7e);
    out
}

/// Splits an async-HDLC byte stream into frames with a valid FCS: (protocol, payload).
#[derive(Default)]
struct Deframer {
    buf: Vec<u8>,
    esc: bool,
}

impl Deframer {
    fn push(&mut self, bytes: &[u8], out: &mut Vec<(u16, Vec<u8>)>) {
        for &b in bytes {
            match b {
                0x7e => {
                    let f = std::mem::take(&mut self.buf);
                    if f.len() >= 4 && fcs16(&f[..f.len() - 2]).to_le_bytes() == [f[f.len() - 2], f[f.len() - 1]] {
                        let body = &f[..f.len() - 2];
                        let body = if body.starts_with(&[0xff, 0x03]) { &body[2..] } else { body };
                        if body.len() >= 2 {
                            out.push((u16::from_be_bytes([body[0], body[1]]), body[2..].to_vec()));
                        }
                    }
                    self.esc = false;
                }
                0x7d => self.esc = true,
                _ if self.esc => {
                    self.buf.push(b ^ 0x20);
                    self.esc = false;
                }
                _ => self.buf.push(b),
            }
        }
    }
}

fn lcp(code: u8, id: u8, data: &[u8]) -> Vec<u8> {
    let mut p = vec![code, id];
    p.extend_from_slice(&((data.len() + 4) as u16).to_be_bytes());
    p.extend_from_slice(data);
    frame(LCP, &p)
}

struct Peer<W: Write> {
    out: W,
    log: Box<dyn Write>,
    token: String,
    magic: [u8; 4],
    acked_mine: bool,
    acked_theirs: bool,
    opened: bool,
    seq: u32,
}

impl<W: Write> Peer<W> {
    fn logln(&mut self, s: &str) {
        let _ = writeln!(self.log, "{s}");
        let _ = self.log.flush();
    }

    fn send(&mut self, f: &[u8]) {
        let _ = self.out.write_all(f);
        let _ = self.out.flush();
    }

    fn tick(&mut self) {
        if !self.acked_mine {
            let mut opt = vec![5, 6];
            opt.extend_from_slice(&self.magic);
            let f = lcp(1, 1, &opt);
            self.send(&f);
        } else if self.opened {
            self.seq += 1;
            let mut d = self.magic.to_vec();
            d.extend_from_slice(format!("{}#{}", self.token, self.seq).as_bytes());
            let f = lcp(9, (self.seq & 0xff) as u8, &d);
            self.send(&f);
        }
    }

    fn on_lcp(&mut self, p: &[u8]) {
        if p.len() < 4 {
            return;
        }
        let (code, id) = (p[0], p[1]);
        let data = &p[4..usize::from(u16::from_be_bytes([p[2], p[3]])).clamp(4, p.len())];
        match code {
            1 => {
                // Configure-Request: ack whatever the peer asks
                let f = lcp(2, id, data);
                self.send(&f);
                self.acked_theirs = true;
            }
            2 => self.acked_mine = true,
            9 => {
                let tok = String::from_utf8_lossy(data.get(4..).unwrap_or_default()).to_string();
                self.logln(&format!("echo-request from {tok}"));
                let mut d = self.magic.to_vec();
                d.extend_from_slice(data.get(4..).unwrap_or_default());
                let f = lcp(10, id, &d);
                self.send(&f);
            }
            10 => {
                let tok = String::from_utf8_lossy(data.get(4..).unwrap_or_default()).to_string();
                self.logln(&format!("echo-reply {tok}"));
            }
            _ => {}
        }
        if self.acked_mine && self.acked_theirs && !self.opened {
            self.opened = true;
            self.logln("lcp open");
        }
    }
}

fn run<R: Read + Send + 'static, W: Write>(mut input: R, peer: &mut Peer<W>, seconds: u64) {
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut b = [0u8; 4096];
        while let Ok(n) = input.read(&mut b) {
            if n == 0 || tx.send(b[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let mut last = Instant::now() - Duration::from_secs(1);
    let mut de = Deframer::default();
    let mut frames = Vec::new();
    while seconds == 0 || start.elapsed() < Duration::from_secs(seconds) {
        if last.elapsed() >= Duration::from_millis(200) {
            peer.tick();
            last = Instant::now();
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(bytes) => {
                de.push(&bytes, &mut frames);
                for (proto, payload) in frames.drain(..) {
                    if proto == LCP {
                        peer.on_lcp(&payload);
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                peer.logln("eof");
                return;
            }
        }
    }
    peer.logln("done");
}

fn magic() -> [u8; 4] {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(7);
    (t ^ std::process::id().rotate_left(16)).to_be_bytes()
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("client") {
        let server = arg(&args, "--server").expect("--server ADDR");
        let token = arg(&args, "--token").expect("--token NAME");
        let seconds: u64 = arg(&args, "--seconds").and_then(|s| s.parse().ok()).unwrap_or(0);
        let log: Box<dyn Write> = match arg(&args, "--log") {
            Some(p) => Box::new(std::fs::File::create(p).expect("log file")),
            None => Box::new(std::io::stdout()),
        };
        // --idle-wait N: pptp sends a control Echo-Request after N seconds without a message;
        // it gives the reply 15 s (pptp's own default is 60; left to itself with a short idle
        // wait it gives up after about as long, which a server slowed by a busy machine misses)
        let idle: Vec<String> = arg(&args, "--idle-wait")
            .map(|n| vec!["--idle-wait".into(), n, "--max-echo-wait".into(), "15".into()])
            .unwrap_or_default();
        let (mine, theirs) = UnixStream::pair().expect("socketpair");
        let mut child = Command::new("pptp")
            .args([&server, "--nolaunchpppd", "--nohostroute", "--loglevel", "2", "--logstring", &token])
            .args(&idle)
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .spawn()
            .expect("start pptp (Debian package pptp-linux)");
        let input = mine.try_clone().expect("dup");
        let mut peer = Peer {
            out: mine,
            log,
            token,
            magic: magic(),
            acked_mine: false,
            acked_theirs: false,
            opened: false,
            seq: 0,
        };
        peer.logln(&format!("pptp pid {}", child.id()));
        run(input, &mut peer, seconds);
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let _ = child.wait();
    } else {
        // server side, exec'd by pptpctrl in place of pppd: the pty is stdin/stdout
        let _ = Command::new("stty").args(["raw", "-echo"]).stdin(Stdio::inherit()).status();
        let dir = std::env::var("XGW_PPP_LOG_DIR").unwrap_or_else(|_| "/tmp".into());
        let pid = std::process::id();
        let log: Box<dyn Write> =
            Box::new(std::fs::File::create(format!("{dir}/server-{pid}.log")).expect("server log"));
        // pptpctrl names itself "pptpd [PEER:PNS_ID - PAC_ID]" (hex)
        let call = std::fs::read_to_string(format!("/proc/{}/cmdline", std::os::unix::process::parent_id()))
            .unwrap_or_default()
            .replace('\0', " ");
        let mut peer = Peer {
            out: std::io::stdout(),
            log,
            token: format!("server-{pid}"),
            magic: magic(),
            acked_mine: false,
            acked_theirs: false,
            opened: false,
            seq: 0,
        };
        peer.logln(&format!("call {}", call.trim()));
        run(std::io::stdin(), &mut peer, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fcs_matches_rfc1662_check_value() {
        // RFC 1662: the FCS of the data plus its own FCS leaves the "good" residue 0xf0b8
        let data = b"123456789";
        let f = fcs16(data);
        let mut all = data.to_vec();
        all.extend_from_slice(&f.to_le_bytes());
        let mut fcs: u16 = 0xffff;
        for &b in &all {
            fcs ^= u16::from(b);
            for _ in 0..8 {
                fcs = if fcs & 1 != 0 { (fcs >> 1) ^ 0x8408 } else { fcs >> 1 };
            }
        }
        assert_eq!(fcs, 0xf0b8);
    }

    #[test]
    fn frames_round_trip_through_escaping() {
        let payload = [0x7e, 0x7d, 0x01, 0x11, 0x20, 0xff];
        let f = frame(LCP, &payload);
        assert!(f[1..f.len() - 1].iter().all(|&b| b != 0x7e));
        let mut d = Deframer::default();
        let mut out = Vec::new();
        d.push(&f[..5], &mut out);
        d.push(&f[5..], &mut out);
        assert_eq!(out, vec![(LCP, payload.to_vec())]);
        // a corrupted frame is discarded
        let mut bad = f.clone();
        bad[4] ^= 1;
        d.push(&bad, &mut out);
        assert_eq!(out.len(), 1);
    }
}
