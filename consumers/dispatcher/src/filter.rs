//! Filtering by record headers, before a record is copied or decoded.

/// Whether a record's headers (`sy-event-type`, `sy-tag`) already prove that filters
/// `event_types` and `tags` refuse it, so it is skipped without copying or decoding its body.
/// `false` when they can't tell (no headers, or a versioned filter that needs the envelope's
/// schema version): the filters are applied again after decoding.
pub(crate) fn refused_by_headers(
    event_types: &[String],
    tags: &[String],
    event_type: Option<&str>,
    tag: Option<&str>,
) -> bool {
    let Some(t) = event_type else {
        return false;
    };
    if !event_types.is_empty()
        && !event_types.iter().any(|f| {
            f == t
                || f.rsplit_once(".v")
                    .is_some_and(|(name, v)| name == t && v.parse::<u32>().is_ok())
        })
    {
        return true;
    }
    if tags.is_empty() {
        return false;
    }
    if t != events::event_type::MARK_SEEN {
        return true; // only marks carry a tag
    }
    tag.is_some_and(|tag| !tags.iter().any(|w| w == tag))
}

#[cfg(test)]
mod tests {
    use super::refused_by_headers;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn headers_refuse_only_what_the_filters_surely_refuse() {
        let none: Vec<String> = Vec::new();
        // No filters, or no headers: never skipped before decoding.
        assert!(!refused_by_headers(&none, &none, Some("uid.bind"), None));
        assert!(!refused_by_headers(&v(&["uid.bind"]), &none, None, None));
        // Event types, exact and versioned.
        let types = v(&["uid.bind", "tasks.task_assigned.v2"]);
        assert!(!refused_by_headers(&types, &none, Some("uid.bind"), None));
        assert!(refused_by_headers(&types, &none, Some("uid.unbind"), None));
        // A versioned filter needs the envelope's version: decided after decoding.
        assert!(!refused_by_headers(
            &types,
            &none,
            Some("tasks.task_assigned"),
            None
        ));
        // Tags: only marks carry one; a mark without the header is decoded.
        let tags = v(&["promo"]);
        assert!(!refused_by_headers(
            &none,
            &tags,
            Some("mark.seen"),
            Some("promo")
        ));
        assert!(refused_by_headers(
            &none,
            &tags,
            Some("mark.seen"),
            Some("other")
        ));
        assert!(!refused_by_headers(&none, &tags, Some("mark.seen"), None));
        assert!(refused_by_headers(&none, &tags, Some("uid.bind"), None));
    }
}
