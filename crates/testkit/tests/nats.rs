//! The testkit's NATS cluster: three real nodes become healthy, elect a meta leader, and a
//! killed node rejoins on restart.

use imstatus_testkit::NatsCluster;

#[test]
fn three_nodes_start_and_a_killed_node_rejoins() {
    let mut cluster = NatsCluster::start(3).expect("cluster");
    assert_eq!(cluster.len(), 3);
    let leader = (0..3)
        .find_map(|i| {
            cluster
                .monitor(i, "/jsz")
                .ok()?
                .pointer("/meta_cluster/leader")?
                .as_str()
                .map(str::to_owned)
        })
        .expect("a meta leader");
    assert!(cluster.index_of(&leader).is_some(), "leader {leader}");
    let pid = cluster.pid(1).expect("n2 runs");
    cluster.kill(1).expect("kill n2");
    assert!(!imstatus_testkit::pid_alive(pid));
    assert_eq!(cluster.pid(1), None);
    cluster.restart(1).expect("restart n2");
    let jsz = cluster.monitor(1, "/jsz").expect("n2 /jsz");
    assert_eq!(
        jsz.pointer("/meta_cluster/cluster_size")
            .and_then(|v| v.as_u64()),
        Some(3),
        "{jsz}"
    );
    assert!(cluster
        .urls()
        .split(',')
        .all(|u| u.starts_with("nats://127.0.0.1:")));
}
