//! The configuration reference of `docs/operations.md`, written from the declarations above so
//! the documentation cannot drift from the code (a test compares them).

use super::Config;

impl Config {
    /// Every setting as a Markdown table: its file key, flag, environment variable, default and
    /// meaning.
    pub fn reference() -> String {
        let defaults: toml::Table =
            toml::from_str(&Config::default().to_toml()).unwrap_or_default();
        let mut out = String::from(
            "| Setting (file key) | Flag | Environment variable | Default | Meaning |\n\
             |---|---|---|---|---|\n",
        );
        for key in Config::keys() {
            let section = match key.section {
                "" => Some(&defaults),
                section => defaults.get(section).and_then(toml::Value::as_table),
            };
            let default = match section.and_then(|t| t.get(key.name)) {
                Some(toml::Value::String(text)) => format!("`{text}`"),
                Some(value) => format!("`{value}`"),
                None => "(none)".to_owned(),
            };
            let flag = match key.has_flag() {
                true => format!("`--{}`", key.flag()),
                false => "(none)".to_owned(),
            };
            let meaning = key
                .doc
                .lines()
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ")
                .replace('|', "\\|");
            out.push_str(&format!(
                "| `{}` | {flag} | `{}` | {default} | {meaning} |\n",
                key.path(),
                key.env()
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: &str = "<!-- config-reference:start -->\n";
    const END: &str = "<!-- config-reference:end -->";

    /// Fails when `docs/operations.md` and the declarations differ; `PIER_UPDATE_DOCS=1` rewrites
    /// the document's section instead.
    #[test]
    fn the_operations_guide_lists_every_setting_as_declared() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/operations.md");
        let doc = std::fs::read_to_string(path).expect("docs/operations.md");
        let start = doc.find(START).expect("start marker") + START.len();
        let end = doc.find(END).expect("end marker");
        let expected = Config::reference();
        if doc[start..end] == expected {
            return;
        }
        if std::env::var_os("PIER_UPDATE_DOCS").is_some() {
            let updated = format!("{}{expected}{}", &doc[..start], &doc[end..]);
            std::fs::write(path, updated).expect("write docs/operations.md");
            return;
        }
        panic!(
            "docs/operations.md's configuration reference is out of date; run \
             `PIER_UPDATE_DOCS=1 cargo test -p pier --lib config` to rewrite it"
        );
    }
}
