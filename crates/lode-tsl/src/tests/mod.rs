//! Tests of parsing, export, TSL validation and value checks.

mod props;
mod tsl;
mod values;

use crate::Tsl;

pub(super) const SDK_TSL: &str = include_str!("fixtures/sdk_tsl.json");
pub(super) const FULL_TSL: &str = include_str!("fixtures/full_tsl.json");

pub(super) fn full() -> Tsl {
    Tsl::from_json(FULL_TSL).expect("full fixture parses")
}
