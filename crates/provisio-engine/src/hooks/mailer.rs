//! Sending email through the configured SMTP relay, for email handlers, to an address the
//! outbound policy allows, and never with credentials in the clear unless the operator says so.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use provisio_modules::outbound::{OutboundError, OutboundPolicy};
use secrecy::{ExposeSecret, SecretString};

/// How the connection to the relay is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain SMTP (a relay on the same host or network).
    #[default]
    None,
    /// STARTTLS after connecting (port 587).
    Starttls,
    /// TLS from the start (port 465).
    Tls,
}

/// The `[smtp]` section.
#[derive(Debug, Clone)]
pub struct SmtpOptions {
    pub host: String,
    pub port: u16,
    /// The sender, e.g. `Provisio <noreply@example.net>`.
    pub from: String,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    pub tls: SmtpTls,
    /// Send the credentials even when `tls` is `none`, where anyone on the path can read
    /// them; only an operator's explicit choice, for a relay on a trusted link.
    pub allow_plaintext_auth: bool,
}

impl SmtpOptions {
    /// Whether a relay can be set up from these options; the error names the setting.
    pub fn check(&self) -> Result<(), String> {
        Mailer::new(self, &OutboundPolicy::default()).map(|_| ())
    }
}

/// Why a message was not sent; the message holds no credentials.
#[derive(Debug)]
pub(crate) struct SendError {
    pub message: String,
    /// Retrying cannot help (the outbound policy refused the relay).
    pub permanent: bool,
}

impl SendError {
    fn transient(message: String) -> Self {
        Self {
            message,
            permanent: false,
        }
    }
}

pub(crate) struct Mailer {
    from: Mailbox,
    host: String,
    port: u16,
    /// How the connection is secured, with the certificate checked against `host`.
    tls: Tls,
    credentials: Option<Credentials>,
    policy: OutboundPolicy,
}

impl Mailer {
    /// Checks the options; the error names the setting at fault.
    pub(crate) fn new(o: &SmtpOptions, policy: &OutboundPolicy) -> Result<Self, String> {
        let from: Mailbox = o
            .from
            .parse()
            .map_err(|e| format!("smtp.from: is not an email address: {e}"))?;
        let host = o.host.trim().trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err("smtp.host: is empty".into());
        }
        let params = || TlsParameters::new(host.to_string()).map_err(|e| format!("smtp.host: {e}"));
        let tls = match o.tls {
            SmtpTls::None => Tls::None,
            SmtpTls::Starttls => Tls::Required(params()?),
            SmtpTls::Tls => Tls::Wrapper(params()?),
        };
        if o.username.is_some() && o.tls == SmtpTls::None && !o.allow_plaintext_auth {
            return Err("smtp.username: credentials would be sent over a plaintext connection (smtp.tls = \"none\"); set smtp.tls to \"starttls\" or \"tls\", or smtp.allow_plaintext_auth = true for a relay on a trusted link".into());
        }
        let credentials = o.username.as_ref().map(|user| {
            let password = o
                .password
                .as_ref()
                .map(|p| p.expose_secret().to_string())
                .unwrap_or_default();
            Credentials::new(user.clone(), password)
        });
        Ok(Self {
            from,
            host: host.to_string(),
            port: o.port,
            tls,
            credentials,
            policy: policy.clone(),
        })
    }

    /// Sends one plain-text message; the error holds no credentials. The relay's name is
    /// resolved here and the connection goes to an address the outbound policy allows,
    /// while TLS still checks the certificate against the name.
    pub(crate) async fn send(
        &self,
        to: &str,
        subject: &str,
        body: String,
        timeout: Duration,
    ) -> Result<(), SendError> {
        let to: Mailbox = to.parse().map_err(|e| {
            SendError::transient(format!(
                "the rendered recipient {to:?} is not an email address: {e}"
            ))
        })?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| SendError::transient(format!("the message could not be built: {e}")))?;
        let attempt = async {
            let addrs = self
                .policy
                .resolve(&self.host, self.port)
                .await
                .map_err(|e| match e {
                    OutboundError::Refused(r) => SendError {
                        message: format!("the relay was not contacted: {r}"),
                        permanent: true,
                    },
                    other => SendError::transient(format!("the relay was not contacted: {other}")),
                })?;
            let addr = addrs
                .first()
                .ok_or_else(|| SendError::transient("the relay has no address".into()))?;
            let mut builder =
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(addr.ip().to_string())
                    .port(self.port)
                    .tls(self.tls.clone())
                    .timeout(Some(timeout));
            if let Some(c) = &self.credentials {
                builder = builder.credentials(c.clone());
            }
            builder
                .build()
                .send(message)
                .await
                .map(|_| ())
                .map_err(|e| SendError::transient(format!("the relay refused or failed: {e}")))
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(SendError::transient(format!(
                "the relay did not answer within {} ms",
                timeout.as_millis()
            ))),
        }
    }
}
