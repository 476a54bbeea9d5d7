//! Event types and subscription patterns: the matching rules, the parse rules and the
//! catalogue, checked from the outside as handlers and webhook subscriptions will use them.

use provisio_core::event::{EventPattern, EventType, CATALOGUE, MAX_LEN};

#[test]
fn matching_table() {
    // (pattern, event, matches)
    let table = [
        ("*", "client.created", true),
        ("*", "service.suspend.before", true),
        ("service.*", "service.usage_updated", true),
        ("service.*", "service.suspend.before", true),
        ("service.*", "client.created", false),
        ("service.suspend.*", "service.suspend.failed", true),
        ("service.suspend.*", "service.unsuspend.failed", false),
        ("service.suspend.*", "service.suspend", false),
        ("service.*.failed", "service.renew.failed", true),
        ("service.*.failed", "service.renew.succeeded", false),
        ("service.*.failed", "service.usage_updated", false),
        ("*.created", "client.created", true),
        ("*.created", "client.sub.created", false),
        ("client.*.x", "client.a.x", true),
        ("client.*.x", "client.a.b.x", false),
        ("client.created", "client.created", true),
        ("client.created", "client.updated", false),
        ("client", "client.created", false),
        ("client.created.extra", "client.created", false),
        ("*.*", "handler.disabled", true),
        ("*.*", "audit", false),
        ("audit.*", "audit", false),
    ];
    for (pattern, event, expected) in table {
        let p = EventPattern::parse(pattern).unwrap();
        let e = EventType::parse(event).unwrap();
        assert_eq!(p.matches(&e), expected, "{pattern} vs {event}");
    }
}

#[test]
fn event_type_parse_errors_name_the_rule() {
    let cases = [
        ("", "required"),
        ("Client.created", "pattern"),
        ("client..created", "pattern"),
        ("client.", "pattern"),
        (".client", "pattern"),
        ("client.9lives", "pattern"),
        ("client._x", "pattern"),
        ("client-created", "pattern"),
        ("client.*", "pattern"),
        ("client created", "pattern"),
    ];
    for (input, rule) in cases {
        let err = EventType::parse(input).unwrap_err();
        assert_eq!(err.rule, rule, "{input:?}: {err}");
    }
    let long = format!("a.{}", "b".repeat(MAX_LEN - 2));
    assert!(EventType::parse(&long).is_ok());
    let too_long = format!("{long}c");
    assert_eq!(EventType::parse(&too_long).unwrap_err().rule, "max_length");
    let msg = EventType::parse("Client").unwrap_err().to_string();
    assert!(msg.contains("event type") && msg.contains("a-z"), "{msg}");
}

#[test]
fn pattern_parse_errors_name_the_rule() {
    let cases = [
        ("", "required"),
        ("serv*", "pattern"),
        ("service.**", "pattern"),
        ("service.*x", "pattern"),
        ("**", "pattern"),
        ("service.", "pattern"),
        ("Service.*", "pattern"),
    ];
    for (input, rule) in cases {
        let err = EventPattern::parse(input).unwrap_err();
        assert_eq!(err.rule, rule, "{input:?}: {err}");
    }
    assert_eq!(
        EventPattern::parse(&"a.".repeat(51)).unwrap_err().rule,
        "max_length"
    );
    let msg = EventPattern::parse("serv*").unwrap_err().to_string();
    assert!(msg.contains("event pattern") && msg.contains('*'), "{msg}");
}

#[test]
fn catalogue_entries_parse_and_are_matched_by_their_prefixes() {
    let everything = EventPattern::parse("*").unwrap();
    for &entry in CATALOGUE {
        let event = EventType::parse(entry).unwrap_or_else(|e| panic!("{entry}: {e}"));
        assert!(event.is_catalogued());
        assert!(everything.matches(&event), "* vs {entry}");
        assert!(EventPattern::from(event.clone()).matches(&event));
        // Every proper prefix followed by `*`: `service.*` and `service.suspend.*`.
        let segments: Vec<&str> = entry.split('.').collect();
        for n in 1..segments.len() {
            let pattern = format!("{}.*", segments[..n].join("."));
            let p = EventPattern::parse(&pattern).unwrap();
            assert!(p.matches(&event), "{pattern} vs {entry}");
        }
    }
}

#[test]
fn catalogue_is_complete_and_unique() {
    let mut sorted = CATALOGUE.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), CATALOGUE.len(), "duplicate catalogue entry");
    // 7 client events and the 3 client gates, 7 actions in 3 phases, 6 others, and the
    // created/updated/deleted of servers, products, handlers and rules, and service.updated.
    assert_eq!(CATALOGUE.len(), 10 + 7 * 3 + 6 + 4 * 3 + 1);
    for record in ["server", "product", "handler", "rule"] {
        for change in ["created", "updated", "deleted"] {
            let kind = format!("{record}.{change}");
            assert!(CATALOGUE.contains(&kind.as_str()), "{kind} missing");
        }
    }
    for gate in [
        "client.create.before",
        "client.update.before",
        "client.delete.before",
    ] {
        assert!(CATALOGUE.contains(&gate), "{gate} missing");
    }
    for action in [
        "create",
        "suspend",
        "unsuspend",
        "terminate",
        "change_password",
        "change_package",
        "renew",
    ] {
        for phase in ["before", "succeeded", "failed"] {
            let name = format!("service.{action}.{phase}");
            assert!(CATALOGUE.contains(&name.as_str()), "{name} missing");
        }
    }
    let failures = EventPattern::parse("service.*.failed").unwrap();
    let failed = CATALOGUE
        .iter()
        .filter(|e| failures.matches(&EventType::parse(e).unwrap()))
        .count();
    assert_eq!(failed, 7);
    assert!(!EventType::parse("client.invented").unwrap().is_catalogued());
}

#[test]
fn serde_uses_the_string_form_and_refuses_invalid_values() {
    let e: EventType = serde_json::from_str(r#""service.renew.failed""#).unwrap();
    assert_eq!(e.as_str(), "service.renew.failed");
    assert_eq!(
        serde_json::to_value(&e).unwrap(),
        serde_json::json!("service.renew.failed")
    );
    let err = serde_json::from_str::<EventType>(r#""Service""#).unwrap_err();
    assert!(err.to_string().contains("event type"), "{err}");

    let p: Vec<EventPattern> = serde_json::from_str(r#"["client.*", "*"]"#).unwrap();
    assert_eq!(p[0].to_string(), "client.*");
    assert!(serde_json::from_str::<EventPattern>(r#""client.**""#).is_err());
}
