//! `[agent] alert_webhook` and `alert_ca_file`: a webhook URL the agent can
//! deliver to (see [`crate::alerts::WebhookUrl`]; messages never repeat the
//! URL's path or query, its secret) and an absolute CA file path, with a
//! warning when the CA file has no use.

use std::path::PathBuf;

use super::raw::RawAgent;
use super::validate::{absolute_path, Checker};

/// The resolved `(alert_webhook, alert_ca_file)`; each `None` after an
/// error (recorded).
pub(super) fn resolve(
    ck: &mut Checker<'_>,
    raw: &RawAgent,
) -> (Option<Option<String>>, Option<Option<PathBuf>>) {
    let url = ck.opt(&raw.alert_webhook, "agent.alert_webhook", None, |url| {
        crate::alerts::WebhookUrl::parse(url)
            .map(|parsed| Some((url.clone(), parsed.is_https())))
            .map_err(|e| e.to_string())
    });
    let ca_file = ck.opt(&raw.alert_ca_file, "agent.alert_ca_file", None, |p| {
        absolute_path(p).map(Some)
    });
    if let Some(ca) = &raw.alert_ca_file {
        match (&raw.alert_webhook, &url) {
            (None, _) => ck.warn(
                ca,
                "agent.alert_ca_file",
                "unused: agent.alert_webhook is not set",
            ),
            (_, Some(Some((_, false)))) => ck.warn(
                ca,
                "agent.alert_ca_file",
                "unused: agent.alert_webhook is plain http://",
            ),
            _ => {}
        }
    }
    (url.map(|u| u.map(|(text, _)| text)), ca_file)
}
