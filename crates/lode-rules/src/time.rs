//! Formatting epoch milliseconds with Java `SimpleDateFormat`-style patterns, as the
//! reference platform's `timestamp('yyyy-MM-dd HH:mm:ss')` does. No clock and no time-zone
//! database: the caller passes the instant and a fixed UTC offset.
//!
//! The supported letters are listed in the `functions` module documentation.

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

const MS_PER_DAY: i64 = 86_400_000;

/// A calendar date and time of day, in the proleptic Gregorian calendar.
struct DateTime {
    year: i64,
    month: usize,
    day: i64,
    day_of_year: i64,
    weekday: usize,
    hour: i64,
    minute: i64,
    second: i64,
    milli: i64,
}

impl DateTime {
    fn from_epoch_ms(ms: i64) -> Self {
        let days = ms.div_euclid(MS_PER_DAY);
        let in_day = ms.rem_euclid(MS_PER_DAY);
        // Days to civil date (H. Hinnant's algorithm), eras of 400 years from 0000-03-01.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        let before_month = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
        let month_idx = usize::try_from(month - 1).unwrap_or(0).min(11);
        let day_of_year = before_month[month_idx] + day + i64::from(leap && month > 2);
        Self {
            year,
            month: month_idx,
            day,
            day_of_year,
            // 1970-01-01 was a Thursday.
            weekday: usize::try_from((days + 4).rem_euclid(7)).unwrap_or(0),
            hour: in_day / 3_600_000,
            minute: in_day / 60_000 % 60,
            second: in_day / 1000 % 60,
            milli: in_day % 1000,
        }
    }
}

/// Formats `ms` (milliseconds since the Unix epoch) at `offset_minutes` east of UTC.
pub(crate) fn format(ms: i64, offset_minutes: i32, pattern: &str) -> Result<String, String> {
    let local = ms.saturating_add(i64::from(offset_minutes) * 60_000);
    let t = DateTime::from_epoch_ms(local);
    let mut out = String::with_capacity(pattern.len() + 8);
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        if c == '\'' {
            if chars.get(i + 1) == Some(&'\'') {
                out.push('\'');
                i += 2;
                continue;
            }
            let Some(close) = chars.iter().skip(i + 1).position(|&x| x == '\'') else {
                return Err("unterminated quote in time format".to_owned());
            };
            out.extend(chars.iter().skip(i + 1).take(close));
            i += close + 2;
            // A doubled quote inside quoted text is one quote.
            while chars.get(i) == Some(&'\'') && chars.get(i + 1) != Some(&'\'') {
                let Some(close) = chars.iter().skip(i + 1).position(|&x| x == '\'') else {
                    return Err("unterminated quote in time format".to_owned());
                };
                out.push('\'');
                out.extend(chars.iter().skip(i + 1).take(close));
                i += close + 2;
            }
            continue;
        }
        if !c.is_ascii_alphabetic() {
            out.push(c);
            i += 1;
            continue;
        }
        let count = chars.iter().skip(i).take_while(|&&x| x == c).count();
        i += count;
        field(&mut out, c, count, &t, offset_minutes)?;
    }
    Ok(out)
}

fn pad(out: &mut String, value: i64, width: usize) {
    let sign = if value < 0 { "-" } else { "" };
    out.push_str(&format!("{sign}{:0width$}", value.unsigned_abs()));
}

fn field(out: &mut String, c: char, count: usize, t: &DateTime, offset: i32) -> Result<(), String> {
    let month = MONTHS.get(t.month).copied().unwrap_or("");
    let weekday = WEEKDAYS.get(t.weekday).copied().unwrap_or("");
    match c {
        'y' if count == 2 => pad(out, t.year.rem_euclid(100), 2),
        'y' => pad(out, t.year, count),
        'M' if count >= 4 => out.push_str(month),
        'M' if count == 3 => out.extend(month.chars().take(3)),
        'M' => pad(out, i64::try_from(t.month).unwrap_or(0) + 1, count),
        'd' => pad(out, t.day, count),
        'D' => pad(out, t.day_of_year, count),
        'H' => pad(out, t.hour, count),
        'h' => pad(out, (t.hour + 11) % 12 + 1, count),
        'm' => pad(out, t.minute, count),
        's' => pad(out, t.second, count),
        'S' => pad(out, t.milli, count),
        'a' => out.push_str(if t.hour < 12 { "AM" } else { "PM" }),
        'E' if count >= 4 => out.push_str(weekday),
        'E' => out.extend(weekday.chars().take(3)),
        'Z' => offset_text(out, offset, false, false),
        'X' if offset == 0 => out.push('Z'),
        'X' => offset_text(out, offset, count == 1, count >= 3),
        other => return Err(format!("unsupported letter `{other}` in time format")),
    }
    Ok(())
}

fn offset_text(out: &mut String, offset: i32, hours_only: bool, colon: bool) {
    let sign = if offset < 0 { '-' } else { '+' };
    let abs = offset.unsigned_abs();
    let (h, m) = (abs / 60, abs % 60);
    out.push_str(&match (hours_only, colon) {
        (true, _) => format!("{sign}{h:02}"),
        (false, true) => format!("{sign}{h:02}:{m:02}"),
        (false, false) => format!("{sign}{h:02}{m:02}"),
    });
}

#[cfg(test)]
mod tests {
    use super::format;

    // 2018-11-28T02:56:38.943Z, a Wednesday.
    const T: i64 = 1_543_373_798_943;

    #[test]
    fn reference_example() {
        assert_eq!(
            format(T, 0, "yyyy-MM-dd'T'HH:mm:ss'Z'").as_deref(),
            Ok("2018-11-28T02:56:38Z")
        );
        assert_eq!(
            format(T, 480, "yyyy-MM-dd HH:mm:ss.SSS").as_deref(),
            Ok("2018-11-28 10:56:38.943")
        );
    }

    #[test]
    fn every_letter() {
        assert_eq!(
            format(T, 0, "yy M MMM MMMM d D h a E EEEE Z X").as_deref(),
            Ok("18 11 Nov November 28 332 2 AM Wed Wednesday +0000 Z")
        );
        assert_eq!(
            format(T, -330, "Z X XX XXX").as_deref(),
            Ok("-0530 -05 -0530 -05:30")
        );
        assert_eq!(format(T, 0, "'it''s' ''").as_deref(), Ok("it's '"));
    }

    #[test]
    fn calendar_edges() {
        assert_eq!(
            format(0, 0, "yyyy-MM-dd E").as_deref(),
            Ok("1970-01-01 Thu")
        );
        assert_eq!(
            format(-1, 0, "yyyy-MM-dd HH:mm:ss.SSS").as_deref(),
            Ok("1969-12-31 23:59:59.999")
        );
        // 2024-02-29, a leap day: day 60 of the year.
        assert_eq!(
            format(1_709_164_800_000, 0, "MM-dd D").as_deref(),
            Ok("02-29 60")
        );
        assert_eq!(
            format(951_782_400_000, 0, "yyyy-MM-dd").as_deref(),
            Ok("2000-02-29")
        );
        assert!(format(i64::MAX, 0, "yyyy-MM-dd HH").is_ok());
        assert!(format(i64::MIN, i32::MIN, "yyyy-MM-dd HH").is_ok());
    }

    #[test]
    fn refuses_unknown_letters_and_open_quotes() {
        assert!(format(T, 0, "yyyy-qq").is_err());
        assert!(format(T, 0, "'open").is_err());
    }
}
