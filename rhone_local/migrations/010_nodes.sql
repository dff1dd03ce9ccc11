-- Version 10: nodes (docs/multi-node.md, "Nodes"). Plain portable SQL: the PostgreSQL store applies the same script.

-- One row per node name: the roles it runs, the address its runner's allocations are reachable at, and the process
-- instance that holds the name now. `heartbeat_at` is in seconds on the store's clock (NodeStore.node_clock); a node
-- whose heartbeat is older than the lapse window, or that left (`left_at`), is not live.
CREATE TABLE nodes (
    name TEXT PRIMARY KEY,
    roles TEXT NOT NULL,
    address TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    started_at TEXT NOT NULL,
    heartbeat_at REAL NOT NULL,
    left_at TEXT
);

-- The node whose runner starts, watches and signals an allocation's processes, and the address they listen on there.
-- NULL: an allocation from before version 10, which the first runner to start adopts.
ALTER TABLE allocations ADD COLUMN node TEXT;
ALTER TABLE allocations ADD COLUMN address TEXT;
CREATE INDEX allocations_node_state ON allocations (node, state);

-- Edge processes of every node (docs/multi-node.md, "Nodes"): how an API node recognises an edge another node started
-- (by the digest of its token), and the route sequence each edge last reported applying, so that a promotion on any
-- API node waits for every live edge. `reported_at` is in seconds on the store's clock, like heartbeats.
CREATE TABLE edges (
    edge_id TEXT PRIMARY KEY,
    node TEXT NOT NULL,
    token_digest TEXT NOT NULL UNIQUE,
    registered_at TEXT NOT NULL,
    seq INTEGER,
    reported_at REAL
);
