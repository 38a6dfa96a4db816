//! Fuzzes the keepalived.conf reader and the import: no input panics, and every config the
//! import writes is TOML.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vrrp_user::import::{convert, parse_text};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(nodes) = parse_text(text, "fuzz.conf") else {
        return;
    };
    for file in convert(&nodes).files {
        assert!(
            file.toml.parse::<toml::Table>().is_ok(),
            "the import wrote a file that is not TOML:\n{}",
            file.toml
        );
    }
});
