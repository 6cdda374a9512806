"""Black-box tests of the pull-through cache (docs/proxy.md): berth in front of berth."""
