//! The state-sync link's decoder on arbitrary datagrams, with and without a key: nothing
//! may panic; whatever decodes re-encodes to the same bytes (no field is lost or invented),
//! and its records either all decode or the payload is refused as a whole; records that
//! decode re-encode to the same bytes too, and applying them to a standby's tables (flows,
//! PPTP sessions and calls from arbitrary inspector bytes) never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use xgw_dataplane::{EngineConfig, Shared, Time};
use xgw_sync::apply::apply;
use xgw_sync::record::Record;
use xgw_sync::wire::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&first, d)) = data.split_first() else { return };
    let key: Option<&[u8]> = (first & 1 == 1).then_some(b"fuzz-key");
    if let Ok(m) = Message::decode(d, key) {
        // a keyed decoder only accepts a MAC'ed message, an unkeyed one both kinds: re-encode
        // the way it came
        let macced = d.len() > xgw_sync::wire::HEADER_LEN + m.payload.len();
        if key.is_some() || !macced {
            assert_eq!(m.encode(key), d, "decode/encode changed the message");
        }
        if let Ok(recs) = Record::decode_all(&m.payload, 2) {
            let mut again = Vec::new();
            for r in &recs {
                r.encode(&mut again);
            }
            assert_eq!(again, m.payload, "records changed on a round trip");
            let mut cfg = EngineConfig::example();
            cfg.limits.max_flows = 64;
            cfg.limits.event_ring = 0;
            let sh = Arc::new(Shared::new(cfg).unwrap());
            for r in &recs {
                let _ = apply(&sh, r, Time::from_secs(1));
            }
        }
    }
    // the payload decoder on its own, on raw bytes
    let _ = Record::decode_all(d, 2);
});
