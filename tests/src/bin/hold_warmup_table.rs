//! Test helper: installs the warm-up redirect under the table name given as
//! the first argument, warms the port given as the second, prints
//! `installed` and waits to be killed. The `netfilter` tests SIGKILL it
//! to check that the kernel deletes the table with its owner.

use autostop::{
    netfilter::{WarmupOptions, WarmupRedirect},
    published::HostPort,
};

fn main() {
    let mut args = std::env::args().skip(1);
    let table = args.next().expect("usage: hold_warmup_table TABLE PORT");
    let port: u16 = args
        .next()
        .and_then(|p| p.parse().ok())
        .expect("usage: hold_warmup_table TABLE PORT");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let options = WarmupOptions {
            table,
            ..WarmupOptions::default()
        };
        let redirect = WarmupRedirect::install(options).await.expect("install");
        redirect.warm(HostPort::any(port)).await.expect("warm");
        println!("installed");
        std::future::pending::<()>().await;
    });
}
