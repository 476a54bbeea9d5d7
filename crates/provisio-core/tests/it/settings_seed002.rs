//! The product settings of a WHMCS backup-server provisioning module (seed 002), declared as a
//! [`SettingsSchema`] and validated end to end: every rule the vendor's documentation states
//! is shown to be enforced, with the field and rule of each rejection asserted exactly.

use provisio_core::settings::{rule, Field, FieldError, Mode, Settings, SettingsSchema};
use serde_json::{json, Value};

const GB: u64 = 1 << 30;

/// A DNS name (labels of letters, digits and inner hyphens; dotted IPv4 addresses fit too)
/// or an IPv6 address, optionally in brackets.
const HOST: &str = concat!(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?",
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*",
    r"|\[?[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*\]?",
);

/// The module's "Module Settings" tab.
///
/// "Enable Consolidated Report" and "Retrieve Customer Pass Key" are documented as not
/// applicable to one action, but they are checkboxes: an unticked box is a harmless `false`,
/// and a condition cannot forbid only `true`, so they stay allowed and the module ignores
/// them for that action. The email list, in contrast, is only ever filled in on purpose.
fn schema() -> SettingsSchema {
    const RESELLER: &str = "signup_reseller";
    SettingsSchema::new(vec![
        Field::enumeration("protocol", "Protocol", &["http", "https"]).required(),
        Field::string("hostname", "Hostname or IP address")
            .pattern(HOST)
            .required(),
        Field::integer("port", "Web console port", Some(1), Some(65535))
            .default_value(6060)
            .help("6060 for http, usually 6061 for https."),
        Field::string("username", "Admin username").required(),
        Field::secret("password", "Admin password").required(),
        Field::enumeration("action", "Action", &[RESELLER, "signup_customer"]).required(),
        Field::string("reseller_name", "Reseller name")
            .help("Reseller account new customers are created under.")
            .forbidden_when("action", RESELLER),
        Field::boolean("activation_status", "Activate on creation"),
        Field::boolean("auto_authorization", "Auto authorization"),
        Field::bytes("storage_allotted", "Storage allotted", None, None),
        Field::string("storage_location", "Storage location")
            .help("Empty lets the backup server choose."),
        Field::boolean("consolidated_report", "Consolidated report"),
        Field::email_list("consolidated_report_email", "Consolidated report email")
            .forbidden_when("action", RESELLER),
        Field::boolean("auto_mcal", "Automatic MCAL").default_value(true),
        Field::integer("allot_mcal", "Allotted MCAL", Some(0), None)
            .required_when("auto_mcal", false),
        Field::enumeration(
            "bandwidth_throttling",
            "Bandwidth throttling",
            &["global", "new"],
        ),
        Field::boolean("throttle_enabled", "Throttle enabled"),
        Field::enumeration(
            "throttle_mode",
            "Throttle mode",
            &["always", "specified_time"],
        ),
        Field::time_of_day("throttle_from", "Throttle from")
            .required_when("throttle_mode", "specified_time"),
        Field::time_of_day("throttle_till", "Throttle till")
            .required_when("throttle_mode", "specified_time"),
        Field::bytes(
            "restricted_rate",
            "Restricted rate",
            Some(1024),
            Some(9999 * GB),
        )
        .required_when("throttle_enabled", true),
        Field::boolean("send_mail", "Send account email"),
        Field::boolean("retrieve_pass_key", "Retrieve customer pass key"),
    ])
}

/// A full, valid configuration as a form or TOML file would send it: strings for sizes,
/// switches and numbers.
fn valid() -> Settings {
    settings(json!({
        "protocol": "https",
        "hostname": "backup.example.com",
        "username": "admin",
        "password": "s3cret",
        "action": "signup_customer",
        "reseller_name": "acme",
        "activation_status": "on",
        "auto_authorization": "no",
        "storage_allotted": "10 GB",
        "storage_location": "",
        "consolidated_report": true,
        "consolidated_report_email": "ops@example.com, billing@example.com",
        "bandwidth_throttling": "new",
        "throttle_enabled": "yes",
        "throttle_mode": "specified_time",
        "throttle_from": "0130",
        "throttle_till": 1740,
        "restricted_rate": "512 KB",
        "send_mail": "1",
        "retrieve_pass_key": false,
    }))
}

fn settings(value: Value) -> Settings {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// The valid configuration with `changes` applied; a `null` removes the key.
fn with(changes: Value) -> Settings {
    let mut config = valid();
    for (key, value) in settings(changes) {
        if value.is_null() {
            config.remove(&key);
        } else {
            config.insert(key, value);
        }
    }
    config
}

fn errors(changes: Value) -> Vec<FieldError> {
    let config = with(changes.clone());
    match schema().validate(&config, Mode::Complete) {
        Ok(out) => panic!("{changes} was accepted as {}", Value::Object(out)),
        Err(errors) => errors,
    }
}

/// Asserts that `changes` cause exactly one error, on `field` for `rule`, whose message
/// starts with the field's name; returns the message.
fn rejected(changes: Value, field: &str, rule: &str) -> String {
    let errors = errors(changes.clone());
    let found: Vec<_> = errors
        .iter()
        .map(|e| (e.field.as_str(), e.rule.as_str()))
        .collect();
    assert_eq!(found, [(field, rule)], "for {changes}: {errors:?}");
    let message = errors.into_iter().next().unwrap().message;
    assert!(message.starts_with(&format!("{field}: ")), "{message}");
    message
}

fn accepted(changes: Value) -> Settings {
    let config = with(changes.clone());
    schema()
        .validate(&config, Mode::Complete)
        .unwrap_or_else(|errors| panic!("{changes} was rejected: {errors:?}"))
}

#[test]
fn the_schema_is_well_formed() {
    let schema = schema();
    assert_eq!(schema.check(), Ok(()));
    assert_eq!(schema.secret_fields().collect::<Vec<_>>(), ["password"]);
    assert_eq!(
        schema.field("port").and_then(|f| f.default.clone()),
        Some(json!(6060))
    );
}

#[test]
fn a_complete_valid_configuration_is_normalised() {
    let out = accepted(json!({}));
    assert_eq!(
        Value::Object(out.clone()),
        json!({
            "protocol": "https",
            "hostname": "backup.example.com",
            "port": 6060,
            "username": "admin",
            "password": "s3cret",
            "action": "signup_customer",
            "reseller_name": "acme",
            "activation_status": true,
            "auto_authorization": false,
            "storage_allotted": 10 * GB,
            "storage_location": "",
            "consolidated_report": true,
            "consolidated_report_email": ["ops@example.com", "billing@example.com"],
            "auto_mcal": true,
            "bandwidth_throttling": "new",
            "throttle_enabled": true,
            "throttle_mode": "specified_time",
            "throttle_from": "0130",
            "throttle_till": "1740",
            "restricted_rate": 512 * 1024,
            "send_mail": true,
            "retrieve_pass_key": false,
        })
    );
    // Normalising is idempotent: the output validates to itself.
    assert_eq!(schema().validate(&out, Mode::Complete), Ok(out));
}

#[test]
fn hostnames_and_addresses_are_accepted_and_junk_is_not() {
    for host in [
        "backup",
        "backup-1.example.com",
        "192.0.2.10",
        "2001:db8::1",
        "[2001:db8::1]",
    ] {
        accepted(json!({ "hostname": host }));
    }
    for host in [
        "-backup.example.com",
        "backup.example.com/",
        "http://backup",
        "a b",
        "backup..com",
    ] {
        rejected(json!({ "hostname": host }), "hostname", rule::PATTERN);
    }
}

#[test]
fn protocol_must_be_http_or_https() {
    let message = rejected(json!({ "protocol": "ftp" }), "protocol", rule::ENUM);
    assert!(message.contains(r#""http", "https""#), "{message}");
}

#[test]
fn throttle_times_must_be_hhmm() {
    let message = rejected(
        json!({ "throttle_from": "2460" }),
        "throttle_from",
        rule::TIME_OF_DAY,
    );
    assert!(message.contains("2460"), "{message}");
    rejected(
        json!({ "throttle_till": "25:00" }),
        "throttle_till",
        rule::TIME_OF_DAY,
    );
    rejected(
        json!({ "throttle_till": "130" }),
        "throttle_till",
        rule::TIME_OF_DAY,
    );
}

#[test]
fn restricted_rate_bounds_are_inclusive_and_binary() {
    // "1000" is a plain byte count, below the 1024-byte minimum; "1000 bytes" says the same.
    for below in ["1000", "1000 bytes", "1023 B"] {
        let message = rejected(
            json!({ "restricted_rate": below }),
            "restricted_rate",
            rule::MIN,
        );
        assert_eq!(
            message,
            "restricted_rate: must be at least 1 KB (1024 bytes)"
        );
    }
    let message = rejected(
        json!({ "restricted_rate": "10000 GB" }),
        "restricted_rate",
        rule::MAX,
    );
    assert_eq!(
        message,
        "restricted_rate: must be at most 9999 GB (10736344498176 bytes)"
    );
    rejected(
        json!({ "restricted_rate": 9999 * GB + 1 }),
        "restricted_rate",
        rule::MAX,
    );
    rejected(
        json!({ "restricted_rate": "fast" }),
        "restricted_rate",
        rule::BYTES,
    );

    assert_eq!(
        accepted(json!({ "restricted_rate": 1024 }))["restricted_rate"],
        json!(1024)
    );
    assert_eq!(
        accepted(json!({ "restricted_rate": "1 KB" }))["restricted_rate"],
        json!(1024)
    );
    let top = accepted(json!({ "restricted_rate": "9999 GB" }));
    assert_eq!(top["restricted_rate"], json!(10_736_344_498_176_u64));
}

#[test]
fn every_report_address_must_be_an_email() {
    let changes = json!({ "consolidated_report_email": "ops@example.com, not-an-email" });
    let message = rejected(changes, "consolidated_report_email", rule::EMAIL);
    assert!(message.contains("not-an-email"), "{message}");
    let list = json!({ "consolidated_report_email": ["ops@example.com"] });
    assert_eq!(
        accepted(list)["consolidated_report_email"],
        json!(["ops@example.com"])
    );
}

#[test]
fn throttle_times_are_required_for_specified_time() {
    let message = rejected(
        json!({ "throttle_from": null }),
        "throttle_from",
        rule::REQUIRED_WHEN,
    );
    assert_eq!(
        message,
        r#"throttle_from: required when throttle_mode is "specified_time""#
    );
    let errors = errors(json!({ "throttle_from": null, "throttle_till": "" }));
    let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
    // An empty time is not a time: it is rejected as such, not silently taken as missing.
    assert_eq!(fields, ["throttle_from", "throttle_till"]);
    let always = accepted(
        json!({ "throttle_mode": "always", "throttle_from": null, "throttle_till": null }),
    );
    assert!(!always.contains_key("throttle_from"));
}

#[test]
fn restricted_rate_is_required_only_when_throttling() {
    let message = rejected(
        json!({ "restricted_rate": null }),
        "restricted_rate",
        rule::REQUIRED_WHEN,
    );
    assert_eq!(
        message,
        "restricted_rate: required when throttle_enabled is true"
    );
    accepted(json!({ "restricted_rate": null, "throttle_enabled": "off" }));
}

#[test]
fn reseller_settings_do_not_apply_to_signing_up_a_reseller() {
    let changes = json!({ "action": "signup_reseller", "consolidated_report_email": null });
    let message = rejected(changes, "reseller_name", rule::NOT_APPLICABLE);
    assert_eq!(
        message,
        r#"reseller_name: not applicable when action is "signup_reseller""#
    );

    let changes = json!({ "action": "signup_reseller", "reseller_name": null });
    rejected(changes, "consolidated_report_email", rule::NOT_APPLICABLE);

    // Left empty, as the WHMCS form submits untouched fields, they are fine.
    let changes = json!({
        "action": "signup_reseller",
        "reseller_name": "",
        "consolidated_report_email": " ",
    });
    accepted(changes);
}

#[test]
fn allotted_mcal_is_required_without_auto_mcal() {
    let message = rejected(
        json!({ "auto_mcal": false }),
        "allot_mcal",
        rule::REQUIRED_WHEN,
    );
    assert_eq!(message, "allot_mcal: required when auto_mcal is false");
    let out = accepted(json!({ "auto_mcal": "no", "allot_mcal": "25" }));
    assert_eq!(
        (&out["auto_mcal"], &out["allot_mcal"]),
        (&json!(false), &json!(25))
    );
    rejected(
        json!({ "auto_mcal": false, "allot_mcal": -1 }),
        "allot_mcal",
        rule::MIN,
    );
}

#[test]
fn port_must_be_an_integer_in_range() {
    let message = rejected(json!({ "port": 70000 }), "port", rule::MAX);
    assert_eq!(message, "port: must be at most 65535");
    let message = rejected(json!({ "port": "abc" }), "port", rule::TYPE);
    assert_eq!(message, "port: must be an integer");
    assert_eq!(accepted(json!({ "port": "6061" }))["port"], json!(6061));
}

#[test]
fn unknown_keys_are_rejected() {
    let message = rejected(json!({ "passwrod": "x" }), "passwrod", rule::UNKNOWN_FIELD);
    assert!(message.contains("passwrod"), "{message}");
}

#[test]
fn required_connection_settings_must_be_given() {
    rejected(json!({ "password": null }), "password", rule::REQUIRED);
    rejected(json!({ "password": "" }), "password", rule::REQUIRED);
    rejected(json!({ "hostname": " " }), "hostname", rule::REQUIRED);
    let sealed = json!({ "password": { "$sealed": "q83vEjRWeJA=" } });
    assert_eq!(accepted(sealed.clone())["password"], sealed["password"]);
}

#[test]
fn several_problems_are_reported_together_in_schema_order() {
    let errors = errors(json!({
        "typo": 1,
        "throttle_from": null,
        "port": "abc",
        "protocol": "ftp",
        "restricted_rate": "10000 GB",
        "consolidated_report_email": "ops@example.com, not-an-email",
        "auto_mcal": false,
    }));
    let found: Vec<_> = errors
        .iter()
        .map(|e| (e.field.as_str(), e.rule.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            ("protocol", rule::ENUM),
            ("port", rule::TYPE),
            ("consolidated_report_email", rule::EMAIL),
            ("allot_mcal", rule::REQUIRED_WHEN),
            ("throttle_from", rule::REQUIRED_WHEN),
            ("restricted_rate", rule::MAX),
            ("typo", rule::UNKNOWN_FIELD),
        ]
    );
    for error in &errors {
        assert!(
            error.message.starts_with(&format!("{}: ", error.field)),
            "{}",
            error.message
        );
    }
}

#[test]
fn an_override_fragment_is_checked_without_required_fields() {
    let fragment = settings(json!({ "restricted_rate": "2 GB" }));
    let out = schema().validate(&fragment, Mode::Partial).unwrap();
    assert_eq!(Value::Object(out), json!({ "restricted_rate": 2 * GB }));

    // No defaults either: the fragment says only what it changes.
    let fragment = settings(json!({ "throttle_mode": "specified_time" }));
    let out = schema().validate(&fragment, Mode::Partial).unwrap();
    assert_eq!(
        Value::Object(out),
        json!({ "throttle_mode": "specified_time" })
    );

    // But what it does say must be valid.
    let fragment = settings(json!({ "port": 0, "throttle_from": "2460" }));
    let errors = schema().validate(&fragment, Mode::Partial).unwrap_err();
    let found: Vec<_> = errors
        .iter()
        .map(|e| (e.field.as_str(), e.rule.as_str()))
        .collect();
    assert_eq!(
        found,
        [("port", rule::MIN), ("throttle_from", rule::TIME_OF_DAY)]
    );
}
