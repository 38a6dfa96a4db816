//! Fuzzes the TOML config loader: no input panics; an accepted config has at least one
//! instance and a refused one names at least one problem.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match vrrp_user::config::parse(text, std::path::Path::new("fuzz.toml")) {
        Ok(config) => assert!(!config.instances.is_empty()),
        Err(err) => assert!(!err.problems.is_empty()),
    }
});
