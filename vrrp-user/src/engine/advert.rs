//! An owned VRRP advertisement, over the zero-copy codec of `vrrp_common::vrrp`.

use std::net::IpAddr;

use vrrp_common::vrrp::{AdvertFields, AdvertView, MAX_LEN, emit};
pub use vrrp_common::vrrp::{Auth, ChecksumForm, DecodeError, EncodeError, Family, Version};

/// A decoded advert.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Advert {
    pub version: Version,
    pub vrid: u8,
    pub priority: u8,
    /// Centiseconds (VRRPv2 seconds are converted).
    pub interval_cs: u16,
    pub addrs: Vec<IpAddr>,
    pub auth: Auth,
}

/// The family of an address.
pub fn family_of(addr: &IpAddr) -> Family {
    match addr {
        IpAddr::V4(_) => Family::V4,
        IpAddr::V6(_) => Family::V6,
    }
}

fn octets(addr: &IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

impl Advert {
    /// Decodes and verifies an advert received from `src` to `dst`; also returns the checksum
    /// form the sender used.
    pub fn decode(
        bytes: &[u8],
        src: IpAddr,
        dst: IpAddr,
    ) -> Result<(Self, ChecksumForm), DecodeError> {
        if family_of(&src) != family_of(&dst) {
            // Not a packet any IP stack delivers; refuse it like a bad checksum.
            return Err(DecodeError::BadChecksum { received: 0 });
        }
        let (view, form) = AdvertView::parse_verified(bytes, &octets(&src), &octets(&dst))?;
        let addrs = (0..usize::from(view.count()))
            .filter_map(|i| view.address(i))
            .map(|a| match <[u8; 4]>::try_from(a) {
                Ok(v4) => IpAddr::from(v4),
                Err(_) => IpAddr::from(<[u8; 16]>::try_from(a).expect("16-byte address")),
            })
            .collect();
        Ok((
            Self {
                version: view.version(),
                vrid: view.vrid(),
                priority: view.priority(),
                interval_cs: view.interval_cs(),
                addrs,
                auth: view.auth(),
            },
            form,
        ))
    }

    /// Encodes this advert as sent from `src` to `dst`.
    pub fn encode(
        &self,
        form: ChecksumForm,
        src: IpAddr,
        dst: IpAddr,
    ) -> Result<Vec<u8>, EncodeError> {
        let family = family_of(&src);
        if family_of(&dst) != family || self.addrs.iter().any(|a| family_of(a) != family) {
            return Err(EncodeError::BadAddresses);
        }
        let addrs: Vec<Vec<u8>> = self.addrs.iter().map(octets).collect();
        let addr_refs: Vec<&[u8]> = addrs.iter().map(Vec::as_slice).collect();
        let mut buf = vec![0u8; MAX_LEN];
        let fields = AdvertFields {
            version: self.version,
            vrid: self.vrid,
            priority: self.priority,
            interval_cs: self.interval_cs,
            auth: self.auth,
        };
        let len = emit(
            &mut buf,
            &fields,
            &addr_refs,
            form,
            &octets(&src),
            &octets(&dst),
        )?;
        buf.truncate(len);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4() -> impl Strategy<Value = IpAddr> {
        any::<[u8; 4]>().prop_map(|o| IpAddr::V4(Ipv4Addr::from(o)))
    }
    fn v6() -> impl Strategy<Value = IpAddr> {
        any::<[u8; 16]>().prop_map(|o| IpAddr::V6(Ipv6Addr::from(o)))
    }

    /// A valid advert with its source and destination.
    fn advert() -> impl Strategy<Value = (Advert, IpAddr, IpAddr, ChecksumForm)> {
        let v2 = (
            any::<u8>(),
            any::<u8>(),
            1u16..=255,
            prop::collection::vec(v4(), 1..20),
            prop::option::of(any::<[u8; 8]>()),
            v4(),
            v4(),
        )
            .prop_map(|(vrid, priority, secs, addrs, pass, src, dst)| {
                (
                    Advert {
                        version: Version::V2,
                        vrid,
                        priority,
                        interval_cs: secs * 100,
                        addrs,
                        auth: pass.map_or(Auth::None, Auth::Simple),
                    },
                    src,
                    dst,
                    ChecksumForm::Plain,
                )
            });
        let v3 = (
            any::<u8>(),
            any::<u8>(),
            1u16..=4095,
            any::<bool>(),
            any::<bool>(),
            prop::collection::vec(any::<[u8; 16]>(), 1..20),
            v4(),
            v4(),
            v6(),
            v6(),
        )
            .prop_map(
                |(vrid, priority, interval_cs, ipv6, pseudo, raw, s4, d4, s6, d6)| {
                    let (addrs, src, dst, form): (Vec<IpAddr>, _, _, _) = if ipv6 {
                        (
                            raw.into_iter().map(|o| IpAddr::V6(o.into())).collect(),
                            s6,
                            d6,
                            ChecksumForm::PseudoHeader,
                        )
                    } else {
                        let form = if pseudo {
                            ChecksumForm::PseudoHeader
                        } else {
                            ChecksumForm::Plain
                        };
                        let addrs = raw
                            .into_iter()
                            .map(|o| IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], o[3])))
                            .collect();
                        (addrs, s4, d4, form)
                    };
                    (
                        Advert {
                            version: Version::V3,
                            vrid,
                            priority,
                            interval_cs,
                            addrs,
                            auth: Auth::None,
                        },
                        src,
                        dst,
                        form,
                    )
                },
            );
        prop_oneof![v2, v3]
    }

    proptest! {
        #[test]
        fn decode_of_encode_is_identity((advert, src, dst, form) in advert()) {
            let bytes = advert.encode(form, src, dst).unwrap();
            let (decoded, got_form) = Advert::decode(&bytes, src, dst).unwrap();
            prop_assert_eq!(&decoded, &advert);
            // A Plain IPv4 v3 checksum can collide with the pseudo-header one only if the
            // pseudo-header sums to zero; otherwise the form is recognised.
            if !(advert.version == Version::V3 && form == ChecksumForm::Plain) {
                prop_assert_eq!(got_form, form);
            }
        }

        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600), s4 in v4(), d4 in v4(), s6 in v6(), d6 in v6()) {
            let _ = Advert::decode(&bytes, s4, d4);
            let _ = Advert::decode(&bytes, s6, d6);
            let _ = Advert::decode(&bytes, s4, d6);
        }

        #[test]
        fn every_single_bit_flip_is_rejected((advert, src, dst, form) in advert(), bit in 0usize..4096) {
            let mut bytes = advert.encode(form, src, dst).unwrap();
            let bit = bit % (bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            // The one's complement checksum catches every single-bit error. The one way a
            // flipped advert can still verify is VRRPv3 over IPv4 matching the *other*
            // checksum form (both are accepted): then the form reported must differ.
            if let Ok((_, got_form)) = Advert::decode(&bytes, src, dst) {
                prop_assert!(advert.version == Version::V3 && family_of(&src) == Family::V4 && got_form != form,
                    "bit {} flipped and still decoded in the same form", bit);
            }
        }
    }
}
