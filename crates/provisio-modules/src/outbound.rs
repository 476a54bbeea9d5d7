//! The outbound guard: the one policy every connection to an address taken from settings or
//! handler URLs passes (the `http`, `scim`, `postgres` and `radius` modules, handlers and
//! gates, SMTP), and the ways it is applied at connect time.
//!
//! By default loopback, private, link-local, shared, unique-local, multicast and unspecified
//! addresses are refused, so that whoever may write a server's settings or a handler's URL
//! cannot make Provisio reach what only it can reach (a cloud metadata endpoint, an admin
//! port on the same host). `[outbound] allow` opens exactly the networks an operator names.
//!
//! The check is made on the address actually connected: names are resolved here, filtered,
//! and the connection goes to a checked address, so nothing can change between the check
//! and the connect (a name that resolves to 127.0.0.1 is refused like 127.0.0.1).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use ipnet::IpNet;

/// What Provisio may connect to, beyond the public internet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundPolicy {
    allow: Vec<IpNet>,
}

/// A connection the policy refused. Refusals are permanent: the same address is refused
/// until the configuration changes, so retrying cannot help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refused to connect to {addr}{}: {rule}; allow it with [outbound] allow = [\"{}\"]",
    host.as_deref().map(|h| format!(" ({h})")).unwrap_or_default(),
    single(*addr)
)]
pub struct Refused {
    /// The address that would have been connected.
    pub addr: IpAddr,
    /// The name it came from, when there was one.
    pub host: Option<String>,
    /// Which range it is in, for the message.
    pub rule: &'static str,
}

/// Why an outbound connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The name did not resolve; like any failure to connect, nothing was sent.
    #[error("{host} could not be resolved: {why}")]
    Unresolved { host: String, why: String },
}

/// The network holding only `addr`, as an operator would write it in `allow`.
fn single(addr: IpAddr) -> IpNet {
    IpNet::from(addr)
}

/// The special-purpose range `ip` is in, if any; an IPv4-mapped IPv6 address is judged as
/// the IPv4 address it carries, since that is where a connection to it goes.
pub fn special_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => special_v4(v4),
            None => special_v6(v6),
        },
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(if ip.is_loopback() {
        "a loopback address (127.0.0.0/8)"
    } else if ip.is_private() {
        "a private address (RFC 1918)"
    } else if ip.is_link_local() {
        "a link-local address (169.254.0.0/16)"
    } else if a == 100 && (64..128).contains(&b) {
        "a shared address (100.64.0.0/10)"
    } else if ip.is_multicast() {
        "a multicast address (224.0.0.0/4)"
    } else if a == 0 {
        "an unspecified address (0.0.0.0/8)"
    } else if ip.is_broadcast() {
        "the broadcast address"
    } else {
        return None;
    })
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    Some(if ip.is_loopback() {
        "a loopback address (::1)"
    } else if ip.is_unspecified() {
        "an unspecified address (::)"
    } else if first & 0xffc0 == 0xfe80 {
        "a link-local address (fe80::/10)"
    } else if first & 0xfe00 == 0xfc00 {
        "a unique-local address (fc00::/7)"
    } else if ip.is_multicast() {
        "a multicast address (ff00::/8)"
    } else {
        return None;
    })
}

impl OutboundPolicy {
    /// The default policy, widened by `allow`.
    pub fn new(allow: Vec<IpNet>) -> Self {
        Self { allow }
    }

    /// Parses `allow` as the config file writes it; the error names the entry.
    pub fn parse(allow: &[String]) -> Result<Self, String> {
        let nets = allow
            .iter()
            .enumerate()
            .map(|(i, text)| {
                text.trim().parse::<IpNet>().map_err(|_| {
                    format!("allow[{i}]: {text:?} is not a network in CIDR notation (e.g. \"10.20.0.0/16\" or \"127.0.0.1/32\")")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(nets))
    }

    /// The networks opened beyond the default.
    pub fn allowed(&self) -> &[IpNet] {
        &self.allow
    }

    /// Whether `addr` may be connected; `host` is the name it came from, for the message.
    pub fn check(&self, addr: IpAddr, host: Option<&str>) -> Result<(), Refused> {
        let Some(rule) = special_range(addr) else {
            return Ok(());
        };
        let mapped = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        let allowed = |ip: IpAddr| self.allow.iter().any(|net| net.contains(&ip));
        if allowed(addr) || mapped.is_some_and(allowed) {
            return Ok(());
        }
        Err(Refused {
            addr,
            host: host
                .filter(|h| h.parse::<IpAddr>().is_err())
                .map(str::to_string),
            rule,
        })
    }

    /// The addresses of `addrs` that may be connected, in their order; when none may, the
    /// refusal of the first.
    pub fn filter(
        &self,
        host: &str,
        addrs: impl IntoIterator<Item = SocketAddr>,
    ) -> Result<Vec<SocketAddr>, Refused> {
        let mut first_refusal = None;
        let mut ok = Vec::new();
        for addr in addrs {
            match self.check(addr.ip(), Some(host)) {
                Ok(()) => ok.push(addr),
                Err(r) => {
                    first_refusal.get_or_insert(r);
                }
            }
        }
        match (ok.is_empty(), first_refusal) {
            (true, Some(refused)) => Err(refused),
            _ => Ok(ok),
        }
    }

    /// Resolves `host` (a name or an address literal, IPv6 with or without brackets) and
    /// keeps the addresses that may be connected; connect to one of these, never to the
    /// name again.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, OutboundError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            self.check(ip, None)?;
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let found: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| OutboundError::Unresolved {
                host: bare.to_string(),
                why: e.to_string(),
            })?
            .collect();
        if found.is_empty() {
            return Err(OutboundError::Unresolved {
                host: bare.to_string(),
                why: "no addresses".into(),
            });
        }
        Ok(self.filter(bare, found)?)
    }

    /// Refuses a URL whose host is an address literal the policy refuses. HTTP clients
    /// connect to literals without asking a resolver, so this check is theirs; names are
    /// checked by [`Self::http_client`]'s resolver.
    pub fn check_url(&self, url: &url::Url) -> Result<(), Refused> {
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.check(IpAddr::V4(ip), None),
            Some(url::Host::Ipv6(ip)) => self.check(IpAddr::V6(ip), None),
            Some(url::Host::Domain(_)) | None => Ok(()),
        }
    }

    /// An HTTP client builder whose connections pass this policy: names resolve through
    /// it, no proxy is used (a proxy would make the connected address the proxy's), and
    /// redirects are not followed (each would be a new target). Callers still check
    /// literal hosts with [`Self::check_url`] before sending.
    pub fn http_client(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .dns_resolver(Arc::new(Guarded(self.clone())))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("provisio/", env!("CARGO_PKG_VERSION")))
    }
}

/// The resolver behind [`OutboundPolicy::http_client`]: the system's resolution, filtered.
struct Guarded(OutboundPolicy);

impl reqwest::dns::Resolve for Guarded {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            // The port is set by the client; 0 here is replaced.
            let addrs = policy.resolve(&host, 0).await.map_err(
                |e| -> Box<dyn std::error::Error + Send + Sync> {
                    match e {
                        OutboundError::Refused(r) => Box::new(r),
                        other => Box::new(other),
                    }
                },
            )?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The refusal somewhere in an error's chain (an HTTP client wraps its resolver's error).
pub fn refusal<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(r) = e.downcast_ref::<Refused>() {
            return Some(r);
        }
        current = e.source();
    }
    None
}

/// Why a local SQLite database was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqliteRefused {
    #[error("local SQLite databases are refused: none is allowed until [outbound] radius_sqlite_dir names the directory they must be in")]
    NoDirectory,
    #[error("the SQLite database is outside [outbound] radius_sqlite_dir ({})", dir.display())]
    Outside { dir: PathBuf },
    #[error("the SQLite database's directory does not exist or cannot be read")]
    Unreadable,
}

/// Confines a SQLite database file to `dir`: the path (and every link on the way) must
/// lead inside it. Returns the real path to open, so a link swapped in later is not
/// followed out of `dir`. An in-memory database touches no file and is always allowed.
pub fn confine_sqlite(dir: Option<&Path>, file: &str) -> Result<Option<PathBuf>, SqliteRefused> {
    if file == ":memory:" || file.is_empty() {
        return Ok(None);
    }
    let dir = dir.ok_or(SqliteRefused::NoDirectory)?;
    let real_dir = dir.canonicalize().map_err(|_| SqliteRefused::Unreadable)?;
    let path = Path::new(file);
    // The file may not exist yet (sqlx can create it); its directory must.
    let real = match path.canonicalize() {
        Ok(p) => p,
        Err(_) => {
            let parent = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let name = path.file_name().ok_or(SqliteRefused::Unreadable)?;
            parent
                .canonicalize()
                .map_err(|_| SqliteRefused::Unreadable)?
                .join(name)
        }
    };
    if real.starts_with(&real_dir) && real != real_dir {
        Ok(Some(real))
    } else {
        Err(SqliteRefused::Outside {
            dir: dir.to_path_buf(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn special_ranges_are_refused_by_default_and_public_ones_are_not() {
        let p = OutboundPolicy::default();
        for addr in [
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.1",
            "172.16.5.4",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.254",
            "224.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(p.check(ip(addr), None).is_err(), "{addr} must be refused");
        }
        for addr in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "192.169.0.1",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
        ] {
            assert!(p.check(ip(addr), None).is_ok(), "{addr} must be allowed");
        }
    }

    #[test]
    fn allow_opens_exactly_the_named_networks() {
        let p = OutboundPolicy::parse(&["10.20.0.0/16".into(), "127.0.0.1/32".into()]).unwrap();
        assert!(p.check(ip("10.20.3.4"), None).is_ok());
        assert!(p.check(ip("127.0.0.1"), None).is_ok());
        assert!(p.check(ip("::ffff:127.0.0.1"), None).is_ok());
        assert!(p.check(ip("10.21.0.1"), None).is_err());
        assert!(p.check(ip("127.0.0.2"), None).is_err());
        assert!(p.check(ip("::1"), None).is_err());
    }

    #[test]
    fn the_message_names_the_address_the_rule_and_the_setting() {
        let p = OutboundPolicy::default();
        let e = p.check(ip("10.0.0.1"), Some("db.internal")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "refused to connect to 10.0.0.1 (db.internal): a private address (RFC 1918); allow it with [outbound] allow = [\"10.0.0.1/32\"]"
        );
        let e = p.check(ip("::1"), None).unwrap_err();
        assert!(e.to_string().ends_with("allow = [\"::1/128\"]"), "{e}");
    }

    #[test]
    fn bad_allow_entries_are_named() {
        let e = OutboundPolicy::parse(&["10.0.0.0/8".into(), "10.0.0.300/32".into()]).unwrap_err();
        assert!(e.starts_with("allow[1]:"), "{e}");
    }

    #[test]
    fn filtering_keeps_allowed_addresses_and_refuses_when_none_is_left() {
        let p = OutboundPolicy::parse(&["127.0.0.1/32".into()]).unwrap();
        let both = [
            SocketAddr::new(ip("::1"), 80),
            SocketAddr::new(ip("127.0.0.1"), 80),
        ];
        assert_eq!(
            p.filter("localhost", both).unwrap(),
            vec![SocketAddr::new(ip("127.0.0.1"), 80)]
        );
        let e = OutboundPolicy::default()
            .filter("localhost", both)
            .unwrap_err();
        assert_eq!(e.host.as_deref(), Some("localhost"));
    }

    #[tokio::test]
    async fn a_name_is_judged_by_what_it_resolves_to() {
        let e = OutboundPolicy::default()
            .resolve("localhost", 80)
            .await
            .unwrap_err();
        assert!(matches!(e, OutboundError::Refused(_)), "{e}");
        let ok = OutboundPolicy::parse(&["127.0.0.1/32".into()])
            .unwrap()
            .resolve("localhost", 80)
            .await
            .unwrap();
        assert!(ok.iter().all(|a| a.ip() == ip("127.0.0.1")), "{ok:?}");
    }

    #[test]
    fn sqlite_files_must_be_inside_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let inside = dir.path().join("radius.db");
        assert_eq!(
            confine_sqlite(None, inside.to_str().unwrap()),
            Err(SqliteRefused::NoDirectory)
        );
        let real = confine_sqlite(Some(dir.path()), inside.to_str().unwrap()).unwrap();
        assert_eq!(
            real,
            Some(dir.path().canonicalize().unwrap().join("radius.db"))
        );
        let escape = format!("{}/../elsewhere.db", dir.path().display());
        assert!(matches!(
            confine_sqlite(Some(dir.path()), &escape),
            Err(SqliteRefused::Outside { .. })
        ));
        let other = tempfile::tempdir().unwrap();
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(other.path().join("x.db"), &link).unwrap();
        std::fs::write(other.path().join("x.db"), b"").unwrap();
        assert!(matches!(
            confine_sqlite(Some(dir.path()), link.to_str().unwrap()),
            Err(SqliteRefused::Outside { .. })
        ));
        assert_eq!(confine_sqlite(None, ":memory:"), Ok(None));
    }
}
