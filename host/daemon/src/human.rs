//! What people read: times as local RFC 3339 (`2026-05-04T10:21:07.412+02:00`)
//! rather than epoch milliseconds. Scripts get the raw number through
//! `--json`.

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// `ms` since the Unix epoch as a local RFC 3339 time with milliseconds
/// and the offset in force then (the system time zone: `TZ`, else
/// `/etc/localtime`, else UTC). A value outside the representable range
/// is printed as the raw number with `ms`.
pub fn local_time(ms: u64) -> String {
    local_time_in(ms, &TimeZone::system())
}

/// [`local_time`] in a given zone (tests).
pub fn local_time_in(ms: u64, zone: &TimeZone) -> String {
    let Some(ts) = i64::try_from(ms).ok().and_then(|ms| Timestamp::from_millisecond(ms).ok()) else {
        return format!("{ms}ms");
    };
    ts.to_zoned(zone.clone()).strftime("%Y-%m-%dT%H:%M:%S%.3f%:z").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_manners_times_are_rfc3339_with_the_local_offset() {
        let utc = local_time_in(1_800_000_000_123, &TimeZone::UTC);
        assert_eq!(utc, "2027-01-15T08:00:00.123+00:00");
        let plus2 = TimeZone::fixed(jiff::tz::offset(2));
        assert_eq!(local_time_in(1_800_000_000_123, &plus2), "2027-01-15T10:00:00.123+02:00");
        assert_eq!(local_time_in(u64::MAX, &TimeZone::UTC), format!("{}ms", u64::MAX));
    }
}
