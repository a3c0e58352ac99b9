//! Numeric keys with a range, checked while the configuration is deserialized, so an
//! out-of-range value is an error at its file:line:column like any other.

use serde::de::{Deserialize, Deserializer, Error as _};

/// `#[serde(deserialize_with = "pipe_framework::config::within::<_, _, 1, 1_048_576>")]`:
/// the number must lie in `MIN..=MAX`. Values that would overflow a buffer size or a duration
/// (`batch_rows = 9223372036854775807`) are refused before anything allocates them.
pub fn within<'de, D, T, const MIN: u64, const MAX: u64>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + TryInto<u64> + Copy + std::fmt::Display,
{
    let value = T::deserialize(deserializer)?;
    match value.try_into() {
        Ok(n) if (MIN..=MAX).contains(&n) => Ok(value),
        _ => Err(D::Error::custom(format!(
            "must be between {MIN} and {MAX}, got {value}"
        ))),
    }
}

/// [`within`] for an optional key.
pub fn within_opt<'de, D, T, const MIN: u64, const MAX: u64>(
    deserializer: D,
) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + TryInto<u64> + Copy + std::fmt::Display,
{
    within::<D, T, MIN, MAX>(deserializer).map(Some)
}
