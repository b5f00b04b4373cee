//! PPTP control messages (RFC 2637 §2): the common header, the message types with their
//! fixed lengths, and which 2-byte Call-ID field is rewritten in which direction.

/// The magic cookie every control message carries at offset 4.
pub const MAGIC: u32 = 0x1a2b_3c4d;
/// Length of the common header (Length, PPTP type, cookie, control type, reserved).
pub const HEADER_LEN: usize = 12;
/// Bytes of each message the inspector keeps (every field it reads lies below this).
pub const KEEP: usize = 20;

/// Control message types (RFC 2637 §2.1..2.16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[repr(u16)]
pub enum MsgType {
    /// Start-Control-Connection-Request.
    Sccrq = 1,
    /// Start-Control-Connection-Reply.
    Sccrp = 2,
    /// Stop-Control-Connection-Request.
    StopCcrq = 3,
    /// Stop-Control-Connection-Reply.
    StopCcrp = 4,
    /// Echo-Request.
    EchoRq = 5,
    /// Echo-Reply.
    EchoRp = 6,
    /// Outgoing-Call-Request.
    Ocrq = 7,
    /// Outgoing-Call-Reply.
    Ocrp = 8,
    /// Incoming-Call-Request.
    Icrq = 9,
    /// Incoming-Call-Reply.
    Icrp = 10,
    /// Incoming-Call-Connected.
    Iccn = 11,
    /// Call-Clear-Request.
    Ccrq = 12,
    /// Call-Disconnect-Notify.
    Cdn = 13,
    /// WAN-Error-Notify.
    Wen = 14,
    /// Set-Link-Info.
    Sli = 15,
}

impl MsgType {
    /// The type for a control message type number.
    pub fn from_u16(v: u16) -> Option<MsgType> {
        use MsgType::*;
        Some(match v {
            1 => Sccrq,
            2 => Sccrp,
            3 => StopCcrq,
            4 => StopCcrp,
            5 => EchoRq,
            6 => EchoRp,
            7 => Ocrq,
            8 => Ocrp,
            9 => Icrq,
            10 => Icrp,
            11 => Iccn,
            12 => Ccrq,
            13 => Cdn,
            14 => Wen,
            15 => Sli,
            _ => return None,
        })
    }

    /// The message's fixed length, header included (RFC 2637).
    pub fn length(self) -> usize {
        use MsgType::*;
        match self {
            Sccrq | Sccrp => 156,
            StopCcrq | StopCcrp | EchoRq | Ccrq => 16,
            EchoRp => 20,
            Ocrq => 168,
            Ocrp => 32,
            Icrq => 220,
            Icrp | Sli => 24,
            Iccn => 28,
            Cdn => 148,
            Wen => 40,
        }
    }
}

/// Which way a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Side {
    /// From the PNS (client) to the PAC (server).
    FromPns,
    /// From the PAC to the PNS.
    FromPac,
}

/// What a rewritten field holds and how it is translated (PNS inside, behind PAT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The PNS's own Call ID of a new call (OCRQ, ICRP): a translated ID is allocated.
    AllocPns,
    /// The PNS's own Call ID of an existing call (CCRQ): original → translated.
    PnsToXlat,
    /// The PNS's Call ID as the PAC names it (OCRP peer, ICCN, WEN, inbound SLI):
    /// translated → original.
    XlatToPns,
    /// CDN's Call ID: normally the PAC's own (untouched); restored only when it holds the
    /// translated PNS ID (a quirk of Windows RRAS).
    Cdn,
}

/// The Call-ID field a message of type `t` travelling `side` has rewritten, and where.
pub fn rewrite_field(t: MsgType, side: Side) -> Option<(usize, Field)> {
    use MsgType::*;
    match (side, t) {
        (Side::FromPns, Ocrq | Icrp) => Some((12, Field::AllocPns)),
        (Side::FromPns, Ccrq) => Some((12, Field::PnsToXlat)),
        (Side::FromPac, Ocrp) => Some((14, Field::XlatToPns)),
        (Side::FromPac, Iccn | Wen | Sli) => Some((12, Field::XlatToPns)),
        (Side::FromPac, Cdn) => Some((12, Field::Cdn)),
        _ => None,
    }
}

/// Why a message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// The magic cookie is wrong.
    BadMagic,
    /// The PPTP message type is not 1 (control).
    BadPptpType,
    /// The control message type is not 1..15.
    BadType,
    /// The Length field does not equal the type's length.
    BadLength,
    /// Reserved0 is not zero.
    BadReserved,
}

/// Validates a complete common header (`h` holds at least [`HEADER_LEN`] bytes).
pub fn check_header(h: &[u8]) -> Result<(MsgType, usize), Invalid> {
    let len = usize::from(u16::from_be_bytes([h[0], h[1]]));
    if u16::from_be_bytes([h[2], h[3]]) != 1 {
        return Err(Invalid::BadPptpType);
    }
    if u32::from_be_bytes([h[4], h[5], h[6], h[7]]) != MAGIC {
        return Err(Invalid::BadMagic);
    }
    let t = MsgType::from_u16(u16::from_be_bytes([h[8], h[9]])).ok_or(Invalid::BadType)?;
    if len != t.length() {
        return Err(Invalid::BadLength);
    }
    if h[10] != 0 || h[11] != 0 {
        return Err(Invalid::BadReserved);
    }
    Ok((t, len))
}

/// Builds a control message of type `t` with `fields` written at their offsets (tests, the
/// lab's peers). Every other byte after the header is zero.
pub fn build(t: MsgType, fields: &[(usize, u16)]) -> Vec<u8> {
    let len = t.length();
    let mut m = vec![0u8; len];
    m[0..2].copy_from_slice(&(len as u16).to_be_bytes());
    m[2..4].copy_from_slice(&1u16.to_be_bytes());
    m[4..8].copy_from_slice(&MAGIC.to_be_bytes());
    m[8..10].copy_from_slice(&(t as u16).to_be_bytes());
    for &(off, v) in fields {
        m[off..off + 2].copy_from_slice(&v.to_be_bytes());
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_match_rfc2637() {
        for (t, len) in [
            (1u16, 156),
            (2, 156),
            (3, 16),
            (4, 16),
            (5, 16),
            (6, 20),
            (7, 168),
            (8, 32),
            (9, 220),
            (10, 24),
            (11, 28),
            (12, 16),
            (13, 148),
            (14, 40),
            (15, 24),
        ] {
            assert_eq!(MsgType::from_u16(t).map(MsgType::length), Some(len), "type {t}");
        }
        assert_eq!(MsgType::from_u16(0), None);
        assert_eq!(MsgType::from_u16(16), None);
    }

    #[test]
    fn header_validation() {
        let good = build(MsgType::Ocrq, &[(12, 7)]);
        assert_eq!(check_header(&good), Ok((MsgType::Ocrq, 168)));
        let mut m = good.clone();
        m[4] = 0;
        assert_eq!(check_header(&m), Err(Invalid::BadMagic));
        let mut m = good.clone();
        m[1] = 167;
        assert_eq!(check_header(&m), Err(Invalid::BadLength));
        for l in [0u16, 200, 65535] {
            let mut m = good.clone();
            m[0..2].copy_from_slice(&l.to_be_bytes());
            assert_eq!(check_header(&m), Err(Invalid::BadLength), "length {l}");
        }
        let mut m = good.clone();
        m[9] = 16;
        assert_eq!(check_header(&m), Err(Invalid::BadType));
        let mut m = good.clone();
        m[8] = 0xff;
        m[9] = 0xff;
        assert_eq!(check_header(&m), Err(Invalid::BadType));
        let mut m = good.clone();
        m[3] = 2;
        assert_eq!(check_header(&m), Err(Invalid::BadPptpType));
        let mut m = good;
        m[11] = 1;
        assert_eq!(check_header(&m), Err(Invalid::BadReserved));
    }

    #[test]
    fn rewrite_rules_follow_the_spec() {
        use Field::{AllocPns, PnsToXlat, XlatToPns};
        use MsgType::*;
        use Side::*;
        let table = [
            (Ocrq, FromPns, Some((12, AllocPns))),
            (Icrp, FromPns, Some((12, AllocPns))),
            (Ccrq, FromPns, Some((12, PnsToXlat))),
            (Sli, FromPns, None), // carries the PAC's ID
            (Ocrp, FromPac, Some((14, XlatToPns))),
            (Iccn, FromPac, Some((12, XlatToPns))),
            (Wen, FromPac, Some((12, XlatToPns))),
            (Sli, FromPac, Some((12, XlatToPns))),
            (Cdn, FromPac, Some((12, Field::Cdn))),
            (Icrq, FromPac, None),
            (EchoRq, FromPns, None),
            (Sccrq, FromPns, None),
        ];
        for (t, s, want) in table {
            assert_eq!(rewrite_field(t, s), want, "{t:?} {s:?}");
        }
    }
}
