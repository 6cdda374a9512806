//! The configuration file: TOML into `berth_core::config::Config`, then `validate()`.
//!
//! Input: the text of a configuration file (inputs that are not UTF-8 are skipped, as TOML is
//! UTF-8). `validate()` must never panic, whatever serde let through. A configuration that
//! validates is printed back as `berth config` does (`toml::to_string_pretty`); that text must
//! parse and validate again to an equal configuration.
#![no_main]

use berth_core::config::{Config, IpBlock};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = toml::from_str::<Config>(text) else {
        return;
    };
    let valid = config.validate();
    let listen = config.listen_addr();
    if valid.is_ok() {
        assert!(listen.is_ok());
    }

    // The trusted proxies, once they parse, are matched against addresses without panics.
    let blocks: Vec<IpBlock> = config
        .server
        .trusted_proxies
        .iter()
        .filter_map(|p| IpBlock::parse(p))
        .collect();
    if valid.is_ok() {
        assert_eq!(blocks.len(), config.server.trusted_proxies.len());
    }
    let peer: std::net::IpAddr = [10, 0, 0, 1].into();
    let hops = ["1.2.3.4, ::ffff:10.0.0.2", "::1, 10.1.2.3"];
    for b in &blocks {
        for ip in [
            "0.0.0.0",
            "10.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:10.0.0.1",
        ] {
            let _ = b.contains(ip.parse().unwrap());
        }
    }
    let _ = berth_core::config::client_address(peer, &hops, &blocks);

    if valid.is_ok() {
        // The effective configuration as `berth config` prints it reads back the same.
        let printed = toml::to_string_pretty(&config)
            .unwrap_or_else(|e| panic!("a valid configuration does not print: {e}"));
        let back: Config = toml::from_str(&printed)
            .unwrap_or_else(|e| panic!("the printed configuration does not parse: {e}\n{printed}"));
        assert_eq!(
            back, config,
            "the printed configuration differs:\n{printed}"
        );
        assert_eq!(back.validate(), Ok(()));
    }
});
