//! Fuzzes the advert decoder: arbitrary bytes, as IPv4 or IPv6, never panic; whatever decodes
//! re-encodes to an advert that decodes to the same fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vrrp_common::vrrp::{AdvertFields, AdvertView, MAX_LEN, emit};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (src, dst): (&[u8], &[u8]) = if selector & 1 == 0 {
        (&[192, 0, 2, 1], &[224, 0, 0, 18])
    } else {
        (
            &[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            &[0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12],
        )
    };
    let Ok((view, form)) = AdvertView::parse_verified(rest, src, dst) else {
        return;
    };
    let addrs: Vec<&[u8]> = (0..usize::from(view.count())).filter_map(|i| view.address(i)).collect();
    assert_eq!(addrs.len(), usize::from(view.count()));
    let fields = AdvertFields {
        version: view.version(),
        vrid: view.vrid(),
        priority: view.priority(),
        interval_cs: view.interval_cs(),
        auth: view.auth(),
    };
    let mut buf = [0u8; MAX_LEN];
    let len = emit(&mut buf, &fields, &addrs, form, src, dst).expect("a decoded advert re-encodes");
    let (again, _) = AdvertView::parse_verified(&buf[..len], src, dst).expect("re-encoded advert decodes");
    assert_eq!(again.vrid(), view.vrid());
    assert_eq!(again.priority(), view.priority());
    assert_eq!(again.interval_cs(), view.interval_cs());
    assert_eq!(again.auth(), view.auth());
    for i in 0..addrs.len() {
        assert_eq!(again.address(i), view.address(i));
    }
});
