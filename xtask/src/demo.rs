//! `cargo xtask demo`: the product's front door. Builds a demo image
//! `FROM scratch` (Debian's static busybox serving a small site and a JSON
//! API), creates two stopped containers, and runs the agent in the
//! foreground with the embedded demo config: a dynamic site with the ghost
//! wait page and a blocking API, both stopped after 20 s of silence.
//! Ctrl-C stops the agent (which detaches everything), then the demo
//! removes its containers and image.

use std::{fs, io::Write as _, process::Command};

use anyhow::Context as _;
use autostop_fixtures::docker::{docker, Image};
use nix::sys::signal::{signal, SigHandler, Signal};

use crate::{run, setup};

/// The demo image's tag.
const IMAGE: &str = "autostop-demo:latest";
/// Demo containers: name, published port, document root.
const CONTAINERS: &[(&str, u16, &str)] = &[
    ("autostop-demo-site", 8081, "/www/site"),
    ("autostop-demo-api", 8082, "/www/api"),
];
/// The agent's config for the demo.
const CONFIG: &str = include_str!("../demo/autostop.toml");
const SITE_INDEX: &str =
    "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>autostop demo</title></head>\
<body style=\"font-family:sans-serif;margin:3rem\"><h1>Hello from the demo site</h1>\
<p>This container was stopped a moment ago. autostop held your request, started it and \
handed the page over. Leave it alone for 20 s and it goes back to sleep.</p></body></html>\n";
const API_STATUS: &str = "{\"service\":\"demo-api\",\"ok\":true}\n";
const DOCKERFILE: &str = "FROM scratch\nCOPY busybox /bin/busybox\nCOPY busybox /bin/sh\n\
                          COPY busybox /bin/httpd\nCOPY www /www\n";

/// Runs setup when needed, builds everything and runs the agent until Ctrl-C.
pub fn run() -> anyhow::Result<()> {
    setup::run(setup::Mode::Quiet, setup::Scope::Demo).context("setup")?;
    run::cargo_build_agent(false)?;
    let root = run::workspace_root();
    let demo_dir = root.join("target/demo");
    fs::create_dir_all(&demo_dir).context("creating target/demo")?;
    let config = demo_dir.join("autostop.toml");
    fs::write(
        &config,
        CONFIG.replace("@DEMO_DIR@", &demo_dir.display().to_string()),
    )
    .context("writing the demo config")?;

    let image = Image::build_busybox(
        IMAGE,
        DOCKERFILE,
        &[
            ("www/site/index.html", SITE_INDEX.as_bytes()),
            ("www/api/status.json", API_STATUS.as_bytes()),
        ],
    )
    .context("building the demo image")?;
    let _cleanup = Cleanup { image: Some(image) };
    for (name, port, root) in CONTAINERS {
        docker(&["rm", "-f", name]).ok();
        let publish = format!("127.0.0.1:{port}:80");
        let serve = format!("trap 'exit 0' TERM; httpd -f -p 80 -h {root} & wait");
        docker(&[
            "create", "--name", name, "-p", &publish, IMAGE, "/bin/sh", "-c", &serve,
        ])?;
    }

    println!("\nautostop demo: both services are stopped; they start on the first request.");
    println!("  dynamic site (wait page in a browser):  http://127.0.0.1:8081/");
    println!("  blocking API (curl waits, then answers): curl http://127.0.0.1:8082/status.json");
    println!("  dashboard:                               http://127.0.0.1:3457/");
    println!(
        "  status from another shell:               {} status --config {}",
        run::agent_binary(false).display(),
        config.display()
    );
    println!("Ctrl-C stops the agent and removes the demo containers and image.\n");

    ignore_interrupts_here();
    let mut agent = Command::new(run::agent_binary(false));
    agent
        .current_dir(&root)
        .args(["run", "--config"])
        .arg(&config);
    run::status(&mut agent)
}

/// Removes the demo's containers and then its image, however the demo ends.
struct Cleanup {
    /// Removed (by its own guard) once the containers are gone.
    image: Option<Image>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for (name, _, _) in CONTAINERS {
            let _ = docker(&["rm", "-f", name]);
        }
        drop(self.image.take());
        // Not println!: after Ctrl-C on `cargo xtask demo | tee log`, tee is
        // gone and println! would panic on the closed pipe.
        let _ = writeln!(std::io::stdout(), "demo: containers and image removed");
    }
}

/// Ctrl-C reaches the whole foreground process group: the agent stops
/// cleanly on it, and this process must live on to clean up after it.
fn ignore_interrupts_here() {
    extern "C" fn ignore(_: std::ffi::c_int) {}
    // SAFETY: installs an async-signal-safe handler that does nothing. A
    // handler (unlike SIG_IGN) is reset to the default in the child at
    // exec, so the agent still receives and handles SIGINT itself.
    let _ = unsafe { signal(Signal::SIGINT, SigHandler::Handler(ignore)) };
}
