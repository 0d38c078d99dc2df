"""The Mage projects here are test data (Mage's block files), not tests: collect nothing."""

collect_ignore_glob = ["*"]
