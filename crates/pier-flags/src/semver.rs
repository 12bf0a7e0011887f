//! Semantic versions as flagd's `sem_ver` reads them: Go's `golang.org/x/mod/semver`, which
//! accepts the shorthands `v1` and `v1.2` (as `v1.0.0` and `v1.2.0`), orders pre-releases below
//! their release and ignores build metadata. flagd prepends the `v` when it is missing (and reads
//! `V` as `v`), so `1.2` and `v1.2` are the same version.

use std::cmp::Ordering;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    major: String,
    minor: String,
    patch: String,
    prerelease: Vec<String>,
}

impl Version {
    /// Reads a version the way flagd does (`v` optional, `V` accepted), or `None` if invalid.
    pub fn parse_flagd(text: &str) -> Option<Self> {
        let body = text
            .strip_prefix('v')
            .or_else(|| text.strip_prefix('V'))
            .unwrap_or(text);
        Self::parse(body)
    }

    /// Go's grammar without its leading `v`: `MAJOR[.MINOR[.PATCH[-PRE][+BUILD]]]`.
    fn parse(body: &str) -> Option<Self> {
        let (core, build) = match body.split_once('+') {
            Some((core, build)) => (core, Some(build)),
            None => (body, None),
        };
        if let Some(build) = build
            && !identifiers_valid(build, false)
        {
            return None;
        }
        let (core, prerelease) = match core.split_once('-') {
            Some((core, pre)) => (core, Some(pre)),
            None => (core, None),
        };
        let parts: Vec<&str> = core.split('.').collect();
        if parts.len() > 3 || !parts.iter().all(|part| is_number(part)) {
            return None;
        }
        // The shorthands take neither a pre-release nor build metadata.
        if parts.len() < 3 && (prerelease.is_some() || build.is_some()) {
            return None;
        }
        let prerelease = match prerelease {
            Some(pre) if identifiers_valid(pre, true) => {
                pre.split('.').map(str::to_owned).collect()
            }
            Some(_) => return None,
            None => Vec::new(),
        };
        let part = |index: usize| parts.get(index).map_or("0", |part| part).to_owned();
        Some(Self {
            major: part(0),
            minor: part(1),
            patch: part(2),
            prerelease,
        })
    }

    pub fn same_major(&self, other: &Self) -> bool {
        self.major == other.major
    }

    pub fn same_minor(&self, other: &Self) -> bool {
        self.major == other.major && self.minor == other.minor
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        numeric(&self.major, &other.major)
            .then_with(|| numeric(&self.minor, &other.minor))
            .then_with(|| numeric(&self.patch, &other.patch))
            .then_with(|| prerelease(&self.prerelease, &other.prerelease))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Digits without a leading zero (but `0` itself).
fn is_number(text: &str) -> bool {
    !text.is_empty()
        && text.bytes().all(|byte| byte.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'))
}

/// Dot-separated, non-empty, `[0-9A-Za-z-]`; numeric pre-release identifiers have no leading zero.
fn identifiers_valid(text: &str, prerelease: bool) -> bool {
    text.split('.').all(|identifier| {
        !identifier.is_empty()
            && identifier
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
            && !(prerelease
                && identifier.bytes().all(|byte| byte.is_ascii_digit())
                && !is_number(identifier))
    })
}

/// Numbers of any length: the longer is larger, then digit by digit.
fn numeric(a: &str, b: &str) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// A release is above its pre-releases; identifiers compare numerically when both are numbers,
/// numbers below words, and a shorter list below a longer one with the same start.
fn prerelease(a: &[String], b: &[String]) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        (false, false) => {}
    }
    for (x, y) in a.iter().zip(b) {
        let x_num = x.bytes().all(|byte| byte.is_ascii_digit());
        let y_num = y.bytes().all(|byte| byte.is_ascii_digit());
        let order = match (x_num, y_num) {
            (true, true) => numeric(x, y),
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            (false, false) => x.cmp(y),
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    a.len().cmp(&b.len())
}

#[cfg(test)]
mod tests {
    use super::Version;

    fn v(text: &str) -> Version {
        Version::parse_flagd(text).unwrap_or_else(|| panic!("{text} should be valid"))
    }

    #[test]
    fn reads_what_go_reads() {
        for valid in [
            "1",
            "1.2",
            "v1.2.3",
            "V1.2.3",
            "1.0.0-alpha.1",
            "1.0.0+build.5",
            "0.0.0",
        ] {
            assert!(Version::parse_flagd(valid).is_some(), "{valid}");
        }
        for invalid in [
            "", "2.0.0.0", "01.2.3", "1.2-pre", "1.0.0-01", "1.0.0+", "x", "1..2", "vv1",
        ] {
            assert!(Version::parse_flagd(invalid).is_none(), "{invalid}");
        }
    }

    #[test]
    fn orders_as_semver_does() {
        assert!(v("2.0.0-alpha") < v("2.0.0"));
        assert!(v("1.0.0-alpha") < v("1.0.0-alpha.1"));
        assert!(v("1.0.0-alpha.1") < v("1.0.0-alpha.beta"));
        assert!(v("1.0.0-2") < v("1.0.0-10"));
        assert!(v("1.10.0") > v("1.9.0"));
        assert_eq!(v("1.2"), v("1.2.0"));
        assert_eq!(
            v("1.0.0+other").cmp(&v("1.0.0+build")),
            std::cmp::Ordering::Equal
        );
        assert!(v("3.0.1").same_minor(&v("3.0.0")));
        assert!(!v("3.1.0").same_minor(&v("3.0.0")) && v("3.1.0").same_major(&v("3.0.0")));
    }
}
