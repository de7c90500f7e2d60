//! mark-notify at a fixed offered rate, counted at one HTTP and one topic integration.

use super::*;

pub(super) async fn seen(out: &mut String, rate: u64, seconds: u64) -> anyhow::Result<()> {
    let marks = unique("bench-marks");
    let archive = unique("bench-archive");
    create_topic(&marks, 6).await?;
    create_topic(&archive, 6).await?;
    let ids = Arc::new(Mutex::new((0u64, HashSet::<String>::new())));
    let sink = {
        let ids = ids.clone();
        let app = Router::new().route(
            "/seen",
            post(move |body: axum::body::Bytes| {
                let ids = ids.clone();
                async move {
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    let mut g = ids.lock().unwrap();
                    g.0 += 1;
                    g.1.insert(v["event_id"].as_str().unwrap_or_default().to_owned());
                    ""
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/seen")
    };
    let dir = std::env::temp_dir().join(unique("bench-seen"));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("integrations.toml");
    std::fs::write(&file, format!(
        "[[integrations]]\ntag = \"promo\"\n[[integrations.targets]]\nname = \"api\"\nconcurrency = 128\ntarget = {{ kind = \"http\", url = \"{sink}\" }}\n[[integrations.targets]]\nname = \"archive\"\nconcurrency = 128\ntarget = {{ kind = \"topic\", topic = \"{archive}\" }}\n"
    ))?;
    let mut icfg = ingress_config("unused");
    icfg.mark_notify.topic = marks.clone();
    let ingress = start_ingress(icfg, None).await?;
    let mut dcfg = dispatcher_config(Vec::new());
    dcfg.mark_notify = Some(switchyard_dispatcher::config::MarkNotifySection {
        topic: marks,
        integrations_file: file,
    });
    let d = start_dispatcher(dcfg).await?;

    let headers = Arc::new(|i: u64| vec![("x-yataxi-userid", format!("user-{}", i % 20_000))]);
    let body: integration_tests::load::BodyFn =
        Arc::new(|i| format!(r#"{{"tag":"promo","id":"n-{i}"}}"#));
    let r = open_loop(
        &ingress.url("/4.0/mark-notify/v1/seen"),
        rate,
        Duration::from_secs(seconds),
        2_000,
        headers,
        body,
    )
    .await;

    // Drain: wait until both integrations have everything that was accepted (or 5 minutes).
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut archived = HashSet::new();
    let mut archive_total = 0u64;
    let consumer: StreamConsumer = kafka_settings()
        .consumer_config(&unique("bench-archive-reader"))
        .create()?;
    consumer.subscribe(&[&archive])?;
    while Instant::now() < deadline && (archived.len() < r.ok || ids.lock().unwrap().1.len() < r.ok)
    {
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await {
            archive_total += 1;
            let id = m.headers().and_then(|h| {
                rdkafka::message::Headers::iter(h)
                    .find(|h| h.key == "sy-event-id")
                    .and_then(|h| h.value)
                    .map(<[u8]>::to_vec)
            });
            archived.insert(id.unwrap_or_default());
        }
    }
    let (http_total, http_distinct) = {
        let g = ids.lock().unwrap();
        (g.0, g.1.len())
    };
    d.stop().await?;
    ingress.stop().await?;
    let _ = writeln!(out, "### mark-notify: open loop at {rate} req/s for {seconds} s, one HTTP + one topic integration\n");
    out.push_str(OPEN_HEAD);
    out.push_str(&open_row("POST /4.0/mark-notify/v1/seen", &r));
    let _ = writeln!(
        out,
        "\n| integration | distinct delivered | missing (accepted, not delivered) | duplicates |\n|---|---|---|---|"
    );
    for (name, distinct, total) in [
        ("http", http_distinct, http_total),
        ("topic", archived.len(), archive_total),
    ] {
        let _ = writeln!(
            out,
            "| {name} | {distinct} | {} | {} |",
            r.ok.saturating_sub(distinct),
            total.saturating_sub(distinct as u64)
        );
    }
    let _ = writeln!(
        out,
        "\naccepted {} of {} marks; achieved **{:.0}/s** of {rate}/s offered (target >= {:.0}/s), p99 **{}** from the scheduled send (target < 20 ms); target: every accepted mark delivered once to each integration",
        r.ok,
        r.requests,
        r.rate(),
        rate as f64 * 0.95,
        ms(r.p99)
    );
    Ok(())
}
