use std::collections::HashMap;

use super::*;

fn be16(b: &[u8], o: usize) -> u16 {
    u16::from_be_bytes([b[o], b[o + 1]])
}

fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// A collector written from RFC 7011 alone: learns templates, splits data sets into
/// records by the templates' field lengths. Returns (sequence number, records as
/// (template, [(element, bytes)])).
type Decoded = (u32, Vec<(u16, Vec<(u16, Vec<u8>)>)>);

fn decode(msg: &[u8], templates: &mut HashMap<u16, Vec<(u16, u16)>>) -> Decoded {
    assert_eq!(be16(msg, 0), 10, "version");
    assert_eq!(usize::from(be16(msg, 2)), msg.len(), "length field");
    assert_eq!(be32(msg, 12), 7, "observation domain");
    let mut records = Vec::new();
    let mut o = 16;
    while o < msg.len() {
        let (id, len) = (be16(msg, o), usize::from(be16(msg, o + 2)));
        assert!(len >= 4 && o + len <= msg.len(), "set length");
        let body = &msg[o + 4..o + len];
        if id == 2 {
            let mut p = 0;
            while p < body.len() {
                let (tid, n) = (be16(body, p), usize::from(be16(body, p + 2)));
                let fields = (0..n).map(|i| (be16(body, p + 4 + 4 * i), be16(body, p + 6 + 4 * i))).collect();
                templates.insert(tid, fields);
                p += 4 + 4 * n;
            }
        } else {
            let t = templates.get(&id).expect("data after its template");
            let rlen: usize = t.iter().map(|f| usize::from(f.1)).sum();
            assert_eq!(body.len() % rlen, 0, "whole records");
            for r in body.chunks(rlen) {
                let mut q = 0;
                let fields = t
                    .iter()
                    .map(|&(ie, l)| {
                        let v = r[q..q + usize::from(l)].to_vec();
                        q += usize::from(l);
                        (ie, v)
                    })
                    .collect();
                records.push((id, fields));
            }
        }
        o += len;
    }
    (be32(msg, 8), records)
}

fn field(r: &[(u16, Vec<u8>)], ie: u16) -> &[u8] {
    &r.iter().find(|f| f.0 == ie).expect("element").1
}

#[test]
fn templates_then_records_decode_with_rfc_8158_elements() {
    let mut e = Encoder::new(7);
    let mut t = HashMap::new();
    let (_, none) = decode(&e.templates(1_700_000_000), &mut t);
    assert!(none.is_empty());
    assert_eq!(t.len(), 4);
    let recs = [
        Record::Session {
            create: true,
            at_ms: 1_700_000_000_123,
            proto: 6,
            pre: (0x0a00_0005, 40_000, 0xc633_6407, 443),
            post: (0xcb00_7101, 1029, 0xc633_6407, 443),
        },
        Record::Block { allocate: true, at_ms: 5, host: 0x0a00_0005, addr: 0xcb00_7101, ports: (1024, 1535) },
        Record::Block { allocate: false, at_ms: 6, host: 0x0a00_0005, addr: 0xcb00_7101, ports: (1024, 1535) },
        Record::Quota { at_ms: 7, host: 0x0a00_0006, max: 8 },
        Record::Exhausted { at_ms: 8, pool: 1 },
    ];
    let msgs = e.data(1_700_000_001, &recs);
    assert_eq!(msgs.len(), 1);
    let (seq, got) = decode(&msgs[0], &mut t);
    assert_eq!(seq, 0);
    // (template, natEvent)
    let kinds: Vec<(u16, u8)> = got.iter().map(|(id, r)| (*id, field(r, 230)[0])).collect();
    assert_eq!(kinds, vec![(256, 4), (257, 16), (257, 17), (259, 13), (258, 3)]);
    let s = &got[0].1;
    assert_eq!(field(s, 323), &1_700_000_000_123u64.to_be_bytes());
    assert_eq!(field(s, 8), &[10, 0, 0, 5]);
    assert_eq!(field(s, 225), &[203, 0, 113, 1]);
    assert_eq!(field(s, 7), &40_000u16.to_be_bytes());
    assert_eq!(field(s, 227), &1029u16.to_be_bytes());
    assert_eq!(field(s, 11), &443u16.to_be_bytes());
    let b = &got[1].1;
    assert_eq!((field(b, 361), field(b, 362), field(b, 364)), (&[4u8, 0][..], &[5u8, 255][..], &[2u8, 0][..]));
    let q = &got[3].1;
    assert_eq!(
        (field(q, 466), field(q, 473), field(q, 8)),
        (&[0u8, 0, 0, 3][..], &[0u8, 0, 0, 8][..], &[10u8, 0, 0, 6][..])
    );
    // the next message's sequence number counts the five records
    let (seq, _) = decode(&e.data(1_700_000_002, &recs[..1])[0], &mut t);
    assert_eq!(seq, 5);
}

#[test]
fn many_records_split_into_messages_that_fit_and_keep_counting() {
    let mut e = Encoder::new(7);
    let mut t = HashMap::new();
    decode(&e.templates(0), &mut t);
    let recs: Vec<Record> = (0..200u32)
        .map(|i| Record::Block { allocate: i % 3 != 0, at_ms: u64::from(i), host: i, addr: 1, ports: (1024, 1087) })
        .collect();
    let msgs = e.data(0, &recs);
    assert!(msgs.len() > 1);
    let mut seen = 0u32;
    for m in &msgs {
        assert!(m.len() <= MAX_MESSAGE);
        let (seq, got) = decode(m, &mut t);
        assert_eq!(seq, seen, "a message's sequence number counts the records before it");
        for (_, r) in &got {
            assert_eq!(be32(field(r, 8), 0), seen, "records in order");
            seen += 1;
        }
    }
    assert_eq!(seen, 200);
    assert!(e.data(0, &[]).is_empty(), "nothing to send, no message");
}
