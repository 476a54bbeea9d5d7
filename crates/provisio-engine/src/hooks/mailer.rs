//! Sending email through the configured SMTP relay, for email handlers.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
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
}

impl SmtpOptions {
    /// Whether a relay can be set up from these options; the error names the setting.
    pub fn check(&self) -> Result<(), String> {
        Mailer::new(self).map(|_| ())
    }
}

pub(crate) struct Mailer {
    from: Mailbox,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl Mailer {
    /// Checks the options; the error names the setting at fault.
    pub(crate) fn new(o: &SmtpOptions) -> Result<Self, String> {
        let from: Mailbox = o
            .from
            .parse()
            .map_err(|e| format!("smtp.from: is not an email address: {e}"))?;
        let builder = match o.tls {
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&o.host),
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&o.host)
                .map_err(|e| format!("smtp.host: {e}"))?,
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&o.host)
                .map_err(|e| format!("smtp.host: {e}"))?,
        };
        let mut builder = builder.port(o.port);
        if let Some(user) = &o.username {
            let password = o
                .password
                .as_ref()
                .map(|p| p.expose_secret().to_string())
                .unwrap_or_default();
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        Ok(Self {
            from,
            transport: builder.build(),
        })
    }

    /// Sends one plain-text message; the error holds no credentials.
    pub(crate) async fn send(
        &self,
        to: &str,
        subject: &str,
        body: String,
        timeout: Duration,
    ) -> Result<(), String> {
        let to: Mailbox = to
            .parse()
            .map_err(|e| format!("the rendered recipient {to:?} is not an email address: {e}"))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| format!("the message could not be built: {e}"))?;
        match tokio::time::timeout(timeout, self.transport.send(message)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("the relay refused or failed: {e}")),
            Err(_) => Err(format!(
                "the relay did not answer within {} ms",
                timeout.as_millis()
            )),
        }
    }
}
