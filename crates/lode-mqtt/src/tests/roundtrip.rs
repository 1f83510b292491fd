//! Round-trip and robustness property tests.
