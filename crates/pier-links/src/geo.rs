//! A visitor's country, from a MaxMind-format database (GeoLite2 or GeoIP2 Country or City, or
//! any database whose records carry `country.iso_code`) when one is configured. The file is
//! read into memory once, at start; a lookup allocates nothing.

use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;

/// An ISO 3166-1 alpha-2 country code, as two uppercase letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Country([u8; 2]);

impl Country {
    pub fn parse(code: &str) -> Option<Self> {
        match code.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Some(Self([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
            }
            _ => None,
        }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

/// The part of a record we read.
#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow)]
    country: Option<CountryRecord<'a>>,
}

#[derive(Deserialize)]
struct CountryRecord<'a> {
    iso_code: Option<&'a str>,
}

/// The opened database.
pub struct Countries(maxminddb::Reader<Vec<u8>>);

impl std::fmt::Debug for Countries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Countries")
            .field("database_type", &self.0.metadata.database_type)
            .finish()
    }
}

impl Countries {
    /// Reads the database at `path`; the error says what is wrong, in one line.
    pub fn open(path: &Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
        Self::from_bytes(bytes)
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, String> {
        maxminddb::Reader::from_source(bytes)
            .map(Self)
            .map_err(|e| format!("not a MaxMind database: {e}"))
    }

    /// The country of `address`, if the database knows it.
    pub fn country(&self, address: IpAddr) -> Option<Country> {
        let record: Record<'_> = self.0.lookup(address).ok()??;
        Country::parse(record.country?.iso_code?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn countries_are_found_by_network() {
        let file = pier_testkit::mmdb::country_database(&[
            ([203, 0, 113, 0], 24, "NZ"),
            ([198, 51, 100, 0], 24, "de"),
        ]);
        let countries = Countries::from_bytes(file).expect("a valid database");
        let at = |ip: &str| countries.country(ip.parse().expect("ip"));
        assert_eq!(
            at("203.0.113.7").map(|c| c.as_str().to_owned()).as_deref(),
            Some("NZ")
        );
        assert_eq!(
            at("198.51.100.255")
                .map(|c| c.as_str().to_owned())
                .as_deref(),
            Some("DE")
        );
        assert_eq!(at("192.0.2.1"), None);
        assert!(Countries::from_bytes(b"not a database".to_vec()).is_err());
        assert_eq!(Country::parse("nzl"), None);
    }
}
