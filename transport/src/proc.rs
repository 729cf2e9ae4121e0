//! Figures the kernel keeps about this process and the machine, read from /proc.

/// CPU seconds of this process's threads whose name starts with `prefix`, by thread name,
/// sorted. Uses the scheduler's nanosecond run time (`schedstat`), so short runs are not
/// rounded to clock ticks.
pub fn thread_cpu(prefix: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return out };
    for e in dir.flatten() {
        let name = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default().trim().to_string();
        if !name.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(e.path().join("schedstat")).unwrap_or_default();
        let ns = stat.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        out.push((name, ns as f64 / 1e9));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// UDP datagrams the kernel dropped because a socket's receive buffer was full, machine-wide
/// (`RcvbufErrors` in /proc/net/snmp); `None` where that file cannot be read.
pub fn udp_rcvbuf_errors() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next()?, udp.next()?);
    let i = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_thread_is_charged_its_cpu_time() {
        let h = std::thread::Builder::new()
            .name("vain-proc-test".into())
            .spawn(|| {
                let t = std::time::Instant::now();
                let mut x = 0u64;
                while t.elapsed() < std::time::Duration::from_millis(60) {
                    x = x.wrapping_mul(31).wrapping_add(1);
                    std::hint::black_box(x);
                }
                thread_cpu("vain-proc-test")
            })
            .expect("spawn");
        let seen = h.join().expect("join");
        assert_eq!(seen.len(), 1);
        // It spun for 60 ms of wall time; on a loaded machine it may have had less CPU, never more.
        assert!(seen[0].1 > 0.005 && seen[0].1 < 0.2, "{seen:?}");
        assert!(thread_cpu("no-such-thread-name").is_empty());
    }

    #[test]
    fn the_udp_drop_counter_reads_on_linux() {
        if std::path::Path::new("/proc/net/snmp").exists() {
            assert!(udp_rcvbuf_errors().is_some());
        }
    }
}
