//! Property-based tests of the `--metrics-listen` parser (issue 13 item 3).

use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::parse_listen;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(s in any::<String>()) {
        if let Ok(a) = parse_listen(&s) {
            // Only a bare port may default the address, and it defaults to loopback.
            if s.trim().trim_start_matches(':').bytes().all(|b| b.is_ascii_digit()) {
                prop_assert_eq!(a.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
            }
        }
    }

    /// Reference model: `PORT`, `:PORT` → 127.0.0.1; `A.B.C.D:PORT`, `[V6]:PORT` as given.
    #[test]
    fn valid_forms_match_the_model(port in any::<u16>(), v4 in any::<[u8; 4]>(), v6 in any::<[u16; 8]>(), pad in "[ \t]{0,2}") {
        let lo = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        prop_assert_eq!(parse_listen(&format!("{pad}{port}{pad}")), Ok(lo));
        prop_assert_eq!(parse_listen(&format!(":{port}")), Ok(lo));
        let a4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::from(v4)), port);
        prop_assert_eq!(parse_listen(&a4.to_string()), Ok(a4));
        let a6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::from(v6)), port);
        prop_assert_eq!(parse_listen(&a6.to_string()), Ok(a6));
    }

    #[test]
    fn out_of_range_ports_are_refused(port in 65536u64..u64::MAX) {
        prop_assert!(parse_listen(&port.to_string()).is_err());
        let with_addr = format!("127.0.0.1:{port}");
        prop_assert!(parse_listen(&with_addr).is_err());
    }
}
