//! A small status page at `/` and `/status`: groups with their labels, push
//! times and failure state, and the node's cluster status.

use crate::gateway::ReadView;
use crate::model::api_json::rfc3339_nanos;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn page(view: &ReadView, node: &crate::cluster::NodeStatus, admin: bool) -> String {
    let store = view.store();
    let mut rows = String::new();
    for g in store.groups() {
        let labels: Vec<String> = g
            .key
            .labels()
            .iter()
            .map(|l| format!("{}=\"{}\"", escape(&l.name), escape(&l.value)))
            .collect();
        let status = if g.last_push_successful() {
            "ok"
        } else {
            "<b>Last push failed!</b>"
        };
        let pushed = if g.push_time > 0 {
            rfc3339_nanos(g.push_time)
        } else {
            "never".into()
        };
        let families: Vec<String> = g.families.keys().map(|n| escape(n)).collect();
        rows.push_str(&format!(
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            labels.join(", "),
            pushed,
            status,
            families.join(", ")
        ));
    }
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>pushgate</title>\
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}</style>\
</head><body><h1>pushgate</h1>{}\
<p>Node {} &middot; state {} &middot; term {} &middot; leader {} &middot; applied index {} &middot; {} groups, {} series{}</p>\
<table><tr><th>Grouping key</th><th>Last push</th><th>Status</th><th>Metric families</th></tr>\n{}</table>\
<p><a href=\"api/v1/metrics\">api/v1/metrics</a> &middot; <a href=\"api/v1/status\">api/v1/status</a> &middot; <a href=\"api/v1/cluster/status\">api/v1/cluster/status</a></p>\
</body></html>\n",
        node.failure.as_deref().map_or(String::new(), |f| format!(
            "<p><b>This node has stopped working ({}) and must be restarted.</b> It shows what it had applied.</p>",
            escape(f)
        )),
        node.node_id,
        escape(&node.state),
        node.term,
        node.leader_id.map_or("none".to_string(), |l| l.to_string()),
        view.index(),
        store.group_count(),
        store.series_count(),
        if admin { " &middot; admin API enabled" } else { "" },
        rows
    )
}
