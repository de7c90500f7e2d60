use super::*;

#[test]
fn defaults_are_valid_and_bad_retention_is_named() {
    DeptransConfig::default().validate().unwrap();
    let cfg = DeptransConfig {
        retention_days: 31,
        ..DeptransConfig::default()
    };
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains("retention_days"), "{err}");
}

#[test]
fn the_single_topic_is_one_envelope_source() {
    let cfg = DeptransConfig::default();
    assert_eq!(
        cfg.sources(),
        vec![SourceConfig::envelope("contractor-statuses-events")]
    );
    assert_eq!(
        cfg.sources()[0].dead_letter_topic(),
        "contractor-statuses-events.deptrans.dlq"
    );
}

#[test]
fn bad_sources_are_named() {
    let with = |sources: Vec<SourceConfig>| {
        let cfg = DeptransConfig {
            sources,
            ..DeptransConfig::default()
        };
        cfg.validate().map_err(|e| e.to_string())
    };
    with(vec![SourceConfig::json("a"), SourceConfig::envelope("b")]).unwrap();
    let err = with(vec![SourceConfig::json(" ")]).unwrap_err();
    assert!(err.contains("sources.topic"), "{err}");
    let err = with(vec![SourceConfig::json("a"), SourceConfig::envelope("a")]).unwrap_err();
    assert!(
        err.contains("sources.topic") && err.contains("twice"),
        "{err}"
    );
    let mut looped = SourceConfig::json("a");
    looped.dead_letter_topic = Some("b".into());
    let err = with(vec![looped, SourceConfig::envelope("b")]).unwrap_err();
    assert!(err.contains("sources.dead_letter_topic"), "{err}");
    let cfg = DeptransConfig {
        topic: "mine".into(),
        sources: vec![SourceConfig::json("other")],
        ..DeptransConfig::default()
    };
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains("topic: mine is ignored"), "{err}");
}

#[test]
fn an_unknown_format_is_named() {
    let dir = std::env::temp_dir().join(format!("sy-deptrans-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sources.toml");
    std::fs::write(&file, "[[sources]]\ntopic = \"a\"\nformat = \"xml\"\n").unwrap();
    let err = DeptransConfig::load(Some(&file)).unwrap_err().to_string();
    assert!(err.contains("format") && err.contains("xml"), "{err}");
    std::fs::write(&file, "[[sources]]\ntopic = \"a\"\nformat = \"json\"\n").unwrap();
    let cfg = DeptransConfig::load(Some(&file)).unwrap();
    assert_eq!(cfg.sources(), vec![SourceConfig::json("a")]);
}

#[test]
fn secrets_are_not_in_debug_output() {
    let mut cfg = DeptransConfig::default();
    cfg.krt.client_secret = "s3cr3t".into();
    cfg.api.clients.insert("tracker".into(), "k3y".into());
    let dbg = format!("{cfg:?}");
    assert!(!dbg.contains("s3cr3t") && !dbg.contains("k3y"), "{dbg}");
}
