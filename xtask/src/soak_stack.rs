//! What `cargo xtask soak` runs against: one busybox image, a container per
//! service (a compose project for the one with a dependency, a labelled
//! container for the labelled one), the agent's config file in its valid
//! and invalid variants, and one nginx in front of every service. Every
//! container carries [`LABEL`], so an interrupted run's leftovers are
//! found and removed by the next one; each resource is a Drop guard.

use std::path::Path;

use anyhow::Context as _;
use autostop_fixtures::{
    compose::Compose,
    docker::{docker, Image},
    free_port,
    nginx::{Nginx, Route},
};

/// The Docker label on every soak container (not an `autostop.*` one, which
/// the agent would read).
pub const LABEL: &str = "autostop-soak=1";
/// Each service's start timeout.
pub const START_TIMEOUT: &str = "20s";

/// How a service's client talks to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Talk {
    /// `GET /`, plain HTTP.
    Http,
    /// An API client: JSON, polling the wait status until served.
    Json,
    /// Raw TCP: a line echoed back.
    Echo,
}

/// One service of the soak.
#[derive(Debug, Clone)]
pub struct Service {
    /// Its name in the agent.
    pub name: &'static str,
    /// Its published host port.
    pub port: u16,
    /// nginx's port in front of it.
    pub proxy: u16,
    /// How its clients talk.
    pub talk: Talk,
    /// The containers `docker kill` may hit (names or ids).
    pub containers: Vec<String>,
}

/// The labelled service's current labels (label churn flips them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Labels {
    /// `autostop.idle-timeout`, in seconds.
    pub idle_s: u64,
    /// `autostop.mode` dynamic (else blocking).
    pub dynamic: bool,
}

/// The config file's variable part (valid reloads change it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSettings {
    /// `blk`'s idle timeout, in seconds.
    pub blk_idle_s: u64,
    /// `tcp`'s idle timeout, in seconds.
    pub tcp_idle_s: u64,
    /// Whether the `spare` service (no clients) is configured.
    pub spare: bool,
}

impl Default for FileSettings {
    fn default() -> Self {
        Self {
            blk_idle_s: 3,
            tcp_idle_s: 3,
            spare: false,
        }
    }
}

/// Every service, container, the compose project and nginx.
pub struct Stack {
    /// The busybox image (applets installed).
    pub image: Image,
    /// The services, clients' order.
    pub services: Vec<Service>,
    /// The labelled container's name and its labels now.
    pub labelled: (String, Labels),
    /// The spare service's container and port.
    pub spare: (String, u16),
    /// The compose project (`cmp`).
    pub compose: Compose,
    /// nginx in front of every service.
    pub nginx: Option<Nginx>,
    containers: Vec<String>,
}

/// The shell line of an httpd serving `body` at `/`, a JSON document at
/// `/data.json` and the app's own `/.autostop/status`, exiting 0 on SIGTERM.
fn httpd_script(body: &str) -> String {
    format!(
        "trap 'exit 0' TERM; mkdir -p /www/.autostop; echo '{body}' > /www/index.html; \
         echo '{{\"soak\":\"{body}\"}}' > /www/data.json; \
         echo '{{\"state\":\"app\"}}' > /www/.autostop/status; \
         httpd -f -p 80 -h /www & wait"
    )
}

/// The body a service's `/` answers (what its client expects).
pub fn body_of(service: &str) -> String {
    format!("soak {service}\n")
}

/// The JSON `/data.json` answers.
pub fn json_of(service: &str) -> String {
    format!("{{\"soak\":\"soak {service}\"}}\n")
}

/// The shell line of a TCP echo server on port 80.
const ECHO_SCRIPT: &str = "trap 'exit 0' TERM; nc -ll -p 80 -e cat & wait";

/// Removes the containers an interrupted earlier run left.
pub fn remove_leftovers() {
    if let Ok(ids) = docker(&["ps", "-aq", "--filter", &format!("label={LABEL}")]) {
        for id in ids.split_whitespace() {
            let _ = docker(&["rm", "-f", id]);
        }
    }
}

impl Stack {
    /// Builds the image and creates every container (none started) and
    /// the compose project; nginx comes with [`Self::start_nginx`].
    pub fn create() -> anyhow::Result<Self> {
        remove_leftovers();
        let image = Image::build_busybox(
            &format!("autostop-soak:{}", std::process::id()),
            "FROM scratch\nCOPY busybox /bin/busybox\n\
             RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
            &[],
        )?;
        let mut containers = Vec::new();
        let mut services = Vec::new();
        for (name, talk) in [
            ("blk", Talk::Http),
            ("dyn", Talk::Json),
            ("tcp", Talk::Echo),
            ("hib", Talk::Http),
        ] {
            let container = autostop_fixtures::unique(&format!("autostop-soak-{name}-"));
            let port = free_port()?;
            let script = match talk {
                Talk::Echo => ECHO_SCRIPT.to_owned(),
                _ => httpd_script(&format!("soak {name}")),
            };
            create(&image, &container, port, &[], &script)?;
            containers.push(container.clone());
            services.push(Service {
                name,
                port,
                proxy: free_port()?,
                talk,
                containers: vec![container],
            });
        }
        let cmp_port = free_port()?;
        let compose = Compose::create(&compose_yaml(&image.tag, cmp_port))?;
        services.push(Service {
            name: "cmp",
            port: cmp_port,
            proxy: free_port()?,
            talk: Talk::Http,
            containers: vec![compose.container("web")?, compose.container("db")?],
        });
        let labelled = autostop_fixtures::unique("autostop-soak-lbl-");
        let labels = Labels {
            idle_s: 3,
            dynamic: true,
        };
        let lbl_port = free_port()?;
        create_labelled(&image, &labelled, lbl_port, labels)?;
        containers.push(labelled.clone());
        services.push(Service {
            name: "lbl",
            port: lbl_port,
            proxy: free_port()?,
            talk: Talk::Http,
            containers: vec![labelled.clone()],
        });
        let spare = autostop_fixtures::unique("autostop-soak-spare-");
        let spare_port = free_port()?;
        create(&image, &spare, spare_port, &[], &httpd_script("soak spare"))?;
        containers.push(spare.clone());
        Ok(Self {
            image,
            services,
            labelled: (labelled, labels),
            spare: (spare, spare_port),
            compose,
            nginx: None,
            containers,
        })
    }

    /// Starts nginx with a route per service (raw TCP through its stream
    /// module), files in `dir`.
    pub fn start_nginx(&mut self, dir: &Path) -> anyhow::Result<()> {
        let routes: Vec<Route> = self
            .services
            .iter()
            .map(|s| match s.talk {
                Talk::Echo => Route::Stream {
                    listen: s.proxy,
                    upstream: s.port,
                },
                _ => Route::Http {
                    listen: s.proxy,
                    upstream: s.port,
                },
            })
            .collect();
        self.nginx = Some(Nginx::start_routes(dir, &routes).context("starting nginx")?);
        Ok(())
    }

    /// The service called `name`.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// The config file's `[[service]]` tables for `settings`, with `blk`'s
    /// idle timeout written as `blk_idle` (an invalid variant may put any
    /// text there).
    pub fn services_toml(&self, settings: FileSettings, blk_idle: &str) -> String {
        let mut text = String::new();
        for s in &self.services {
            let idle = match s.name {
                "blk" => blk_idle.to_owned(),
                "tcp" => format!("{}s", settings.tcp_idle_s),
                "cmp" => "4s".to_owned(),
                _ => "3s".to_owned(),
            };
            let (mode, extra) = match s.name {
                "dyn" => ("dynamic", String::new()),
                "hib" => ("blocking", "sleep = \"hibernate\"\n".to_owned()),
                "cmp" => (
                    "blocking",
                    format!(
                        "compose_dir = \"{}\"\nrequires = [\"tcp\"]\n",
                        self.compose.path().display()
                    ),
                ),
                "lbl" => continue,
                _ => ("blocking", String::new()),
            };
            let members = if s.name == "cmp" {
                String::new()
            } else {
                format!("containers = [\"{}\"]\n", s.containers.join("\", \""))
            };
            text.push_str(&format!(
                "[[service]]\nname = \"{}\"\nport = {}\nmode = \"{mode}\"\n{members}\
                 idle_timeout = \"{idle}\"\nstart_timeout = \"{START_TIMEOUT}\"\n{extra}\n",
                s.name, s.port
            ));
        }
        if settings.spare {
            text.push_str(&format!(
                "[[service]]\nname = \"spare\"\nport = {}\nmode = \"blocking\"\n\
                 containers = [\"{}\"]\nidle_timeout = \"3s\"\n\n",
                self.spare.1, self.spare.0
            ));
        }
        text
    }

    /// Recreates the labelled container with `labels` (removed, then
    /// created again under the same name, stopped).
    pub fn relabel(&mut self, labels: Labels) -> anyhow::Result<()> {
        let (name, _) = &self.labelled;
        let port = self
            .service("lbl")
            .map(|s| s.port)
            .context("no lbl service")?;
        docker(&["rm", "-f", name])?;
        create_labelled(&self.image, name, port, labels)?;
        self.labelled.1 = labels;
        Ok(())
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.nginx = None;
        for name in &self.containers {
            let _ = docker(&["rm", "-f", name]);
        }
    }
}

/// `docker create` of a soak container publishing `127.0.0.1:port` → 80.
fn create(
    image: &Image,
    name: &str,
    port: u16,
    labels: &[String],
    script: &str,
) -> anyhow::Result<()> {
    let publish = format!("127.0.0.1:{port}:80");
    let mut args = vec![
        "create",
        "--name",
        name,
        "--label",
        LABEL,
        "--stop-timeout",
        "1",
        "-p",
        &publish,
    ];
    for label in labels {
        args.extend(["--label", label.as_str()]);
    }
    args.extend([image.tag.as_str(), "sh", "-c", script]);
    docker(&args)?;
    Ok(())
}

/// The labelled service's container, with `labels`.
fn create_labelled(image: &Image, name: &str, port: u16, labels: Labels) -> anyhow::Result<()> {
    let mode = if labels.dynamic {
        "dynamic"
    } else {
        "blocking"
    };
    let labels = [
        "autostop.enable=true".to_owned(),
        "autostop.name=lbl".to_owned(),
        format!("autostop.port={port}"),
        format!("autostop.idle-timeout={}s", labels.idle_s),
        format!("autostop.mode={mode}"),
    ];
    create(image, name, port, &labels, &httpd_script("soak lbl"))
}

/// The `cmp` project: `web` (httpd, published) depends on `db` (an echo
/// server on its network only).
fn compose_yaml(tag: &str, port: u16) -> String {
    let web = httpd_script("soak cmp");
    format!(
        "version: \"2.4\"\nservices:\n  db:\n    image: {tag}\n    command: [\"sh\", \"-c\", \
         \"trap 'exit 0' TERM; nc -ll -p 5432 -e cat & wait\"]\n    stop_grace_period: 1s\n\
         \x20   labels: {{ \"{key}\": \"1\" }}\n  web:\n    image: {tag}\n    command: [\"sh\", \"-c\", {web:?}]\n\
         \x20   depends_on: [db]\n    ports: [\"127.0.0.1:{port}:80\"]\n    stop_grace_period: 1s\n\
         \x20   labels: {{ \"{key}\": \"1\" }}\n",
        key = LABEL.trim_end_matches("=1"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn httpd_script_serves_what_the_clients_expect() {
        let script = httpd_script("soak dyn");
        assert!(script.contains(&format!("echo '{}' > /www/index.html", "soak dyn")));
        assert_eq!(body_of("dyn"), "soak dyn\n");
        assert!(script.contains("echo '{\"soak\":\"soak dyn\"}' > /www/data.json"));
        assert_eq!(json_of("dyn"), "{\"soak\":\"soak dyn\"}\n");
    }

    #[test]
    fn compose_yaml_orders_web_after_db_and_labels_both() {
        let yaml = compose_yaml("img:1", 9000);
        assert!(yaml.contains("depends_on: [db]"));
        assert!(yaml.contains("ports: [\"127.0.0.1:9000:80\"]"));
        assert_eq!(
            yaml.matches("labels: { \"autostop-soak\": \"1\" }").count(),
            2
        );
    }
}
