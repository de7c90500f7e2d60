/// `deploy/deptrans.example.toml` loads and validates.
#[test]
fn example_config_is_valid() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/deptrans.example.toml"
    );
    let cfg = super::DeptransConfig::load(Some(std::path::Path::new(path))).unwrap();
    assert_eq!(cfg.regions[0].name, "moscow");
    // The commented [[sources]] example is valid too.
    let text = std::fs::read_to_string(path).unwrap();
    let sources: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| {
            l.starts_with("[[sources]]")
                || ["topic =", "format =", "dead_letter_topic ="]
                    .iter()
                    .any(|k| l.starts_with(k))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let mut cfg = cfg;
    cfg.sources = toml::from_str::<super::DeptransConfig>(&sources)
        .unwrap()
        .sources;
    assert_eq!(cfg.sources.len(), 2, "{sources}");
    assert_eq!(cfg.sources[0].format, crate::records::Format::Json);
    cfg.validate().unwrap();
}
