//! The `$params` array a WHMCS module function receives, built from one action request.
//! Keys and value shapes follow WHMCS's documented `$params`; what Provisio has no
//! counterpart for is passed empty rather than invented (docs/modules/whmcs.md).

use provisio_core::module::{Action, ActionRequest};
use provisio_core::settings::Settings;
use secrecy::ExposeSecret;
use serde_json::{json, Map, Value};

use super::schema::{ConfigOption, OptionKind};

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(true)) => "on".into(),
        _ => String::new(),
    }
}

/// `configoption1`… from `settings` in `_ConfigOptions` order.
fn config_options(out: &mut Map<String, Value>, order: &[ConfigOption], settings: &Settings) {
    for (i, option) in order.iter().enumerate() {
        let value = settings.get(&option.name);
        let v = match option.kind {
            OptionKind::YesNo => {
                let on = matches!(value, Some(Value::Bool(true)));
                if on { "on" } else { "" }.to_string()
            }
            OptionKind::Text => text(value),
        };
        out.insert(format!("configoption{}", i + 1), Value::String(v));
    }
}

/// WHMCS spells service statuses capitalised.
fn whmcs_status(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

/// `$params` for calling `module`'s function for `request`.
pub fn build(module: &str, order: &[ConfigOption], request: &ActionRequest) -> Value {
    let mut p = Map::new();
    let server = &request.server.settings;
    let secure = server
        .get("secure")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    p.insert("moduletype".into(), json!(module));
    p.insert("action".into(), json!(request.action.to_string()));
    p.insert(
        "provisio_idempotency_key".into(),
        json!(request.idempotency_key),
    );
    p.insert("server".into(), json!(true));
    p.insert("serverid".into(), json!(request.server.id));
    p.insert("serverip".into(), json!(text(server.get("ip"))));
    p.insert("serverhostname".into(), json!(text(server.get("hostname"))));
    p.insert("serverusername".into(), json!(text(server.get("username"))));
    p.insert("serverpassword".into(), json!(text(server.get("password"))));
    p.insert(
        "serveraccesshash".into(),
        json!(text(server.get("access_hash"))),
    );
    p.insert("serversecure".into(), json!(secure));
    p.insert(
        "serverhttpprefix".into(),
        json!(if secure { "https" } else { "http" }),
    );
    p.insert("serverport".into(), json!(text(server.get("port"))));

    // A package change hands the module the new package's options, as WHMCS does.
    let new_product = match (&request.action, request.params.get("new_product")) {
        (Action::ChangePackage, Some(Value::Object(s))) => Some(s),
        _ => None,
    };
    let product_settings = new_product.unwrap_or(&request.product.settings);
    config_options(&mut p, order, product_settings);
    p.insert("pid".into(), json!(request.product.id));
    p.insert("packageid".into(), json!(request.product.id));
    p.insert("producttype".into(), json!("hostingaccount"));
    p.insert("configoptions".into(), json!({}));

    let mut customfields = Map::new();
    if let Some(s) = &request.service {
        p.insert("serviceid".into(), json!(s.id));
        p.insert("accountid".into(), json!(s.id));
        p.insert("username".into(), json!(s.username));
        p.insert("password".into(), json!(s.password.expose_secret()));
        p.insert("status".into(), json!(whmcs_status(&s.status)));
        p.insert("domain".into(), json!(text(s.settings.get("domain"))));
        // Service settings and earlier outputs stand in for the product custom fields
        // WHMCS keeps per service.
        for (k, v) in s.settings.iter().chain(s.outputs.iter()) {
            if matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
                customfields.insert(k.clone(), json!(text(Some(v))));
            }
        }
    } else {
        for key in [
            "serviceid",
            "accountid",
            "username",
            "password",
            "domain",
            "status",
        ] {
            p.insert(key.into(), json!(""));
        }
    }
    p.insert("customfields".into(), Value::Object(customfields));
    if let Some(Value::String(pw)) = request.params.get("new_password") {
        p.insert("password".into(), json!(pw));
    }
    if let Some(reason) = request.params.get("reason") {
        p.insert("suspendreason".into(), json!(text(Some(reason))));
    }

    match &request.client {
        Some(c) => {
            let (first, last) = c.name.split_once(' ').unwrap_or((c.name.as_str(), ""));
            let mut details = Map::new();
            details.insert("userid".into(), json!(c.id));
            details.insert("id".into(), json!(c.id));
            details.insert("client_id".into(), json!(c.id));
            details.insert("firstname".into(), json!(first));
            details.insert("lastname".into(), json!(last));
            details.insert("fullname".into(), json!(c.name));
            details.insert("companyname".into(), json!(""));
            details.insert("email".into(), json!(c.email));
            let mut fields = Vec::new();
            for (i, (key, value)) in c.custom_fields.iter().enumerate() {
                fields.push(json!({"id": i + 1, "name": key, "value": value}));
                details.insert(format!("customfields{}", i + 1), json!(value));
            }
            details.insert("customfields".into(), Value::Array(fields));
            p.insert("userid".into(), json!(c.id));
            p.insert("clientsdetails".into(), Value::Object(details));
        }
        None => {
            p.insert("userid".into(), json!(""));
            p.insert("clientsdetails".into(), json!({}));
        }
    }
    Value::Object(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use provisio_core::module::{ClientContext, ProductContext, ServerContext, ServiceContext};

    fn obj(v: Value) -> Settings {
        v.as_object().unwrap().clone()
    }

    fn request(action: Action, params: Value) -> ActionRequest {
        ActionRequest {
            action,
            idempotency_key: "job-7-1".into(),
            server: ServerContext {
                id: 3,
                name: "backup".into(),
                settings: obj(
                    json!({"hostname": "backup.test", "ip": "127.0.0.1", "username": "admin",
                    "password": "Srv-Pw-81", "access_hash": "Hash-55", "secure": false, "port": 6060}),
                ),
            },
            product: ProductContext {
                id: 9,
                name: "reseller".into(),
                settings: obj(
                    json!({"package_name": "gold", "send_mail": true, "api_password": "P-1"}),
                ),
            },
            service: Some(ServiceContext {
                id: 12,
                username: "rita1".into(),
                password: "Svc-Pw-12".to_string().into(),
                status: "active".into(),
                settings: obj(json!({"domain": "rita.test"})),
                outputs: obj(json!({"pass_key": "PK-1"})),
            }),
            client: Some(ClientContext {
                id: 4,
                name: "Rita Reseller".into(),
                email: "rita@example.test".into(),
                custom_fields: [("pass_key".to_string(), "PK-1".to_string())].into(),
            }),
            params: obj(params),
        }
    }

    fn order() -> Vec<ConfigOption> {
        vec![
            ConfigOption {
                name: "package_name".into(),
                kind: OptionKind::Text,
            },
            ConfigOption {
                name: "send_mail".into(),
                kind: OptionKind::YesNo,
            },
            ConfigOption {
                name: "api_password".into(),
                kind: OptionKind::Text,
            },
            ConfigOption {
                name: "notes".into(),
                kind: OptionKind::Text,
            },
        ]
    }

    #[test]
    fn params_carry_server_product_service_and_client_as_whmcs_names_them() {
        let p = build("demo", &order(), &request(Action::Create, json!({})));
        assert_eq!(p["configoption1"], "gold");
        assert_eq!(p["configoption2"], "on");
        assert_eq!(p["configoption3"], "P-1");
        assert_eq!(p["configoption4"], "");
        assert_eq!(p["serverhostname"], "backup.test");
        assert_eq!(p["serverpassword"], "Srv-Pw-81");
        assert_eq!(p["serveraccesshash"], "Hash-55");
        assert_eq!(p["serversecure"], false);
        assert_eq!(p["serverhttpprefix"], "http");
        assert_eq!(p["serverport"], "6060");
        assert_eq!(p["serviceid"], 12);
        assert_eq!(p["userid"], 4);
        assert_eq!(p["username"], "rita1");
        assert_eq!(p["password"], "Svc-Pw-12");
        assert_eq!(p["domain"], "rita.test");
        assert_eq!(p["status"], "Active");
        assert_eq!(p["customfields"]["pass_key"], "PK-1");
        assert_eq!(p["clientsdetails"]["firstname"], "Rita");
        assert_eq!(p["clientsdetails"]["lastname"], "Reseller");
        assert_eq!(p["clientsdetails"]["customfields"][0]["value"], "PK-1");
        assert_eq!(p["clientsdetails"]["customfields1"], "PK-1");
    }

    #[test]
    fn change_password_and_change_package_pass_the_new_values() {
        let p = build(
            "demo",
            &order(),
            &request(Action::ChangePassword, json!({"new_password": "New-Pw-99"})),
        );
        assert_eq!(p["password"], "New-Pw-99");
        let p = build(
            "demo",
            &order(),
            &request(
                Action::ChangePackage,
                json!({"new_product": {"package_name": "platinum", "send_mail": false}}),
            ),
        );
        assert_eq!(p["configoption1"], "platinum");
        assert_eq!(p["configoption2"], "");
        let p = build(
            "demo",
            &order(),
            &request(Action::Suspend, json!({"reason": "non-payment"})),
        );
        assert_eq!(p["suspendreason"], "non-payment");
    }
}
