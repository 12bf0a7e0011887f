//! Tiny MaxMind DB files for tests: an IPv4 database that maps a few networks to a country,
//! written by the format's specification (version 2: a binary search tree of 24-bit records,
//! a data section, and a metadata map after the `\xAB\xCD\xEFMaxMind.com` marker). Real
//! databases are licensed downloads; tests must not depend on one.

/// A network (`[a, b, c, d]`, prefix length) and the ISO code of its country.
pub type Network = ([u8; 4], u8, &'static str);

#[derive(Clone, Copy)]
enum Record {
    Empty,
    Node(usize),
    Data(usize),
}

/// A country database (`database_type` GeoLite2-Country) with records
/// `{"country": {"iso_code": CODE}}` for `networks`.
pub fn country_database(networks: &[Network]) -> Vec<u8> {
    let mut data = Vec::new();
    let mut nodes: Vec<[Record; 2]> = vec![[Record::Empty; 2]];
    for (address, prefix, code) in networks {
        let offset = data.len();
        map_header(&mut data, 1);
        string(&mut data, "country");
        map_header(&mut data, 1);
        string(&mut data, "iso_code");
        string(&mut data, code);
        let bits = u32::from_be_bytes(*address);
        let mut node = 0;
        for depth in 0..*prefix {
            let bit = usize::from(bits >> (31 - depth) & 1 == 1);
            if depth + 1 == *prefix {
                nodes[node][bit] = Record::Data(offset);
            } else {
                node = match nodes[node][bit] {
                    Record::Node(next) => next,
                    _ => {
                        nodes.push([Record::Empty; 2]);
                        nodes[node][bit] = Record::Node(nodes.len() - 1);
                        nodes.len() - 1
                    }
                };
            }
        }
    }
    let count = nodes.len();
    let mut file = Vec::new();
    for node in &nodes {
        for record in node {
            let value = match *record {
                Record::Empty => count,
                Record::Node(next) => next,
                Record::Data(offset) => count + 16 + offset,
            };
            let value = u32::try_from(value).expect("a small database");
            file.extend_from_slice(&value.to_be_bytes()[1..]);
        }
    }
    file.extend_from_slice(&[0; 16]);
    file.extend_from_slice(&data);
    file.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    map_header(&mut file, 9);
    string(&mut file, "node_count");
    unsigned(&mut file, 6, u64::try_from(count).expect("count"));
    string(&mut file, "record_size");
    unsigned(&mut file, 5, 24);
    string(&mut file, "ip_version");
    unsigned(&mut file, 5, 4);
    string(&mut file, "database_type");
    string(&mut file, "GeoLite2-Country");
    string(&mut file, "languages");
    file.extend_from_slice(&[1, 4]); // an array (extended type 11) of one element
    string(&mut file, "en");
    string(&mut file, "binary_format_major_version");
    unsigned(&mut file, 5, 2);
    string(&mut file, "binary_format_minor_version");
    unsigned(&mut file, 5, 0);
    string(&mut file, "build_epoch");
    file.extend_from_slice(&[8, 2]); // a uint64 (extended type 9) of 8 bytes
    file.extend_from_slice(&1_700_000_000u64.to_be_bytes());
    string(&mut file, "description");
    map_header(&mut file, 1);
    string(&mut file, "en");
    string(&mut file, "Pier test countries");
    file
}

/// A control byte: the type in the top three bits, a size below 29 in the rest.
fn control(out: &mut Vec<u8>, kind: u8, size: usize) {
    let size = u8::try_from(size)
        .ok()
        .filter(|s| *s < 29)
        .expect("short fields only");
    out.push(kind << 5 | size);
}

fn map_header(out: &mut Vec<u8>, pairs: usize) {
    control(out, 7, pairs);
}

fn string(out: &mut Vec<u8>, text: &str) {
    control(out, 2, text.len());
    out.extend_from_slice(text.as_bytes());
}

/// A uint16 (`kind` 5) or uint32 (6), big-endian in as few bytes as it needs.
fn unsigned(out: &mut Vec<u8>, kind: u8, value: u64) {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    control(out, kind, 8 - skip);
    out.extend_from_slice(&bytes[skip..]);
}
