//! Tying configuration keys to their documentation: what a config struct accepts (as
//! serde lists it) and what a section of docs/configuration.md says.

use std::path::Path;

/// The keys a config struct (one with `deny_unknown_fields`) accepts, as serde lists them
/// when refusing an unknown one.
pub fn accepted_keys<T: serde::de::DeserializeOwned>() -> Vec<String> {
    let Err(e) = serde_json::from_str::<T>(r#"{"no_such_key_at_all": 1}"#) else {
        panic!("an unknown key is refused");
    };
    let message = e.to_string();
    let (_, list) = message
        .split_once("expected one of ")
        .or_else(|| message.split_once("expected "))
        .unwrap_or_else(|| panic!("{message}"));
    list.split(", ")
        .filter_map(|k| k.split('`').nth(1))
        .map(str::to_owned)
        .collect()
}

/// The text of `docs/configuration.md` (under `repo`) between `### <heading>` and the
/// next heading.
pub fn documented_section(repo: &Path, heading: &str) -> String {
    let text = std::fs::read_to_string(repo.join("docs/configuration.md")).unwrap();
    let start = text
        .find(&format!("### {heading}\n"))
        .unwrap_or_else(|| panic!("docs/configuration.md has a `### {heading}` section"));
    let rest = &text[start + heading.len() + 5..];
    rest[..rest.find("\n#").unwrap_or(rest.len())].to_owned()
}
