//! One test per rule, on a simulated clock (no sleeping: time is an argument).

use std::net::IpAddr;

use super::*;

const IFACE: u32 = 1;
const SEC: u64 = 1_000_000;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn vips() -> Vec<IpAddr> {
    vec![ip("192.0.2.100")]
}

fn cfg(priority: u8, primary: &str) -> InstanceConfig {
    let mut c = InstanceConfig::new("vi", IFACE, 51, ip(primary), vips());
    c.priority = priority;
    c
}

fn engine(c: InstanceConfig) -> Engine {
    Engine::new(vec![c], vec![]).unwrap()
}

fn drain(e: &mut Engine) -> Vec<Action> {
    std::iter::from_fn(|| e.poll_action()).collect()
}

/// An advert as a peer would send it (multicast, pseudo-header checksum).
fn advert(version: Version, priority: u8, interval_cs: u16, src: &str) -> (Vec<u8>, IpAddr) {
    let a = Advert {
        version,
        vrid: 51,
        priority,
        interval_cs,
        addrs: vips(),
        auth: Auth::None,
    };
    let src = ip(src);
    let bytes = a
        .encode(ChecksumForm::PseudoHeader, src, multicast_group(Family::V4))
        .unwrap();
    (bytes, src)
}

fn receive(e: &mut Engine, now: u64, priority: u8, src: &str) -> Result<(), Discard> {
    let (bytes, src) = advert(Version::V3, priority, 100, src);
    e.handle_packet(Time(now), &rx(&bytes, src, 255))
}

fn rx(bytes: &[u8], src: IpAddr, ttl: u8) -> Received<'_> {
    Received {
        iface: IFACE,
        src,
        dst: multicast_group(advert::family_of(&src)),
        ttl,
        bytes,
    }
}

fn state(e: &Engine) -> State {
    e.status()[0].state
}

fn sent_priorities(actions: &[Action]) -> Vec<u8> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { bytes, .. } => Some(bytes[2]),
            _ => None,
        })
        .collect()
}

/// Runs timers until `until` (inclusive), returning every action.
fn run_until(e: &mut Engine, until: u64) -> Vec<Action> {
    let mut all = Vec::new();
    while let Some(t) = e.poll_timeout() {
        if t.0 > until {
            break;
        }
        e.handle_timeout(t);
        all.extend(drain(e));
    }
    all
}

/// A tracked object `name` of `weight`, not reversed, starting at `initial`.
fn track(name: &str, weight: i32, initial: TrackInput) -> TrackConfig {
    TrackConfig {
        name: name.into(),
        weight,
        reverse: false,
        initial,
    }
}

/// Master_Down_Interval for priority 100 and 1 s: 3 s + (256 - 100) / 256 s.
const MDI_100: u64 = 3 * SEC + 156 * SEC / 256;

#[test]
fn non_owner_starts_as_backup_and_takes_over_after_master_down_interval() {
    let mut e = engine(cfg(100, "192.0.2.1"));
    e.start(Time(0));
    let actions = drain(&mut e);
    assert_eq!(state(&e), State::Backup);
    assert!(actions.contains(&Action::DataPlane {
        key: e.status()[0].key,
        role: vrrp_common::role::BACKUP
    }));
    assert_eq!(e.poll_timeout(), Some(Time(MDI_100)));
    e.handle_timeout(Time(MDI_100 - 1));
    assert_eq!(state(&e), State::Backup);
    e.handle_timeout(Time(MDI_100));
    assert_eq!(state(&e), State::Master);
    let actions = drain(&mut e);
    assert_eq!(sent_priorities(&actions), vec![100]);
    assert!(matches!(
        actions.last(),
        Some(Action::StateChanged {
            new: State::Master,
            reason: Reason::MasterDown { last_master: None },
            ..
        })
    ));
}

#[test]
fn promotion_orders_its_effects_advert_vips_data_plane_announce() {
    let mut e = engine(cfg(100, "192.0.2.1"));
    e.start(Time(0));
    drain(&mut e);
    e.handle_timeout(Time(MDI_100));
    let kinds: Vec<&str> = drain(&mut e)
        .iter()
        .map(|a| match a {
            Action::Send { .. } => "send",
            Action::AddVips { .. } => "add",
            Action::DataPlane { .. } => "dataplane",
            Action::Announce { .. } => "announce",
            Action::StateChanged { .. } => "state",
            Action::RemoveVips { .. } => "remove",
            Action::Unpace { .. } => "unpace",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "send",
            "add",
            "dataplane",
            "announce",
            "announce",
            "announce",
            "announce",
            "announce",
            "state"
        ]
    );
}

#[test]
fn address_owner_is_master_at_once_with_priority_255() {
    let mut e = engine(cfg(255, "192.0.2.1"));
    e.start(Time(0));
    assert_eq!(state(&e), State::Master);
    assert_eq!(sent_priorities(&drain(&mut e)), vec![255]);
}

#[test]
fn tracking_never_lowers_the_address_owner() {
    let mut c = cfg(255, "192.0.2.1");
    c.tracks.push(track("chk", -50, TrackInput::Up));
    let mut e = engine(c);
    e.start(Time(0));
    e.set_track(Time(1), &"chk".into(), TrackInput::Down);
    assert_eq!(e.status()[0].effective_priority, 255);
}

#[test]
fn a_script_and_a_file_of_one_name_are_two_tracks() {
    let mut c = cfg(100, "192.0.2.1");
    for (name, weight, initial) in [
        (TrackId::Script("x".into()), 0, TrackInput::Up),
        (TrackId::File("x".into()), -10, TrackInput::Value(0)),
    ] {
        c.tracks.push(TrackConfig {
            name,
            weight,
            reverse: false,
            initial,
        });
    }
    let mut e = engine(c);
    e.start(Time(0));
    // The file's value moves the priority; the script (weight 0) is untouched.
    e.set_track(Time(1), &TrackId::File("x".into()), TrackInput::Value(2));
    assert_eq!(e.status()[0].effective_priority, 80);
    assert_ne!(state(&e), State::Fault);
    // The script failing is a Fault; the file's value stays.
    e.set_track(Time(2), &TrackId::Script("x".into()), TrackInput::Down);
    assert_eq!(state(&e), State::Fault);
    assert_eq!(e.status()[0].effective_priority, 80);
}

#[test]
fn backup_rearms_master_down_timer_on_each_advert() {
    let mut e = engine(cfg(100, "192.0.2.1"));
    e.start(Time(0));
    receive(&mut e, SEC, 200, "192.0.2.2").unwrap();
    assert_eq!(e.poll_timeout(), Some(Time(SEC + MDI_100)));
    let master = e.status()[0].master.unwrap();
    assert_eq!((master.addr, master.priority), (ip("192.0.2.2"), 200));
}

#[test]
fn priority_zero_makes_a_backup_wait_only_skew_time() {
    let mut e = engine(cfg(100, "192.0.2.1"));
    e.start(Time(0));
    receive(&mut e, SEC, 200, "192.0.2.2").unwrap();
    receive(&mut e, 2 * SEC, 0, "192.0.2.2").unwrap();
    let skew = 156 * SEC / 256;
    assert_eq!(e.poll_timeout(), Some(Time(2 * SEC + skew)));
    e.handle_timeout(Time(2 * SEC + skew));
    assert_eq!(state(&e), State::Master);
    assert!(drain(&mut e).iter().any(|a| matches!(
        a,
        Action::StateChanged {
            reason: Reason::MasterResigned { .. },
            ..
        }
    )));
}

#[test]
fn v3_backup_learns_the_masters_interval() {
    let mut e = engine(cfg(100, "192.0.2.1"));
    e.start(Time(0));
    let (bytes, src) = advert(Version::V3, 200, 50, "192.0.2.2");
    e.handle_packet(Time(SEC), &rx(&bytes, src, 255)).unwrap();
    // 3 x 0.5 s + (156 x 0.5 s) / 256: the skew scales with the learned interval.
    let mdi = 3 * SEC / 2 + 156 * (SEC / 2) / 256;
    assert_eq!(e.poll_timeout(), Some(Time(SEC + mdi)));
    assert_eq!(e.status()[0].master_adver_interval_cs, 50);
}

#[test]
fn skew_time_never_truncates_to_zero_at_short_intervals() {
    let mut c = cfg(254, "192.0.2.1");
    c.advert_interval_cs = 1;
    let mut e = engine(c);
    e.start(Time(0));
    // 3 x 10 ms + (2 x 10 ms) / 256 = 30 ms + 78 us.
    assert_eq!(e.poll_timeout(), Some(Time(30_000 + 78)));
}

#[test]
fn v2_uses_the_rfc_3768_skew_and_discards_other_intervals() {
    let mut c = cfg(100, "192.0.2.1");
    c.version = Version::V2;
    c.advert_interval_cs = 200;
    let mut e = engine(c);
    e.start(Time(0));
    // 3 x 2 s + (256 - 100) / 256 s, independent of the interval.
    assert_eq!(e.poll_timeout(), Some(Time(6 * SEC + 156 * SEC / 256)));
    let (bytes, src) = advert(Version::V2, 200, 100, "192.0.2.2");
    assert_eq!(
        e.handle_packet(Time(SEC), &rx(&bytes, src, 255)),
        Err(Discard::IntervalMismatch)
    );
    assert_eq!(e.poll_timeout(), Some(Time(6 * SEC + 156 * SEC / 256)));
    let (bytes, src) = advert(Version::V2, 200, 200, "192.0.2.2");
    e.handle_packet(Time(SEC), &rx(&bytes, src, 255)).unwrap();
    assert_eq!(e.poll_timeout(), Some(Time(7 * SEC + 156 * SEC / 256)));
}

#[test]
fn v2_checks_the_simple_password() {
    let mut c = cfg(100, "192.0.2.1");
    c.version = Version::V2;
    c.auth = Auth::Simple(*b"secret1\0");
    let mut e = engine(c);
    e.start(Time(0));
    let mut a = Advert {
        version: Version::V2,
        vrid: 51,
        priority: 200,
        interval_cs: 100,
        addrs: vips(),
        auth: Auth::Simple(*b"wrong\0\0\0"),
    };
    let src = ip("192.0.2.2");
    let dst = multicast_group(Family::V4);
    let bytes = a.encode(ChecksumForm::Plain, src, dst).unwrap();
    assert_eq!(
        e.handle_packet(Time(SEC), &rx(&bytes, src, 255)),
        Err(Discard::AuthMismatch)
    );
    a.auth = Auth::Simple(*b"secret1\0");
    let bytes = a.encode(ChecksumForm::Plain, src, dst).unwrap();
    assert_eq!(e.handle_packet(Time(SEC), &rx(&bytes, src, 255)), Ok(()));
}

#[test]
fn preempt_discards_a_lower_priority_master_and_takes_over() {
    let mut e = engine(cfg(200, "192.0.2.1"));
    e.start(Time(0));
    let mdi_200 = 3 * SEC + 56 * SEC / 256;
    for t in 1..=3 {
        receive(&mut e, t * SEC, 100, "192.0.2.2").unwrap();
    }
    // The lower adverts did not rearm the timer.
    assert_eq!(e.poll_timeout(), Some(Time(mdi_200)));
    e.handle_timeout(Time(mdi_200));
    assert_eq!(state(&e), State::Master);
    assert!(drain(&mut e).iter().any(|a| matches!(
        a,
        Action::StateChanged {
            reason: Reason::Preempted { priority: 100, .. },
            ..
        }
    )));
}

#[test]
fn nopreempt_keeps_a_lower_priority_master() {
    let mut c = cfg(200, "192.0.2.1");
    c.preempt = false;
    let mut e = engine(c);
    e.start(Time(0));
    for t in 1..=30 {
        receive(&mut e, t * SEC, 100, "192.0.2.2").unwrap();
        e.handle_timeout(Time(t * SEC));
    }
    assert_eq!(state(&e), State::Backup);
}

#[test]
fn preempt_delay_holds_back_preemption_then_preempts() {
    let mut c = cfg(200, "192.0.2.1");
    c.preempt_delay_us = 10 * SEC;
    let mut e = engine(c);
    e.start(Time(0));
    let mut became_master = None;
    for t in 1..=20 {
        if state(&e) == State::Backup {
            let _ = receive(&mut e, t * SEC, 100, "192.0.2.2");
        }
        run_until(&mut e, (t + 1) * SEC - 1);
        if became_master.is_none() && state(&e) == State::Master {
            became_master = Some(t);
        }
    }
    // Lower adverts from 1 s on: accepted until 11 s, then the timer runs out 3.2 s later.
    let t = became_master.expect("preempted in the end");
    assert!((13..=15).contains(&t), "became master at {t} s");
}

#[test]
fn master_yields_to_a_higher_priority_stopping_the_data_plane_first() {
    let mut e = engine(cfg(100, "192.0.2.1"));
    e.start(Time(0));
    e.handle_timeout(Time(MDI_100));
    drain(&mut e);
    receive(&mut e, 5 * SEC, 200, "192.0.2.2").unwrap();
    assert_eq!(state(&e), State::Backup);
    let actions = drain(&mut e);
    assert!(matches!(
        actions[0],
        Action::DataPlane {
            role: vrrp_common::role::BACKUP,
            ..
        }
    ));
    assert!(matches!(actions[1], Action::RemoveVips { .. }));
    assert!(matches!(
        actions[2],
        Action::StateChanged {
            new: State::Backup,
            ..
        }
    ));
    assert_eq!(actions.len(), 3);
}

#[test]
fn equal_priority_goes_to_the_higher_address() {
    let mut e = engine(cfg(100, "192.0.2.5"));
    e.start(Time(0));
    e.handle_timeout(Time(MDI_100));
    drain(&mut e);
    receive(&mut e, 5 * SEC, 100, "192.0.2.4").unwrap();
    assert_eq!(state(&e), State::Master);
    receive(&mut e, 6 * SEC, 100, "192.0.2.6").unwrap();
    assert_eq!(state(&e), State::Backup);
}

#[test]
fn master_answers_a_lower_priority_advert_at_once_unless_told_not_to() {
    for answer in [true, false] {
        let mut c = cfg(200, "192.0.2.1");
        c.answer_lower_priority = answer;
        let mut e = engine(c);
        e.start(Time(0));
        run_until(&mut e, 4 * SEC);
        assert_eq!(state(&e), State::Master);
        drain(&mut e);
        receive(&mut e, 4 * SEC + 500_000, 100, "192.0.2.2").unwrap();
        let sent = sent_priorities(&drain(&mut e));
        assert_eq!(
            sent,
            if answer { vec![200] } else { vec![] },
            "answer={answer}"
        );
        assert_eq!(state(&e), State::Master);
    }
}

#[test]
fn master_announces_again_on_a_lower_priority_advert_as_keepalived_does() {
    for (repeat, delay_us) in [(5, 5 * SEC), (2, 0), (0, 0)] {
        let mut c = cfg(200, "192.0.2.1");
        c.announce.lower_prio_repeat = repeat;
        c.announce.lower_prio_delay_us = delay_us;
        c.announce.delay_us = 0;
        let mut e = engine(c);
        e.start(Time(0));
        run_until(&mut e, 4 * SEC);
        drain(&mut e);
        let heard = 4 * SEC + 500_000;
        receive(&mut e, heard, 100, "192.0.2.2").unwrap();
        let now = drain(&mut e)
            .iter()
            .filter(|a| matches!(a, Action::Announce { .. }))
            .count();
        assert_eq!(now, repeat as usize, "repeat {repeat}");
        let later = run_until(&mut e, heard + delay_us + SEC / 2)
            .iter()
            .filter(|a| matches!(a, Action::Announce { .. }))
            .count();
        let want = if delay_us > 0 { repeat as usize } else { 0 };
        assert_eq!(later, want, "repeat {repeat}, delay {delay_us}");
    }
}

#[test]
fn higher_prio_send_advert_sends_one_before_yielding() {
    for before in [false, true] {
        let mut c = cfg(100, "192.0.2.1");
        c.advert_before_yield = before;
        let mut e = engine(c);
        e.start(Time(0));
        e.handle_timeout(Time(MDI_100));
        drain(&mut e);
        receive(&mut e, 5 * SEC, 200, "192.0.2.2").unwrap();
        assert_eq!(state(&e), State::Backup);
        let sent = sent_priorities(&drain(&mut e));
        assert_eq!(sent, if before { vec![100] } else { vec![] });
    }
}

#[test]
fn down_timer_adverts_sets_master_down_interval() {
    let mut c = cfg(100, "192.0.2.1");
    c.down_factor = 5;
    let mut e = engine(c);
    e.start(Time(0));
    run_until(&mut e, 5 * SEC);
    assert_eq!(state(&e), State::Backup, "3 intervals are not enough");
    run_until(&mut e, 5 * SEC + 156 * SEC / 256);
    assert_eq!(state(&e), State::Master);
}

#[test]
fn master_answers_priority_zero_with_an_advert() {
    let mut e = engine(cfg(100, "192.0.2.1"));
    e.start(Time(0));
    e.handle_timeout(Time(MDI_100));
    drain(&mut e);
    receive(&mut e, 5 * SEC, 0, "192.0.2.2").unwrap();
    assert_eq!(sent_priorities(&drain(&mut e)), vec![100]);
    assert_eq!(e.poll_timeout(), Some(Time(6 * SEC)));
}

#[test]
fn multicast_adverts_need_ttl_255() {
    let mut e = engine(cfg(100, "192.0.2.1"));
    e.start(Time(0));
    let (bytes, src) = advert(Version::V3, 200, 100, "192.0.2.2");
    assert_eq!(
        e.handle_packet(Time(SEC), &rx(&bytes, src, 254)),
        Err(Discard::Ttl)
    );
    assert_eq!(
        e.poll_timeout(),
        Some(Time(MDI_100)),
        "a discarded advert changed the timer"
    );
    assert_eq!(
        e.status()[0].counters.discarded.get(&Discard::Ttl),
        Some(&1)
    );
}

#[test]
fn unicast_accepts_only_configured_peers_and_sends_to_each() {
    let mut c = cfg(100, "192.0.2.1");
    c.transport = Transport::Unicast {
        peers: vec![ip("192.0.2.2"), ip("192.0.2.3")],
        check_ttl: false,
    };
    c.priority = 255;
    let mut e = engine(c);
    e.start(Time(0));
    let dsts: Vec<IpAddr> = drain(&mut e)
        .iter()
        .filter_map(|a| match a {
            Action::Send { dst, .. } => Some(*dst),
            _ => None,
        })
        .collect();
    assert_eq!(dsts, vec![ip("192.0.2.2"), ip("192.0.2.3")]);
    let (bytes, src) = advert(Version::V3, 100, 100, "192.0.2.9");
    assert_eq!(
        e.handle_packet(Time(SEC), &rx(&bytes, src, 255)),
        Err(Discard::PeerNotAllowed)
    );
    // A configured peer through a router (TTL < 255) is fine when the TTL check is off.
    let (bytes, src) = advert(Version::V3, 100, 100, "192.0.2.2");
    assert_eq!(e.handle_packet(Time(SEC), &rx(&bytes, src, 64)), Ok(()));
}

#[test]
fn unicast_ttl_check_is_configurable() {
    let mut c = cfg(100, "192.0.2.1");
    c.transport = Transport::Unicast {
        peers: vec![ip("192.0.2.2")],
        check_ttl: true,
    };
    let mut e = engine(c);
    e.start(Time(0));
    let (bytes, src) = advert(Version::V3, 200, 100, "192.0.2.2");
    assert_eq!(
        e.handle_packet(Time(SEC), &rx(&bytes, src, 64)),
        Err(Discard::Ttl)
    );
}

#[test]
fn other_versions_own_adverts_and_unknown_vrids_are_discarded_and_counted() {
    let mut e = engine(cfg(100, "192.0.2.1"));
    e.start(Time(0));
    let (bytes, src) = advert(Version::V2, 200, 100, "192.0.2.2");
    assert_eq!(
        e.handle_packet(Time(SEC), &rx(&bytes, src, 255)),
        Err(Discard::VersionMismatch)
    );
    assert_eq!(
        receive(&mut e, SEC, 200, "192.0.2.1"),
        Err(Discard::OwnAdvert)
    );
    let mut other = Advert::decode(
        &advert(Version::V3, 200, 100, "192.0.2.2").0,
        src,
        multicast_group(Family::V4),
    )
    .unwrap()
    .0;
    other.vrid = 52;
    let bytes = other
        .encode(ChecksumForm::Plain, src, multicast_group(Family::V4))
        .unwrap();
    assert_eq!(
        e.handle_packet(Time(SEC), &rx(&bytes, src, 255)),
        Err(Discard::UnknownVrid)
    );
    assert_eq!(
        e.handle_packet(Time(SEC), &rx(&[0x31, 0x33], src, 255)),
        Err(Discard::Decode(DecodeErrorKind::Truncated))
    );
    assert_eq!(e.discarded.len(), 2);
    assert_eq!(e.poll_timeout(), Some(Time(MDI_100)));
}

#[test]
fn a_different_address_list_is_counted_not_fatal() {
    let mut e = engine(cfg(100, "192.0.2.1"));
    e.start(Time(0));
    let a = Advert {
        version: Version::V3,
        vrid: 51,
        priority: 200,
        interval_cs: 100,
        addrs: vec![ip("192.0.2.99")],
        auth: Auth::None,
    };
    let src = ip("192.0.2.2");
    let bytes = a
        .encode(ChecksumForm::PseudoHeader, src, multicast_group(Family::V4))
        .unwrap();
    e.handle_packet(Time(SEC), &rx(&bytes, src, 255)).unwrap();
    assert_eq!(e.status()[0].counters.address_mismatch, 1);
    assert_eq!(e.poll_timeout(), Some(Time(SEC + MDI_100)));
}

#[test]
fn the_checksum_form_of_each_peer_is_remembered() {
    let mut e = engine(cfg(100, "192.0.2.1"));
    e.start(Time(0));
    let a = Advert::decode(
        &advert(Version::V3, 200, 100, "192.0.2.2").0,
        ip("192.0.2.2"),
        multicast_group(Family::V4),
    )
    .unwrap()
    .0;
    let dst = multicast_group(Family::V4);
    let plain = a.encode(ChecksumForm::Plain, ip("192.0.2.3"), dst).unwrap();
    e.handle_packet(Time(SEC), &rx(&plain, ip("192.0.2.3"), 255))
        .unwrap();
    receive(&mut e, SEC, 200, "192.0.2.2").unwrap();
    assert_eq!(
        e.status()[0].peer_checksum_forms,
        vec![
            (ip("192.0.2.2"), ChecksumForm::PseudoHeader),
            (ip("192.0.2.3"), ChecksumForm::Plain)
        ]
    );
}

#[test]
fn our_checksum_form_is_configurable_for_v3_over_ipv4() {
    let mut c = cfg(255, "192.0.2.1");
    c.checksum_form = ChecksumForm::Plain;
    let mut e = engine(c);
    e.start(Time(0));
    let bytes = drain(&mut e)
        .into_iter()
        .find_map(|a| match a {
            Action::Send { bytes, .. } => Some(bytes),
            _ => None,
        })
        .unwrap();
    let (_, form) = Advert::decode(&bytes, ip("192.0.2.1"), multicast_group(Family::V4)).unwrap();
    assert_eq!(form, ChecksumForm::Plain);
}

#[test]
fn shutdown_of_a_master_resigns_with_priority_zero_and_releases_vips() {
    let mut e = engine(cfg(100, "192.0.2.1"));
    e.start(Time(0));
    e.handle_timeout(Time(MDI_100));
    drain(&mut e);
    e.shutdown(Time(5 * SEC));
    let actions = drain(&mut e);
    assert!(matches!(
        actions[0],
        Action::DataPlane {
            role: vrrp_common::role::INIT,
            ..
        }
    ));
    assert!(matches!(&actions[1], Action::Send { bytes, .. } if bytes[2] == 0));
    assert!(matches!(actions[2], Action::RemoveVips { .. }));
    assert!(matches!(
        actions[3],
        Action::StateChanged {
            new: State::Initialize,
            reason: Reason::Shutdown,
            ..
        }
    ));
    assert_eq!(e.poll_timeout(), None, "nothing runs after shutdown");
}

#[test]
fn a_failed_fault_track_puts_a_master_in_fault_and_recovery_makes_it_backup() {
    let mut c = cfg(100, "192.0.2.1");
    c.tracks.push(track("link", 0, TrackInput::Up));
    let mut e = engine(c);
    e.start(Time(0));
    e.handle_timeout(Time(MDI_100));
    drain(&mut e);
    e.set_track(Time(5 * SEC), &"link".into(), TrackInput::Down);
    assert_eq!(state(&e), State::Fault);
    let actions = drain(&mut e);
    assert!(matches!(
        actions[0],
        Action::DataPlane {
            role: vrrp_common::role::FAULT,
            ..
        }
    ));
    assert_eq!(sent_priorities(&actions), vec![0]);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::RemoveVips { .. }))
    );
    // In Fault: no adverts, no timers.
    assert_eq!(e.poll_timeout(), None);
    e.set_track(Time(6 * SEC), &"link".into(), TrackInput::Up);
    assert_eq!(state(&e), State::Backup);
}

#[test]
fn an_instance_failing_a_track_at_startup_starts_in_fault() {
    let mut c = cfg(100, "192.0.2.1");
    c.tracks.push(track("mysql", 0, TrackInput::Down));
    let mut e = engine(c);
    e.start(Time(0));
    assert_eq!(state(&e), State::Fault);
}

#[test]
fn weights_sum_clamp_and_a_master_advertises_its_new_priority_at_once() {
    let mut c = cfg(100, "192.0.2.1");
    for (name, weight) in [("up", 50), ("down", -200)] {
        c.tracks.push(TrackConfig {
            name: name.into(),
            weight,
            reverse: false,
            initial: TrackInput::Up,
        });
    }
    let mut e = engine(c);
    e.start(Time(0));
    assert_eq!(e.status()[0].effective_priority, 150);
    run_until(&mut e, 4 * SEC);
    drain(&mut e);
    e.set_track(Time(5 * SEC), &"down".into(), TrackInput::Down);
    assert_eq!(e.status()[0].effective_priority, 1);
    assert_eq!(sent_priorities(&drain(&mut e)), vec![1]);
    e.set_track(Time(6 * SEC), &"up".into(), TrackInput::Down);
    e.set_track(Time(6 * SEC), &"down".into(), TrackInput::Up);
    assert_eq!(e.status()[0].effective_priority, 100);
}

#[test]
fn startup_delay_holds_the_instance_in_initialize() {
    let mut c = cfg(255, "192.0.2.1");
    c.startup_delay_us = 2 * SEC;
    let mut e = engine(c);
    e.start(Time(0));
    assert_eq!(state(&e), State::Initialize);
    assert_eq!(e.poll_timeout(), Some(Time(2 * SEC)));
    e.handle_timeout(Time(2 * SEC));
    assert_eq!(state(&e), State::Master);
}

#[test]
fn announcements_stop_at_once_on_demotion() {
    let mut c = cfg(100, "192.0.2.1");
    c.announce.pacing_us = 100_000;
    let mut e = engine(c);
    e.start(Time(0));
    e.handle_timeout(Time(MDI_100));
    let first = drain(&mut e);
    assert_eq!(
        first
            .iter()
            .filter(|a| matches!(a, Action::Announce { .. }))
            .count(),
        1
    );
    e.handle_timeout(Time(MDI_100 + 100_000));
    assert_eq!(
        drain(&mut e)
            .iter()
            .filter(|a| matches!(a, Action::Announce { .. }))
            .count(),
        1
    );
    receive(&mut e, MDI_100 + 150_000, 200, "192.0.2.2").unwrap();
    drain(&mut e);
    // The paced burst had three more to send at +200, +300 and +400 ms; none goes out before
    // this backup's own Master_Down_Timer could make it master again.
    let later = run_until(&mut e, MDI_100 + 150_000 + 3 * SEC);
    assert_eq!(state(&e), State::Backup);
    assert!(
        !later.iter().any(|a| matches!(a, Action::Announce { .. })),
        "{later:?}"
    );
}

#[test]
fn sync_group_moves_its_members_together() {
    let mut a = cfg(100, "192.0.2.1");
    a.name = "a".into();
    a.tracks.push(track("chk", 0, TrackInput::Up));
    let mut b = cfg(100, "192.0.2.1");
    b.name = "b".into();
    b.vrid = 52;
    let mut e = Engine::new(
        vec![a, b],
        vec![SyncGroupConfig {
            name: "g".into(),
            members: vec!["a".into(), "b".into()],
        }],
    )
    .unwrap();
    e.start(Time(0));
    // b hears a master and keeps waiting; a's timer fires: a takes b along.
    let mut adv = Advert::decode(
        &advert(Version::V3, 200, 100, "192.0.2.2").0,
        ip("192.0.2.2"),
        multicast_group(Family::V4),
    )
    .unwrap()
    .0;
    adv.vrid = 52;
    let bytes = adv
        .encode(
            ChecksumForm::PseudoHeader,
            ip("192.0.2.2"),
            multicast_group(Family::V4),
        )
        .unwrap();
    e.handle_packet(Time(SEC), &rx(&bytes, ip("192.0.2.2"), 255))
        .unwrap();
    e.handle_timeout(Time(MDI_100));
    assert_eq!(e.state_of("a"), Some(State::Master));
    assert_eq!(e.state_of("b"), Some(State::Master));
    // b yields to a higher master: a follows to Backup.
    e.handle_packet(Time(4 * SEC), &rx(&bytes, ip("192.0.2.2"), 255))
        .unwrap();
    assert_eq!(e.state_of("b"), Some(State::Backup));
    assert_eq!(e.state_of("a"), Some(State::Backup));
    // a fails its check: the whole group is in Fault, and leaves it together.
    e.set_track(Time(5 * SEC), &"chk".into(), TrackInput::Down);
    assert_eq!(e.state_of("a"), Some(State::Fault));
    assert_eq!(e.state_of("b"), Some(State::Fault));
    e.set_track(Time(6 * SEC), &"chk".into(), TrackInput::Up);
    assert_eq!(e.state_of("a"), Some(State::Backup));
    assert_eq!(e.state_of("b"), Some(State::Backup));
}

#[test]
fn invalid_engine_configs_are_refused() {
    let mut c = cfg(100, "192.0.2.1");
    c.vips = vec![ip("2001:db8::1")];
    assert!(matches!(
        Engine::new(vec![c], vec![]),
        Err(EngineError::Invalid(..))
    ));
    let mut c = cfg(100, "2001:db8::1");
    c.vips = vec![ip("2001:db8::100")];
    c.version = Version::V2;
    assert!(matches!(
        Engine::new(vec![c], vec![]),
        Err(EngineError::Invalid(..))
    ));
    assert!(matches!(
        Engine::new(vec![cfg(100, "192.0.2.1"), cfg(100, "192.0.2.1")], vec![]),
        Err(EngineError::DuplicateVrid(..))
    ));
    assert!(matches!(
        Engine::new(
            vec![cfg(100, "192.0.2.1")],
            vec![SyncGroupConfig {
                name: "g".into(),
                members: vec!["nope".into()]
            }]
        ),
        Err(EngineError::UnknownMember(..))
    ));
}

#[test]
fn ipv6_instances_run_on_ff02_12() {
    let mut c = InstanceConfig::new("v6", IFACE, 51, ip("fe80::1"), vec![ip("2001:db8::100")]);
    c.priority = 255;
    let mut e = engine(c);
    e.start(Time(0));
    let (dst, bytes) = drain(&mut e)
        .into_iter()
        .find_map(|a| match a {
            Action::Send { dst, bytes, .. } => Some((dst, bytes)),
            _ => None,
        })
        .unwrap();
    assert_eq!(dst, ip("ff02::12"));
    let (a, form) = Advert::decode(&bytes, ip("fe80::1"), dst).unwrap();
    assert_eq!(form, ChecksumForm::PseudoHeader);
    assert_eq!(a.addrs, vec![ip("2001:db8::100")]);
}

fn heard(src: &str, priority: u8) -> Heard {
    Heard {
        src: ip(src),
        priority,
        interval_cs: 100,
        count: 1,
        form: ChecksumForm::PseudoHeader,
    }
}

#[test]
fn adverts_heard_by_the_data_plane_drive_the_same_rules() {
    let mut e = engine(cfg(100, "192.0.2.1"));
    let key = e.keys()[0];
    e.start(Time(0));
    e.handle_heard(Time(SEC), key, &heard("192.0.2.2", 200))
        .unwrap();
    assert_eq!(e.poll_timeout(), Some(Time(SEC + MDI_100)));
    e.handle_heard(Time(2 * SEC), key, &heard("192.0.2.2", 0))
        .unwrap();
    assert_eq!(e.poll_timeout(), Some(Time(2 * SEC + 156 * SEC / 256)));
    assert_eq!(
        e.handle_heard(Time(2 * SEC), key, &heard("192.0.2.1", 200)),
        Err(Discard::OwnAdvert)
    );
    let mut other = heard("192.0.2.3", 200);
    other.count = 2;
    e.handle_heard(Time(2 * SEC), key, &other).unwrap();
    assert_eq!(e.status()[0].counters.address_mismatch, 1);
    let unknown = InstanceKey { vrid: 9, ..key };
    assert_eq!(
        e.handle_heard(Time(2 * SEC), unknown, &other),
        Err(Discard::UnknownVrid)
    );
}

#[test]
fn start_as_master_takes_over_at_once_and_yields_to_a_better_master() {
    let mut c = cfg(100, "192.0.2.1");
    c.start_as_master = true;
    let mut e = engine(c);
    let key = e.keys()[0];
    e.start(Time(0));
    assert_eq!(state(&e), State::Master);
    assert!(drain(&mut e).iter().any(|a| matches!(
        a,
        Action::StateChanged {
            reason: Reason::StartAsMaster,
            ..
        }
    )));
    e.handle_heard(Time(SEC), key, &heard("192.0.2.2", 200))
        .unwrap();
    assert_eq!(state(&e), State::Backup);
}

#[test]
fn a_resumed_master_is_master_at_once_even_at_a_lower_priority() {
    let mut c = cfg(50, "192.0.2.1");
    c.resume_as_master = true;
    let mut e = engine(c);
    e.start(Time(0));
    assert_eq!(state(&e), State::Master);
    let actions = drain(&mut e);
    assert_eq!(sent_priorities(&actions), vec![50], "it advertises at once");
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::StateChanged {
            reason: Reason::Resumed,
            ..
        }
    )));
}

#[test]
fn a_reload_keeps_unchanged_instances_and_restarts_changed_ones() {
    let mut a = cfg(100, "192.0.2.1");
    a.name = "a".into();
    let mut b = cfg(100, "192.0.2.1");
    b.name = "b".into();
    b.vrid = 52;
    let mut e = Engine::new(vec![a.clone(), b.clone()], vec![]).unwrap();
    e.start(Time(0));
    e.handle_timeout(Time(MDI_100));
    assert_eq!(
        (e.state_of("a"), e.state_of("b")),
        (Some(State::Master), Some(State::Master))
    );
    drain(&mut e);
    let mut b2 = b.clone();
    b2.priority = 50;
    let mut c = cfg(100, "192.0.2.1");
    c.name = "c".into();
    c.vrid = 53;
    let reload = e
        .reconfigure(Time(5 * SEC), vec![a.clone(), b2, c])
        .unwrap();
    assert_eq!(reload.kept, vec!["a".to_owned()]);
    assert_eq!(reload.stopped, vec!["b".to_owned()]);
    assert_eq!(reload.started, vec!["b".to_owned(), "c".to_owned()]);
    let actions = drain(&mut e);
    // a saw nothing; b resigned (priority 0) and started again as backup; c started.
    let changes: Vec<(String, State)> = actions
        .iter()
        .filter_map(|x| match x {
            Action::StateChanged { name, new, .. } => Some((name.clone(), *new)),
            _ => None,
        })
        .collect();
    assert_eq!(
        changes,
        vec![
            ("b".into(), State::Initialize),
            ("b".into(), State::Backup),
            ("c".into(), State::Backup)
        ]
    );
    assert_eq!(sent_priorities(&actions), vec![0]);
    assert_eq!(e.state_of("a"), Some(State::Master));
    // An invalid configuration changes nothing.
    let mut bad = a.clone();
    bad.vrid = 0;
    assert!(e.reconfigure(Time(6 * SEC), vec![bad]).is_err());
    assert_eq!(e.status().len(), 3);
}

#[test]
fn a_reload_keeps_an_instance_whose_tracks_only_start_elsewhere_and_starts_a_changed_one_from_them()
{
    let mut a = cfg(100, "192.0.2.1");
    a.name = "a".into();
    a.tracks.push(track("mysql:db", 0, TrackInput::Down));
    let mut e = engine(a.clone());
    e.start(Time(0));
    assert_eq!(e.state_of("a"), Some(State::Fault));
    e.set_track(Time(SEC), &"mysql:db".into(), TrackInput::Up);
    assert_eq!(e.state_of("a"), Some(State::Backup));
    drain(&mut e);
    // The daemon hands a reload the tracks' current inputs as the ones to start from.
    let mut now_up = a.clone();
    now_up.tracks[0].initial = TrackInput::Up;
    let reload = e.reconfigure(Time(2 * SEC), vec![now_up.clone()]).unwrap();
    assert_eq!(
        reload.kept,
        vec!["a".to_owned()],
        "nothing changed but the start"
    );
    assert!(drain(&mut e).is_empty());
    // A changed instance starts again from them: as backup, not in Fault until the probe
    // changes (it reports changes only).
    let mut changed = now_up;
    changed.priority = 150;
    let reload = e.reconfigure(Time(3 * SEC), vec![changed]).unwrap();
    assert_eq!(reload.started, vec!["a".to_owned()]);
    assert_eq!(e.state_of("a"), Some(State::Backup));
}

#[test]
fn a_reversed_weight_turns_the_adjustment_around_as_keepalived_does() {
    let with = |weight: i32, reverse: bool| {
        let mut c = cfg(100, "192.0.2.1");
        c.tracks.push(TrackConfig {
            name: "chk".into(),
            weight,
            reverse,
            initial: TrackInput::Up,
        });
        let mut e = engine(c);
        e.start(Time(0));
        let mut seen = Vec::new();
        for (at, input) in [(1, TrackInput::Up), (2, TrackInput::Down)] {
            e.set_track(Time(at * SEC), &"chk".into(), input);
            seen.push((
                e.state_of("vi") == Some(State::Fault),
                e.status()[0].effective_priority,
            ));
        }
        seen
    };
    // (fault, priority) while up, then while down.
    assert_eq!(with(20, false), [(false, 120), (false, 100)]);
    assert_eq!(
        with(20, true),
        [(false, 80), (false, 100)],
        "subtracted while up"
    );
    assert_eq!(with(-20, false), [(false, 100), (false, 80)]);
    assert_eq!(
        with(-20, true),
        [(false, 100), (false, 120)],
        "added while down"
    );
    assert!(with(0, false)[1].0, "Fault while down");
    let reversed = with(0, true);
    assert!(
        reversed[0].0 && !reversed[1].0,
        "Fault while up: {reversed:?}"
    );
}

#[test]
fn master_adverts_are_what_masters_send_and_nothing_from_a_backup() {
    let mut e = engine(cfg(150, "192.0.2.1"));
    e.start(Time(0));
    assert!(e.master_adverts().is_empty(), "a backup advertises nothing");
    e.handle_timeout(Time(MDI_100));
    assert_eq!(e.state_of("vi"), Some(State::Master));
    let sent = drain(&mut e);
    let now = e.master_adverts();
    assert_eq!(sent_priorities(&now), vec![150]);
    let last_sent = sent
        .iter()
        .rev()
        .find(|a| matches!(a, Action::Send { .. }))
        .expect("the master advertised");
    assert_eq!(&now[0], last_sent, "the same bytes to the same place");
    assert!(e.poll_action().is_none(), "nothing is queued");
}

#[test]
fn a_shared_value_track_lowers_every_instance_that_follows_it() {
    let file = TrackConfig {
        name: "prio".into(),
        weight: 1,
        reverse: false,
        initial: TrackInput::Value(0),
    };
    let mut one = cfg(200, "192.0.2.1");
    one.name = "one".into();
    one.tracks.push(file.clone());
    let mut two = cfg(200, "192.0.2.1");
    two.name = "two".into();
    two.vrid = 52;
    two.tracks.push(track("chk", 0, TrackInput::Up));
    two.tracks.push(file);
    let mut e = Engine::new(
        vec![one, two],
        vec![SyncGroupConfig {
            name: "g".into(),
            members: vec!["one".into(), "two".into()],
        }],
    )
    .unwrap();
    e.start(Time(0));
    e.set_track(Time(SEC), &"prio".into(), TrackInput::Value(-150));
    let prios: Vec<u8> = e.status().iter().map(|s| s.effective_priority).collect();
    assert_eq!(prios, vec![50, 50]);
}

#[test]
fn an_instance_without_vips_elects_and_sends_adverts_with_no_address() {
    // keepalived runs such instances (a notify script moves a cloud floating IP).
    let mut c = InstanceConfig::new("float", IFACE, 51, ip("192.0.2.1"), vec![]);
    c.priority = 100;
    let mut e = engine(c);
    e.start(Time(0));
    drain(&mut e);
    let actions = run_until(&mut e, MDI_100 + SEC / 2);
    assert_eq!(state(&e), State::Master);
    let sent: Vec<&Vec<u8>> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { bytes, .. } => Some(bytes),
            _ => None,
        })
        .collect();
    assert!(!sent.is_empty());
    assert!(sent.iter().all(|b| b[3] == 0 && b.len() == 8), "{sent:?}");
    assert!(
        !actions.iter().any(
            |a| matches!(a, Action::AddVips { vips, .. } if !vips.is_empty())
                || matches!(a, Action::Announce { .. })
        ),
        "nothing to add or announce: {actions:?}"
    );
    // A better peer's advert without addresses is heard and demotes it.
    let a = Advert {
        version: Version::V3,
        vrid: 51,
        priority: 200,
        interval_cs: 100,
        addrs: vec![],
        auth: Auth::None,
    };
    let src = ip("192.0.2.2");
    let bytes = a
        .encode(ChecksumForm::PseudoHeader, src, multicast_group(Family::V4))
        .unwrap();
    let now = MDI_100 + SEC;
    e.handle_packet(Time(now), &rx(&bytes, src, 255)).unwrap();
    assert_eq!(state(&e), State::Backup);
}

// ---- paced adverts (the shell sends a steady master's adverts) ----

/// An owner (master at once) at 1 s adverts whose adverts the shell took at `t`.
fn paced_master(t: u64) -> (Engine, Paced) {
    let mut e = engine(cfg(255, "192.0.2.1"));
    e.start(Time(0));
    let first = drain(&mut e);
    run_until(&mut e, t);
    let mut paced = e.take_paced(|_| true);
    assert_eq!(paced.len(), 1);
    let p = paced.remove(0);
    // What the shell sends is what the engine sent last, at the next slot.
    let sent: Vec<_> = first
        .iter()
        .filter_map(|a| match a {
            Action::Send { dst, bytes, .. } => Some((*dst, bytes.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(p.adverts, sent);
    assert_eq!(p.every_us, SEC);
    (e, p)
}

fn unpace_position(actions: &[Action]) -> Option<usize> {
    actions
        .iter()
        .position(|a| matches!(a, Action::Unpace { .. }))
}

#[test]
fn a_paced_master_leaves_its_adverts_to_the_shell_and_is_not_paced_twice() {
    let (mut e, p) = paced_master(2 * SEC + 10);
    assert_eq!(p.next, Time(3 * SEC));
    // The Adver_Timer is off: no advert from the engine however long it runs (its other
    // timers, the announcements' repeat, still run).
    assert!(e.poll_timeout().is_none_or(|t| t != p.next));
    assert!(sent_priorities(&run_until(&mut e, 60 * SEC)).is_empty());
    assert_eq!(e.poll_timeout(), None);
    assert!(e.take_paced(|_| true).is_empty());
    assert_eq!(e.paced(), vec![p.key]);
    // One the shell cannot send is not handed over.
    let (mut e, _) = paced_master(0);
    e.unpace(p.key, Time(10), 0);
    assert!(e.take_paced(|_| false).is_empty());
    assert!(e.poll_timeout().is_some());
}

#[test]
fn the_shell_gives_adverts_back_on_the_same_grid_and_they_are_counted() {
    // Past the announcements' repeat (5 s), so that only the Adver_Timer is left.
    let (mut e, p) = paced_master(6 * SEC + 10);
    assert_eq!(p.next, Time(7 * SEC));
    let before = e.status()[0].counters.adverts_sent;
    // Given back before its first slot: the engine sends at that slot.
    e.unpace(p.key, Time(6 * SEC + SEC / 2), 0);
    assert_eq!(e.poll_timeout(), Some(Time(7 * SEC)));
    let p = e.take_paced(|_| true).remove(0);
    assert_eq!(p.next, Time(7 * SEC));
    // Given back after 7 slots the shell sent (the last at 13 s), at 13.5 s: next is 14 s.
    e.unpace(p.key, Time(13 * SEC + SEC / 2), 7);
    assert_eq!(e.poll_timeout(), Some(Time(14 * SEC)));
    assert_eq!(e.status()[0].counters.adverts_sent, before + 7);
    // Exactly on a slot (sent by the shell): the next one.
    let p = e.take_paced(|_| true).remove(0);
    e.unpace(p.key, Time(14 * SEC), 1);
    assert_eq!(e.poll_timeout(), Some(Time(15 * SEC)));
    assert!(drain(&mut e).is_empty());
}

#[test]
fn a_better_master_takes_the_adverts_back_before_anything_else() {
    let mut c = cfg(100, "192.0.2.1");
    c.advert_before_yield = true;
    let mut e = engine(c);
    e.start(Time(0));
    e.handle_timeout(Time(MDI_100));
    assert_eq!(state(&e), State::Master);
    drain(&mut e);
    assert_eq!(e.take_paced(|_| true).len(), 1);
    receive(&mut e, MDI_100 + SEC / 2, 200, "192.0.2.9").unwrap();
    let actions = drain(&mut e);
    assert_eq!(state(&e), State::Backup);
    assert_eq!(unpace_position(&actions), Some(0), "{actions:?}");
    assert_eq!(
        actions
            .iter()
            .filter(|a| matches!(a, Action::Unpace { .. }))
            .count(),
        1
    );
    // A backup has nothing to hand over.
    assert!(e.take_paced(|_| true).is_empty());
}

#[test]
fn shutdown_takes_the_adverts_back_before_resigning_with_priority_0() {
    let (mut e, _) = paced_master(SEC);
    e.shutdown(Time(SEC + 7));
    let actions = drain(&mut e);
    assert_eq!(unpace_position(&actions), Some(0), "{actions:?}");
    assert_eq!(sent_priorities(&actions), vec![0]);
}

#[test]
fn a_changed_priority_takes_the_adverts_back_and_hands_over_the_new_ones() {
    let mut c = cfg(100, "192.0.2.1");
    c.answer_lower_priority = false;
    c.tracks.push(track("chk", -10, TrackInput::Up));
    let mut e = engine(c);
    e.start(Time(0));
    e.handle_timeout(Time(MDI_100));
    drain(&mut e);
    let old = e.take_paced(|_| true).remove(0);
    e.set_track(Time(MDI_100 + 10), &"chk".into(), TrackInput::Down);
    let actions = drain(&mut e);
    assert_eq!(unpace_position(&actions), Some(0), "{actions:?}");
    assert_eq!(sent_priorities(&actions), vec![90]);
    let new = e.take_paced(|_| true).remove(0);
    assert_eq!(new.adverts[0].1[2], 90);
    assert_ne!(new.adverts, old.adverts);
    assert_eq!(new.next, Time(MDI_100 + 10 + SEC));
    // A lower-priority master heard changes nothing the shell sends (no answer configured).
    receive(&mut e, MDI_100 + 20, 50, "192.0.2.9").unwrap();
    assert_eq!(unpace_position(&drain(&mut e)), None);
    assert_eq!(e.paced(), vec![new.key]);
}

#[test]
fn answering_a_lower_master_takes_the_adverts_back_first() {
    let mut e = engine(cfg(100, "192.0.2.1"));
    e.start(Time(0));
    e.handle_timeout(Time(MDI_100));
    drain(&mut e);
    e.take_paced(|_| true).remove(0);
    receive(&mut e, MDI_100 + 20, 50, "192.0.2.9").unwrap();
    let actions = drain(&mut e);
    assert_eq!(unpace_position(&actions), Some(0), "{actions:?}");
    assert_eq!(sent_priorities(&actions), vec![100]);
    assert_eq!(e.poll_timeout(), Some(Time(MDI_100 + 20 + SEC)));
}
