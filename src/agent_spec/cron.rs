//! Script schedules, checked as the agent will parse them: robfig/cron v3's parser with a seconds field, day of week
//! optional and no `@` descriptors (coder v2.30.0 agent/agentscripts/agentscripts.go:43). The Terraform provider's
//! parser also takes descriptors (terraform-provider-coder v2.13.1 provider/script.go:15), but an agent given one
//! fails to schedule its scripts, so they are refused here. Messages are robfig's (parser.go), so they read as the
//! agent's would.

/// What one field accepts: `min..=max`, and names for months and weekdays.
struct Bounds {
    min: u64,
    max: u64,
    names: &'static [(&'static str, u64)],
}

const MONTHS: &[(&str, u64)] = &[
    ("jan", 1),
    ("feb", 2),
    ("mar", 3),
    ("apr", 4),
    ("may", 5),
    ("jun", 6),
    ("jul", 7),
    ("aug", 8),
    ("sep", 9),
    ("oct", 10),
    ("nov", 11),
    ("dec", 12),
];
const WEEKDAYS: &[(&str, u64)] = &[("sun", 0), ("mon", 1), ("tue", 2), ("wed", 3), ("thu", 4), ("fri", 5), ("sat", 6)];

/// Seconds, minutes, hours, day of month, month, day of week (robfig spec.go).
const FIELDS: [Bounds; 6] = [
    Bounds { min: 0, max: 59, names: &[] },
    Bounds { min: 0, max: 59, names: &[] },
    Bounds { min: 0, max: 23, names: &[] },
    Bounds { min: 1, max: 31, names: &[] },
    Bounds { min: 1, max: 12, names: MONTHS },
    Bounds { min: 0, max: 6, names: WEEKDAYS },
];

/// `Ok(Some(warning))` for a schedule that is valid but reads like a five-field Unix one, whose first field the
/// agent takes for seconds: the provider's warning (provider/script.go:21-31).
pub(crate) fn check(spec: &str) -> Result<Option<String>, String> {
    if spec.is_empty() {
        return Err("empty spec string".into());
    }
    let mut spec = spec;
    let zoned = spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=");
    if zoned {
        // The zone's name is looked up in the workspace's time zone database, which only the agent has.
        let Some(space) = spec.find(' ') else {
            return Err(format!("a time zone must be followed by a schedule: {spec}"));
        };
        spec = spec[space..].trim();
    }
    if spec.starts_with('@') {
        return Err(format!("parser does not accept descriptors: {spec}"));
    }
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if !(5..=6).contains(&fields.len()) {
        return Err(format!("expected 5 to 6 fields, found {}: [{}]", fields.len(), fields.join(" ")));
    }
    for (field, bounds) in fields.iter().zip(&FIELDS) {
        check_field(field, bounds)?;
    }
    // The provider counts the fields of the whole expression, a zone included.
    let unix = !zoned && fields.len() == 5 && fields.iter().zip(&FIELDS[1..]).all(|(f, b)| check_field(f, b).is_ok());
    Ok(unix.then(|| {
        format!(
            "{spec:?} looks like a five-field Unix schedule, but the first field is seconds here \
             (seconds minutes hours day-of-month month day-of-week); prefix it with \"0 \" to run at second 0: \"0 {spec}\""
        )
    }))
}

/// A comma-separated list of ranges (robfig getField); empty items are skipped, as Go's FieldsFunc does.
fn check_field(field: &str, bounds: &Bounds) -> Result<(), String> {
    field.split(',').filter(|r| !r.is_empty()).try_for_each(|r| check_range(r, bounds))
}

/// `*`, `?`, `N` or `N-M`, each with an optional `/STEP` (robfig getRange).
fn check_range(expr: &str, b: &Bounds) -> Result<(), String> {
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_and_high: Vec<&str> = range_and_step[0].split('-').collect();
    let single = low_and_high.len() == 1;
    let (start, mut end) = if low_and_high[0] == "*" || low_and_high[0] == "?" {
        (b.min, b.max)
    } else {
        let start = int_or_name(low_and_high[0], b.names)?;
        match low_and_high.len() {
            1 => (start, start),
            2 => (start, int_or_name(low_and_high[1], b.names)?),
            _ => return Err(format!("too many hyphens: {expr}")),
        }
    };
    let step = match range_and_step.len() {
        1 => 1,
        2 => {
            // "N/step" means "N-max/step".
            if single {
                end = b.max;
            }
            int(range_and_step[1])?
        }
        _ => return Err(format!("too many slashes: {expr}")),
    };
    if start < b.min {
        return Err(format!("beginning of range ({start}) below minimum ({}): {expr}", b.min));
    }
    if end > b.max {
        return Err(format!("end of range ({end}) above maximum ({}): {expr}", b.max));
    }
    if start > end {
        return Err(format!("beginning of range ({start}) beyond end of range ({end}): {expr}"));
    }
    if step == 0 {
        return Err(format!("step of range should be a positive number: {expr}"));
    }
    Ok(())
}

fn int_or_name(expr: &str, names: &[(&str, u64)]) -> Result<u64, String> {
    let lower = expr.to_ascii_lowercase();
    match names.iter().find(|(name, _)| *name == lower) {
        Some((_, n)) => Ok(*n),
        None => int(expr),
    }
}

/// Go's strconv.Atoi (an optional sign, decimal digits), then robfig's refusal of negatives.
fn int(expr: &str) -> Result<u64, String> {
    let n: i64 = expr.parse().map_err(|e| format!("failed to parse int from {expr}: {e}"))?;
    u64::try_from(n).map_err(|_| format!("negative number ({n}) not allowed: {expr}"))
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn the_agents_schedules_pass() {
        for ok in [
            "0 */5 * * * *",
            "30 0 9 * * 1-5",
            "0 0 22 * * *",
            "0 0 0 1 jan-mar ?",
            "0 0 * * * SUN,sat",
            "TZ=UTC 0 0 * * *",
        ] {
            assert_eq!(check(ok), Ok(None), "{ok}");
        }
    }

    #[test]
    fn five_unix_fields_pass_with_a_warning() {
        let warning = check("*/5 * * * *").unwrap().expect("a warning");
        assert!(warning.contains("\"0 */5 * * * *\""), "{warning}");
        // Five fields that are no Unix schedule (60 is no minute) but a valid seconds-first one: no warning.
        assert_eq!(check("59 59 23 31 12"), Ok(None));
    }

    #[test]
    fn robfigs_errors() {
        let cases = [
            ("", "empty spec string"),
            ("@hourly", "parser does not accept descriptors: @hourly"),
            ("* * *", "expected 5 to 6 fields, found 3: [* * *]"),
            ("* * * * * * *", "expected 5 to 6 fields, found 7"),
            ("60 * * * * *", "end of range (60) above maximum (59): 60"),
            ("0 0 0 0 * *", "beginning of range (0) below minimum (1): 0"),
            ("0 0 5-3 * * *", "beginning of range (5) beyond end of range (3): 5-3"),
            ("0 0 1-2-3 * * *", "too many hyphens: 1-2-3"),
            ("0 */0 * * * *", "step of range should be a positive number: */0"),
            ("0 */1/2 * * * *", "too many slashes: */1/2"),
            ("0 x * * * *", "failed to parse int from x"),
            ("0 -1 * * * *", "failed to parse int from "),
            ("0 0 0 * foo *", "failed to parse int from foo"),
            ("TZ=UTC", "a time zone must be followed by a schedule"),
        ];
        for (spec, want) in cases {
            let got = check(spec).expect_err(spec);
            assert!(got.contains(want), "{spec:?}: {got:?} lacks {want:?}");
        }
    }
}
