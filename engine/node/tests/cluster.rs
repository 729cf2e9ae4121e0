//! 20 `vain node` processes on loopback, from one bootstrap: they discover each other; every
//! announcement is found by every node; records survive the loss of their publisher and first
//! holders (replication); a killed node is marked stale within its timeout.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vain_net::control;

struct Node {
    child: Option<Child>,
    socket: PathBuf,
    node_id: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port")
}

fn start(dir: &Path, i: usize, bootstrap: Option<&str>) -> Node {
    let data = dir.join(format!("n{i}"));
    std::fs::create_dir_all(&data).expect("dir");
    let boot = bootstrap.map(|b| format!("bootstrap = [\"{b}\"]\n")).unwrap_or_default();
    let cfg = format!(
        "listen = [\"/ip4/127.0.0.1/tcp/{}\"]\n{boot}data_dir = \"{}\"\n[mdns]\nenabled = false\n[beacon]\nenabled = false\n\
         [liveness]\nheartbeat_interval = 0.5\nstale_after = 3.0\n[pex]\ninterval = 0.5\n\
         [dht]\nreplication_factor = 3\nreplication_interval = 1.0\n",
        free_port(),
        data.display()
    );
    std::fs::write(data.join("node.toml"), cfg).expect("config");
    let child = Command::new(env!("CARGO_BIN_EXE_vain"))
        .args(["node", "--config"])
        .arg(data.join("node.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    Node { child: Some(child), socket: data.join("control.sock"), node_id: String::new() }
}

fn ask(n: &Node, req: Value) -> Option<Value> {
    control::request(&n.socket, &req).ok()
}

fn wait(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out: {what}");
}

#[test]
fn twenty_processes_discover_each_other_find_records_survive_losses_and_drop_the_dead() {
    let n = 20;
    let dir = tempfile::tempdir().expect("tmp");
    let mut nodes = vec![start(dir.path(), 0, None)];
    wait("node 0 up", 30, || ask(&nodes[0], json!({"cmd": "status"})).is_some());
    let s0 = ask(&nodes[0], json!({"cmd": "status"})).expect("status");
    let boot = s0["listen"][0].as_str().expect("listen").to_string();
    for i in 1..n {
        nodes.push(start(dir.path(), i, Some(&boot)));
    }
    let started = Instant::now();
    wait("every node live with all 19 others", 60, || {
        nodes.iter().all(|x| ask(x, json!({"cmd": "status"})).is_some_and(|s| s["live"].as_u64() == Some(n as u64 - 1)))
    });
    eprintln!("converged in {:.1} s", started.elapsed().as_secs_f64());
    for x in nodes.iter_mut() {
        x.node_id = ask(x, json!({"cmd": "status"})).expect("status")["node_id"].as_str().expect("id").to_string();
    }

    // Every node finds (and verifies) another's announcement; one lookup goes through the CLI.
    for i in 0..n {
        let target = nodes[(i + 7) % n].node_id.clone();
        wait(&format!("node {i} to find node/{target}"), 15, || {
            ask(&nodes[i], json!({"cmd": "get", "key": format!("node/{target}")}))
                .is_some_and(|got| got["node"]["node_id"].as_str() == Some(target.as_str()))
        });
    }
    let out = Command::new(env!("CARGO_BIN_EXE_vain"))
        .args(["dht", "get", &format!("node/{}", nodes[3].node_id), "--socket"])
        .arg(&nodes[11].socket)
        .output()
        .expect("vain dht get");
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains(&nodes[3].node_id));

    // Replication: node 5's record lives on its 3 closest nodes; stop node 5 and those holders,
    // one at a time with a replication interval between, and it is still found.
    let key = format!("node/{}", nodes[5].node_id);
    let holders: Vec<usize> = (0..n)
        .filter(|&i| {
            i != 5 && ask(&nodes[i], json!({"cmd": "holds", "key": key})).and_then(|v| v.as_bool()) == Some(true)
        })
        .collect();
    assert!(!holders.is_empty());
    let mut killed = vec![5];
    nodes[5].child.take().map(|mut c| c.kill());
    for h in holders.iter().copied().filter(|h| *h != 0).take(3) {
        std::thread::sleep(Duration::from_millis(1500));
        nodes[h].child.take().map(|mut c| c.kill());
        killed.push(h);
    }
    let asker = (0..n).find(|i| !killed.contains(i)).expect("a survivor");
    wait("the record after its holders are gone", 20, || {
        ask(&nodes[asker], json!({"cmd": "get", "key": key}))
            .is_some_and(|v| v["node"]["node_id"].as_str() == Some(&nodes[5].node_id))
    });

    // A killed node is marked stale by every survivor within stale_after (3 s) plus a heartbeat.
    let victim = (0..n).rev().find(|i| !killed.contains(i)).expect("victim");
    let vid =
        ask(&nodes[victim], json!({"cmd": "status"})).expect("status")["peer_id"].as_str().expect("pid").to_string();
    nodes[victim].child.take().map(|mut c| c.kill());
    killed.push(victim);
    let t = Instant::now();
    wait("the victim stale everywhere", 15, || {
        (0..n).filter(|i| !killed.contains(i)).all(|i| {
            ask(&nodes[i], json!({"cmd": "peers"})).is_some_and(|p| {
                p.as_array().is_some_and(|rows| rows.iter().any(|r| r["peer_id"] == vid && r["state"] == "stale"))
            })
        })
    });
    assert!(t.elapsed() < Duration::from_secs(8), "stale after {:?}", t.elapsed());
}
