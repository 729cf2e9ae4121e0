//! LAN discovery across network namespaces that the test builds itself (ip netns, veth pairs, a
//! bridge): two nodes with no bootstrap list find each other by the UDP broadcast beacon alone,
//! and by mDNS alone. Needs root (CI runs as root); otherwise it says "skipped: needs root".

use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vain_net::control;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// Three namespaces: a bridge in `br`, and nodes in `a` and `b` on 10.77.<net>.0/24.
struct Lan {
    ns: Vec<String>,
    children: Vec<Child>,
}

impl Lan {
    fn new(tag: &str, net: u8) -> Self {
        let id = std::process::id() % 100_000;
        let name = |s: &str| format!("vn{s}{tag}{id}");
        let (br, a, b) = (name("br"), name("a"), name("b"));
        let lan = Lan { ns: vec![br.clone(), a.clone(), b.clone()], children: Vec::new() };
        for n in &lan.ns {
            ip(&["netns", "add", n]);
            ip(&["-n", n, "link", "set", "lo", "up"]);
        }
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &br, "link", "set", "br0", "up"]);
        for (k, n) in [(1u8, &a), (2u8, &b)] {
            // The veth is created in the node's namespace and its peer moved to the bridge's.
            ip(&["-n", n, "link", "add", "eth0", "type", "veth", "peer", "name", &format!("p{k}"), "netns", &br]);
            ip(&["-n", &br, "link", "set", &format!("p{k}"), "master", "br0"]);
            ip(&["-n", &br, "link", "set", &format!("p{k}"), "up"]);
            ip(&["-n", n, "addr", "add", &format!("10.77.{net}.{k}/24"), "dev", "eth0"]);
            ip(&["-n", n, "link", "set", "eth0", "up"]);
        }
        lan
    }

    fn start(&mut self, which: usize, dir: &Path, cfg: &str) -> PathBuf {
        let data = dir.join(format!("node{which}"));
        std::fs::create_dir_all(&data).expect("dir");
        std::fs::write(data.join("node.toml"), format!("data_dir = \"{}\"\n{cfg}", data.display())).expect("cfg");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns[which]])
            .arg(env!("CARGO_BIN_EXE_vain"))
            .args(["node", "--config"])
            .arg(data.join("node.toml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        self.children.push(child);
        data.join("control.sock")
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn live(sock: &Path) -> u64 {
    control::request(sock, &json!({"cmd": "status"})).ok().and_then(|s| s["live"].as_u64()).unwrap_or(0)
}

fn discover(tag: &str, net: u8, cfg: &str) {
    let dir = tempfile::tempdir().expect("tmp");
    let mut lan = Lan::new(tag, net);
    let a = lan.start(1, dir.path(), cfg);
    let b = lan.start(2, dir.path(), cfg);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if live(&a) >= 1 && live(&b) >= 1 {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let sa = control::request(&a, &json!({"cmd": "status"}));
    let sb = control::request(&b, &json!({"cmd": "status"}));
    panic!("no discovery with {cfg:?}: {sa:?} / {sb:?}");
}

#[test]
fn nodes_without_bootstrap_find_each_other_by_broadcast_beacon() {
    if !vain_testkit::is_root() {
        vain_testkit::unavailable(vain_testkit::Need::Root, "lan: broadcast beacon", "ip netns");
        return;
    }
    discover(
        "b",
        41,
        "listen = [\"/ip4/0.0.0.0/tcp/0\"]\n[mdns]\nenabled = false\n[beacon]\nenabled = true\nbroadcast = \"10.77.41.255\"\ninterval = 0.5\n",
    );
}

#[test]
fn nodes_without_bootstrap_find_each_other_by_mdns() {
    if !vain_testkit::is_root() {
        vain_testkit::unavailable(vain_testkit::Need::Root, "lan: mdns", "ip netns");
        return;
    }
    discover("m", 42, "listen = [\"/ip4/0.0.0.0/tcp/0\"]\n[mdns]\nenabled = true\n[beacon]\nenabled = false\n");
}
