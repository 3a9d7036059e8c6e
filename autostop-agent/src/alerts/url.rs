//! The webhook URL: what `agent.alert_webhook` may be, and its redacted
//! form. The path and query of a webhook URL are its secret (Slack, Discord
//! and ntfy put the credential there), so neither [`WebhookUrl`]'s `Debug`
//! nor any error message shows them: only `scheme://host:port`.

use std::fmt;

use http::Uri;

use crate::config::ApiHost;

/// Why a webhook URL cannot be delivered to. No message repeats the URL's
/// path or query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not `scheme://…`, or a character a URL cannot hold.
    #[error("not a valid URL ({0}); expected https://host[:port]/path")]
    Malformed(String),
    /// A scheme other than http and https.
    #[error("scheme {0:?} is not supported: use https:// (or http://)")]
    Scheme(String),
    /// No host after `://`, or a host that is neither a name nor an address.
    #[error("the URL has no valid host (expected https://host[:port]/path)")]
    Host,
    /// A port that is not 1..=65535.
    #[error("the port is not a number in 1..=65535")]
    Port,
    /// `user:password@` in the authority.
    #[error("credentials in the URL (user:password@host) are not supported; put the secret in the path or query")]
    Credentials,
    /// A `#fragment`, which is never sent.
    #[error("a #fragment is never sent to the server; remove it")]
    Fragment,
}

/// A parsed `http://` or `https://` webhook URL.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    /// The full URL, for the request only.
    uri: Uri,
    /// `https` rather than `http`.
    https: bool,
    /// The host as written (IPv6 in brackets).
    host: String,
    /// The port, explicit or the scheme's default.
    port: u16,
}

impl WebhookUrl {
    /// Parses and checks a webhook URL.
    pub fn parse(text: &str) -> Result<Self, UrlError> {
        let Some((scheme, _)) = text.split_once("://") else {
            return Err(UrlError::Malformed("no scheme".into()));
        };
        let https = match scheme.to_ascii_lowercase().as_str() {
            "https" => true,
            "http" => false,
            other => return Err(UrlError::Scheme(other.to_owned())),
        };
        if text.contains('#') {
            return Err(UrlError::Fragment);
        }
        let uri: Uri = text
            .parse()
            .map_err(|e: http::uri::InvalidUri| UrlError::Malformed(e.to_string()))?;
        let authority = uri.authority().ok_or(UrlError::Host)?;
        if authority.as_str().contains('@') {
            return Err(UrlError::Credentials);
        }
        let host = authority.host().to_owned();
        if ApiHost::from_host(&host).is_none() {
            return Err(UrlError::Host);
        }
        let after_host = &authority.as_str()[host.len()..];
        let port = match (after_host, authority.port_u16()) {
            ("", _) => {
                if https {
                    443
                } else {
                    80
                }
            }
            (_, Some(port)) if port > 0 => port,
            _ => return Err(UrlError::Port),
        };
        Ok(Self {
            uri,
            https,
            host,
            port,
        })
    }

    /// `scheme://host:port`: all of the URL that may be logged.
    pub fn endpoint(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }

    /// Whether the URL is `https://`.
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// The full URL, for the request itself.
    pub(crate) fn uri(&self) -> &Uri {
        &self.uri
    }

    /// Replaces the secret part of the URL (path and query, when more than
    /// `/`) in `text` by `…`: a guard for messages from libraries.
    pub fn redact(&self, text: &str) -> String {
        match self.uri.path_and_query().map(|p| p.as_str()) {
            Some(secret) if secret.len() > 1 => text.replace(secret, "…"),
            _ => text.to_owned(),
        }
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookUrl({}/…)", self.endpoint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_and_https_urls_parse_with_default_ports() {
        let url =
            WebhookUrl::parse("https://hooks.slack.com/services/T0/B0/SECRET").expect("https");
        assert!(url.is_https());
        assert_eq!(url.endpoint(), "https://hooks.slack.com:443");
        assert_eq!(
            url.uri().path_and_query().map(|p| p.as_str()),
            Some("/services/T0/B0/SECRET")
        );
        let url = WebhookUrl::parse("http://127.0.0.1:8080/alert?token=x").expect("http");
        assert!(!url.is_https());
        assert_eq!(url.endpoint(), "http://127.0.0.1:8080");
        let url = WebhookUrl::parse("HTTPS://[::1]:8443/x").expect("ipv6");
        assert_eq!(url.endpoint(), "https://[::1]:8443");
        assert_eq!(
            WebhookUrl::parse("http://hooks.local").map(|u| u.endpoint()),
            Ok("http://hooks.local:80".to_owned())
        );
    }

    #[test]
    fn undeliverable_urls_are_refused_without_echoing_the_secret() {
        for (url, want) in [
            ("ftp://x/SECRET", UrlError::Scheme("ftp".into())),
            (
                "hooks.local/SECRET",
                UrlError::Malformed("no scheme".into()),
            ),
            ("https://u:p@x/SECRET", UrlError::Credentials),
            ("https://x/SECRET#frag", UrlError::Fragment),
            ("https://x:99999/SECRET", UrlError::Port),
            ("https://x:0/SECRET", UrlError::Port),
            ("https://x:/SECRET", UrlError::Port),
            ("https://x_-/SECRET", UrlError::Host),
        ] {
            assert_eq!(WebhookUrl::parse(url), Err(want), "{url}");
        }
        for url in ["https:///SECRET", "https://x y/SECRET", "https://x/SE CRET"] {
            let err = WebhookUrl::parse(url).expect_err(url).to_string();
            assert!(!err.contains("SECRET"), "{url}: {err}");
        }
    }

    #[test]
    fn debug_and_redact_hide_path_and_query() {
        let url = WebhookUrl::parse("https://ntfy.example/topic-SECRET?auth=TOKEN").expect("url");
        let debug = format!("{url:?}");
        assert!(
            !debug.contains("SECRET") && !debug.contains("TOKEN"),
            "{debug}"
        );
        assert_eq!(
            url.redact("error sending to /topic-SECRET?auth=TOKEN: refused"),
            "error sending to …: refused"
        );
        let bare = WebhookUrl::parse("https://x").expect("url");
        assert_eq!(bare.redact("a/b"), "a/b");
    }
}
